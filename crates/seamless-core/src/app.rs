//! The HTTP application: routes, and the per-request layers around them.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the configured `message` |
//! | `GET /healthz` | `200 ok` while the process serves |
//! | `GET /readyz` | `200 ready`, `503 draining` once the drain has started |
//! | `GET /metrics` | Prometheus text |
//! | `GET /version` | `seamless VERSION (pid PID)`: which binary and process answered |
//! | `GET /slow?ms=N` | waits N ms, then answers; only with `demo.slow_endpoint = true` |
//!
//! [`router`] is built from one configuration generation and is cheap to clone; the server
//! picks the current one for every request, so a request is served entirely by the config that
//! was current when it arrived. [`finish`] is what the server does to every response, whatever
//! produced it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::metrics::Metrics;

/// Longest wait `/slow` accepts, so the demo endpoint cannot pin a connection forever.
const SLOW_MAX: Duration = Duration::from_secs(60);

/// Who is at the other end of a connection, for logs.
#[derive(Debug, Clone)]
pub struct Peer(pub Arc<str>);

/// What the handlers see: one configuration generation and the shared counters.
#[derive(Debug, Clone)]
struct AppState {
    /// `message`, converted once so `GET /` does not allocate.
    message: Bytes,
    /// Whether `/slow` is enabled.
    slow_endpoint: bool,
    /// Shared counters and the draining flag.
    metrics: Arc<Metrics>,
}

/// The application for one configuration generation.
pub fn router(config: &Config, metrics: Arc<Metrics>) -> Router {
    let state = AppState {
        message: Bytes::from(config.message.clone()),
        slow_endpoint: config.demo.slow_endpoint,
        metrics,
    };
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/version", get(version))
        .route("/slow", get(slow))
        .layer(RequestBodyLimitLayer::new(config.http.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.http.request_timeout,
        ))
        .with_state(state)
}

async fn root(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.message,
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.metrics.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn prometheus(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn version() -> String {
    format!(
        "seamless {} (pid {})\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

async fn slow(State(state): State<AppState>, request: Request) -> Response {
    if !state.slow_endpoint {
        return StatusCode::NOT_FOUND.into_response();
    }
    let ms = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|ms| ms.parse::<u64>().ok());
    let Some(ms) = ms else {
        return (StatusCode::BAD_REQUEST, "expected ?ms=N\n").into_response();
    };
    tokio::time::sleep(Duration::from_millis(ms).min(SLOW_MAX)).await;
    format!("slept {ms} ms\n").into_response()
}

/// What the server does to every response: counts it, tags it with the config generation
/// that served it, and — once the drain has started — asks HTTP/1 clients to close the
/// connection after it. That last part is what lets a drain end without cutting a keep-alive
/// connection under a client's next request.
///
/// Done by the server around the router rather than as a middleware layer: it runs once per
/// request on the hot path, and a layer would cost allocations that hello-world throughput
/// notices.
pub fn finish(
    response: &mut Response,
    version: Version,
    metrics: &Metrics,
    generation: &HeaderValue,
) {
    metrics.response(response.status().as_u16());
    let headers = response.headers_mut();
    headers.insert("x-config-generation", generation.clone());
    // `Connection` is illegal in HTTP/2; those connections get GOAWAY from the server instead.
    if metrics.draining() && version <= Version::HTTP_11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

// Requests handled without a socket: `router(..).oneshot(request)`.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// A request through the router and [`finish`], as the server does it.
    async fn get(router: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        get_with(router, path, &Metrics::default()).await
    }

    async fn get_with(
        router: &Router,
        path: &str,
        metrics: &Metrics,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        finish(
            &mut response,
            Version::HTTP_11,
            metrics,
            &HeaderValue::from(7),
        );
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn routes_answer() {
        let metrics = Arc::new(Metrics::default());
        let config = Config {
            message: "hi\n".to_owned(),
            ..Config::default()
        };
        let app = router(&config, metrics.clone());
        let (status, headers, body) = get_with(&app, "/", &metrics).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hi\n"));
        assert_eq!(headers["x-config-generation"], "7");
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(get_with(&app, "/healthz", &metrics).await.0, StatusCode::OK);
        assert_eq!(get_with(&app, "/readyz", &metrics).await.0, StatusCode::OK);
        assert_eq!(
            get_with(&app, "/nope", &metrics).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get_with(&app, "/slow?ms=1", &metrics).await.0,
            StatusCode::NOT_FOUND,
            "demo off"
        );
        let (_, _, text) = get_with(&app, "/metrics", &metrics).await;
        assert!(
            text.contains("seamless_http_responses_total{class=\"2xx\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("seamless_http_responses_total{class=\"4xx\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn draining_closes_and_is_not_ready() {
        let metrics = Arc::new(Metrics::default());
        let app = router(&Config::default(), metrics.clone());
        metrics.set_draining();
        let (status, headers, _) = get_with(&app, "/readyz", &metrics).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::CONNECTION], "close");
        let (status, headers, _) = get_with(&app, "/", &metrics).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn slow_endpoint_behind_switch() {
        let mut config = Config::default();
        config.demo.slow_endpoint = true;
        let app = router(&config, Arc::new(Metrics::default()));
        let (status, _, body) = get(&app, "/slow?ms=5").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "slept 5 ms\n"));
        assert_eq!(get(&app, "/slow").await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test(start_paused = true)]
    async fn request_timeout_answers_408() {
        let mut config = Config::default();
        config.demo.slow_endpoint = true;
        config.http.request_timeout = Duration::from_millis(50);
        let app = router(&config, Arc::new(Metrics::default()));
        assert_eq!(
            get(&app, "/slow?ms=1000").await.0,
            StatusCode::REQUEST_TIMEOUT
        );
    }

    #[tokio::test]
    async fn oversized_body_answers_413() {
        let mut config = Config::default();
        config.http.max_body_bytes = 8;
        let app = router(&config, Arc::new(Metrics::default()));
        let response = app
            .oneshot(
                Request::post("/")
                    .header(header::CONTENT_LENGTH, "100")
                    .body(Body::from(vec![b'x'; 100]))
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
