//! One configuration generation, ready to serve: what a connection needs, swapped as a whole
//! on reload.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use http_body_util::Limited;
use hyper::body::Body as _;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service as _;

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
    /// and boxing the layered services, which bare-axum throughput comparisons notice. The
    /// returned future owns what it needs and holds the router's future once, so the
    /// connection's boxed response future stays small (see [`Routed`]).
    pub(crate) fn route(&self, request: Request<Body>) -> Routed {
        // Only a body that is there needs its length checked and watched.
        let request = if request.body().is_end_stream() {
            request
        } else {
            let limit = self.config.http.max_body_bytes;
            let declared = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_some_and(|length| length > limit as u64) {
                return Routed::answered(too_large());
            }
            request.map(|body| Body::new(Limited::new(body, limit)))
        };
        // axum's router is always ready (`poll_ready` has nothing to wait for), so it is
        // called directly; cloning it clones an `Arc`.
        let mut router = self.router.clone();
        Routed::Routing {
            answer: router.call(request),
            limit: self.config.http.request_timeout,
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response: ready at once (a built-in route, `413`), or the router's, replaced
    /// by `408` when not ready within `http.request_timeout`.
    ///
    /// Written out rather than as an `async fn`: an `async fn` keeps the request, the router's
    /// future and the timer each in a slot of its own, and the connection boxes the result
    /// for every request: past about 1 KiB the allocator leaves its fast path and the copy
    /// into the box grows with it, which bare-axum throughput comparisons notice.
    #[project = RoutedProjection]
    pub(crate) enum Routed {
        /// Answered without the router.
        Answered {
            // Taken when polled.
            response: Option<Response>,
        },
        /// The router's future, under the request timeout.
        Routing {
            #[pin]
            answer: RouteFuture<Infallible>,
            limit: Duration,
            // Started only once the router's future first has to wait: most handlers answer
            // on their first poll, and then no clock is read and no timer set up at all. The
            // difference to counting from the request's arrival is the handler's first
            // synchronous stretch, which no timer could interrupt anyway.
            timer: Option<Pin<Box<tokio::time::Sleep>>>,
        },
    }
}

impl Routed {
    /// A response that needs no router.
    pub(crate) fn answered(response: Response) -> Self {
        Routed::Answered {
            response: Some(response),
        }
    }
}

impl Future for Routed {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match self.project() {
            RoutedProjection::Answered { response } => {
                // Polled again after `Ready` only by a caller's bug; an empty 500 beats a panic.
                Poll::Ready(
                    response
                        .take()
                        .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
                )
            }
            RoutedProjection::Routing {
                answer,
                limit,
                timer,
            } => {
                if let Poll::Ready(Ok(response)) = answer.poll(cx) {
                    return Poll::Ready(response);
                }
                let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(*limit)));
                timer
                    .as_mut()
                    .poll(cx)
                    .map(|()| StatusCode::REQUEST_TIMEOUT.into_response())
            }
        }
    }
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
