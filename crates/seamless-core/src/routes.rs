//! What the service answers itself, and what it does to every response.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process serves |
//! | `GET /readyz` | `200 ready`, `503 stopping` while a stop is announced, `503 draining` once the drain has started |
//! | `GET /metrics` | OpenMetrics text: the service's metrics and the application's |
//! | `GET /version` | `NAME VERSION (pid PID)`: which binary and process answered |
//!
//! These are answered before the application's router sees the request, so an application
//! cannot shadow or break them; `finish` runs on every response, whoever produced it.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::identity::Identity;
use crate::metrics::{self, Metrics};

/// What every connection and request of this process shares.
#[derive(Debug)]
pub struct Shared {
    /// The service's and the application's metrics.
    pub(crate) metrics: Metrics,
    /// Whether the drain has started: `/readyz` answers 503 and responses close connections.
    draining: AtomicBool,
    /// Whether a stop is being announced (`shutdown.announce`): `/readyz` answers 503, while
    /// everything else is served as usual — keep-alive included, unlike `draining`.
    announcing: AtomicBool,
    /// The body of `/version`, made once: name, version and PID do not change.
    version: Bytes,
}

impl Shared {
    /// The state shared by `identity`'s connections, with `metrics` (the application's
    /// families already registered).
    pub fn new(identity: &Identity, metrics: Metrics) -> Self {
        let version = format!(
            "{} {} (pid {})\n",
            identity.name,
            identity.version,
            std::process::id()
        );
        Shared {
            metrics,
            draining: AtomicBool::new(false),
            announcing: AtomicBool::new(false),
            version: Bytes::from(version),
        }
    }

    /// Marks the drain as started (for `/readyz`, `Connection: close` and the metric).
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.set_draining();
        // The drain ends the announce; `/readyz` has said 503 all along.
        self.set_announcing(false);
    }

    /// Marks the announce of a stop as started or ended (for `/readyz` and the metric).
    pub(crate) fn set_announcing(&self, announcing: bool) {
        self.announcing.store(announcing, Ordering::Relaxed);
        self.metrics.set_announcing(announcing);
    }

    /// Whether a stop is being announced.
    pub(crate) fn announcing(&self) -> bool {
        self.announcing.load(Ordering::Relaxed)
    }

    /// Whether the drain has started.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The answer to a built-in route, or `None` for the application's router.
pub(crate) fn builtin<B>(request: &Request<B>, shared: &Shared) -> Option<Response> {
    let path = request.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics" | "/version") {
        return None;
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return Some(
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET,HEAD")],
            )
                .into_response(),
        );
    }
    let text = |body: Body| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body);
    Some(match path {
        "/healthz" => text(Body::from("ok\n")).into_response(),
        "/readyz" if shared.draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            text(Body::from("draining\n")),
        )
            .into_response(),
        "/readyz" if shared.announcing() => (
            StatusCode::SERVICE_UNAVAILABLE,
            text(Body::from("stopping\n")),
        )
            .into_response(),
        "/readyz" => text(Body::from("ready\n")).into_response(),
        "/metrics" => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            shared.metrics.render(),
        )
            .into_response(),
        _ => text(Body::from(shared.version.clone())).into_response(),
    })
}

/// The header naming the configuration generation that answered. A constant: a name given as
/// `&str` is parsed and allocated again for every response.
static CONFIG_GENERATION: HeaderName = HeaderName::from_static("x-config-generation");

/// What the server does to every response: counts it, tags it with the config generation
/// that served it, and — when `close` is set (the drain closes this HTTP/1 connection) — asks
/// the client to close the connection after it, whatever the application set. That last part
/// is what lets a drain end without cutting a keep-alive connection under a client's next
/// request.
///
/// Done by the server around the router rather than as a middleware layer: it runs once per
/// request on the hot path, and a layer would cost allocations that hello-world throughput
/// notices.
pub(crate) fn finish(
    response: &mut Response,
    shared: &Shared,
    generation: HeaderValue,
    close: bool,
) {
    shared.metrics.response(response.status().as_u16());
    let headers = response.headers_mut();
    headers.insert(CONFIG_GENERATION.clone(), generation);
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(
            &Identity {
                name: "example",
                version: "1.0.0",
                description: "",
            },
            Metrics::new("example"),
        )
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).expect("request")
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn builtins_answer_and_others_pass() {
        let shared = shared();
        let healthz = builtin(&get("/healthz"), &shared).expect("builtin");
        assert_eq!(healthz.status(), StatusCode::OK);
        assert_eq!(body(healthz).await, "ok\n");
        let version = builtin(&get("/version"), &shared).expect("builtin");
        assert!(body(version).await.starts_with("example 1.0.0 (pid "));
        let metrics = builtin(&get("/metrics"), &shared).expect("builtin");
        assert!(body(metrics).await.contains("example_draining 0"));
        assert!(builtin(&get("/"), &shared).is_none());
        assert!(builtin(&get("/healthz/x"), &shared).is_none());
        let post = Request::post("/readyz").body(()).expect("request");
        assert_eq!(
            builtin(&post, &shared).expect("builtin").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn closing_overrides_whatever_the_app_said() {
        let shared = shared();
        let generation = HeaderValue::from(7);
        let mut response = ([(header::CONNECTION, "keep-alive")], "app").into_response();
        finish(&mut response, &shared, generation.clone(), false);
        assert_eq!(response.headers()["x-config-generation"], "7");
        assert_eq!(response.headers()[header::CONNECTION], "keep-alive");

        shared.set_draining();
        let ready = builtin(&get("/readyz"), &shared).expect("builtin");
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let mut response = ([(header::CONNECTION, "keep-alive")], "app").into_response();
        finish(&mut response, &shared, generation.clone(), true);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn announcing_is_not_ready_but_keeps_connections_open() {
        let shared = shared();
        let generation = HeaderValue::from(1);
        shared.set_announcing(true);
        let ready = builtin(&get("/readyz"), &shared).expect("builtin");
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(ready).await, "stopping\n");
        let mut response = "app".into_response();
        finish(&mut response, &shared, generation.clone(), false);
        assert!(response.headers().get(header::CONNECTION).is_none());
        let metrics = builtin(&get("/metrics"), &shared).expect("builtin");
        assert!(body(metrics).await.contains("example_announcing 1"));

        // The drain takes over: still not ready, and the announce is over.
        shared.set_draining();
        assert!(!shared.announcing());
        let ready = builtin(&get("/readyz"), &shared).expect("builtin");
        assert_eq!(body(ready).await, "draining\n");
        let metrics = builtin(&get("/metrics"), &shared).expect("builtin");
        assert!(body(metrics).await.contains("example_announcing 0"));
    }
}
