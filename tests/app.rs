//! What the example application adds, through the real binary under a harness that plays
//! systemd: JSON in and out, long-lived state kept across reloads, a restart-only key reported
//! by `NAME reload`, and the application's own metrics beside the service's.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};

use nix::sys::signal::Signal;
use support::{PATIENCE, Response, Systemd, get, parse};

/// Metric names start with the package name, `-` as `_`.
fn metric(name: &str) -> String {
    format!("{}_{name}", env!("CARGO_PKG_NAME").replace('-', "_"))
}

/// One `POST /echo` with a JSON body on a fresh connection.
fn echo(addr: SocketAddr, text: &str) -> Response {
    let body = format!("{{\"text\":\"{text}\"}}");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        stream,
        "POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse(&raw).expect("complete response")
}

#[tokio::test]
async fn echo_state_and_metrics_survive_reloads() {
    let systemd = Systemd::new();
    systemd.write_config("message = \"one\\n\"\n");
    let service = systemd.start_ready().await;
    let first = echo(systemd.addr, "a");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.body, r#"{"text":"a","echoes":1}"#);

    // A live key changes; the state built at start is kept.
    systemd.write_config("message = \"two\\n\"\n");
    let output = systemd.reload_command(service.pid);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(get(systemd.addr, "/").body, "two\n");
    assert_eq!(echo(systemd.addr, "b").body, r#"{"text":"b","echoes":2}"#);
    assert_eq!(get(systemd.addr, "/echo").body, r#"{"recent":["a","b"]}"#);

    let metrics = get(systemd.addr, "/metrics").body;
    for line in [
        format!("{} 2", metric("echo_requests_total")),
        format!("{} 2", metric("echo_duration_seconds_count")),
        format!("{} 2", metric("config_generation")),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let refused = get(systemd.addr, "/echo?not=json");
    assert_eq!(refused.status, 200, "GET /echo ignores a query");
    service.signal(Signal::SIGTERM);
}

#[tokio::test]
async fn restart_only_key_is_reported_and_not_applied() {
    let systemd = Systemd::new();
    systemd.write_config("[demo]\nhistory = 2\n");
    let service = systemd.start_ready().await;

    systemd.write_config("[demo]\nhistory = 3\n");
    let output = systemd.reload_command(service.pid);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stderr.contains("config generation 2 is live; takes effect on restart: demo.history"),
        "{stderr}"
    );
    for text in ["a", "b", "c"] {
        assert_eq!(echo(systemd.addr, text).status, 200);
    }
    assert_eq!(
        get(systemd.addr, "/echo").body,
        r#"{"recent":["b","c"]}"#,
        "the buffer keeps the size it was created with"
    );

    systemd.write_config("[demo]\nhistory = 99999\n");
    let output = systemd.reload_command(service.pid);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    assert!(
        stderr.contains("key `demo.history`: must be at most"),
        "{stderr}"
    );
    service.signal(Signal::SIGTERM);
}

#[tokio::test]
async fn malformed_json_is_a_client_error() {
    let systemd = Systemd::new();
    let service = systemd.start_ready().await;
    let mut stream = TcpStream::connect(systemd.addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{x}")
        .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let response = parse(&raw).expect("complete response");
    assert_eq!(response.status, 400, "{response:?}");
    service.signal(Signal::SIGTERM);
}
