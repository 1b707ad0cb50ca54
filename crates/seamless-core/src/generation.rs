//! One configuration generation, ready to serve: what a connection needs, swapped as a whole
//! on reload.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper::body::Body as _;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::ServiceExt;

use crate::config::Config;
use crate::tls::Tls;

/// The service configuration of one generation and everything built from it.
#[derive(Debug)]
pub(crate) struct Generation {
    /// The service's configuration.
    pub(crate) config: Config,
    /// Its number: 1 at start, +1 per applied reload.
    pub(crate) number: u64,
    /// The application's router; [`Generation::route`] adds the protections every request gets.
    router: Router,
    /// `x-config-generation` for every response.
    pub(crate) header: HeaderValue,
    /// HTTP/1 connection settings (timeouts, header limits).
    pub(crate) http1: http1::Builder,
    /// HTTP/2 connection settings (header limits).
    pub(crate) http2: http2::Builder<TokioExecutor>,
    /// The certificate and key new handshakes on the `https` socket use; `None` without HTTPS.
    pub(crate) tls: Option<Arc<Tls>>,
}

impl Generation {
    /// Takes the application's `router` and the loaded `tls` pair, and builds the connection
    /// settings of `config`.
    pub(crate) fn new(config: Config, number: u64, router: Router, tls: Option<Arc<Tls>>) -> Self {
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
            tls,
        }
    }

    /// Answers `request` with the application's router, under the protections no router it
    /// builds can do without: a body over `http.max_body_bytes` is refused with `413` (at once
    /// when `Content-Length` says so, else when the handler reads past the limit), and a
    /// response not ready within `http.request_timeout` is replaced by `408`.
    ///
    /// The same as tower-http's `RequestBodyLimitLayer` and `TimeoutLayer`, done here rather
    /// than as router layers: layers wrap every route, and each request then pays for cloning
    /// and boxing the layered services, which bare-axum throughput comparisons notice.
    pub(crate) async fn route(&self, request: Request<Body>) -> Response {
        let limit = self.config.http.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return too_large();
        }
        // Only a body that is there needs its length watched.
        let request = if request.body().is_end_stream() {
            request
        } else {
            request.map(|body| Body::new(Limited::new(body, limit)))
        };
        let answer = self.router.clone().oneshot(request);
        match within(self.config.http.request_timeout, answer).await {
            Some(Ok(response)) => response,
            None => StatusCode::REQUEST_TIMEOUT.into_response(),
        }
    }
}

/// `future`'s output, or `None` if it is not ready within `limit`. Unlike
/// `tokio::time::timeout`, the timer starts only once the future first has to wait: most
/// handlers answer on their first poll, and then no clock is read and no timer is set up at
/// all. The difference to counting from the request's arrival is the handler's first
/// synchronous stretch, which no timer could interrupt anyway.
async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// `413`, as tower-http's body limit answers it.
fn too_large() -> Response {
    (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::App as _;
    use crate::test_app::{Routers, TestApp, TestConfig};
    use axum::body::Body;
    use axum::http::{Request, header};
    use std::time::Duration;

    fn generation(config: Config) -> Generation {
        let router = TestApp::router(&Arc::new(Routers::default()), &TestConfig::default());
        Generation::new(config, 1, router, None)
    }

    #[tokio::test(start_paused = true)]
    async fn request_timeout_answers_408_whatever_the_app_does() {
        let mut config = Config::default();
        config.http.request_timeout = Duration::from_millis(50);
        let request = Request::get("/sleep").body(Body::empty()).expect("request");
        let response = generation(config).route(request).await;
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
        let response = generation(config).route(request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
