//! The zero-drop promise, counted strictly: restarts on a held socket under load, idle
//! keep-alive connections at the moment the drain starts, slow requests, and the deadline.

mod support;

use std::time::{Duration, Instant};

use loadgen::{Load, Mode, Report};
use nix::sys::signal::Signal;
use support::{KeepAlive, Systemd};
use tokio::sync::oneshot;

/// Restarts the service `cycles` times on the held socket (stop, then start — never
/// overlapping, as `systemctl restart` does) while `mode` clients hammer `GET /`.
async fn restarts_under_load(mode: Mode, cycles: usize) -> Report {
    let systemd = Systemd::new();
    let mut service = systemd.start_ready().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let load = Load {
        connections: 32,
        mode,
        timeout: Duration::from_secs(10),
        capture_header: Some("x-config-generation".to_owned()),
        ..Load::new(systemd.addr)
    };
    let load = tokio::spawn(loadgen::run(load, async {
        let _ = stop_rx.await;
    }));
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(300)).await;
        service.signal(Signal::SIGTERM);
        let status = tokio::task::block_in_place(|| service.wait());
        assert_eq!(status.code(), Some(0), "stderr:\n{}", service.stderr());
        service = systemd.start_ready().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(());
    load.await.expect("load generator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_lose_nothing_across_restarts() {
    let report = restarts_under_load(Mode::KeepAlive, 5).await;
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(
        report.ok() > 1000,
        "the load really ran: {}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_clients_lose_nothing_across_restarts() {
    let report = restarts_under_load(Mode::Close, 5).await;
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(
        report.ok() > 500,
        "the load really ran: {}",
        report.summary()
    );
}

/// The race hyper's own graceful shutdown loses: a request sent on an idle keep-alive
/// connection just as the drain starts. Every one must be answered, with `Connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_answered_when_the_drain_starts() {
    let systemd = Systemd::new();
    let mut service = systemd.start_ready().await;
    let mut clients: Vec<KeepAlive> = (0..64).map(|_| KeepAlive::connect(systemd.addr)).collect();
    for client in &mut clients {
        assert_eq!(client.request("/").map(|r| r.status), Some(200));
    }
    service.signal(Signal::SIGTERM);
    systemd.expect_notify("STOPPING=1").await;
    for (i, client) in clients.iter_mut().enumerate() {
        let response = client.request("/");
        let response = response.unwrap_or_else(|| panic!("client {i}: connection cut"));
        assert_eq!(response.status, 200, "client {i}");
        assert_eq!(response.header("connection"), Some("close"), "client {i}");
    }
    assert_eq!(
        tokio::task::block_in_place(|| service.wait()).code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_slow_requests_complete_during_the_drain() {
    let systemd = Systemd::new();
    systemd.write_config("[demo]\nslow_endpoint = true\n");
    let mut service = systemd.start_ready().await;
    let mut slow: Vec<KeepAlive> = (0..8).map(|_| KeepAlive::connect(systemd.addr)).collect();
    for client in &mut slow {
        client.send("/slow?ms=1500");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    service.signal(Signal::SIGTERM);
    systemd.expect_notify("STOPPING=1").await;
    for client in &mut slow {
        let response = tokio::task::block_in_place(|| client.receive()).expect("slow response");
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "slept 1500 ms\n")
        );
        assert_eq!(response.header("connection"), Some("close"));
    }
    assert_eq!(
        tokio::task::block_in_place(|| service.wait()).code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_is_honoured() {
    let systemd = Systemd::new();
    systemd.write_config(
        "[demo]\nslow_endpoint = true\n[shutdown]\ndrain_timeout = \"1s\"\nlinger = \"100ms\"\n",
    );
    let mut service = systemd.start_ready().await;
    let mut slow = KeepAlive::connect(systemd.addr);
    slow.send("/slow?ms=30000");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    service.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| service.wait());
    assert_eq!(
        status.code(),
        Some(0),
        "a drain that hit its deadline still exits 0"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "exited before the request could finish"
    );
    assert!(
        slow.receive().is_none(),
        "the request that outlived the deadline was cut"
    );
    assert!(
        service.stderr().contains("drain deadline reached"),
        "{}",
        service.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_and_second_sigint_exit_at_once() {
    for signals in [vec![Signal::SIGQUIT], vec![Signal::SIGINT, Signal::SIGINT]] {
        let systemd = Systemd::new();
        systemd.write_config("[demo]\nslow_endpoint = true\n[shutdown]\ndrain_timeout = \"60s\"\n");
        let mut service = systemd.start_ready().await;
        let mut slow = KeepAlive::connect(systemd.addr);
        slow.send("/slow?ms=50000");
        tokio::time::sleep(Duration::from_millis(200)).await;
        for signal in &signals {
            service.signal(*signal);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The drain would wait up to 50 s for the slow request; an immediate exit does not.
        let status = tokio::task::block_in_place(|| service.wait());
        assert_eq!(status.code(), Some(1), "{signals:?}: {}", service.stderr());
        assert!(slow.receive().is_none(), "{signals:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_gets_503() {
    let systemd = Systemd::new();
    systemd.write_config("[http]\nmax_connections = 2\n");
    let _service = systemd.start_ready().await;
    let mut held: Vec<KeepAlive> = (0..2).map(|_| KeepAlive::connect(systemd.addr)).collect();
    for client in &mut held {
        assert_eq!(client.request("/").map(|r| r.status), Some(200));
    }
    let response = support::get(systemd.addr, "/");
    assert_eq!(response.status, 503);
    drop(held);
    // Once the held connections are gone there is room again.
    let deadline = Instant::now() + support::PATIENCE;
    while support::get(systemd.addr, "/").status != 200 {
        assert!(Instant::now() < deadline, "capacity never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// HTTP/2 clients learn about the drain from GOAWAY, which names the last stream processed:
/// a stream in flight completes, and the connection then closes cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_in_flight_complete_and_the_connection_gets_goaway() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;

    let systemd = Systemd::new();
    systemd.write_config("[demo]\nslow_endpoint = true\n");
    let mut service = systemd.start_ready().await;
    let stream = tokio::net::TcpStream::connect(systemd.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let request = |path: &str| {
        hyper::Request::get(format!("http://test{path}"))
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let warm = sender
        .send_request(request("/"))
        .await
        .expect("first request");
    assert_eq!(warm.version(), hyper::Version::HTTP_2);
    let slow = tokio::spawn(sender.send_request(request("/slow?ms=800")));
    tokio::time::sleep(Duration::from_millis(200)).await;

    service.signal(Signal::SIGTERM);
    let response = slow
        .await
        .expect("join")
        .expect("the stream in flight completes");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"slept 800 ms\n");
    let closed = tokio::time::timeout(support::PATIENCE, connection).await;
    assert!(
        matches!(closed, Ok(Ok(Ok(())))),
        "GOAWAY closes the connection cleanly: {closed:?}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| service.wait()).code(),
        Some(0)
    );
}
