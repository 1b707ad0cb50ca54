//! Counters for `GET /metrics`, in the Prometheus text format.
//!
//! A handful of atomics rendered by hand: no registry, no allocation on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Everything `/metrics` reports. Shared by the server, the reload logic and the handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class: index 0 is 1xx … index 4 is 5xx.
    responses: [AtomicU64; 5],
    /// Connections accepted and served.
    connections_total: AtomicU64,
    /// Connections open right now (also the basis of `http.max_connections`).
    open_connections: AtomicUsize,
    /// Connections refused with `503` because `http.max_connections` was reached.
    rejected_total: AtomicU64,
    /// The configuration generation serving new requests (1 at start).
    generation: AtomicU64,
    /// Reloads that were applied.
    reloads_ok: AtomicU64,
    /// Reloads that kept the old configuration.
    reloads_failed: AtomicU64,
    /// Whether the drain has started.
    draining: AtomicBool,
}

impl Metrics {
    /// Counts one response.
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
    }

    /// A connection opened; returns how many are open now, itself included.
    pub fn connection_opened(&self) -> usize {
        self.connections_total.fetch_add(1, Relaxed);
        self.open_connections.fetch_add(1, Relaxed) + 1
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Relaxed);
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Relaxed)
    }

    /// A connection was refused for being over the limit.
    pub fn rejected(&self) {
        self.rejected_total.fetch_add(1, Relaxed);
    }

    /// Records a reload's outcome and the generation now serving.
    pub fn reloaded(&self, ok: bool, generation: u64) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Relaxed);
        self.generation.store(generation, Relaxed);
    }

    /// Sets the generation serving requests.
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Relaxed);
    }

    /// Marks the drain as started.
    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    /// Whether the drain has started: `/readyz` answers 503 and responses close connections.
    pub fn draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str(
            "# HELP seamless_http_responses_total HTTP responses sent, by status class.\n",
        );
        out.push_str("# TYPE seamless_http_responses_total counter\n");
        for (i, count) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "seamless_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                count.load(Relaxed)
            );
        }
        let gauges: [(&str, &str, &str, u64); 4] = [
            (
                "seamless_connections_total",
                "counter",
                "Connections accepted.",
                self.connections_total.load(Relaxed),
            ),
            (
                "seamless_open_connections",
                "gauge",
                "Connections open now.",
                self.open_connections.load(Relaxed) as u64,
            ),
            (
                "seamless_rejected_connections_total",
                "counter",
                "Connections refused with 503 over http.max_connections.",
                self.rejected_total.load(Relaxed),
            ),
            (
                "seamless_config_generation",
                "gauge",
                "Configuration generation serving requests.",
                self.generation.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        out.push_str("# HELP seamless_reloads_total Configuration reloads, by result.\n");
        out.push_str("# TYPE seamless_reloads_total counter\n");
        let _ = writeln!(
            out,
            "seamless_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "seamless_reloads_total{{result=\"failed\"}} {}",
            self.reloads_failed.load(Relaxed)
        );
        out.push_str("# HELP seamless_draining 1 while the service drains before exit.\n");
        out.push_str("# TYPE seamless_draining gauge\n");
        let _ = writeln!(out, "seamless_draining {}", u8::from(self.draining()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::default();
        metrics.response(200);
        metrics.response(204);
        metrics.response(503);
        metrics.connection_opened();
        metrics.reloaded(false, 1);
        metrics.reloaded(true, 2);
        metrics.set_draining();
        let text = metrics.render();
        for line in [
            "seamless_http_responses_total{class=\"2xx\"} 2",
            "seamless_http_responses_total{class=\"5xx\"} 1",
            "seamless_open_connections 1",
            "seamless_connections_total 1",
            "seamless_config_generation 2",
            "seamless_reloads_total{result=\"ok\"} 1",
            "seamless_reloads_total{result=\"failed\"} 1",
            "seamless_draining 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
