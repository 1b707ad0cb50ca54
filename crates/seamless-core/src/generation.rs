//! One configuration generation, ready to serve: what a connection needs, swapped as a whole
//! on reload.

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;

/// The service configuration of one generation and everything built from it.
#[derive(Debug)]
pub(crate) struct Generation {
    /// The service's configuration.
    pub(crate) config: Config,
    /// Its number: 1 at start, +1 per applied reload.
    pub(crate) number: u64,
    /// The application's router with the protections every request gets.
    pub(crate) router: Router,
    /// `x-config-generation` for every response.
    pub(crate) header: HeaderValue,
    /// HTTP/1 connection settings (timeouts, header limits).
    pub(crate) http1: http1::Builder,
    /// HTTP/2 connection settings (header limits).
    pub(crate) http2: http2::Builder<TokioExecutor>,
}

impl Generation {
    /// Wraps the application's `router` with the request timeout and body limit of `config`,
    /// and builds the connection settings.
    pub(crate) fn new(config: Config, number: u64, router: Router) -> Self {
        // Applied here, not by the application: no router it builds can do without them.
        let router = router
            .layer(RequestBodyLimitLayer::new(config.http.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                config.http.request_timeout,
            ));
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.http.header_read_timeout)
            .max_buf_size(config.http.max_header_bytes);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.http.max_header_bytes).unwrap_or(u32::MAX));
        Generation {
            config,
            number,
            router,
            header: HeaderValue::from(number),
            http1,
            http2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::App as _;
    use crate::test_app::{Routers, TestApp, TestConfig};
    use axum::body::Body;
    use axum::http::{Request, header};
    use std::sync::Arc;
    use std::time::Duration;
    use tower::ServiceExt;

    fn generation(config: Config) -> Generation {
        let router = TestApp::router(&Arc::new(Routers::default()), &TestConfig::default());
        Generation::new(config, 1, router)
    }

    #[tokio::test(start_paused = true)]
    async fn request_timeout_answers_408_whatever_the_app_does() {
        let mut config = Config::default();
        config.http.request_timeout = Duration::from_millis(50);
        let request = Request::get("/sleep").body(Body::empty()).expect("request");
        let response = generation(config)
            .router
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn oversized_body_answers_413() {
        let mut config = Config::default();
        config.http.max_body_bytes = 8;
        let request = Request::post("/")
            .header(header::CONTENT_LENGTH, "100")
            .body(Body::from(vec![b'x'; 100]))
            .expect("request");
        let response = generation(config)
            .router
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
