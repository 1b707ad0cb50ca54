//! The application: its configuration keys, long-lived state, metrics and routes. This is the
//! file to make your own; sockets, reloads, the drain, upgrades, logging and the built-in
//! routes (`/healthz`, `/readyz`, `/metrics`, `/version`) come from `seamless-core`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the configured `message` |
//! | `POST /echo` | `{"text": T}` → `{"text": T, "echoes": N}`: N counts echoes since start |
//! | `GET /echo` | `{"recent": [...]}`: the last `demo.history` texts echoed |
//! | `GET /slow?ms=N` | waits N ms, then answers; only with `demo.slow_endpoint = true` |

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use seamless_core::{App, AppConfig, BoxError, Identity, Invalid, Metrics};
use serde::{Deserialize, Serialize};

/// Longest wait `/slow` accepts, so the demo endpoint cannot pin a connection forever.
const SLOW_MAX: Duration = Duration::from_secs(60);
/// Largest `demo.history`: the buffer is allocated whole at start.
const HISTORY_MAX: usize = 10_000;

/// The example service.
#[derive(Debug)]
pub(crate) struct Demo;

/// The application's keys, beside the service's `[log]`, `[http]`, `[shutdown]`, `[upgrade]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Settings {
    /// Body of `GET /`. Live on reload.
    pub(crate) message: String,
    /// Demo switches.
    pub(crate) demo: DemoSettings,
}

/// `[demo]`: what the example endpoints do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DemoSettings {
    /// Enables `GET /slow?ms=N` (at most 60 s), used to show in-flight requests surviving a
    /// drain. Off by default: a slow endpoint is a free way to hold connections open.
    /// Live on reload.
    pub(crate) slow_endpoint: bool,
    /// How many echoed texts `GET /echo` remembers. Sizes a buffer created once at start, so
    /// a change takes effect on restart.
    pub(crate) history: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            message: format!("Hello from {}!\n", Demo::IDENTITY.name),
            demo: DemoSettings::default(),
        }
    }
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            slow_endpoint: false,
            history: 16,
        }
    }
}

impl AppConfig for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        if self.demo.history > HISTORY_MAX {
            return Err(Invalid::new(
                "demo.history",
                format!("must be at most {HISTORY_MAX}"),
            ));
        }
        Ok(())
    }

    fn restart_only(&self, running: &Self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.demo.history != running.demo.history {
            keys.push("demo.history");
        }
        keys
    }
}

/// What lives as long as the process, across reloads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Echoes since start.
    echoes: AtomicU64,
    /// The last texts echoed, at most `capacity`.
    recent: Mutex<VecDeque<String>>,
    /// `demo.history` at start.
    capacity: usize,
    /// `NAME_echo_requests_total`.
    echo_requests: Counter,
    /// `NAME_echo_duration_seconds`: time spent in the echo handler.
    echo_duration: Histogram,
}

impl App for Demo {
    const IDENTITY: Identity = seamless_core::identity!();
    type Config = Settings;
    type State = Shared;

    async fn state(config: &Settings, metrics: &mut Metrics) -> Result<Shared, BoxError> {
        let shared = Shared {
            echoes: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(config.demo.history)),
            capacity: config.demo.history,
            echo_requests: Counter::default(),
            // 100 µs to about 1.6 s.
            echo_duration: Histogram::new(exponential_buckets(0.0001, 4.0, 8)),
        };
        let registry = metrics.registry();
        registry.register(
            "echo_requests",
            "POST /echo requests answered",
            shared.echo_requests.clone(),
        );
        registry.register(
            "echo_duration_seconds",
            "Time spent answering POST /echo",
            shared.echo_duration.clone(),
        );
        Ok(shared)
    }

    fn router(shared: &Arc<Shared>, config: &Settings) -> Router {
        let state = AppState {
            slow_endpoint: config.demo.slow_endpoint,
            shared: shared.clone(),
        };
        // Converted once per configuration generation, so `GET /` does not allocate.
        let message = Bytes::from(config.message.clone());
        // axum clones a route's handler, with its state, for every request it routes there, and
        // a clone of anything shared (an `Arc`, `Bytes`) moves its reference count's cache line
        // between the cores that serve requests. So `GET /` takes no state and no extractor
        // (with one, axum also takes the request apart and puts it back), and answers with the
        // copy of `message` that its clone of the handler brings.
        let root = Router::new().route("/", get(move || std::future::ready(root(message))));
        Router::new()
            .route("/echo", get(recent).post(echo))
            .route("/slow", get(slow))
            .with_state(state)
            .merge(root)
    }
}

/// What the handlers see: one configuration generation and the long-lived state.
#[derive(Debug, Clone)]
struct AppState {
    /// Whether `/slow` is enabled.
    slow_endpoint: bool,
    /// Kept across reloads.
    shared: Arc<Shared>,
}

/// `GET /`: the configured `message`, as text.
fn root(message: Bytes) -> Response {
    let mut response = Response::new(message.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `POST /echo` body.
#[derive(Debug, Deserialize)]
struct EchoRequest {
    /// Echoed back.
    text: String,
}

/// `POST /echo` answer.
#[derive(Debug, Serialize, Deserialize)]
struct EchoResponse {
    /// The text sent.
    text: String,
    /// Echoes since the process started, this one included.
    echoes: u64,
}

async fn echo(State(state): State<AppState>, Json(request): Json<EchoRequest>) -> Response {
    let started = Instant::now();
    let shared = &state.shared;
    let echoes = shared.echoes.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.capacity > 0 {
        // A poisoned lock only means another echo panicked mid-push; the list is still usable.
        let mut recent = shared.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == shared.capacity {
            recent.pop_front();
        }
        recent.push_back(request.text.clone());
    }
    let response = Json(EchoResponse {
        text: request.text,
        echoes,
    })
    .into_response();
    shared.echo_requests.inc();
    shared
        .echo_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /echo` answer.
#[derive(Debug, Serialize, Deserialize)]
struct Recent {
    /// The last texts echoed, oldest first.
    recent: Vec<String>,
}

async fn recent(State(state): State<AppState>) -> Json<Recent> {
    let recent = state
        .shared
        .recent
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Json(Recent {
        recent: recent.iter().cloned().collect(),
    })
}

/// `GET /slow` query.
#[derive(Debug, Deserialize)]
struct SlowQuery {
    /// How long to wait, in milliseconds.
    ms: u64,
}

async fn slow(
    State(state): State<AppState>,
    query: Result<Query<SlowQuery>, QueryRejection>,
) -> Response {
    if !state.slow_endpoint {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(Query(SlowQuery { ms })) = query else {
        return (StatusCode::BAD_REQUEST, "expected ?ms=N\n").into_response();
    };
    tokio::time::sleep(Duration::from_millis(ms).min(SLOW_MAX)).await;
    format!("slept {ms} ms\n").into_response()
}

// Requests handled without a socket: `router(..).oneshot(request)`.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn app(config: &Settings) -> (Router, Arc<Shared>, Metrics) {
        let mut metrics = Metrics::new("demo");
        let shared = Arc::new(Demo::state(config, &mut metrics).await.expect("state"));
        (Demo::router(&shared, config), shared, metrics)
    }

    async fn send(router: &Router, request: Request<Body>) -> (StatusCode, String) {
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).expect("request")
    }

    fn post_json(path: &str, json: &str) -> Request<Body> {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json.to_owned()))
            .expect("request")
    }

    #[tokio::test]
    async fn root_answers_the_message() {
        let config = Settings {
            message: "hi\n".to_owned(),
            ..Settings::default()
        };
        let (router, _, _) = app(&config).await;
        assert_eq!(
            send(&router, get("/")).await,
            (StatusCode::OK, "hi\n".into())
        );
        assert_eq!(send(&router, get("/nope")).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn echo_takes_and_returns_json_and_counts_across_routers() {
        let config = Settings::default();
        let (router, shared, metrics) = app(&config).await;
        let (status, body) = send(&router, post_json("/echo", r#"{"text":"one"}"#)).await;
        assert_eq!(status, StatusCode::OK);
        let answer: EchoResponse = serde_json::from_str(&body).expect("json");
        assert_eq!((answer.text.as_str(), answer.echoes), ("one", 1));

        // A reload builds a new router from the same state: the count goes on.
        let reloaded = Demo::router(&shared, &config);
        let (_, body) = send(&reloaded, post_json("/echo", r#"{"text":"two"}"#)).await;
        let answer: EchoResponse = serde_json::from_str(&body).expect("json");
        assert_eq!(answer.echoes, 2);
        let (_, body) = send(&reloaded, get("/echo")).await;
        let recent: Recent = serde_json::from_str(&body).expect("json");
        assert_eq!(recent.recent, ["one", "two"]);

        let text = metrics.render();
        assert!(text.contains("demo_echo_requests_total 2"), "{text}");
        assert!(
            text.contains("demo_echo_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            send(&router, post_json("/echo", "not json"))
                .await
                .0
                .is_client_error(),
            "malformed JSON is refused"
        );
    }

    #[tokio::test]
    async fn history_is_bounded_by_its_capacity() {
        let mut config = Settings::default();
        config.demo.history = 2;
        let (router, _, _) = app(&config).await;
        for text in ["a", "b", "c"] {
            send(
                &router,
                post_json("/echo", &format!(r#"{{"text":"{text}"}}"#)),
            )
            .await;
        }
        let (_, body) = send(&router, get("/echo")).await;
        let recent: Recent = serde_json::from_str(&body).expect("json");
        assert_eq!(recent.recent, ["b", "c"]);
    }

    #[tokio::test]
    async fn slow_endpoint_behind_switch() {
        let mut config = Settings::default();
        let (router, _, _) = app(&config).await;
        assert_eq!(
            send(&router, get("/slow?ms=1")).await.0,
            StatusCode::NOT_FOUND
        );
        config.demo.slow_endpoint = true;
        let (router, _, _) = app(&config).await;
        assert_eq!(
            send(&router, get("/slow?ms=5")).await,
            (StatusCode::OK, "slept 5 ms\n".into())
        );
        assert_eq!(send(&router, get("/slow")).await.0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn history_is_restart_only_and_bounded() {
        let running = Settings::default();
        let mut new = running.clone();
        new.message = "changed".into();
        assert!(new.restart_only(&running).is_empty(), "message is live");
        new.demo.history = 3;
        assert_eq!(new.restart_only(&running), ["demo.history"]);
        new.demo.history = HISTORY_MAX + 1;
        assert_eq!(new.validate().expect_err("too large").key, "demo.history");
    }
}
