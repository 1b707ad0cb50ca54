//! The result of a run: exact counts, latency percentiles, captured header
//! values, per-event windows, and renderings as text and JSON.
//!
//! Counts, whole-run histograms and captured-value counts are exact. Event
//! windows, timelines and failure listings come from the per-request records,
//! which are bounded by [`crate::Load::max_records`]; reports say when that
//! bound was hit.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::events::{Event, unix_nanos};
use crate::outcome::{Code, Outcome};
use crate::worker::{
    CaptureStat, MAX_CAPTURE_VALUES, OTHER_CAPTURE, Record, WorkerResult, record_latency,
};
use crate::{EventWindow, Load, Mode, ThinkTime};

/// How many failures [`Report::summary`] lists individually.
const SUMMARY_FAILURES: usize = 10;
/// How many failures the JSON report lists individually.
const JSON_FAILURES: usize = 100;

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Number of requests measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Latency {
    fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50": self.p50_us,
            "p90": self.p90_us,
            "p99": self.p99_us,
            "p999": self.p999_us,
            "max": self.max_us,
            "mean": (self.mean_us * 10.0).round() / 10.0,
        })
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("no samples");
        }
        write!(
            f,
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

/// One recorded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRecord<'a> {
    /// When the request started, relative to the run start.
    pub start: Duration,
    /// Time from start to outcome (connect included when one was needed).
    pub latency: Duration,
    /// How the request ended.
    pub outcome: Outcome,
    /// HTTP status, when a complete response arrived.
    pub status: Option<u16>,
    /// Value of the captured header, when present in the response head.
    pub captured: Option<&'a str>,
}

/// Statistics of one captured header value over the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedValue {
    /// The header value (lossily decoded as UTF-8).
    pub value: String,
    /// Requests whose response carried it.
    pub count: u64,
    /// Start of the first such request, relative to the run start.
    pub first: Duration,
    /// Start of the last such request, relative to the run start.
    pub last: Duration,
}

/// What happened in the window around one event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventReport {
    /// The event's label.
    pub label: String,
    /// Event time in seconds since the run start (negative if before it).
    pub at_s: f64,
    /// Window start, seconds since the run start.
    pub window_start_s: f64,
    /// Window end, seconds since the run start.
    pub window_end_s: f64,
    /// Requests started in the window.
    pub total: u64,
    /// Of those, how many succeeded.
    pub ok: u64,
    /// `total - ok`.
    pub failed: u64,
    /// Outcome counts in the window (non-zero only).
    pub outcomes: BTreeMap<String, u64>,
    /// Latency of the successful requests in the window.
    pub latency: Latency,
    /// Start of the first failed request in the window, seconds since the
    /// run start.
    pub first_failure_s: Option<f64>,
    /// From the start of the first failure in the window to the completion
    /// of the earliest-completing successful request started at or after it
    /// (looking past the window if needed): how long the target was
    /// unavailable. `None` without failures, or if nothing succeeded after.
    pub recovery: Option<Duration>,
    /// Captured header values in the window.
    pub captured: BTreeMap<String, u64>,
    /// `true` if per-request records ran out before the window's end, so the
    /// window's numbers undercount.
    pub incomplete: bool,
}

/// Requests started in one time bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimelineBucket {
    /// Bucket start, seconds since the run start.
    pub start_s: f64,
    /// Requests started in the bucket.
    pub total: u64,
    /// Of those, how many succeeded.
    pub ok: u64,
    /// `total - ok`.
    pub failed: u64,
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    target: String,
    mode: Mode,
    connections: usize,
    path: String,
    timeout: Duration,
    capture_header: Option<String>,
    /// The TLS server name, for HTTPS runs.
    tls_server_name: Option<String>,
    started: Instant,
    started_unix_nanos: i128,
    elapsed: Duration,
    counts: Vec<u64>,
    hist_ok: Histogram<u64>,
    hist_all: Histogram<u64>,
    records: Vec<Record>,
    captures: Vec<CaptureStat>,
    capture_names: Vec<String>,
    records_truncated: bool,
    connections_opened: u64,
    max_connections_per_worker: u64,
    workers_reconnected: u64,
    think: Option<ThinkTime>,
    seed: u64,
    events: Vec<(String, i128)>,
    window: EventWindow,
}

impl Report {
    pub(crate) fn build(
        load: &Load,
        started: Instant,
        started_at: SystemTime,
        elapsed: Duration,
        results: Vec<WorkerResult>,
        records_truncated: bool,
    ) -> Report {
        let mut counts = vec![0u64; crate::outcome::CODE_SPACE];
        let mut hist_ok: Option<Histogram<u64>> = None;
        let mut hist_all: Option<Histogram<u64>> = None;
        let mut records = Vec::with_capacity(results.iter().map(|r| r.records.len()).sum());
        let mut captures: Vec<CaptureStat> = Vec::new();
        let mut capture_ids: HashMap<Vec<u8>, u16> = HashMap::new();
        let mut connections_opened = 0;
        let mut max_connections_per_worker = 0;
        let mut workers_reconnected = 0;

        for mut r in results {
            for (total, n) in counts.iter_mut().zip(&r.counts) {
                *total += n;
            }
            merge_histogram(&mut hist_ok, r.hist_ok);
            merge_histogram(&mut hist_all, r.hist_all);
            connections_opened += r.connections_opened;
            max_connections_per_worker = max_connections_per_worker.max(r.connections_opened);
            if r.connections_opened > 1 {
                workers_reconnected += 1;
            }

            // Map this worker's capture ids onto run-wide ones.
            let mut remap = vec![0u16; r.captures.len() + 1];
            for (i, stat) in r.captures.drain(..).enumerate() {
                let full = captures.len() >= 4 * MAX_CAPTURE_VALUES;
                let key = if full {
                    OTHER_CAPTURE.as_bytes().to_vec()
                } else {
                    stat.value.clone()
                };
                let id = *capture_ids.entry(key.clone()).or_insert_with(|| {
                    captures.push(CaptureStat {
                        value: key,
                        count: 0,
                        first_us: stat.first_us,
                        last_us: stat.last_us,
                    });
                    captures.len() as u16
                });
                let g = &mut captures[usize::from(id) - 1];
                g.count += stat.count;
                g.first_us = g.first_us.min(stat.first_us);
                g.last_us = g.last_us.max(stat.last_us);
                remap[i + 1] = id;
            }
            records.extend(r.records.into_iter().map(|mut rec| {
                rec.capture = remap[usize::from(rec.capture)];
                rec
            }));
        }
        records.sort_unstable_by_key(|r| (r.start_us, r.latency_us));
        let capture_names = captures
            .iter()
            .map(|c| String::from_utf8_lossy(&c.value).into_owned())
            .collect();
        let empty = || Histogram::new(3).expect("3 significant digits is valid");
        Report {
            target: load.target.to_string(),
            mode: load.mode,
            connections: load.connections,
            path: load.path.clone(),
            timeout: load.timeout,
            capture_header: load.capture_header.clone(),
            tls_server_name: load.tls.as_ref().map(|t| t.server_name().to_owned()),
            started,
            started_unix_nanos: unix_nanos(started_at),
            elapsed,
            counts,
            hist_ok: hist_ok.unwrap_or_else(empty),
            hist_all: hist_all.unwrap_or_else(empty),
            records,
            captures,
            capture_names,
            records_truncated,
            connections_opened,
            max_connections_per_worker,
            workers_reconnected,
            think: load.think,
            seed: load.seed,
            events: Vec::new(),
            window: load.window,
        }
    }

    /// Requests completed, with any outcome.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Requests that got a complete 2xx response.
    pub fn ok(&self) -> u64 {
        self.counts[200..300].iter().sum()
    }

    /// Requests that did not: `total() - ok()`.
    pub fn failed(&self) -> u64 {
        self.total() - self.ok()
    }

    /// Requests that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Ok => self.ok(),
            Outcome::Status(s) if (200..300).contains(&s) => 0,
            Outcome::Status(s) => self.counts.get(usize::from(s)).copied().unwrap_or(0),
            other => self.counts[usize::from(Code::failure(other).0)],
        }
    }

    /// Counts by outcome name. Every status-independent outcome is present
    /// (zero or not); `status_NNN` entries only when non-zero.
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        let mut map: BTreeMap<String, u64> = Outcome::KINDS
            .iter()
            .map(|&k| (k.name().into_owned(), self.count(k)))
            .collect();
        for (status, n) in self.statuses() {
            if !(200..300).contains(&status) {
                map.insert(Outcome::Status(status).name().into_owned(), n);
            }
        }
        map
    }

    /// Counts of complete responses by HTTP status.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        (0..1000u16)
            .filter_map(|s| {
                let n = self.counts[usize::from(s)];
                (n > 0).then_some((s, n))
            })
            .collect()
    }

    /// Whether the run spoke HTTPS ([`crate::Load::tls`]).
    pub fn tls(&self) -> bool {
        self.tls_server_name.is_some()
    }

    /// Wall time of the run, from start until the last worker finished.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Completed requests per second over the whole run.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total() as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency of successful requests.
    pub fn latency(&self) -> Latency {
        Latency::from_histogram(&self.hist_ok)
    }

    /// Latency of all requests, whatever their outcome.
    pub fn latency_all(&self) -> Latency {
        Latency::from_histogram(&self.hist_all)
    }

    /// Connections the workers opened (successful connects; with TLS,
    /// connects whose handshake completed).
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened
    }

    /// The most connections any single worker opened. 1 means every worker
    /// that connected kept its first connection for the whole run.
    pub fn max_connections_per_worker(&self) -> u64 {
        self.max_connections_per_worker
    }

    /// Workers that opened more than one connection: their connection was
    /// closed (by the server, a failure, or `Connection: close`) at least
    /// once.
    pub fn workers_reconnected(&self) -> u64 {
        self.workers_reconnected
    }

    /// Whether per-request records hit [`crate::Load::max_records`] (or the
    /// run outlasted what a record can express), so that event windows,
    /// timelines and failure listings are incomplete. Counts are unaffected.
    pub fn records_truncated(&self) -> bool {
        self.records_truncated
    }

    /// Count of each captured header value.
    pub fn captured(&self) -> BTreeMap<String, u64> {
        let mut map = BTreeMap::new();
        for (name, c) in self.capture_names.iter().zip(&self.captures) {
            *map.entry(name.clone()).or_insert(0) += c.count;
        }
        map
    }

    /// Captured header values with counts and first/last times, in order of
    /// first appearance.
    pub fn captured_values(&self) -> Vec<CapturedValue> {
        let mut v: Vec<CapturedValue> = self
            .capture_names
            .iter()
            .zip(&self.captures)
            .map(|(name, c)| CapturedValue {
                value: name.clone(),
                count: c.count,
                first: Duration::from_micros(c.first_us),
                last: Duration::from_micros(c.last_us),
            })
            .collect();
        v.sort_by_key(|c| c.first);
        v
    }

    /// All recorded requests, ordered by start time.
    pub fn records(&self) -> impl Iterator<Item = RequestRecord<'_>> + '_ {
        self.records.iter().map(|r| self.view(r))
    }

    /// Recorded requests that did not succeed, ordered by start time.
    pub fn failures(&self) -> impl Iterator<Item = RequestRecord<'_>> + '_ {
        self.records
            .iter()
            .filter(|r| !r.code.is_ok())
            .map(|r| self.view(r))
    }

    fn view(&self, r: &Record) -> RequestRecord<'_> {
        RequestRecord {
            start: Duration::from_micros(u64::from(r.start_us)),
            latency: Duration::from_micros(u64::from(r.latency_us)),
            outcome: r.code.outcome(),
            status: r.code.http_status(),
            captured: (r.capture > 0)
                .then(|| self.capture_names[usize::from(r.capture) - 1].as_str()),
        }
    }

    /// Adds an event at `at` (e.g. just before restarting the service).
    pub fn add_event(&mut self, label: impl Into<String>, at: Instant) {
        let offset = if at >= self.started {
            at.duration_since(self.started).as_nanos() as i128
        } else {
            -(self.started.duration_since(at).as_nanos() as i128)
        };
        self.events.push((label.into(), offset));
    }

    /// Adds an event given in wall-clock time (e.g. from an events file).
    pub fn add_unix_event(&mut self, event: &Event) {
        self.events.push((
            event.label.clone(),
            event.unix_nanos - self.started_unix_nanos,
        ));
    }

    /// Changes the window analysed around events.
    pub fn set_window(&mut self, window: EventWindow) {
        self.window = window;
    }

    /// Analyses the window around every event, in event-time order.
    pub fn events(&self) -> Vec<EventReport> {
        let mut events: Vec<&(String, i128)> = self.events.iter().collect();
        events.sort_by_key(|e| e.1);
        events
            .into_iter()
            .map(|(label, at_ns)| self.event_report(label, *at_ns))
            .collect()
    }

    fn event_report(&self, label: &str, at_ns: i128) -> EventReport {
        let lo_ns = at_ns - self.window.before.as_nanos() as i128;
        let hi_ns = at_ns + self.window.after.as_nanos() as i128;
        let lo = self.index_at(lo_ns);
        let hi = self.index_at(hi_ns + 1_000);
        let window = &self.records[lo..hi];

        let mut outcomes = BTreeMap::new();
        let mut captured = BTreeMap::new();
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
        let mut ok = 0;
        let mut first_failure: Option<usize> = None;
        for (i, r) in window.iter().enumerate() {
            *outcomes
                .entry(r.code.outcome().name().into_owned())
                .or_insert(0) += 1;
            if r.capture > 0 {
                *captured
                    .entry(self.capture_names[usize::from(r.capture) - 1].clone())
                    .or_insert(0) += 1;
            }
            if r.code.is_ok() {
                ok += 1;
                record_latency(&mut hist, u64::from(r.latency_us));
            } else if first_failure.is_none() {
                first_failure = Some(lo + i);
            }
        }
        let recovery = first_failure.and_then(|f| self.recovery_after(f));
        let last_recorded_ns = self
            .records
            .last()
            .map_or(0, |r| i128::from(r.start_us) * 1000);
        EventReport {
            label: label.to_owned(),
            at_s: secs(at_ns),
            window_start_s: secs(lo_ns),
            window_end_s: secs(hi_ns),
            total: window.len() as u64,
            ok,
            failed: window.len() as u64 - ok,
            outcomes,
            latency: Latency::from_histogram(&hist),
            first_failure_s: first_failure
                .map(|f| secs(i128::from(self.records[f].start_us) * 1000)),
            recovery,
            captured,
            incomplete: self.records_truncated && hi_ns > last_recorded_ns,
        }
    }

    /// Index of the first record starting at or after `offset_ns`.
    fn index_at(&self, offset_ns: i128) -> usize {
        let us = (offset_ns.div_euclid(1000)).clamp(0, i128::from(u32::MAX) + 1);
        self.records
            .partition_point(|r| i128::from(r.start_us) < us)
    }

    /// See [`EventReport::recovery`].
    fn recovery_after(&self, failure: usize) -> Option<Duration> {
        let from = u64::from(self.records[failure].start_us);
        let mut best: Option<u64> = None;
        for r in &self.records[failure..] {
            let start = u64::from(r.start_us);
            // Anything starting after the best completion cannot beat it.
            if best.is_some_and(|b| start > b) {
                break;
            }
            if r.code.is_ok() {
                let end = start + u64::from(r.latency_us);
                best = Some(best.map_or(end, |b| b.min(end)));
            }
        }
        best.map(|end| Duration::from_micros(end - from))
    }

    /// Requests per time bucket (by start time) over the recorded run.
    pub fn timeline(&self, bucket: Duration) -> Vec<TimelineBucket> {
        let width = u64::try_from(bucket.as_micros()).unwrap_or(u64::MAX).max(1);
        let end_us = self
            .records
            .last()
            .map_or(0, |r| u64::from(r.start_us))
            .max(u64::try_from(self.elapsed.as_micros()).unwrap_or(0));
        let n = usize::try_from(end_us / width + 1)
            .unwrap_or(1)
            .min(1 << 20);
        let mut buckets: Vec<TimelineBucket> = (0..n)
            .map(|i| TimelineBucket {
                start_s: (i as u64 * width) as f64 / 1e6,
                total: 0,
                ok: 0,
                failed: 0,
            })
            .collect();
        for r in &self.records {
            let i = usize::try_from(u64::from(r.start_us) / width)
                .unwrap_or(usize::MAX)
                .min(n - 1);
            let b = &mut buckets[i];
            b.total += 1;
            if r.code.is_ok() {
                b.ok += 1;
            } else {
                b.failed += 1;
            }
        }
        // An empty bucket exactly at the end is an artefact of rounding.
        if buckets.len() > 1 && buckets.last().is_some_and(|b| b.total == 0) {
            buckets.pop();
        }
        buckets
    }

    /// A human-readable summary: totals, outcome breakdown, latency,
    /// captured values, event windows and the first failures. Meant for
    /// assertion messages: `assert_eq!(r.failed(), 0, "{}", r.summary())`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = self.write_summary(&mut s);
        s
    }

    fn write_summary(&self, s: &mut String) -> fmt::Result {
        writeln!(
            s,
            "loadgen: {} x{} -> {} GET {} for {:.2} s",
            self.mode,
            self.connections,
            self.target,
            self.path,
            self.elapsed.as_secs_f64()
        )?;
        if let Some(name) = &self.tls_server_name {
            writeln!(s, "  tls        on, server name {name}")?;
        }
        writeln!(
            s,
            "  requests   {} total, {} ok, {} failed ({:.0} req/s, {} connections opened)",
            self.total(),
            self.ok(),
            self.failed(),
            self.rps(),
            self.connections_opened
        )?;
        writeln!(
            s,
            "  conns      at most {} per worker, {} of {} workers reconnected",
            self.max_connections_per_worker, self.workers_reconnected, self.connections
        )?;
        if let Some(think) = self.think {
            writeln!(s, "  think      {think} (seed {})", self.seed)?;
        }
        let outcomes: Vec<String> = self
            .outcomes()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        writeln!(s, "  outcomes   {}", or_none(&outcomes.join(" ")))?;
        let statuses: Vec<String> = self
            .statuses()
            .into_iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        writeln!(s, "  statuses   {}", or_none(&statuses.join(" ")))?;
        writeln!(s, "  latency    {} (successful requests)", self.latency())?;
        if let Some(name) = &self.capture_header {
            let values: Vec<String> = self
                .captured_values()
                .into_iter()
                .map(|c| {
                    format!(
                        "{}={} [{:.3}-{:.3} s]",
                        c.value,
                        c.count,
                        c.first.as_secs_f64(),
                        c.last.as_secs_f64()
                    )
                })
                .collect();
            writeln!(s, "  {name}: {}", or_none(&values.join(" ")))?;
        }
        for e in self.events() {
            write!(
                s,
                "  event {:?} at {:.3} s [{:.3}, {:.3}]: {} requests, {} failed",
                e.label, e.at_s, e.window_start_s, e.window_end_s, e.total, e.failed
            )?;
            if e.failed > 0 {
                let fails: Vec<String> = e
                    .outcomes
                    .iter()
                    .filter(|(k, _)| k.as_str() != "ok")
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect();
                write!(s, " ({})", fails.join(" "))?;
                if let Some(r) = e.recovery {
                    write!(s, ", recovered after {}", ms(micros(r)))?;
                }
            }
            if e.latency.count > 0 {
                write!(
                    s,
                    "; p99 {} max {}",
                    ms(e.latency.p99_us),
                    ms(e.latency.max_us)
                )?;
            }
            if e.incomplete {
                write!(s, " (records truncated)")?;
            }
            writeln!(s)?;
        }
        if self.failed() > 0 {
            let shown: Vec<RequestRecord<'_>> = self.failures().take(SUMMARY_FAILURES).collect();
            writeln!(
                s,
                "  first failures ({} of {}):",
                shown.len(),
                self.failed()
            )?;
            for f in shown {
                write!(
                    s,
                    "    t={:.6} s  {}  after {}",
                    f.start.as_secs_f64(),
                    f.outcome,
                    ms(micros(f.latency))
                )?;
                if let Some(v) = f.captured {
                    write!(
                        s,
                        "  {}={v}",
                        self.capture_header.as_deref().unwrap_or("captured")
                    )?;
                }
                writeln!(s)?;
            }
        }
        if self.records_truncated {
            writeln!(
                s,
                "  note: per-request records were truncated; counts are exact, windows are not"
            )?;
        }
        Ok(())
    }

    /// The machine-readable report (see the crate docs for the schema).
    pub fn to_json(&self) -> Value {
        let statuses: serde_json::Map<String, Value> = self
            .statuses()
            .into_iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        let captured_spans: serde_json::Map<String, Value> = self
            .captured_values()
            .into_iter()
            .map(|c| {
                (
                    c.value,
                    json!({
                        "count": c.count,
                        "first_s": c.first.as_secs_f64(),
                        "last_s": c.last.as_secs_f64(),
                    }),
                )
            })
            .collect();
        let events: Vec<Value> = self
            .events()
            .into_iter()
            .map(|e| {
                json!({
                    "label": e.label,
                    "t_s": e.at_s,
                    "window_start_s": e.window_start_s,
                    "window_end_s": e.window_end_s,
                    "total": e.total,
                    "ok": e.ok,
                    "failed": e.failed,
                    "outcomes": e.outcomes,
                    "latency_us": e.latency.to_json(),
                    "first_failure_s": e.first_failure_s,
                    "recovery_us": e.recovery.map(micros),
                    "captured": e.captured,
                    "incomplete": e.incomplete,
                })
            })
            .collect();
        let timeline: Vec<Value> = self
            .timeline(Duration::from_secs(1))
            .into_iter()
            .map(|b| json!({"t_s": b.start_s, "total": b.total, "ok": b.ok, "failed": b.failed}))
            .collect();
        let failures: Vec<Value> = self
            .failures()
            .take(JSON_FAILURES)
            .map(|f| {
                json!({
                    "t_s": f.start.as_secs_f64(),
                    "latency_us": micros(f.latency),
                    "outcome": f.outcome.name(),
                    "captured": f.captured,
                })
            })
            .collect();
        let first_failure = self.failures().next().map(|f| f.start.as_secs_f64());
        let last_failure = self.failures().last().map(|f| f.start.as_secs_f64());
        json!({
            "target": self.target,
            "path": self.path,
            "mode": self.mode.to_string(),
            "connections": self.connections,
            "tls": self.tls(),
            "duration_s": self.elapsed.as_secs_f64(),
            "timeout_s": self.timeout.as_secs_f64(),
            "total": self.total(),
            "ok": self.ok(),
            "failed": self.failed(),
            "outcomes": self.outcomes(),
            "statuses": statuses,
            "rps": (self.rps() * 10.0).round() / 10.0,
            "latency_us": self.latency().to_json(),
            "latency_all_us": self.latency_all().to_json(),
            "connections_opened": self.connections_opened,
            "max_connections_per_worker": self.max_connections_per_worker,
            "workers_reconnected": self.workers_reconnected,
            "think": self.think.map(|t| json!({
                "min_s": t.min.as_secs_f64(),
                "max_s": t.max.as_secs_f64(),
                "seed": self.seed,
            })),
            "capture_header": self.capture_header,
            "captured": self.captured(),
            "captured_spans": captured_spans,
            "events": events,
            "window": {
                "before_s": self.window.before.as_secs_f64(),
                "after_s": self.window.after.as_secs_f64(),
            },
            "first_failure_s": first_failure,
            "last_failure_s": last_failure,
            "failures": failures,
            "timeline": timeline,
            "records": self.records.len(),
            "records_truncated": self.records_truncated,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

fn merge_histogram(into: &mut Option<Histogram<u64>>, h: Histogram<u64>) {
    match into {
        None => *into = Some(h),
        Some(acc) => {
            // Histograms of one run share bounds; if a merge were ever out of
            // range, losing percentile precision beats losing the run.
            if acc.add(&h).is_err() {
                for v in h.iter_recorded() {
                    acc.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn secs(ns: i128) -> f64 {
    ns as f64 / 1e9
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "none" } else { s }
}
