//! One configuration generation, ready to serve: what a connection needs, swapped as a whole
//! on reload.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
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
    /// The application's router; [`Current::route`] adds the protections every request gets.
    router: Router,
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
            // A handler added to a router that never got `with_state` is turned into a route
            // anew for every request it answers (boxed, and cloned with it); done here, once
            // per generation, whatever the application returned.
            router: router.with_state(()),
            http1,
            http2,
            tls,
        }
    }
}

/// The live generation as one connection holds it, with its own copies of what every request
/// uses.
///
/// Copies, because a clone of an `Arc` (the router) or of a `Bytes` (the header value) shares
/// one reference count with every other clone: incremented and decremented for each request
/// by connections on every core, that count's cache line moves between the cores on every
/// request. A connection's copies are touched by that connection alone.
#[derive(Debug)]
pub(crate) struct Current {
    /// The generation the copies come from.
    generation: Arc<Generation>,
    /// The generation's router, cloned once for this connection: routing needs `&mut`.
    router: Router,
    /// `x-config-generation`, made anew rather than cloned (see above).
    header: HeaderValue,
}

impl Current {
    /// The copies of `generation`.
    pub(crate) fn new(generation: Arc<Generation>) -> Self {
        Current {
            router: generation.router.clone(),
            header: HeaderValue::from(generation.number),
            generation,
        }
    }

    /// Moves to the generation `live` serves, if a reload replaced it since the last request.
    /// Reading `live` takes no shared reference count (`arc-swap` lends the pointer through a
    /// slot of this thread's own), so a request that finds nothing changed touches no shared
    /// cache line.
    pub(crate) fn follow(&mut self, live: &ArcSwap<Generation>) {
        let live = live.load();
        if !Arc::ptr_eq(&live, &self.generation) {
            *self = Current::new(Guard::into_inner(live));
        }
    }

    /// The value of `x-config-generation`.
    pub(crate) fn header(&self) -> HeaderValue {
        self.header.clone()
    }

    /// Answers `request` with the application's router, under the protections no router it
    /// builds can do without: a body over `http.max_body_bytes` is refused with `413` (at once
    /// when `Content-Length` says so, else when the handler reads past the limit), and a
    /// response not ready within `http.request_timeout` is replaced by `408`.
    ///
    /// The same as tower-http's `RequestBodyLimitLayer` and `TimeoutLayer`, done here rather
    /// than as router layers: layers wrap every route, and each request then pays for cloning
    /// and boxing the layered services, which bare-axum throughput comparisons notice. The
    /// returned future owns what it needs and holds the router's future once, so the future
    /// hyper keeps for each request stays small (see [`Routed`]).
    pub(crate) fn route(&mut self, request: Request<Body>) -> Routed {
        let http = &self.generation.config.http;
        // Only a body that is there needs its length checked and watched.
        let request = if request.body().is_end_stream() {
            request
        } else {
            let limit = http.max_body_bytes;
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
        // called directly.
        Routed::Routing {
            answer: self.router.call(request),
            limit: http.request_timeout,
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response: ready at once (a built-in route, `413`), or the router's, replaced
    /// by `408` when not ready within `http.request_timeout`.
    ///
    /// Written out rather than as an `async fn`: an `async fn` keeps the request, the router's
    /// future and the timer each in a slot of its own, and hyper copies the future into its
    /// connection's slot for every request; the copy grows with it, which bare-axum throughput
    /// comparisons notice. Written out, it is also `Unpin`, which hyper needs to hand an
    /// HTTP/1 socket back (see `connection`).
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

    fn current(config: Config) -> Current {
        let router = TestApp::router(&Arc::new(Routers::default()), &TestConfig::default());
        Current::new(Arc::new(Generation::new(config, 1, router, None)))
    }

    #[tokio::test(start_paused = true)]
    async fn request_timeout_answers_408_whatever_the_app_does() {
        let mut config = Config::default();
        config.http.request_timeout = Duration::from_millis(50);
        let request = Request::get("/sleep").body(Body::empty()).expect("request");
        let response = current(config).route(request).await;
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
        let response = current(config).route(request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
