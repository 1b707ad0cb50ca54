//! HTTP abuse: clients that trickle headers, say nothing, hold a thousand connections, send
//! heads or bodies over the limits, or exceed `http.max_connections` — the service must stay
//! responsive and bounded, and a drain must still meet its deadline with such clients open.
//!
//! Timings printed with `--nocapture` are observations, not assertions: the assertions use
//! generous margins so a loaded machine does not make them flaky.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{KeepAlive, PATIENCE, Service, Systemd, get};

/// `http.header_read_timeout` in the tests that measure it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of a timeout before a test calls it missed.
const MARGIN: Duration = Duration::from_secs(2);
/// Pause between two header lines of a slowloris client.
const TRICKLE: Duration = Duration::from_millis(200);

/// What became of a connection the server was expected to close.
#[derive(Debug)]
struct Closed {
    /// Time from the start of the client's request to the close.
    after: Duration,
    /// What the server sent before closing.
    received: Vec<u8>,
}

impl Closed {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// Sends `head` a line at a time, one line per `TRICKLE`, never finishing it (after the given
/// lines it keeps adding header lines), until the server closes the connection or `give_up`
/// passes. Returns `None` if the connection was still open then.
fn slowloris(addr: SocketAddr, head: &[&str], give_up: Duration) -> Option<Closed> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(TRICKLE)).expect("timeout");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut lines = head
        .iter()
        .map(|l| (*l).to_owned())
        .chain((0..).map(|i| format!("x-slow-{i}: y\r\n")));
    while started.elapsed() < give_up {
        let line = lines.next().expect("endless");
        if stream.write_all(line.as_bytes()).is_err() {
            return Some(Closed {
                after: started.elapsed(),
                received,
            });
        }
        if let Some(closed) = read_until_closed(&mut stream, &mut received, started) {
            return Some(closed);
        }
    }
    None
}

/// One read with the stream's read timeout: `Some` when the server closed the connection.
fn read_until_closed(
    stream: &mut TcpStream,
    received: &mut Vec<u8>,
    started: Instant,
) -> Option<Closed> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                return Some(Closed {
                    after: started.elapsed(),
                    received: std::mem::take(received),
                });
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            // What a read timeout looks like on Linux (EAGAIN).
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return None;
            }
            Err(_) => {
                return Some(Closed {
                    after: started.elapsed(),
                    received: std::mem::take(received),
                });
            }
        }
    }
}

/// A slowloris client on its own thread: connects at once, then sends a header line every
/// `TRICKLE` without ever ending the head, until `stop` is set or the server closes.
fn trickle(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    std::thread::spawn(move || {
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n");
        let mut i = 0;
        while !stop.load(Ordering::Relaxed)
            && stream.write_all(format!("x-{i}: y\r\n").as_bytes()).is_ok()
        {
            i += 1;
            std::thread::sleep(TRICKLE);
        }
    })
}

/// Waits, without sending anything more, until the server closes `stream` or `give_up` passes.
fn wait_for_close(stream: &mut TcpStream, started: Instant, give_up: Duration) -> Option<Closed> {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut received = Vec::new();
    while started.elapsed() < give_up {
        if let Some(closed) = read_until_closed(stream, &mut received, started) {
            return Some(closed);
        }
    }
    None
}

/// Asserts the server gave up on a client within the header read timeout (plus margin), and
/// not before it, without an answer: there is no request to answer yet (hyper closes a head
/// that times out without a `408`, and so does the service for a client that sent nothing).
fn assert_closed_by_header_timeout(case: &str, closed: Option<Closed>) {
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "{case}: still open after {:?}",
            HEADER_READ_TIMEOUT + MARGIN
        )
    });
    eprintln!(
        "{case}: closed after {:?}, {} bytes before the close: {:?}",
        closed.after,
        closed.received.len(),
        closed.text()
    );
    assert!(
        closed.after >= HEADER_READ_TIMEOUT - Duration::from_millis(100),
        "{case}: closed too early, after {:?}",
        closed.after
    );
    assert!(
        closed.after <= HEADER_READ_TIMEOUT + MARGIN,
        "{case}: closed late, after {:?}",
        closed.after
    );
    assert!(
        closed.received.is_empty(),
        "{case}: unexpected answer {:?}",
        closed.text()
    );
}

async fn start_with_header_timeout(timeout: Duration, extra: &str) -> (Systemd, Service) {
    let systemd = Systemd::new();
    systemd.write_config(&format!(
        "[http]\nheader_read_timeout = \"{}ms\"\n{extra}",
        timeout.as_millis()
    ));
    let service = systemd.start_ready().await;
    (systemd, service)
}

fn assert_no_panic(service: &Service) {
    let stderr = service.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_at_the_header_read_timeout() {
    let (systemd, service) = start_with_header_timeout(HEADER_READ_TIMEOUT, "").await;
    let addr = systemd.addr;
    tokio::task::block_in_place(|| {
        // Header lines trickled forever.
        let closed = slowloris(addr, &["GET / HTTP/1.1\r\n", "host: test\r\n"], PATIENCE);
        assert_closed_by_header_timeout("header lines every 200 ms", closed);

        // A complete request, one byte every 100 ms: it would finish after 3.2 s.
        let request = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let started = Instant::now();
        let mut received = Vec::new();
        let mut closed = None;
        for byte in request {
            if stream.write_all(&[*byte]).is_err() {
                closed = Some(Closed {
                    after: started.elapsed(),
                    received: std::mem::take(&mut received),
                });
                break;
            }
            if let Some(c) = read_until_closed(&mut stream, &mut received, started) {
                closed = Some(c);
                break;
            }
        }
        assert_closed_by_header_timeout("one byte every 100 ms", closed);

        // The service itself is unaffected.
        assert_eq!(get(addr, "/").status, 200);
    });
    assert_no_panic(&service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed_at_the_header_read_timeout() {
    let (systemd, service) = start_with_header_timeout(HEADER_READ_TIMEOUT, "").await;
    tokio::task::block_in_place(|| {
        let mut stream = TcpStream::connect(systemd.addr).expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .expect("send");
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).expect("response");
        assert_eq!(&head, b"HTTP/1.1 200");
        // Idle from here: the clock starts once the response is out.
        let started = Instant::now();
        let closed = wait_for_close(&mut stream, started, HEADER_READ_TIMEOUT + MARGIN);
        let closed = closed.expect("idle keep-alive connection still open");
        eprintln!("idle keep-alive: closed after {:?}", closed.after);
        assert!(closed.after <= HEADER_READ_TIMEOUT + MARGIN);
    });
    assert_no_panic(&service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_at_the_header_read_timeout() {
    let (systemd, service) = start_with_header_timeout(HEADER_READ_TIMEOUT, "").await;
    tokio::task::block_in_place(|| {
        // Connects and sends nothing at all.
        let mut silent = TcpStream::connect(systemd.addr).expect("connect");
        let started = Instant::now();
        let closed = wait_for_close(&mut silent, started, HEADER_READ_TIMEOUT + MARGIN);
        assert_closed_by_header_timeout("silent", closed);

        // Sends the first bytes of the HTTP/2 preface, then nothing.
        let mut stalled = TcpStream::connect(systemd.addr).expect("connect");
        stalled.write_all(b"PRI * HTTP/2.0\r\n").expect("send");
        let started = Instant::now();
        let closed = wait_for_close(&mut stalled, started, HEADER_READ_TIMEOUT + MARGIN);
        assert_closed_by_header_timeout("stalled HTTP/2 preface", closed);
    });
    assert_no_panic(&service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_cannot_hold_connection_slots_past_the_header_read_timeout() {
    // Longer than elsewhere: the slots must still be held when the test checks for a 503,
    // however slowly the machine gets there.
    const HOLD: Duration = Duration::from_secs(3);
    let (systemd, service) = start_with_header_timeout(HOLD, "max_connections = 4\n").await;
    let addr = systemd.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // Four trickling clients take every slot.
    let trickling: Vec<_> = (0..4).map(|_| trickle(addr, stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::task::block_in_place(|| {
        let response = get(addr, "/");
        assert_eq!(response.status, 503, "every slot is taken");
        assert_eq!(response.header("retry-after"), Some("1"));
        assert_eq!(response.header("connection"), Some("close"));
        // The header read timeout frees the slots.
        let deadline = Instant::now() + HOLD + MARGIN;
        while get(addr, "/").status != 200 {
            assert!(
                Instant::now() < deadline,
                "slots still held after {:?}",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "slots held by slowloris were free again after {:?}",
            started.elapsed()
        );
        let metrics = get(addr, "/metrics").body;
        assert!(
            !metrics.contains("seamless_rejected_connections_total 0\n"),
            "{metrics}"
        );
    });
    stop.store(true, Ordering::Relaxed);
    for t in trickling {
        t.join().expect("trickling client");
    }
    assert_no_panic(&service);
}

/// Raises this process's soft `RLIMIT_NOFILE`, which the service inherits, to `needed` (up to
/// the hard limit, which an unprivileged process may not exceed). Fails if even that is too low.
fn raise_open_files_limit(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit RLIMIT_NOFILE");
    assert!(
        hard >= needed,
        "this test needs {needed} open files, but the hard RLIMIT_NOFILE is {hard}: raise it \
         (`ulimit -Hn`, or LimitNOFILE= / --ulimit nofile= where the tests run)"
    );
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard).expect("setrlimit RLIMIT_NOFILE");
    }
}

/// Resident memory of `pid` in KiB, from `/proc/PID/status`.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_leave_the_service_responsive_and_bounded() {
    const SILENT: usize = 500;
    const KEPT_ALIVE: usize = 500;
    const SPARE_FDS: u64 = 200;
    let needed = (SILENT + KEPT_ALIVE) as u64 + SPARE_FDS;
    raise_open_files_limit(needed);
    // Only what the test needs: idle connections must outlive the test's own pace. The
    // default http.max_connections (1024) leaves room for the requests below.
    let systemd = Systemd::new();
    systemd.write_config("[http]\nheader_read_timeout = \"60s\"\n");
    let mut service = systemd.start_ready().await;
    let addr = systemd.addr;

    tokio::task::block_in_place(|| {
        for _ in 0..20 {
            assert_eq!(get(addr, "/").status, 200);
        }
        let before = rss_kib(service.pid);
        let started = Instant::now();
        let silent: Vec<TcpStream> = (0..SILENT)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut kept_alive: Vec<KeepAlive> =
            (0..KEPT_ALIVE).map(|_| KeepAlive::connect(addr)).collect();
        for (i, client) in kept_alive.iter_mut().enumerate() {
            assert_eq!(
                client.request("/").map(|r| r.status),
                Some(200),
                "client {i}"
            );
        }
        eprintln!(
            "opened {} connections in {:?}",
            SILENT + KEPT_ALIVE,
            started.elapsed()
        );

        let metrics = get(addr, "/metrics").body;
        let open = metric(&metrics, "seamless_open_connections");
        assert!(
            open > (SILENT + KEPT_ALIVE) as u64,
            "all are open at once: {open}"
        );

        let started = Instant::now();
        for _ in 0..50 {
            let response = get(addr, "/");
            assert_eq!(response.status, 200);
        }
        let per_request = started.elapsed() / 50;
        eprintln!("new requests with {open} connections open: {per_request:?} each");
        assert!(
            per_request < Duration::from_millis(500),
            "{per_request:?} per request"
        );

        let after = rss_kib(service.pid);
        let growth_kib = after.saturating_sub(before);
        eprintln!(
            "VmRSS {before} KiB before, {after} KiB with {open} connections open (+{growth_kib} KiB)"
        );
        assert!(growth_kib < 64 * 1024, "RSS grew by {growth_kib} KiB");

        // And the drain still ends on time with all of them open.
        let signalled = Instant::now();
        service.signal(Signal::SIGTERM);
        let status = service.wait();
        eprintln!(
            "drained {open} idle connections in {:?}",
            signalled.elapsed()
        );
        assert_eq!(status.code(), Some(0), "{}", service.stderr());
        drop(silent);
        drop(kept_alive);
    });
    assert_no_panic(&service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_gets_431() {
    let systemd = Systemd::new();
    let service = systemd.start_ready().await;
    let addr = systemd.addr;
    tokio::task::block_in_place(|| {
        // Default http.max_header_bytes: 16384.
        let cases = [
            (
                "one huge header",
                format!("x-big: {}\r\n", "a".repeat(20_000)),
                431,
            ),
            (
                "many small headers",
                (0..200).map(|i| format!("x-{i}: y\r\n")).collect(),
                431,
            ),
            (
                "a large head under the limit",
                format!("x-big: {}\r\n", "a".repeat(12_000)),
                200,
            ),
        ];
        for (case, headers, expected) in cases {
            let request = format!("GET / HTTP/1.1\r\nhost: test\r\n{headers}\r\n");
            let response = raw_exchange(addr, request.as_bytes());
            eprintln!(
                "{case} ({} bytes): {:?}",
                request.len(),
                response.lines().next()
            );
            assert!(
                response.starts_with(&format!("HTTP/1.1 {expected} ")),
                "{case}: {response:?}"
            );
        }
    });
    assert_no_panic(&service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413() {
    let systemd = Systemd::new();
    systemd.write_config("[http]\nmax_body_bytes = 1024\n");
    let service = systemd.start_ready().await;
    let addr = systemd.addr;
    tokio::task::block_in_place(|| {
        // Declared too large and never sent: answered at once, without waiting for the body.
        let started = Instant::now();
        let response = raw_exchange(
            addr,
            b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 1073741824\r\n\r\n",
        );
        eprintln!(
            "1 GiB declared, nothing sent: {:?} after {:?}",
            response.lines().next(),
            started.elapsed()
        );
        assert!(response.starts_with("HTTP/1.1 413 "), "{response:?}");

        let mut request =
            b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 1025\r\nconnection: close\r\n\r\n"
                .to_vec();
        request.extend(std::iter::repeat_n(b'x', 1025));
        let response = raw_exchange(addr, &request);
        assert!(
            response.starts_with("HTTP/1.1 413 "),
            "one byte over: {response:?}"
        );

        // At the limit the body is accepted (and `/` does not take POST).
        let mut request =
            b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 1024\r\nconnection: close\r\n\r\n"
                .to_vec();
        request.extend(std::iter::repeat_n(b'x', 1024));
        let response = raw_exchange(addr, &request);
        assert!(
            response.starts_with("HTTP/1.1 405 "),
            "at the limit: {response:?}"
        );
    });
    assert_no_panic(&service);
}

/// Sends `request` on a fresh connection and returns everything the server sends back before
/// it closes the connection, or the first complete response if it keeps it open.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    // The server may answer and close before reading everything; that is its right.
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if support::parse(&raw).is_some() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_meets_its_deadline_with_abusive_clients_open() {
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
    let systemd = Systemd::new();
    // A header timeout far beyond the drain: only the drain can end the trickling clients.
    systemd.write_config(&format!(
        "[http]\nheader_read_timeout = \"60s\"\n[shutdown]\ndrain_timeout = \"{}s\"\nlinger = \"500ms\"\n[demo]\nslow_endpoint = true\n",
        DRAIN_TIMEOUT.as_secs()
    ));
    let mut service = systemd.start_ready().await;
    let addr = systemd.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let trickling: Vec<_> = (0..20).map(|_| trickle(addr, stop.clone())).collect();
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut idle: Vec<KeepAlive> = (0..20).map(|_| KeepAlive::connect(addr)).collect();
    tokio::task::block_in_place(|| {
        for client in &mut idle {
            assert_eq!(client.request("/").map(|r| r.status), Some(200));
        }
    });
    let mut in_flight = KeepAlive::connect(addr);
    in_flight.send("/slow?ms=800");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    service.signal(Signal::SIGTERM);
    let response =
        tokio::task::block_in_place(|| in_flight.receive()).expect("in-flight request answered");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    let status = tokio::task::block_in_place(|| service.wait());
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in trickling {
        t.join().expect("trickling client");
    }
    drop(silent);
    let stderr = service.stderr();
    eprintln!("exit {:?} after {took:?}", status.code());
    assert_eq!(status.code(), Some(0), "{stderr}");
    // The trickling clients would hold the drain until the 60 s header read timeout: only the
    // deadline ends it.
    assert_eq!(
        support::log_count(
            &stderr,
            "drain deadline reached; closing the remaining connections"
        ),
        1,
        "{stderr}"
    );
    assert_eq!(support::log_count(&stderr, "drained"), 0, "{stderr}");
    assert!(
        took < DRAIN_TIMEOUT + MARGIN + MARGIN,
        "took {took:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A request head still arriving may become a request, so the drain does not cut it at the
/// linger; `http.header_read_timeout` bounds it instead, well before `shutdown.drain_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_client_holds_the_drain_only_until_the_header_read_timeout() {
    let systemd = Systemd::new();
    systemd.write_config(
        "[http]\nheader_read_timeout = \"2s\"\n[shutdown]\ndrain_timeout = \"20s\"\nlinger = \"500ms\"\n",
    );
    let mut service = systemd.start_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let trickling = trickle(systemd.addr, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    service.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| service.wait());
    stop.store(true, Ordering::Relaxed);
    trickling.join().expect("trickling client");
    let stderr = service.stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Every connection ended on its own: the deadline never had to cut one.
    assert!(stderr.contains("drained"), "{stderr}");
    assert!(!stderr.contains("drain deadline reached"), "{stderr}");
}
