//! `shutdown.announce`: on a stop, `/readyz` says 503 for a while before the drain, so a load
//! balancer stops sending traffic while the instance still takes everything it is sent.

mod support;

use nix::sys::signal::Signal;
use support::{KeepAlive, Systemd, get};

/// The value of the metric `name` in `/metrics`.
fn metric(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// How many of `messages` carry `line` as a whole line.
fn count(messages: &[String], line: &str) -> usize {
    messages
        .iter()
        .filter(|message| message.lines().any(|l| l == line))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_is_not_ready_but_serves_as_usual_then_drains() {
    let systemd = Systemd::new();
    // Long enough for the checks below to finish inside it; the drain follows on its own.
    systemd.write_config("[shutdown]\nannounce = \"4s\"\n");
    let mut service = systemd.start_ready().await;
    let mut client = KeepAlive::connect(systemd.addr);
    assert_eq!(client.request("/").map(|r| r.status), Some(200));

    service.signal(Signal::SIGTERM);
    let mut seen = systemd.expect_notify("STOPPING=1").await;
    let stopping = seen.last().expect("the STOPPING=1 message");
    assert!(
        stopping.contains("STATUS=announcing shutdown: not ready, draining in 4s"),
        "{stopping}"
    );
    // systemd's stop timeout covers the announce and the drain (25 s by default) after it.
    let extend: u64 = systemd
        .expect_notify_prefix("EXTEND_TIMEOUT_USEC=")
        .await
        .parse()
        .expect("a number of microseconds");
    assert!(extend >= 29_000_000, "EXTEND_TIMEOUT_USEC={extend}");

    // The same keep-alive connection: not ready, yet served, and kept open.
    let ready = client.request("/readyz").expect("/readyz answered");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body, "stopping\n");
    let hello = client.request("/").expect("/ answered");
    assert_eq!(hello.status, 200);
    assert_eq!(hello.header("connection"), None, "{hello:?}");
    let metrics = client.request("/metrics").expect("/metrics answered").body;
    assert_eq!(metric(&metrics, "seamless_announcing"), 1, "{metrics}");
    assert_eq!(metric(&metrics, "seamless_draining"), 0, "{metrics}");
    // New connections are still accepted and served.
    assert_eq!(get(systemd.addr, "/").status, 200);

    // Nothing more is sent: the announce ends by itself and the drain runs as before.
    let status = tokio::task::block_in_place(|| service.wait());
    assert_eq!(status.code(), Some(0), "stderr:\n{}", service.stderr());
    seen.extend(systemd.pending_notifications());
    assert_eq!(count(&seen, "STOPPING=1"), 1, "{seen:#?}");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=draining")),
        "{seen:#?}"
    );
    let stderr = service.stderr();
    assert_eq!(support::log_count(&stderr, "drained"), 1, "{stderr}");
}

/// A second stop request during the announce starts the drain at once; an exit request
/// exits. The announce is an hour, so only the request can end it before the test's patience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_request_skips_the_wait() {
    for (second, code) in [
        (Signal::SIGTERM, 0),
        (Signal::SIGINT, 0),
        (Signal::SIGQUIT, 1),
    ] {
        let systemd = Systemd::new();
        systemd.write_config("[shutdown]\nannounce = \"1h\"\n");
        let mut service = systemd.start_ready().await;
        service.signal(Signal::SIGTERM);
        systemd.expect_notify("STOPPING=1").await;
        assert_eq!(get(systemd.addr, "/readyz").status, 503);

        service.signal(second);
        let status = tokio::task::block_in_place(|| service.wait());
        let stderr = service.stderr();
        assert_eq!(status.code(), Some(code), "{second}; stderr:\n{stderr}");
        assert_eq!(count(&systemd.pending_notifications(), "STOPPING=1"), 0);
        if code == 0 {
            assert_eq!(
                support::log_count(&stderr, "stop requested again; draining now"),
                1,
                "{second}: {stderr}"
            );
            assert_eq!(support::log_count(&stderr, "drained"), 1, "{stderr}");
        }
    }
}

/// `shutdown.announce` changes on reload; a reload during the announce is applied too, and the
/// announce keeps the length it started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_is_live_on_reload_and_reloads_work_during_it() {
    let systemd = Systemd::new();
    let mut service = systemd.start_ready().await;
    systemd.write_config("[shutdown]\nannounce = \"1h\"\n");
    service.signal(Signal::SIGHUP);
    systemd.expect_notify("READY=1").await;

    service.signal(Signal::SIGTERM);
    let seen = systemd.expect_notify("STOPPING=1").await;
    assert!(
        seen.last()
            .expect("the STOPPING=1 message")
            .contains("STATUS=announcing shutdown: not ready, draining in 1h"),
        "{seen:#?}"
    );
    assert_eq!(get(systemd.addr, "/readyz").status, 503);

    systemd.write_config("message = \"reloaded while stopping\\n\"\n");
    let output = systemd.reload_command(service.pid);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(get(systemd.addr, "/").body, "reloaded while stopping\n");
    let ready = get(systemd.addr, "/readyz");
    assert_eq!(ready.status, 503, "the announce goes on: {ready:?}");

    service.signal(Signal::SIGTERM);
    let status = tokio::task::block_in_place(|| service.wait());
    assert_eq!(status.code(), Some(0), "stderr:\n{}", service.stderr());
    let rest = systemd.pending_notifications();
    assert_eq!(count(&rest, "STOPPING=1"), 0, "{rest:#?}");
}
