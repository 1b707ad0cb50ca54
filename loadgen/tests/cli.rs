//! Tests of the `loadgen` binary as shell scripts use it: JSON report,
//! events file, exit codes and signal handling.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Behavior, Stats, TestPki, refused_addr, serve, serve_tls};
use serde_json::Value;

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("json report written");
    serde_json::from_str(&text).expect("valid json")
}

/// Runs a command to completion off the async runtime, so the in-process
/// test server keeps serving meanwhile.
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run loadgen"))
        .await
        .expect("join")
}

fn unix_nanos_now() -> i128 {
    loadgen::events::unix_nanos(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_json_with_events() {
    let server = serve(Behavior::Normal).await;
    let json = scratch("events.json");
    let events = scratch("events.txt");
    let at = unix_nanos_now() + 150_000_000;
    std::fs::write(&events, format!("# comment\n{at} restart web\n")).expect("events");

    let mut cmd = loadgen();
    cmd.args([
        "--addr",
        &server.addr.to_string(),
        "-c",
        "3",
        "--duration",
        "400ms",
    ])
    .args([
        "--capture-header",
        "x-pid",
        "--fail-on-error",
        "--min-ok",
        "10",
    ])
    .arg("--json")
    .arg(&json)
    .arg("--events")
    .arg(&events);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("0 failed"), "{stderr}");

    let j = read_json(&json);
    assert_eq!(j["mode"], "keepalive");
    assert_eq!(j["tls"], false);
    assert_eq!(j["connections"], 3);
    assert_eq!(j["failed"], 0);
    assert_eq!(j["ok"], Stats::get(&server.stats.answered));
    assert_eq!(j["captured"]["4242"], j["ok"]);
    let ev = &j["events"][0];
    assert_eq!(ev["label"], "restart web");
    let t = ev["t_s"].as_f64().expect("t_s");
    assert!((0.05..0.4).contains(&t), "event at {t}");
    assert!(ev["total"].as_u64().expect("total") > 0);
    assert_eq!(ev["failed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_error_sets_exit_code() {
    let addr = refused_addr().to_string();
    let json = scratch("refused.json");

    let mut cmd = loadgen();
    cmd.args(["--addr", &addr, "-c", "1", "--duration", "50ms", "-q"])
        .arg("--json")
        .arg(&json);
    let out = output(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "completed runs exit 0 by default"
    );
    let j = read_json(&json);
    assert!(j["failed"].as_u64().expect("failed") > 0);
    assert_eq!(j["outcomes"]["connect_refused"], j["total"]);

    let mut cmd = loadgen();
    cmd.args([
        "--addr",
        &addr,
        "-c",
        "1",
        "--duration",
        "50ms",
        "-q",
        "--fail-on-error",
    ]);
    assert_eq!(output(cmd).await.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_gracefully_without_failures() {
    // Slow responses: the signal arrives while every worker has a request in
    // flight, and those must complete rather than fail.
    let server = serve(Behavior::Delay(Duration::from_millis(50))).await;
    let json = scratch("sigint.json");
    let child = loadgen()
        .args(["--addr", &server.addr.to_string(), "-c", "4", "-q"])
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let j = read_json(&json);
    assert_eq!(j["failed"], 0, "{j}");
    assert!(j["ok"].as_u64().expect("ok") >= 8, "{j}");
    assert_eq!(j["ok"], Stats::get(&server.stats.answered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let mut cmd = loadgen();
    cmd.args([
        "--addr",
        "127.0.0.1:1",
        "--path",
        "no-slash",
        "--duration",
        "1s",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid request path"));

    let mut cmd = loadgen();
    cmd.args(["--duration", "1s"]);
    assert_eq!(
        output(cmd).await.status.code(),
        Some(2),
        "target is required"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_sets_exit_code() {
    // Keep-alive with think time: every worker keeps its one connection.
    let server = serve(Behavior::Normal).await;
    let json = scratch("max-connections.json");
    let mut cmd = loadgen();
    cmd.args(["--addr", &server.addr.to_string(), "-c", "3"])
        .args(["--duration", "300ms", "--think", "20ms..40ms"])
        .args(["--max-connections", "3", "--min-ok", "6"])
        .arg("--json")
        .arg(&json);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("at most 1 per worker"), "{stderr}");
    assert!(stderr.contains("think      20ms..40ms"), "{stderr}");
    let j = read_json(&json);
    assert_eq!(j["connections_opened"], 3);
    assert_eq!(j["max_connections_per_worker"], 1);
    assert_eq!(j["workers_reconnected"], 0);
    assert_eq!(j["think"]["min_s"], 0.02);
    assert_eq!(j["think"]["max_s"], 0.04);

    // Every 2nd response closes its connection: workers must reconnect.
    let server = serve(Behavior::CloseEvery(2)).await;
    let json = scratch("max-connections-exceeded.json");
    let mut cmd = loadgen();
    cmd.args(["--addr", &server.addr.to_string(), "-c", "3"])
        .args(["--duration", "200ms", "--max-connections", "3"])
        .arg("--json")
        .arg(&json);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let j = read_json(&json);
    let opened = j["connections_opened"]
        .as_u64()
        .expect("connections_opened");
    assert!(opened > 3, "{j}");
    assert_eq!(j["workers_reconnected"], 3);
    assert!(
        stderr.contains(&format!("{opened} connections opened, wanted at most 3")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_think_time_is_a_usage_error() {
    for bad in ["2s..1s", "soon", "1s..", "..1s"] {
        let mut cmd = loadgen();
        cmd.args(["--addr", "127.0.0.1:1", "--duration", "1s", "--think", bad]);
        let out = output(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--think {bad}: {stderr}");
        assert!(stderr.contains("think time"), "--think {bad}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_run_with_cacert() {
    let pki = TestPki::new();
    let server = serve_tls(Behavior::Normal, pki.server.clone()).await;
    let ca = scratch("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write CA");
    let json = scratch("tls.json");

    // An IP address: the server name defaults to localhost.
    let mut cmd = loadgen();
    cmd.args(["--addr", &server.addr.to_string(), "-c", "2"])
        .args(["--duration", "300ms", "--tls", "--cacert"])
        .arg(&ca)
        .args([
            "--fail-on-error",
            "--min-ok",
            "10",
            "--max-connections",
            "2",
        ])
        .arg("--json")
        .arg(&json);
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("tls        on, server name localhost"),
        "{stderr}"
    );
    let j = read_json(&json);
    assert_eq!(j["tls"], true);
    assert_eq!(j["failed"], 0);
    assert_eq!(j["ok"], Stats::get(&server.stats.answered));
    assert_eq!(j["connections_opened"], 2);

    // A name the certificate does not carry: every request fails, counted.
    let json = scratch("tls-wrong-name.json");
    let mut cmd = loadgen();
    cmd.args(["--addr", &server.addr.to_string(), "-c", "1"])
        .args([
            "--duration",
            "100ms",
            "--tls",
            "--server-name",
            "other.test",
        ])
        .arg("--cacert")
        .arg(&ca)
        .args(["-q", "--fail-on-error"])
        .arg("--json")
        .arg(&json);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let j = read_json(&json);
    assert_eq!(j["ok"], 0);
    assert!(j["total"].as_u64().expect("total") > 0, "{j}");
    assert_eq!(j["outcomes"]["tls_handshake_failed"], j["total"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_usage_errors_exit_2() {
    let missing = scratch("no-such-ca.pem");
    let not_pem = scratch("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--tls".into()], "--cacert".into()),
        (
            vec!["--cacert".into(), not_pem.display().to_string()],
            "--tls".into(),
        ),
        (
            vec![
                "--tls".into(),
                "--cacert".into(),
                missing.display().to_string(),
            ],
            missing.display().to_string(),
        ),
        (
            vec![
                "--tls".into(),
                "--cacert".into(),
                not_pem.display().to_string(),
            ],
            format!("{}: no PEM CERTIFICATE", not_pem.display()),
        ),
    ];
    for (args, expected) in cases {
        let mut cmd = loadgen();
        cmd.args(["--addr", "127.0.0.1:1", "--duration", "1s"])
            .args(&args);
        let out = output(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
    // No TLS over unix sockets.
    let mut cmd = loadgen();
    cmd.args([
        "--unix",
        "/tmp/x.sock",
        "--duration",
        "1s",
        "--tls",
        "--cacert",
    ])
    .arg(&not_pem);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
}
