//! Prometheus metrics: request counts and latencies per GraphQL operation.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of GraphQL request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation name, or `anonymous`.
    pub operation: String,
    /// `query`, `mutation`, `subscription` or `unknown`.
    pub kind: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// Labels of HTTP rejections made before GraphQL execution.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// Why the request was rejected (`csrf`, `body_too_large`, `batch_too_large`, `timeout`, ...).
    pub reason: String,
}

/// The gateway's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<OperationLabels, Counter>,
    pub latency: Family<OperationLabels, Histogram>,
    pub rejections: Family<RejectionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the gateway's metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hivegraph");
        let requests = Family::<OperationLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL operations executed",
            requests.clone(),
        );
        registry.register(
            "graphql_request_duration_seconds",
            "GraphQL operation latency",
            latency.clone(),
        );
        registry.register(
            "http_rejections",
            "Requests rejected before execution",
            rejections.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            rejections,
        }
    }

    /// Counts a rejection.
    pub fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&RejectionLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records one executed operation.
    pub fn observe(&self, labels: OperationLabels, seconds: f64) {
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// Registers the caches' hit, miss and hit-ratio metrics (labelled by cache).
    pub fn register_caches(&self, caches: &crate::cache::Caches) {
        let m = caches.metrics();
        let mut registry = self.registry.lock().expect("metrics registry lock");
        registry.register(
            "cache_hits",
            "Lookups answered from a read cache",
            m.hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Lookups a read cache passed to the database",
            m.misses.clone(),
        );
        registry.register(
            "cache_hit_ratio",
            "Hits divided by lookups of a read cache, since start",
            m.hit_ratio.clone(),
        );
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
