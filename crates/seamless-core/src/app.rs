//! What an application supplies: the [`App`] trait.
//!
//! The library owns everything between systemd and a request — sockets, notifications,
//! signals, configuration layers and reloads, the drain, upgrades, logging, the built-in
//! routes (`/healthz`, `/readyz`, `/metrics`, `/version`) and what is done to every response.
//! An application adds its name, its configuration keys, its long-lived state and its routes;
//! nothing it writes can turn the drain into one that drops requests.

use std::future::Future;
use std::sync::Arc;

use axum::Router;

use crate::config::AppConfig;
use crate::identity::Identity;
use crate::metrics::Metrics;

/// Any error an application's start-up can fail with; shown to the operator with its causes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An HTTP application served by this library.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use axum::{Router, routing::get};
/// use seamless_core::{App, BoxError, Identity, Metrics, NoConfig};
///
/// struct Hello;
///
/// impl App for Hello {
///     const IDENTITY: Identity = seamless_core::identity!();
///     type Config = NoConfig;
///     type State = AtomicU64;
///
///     async fn state(_: &NoConfig, _: &mut Metrics) -> Result<AtomicU64, BoxError> {
///         Ok(AtomicU64::new(0))
///     }
///
///     fn router(hits: &Arc<AtomicU64>, _: &NoConfig) -> Router {
///         let hits = hits.clone();
///         Router::new().route("/", get(move || async move {
///             format!("hello #{}\n", hits.fetch_add(1, Ordering::Relaxed) + 1)
///         }))
///     }
/// }
///
/// // `fn main() -> std::process::ExitCode { seamless_core::main::<Hello>() }`
/// # let _ = Hello::router;
/// ```
pub trait App: Send + Sync + 'static {
    /// Who the service is: `seamless_core::identity!()`, so every name (binary, files,
    /// variables, metrics) follows the application's package name.
    const IDENTITY: Identity;

    /// The application's configuration keys (use [`NoConfig`](crate::NoConfig) for none).
    type Config: AppConfig;

    /// Long-lived state: created once per process by [`App::state`] and kept across reloads
    /// (a connection pool, a client, caches, the application's metric handles). A successor
    /// process after an upgrade builds its own.
    type State: Send + Sync + 'static;

    /// Creates the long-lived state from the configuration at start, before the service
    /// reports ready. Register the application's metrics in `metrics.registry()` here. An
    /// error stops the start with the message.
    fn state(
        config: &Self::Config,
        metrics: &mut Metrics,
    ) -> impl Future<Output = Result<Self::State, BoxError>> + Send;

    /// The application's routes for one configuration generation, built at start and after
    /// every applied reload. Keep it cheap: it runs on the reload path, not per request.
    ///
    /// The library wraps it with the request timeout and body limit (`http.*`) and serves the
    /// built-in routes before it; those paths never reach this router.
    ///
    /// Per request, axum clones the handler that answers, with its state. On the hot path,
    /// prefer handlers whose state is not shared between connections (an `Arc` clone per
    /// request moves its count's cache line between cores), as the demo's `GET /` does.
    fn router(state: &Arc<Self::State>, config: &Self::Config) -> Router;
}
