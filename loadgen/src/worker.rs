//! One closed-loop worker: send a request, read the whole response, record
//! exactly one outcome, optionally pause for the think time, repeat — until
//! told to stop.
//!
//! All hot-path state (buffers, histograms, counters, records) is owned by
//! the worker, so requests touch no shared memory except a single-writer
//! progress counter. Results are merged once, when the run ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::conn::Conn;
use crate::outcome::{CODE_SPACE, Code, Outcome};
use crate::parse::{ParseError, Progress, ResponseParser};
use crate::tls::Connector;
use crate::{Load, Mode, Target, ThinkTime};

/// Distinct captured header values tracked per run; further values are
/// counted together under [`OTHER_CAPTURE`] so a misbehaving header (say, a
/// request id) cannot grow memory without bound.
pub(crate) const MAX_CAPTURE_VALUES: usize = 1024;
/// Label for captured values beyond [`MAX_CAPTURE_VALUES`].
pub(crate) const OTHER_CAPTURE: &str = "<other>";

/// Records are reserved from the shared budget in blocks of up to this many,
/// so the budget is touched once per block rather than once per request.
const RECORD_BLOCK: usize = 4096;

/// One request as stored for post-run analysis. Times are microseconds;
/// `start_us` is relative to the run start, which caps recorded runs at
/// about 71 minutes (later requests are still counted, just not recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) start_us: u32,
    pub(crate) latency_us: u32,
    pub(crate) code: Code,
    /// 0: no captured value; otherwise index + 1 into the capture table.
    pub(crate) capture: u16,
}

/// A captured header value with its count and first/last request start.
#[derive(Clone, Debug)]
pub(crate) struct CaptureStat {
    pub(crate) value: Vec<u8>,
    pub(crate) count: u64,
    pub(crate) first_us: u64,
    pub(crate) last_us: u64,
}

/// Fixed per-run parameters shared by all workers.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) target: Target,
    /// With HTTPS, the TLS connector every connection goes through.
    pub(crate) tls: Option<Connector>,
    pub(crate) request: Vec<u8>,
    pub(crate) mode: Mode,
    pub(crate) timeout: Duration,
    pub(crate) failure_pause: Duration,
    pub(crate) think: Option<ThinkTime>,
    pub(crate) seed: u64,
    pub(crate) capture_header: Option<String>,
    pub(crate) start: Instant,
}

impl Plan {
    pub(crate) fn new(load: &Load, start: Instant) -> Plan {
        Plan {
            target: load.target.clone(),
            tls: load.tls.as_ref().map(|t| t.connector()),
            request: load.request_bytes(),
            mode: load.mode,
            timeout: load.timeout,
            failure_pause: load.failure_pause,
            think: load.think,
            seed: load.seed,
            capture_header: load.capture_header.clone(),
            start,
        }
    }
}

/// Stop flag that workers poll between requests and can also await.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    flag: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a stop in between is not missed.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Live progress of one worker. Cache-line aligned so that workers on
/// different cores do not contend on each other's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct LiveCounter {
    pub(crate) total: AtomicU64,
    pub(crate) ok: AtomicU64,
}

/// State shared between the workers and the run handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stop: StopSignal,
    pub(crate) live: Box<[LiveCounter]>,
    record_budget: AtomicUsize,
    pub(crate) records_truncated: AtomicBool,
}

impl Shared {
    pub(crate) fn new(workers: usize, max_records: usize) -> Shared {
        Shared {
            stop: StopSignal::default(),
            live: (0..workers).map(|_| LiveCounter::default()).collect(),
            record_budget: AtomicUsize::new(max_records),
            records_truncated: AtomicBool::new(false),
        }
    }

    /// Takes a block of records from the budget; returns its size (0 when
    /// the budget is spent). Blocks shrink as the budget runs low, so that
    /// records reserved by one worker but never used do not leave much of
    /// the budget idle at the end.
    fn take_records(&self) -> usize {
        let workers = self.live.len().max(1);
        let grant = |left: usize| RECORD_BLOCK.min(left / (4 * workers)).max(16).min(left);
        let prev = self
            .record_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left - grant(left))
            })
            .unwrap_or(0);
        grant(prev)
    }
}

/// Everything a worker measured, merged into the report after the run.
#[derive(Debug)]
pub(crate) struct WorkerResult {
    pub(crate) records: Vec<Record>,
    pub(crate) counts: Vec<u64>,
    pub(crate) hist_ok: Histogram<u64>,
    pub(crate) hist_all: Histogram<u64>,
    pub(crate) captures: Vec<CaptureStat>,
    pub(crate) connections_opened: u64,
}

struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    index: usize,
    buf: BytesMut,
    parser: ResponseParser,
    result: WorkerResult,
    records_left: usize,
    total: u64,
    ok: u64,
    captures: CaptureTable,
}

/// Interning table for captured header values.
#[derive(Default)]
struct CaptureTable {
    stats: Vec<CaptureStat>,
    index: HashMap<Vec<u8>, u16>,
    last: Option<(Vec<u8>, u16)>,
}

/// Runs one worker until the stop signal fires.
pub(crate) async fn run_worker(plan: Arc<Plan>, shared: Arc<Shared>, index: usize) -> WorkerResult {
    // Auto-resizing histograms only cover the range actually seen, which
    // keeps thousands of workers cheap.
    let hist = || Histogram::new(3).expect("3 significant digits is valid");
    let mut w = Worker {
        buf: BytesMut::with_capacity(16 * 1024),
        parser: ResponseParser::new(plan.capture_header.as_deref()),
        result: WorkerResult {
            records: Vec::new(),
            counts: vec![0; CODE_SPACE],
            hist_ok: hist(),
            hist_all: hist(),
            captures: Vec::new(),
            connections_opened: 0,
        },
        plan: plan.clone(),
        shared,
        index,
        records_left: 0,
        total: 0,
        ok: 0,
        captures: CaptureTable::default(),
    };
    let mut rng = worker_rng(plan.seed, index);
    let mut conn: Option<Conn> = None;
    while !w.shared.stop.is_stopped() {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + plan.timeout);
        let code = match tokio::time::timeout_at(deadline, w.exchange(&mut conn)).await {
            Ok(code) => code,
            Err(_) => {
                // The connection's state is unknown mid-exchange: drop it.
                conn = None;
                Code::failure(Outcome::Timeout)
            }
        };
        let end = Instant::now();
        w.record(start, end, code);
        let mut pause = plan.think.map_or(Duration::ZERO, |t| t.sample(&mut rng));
        if code.http_status().is_none() {
            pause = pause.max(plan.failure_pause);
        }
        // After the pause the connection, if any, is used as it is: no peek
        // or readability check for a close that arrived meanwhile. Simple
        // clients do not check either, and the failures that causes on a
        // server closing idle connections are what think time measures.
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = w.shared.stop.wait() => {}
            }
        }
    }
    w.result.captures = w.captures.stats;
    w.result
}

/// The think-time generator of worker `index`. Seeds of neighbouring
/// workers are spread by a multiplicative hash so that their sequences do
/// not start out alike.
fn worker_rng(seed: u64, index: usize) -> fastrand::Rng {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    fastrand::Rng::with_seed(seed ^ (index as u64).wrapping_add(1).wrapping_mul(GOLDEN))
}

impl Worker {
    /// Performs one request/response exchange, opening a connection first if
    /// there is none (with TLS, the handshake is part of opening it, and of
    /// the request's time). Leaves `conn` as `None` whenever the connection
    /// cannot carry another request.
    async fn exchange(&mut self, conn: &mut Option<Conn>) -> Code {
        self.parser.reset();
        self.buf.clear();
        let c = match conn {
            Some(c) => c,
            None => match Conn::connect(&self.plan.target, self.plan.tls.as_ref()).await {
                Ok(c) => {
                    self.result.connections_opened += 1;
                    conn.insert(c)
                }
                Err(outcome) => return Code::failure(outcome),
            },
        };
        // The flush is a no-op on plain sockets; TLS may still hold part of
        // the request's records when the write returns.
        let written = match c.write_all(&self.plan.request).await {
            Ok(()) => c.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            *conn = None;
            return Code::failure(Outcome::from_io(&e));
        }
        loop {
            match self.parser.parse(&mut self.buf) {
                Ok(Progress::Complete) => break,
                Ok(Progress::Partial) => {}
                Err(e) => {
                    *conn = None;
                    return Code::failure(parse_failure(e));
                }
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            match c.read_buf(&mut self.buf).await {
                Ok(0) => {
                    // The peer closed: complete only if the body ran to EOF.
                    *conn = None;
                    match self.parser.eof() {
                        Ok(()) => break,
                        Err(e) => return Code::failure(parse_failure(e)),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    *conn = None;
                    return Code::failure(Outcome::from_io(&e));
                }
            }
        }
        // Bytes beyond the response were never asked for; rather than
        // misattribute them to the next request, start over on a new
        // connection.
        if self.plan.mode == Mode::Close || self.parser.must_close() || !self.buf.is_empty() {
            *conn = None;
        }
        Code::status(self.parser.status())
    }

    fn record(&mut self, start: Instant, end: Instant, code: Code) {
        let start_us = micros(start.saturating_duration_since(self.plan.start));
        let latency_us = micros(end.saturating_duration_since(start));
        let r = &mut self.result;
        r.counts[usize::from(code.0)] += 1;
        record_latency(&mut r.hist_all, latency_us);
        let ok = code.is_ok();
        if ok {
            record_latency(&mut r.hist_ok, latency_us);
            self.ok += 1;
        }
        self.total += 1;
        let live = &self.shared.live[self.index];
        // Single writer per counter: plain stores suffice.
        live.total.store(self.total, Ordering::Relaxed);
        live.ok.store(self.ok, Ordering::Relaxed);

        let capture = match self.parser.captured() {
            Some(value) => self.captures.id(value, start_us),
            None => 0,
        };

        if self.records_left == 0 {
            self.records_left = self.shared.take_records();
            if self.records_left == 0 {
                self.shared.records_truncated.store(true, Ordering::Relaxed);
                return;
            }
        }
        let (Ok(start_us), Ok(latency_us)) = (u32::try_from(start_us), u32::try_from(latency_us))
        else {
            self.shared.records_truncated.store(true, Ordering::Relaxed);
            return;
        };
        self.records_left -= 1;
        self.result.records.push(Record {
            start_us,
            latency_us,
            code,
            capture,
        });
    }
}

impl CaptureTable {
    /// Interns a captured value and updates its statistics.
    fn id(&mut self, value: &[u8], start_us: u64) -> u16 {
        let id = match &self.last {
            // The common case: the same process answers again.
            Some((last, id)) if last.as_slice() == value => *id,
            _ => {
                let id = match self.index.get(value) {
                    Some(&id) => id,
                    None => {
                        let full = self.stats.len() >= MAX_CAPTURE_VALUES;
                        let key: &[u8] = if full {
                            OTHER_CAPTURE.as_bytes()
                        } else {
                            value
                        };
                        match self.index.get(key) {
                            Some(&id) => id,
                            None => {
                                self.stats.push(CaptureStat {
                                    value: key.to_vec(),
                                    count: 0,
                                    first_us: start_us,
                                    last_us: start_us,
                                });
                                let id = self.stats.len() as u16;
                                self.index.insert(key.to_vec(), id);
                                id
                            }
                        }
                    }
                };
                self.last = Some((value.to_vec(), id));
                id
            }
        };
        let stat = &mut self.stats[usize::from(id) - 1];
        stat.count += 1;
        stat.first_us = stat.first_us.min(start_us);
        stat.last_us = stat.last_us.max(start_us);
        id
    }
}

/// Records into an auto-resizing histogram. (`saturating_record` would
/// clamp to the current range instead of growing it.)
pub(crate) fn record_latency(h: &mut Histogram<u64>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

fn parse_failure(e: ParseError) -> Outcome {
    match e {
        ParseError::Protocol(_) => Outcome::ProtocolError,
        ParseError::ClosedBeforeResponse => Outcome::ClosedBeforeResponse,
        ParseError::ClosedMidBody => Outcome::ClosedMidBody,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
