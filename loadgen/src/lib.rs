//! Strict HTTP/1.1 load generator.
//!
//! `loadgen` exists to prove a claim: that restarts, reloads and upgrades of
//! a service drop **zero** requests. It therefore counts instead of
//! smoothing over:
//!
//! * every request is counted exactly once, with exactly one [`Outcome`];
//! * nothing is ever retried — a request that fails is recorded as failed and
//!   the worker starts a *new* request, on a new connection;
//! * a request sent on a reused keep-alive connection that the server closed
//!   without answering is a failure (`closed_before_response`), because
//!   that is precisely the race a careful service must avoid;
//! * a server that answers with `Connection: close` gets its response
//!   counted as `ok`, and the next request opens a new connection; that is
//!   not a retry;
//! * stopping never fails requests: workers finish the request in flight
//!   (bounded by the per-request timeout) and then start no new one.
//!
//! Each of N workers runs a closed loop (send, read the whole response, send
//! the next) against one [`Target`]. With [`Load::think`] set, a worker
//! instead pauses a random [`ThinkTime`] after each request and then sends
//! the next one on the same keep-alive connection *without checking* whether
//! the server closed it meanwhile, as simple clients do; a server that closes
//! idle connections (on restart, say) then fails those requests, and
//! [`Report::workers_reconnected`] shows how many workers lost theirs. The result is a [`Report`] with exact
//! outcome counts, latency percentiles, the values of one captured response
//! header, and per-event windows (what happened around "restart at t").
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let load = loadgen::Load {
//!     connections: 8,
//!     capture_header: Some("x-pid".into()),
//!     ..loadgen::Load::new("127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap())
//! };
//! let running = loadgen::start(load);
//! assert!(running.wait_for_ok(100, Duration::from_secs(5)).await);
//! running.mark("restart");
//! // ... restart the service ...
//! tokio::time::sleep(Duration::from_secs(2)).await;
//! let report = running.stop().await;
//! assert_eq!(report.failed(), 0, "{}", report.summary());
//! # }
//! ```
//!
//! # HTTPS
//!
//! With [`Load::tls`] set (`loadgen --tls --cacert FILE`), every connection
//! completes a TLS handshake before its first request, and counting stays as
//! strict as over plain TCP:
//!
//! * the handshake is part of the request that opened the connection and of
//!   its deadline; a failed handshake fails that request as
//!   `tls_handshake_failed` and is never retried;
//! * a server's `close_notify` followed by the TCP close is the same EOF as
//!   a plain TCP close, and so is a TCP close without `close_notify`: a
//!   keep-alive connection closed while idle fails the next request as
//!   `closed_before_response` (or `reset`), exactly as without TLS;
//! * only the given CA certificates are trusted, the certificate must name
//!   [`Tls::server_name`], and ALPN offers only `http/1.1`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! # let ca_pem: Vec<u8> = Vec::new();
//! let load = loadgen::Load {
//!     tls: Some(loadgen::Tls::from_pem(&ca_pem, "localhost")?),
//!     ..loadgen::Load::new("127.0.0.1:8443".parse::<std::net::SocketAddr>().unwrap())
//! };
//! let report = loadgen::run(load, tokio::time::sleep(std::time::Duration::from_secs(1))).await;
//! assert_eq!(report.failed(), 0, "{}", report.summary());
//! # Ok(())
//! # }
//! ```
//!
//! # Outcomes
//!
//! `ok` (2xx, body read completely), `status_NNN` (any other complete
//! response), `connect_refused`, `connect_error`, `tls_handshake_failed`,
//! `reset`,
//! `closed_before_response`, `closed_mid_body`, `timeout`, `protocol_error`,
//! `io_error` (any other I/O error). See [`Outcome`].
//!
//! # JSON report
//!
//! [`Report::to_json`] (and `loadgen --json`) produce one object. Times are
//! seconds (`*_s`, relative to the run start unless noted) or microseconds
//! (`*_us`); latency objects are `{"count","p50","p90","p99","p999","max",
//! "mean"}`.
//!
//! | key | meaning |
//! | --- | --- |
//! | `target`, `path`, `mode`, `connections`, `timeout_s` | the configuration |
//! | `tls` | `true` for HTTPS ([`Load::tls`]), else `false` |
//! | `duration_s` | wall time of the run, including the final drain |
//! | `total`, `ok`, `failed` | exact counts; `failed = total - ok` |
//! | `outcomes` | `{name: count}`; all outcomes above present, `status_NNN` when non-zero |
//! | `statuses` | `{"200": count, ...}` for complete responses |
//! | `rps` | `total / duration_s` |
//! | `latency_us` | successful requests; `latency_all_us`: every request |
//! | `connections_opened` | successful connects (with TLS: completed handshakes) |
//! | `max_connections_per_worker` | the most connects by one worker (1: nobody reconnected) |
//! | `workers_reconnected` | workers that opened more than one connection |
//! | `think` | `{"min_s","max_s","seed"}` with [`Load::think`], else `null` |
//! | `capture_header`, `captured` | header name and `{value: count}` |
//! | `captured_spans` | `{value: {"count","first_s","last_s"}}` |
//! | `events` | per event: `label`, `t_s`, `window_start_s`, `window_end_s`, `total`, `ok`, `failed`, `outcomes`, `latency_us` (successful), `first_failure_s`, `recovery_us`, `captured`, `incomplete` |
//! | `window` | `{"before_s","after_s"}` used for events |
//! | `first_failure_s`, `last_failure_s` | start of the first/last failed request, or `null` |
//! | `failures` | up to 100 failed requests: `t_s`, `latency_us`, `outcome`, `captured` |
//! | `timeline` | per second of the run: `t_s`, `total`, `ok`, `failed` |
//! | `records`, `records_truncated` | per-request records kept; whether [`Load::max_records`] was hit |

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub mod cli;
mod conn;
pub mod events;
mod outcome;
mod parse;
mod report;
mod run;
mod tls;
mod worker;

pub use events::Event;
pub use outcome::Outcome;
pub use report::{CapturedValue, EventReport, Latency, Report, RequestRecord, TimelineBucket};
pub use run::{Handle, Progress, Running, run, start};
pub use tls::Tls;

/// Where requests are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix stream socket path.
    Unix(PathBuf),
}

impl Target {
    /// Resolves `host:port` once, up front, so that connection attempts
    /// measure the server and not the resolver. The first address wins.
    pub fn resolve(addr: &str) -> io::Result<Target> {
        addr.to_socket_addrs()?
            .next()
            .map(Target::Tcp)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
    }

    /// The default `Host` header value for this target.
    fn host(&self) -> String {
        match self {
            Target::Tcp(addr) => addr.to_string(),
            Target::Unix(_) => "localhost".to_owned(),
        }
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::Tcp(addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How workers use connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 persistent connections: one connection per worker, reused
    /// until the server closes it (or a request on it fails).
    #[default]
    KeepAlive,
    /// A fresh connection per request, sent with `Connection: close`.
    Close,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::KeepAlive => "keepalive",
            Mode::Close => "close",
        })
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "keepalive" | "keep-alive" => Ok(Mode::KeepAlive),
            "close" => Ok(Mode::Close),
            _ => Err(format!("unknown mode {s:?}: expected keepalive or close")),
        }
    }
}

/// The window reported around each event: `[event - before, event + after]`,
/// by request start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventWindow {
    /// How far before the event the window starts.
    pub before: Duration,
    /// How far after the event the window ends.
    pub after: Duration,
}

impl Default for EventWindow {
    fn default() -> Self {
        EventWindow {
            before: Duration::from_millis(100),
            after: Duration::from_secs(2),
        }
    }
}

/// Idle time between a worker's requests: after each completed exchange
/// (success or failure) the worker sleeps a uniformly random duration in
/// `[min, max]` before its next request.
///
/// On a keep-alive connection the next request then goes out on the same
/// connection without first checking whether the server closed it in the
/// meantime, as simple clients (Python's `http.client`, a shell loop with
/// one `curl` session) do. A server that closes idle connections, say on
/// restart, therefore makes such requests fail; that is what this mode
/// exists to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinkTime {
    /// Shortest pause.
    pub min: Duration,
    /// Longest pause; equal to `min` for a fixed pause.
    pub max: Duration,
}

impl ThinkTime {
    /// A pause of exactly `d`.
    pub fn fixed(d: Duration) -> ThinkTime {
        ThinkTime { min: d, max: d }
    }

    /// Picks one pause uniformly from `[min, max]`, at nanosecond
    /// resolution.
    pub(crate) fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        let min = nanos(self.min);
        let max = nanos(self.max).max(min);
        Duration::from_nanos(rng.u64(min..=max))
    }
}

/// Nanoseconds, saturating: pauses beyond 584 years are not a concern.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl FromStr for ThinkTime {
    type Err = String;

    /// Parses `MIN..MAX` (e.g. `200ms..2500ms`) or a single duration
    /// (e.g. `1s`) for a fixed pause. Durations use humantime syntax.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            humantime::parse_duration(part.trim())
                .map_err(|e| format!("think time {s:?}: {part:?} is not a duration: {e}"))
        };
        let think = match s.split_once("..") {
            Some((min, max)) => ThinkTime {
                min: parse(min)?,
                max: parse(max)?,
            },
            None => ThinkTime::fixed(parse(s)?),
        };
        if think.min > think.max {
            return Err(format!(
                "think time {s:?}: minimum {:?} exceeds maximum {:?}",
                think.min, think.max
            ));
        }
        Ok(think)
    }
}

impl fmt::Display for ThinkTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}..{}",
            humantime::format_duration(self.min),
            humantime::format_duration(self.max)
        )
    }
}

/// What load to generate. Construct with [`Load::new`] and override fields
/// with struct-update syntax.
#[derive(Clone, Debug)]
pub struct Load {
    /// Where to send requests.
    pub target: Target,
    /// Number of concurrent workers, each with at most one connection.
    pub connections: usize,
    /// Connection reuse policy.
    pub mode: Mode,
    /// Request target (path and query), e.g. `/` or `/health?x=1`.
    pub path: String,
    /// Extra request headers. A `Host` header here replaces the default one.
    pub headers: Vec<(String, String)>,
    /// Deadline for one request, covering connect, write and the complete
    /// response. Expiry counts as [`Outcome::Timeout`].
    pub timeout: Duration,
    /// Pause after a failure without a response (connection refused, reset,
    /// ...) before the worker's next request, so a dead server does not turn
    /// the generator into a busy loop. Zero disables it.
    pub failure_pause: Duration,
    /// Stop after this long. `None` runs until stopped.
    pub duration: Option<Duration>,
    /// Pause between a worker's requests; `None` (the default) sends the
    /// next request as soon as the previous one completed (closed loop).
    /// After a failure without a response the pause is at least
    /// [`Load::failure_pause`].
    pub think: Option<ThinkTime>,
    /// Seed for the think-time random numbers; each worker derives its own
    /// generator from it and its index, so a run with the same seed
    /// repeats the same pauses.
    pub seed: u64,
    /// Response header whose value is recorded per request (e.g. `x-pid`),
    /// matched case-insensitively.
    pub capture_header: Option<String>,
    /// Upper bound on per-request records kept for event windows, timelines
    /// and failure listings (12 bytes each). Totals, outcome counts,
    /// whole-run latency and captured-value counts stay exact beyond it.
    pub max_records: usize,
    /// Window reported around events.
    pub window: EventWindow,
    /// Speak HTTPS: `None` (the default) sends plain HTTP. TLS needs a
    /// [`Target::Tcp`] target.
    pub tls: Option<Tls>,
}

impl Load {
    /// Defaults: 32 keep-alive connections, `GET /`, 10 s timeout, 1 ms
    /// failure pause, no think time, seed 0, no duration limit, up to 16 Mi
    /// records (192 MiB), plain HTTP.
    pub fn new(target: impl Into<Target>) -> Self {
        Load {
            target: target.into(),
            connections: 32,
            mode: Mode::KeepAlive,
            path: "/".to_owned(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            failure_pause: Duration::from_millis(1),
            duration: None,
            think: None,
            seed: 0,
            capture_header: None,
            max_records: 16 << 20,
            window: EventWindow::default(),
            tls: None,
        }
    }

    /// Checks the configuration; [`start`] and [`run`] panic on what this
    /// rejects.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("connections must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        if let Some(think) = self.think {
            if think.min > think.max {
                return Err(format!(
                    "think time minimum {:?} exceeds maximum {:?}",
                    think.min, think.max
                ));
            }
        }
        let path_ok = (self.path.starts_with('/') || self.path == "*")
            && self.path.bytes().all(|b| b > b' ' && b != 0x7f);
        if !path_ok {
            return Err(format!(
                "invalid request path {:?}: must start with '/' and contain no spaces or control characters",
                self.path
            ));
        }
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(format!("invalid header name {name:?}"));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!("invalid value for header {name}"));
            }
        }
        if let Some(name) = &self.capture_header {
            if !is_token(name) {
                return Err(format!("invalid capture header name {name:?}"));
            }
        }
        if let (Some(_), Target::Unix(path)) = (&self.tls, &self.target) {
            return Err(format!(
                "TLS over a unix socket ({}) is not supported: use a TCP target",
                path.display()
            ));
        }
        Ok(())
    }

    /// The exact bytes of the request every worker sends.
    pub fn request_bytes(&self) -> Vec<u8> {
        let mut req = format!("GET {} HTTP/1.1\r\n", self.path);
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            req.push_str(&format!("Host: {}\r\n", self.target.host()));
        }
        for (name, value) in &self.headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.mode == Mode::Close {
            req.push_str("Connection: close\r\n");
        }
        req.push_str("\r\n");
        req.into_bytes()
    }
}

/// RFC 9110 token: the characters allowed in a header field name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> Load {
        Load::new("127.0.0.1:8080".parse::<SocketAddr>().expect("addr"))
    }

    #[test]
    fn request_bytes_keepalive_and_close() {
        let l = Load {
            path: "/hello?x=1".into(),
            headers: vec![("X-Test".into(), "yes".into())],
            ..load()
        };
        assert_eq!(
            l.request_bytes(),
            b"GET /hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Test: yes\r\n\r\n"
        );
        let l = Load {
            mode: Mode::Close,
            headers: vec![("host".into(), "example".into())],
            ..load()
        };
        assert_eq!(
            l.request_bytes(),
            b"GET / HTTP/1.1\r\nhost: example\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn validation_rejects_bad_input() {
        assert!(load().validate().is_ok());
        assert!(
            Load {
                connections: 0,
                ..load()
            }
            .validate()
            .is_err()
        );
        assert!(
            Load {
                path: "/a b".into(),
                ..load()
            }
            .validate()
            .is_err()
        );
        assert!(
            Load {
                path: "nope".into(),
                ..load()
            }
            .validate()
            .is_err()
        );
        let bad_header = Load {
            headers: vec![("X-A".into(), "1\r\nX-Injected: 2".into())],
            ..load()
        };
        assert!(bad_header.validate().is_err());
        let bad_name = Load {
            capture_header: Some("x pid".into()),
            ..load()
        };
        assert!(bad_name.validate().is_err());
        let backwards = Load {
            think: Some(ThinkTime {
                min: Duration::from_secs(2),
                max: Duration::from_secs(1),
            }),
            ..load()
        };
        assert!(backwards.validate().is_err());
    }

    #[test]
    fn tls_needs_a_tcp_target() {
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let tls = Tls::from_der(ca.der(), "localhost").expect("tls");
        let https = Load {
            tls: Some(tls.clone()),
            ..load()
        };
        assert!(https.validate().is_ok());
        // TLS changes nothing in the request itself.
        assert_eq!(https.request_bytes(), load().request_bytes());
        let e = Load {
            tls: Some(tls),
            ..Load::new(Target::Unix("/run/x.sock".into()))
        }
        .validate()
        .expect_err("TLS over unix");
        assert!(e.contains("/run/x.sock") && e.contains("TLS"), "{e}");
    }

    #[test]
    fn think_time_parses_ranges_and_fixed_durations() {
        let ms = Duration::from_millis;
        assert_eq!(
            "200ms..2500ms".parse::<ThinkTime>(),
            Ok(ThinkTime {
                min: ms(200),
                max: ms(2500)
            })
        );
        assert_eq!(
            " 1s .. 2s ".parse::<ThinkTime>().map(|t| t.max),
            Ok(ms(2000))
        );
        assert_eq!("1s".parse::<ThinkTime>(), Ok(ThinkTime::fixed(ms(1000))));
        let err = "2s..1s".parse::<ThinkTime>().expect_err("min above max");
        assert!(err.contains("exceeds"), "{err}");
        let err = "fast..1s".parse::<ThinkTime>().expect_err("not a duration");
        assert!(err.contains("\"fast\""), "{err}");
        assert!("".parse::<ThinkTime>().is_err());
        assert_eq!(ThinkTime::fixed(ms(1500)).to_string(), "1s 500ms..1s 500ms");
    }

    #[test]
    fn think_time_samples_cover_the_range_and_stay_inside() {
        let think = ThinkTime {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let samples: Vec<Duration> = (0..1000).map(|_| think.sample(&mut rng)).collect();
        assert!(samples.iter().all(|d| (think.min..=think.max).contains(d)));
        // Uniform over the range: both halves get a fair share.
        let low = samples
            .iter()
            .filter(|d| **d < Duration::from_millis(15))
            .count();
        assert!((350..650).contains(&low), "{low} of 1000 in the lower half");
        let fixed = ThinkTime::fixed(Duration::from_millis(3));
        assert_eq!(fixed.sample(&mut rng), Duration::from_millis(3));
    }

    #[test]
    fn mode_parses() {
        assert_eq!("keepalive".parse::<Mode>(), Ok(Mode::KeepAlive));
        assert_eq!("Keep-Alive".parse::<Mode>(), Ok(Mode::KeepAlive));
        assert_eq!("close".parse::<Mode>(), Ok(Mode::Close));
        assert!("pipeline".parse::<Mode>().is_err());
    }

    #[test]
    fn target_display() {
        assert_eq!(load().target.to_string(), "127.0.0.1:8080");
        assert_eq!(
            Target::Unix("/run/x.sock".into()).to_string(),
            "unix:/run/x.sock"
        );
        assert_eq!(Target::Unix("/run/x.sock".into()).host(), "localhost");
    }
}
