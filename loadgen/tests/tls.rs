//! HTTPS load against an in-process TLS server: the same counting as over
//! plain TCP, request for request, plus handshake failures as their own
//! outcome.

mod common;

use std::time::Duration;

use common::{Behavior, Stats, TestPki, serve, serve_tls};
use loadgen::{Load, Mode, Outcome, ThinkTime, Tls};

fn load(addr: std::net::SocketAddr, tls: Tls, connections: usize, millis: u64) -> Load {
    Load {
        connections,
        duration: Some(Duration::from_millis(millis)),
        capture_header: Some("X-Pid".into()),
        tls: Some(tls),
        ..Load::new(addr)
    }
}

fn trusting(pki: &TestPki) -> Tls {
    Tls::from_pem(pki.ca_pem.as_bytes(), "localhost").expect("client TLS config")
}

async fn run(load: Load) -> loadgen::Report {
    loadgen::run(load, std::future::pending()).await
}

/// Waits until the server's accept loop has caught up with `n` connections
/// (the client may finish a request before the server task runs).
async fn accepted_reaches(stats: &Stats, n: u64) -> u64 {
    for _ in 0..200 {
        if Stats::get(&stats.accepted) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Stats::get(&stats.accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_over_tls_counts_every_request_once() {
    let pki = TestPki::new();
    let server = serve_tls(Behavior::Normal, pki.server.clone()).await;
    let report = run(load(server.addr, trusting(&pki), 4, 300)).await;
    let s = &server.stats;

    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.ok() > 50, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(report.total(), Stats::get(&s.requests), "{report}");
    // One connection, one handshake per worker for the whole run.
    assert_eq!(report.connections_opened(), 4, "{report}");
    assert_eq!(report.workers_reconnected(), 0, "{report}");
    assert_eq!(Stats::get(&s.accepted), 4);
    assert_eq!(Stats::get(&s.handshakes), 4);
    // Only http/1.1 was offered, though the server prefers h2.
    assert_eq!(Stats::get(&s.alpn_http11), 4);
    assert_eq!(report.captured().get("4242"), Some(&report.ok()));
    assert!(report.tls());
    let j = report.to_json();
    assert_eq!(j["tls"], true);
    assert_eq!(j["outcomes"]["tls_handshake_failed"], 0);
    assert!(
        report
            .summary()
            .contains("tls        on, server name localhost"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_mode_over_tls_uses_one_connection_per_request() {
    let pki = TestPki::new();
    let server = serve_tls(Behavior::Normal, pki.server.clone()).await;
    let report = run(Load {
        mode: Mode::Close,
        ..load(server.addr, trusting(&pki), 4, 300)
    })
    .await;
    let s = &server.stats;

    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.ok() > 10, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(Stats::get(&s.close_requested), report.total());
    assert_eq!(report.connections_opened(), report.total(), "{report}");
    assert_eq!(Stats::get(&s.accepted), report.total());
    assert_eq!(Stats::get(&s.handshakes), report.total());
    assert_eq!(Stats::get(&s.alpn_http11), report.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_fails_every_request_as_tls_handshake_failed() {
    let pki = TestPki::new();
    let stranger = TestPki::new();
    let server = serve_tls(Behavior::Normal, pki.server.clone()).await;
    let report = run(Load {
        failure_pause: Duration::from_millis(5),
        ..load(server.addr, trusting(&stranger), 2, 200)
    })
    .await;
    let s = &server.stats;

    assert!(report.total() >= 2, "{report}");
    assert_eq!(report.ok(), 0, "{report}");
    assert_eq!(
        report.count(Outcome::TlsHandshakeFailed),
        report.total(),
        "{report}"
    );
    assert_eq!(report.outcomes()["tls_handshake_failed"], report.total());
    assert_eq!(
        report.to_json()["outcomes"]["tls_handshake_failed"],
        report.total()
    );
    assert!(
        report.summary().contains("tls_handshake_failed="),
        "{report}"
    );
    // Nothing retried: one TCP connection per counted request, and no
    // request ever reached the server.
    assert_eq!(accepted_reaches(s, report.total()).await, report.total());
    assert_eq!(Stats::get(&s.requests), 0);
    assert_eq!(Stats::get(&s.handshakes), 0);
    // A connection counts as opened only once its handshake completed.
    assert_eq!(report.connections_opened(), 0, "{report}");
    // The failure pause applies, as after any failure without a response.
    assert!(report.total() <= 2 * (200 / 5) + 2, "{report}");
    let f = report.failures().next().expect("a failure record");
    assert_eq!(f.outcome, Outcome::TlsHandshakeFailed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_name_fails_the_handshake() {
    let pki = TestPki::new();
    let server = serve_tls(Behavior::Normal, pki.server.clone()).await;
    let tls = Tls::from_der(&pki.ca_der, "not-localhost.test").expect("tls");
    let report = run(Load {
        failure_pause: Duration::from_millis(5),
        ..load(server.addr, tls, 1, 100)
    })
    .await;

    assert!(report.total() >= 1, "{report}");
    assert_eq!(
        report.count(Outcome::TlsHandshakeFailed),
        report.total(),
        "{report}"
    );
    assert_eq!(Stats::get(&server.stats.requests), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_is_timeout() {
    // A plain server never answers the ClientHello: the handshake is part of
    // the request, so the request deadline ends it.
    let pki = TestPki::new();
    let server = serve(Behavior::Stall).await;
    let report = run(Load {
        timeout: Duration::from_millis(100),
        ..load(server.addr, trusting(&pki), 2, 350)
    })
    .await;

    assert!(report.total() >= 2, "{report}");
    assert_eq!(report.count(Outcome::Timeout), report.total(), "{report}");
    assert_eq!(report.connections_opened(), 0, "{report}");
    assert!(report.total() <= 8, "{report}");
    assert!(report.latency_all().p50_us >= 100_000, "{report}");
}

/// The TLS counterpart of load.rs's
/// `idle_close_during_think_time_fails_the_next_request`, with the same
/// expectations: a TLS close (with or without `close_notify`) of an idle
/// keep-alive connection costs exactly the next request, counted and not
/// retried, as a plain TCP close does.
async fn idle_close_over_tls(behavior: Behavior) {
    let pki = TestPki::new();
    let server = serve_tls(behavior, pki.server.clone()).await;
    let report = run(Load {
        think: Some(ThinkTime::fixed(Duration::from_millis(100))),
        ..load(server.addr, trusting(&pki), 1, 550)
    })
    .await;
    let s = &server.stats;

    assert!(report.failed() >= 1, "{report}");
    assert!(report.ok() >= 1, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(report.ok(), Stats::get(&s.requests), "{report}");
    let closed = report.count(Outcome::ClosedBeforeResponse) + report.count(Outcome::Reset);
    assert_eq!(closed, report.failed(), "{report}");
    let idle_closed = Stats::get(&s.idle_closed);
    assert!(
        report.failed() == idle_closed || report.failed() + 1 == idle_closed,
        "{idle_closed} idle closes for {report}"
    );
    let opened = report.connections_opened();
    assert_eq!(opened, Stats::get(&s.accepted), "{report}");
    assert_eq!(opened, Stats::get(&s.handshakes), "{report}");
    assert!(
        opened == report.failed() + 1 || opened == report.failed(),
        "{report}"
    );
    assert!(opened >= 2, "{report}");
    assert_eq!(report.max_connections_per_worker(), opened, "{report}");
    assert_eq!(report.workers_reconnected(), 1, "{report}");
    assert_eq!(report.count(Outcome::TlsHandshakeFailed), 0, "{report}");
    assert_eq!(report.count(Outcome::IoError), 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_notify_during_think_time_fails_the_next_request() {
    idle_close_over_tls(Behavior::CloseIdle(Duration::from_millis(20))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_close_without_close_notify_fails_the_next_request() {
    idle_close_over_tls(Behavior::DropIdle(Duration::from_millis(20))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_inside_body_is_closed_mid_body_with_or_without_close_notify() {
    let pki = TestPki::new();
    for behavior in [Behavior::MidBody, Behavior::MidBodyDrop] {
        let server = serve_tls(behavior, pki.server.clone()).await;
        let report = run(load(server.addr, trusting(&pki), 2, 100)).await;
        assert!(report.total() > 0, "{behavior:?}: {report}");
        assert_eq!(
            report.count(Outcome::ClosedMidBody),
            report.total(),
            "{behavior:?}: {report}"
        );
        let f = report.failures().next().expect("failure");
        assert_eq!(f.captured, Some("4242"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_close_without_answer_over_tls_is_closed_before_response() {
    let pki = TestPki::new();
    let server = serve_tls(Behavior::DropEvery(5), pki.server.clone()).await;
    let report = run(load(server.addr, trusting(&pki), 4, 300)).await;
    let s = &server.stats;

    let dropped = Stats::get(&s.dropped);
    assert!(dropped > 5, "{report}");
    assert_eq!(
        report.count(Outcome::ClosedBeforeResponse),
        dropped,
        "{report}"
    );
    assert_eq!(report.failed(), dropped, "{report}");
    assert_eq!(report.ok(), Stats::get(&s.answered), "{report}");
    assert_eq!(report.total(), Stats::get(&s.requests), "{report}");
    assert_eq!(report.connections_opened(), Stats::get(&s.handshakes));
}
