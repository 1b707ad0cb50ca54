//! End-to-end tests of the library against in-process servers that answer,
//! drop, close, refuse and stall — checking the generator's counts against
//! the server's own, request for request.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Behavior, Stats, refused_addr, serve};
use loadgen::{Load, Mode, Outcome, Target, ThinkTime};

fn load(target: impl Into<Target>, connections: usize, millis: u64) -> Load {
    Load {
        connections,
        duration: Some(Duration::from_millis(millis)),
        capture_header: Some("X-Pid".into()),
        ..Load::new(target)
    }
}

async fn run(load: Load) -> loadgen::Report {
    loadgen::run(load, std::future::pending()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_keepalive_counts_every_request_once() {
    let server = serve(Behavior::Normal).await;
    let report = run(load(server.addr, 4, 300)).await;
    let s = &server.stats;

    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.ok() > 100, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(report.total(), Stats::get(&s.requests), "{report}");
    // Keep-alive: one connection per worker for the whole run.
    assert_eq!(report.connections_opened(), 4, "{report}");
    assert_eq!(Stats::get(&s.accepted), 4);
    assert_eq!(Stats::get(&s.close_requested), 0);
    assert_eq!(report.statuses().get(&200), Some(&report.ok()));
    assert_eq!(report.captured().get("4242"), Some(&report.ok()));
    assert_eq!(report.records().count() as u64, report.total());
    let lat = report.latency();
    assert_eq!(lat.count, report.ok());
    assert!(
        lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us,
        "{lat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_close_without_answer_is_closed_before_response() {
    // Every 5th request on a connection is read and then the connection is
    // closed: the request must count as failed, and never be retried.
    let server = serve(Behavior::DropEvery(5)).await;
    let report = run(load(server.addr, 4, 300)).await;
    let s = &server.stats;

    let dropped = Stats::get(&s.dropped);
    assert!(dropped > 10, "{report}");
    assert_eq!(
        report.count(Outcome::ClosedBeforeResponse),
        dropped,
        "{report}"
    );
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(report.failed(), dropped, "{report}");
    // No retries: the server saw exactly as many requests as were counted.
    assert_eq!(report.total(), Stats::get(&s.requests), "{report}");
    assert_eq!(report.connections_opened(), Stats::get(&s.accepted));
    assert!(
        report.summary().contains("closed_before_response="),
        "{report}"
    );
    let first = report.failures().next().expect("a failure record");
    assert_eq!(first.outcome, Outcome::ClosedBeforeResponse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_response_is_ok_and_reconnects() {
    let server = serve(Behavior::CloseEvery(3)).await;
    let report = run(load(server.addr, 4, 300)).await;
    let s = &server.stats;

    assert_eq!(report.failed(), 0, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(report.total(), Stats::get(&s.requests), "{report}");
    // One new connection per three requests, none wasted.
    let accepted = Stats::get(&s.accepted);
    assert_eq!(report.connections_opened(), accepted);
    assert!(
        accepted >= report.total() / 3,
        "{accepted} connections for {report}"
    );
    assert!(
        accepted <= report.total() / 3 + 4,
        "{accepted} connections for {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_mode_uses_one_connection_per_request() {
    let server = serve(Behavior::Normal).await;
    let report = run(Load {
        mode: Mode::Close,
        ..load(server.addr, 4, 300)
    })
    .await;
    let s = &server.stats;

    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.ok() > 20, "{report}");
    assert_eq!(Stats::get(&s.close_requested), report.total());
    assert_eq!(Stats::get(&s.accepted), report.total());
    assert_eq!(report.connections_opened(), report.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_connect_refused() {
    let report = run(Load {
        failure_pause: Duration::from_millis(5),
        ..load(refused_addr(), 2, 200)
    })
    .await;

    assert!(report.total() >= 2, "{report}");
    assert_eq!(report.ok(), 0, "{report}");
    assert_eq!(
        report.count(Outcome::ConnectRefused),
        report.total(),
        "{report}"
    );
    assert_eq!(report.outcomes()["connect_refused"], report.total());
    // The pause bounds the rate: 2 workers x 200 ms / 5 ms.
    assert!(report.total() <= 2 * (200 / 5) + 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_server_is_timeout() {
    let server = serve(Behavior::Stall).await;
    let report = run(Load {
        timeout: Duration::from_millis(100),
        ..load(server.addr, 2, 350)
    })
    .await;

    assert!(report.total() >= 2, "{report}");
    assert_eq!(report.count(Outcome::Timeout), report.total(), "{report}");
    // Each timed-out request gave up its connection.
    assert_eq!(report.connections_opened(), report.total(), "{report}");
    // 2 workers, 100 ms each, stop after 350 ms: at most 4 rounds.
    assert!(report.total() <= 8, "{report}");
    let all = report.latency_all();
    assert!(all.p50_us >= 100_000, "{all:?}");
    assert!(all.max_us < 1_000_000, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_inside_body_is_closed_mid_body() {
    let server = serve(Behavior::MidBody).await;
    let report = run(load(server.addr, 2, 100)).await;
    assert!(report.total() > 0, "{report}");
    assert_eq!(
        report.count(Outcome::ClosedMidBody),
        report.total(),
        "{report}"
    );
    // The head arrived, so the captured header is known for the failure.
    let f = report.failures().next().expect("failure");
    assert_eq!(f.captured, Some("4242"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_responses_are_read_completely() {
    let server = serve(Behavior::Chunked).await;
    let report = run(load(server.addr, 2, 200)).await;
    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.ok() > 10, "{report}");
    assert_eq!(report.ok(), Stats::get(&server.stats.answered));
    assert_eq!(report.connections_opened(), 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_is_failed_with_its_status() {
    let server = serve(Behavior::Unavailable).await;
    let report = run(load(server.addr, 2, 100)).await;
    assert!(report.total() > 0);
    assert_eq!(report.ok(), 0);
    assert_eq!(
        report.count(Outcome::Status(503)),
        report.total(),
        "{report}"
    );
    assert_eq!(report.outcomes()["status_503"], report.total());
    assert_eq!(report.statuses()[&503], report.total());
    // A complete response keeps the connection: no failure pause, no reconnect.
    assert_eq!(report.connections_opened(), 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_lets_requests_in_flight_finish() {
    let server = serve(Behavior::Delay(Duration::from_millis(100))).await;
    let running = loadgen::start(Load::new(server.addr));
    assert!(running.wait_for_ok(32, Duration::from_secs(5)).await);
    // Stop while every worker is waiting on a response.
    tokio::time::sleep(Duration::from_millis(30)).await;
    running.mark("stop");
    let t = std::time::Instant::now();
    let report = running.stop().await;

    assert_eq!(report.failed(), 0, "{report}");
    assert_eq!(report.ok(), Stats::get(&server.stats.answered), "{report}");
    assert_eq!(
        report.total(),
        Stats::get(&server.stats.requests),
        "{report}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    // The window holds the requests that were in flight at the stop; their
    // latency reflects the server's delay (not clamped by the histogram).
    let e = &report.events()[0];
    assert!(e.ok >= 32, "{e:?}");
    assert!(e.latency.p50_us >= 100_000, "{e:?}");
    assert!(report.latency().p50_us >= 100_000, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_their_window() {
    let server = serve(Behavior::DropEvery(50)).await;
    let running = loadgen::start(Load {
        window: loadgen::EventWindow {
            before: Duration::from_millis(50),
            after: Duration::from_millis(100),
        },
        ..load(server.addr, 2, 10_000)
    });
    assert!(running.wait_for_ok(10, Duration::from_secs(5)).await);
    running.mark("midpoint");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let report = running.stop().await;

    let events = report.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.label, "midpoint");
    assert!(e.total > 0 && e.total < report.total(), "{e:?}");
    assert!(
        (e.window_end_s - e.window_start_s - 0.15).abs() < 1e-6,
        "{e:?}"
    );
    // Records keep their start in whole microseconds, so the window is
    // counted in whole microseconds too: from the microsecond its start falls
    // in to the microsecond its end falls in, both included. (A tolerance of
    // one microsecond on the seconds instead counts one record too many when
    // a request starts in the microsecond just before the window.)
    let micros = |s: f64| ((s * 1e9).round() as i128).div_euclid(1000);
    let (first_us, last_us) = (micros(e.window_start_s), micros(e.window_end_s));
    let in_window = report
        .records()
        .filter(|r| (first_us..=last_us).contains(&(r.start.as_micros() as i128)))
        .count() as u64;
    assert_eq!(e.total, in_window);
    assert_eq!(e.total, e.ok + e.failed);
    assert_eq!(e.captured.get("4242").copied(), Some(e.ok));
    if e.failed > 0 {
        let first = e.first_failure_s.expect("first failure");
        assert!(micros(first) >= first_us, "{e:?}");
        assert!(e.recovery.is_some(), "{e:?}");
    }
    let json = report.to_json();
    assert_eq!(json["events"][0]["label"], "midpoint");
    assert_eq!(json["events"][0]["total"], e.total);
    assert!(report.summary().contains("event \"midpoint\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_measures_the_outage() {
    // A server that is away for a while: refused, then answering.
    let addr = refused_addr();
    let running = loadgen::start(Load {
        failure_pause: Duration::from_millis(2),
        ..load(addr, 2, 10_000)
    });
    let outage_start = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(10)).await;
    running.mark("outage");
    tokio::time::sleep(Duration::from_millis(190)).await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind port");
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(common::handle(stream, Behavior::Normal, s.clone()));
        }
    });
    assert!(running.wait_for_ok(10, Duration::from_secs(5)).await);
    let report = running.stop().await;
    let outage = outage_start.elapsed();

    let e = &report.events()[0];
    assert!(e.failed > 0, "{report}");
    let recovery = e.recovery.expect("recovered");
    assert!(recovery >= Duration::from_millis(180), "{recovery:?}");
    assert!(recovery <= outage, "{recovery:?} > {outage:?}");
    assert_eq!(report.ok(), Stats::get(&stats.answered));
    assert_eq!(
        report.failed(),
        report.count(Outcome::ConnectRefused),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_target() {
    let path = std::env::temp_dir().join(format!("loadgen-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind unix");
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(common::handle(stream, Behavior::CloseEvery(4), s.clone()));
        }
    });
    let report = run(load(Target::Unix(path.clone()), 2, 200)).await;
    let _ = std::fs::remove_file(&path);

    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.ok() > 10, "{report}");
    assert_eq!(report.ok(), Stats::get(&stats.answered));
    assert!(
        report.to_json()["target"]
            .as_str()
            .expect("target")
            .starts_with("unix:")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_bounded_but_counts_stay_exact() {
    let server = serve(Behavior::Normal).await;
    let report = run(Load {
        max_records: 1000,
        ..load(server.addr, 2, 300)
    })
    .await;
    assert!(report.total() > 1500, "{report}");
    assert!(report.records_truncated());
    // Blocks reserved late by one worker may go unused; most of the budget
    // must still be put to use, and never more than all of it.
    let kept = report.records().count();
    assert!((900..=1000).contains(&kept), "{kept} records kept");
    assert_eq!(report.ok(), Stats::get(&server.stats.answered));
    assert_eq!(report.captured()["4242"], report.ok());
    assert_eq!(report.to_json()["records_truncated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_has_the_documented_shape() {
    let server = serve(Behavior::Normal).await;
    let mut report = run(load(server.addr, 2, 100)).await;
    report.add_unix_event(&loadgen::Event::now("late"));
    let j = report.to_json();
    for key in [
        "mode",
        "connections",
        "duration_s",
        "total",
        "ok",
        "failed",
        "outcomes",
        "statuses",
        "rps",
        "latency_us",
        "events",
        "captured",
    ] {
        assert!(!j[key].is_null(), "missing {key} in {j}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(j["latency_us"][key].is_u64(), "latency_us.{key} in {j}");
    }
    assert_eq!(j["mode"], "keepalive");
    assert_eq!(j["connections"], 2);
    assert_eq!(j["failed"], 0);
    assert_eq!(j["total"], j["ok"]);
    assert_eq!(j["outcomes"]["reset"], 0);
    assert_eq!(j["statuses"]["200"], j["ok"]);
    assert_eq!(j["captured"]["4242"], j["ok"]);
    assert_eq!(j["events"][0]["label"], "late");
    assert!(j["events"][0]["t_s"].as_f64().expect("t_s") > 0.09);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_time_spaces_requests() {
    let server = serve(Behavior::Normal).await;
    let think = ThinkTime {
        min: Duration::from_millis(50),
        max: Duration::from_millis(60),
    };
    let report = run(Load {
        think: Some(think),
        ..load(server.addr, 1, 400)
    })
    .await;
    let s = &server.stats;

    assert_eq!(report.failed(), 0, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    // A closed loop sends thousands in 400 ms; pausing at least 50 ms after
    // each request allows at most 400 / 50 = 8 (the first one is sent at
    // once, the pause after the last one is cut short by the stop).
    assert!(report.total() >= 2, "{report}");
    assert!(report.total() <= 400 / 50, "{report}");
    // Every pause is at least 50 ms. Arrivals are timed at the server, so
    // allow for one request taking a few ms longer to arrive than the next.
    let arrivals = s.arrivals();
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(45), "gap {gap:?} in {report}");
    }
    // Think time reuses the connection.
    assert_eq!(report.connections_opened(), 1, "{report}");
    assert_eq!(report.max_connections_per_worker(), 1, "{report}");
    assert_eq!(report.workers_reconnected(), 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_close_during_think_time_fails_the_next_request() {
    // The server closes a connection that is idle for 20 ms after a
    // response; the worker thinks for 100 ms and then sends on it anyway.
    let server = serve(Behavior::CloseIdle(Duration::from_millis(20))).await;
    let report = run(Load {
        think: Some(ThinkTime::fixed(Duration::from_millis(100))),
        ..load(server.addr, 1, 550)
    })
    .await;
    let s = &server.stats;

    // Expected: ok, fail, ok (new connection), fail, ok, ... The failures
    // are counted, not retried: the server answered every request it read,
    // and read none on a closed connection.
    assert!(report.failed() >= 1, "{report}");
    assert!(report.ok() >= 1, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(report.ok(), Stats::get(&s.requests), "{report}");
    let closed = report.count(Outcome::ClosedBeforeResponse) + report.count(Outcome::Reset);
    assert_eq!(closed, report.failed(), "{report}");
    // Each idle close costs exactly one request, except a close during the
    // last pause, which the stop cuts short before anything is sent.
    let idle_closed = Stats::get(&s.idle_closed);
    assert!(
        report.failed() == idle_closed || report.failed() + 1 == idle_closed,
        "{idle_closed} idle closes for {report}"
    );
    // Every failure forced a reconnect, unless it was the last request.
    let opened = report.connections_opened();
    assert_eq!(opened, Stats::get(&s.accepted), "{report}");
    assert!(
        opened == report.failed() + 1 || opened == report.failed(),
        "{report}"
    );
    assert!(opened >= 2, "{report}");
    assert_eq!(report.max_connections_per_worker(), opened, "{report}");
    assert_eq!(report.workers_reconnected(), 1, "{report}");
    let j = report.to_json();
    assert_eq!(j["connections_opened"], opened);
    assert_eq!(j["max_connections_per_worker"], opened);
    assert_eq!(j["workers_reconnected"], 1);
    assert_eq!(j["think"]["min_s"], 0.1);
    assert!(
        report.summary().contains("1 of 1 workers reconnected"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_worker_are_reported() {
    // Some workers reconnect, one never does: every 3rd response closes,
    // and the 4 workers run long enough for each to see several.
    let server = serve(Behavior::CloseEvery(3)).await;
    let report = run(load(server.addr, 4, 200)).await;

    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.max_connections_per_worker() > 1, "{report}");
    assert!(
        report.max_connections_per_worker() <= report.connections_opened(),
        "{report}"
    );
    assert_eq!(report.workers_reconnected(), 4, "{report}");
    assert_eq!(report.to_json()["think"], serde_json::Value::Null);
}
