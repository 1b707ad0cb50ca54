//! The service's lifecycle under a harness that plays systemd: readiness, reloads (by signal and
//! by `seamless reload`), stop, and start-up failures.

mod support;

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{BIN, PATIENCE, Systemd, get};

#[tokio::test]
async fn ready_only_once_serving_then_serves() {
    let systemd = Systemd::new();
    let _service = systemd.start();
    let seen = systemd.expect_notify("READY=1").await;
    let ready = seen.last().expect("READY message");
    assert!(ready.contains("STATUS=serving on http"), "{ready}");
    assert!(ready.contains("config generation 1"), "{ready}");
    // READY=1 promises the socket is served: the first request must succeed at once.
    let response = get(systemd.addr, "/");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "Hello from seamless!\n");
    assert_eq!(get(systemd.addr, "/healthz").status, 200);
    assert_eq!(get(systemd.addr, "/readyz").status, 200);
    let metrics = get(systemd.addr, "/metrics").body;
    assert!(
        metrics.contains("seamless_config_generation 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sighup_reloads_with_reloading_then_ready() {
    let systemd = Systemd::new();
    systemd.write_config("message = \"first\\n\"\n");
    let service = systemd.start_ready().await;
    assert_eq!(get(systemd.addr, "/").body, "first\n");

    systemd.write_config("message = \"second\\n\"\n");
    service.signal(Signal::SIGHUP);
    let seen = systemd.expect_notify("READY=1").await;
    let reloading = seen
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:?}"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(
        seen.last().expect("ready").contains("config generation 2"),
        "{seen:?}"
    );
    let response = get(systemd.addr, "/");
    assert_eq!(response.body, "second\n");
    assert_eq!(response.header("x-config-generation"), Some("2"));
}

#[tokio::test]
async fn bad_config_on_sighup_keeps_serving_the_old_one() {
    let systemd = Systemd::new();
    systemd.write_config("message = \"good\\n\"\n");
    let service = systemd.start_ready().await;

    systemd.write_config("message = \"bad\\n\"\n[http]\nmax_conections = 5\n");
    service.signal(Signal::SIGHUP);
    let seen = systemd.expect_notify("READY=1").await;
    let status = seen.last().expect("ready");
    assert!(status.contains("reload failed"), "{status}");
    assert!(
        status.contains("max_conections"),
        "STATUS names the key: {status}"
    );
    assert!(
        status.contains("seamless.toml"),
        "STATUS names the file: {status}"
    );
    assert_eq!(get(systemd.addr, "/").body, "good\n");
    let metrics = get(systemd.addr, "/metrics").body;
    assert!(
        metrics.contains("seamless_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn reload_command_returns_once_the_new_config_is_live() {
    let systemd = Systemd::new();
    let service = systemd.start_ready().await;
    for i in 0..20 {
        systemd.write_config(&format!("message = \"generation {i}\\n\"\n"));
        let output = systemd.reload_command(service.pid);
        assert!(
            output.status.success(),
            "reload {i}: {output:?}\n{}",
            service.stderr()
        );
        // The very next request after `seamless reload` returns sees the new message.
        assert_eq!(get(systemd.addr, "/").body, format!("generation {i}\n"));
    }

    systemd.write_config("message = \n");
    let output = systemd.reload_command(service.pid);
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reload failed") && stderr.contains("seamless.toml"),
        "{stderr}"
    );
    assert_eq!(
        get(systemd.addr, "/").body,
        "generation 19\n",
        "old config still serves"
    );
}

/// A configuration with `message`, and debug logging from the signal task only: its
/// "signal received" line shows that a `SIGHUP` reached the service as a request of its own.
fn storm_config(message: &str) -> String {
    format!("message = \"{message}\\n\"\n[log]\nlevel = \"info,seamless_core::signals=debug\"\n")
}

/// Bytes written into the FIFO behind `fifo` that nobody has read yet.
fn unread_bytes(fifo: &std::fs::File) -> i32 {
    let mut unread: libc::c_int = 0;
    #[allow(unsafe_code)]
    // SAFETY: FIONREAD writes one `int` through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut unread) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    unread
}

/// Polls `done` until it holds, at most `PATIENCE`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test]
async fn sighups_during_a_reload_coalesce_into_one_more() {
    const SIGNALS: usize = 10;
    let systemd = Systemd::new();
    systemd.write_config(&storm_config("start"));
    let mut service = systemd.start_ready().await;
    let stderr = service.stderr.clone();
    let received = || support::log_count(&support::read_file(&stderr), "signal received");

    // A drop-in that is a FIFO holds a reload in `read` until the test closes its end. The
    // test opens it read-write, so no open blocks, and puts a comment in it: once that has
    // been read, the reload has read the main file too (drop-ins come after it) and waits.
    let drop_ins = systemd.dir.path().join("seamless.d");
    std::fs::create_dir(&drop_ins).expect("mkdir");
    let gate_path = drop_ins.join("50-gate.toml");
    nix::unistd::mkfifo(&gate_path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let mut gate = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&gate_path)
        .expect("open the FIFO");
    gate.write_all(b"# the reload waits here\n")
        .expect("fill the FIFO");

    systemd.write_config(&storm_config("first reload"));
    service.signal(Signal::SIGHUP);
    wait_until("the reload to reach the FIFO", || unread_bytes(&gate) == 0).await;
    assert_eq!(received(), 1, "{}", service.stderr());
    // A new configuration and a SIGHUP for each, while that reload waits. Each SIGHUP is taken
    // by the service before the next is sent, so the kernel merges none of them: a service
    // that reloaded once per SIGHUP would reload SIGNALS times.
    for n in 2..=SIGNALS {
        systemd.write_config(&storm_config(&format!("storm {n}")));
        service.signal(Signal::SIGHUP);
        wait_until(&format!("SIGHUP {n} to arrive"), || received() == n).await;
    }
    std::fs::remove_file(&gate_path).expect("remove the FIFO");
    drop(gate);

    // The last configuration written is the one that serves.
    let last = format!("storm {SIGNALS}\n");
    wait_until("the last configuration to serve", || {
        get(systemd.addr, "/").body == last
    })
    .await;
    let metrics = get(systemd.addr, "/metrics").body;
    let reloads = metric(&metrics, "seamless_reloads_total{result=\"ok\"}");
    let generation = metric(&metrics, "seamless_config_generation");
    assert!(
        reloads >= 2,
        "the first reload read \"first reload\": {metrics}"
    );
    assert_eq!(generation, 1 + reloads, "{metrics}");
    assert_eq!(
        metric(&metrics, "seamless_reloads_total{result=\"failed\"}"),
        0
    );
    let response = get(systemd.addr, "/");
    assert_eq!(response.body, last);
    assert_eq!(
        response.header("x-config-generation"),
        Some(generation.to_string().as_str())
    );

    // Requests are served in order: once SIGTERM, sent after every SIGHUP, has stopped the
    // service, every reload those SIGHUPs caused has run, and the log counts them all.
    service.signal(Signal::SIGTERM);
    assert_eq!(service.wait().code(), Some(0), "{}", service.stderr());
    let stderr = service.stderr();
    let reloads = support::log_count(&stderr, "configuration reloaded");
    assert!(
        reloads < SIGNALS,
        "{SIGNALS} SIGHUPs, each received on its own, caused {reloads} reloads:\n{stderr}"
    );
}

#[tokio::test]
async fn sigterm_reports_stopping_and_exits_zero() {
    let systemd = Systemd::new();
    let mut service = systemd.start_ready().await;
    service.signal(Signal::SIGTERM);
    let seen = systemd.expect_notify("STOPPING=1").await;
    assert!(
        seen.last().expect("stopping").contains("STATUS=draining"),
        "{seen:?}"
    );
    let status = service.wait();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", service.stderr());
    assert!(service.stderr().contains("drained"), "{}", service.stderr());
}

#[tokio::test]
async fn watchdog_is_pinged_when_asked() {
    let systemd = Systemd::new();
    let _service = systemd.start_with(
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_FDNAMES", "http"),
            ("WATCHDOG_USEC", "200000"),
        ],
        true,
    );
    systemd.expect_notify("READY=1").await;
    systemd.expect_notify("WATCHDOG=1").await;
    systemd.expect_notify("WATCHDOG=1").await;
}

#[tokio::test]
async fn foreign_listen_pid_means_bind_ourselves() {
    let systemd = Systemd::new();
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let addr = free.local_addr().expect("addr");
    drop(free);
    systemd.write_config(&format!("[http]\nlisten = \"{addr}\"\n"));
    // LISTEN_PID=1 is not us: the fds are someone else's and must be left alone.
    let _service = systemd.start_with(&[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")], false);
    systemd.expect_notify("READY=1").await;
    assert_eq!(get(addr, "/").status, 200);
}

#[tokio::test]
async fn bad_activation_environment_is_one_clear_line() {
    let systemd = Systemd::new();
    for (env, needle) in [
        (vec![("LISTEN_FDS", "abc")], "LISTEN_FDS"),
        (
            vec![("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http:extra")],
            "LISTEN_FDNAMES",
        ),
        (
            vec![("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "http:other")],
            "fd 4",
        ),
        (
            vec![("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "admin")],
            "named `http`",
        ),
    ] {
        let mut service = systemd.start_with(&env, true);
        let status = service.wait();
        let stderr = service.stderr();
        assert_eq!(status.code(), Some(1), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{env:?}: one line: {stderr}");
        assert!(stderr.contains(needle), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn invalid_config_at_start_exits_78() {
    let systemd = Systemd::new();
    systemd.write_config("[shutdown]\ndrain_timeout = \"soon\"\n");
    let mut service = systemd.start();
    let status = service.wait();
    let stderr = service.stderr();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("shutdown.drain_timeout") && stderr.contains("seamless.toml"),
        "{stderr}"
    );
}

#[test]
fn check_config_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("seamless.toml");
    std::fs::write(&file, "message = \"ok\"\n").expect("write");
    let run = |path: &std::path::Path| {
        Command::new(BIN)
            .arg("check-config")
            .arg("--config")
            .arg(path)
            .output()
            .expect("run check-config")
    };
    assert!(run(&file).status.success());

    std::fs::write(&file, "[log]\nlevle = \"debug\"\n").expect("write");
    let output = run(&file);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("levle") && stderr.contains("seamless.toml"),
        "{stderr}"
    );

    let output = run(&dir.path().join("missing.toml"));
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}

#[test]
fn version_is_printed() {
    let output = Command::new(BIN).arg("--version").output().expect("run");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}
