//! `naive`: the graceful-shutdown pattern most axum services ship with, kept deliberately
//! textbook so the benchmark compares seamless against what people actually deploy.
//!
//! - the listening socket comes from systemd through `listenfd` (fd 3), else it binds
//!   `$NAIVE_LISTEN` (default `127.0.0.1:18081`);
//! - `READY=1` is sent once the listener exists;
//! - `axum::serve(..).with_graceful_shutdown(..)` on SIGTERM or Ctrl-C: hyper stops accepting,
//!   lets requests in flight finish and closes idle keep-alive connections at once.
//!
//! `GET /` answers with the same body as seamless's default configuration, so the two are
//! comparable for throughput as well.

use std::net::SocketAddr;

use axum::{Router, routing::get};
use tokio::signal::unix::{SignalKind, signal};

/// seamless's default `message`.
const BODY: &str = "Hello from seamless!\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = match listenfd::ListenFd::from_env().take_tcp_listener(0)? {
        Some(std_listener) => {
            std_listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(std_listener)?
        }
        None => {
            let addr: SocketAddr = std::env::var("NAIVE_LISTEN")
                .unwrap_or_else(|_| "127.0.0.1:18081".to_owned())
                .parse()
                .map_err(std::io::Error::other)?;
            tokio::net::TcpListener::bind(addr).await?
        }
    };
    let app = Router::new().route("/", get(|| async { BODY }));
    // Not fatal outside systemd: there is simply nobody to tell.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            eprintln!("naive: cannot install the SIGTERM handler: {error}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
