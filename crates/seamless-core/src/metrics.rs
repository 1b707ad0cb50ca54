//! Metrics for `GET /metrics`: the service's own, and the application's beside them.
//!
//! Built on `prometheus-client` (the official OpenMetrics client for Rust). The registry is
//! filled once at start — the service's families here, the application's in
//! [`App::state`](crate::App::state) — and only read afterwards. Every metric handle the
//! request path touches is created up front, so a request costs one relaxed atomic addition,
//! on a cache line of its thread's own (`Sharded`), and no lookups.
//!
//! Names carry the application's prefix ([`Identity::metric_prefix`](crate::Identity)):
//! `orders_api_http_responses_total{class="2xx"}`.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a family: `(name, value)` pairs.
type Labels = Vec<(&'static str, &'static str)>;
/// Labels whose values are known only at run time (a file name).
type OwnedLabels = Vec<(&'static str, String)>;

/// How a TLS handshake on the `https` socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Completed: the connection is served.
    Ok,
    /// Not completed within `http.header_read_timeout`.
    Timeout,
    /// The client spoke plain HTTP; it was answered `400`.
    PlainHttp,
    /// The client asked (SNI) for a name the certificate does not hold.
    UnknownName,
    /// Anything else: not TLS, a broken record, no shared cipher, the client went away.
    Failed,
}

impl Handshake {
    const ALL: [Handshake; 5] = [
        Handshake::Ok,
        Handshake::Timeout,
        Handshake::PlainHttp,
        Handshake::UnknownName,
        Handshake::Failed,
    ];

    /// The `result` label, and the word in logs.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Timeout => "timeout",
            Handshake::PlainHttp => "plain_http",
            Handshake::UnknownName => "unknown_sni",
            Handshake::Failed => "failed",
        }
    }
}

/// The service's metrics, and the registry that renders them with the application's.
#[derive(Debug)]
pub struct Metrics {
    /// Every family, the application's included; read-only once serving starts.
    registry: Registry,
    /// Responses by status class: index 0 is 1xx … index 4 is 5xx.
    responses: [Counter<u64, Sharded>; 5],
    /// Connections accepted and served.
    connections: Counter,
    /// Connections open right now (also the basis of `http.max_connections`).
    open_connections: Gauge<i64, AtomicI64>,
    /// Connections refused with `503` because `http.max_connections` was reached.
    rejected: Counter,
    /// The configuration generation serving new requests (1 at start).
    generation: Gauge<i64, AtomicI64>,
    /// Reloads that were applied.
    reloads_ok: Counter,
    /// Reloads that kept the old configuration.
    reloads_failed: Counter,
    /// 1 once the drain has started.
    draining: Gauge<i64, AtomicI64>,
    /// 1 while a stop is announced (`shutdown.announce`), before the drain.
    announcing: Gauge<i64, AtomicI64>,
    /// TLS handshakes by result, in [`Handshake::ALL`]'s order.
    handshakes: [Counter; 5],
    /// The serving certificate's expiry, by file; no series without HTTPS.
    certificate_expiry: Family<OwnedLabels, Gauge<i64, AtomicI64>>,
}

impl Metrics {
    /// The service's families, registered under `prefix` (see the module docs). Register the
    /// application's in [`Metrics::registry`] before serving starts.
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let responses = Family::<Labels, Counter<u64, Sharded>>::default();
        registry.register(
            "http_responses",
            "HTTP responses sent, by status class",
            responses.clone(),
        );
        let responses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .map(|class| responses.get_or_create(&vec![("class", class)]).clone());
        let reloads = Family::<Labels, Counter>::default();
        registry.register(
            "reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        let [reloads_ok, reloads_failed] =
            ["ok", "failed"].map(|result| reloads.get_or_create(&vec![("result", result)]).clone());
        let handshakes = Family::<Labels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the https socket, by result",
            handshakes.clone(),
        );
        let handshakes = Handshake::ALL.map(|result| {
            handshakes
                .get_or_create(&vec![("result", result.label())])
                .clone()
        });
        let certificate_expiry = Family::<OwnedLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "tls_certificate_expiry_seconds",
            "When the certificate serving HTTPS expires, in seconds since the epoch",
            certificate_expiry.clone(),
        );
        let mut metrics = Metrics {
            registry,
            responses,
            connections: Counter::default(),
            open_connections: Gauge::default(),
            rejected: Counter::default(),
            generation: Gauge::default(),
            reloads_ok,
            reloads_failed,
            draining: Gauge::default(),
            announcing: Gauge::default(),
            handshakes,
            certificate_expiry,
        };
        let registry = &mut metrics.registry;
        registry.register(
            "connections",
            "Connections accepted",
            metrics.connections.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open now",
            metrics.open_connections.clone(),
        );
        registry.register(
            "rejected_connections",
            "Connections refused with 503 over http.max_connections",
            metrics.rejected.clone(),
        );
        registry.register(
            "config_generation",
            "Configuration generation serving requests",
            metrics.generation.clone(),
        );
        registry.register(
            "draining",
            "1 while the service drains before exit",
            metrics.draining.clone(),
        );
        registry.register(
            "announcing",
            "1 while the service announces a stop: not ready, still serving",
            metrics.announcing.clone(),
        );
        metrics
    }

    /// Where the application registers its own metrics, under the same prefix.
    ///
    /// ```
    /// use prometheus_client::metrics::counter::Counter;
    ///
    /// let mut metrics = seamless_core::Metrics::new("orders_api");
    /// let orders = Counter::<u64>::default();
    /// metrics.registry().register("orders", "Orders taken", orders.clone());
    /// orders.inc();
    /// assert!(metrics.render().contains("orders_api_orders_total 1"));
    /// ```
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts one response.
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
    }

    /// A connection opened.
    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
        self.open_connections.inc();
    }

    /// A connection closed.
    pub(crate) fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// Connections open right now.
    pub(crate) fn open_connections(&self) -> usize {
        usize::try_from(self.open_connections.get()).unwrap_or(0)
    }

    /// A connection was refused for being over the limit.
    pub(crate) fn rejected(&self) {
        self.rejected.inc();
    }

    /// Records a reload's outcome and the generation now serving.
    pub(crate) fn reloaded(&self, ok: bool, generation: u64) {
        if ok {
            self.reloads_ok.inc();
        } else {
            self.reloads_failed.inc();
        }
        self.set_generation(generation);
    }

    /// Sets the generation serving requests.
    pub(crate) fn set_generation(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Marks the drain as started.
    pub(crate) fn set_draining(&self) {
        self.draining.set(1);
    }

    /// Marks the announce of a stop as started (`true`) or ended.
    pub(crate) fn set_announcing(&self, announcing: bool) {
        self.announcing.set(i64::from(announcing));
    }

    /// Counts a TLS handshake's result.
    pub(crate) fn handshake(&self, result: Handshake) {
        self.handshakes[result as usize].inc();
    }

    /// Records the certificate serving HTTPS (`None`: no HTTPS): its file and expiry.
    pub(crate) fn set_certificate(&self, certificate: Option<(&std::path::Path, i64)>) {
        self.certificate_expiry.clear();
        if let Some((path, not_after)) = certificate {
            self.certificate_expiry
                .get_or_create(&vec![("certificate", path.display().to_string())])
                .set(not_after);
        }
    }

    /// The OpenMetrics text exposition of every family, the application's included.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        // Writing into a String cannot fail; an encoding error would be a bug in a metric.
        if let Err(error) = encode(&mut out, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }
}

/// A counter's value kept in several parts, each on a cache line of its own and added to by
/// the threads it belongs to; reading sums them.
///
/// For the counters every request adds to. One atomic shared by every worker thread makes its
/// cache line travel from core to core with each request that a different core serves, which
/// hello-world throughput measures in per cent. With a part per thread (threads beyond
/// [`SHARDS`] share), the line stays with its core. Written here because `prometheus-client`
/// takes the atomic as a type parameter for exactly this, and the part is ten lines.
#[derive(Debug, Default)]
pub(crate) struct Sharded([Part; SHARDS]);

/// How many parts a [`Sharded`] counter has: a tokio runtime has one worker per core.
const SHARDS: usize = 8;

/// One part of a [`Sharded`] counter, alone on its cache line (128 bytes: two lines, as x86
/// prefetches lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Part(AtomicU64);

impl Sharded {
    /// The part the calling thread adds to: given out in turn as threads first count.
    fn part(&self) -> &AtomicU64 {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static PART: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        }
        &self.0[PART.with(|part| *part)].0
    }
}

impl Atomic<u64> for Sharded {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns the value before, as `AtomicU64` does — of this thread's part only.
    fn inc_by(&self, v: u64) -> u64 {
        self.part().fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|part| part.0.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_counter_sums_what_every_thread_counted() {
        let counter = Counter::<u64, Sharded>::default();
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 3 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                });
            }
        });
        counter.inc_by(5);
        assert_eq!(counter.get(), (SHARDS as u64 + 3) * 1000 + 5);
    }

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::new("example");
        metrics.response(200);
        metrics.response(204);
        metrics.response(503);
        metrics.connection_opened();
        metrics.reloaded(false, 1);
        metrics.reloaded(true, 2);
        metrics.set_draining();
        metrics.handshake(Handshake::PlainHttp);
        metrics.set_certificate(Some((std::path::Path::new("/old.pem"), 1)));
        metrics.set_certificate(Some((
            std::path::Path::new("/etc/tls/cert.pem"),
            1_900_000_000,
        )));
        let text = metrics.render();
        assert!(
            !text.contains("/old.pem"),
            "a replaced certificate leaves:\n{text}"
        );
        for line in [
            "example_http_responses_total{class=\"2xx\"} 2",
            "example_http_responses_total{class=\"5xx\"} 1",
            "example_open_connections 1",
            "example_connections_total 1",
            "example_config_generation 2",
            "example_reloads_total{result=\"ok\"} 1",
            "example_reloads_total{result=\"failed\"} 1",
            "example_draining 1",
            "example_announcing 0",
            "example_tls_handshakes_total{result=\"plain_http\"} 1",
            "example_tls_handshakes_total{result=\"ok\"} 0",
            "example_tls_certificate_expiry_seconds{certificate=\"/etc/tls/cert.pem\"} 1900000000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
