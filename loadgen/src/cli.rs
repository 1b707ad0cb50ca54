//! The `loadgen` command line: argument parsing, signal handling, events
//! file, JSON output and exit status. The binary's `main` only calls
//! [`main`].
//!
//! Exit status: 0 after a completed run; 1 if `--fail-on-error` is given and
//! any request failed, `--min-ok` was not reached, or more connections were
//! opened than `--max-connections` allows; 2 for usage errors and failures
//! to start or to write the report.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::{EventWindow, Load, Mode, Report, Target, ThinkTime, Tls, events, start, tls};

/// Connection reuse policy, as spelled on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CliMode {
    /// One persistent HTTP/1.1 connection per worker, reopened only when
    /// the server closes it or a request on it fails.
    Keepalive,
    /// A new connection for every request, sent with `Connection: close`.
    Close,
}

impl From<CliMode> for Mode {
    fn from(m: CliMode) -> Mode {
        match m {
            CliMode::Keepalive => Mode::KeepAlive,
            CliMode::Close => Mode::Close,
        }
    }
}

/// Strict HTTP/1.1 load generator: every request is counted exactly once and
/// nothing is ever retried.
///
/// Runs N closed-loop workers against one address until --duration elapses
/// or SIGINT/SIGTERM arrives; requests in flight then complete and no new
/// ones start, so stopping never causes failures. A second signal aborts
/// immediately.
///
/// With --think, each worker pauses between requests and then reuses its
/// keep-alive connection without checking whether the server closed it
/// meanwhile, like simple clients do; --max-connections then checks that
/// no worker had to reconnect.
///
/// With --tls, requests go over HTTPS: the handshake counts as part of the
/// request that opens a connection, and a failed one fails that request as
/// tls_handshake_failed.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, verbatim_doc_comment)]
pub struct Args {
    /// Target TCP address, HOST:PORT (resolved once at start).
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "unix",
        conflicts_with = "unix"
    )]
    pub addr: Option<String>,
    /// Target unix stream socket instead of TCP.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Speak HTTPS (TLS over TCP; ALPN offers only http/1.1). Needs
    /// --cacert.
    #[arg(long, requires = "cacert", conflicts_with = "unix")]
    pub tls: bool,
    /// PEM file with the CA certificate(s) to trust for --tls; no other
    /// trust store is consulted.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub cacert: Option<PathBuf>,
    /// Server name sent as SNI and verified against the certificate with
    /// --tls. Default: the host of --addr if it is a DNS name, else
    /// localhost. The Host header is unaffected.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub server_name: Option<String>,
    /// Concurrent workers (one connection each).
    #[arg(short, long, default_value_t = 32)]
    pub connections: usize,
    /// Connection reuse policy.
    #[arg(short, long, value_enum, default_value_t = CliMode::Keepalive)]
    pub mode: CliMode,
    /// Stop after this long (e.g. 30s, 1m, 500ms). Without it, runs until
    /// SIGINT/SIGTERM.
    #[arg(short, long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Request target (path and query).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Extra request header, repeatable. A Host header replaces the default.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Per-request deadline covering connect, write and the full response.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Pause after a failure without a response, so a dead target does not
    /// cause a busy loop.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    pub failure_pause: Duration,
    /// Think time: after each completed request (ok or failed) a worker
    /// sleeps a uniformly random time in MIN..MAX (e.g. 200ms..2500ms; a
    /// single duration such as 1s is fixed), then sends the next request on
    /// the same keep-alive connection without checking whether the server
    /// closed it meanwhile. Default: none (closed loop).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_think)]
    pub think: Option<ThinkTime>,
    /// Seed for the think-time random numbers (each worker mixes in its
    /// index); the same seed repeats the same pauses.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Response header whose values are counted (e.g. x-pid).
    #[arg(long, value_name = "NAME")]
    pub capture_header: Option<String>,
    /// Write the JSON report here ("-" for stdout).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Events file read after the run: lines "UNIX_TIME_NANOS LABEL", as
    /// written by `echo "$(date +%s%N) restart" >> FILE`.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Event window start, relative to each event.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub window_before: Duration,
    /// Event window end, relative to each event.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub window_after: Duration,
    /// Exit 1 if any request failed.
    #[arg(long)]
    pub fail_on_error: bool,
    /// Exit 1 unless at least this many requests succeeded (guards against
    /// a run that proves nothing because it sent nothing).
    #[arg(long, value_name = "N")]
    pub min_ok: Option<u64>,
    /// Exit 1 if more than N connections were opened in total. With
    /// N = --connections this proves every worker kept its one connection.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u64>,
    /// Runtime worker threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print live counters to stderr every second.
    #[arg(long)]
    pub progress: bool,
    /// Do not print the summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Upper bound on per-request records kept for event windows (12 bytes
    /// each); counts stay exact beyond it.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_records: usize,
}

impl Args {
    /// Translates the arguments into a [`Load`].
    pub fn to_load(&self) -> Result<Load, String> {
        let target = match (&self.addr, &self.unix) {
            (_, Some(path)) => Target::Unix(path.clone()),
            (Some(addr), None) => {
                Target::resolve(addr).map_err(|e| format!("cannot resolve {addr}: {e}"))?
            }
            (None, None) => return Err("one of --addr or --unix is required".into()),
        };
        let headers = self
            .headers
            .iter()
            .map(|h| {
                h.split_once(':')
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("header {h:?} is not NAME: VALUE"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if self.tls {
            let cacert = self.cacert.as_ref().ok_or("--tls needs --cacert FILE")?;
            let name = match (&self.server_name, &self.addr) {
                (Some(name), _) => name.clone(),
                (None, Some(addr)) => tls::default_server_name(addr),
                (None, None) => "localhost".to_owned(),
            };
            Some(Tls::from_file(cacert, &name)?)
        } else {
            None
        };
        let load = Load {
            connections: self.connections,
            mode: self.mode.into(),
            path: self.path.clone(),
            headers,
            timeout: self.timeout,
            failure_pause: self.failure_pause,
            duration: self.duration,
            think: self.think,
            seed: self.seed,
            capture_header: self.capture_header.clone(),
            max_records: self.max_records,
            window: EventWindow {
                before: self.window_before,
                after: self.window_after,
            },
            tls,
            ..Load::new(target)
        };
        load.validate()?;
        Ok(load)
    }
}

/// Entry point of the `loadgen` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let load = args.to_load()?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let mut report = runtime.block_on(drive(load, args.progress))?;

    if let Some(path) = &args.events {
        match events::read(path) {
            Ok(evs) => evs.iter().for_each(|e| report.add_unix_event(e)),
            // A missing or broken events file must not cost the run's data.
            Err(e) => eprintln!("loadgen: warning: ignoring events: {e}"),
        }
    }
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    if !args.quiet {
        eprint!("{}", report.summary());
    }

    let mut fail = false;
    if args.fail_on_error && report.failed() > 0 {
        eprintln!(
            "loadgen: {} of {} requests failed",
            report.failed(),
            report.total()
        );
        fail = true;
    }
    if let Some(min) = args.min_ok {
        if report.ok() < min {
            eprintln!(
                "loadgen: only {} requests succeeded, wanted at least {min}",
                report.ok()
            );
            fail = true;
        }
    }
    if let Some(max) = args.max_connections {
        if report.connections_opened() > max {
            eprintln!(
                "loadgen: {} connections opened, wanted at most {max} ({} of {} workers reconnected)",
                report.connections_opened(),
                report.workers_reconnected(),
                args.connections
            );
            fail = true;
        }
    }
    Ok(if fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs the load until its duration elapses or a signal arrives.
async fn drive(load: Load, progress: bool) -> Result<Report, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;

    let running = start(load);
    let handle = running.handle();
    let stopper = handle.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
            signals += 1;
            if signals > 1 {
                eprintln!("loadgen: second signal, aborting without a report");
                std::process::exit(130);
            }
            stopper.stop();
        }
    });
    if progress {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = handle.progress();
            while !handle.is_stopped() {
                tick.tick().await;
                let now = handle.progress();
                let dt = (now.elapsed - last.elapsed).as_secs_f64().max(1e-9);
                eprintln!(
                    "[{:7.1} s] total {} ok {} failed {} ({:.0} req/s)",
                    now.elapsed.as_secs_f64(),
                    now.total,
                    now.ok,
                    now.failed,
                    (now.total - last.total) as f64 / dt
                );
                last = now;
            }
        });
    }
    Ok(running.finish().await)
}

/// Parses `--think` (clap wants a function returning a `Result`).
fn parse_think(s: &str) -> Result<ThinkTime, String> {
    s.parse()
}

fn write_json(report: &Report, path: &PathBuf) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(&report.to_json()).map_err(|e| e.to_string())?;
    text.push('\n');
    if path.as_os_str() == "-" {
        std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| format!("stdout: {e}"))
    } else {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
