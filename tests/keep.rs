//! Restarts that close no connection: with an fd store, the drain hands keep-alive connections
//! to the harness (as to systemd) and the next process serves them, the same TCP connections.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use loadgen::{Load, Mode, ThinkTime};
use nix::sys::signal::Signal;
use support::{KeepAlive, Service, Systemd};
use tokio::sync::oneshot;

/// `FDNAME=` of kept connections.
const CONNECTION: &str = "connection";

/// The PID in a `/version` answer (`seamless 0.1.0 (pid 1234)`).
fn answered_by(client: &mut KeepAlive) -> i32 {
    let response = client.request("/version").expect("an answer");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), None, "nobody asked to close");
    pid_in(&response.body)
}

fn pid_in(version: &str) -> i32 {
    version
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.trim_end().strip_suffix(')'))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {version:?}"))
}

/// Stops `service` as `systemctl restart` does and waits until it has exited, reading its
/// notifications meanwhile (the kept connections arrive with them).
async fn stop(systemd: &Systemd, service: &mut Service) {
    service.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| systemd.wait_reading(service));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", service.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_idle_busy_and_silent_connections() {
    let systemd = Systemd::with_fd_store(64);
    systemd.write_config("[demo]\nslow_endpoint = true\n");
    let mut old = systemd.start_ready().await;
    let mut idle: Vec<KeepAlive> = (0..4).map(|_| KeepAlive::connect(systemd.addr)).collect();
    for client in &mut idle {
        assert_eq!(answered_by(client), old.pid);
    }
    // Busy when the stop comes: its response goes out, then the connection is kept.
    let mut busy = KeepAlive::connect(systemd.addr);
    assert_eq!(answered_by(&mut busy), old.pid);
    busy.send("/slow?ms=400");
    // Connected, nothing sent yet: kept before its first request.
    let silent = TcpStream::connect(systemd.addr).expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;

    old.signal(Signal::SIGTERM);
    systemd.expect_notify("BARRIER=1").await;
    let slow = busy.receive().expect("the request in progress is answered");
    assert_eq!(slow.status, 200);
    assert_eq!(
        slow.header("connection"),
        None,
        "a kept connection is not told to close"
    );
    let status = tokio::task::block_in_place(|| old.wait());
    assert_eq!(status.code(), Some(0), "stderr:\n{}", old.stderr());
    assert_eq!(systemd.stored(CONNECTION), 6, "stderr:\n{}", old.stderr());
    assert_eq!(
        support::log_count(
            &old.stderr(),
            "kept connections in systemd's fd store for the next process"
        ),
        1
    );

    // Sent while no process runs: waits in the kept socket and is answered first.
    idle[0].send("/version");
    let new = systemd.start_ready().await;
    assert_eq!(
        systemd.stored(CONNECTION),
        0,
        "the new process took them out of the store"
    );
    let early = idle[0]
        .receive()
        .expect("the request sent in between is answered");
    assert_eq!(pid_in(&early.body), new.pid);
    for client in idle.iter_mut().chain([&mut busy]) {
        assert_eq!(
            answered_by(client),
            new.pid,
            "the same connection, served by the new process"
        );
    }
    let mut silent = KeepAlive::from_stream(silent);
    assert_eq!(answered_by(&mut silent), new.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_keeps_what_fits_and_closes_the_rest_gently() {
    let systemd = Systemd::with_fd_store(2);
    systemd.write_config("[shutdown]\nlinger = \"200ms\"\n");
    let mut old = systemd.start_ready().await;
    let mut clients: Vec<KeepAlive> = (0..4).map(|_| KeepAlive::connect(systemd.addr)).collect();
    for client in &mut clients {
        assert_eq!(answered_by(client), old.pid);
    }
    stop(&systemd, &mut old).await;
    assert_eq!(systemd.stored(CONNECTION), 2);
    let new = systemd.start_ready().await;
    let answered: Vec<Option<i32>> = clients
        .iter_mut()
        .map(|client| client.try_request("/version").map(|r| pid_in(&r.body)))
        .collect();
    let kept = answered.iter().filter(|pid| **pid == Some(new.pid)).count();
    let closed = answered.iter().filter(|pid| pid.is_none()).count();
    assert_eq!((kept, closed), (2, 2), "{answered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_kept_when_switched_off_or_on_reload() {
    let systemd = Systemd::with_fd_store(64);
    let mut service = systemd.start_ready().await;
    let mut client = KeepAlive::connect(systemd.addr);
    assert_eq!(answered_by(&mut client), service.pid);

    // A reload swaps the configuration; connections stay where they are.
    systemd.write_config("[shutdown]\nkeep_connections = false\nlinger = \"200ms\"\n");
    service.signal(Signal::SIGHUP);
    systemd.expect_notify("READY=1").await;
    assert_eq!(systemd.stored(CONNECTION), 0);
    assert_eq!(answered_by(&mut client), service.pid);

    stop(&systemd, &mut service).await;
    assert_eq!(systemd.stored(CONNECTION), 0, "keep_connections = false");
    assert!(client.try_request("/version").is_none(), "closed as before");
}

/// The measurement behind the feature, counted strictly: idle clients that reuse their
/// connection without checking it, across restarts. Each keeps its one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_clients_keep_their_connections_across_restarts() {
    const CLIENTS: usize = 32;
    let systemd = Systemd::with_fd_store(1024);
    let mut service = systemd.start_ready().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let load = Load {
        connections: CLIENTS,
        mode: Mode::KeepAlive,
        think: Some(ThinkTime {
            min: Duration::from_millis(20),
            max: Duration::from_millis(400),
        }),
        timeout: Duration::from_secs(10),
        ..Load::new(systemd.addr)
    };
    let load = tokio::spawn(loadgen::run(load, async {
        let _ = stop_rx.await;
    }));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop(&systemd, &mut service).await;
        service = systemd.start_ready().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(());
    let report = load.await.expect("load generator");
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(
        report.ok() > 100,
        "the load really ran: {}",
        report.summary()
    );
    assert_eq!(
        report.connections_opened(),
        CLIENTS as u64,
        "every client kept its one connection: {}",
        report.summary()
    );
}
