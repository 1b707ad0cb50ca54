//! The drain drops nothing whatever the application does: an application that insists on
//! `Connection: keep-alive` in every response, through a layer of its own, is restarted under
//! strict load — in this process, through the same `run` the binary uses — and no request
//! fails.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use loadgen::{Load, Mode, Report};
use seamless_core::listeners::{Listener, Named};
use seamless_core::reload::Reloader;
use seamless_core::routes::Shared;
use seamless_core::server::Upgrades;
use seamless_core::signals::Request;
use seamless_core::{App, BoxError, Identity, Loader, Metrics, NoConfig, Stopped};
use tokio::sync::{mpsc, oneshot};

/// Says `keep-alive` on every response, whatever the server is doing.
struct Careless;

impl App for Careless {
    const IDENTITY: Identity = Identity {
        name: "careless",
        version: "0.0.1",
        description: "",
    };
    type Config = NoConfig;
    type State = ();

    async fn state(_: &NoConfig, _: &mut Metrics) -> Result<(), BoxError> {
        Ok(())
    }

    fn router(_: &Arc<()>, _: &NoConfig) -> Router {
        Router::new()
            .route("/", get(|| async { "careless\n" }))
            .layer(axum::middleware::map_response(
                |mut response: Response| async move {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
                    response
                },
            ))
    }
}

/// One service process's worth of `run`, on a copy of the socket the test holds (as systemd
/// holds it across restarts). Drains when `drain` fires.
async fn serve_once(
    held: &TcpListener,
    config: &std::path::Path,
) -> (mpsc::Sender<Request>, tokio::task::JoinHandle<Stopped>) {
    let copy = held.try_clone().expect("dup the held socket");
    copy.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(copy).expect("register");
    let loader = Loader::new(&Careless::IDENTITY, Some(config.to_owned()));
    let loaded = loader.load::<NoConfig>().expect("valid config");
    let mut metrics = Metrics::new("careless");
    Careless::state(&loaded.app, &mut metrics)
        .await
        .expect("state");
    let shared = Arc::new(Shared::new(&Careless::IDENTITY, metrics));
    let reloader = Reloader::<Careless>::new(loader, loaded, Arc::new(()), shared);
    let (requests_tx, requests_rx) = mpsc::channel(8);
    let listeners = vec![Named {
        name: "http".to_owned(),
        listener: Listener::Tcp(listener),
    }];
    let task = tokio::spawn(seamless_core::run(
        listeners,
        reloader,
        requests_rx,
        Upgrades::default(),
    ));
    (requests_tx, task)
}

async fn restarts_under_load(mode: Mode, cycles: usize) -> Report {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = held.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("careless.toml");
    std::fs::write(&config, "[shutdown]\nlinger = \"200ms\"\n").expect("write config");

    let (mut requests, mut task) = serve_once(&held, &config).await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let load = Load {
        connections: 16,
        mode,
        timeout: Duration::from_secs(10),
        ..Load::new(addr)
    };
    let load = tokio::spawn(loadgen::run(load, async {
        let _ = stop_rx.await;
    }));
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(300)).await;
        requests
            .send(Request::Drain)
            .await
            .expect("service listening");
        assert_eq!(task.await.expect("run"), Stopped::Drained);
        (requests, task) = serve_once(&held, &config).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(());
    let report = load.await.expect("load generator");
    requests
        .send(Request::Drain)
        .await
        .expect("service listening");
    assert_eq!(task.await.expect("run"), Stopped::Drained);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_lose_nothing_to_a_careless_app() {
    let report = restarts_under_load(Mode::KeepAlive, 5).await;
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(
        report.ok() > 1000,
        "the load really ran: {}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_clients_lose_nothing_to_a_careless_app() {
    let report = restarts_under_load(Mode::Close, 5).await;
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(
        report.ok() > 500,
        "the load really ran: {}",
        report.summary()
    );
}
