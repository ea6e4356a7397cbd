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

/// Longest operation name kept as a label value.
pub const MAX_OPERATION_NAME: usize = 64;
/// Most distinct operation names kept as label values; later names count as `other`.
pub const MAX_OPERATION_LABELS: usize = 200;
/// The label of operation names past the caps, or not GraphQL names.
pub const OTHER_OPERATION: &str = "other";

/// The gateway's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Operation names admitted as label values (at most [`MAX_OPERATION_LABELS`]).
    operations: Mutex<std::collections::HashSet<String>>,
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
            operations: Mutex::new(Default::default()),
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

    /// The label value for an operation name from a document: the name itself while it is a
    /// short GraphQL name among the first [`MAX_OPERATION_LABELS`] seen, else `other` (names
    /// come from clients: unbounded label values would grow memory and `/metrics` forever).
    fn operation_label(&self, name: String) -> String {
        let valid = name.len() <= MAX_OPERATION_NAME
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid || name.is_empty() {
            return OTHER_OPERATION.into();
        }
        let mut known = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(&name) {
            return name;
        }
        if known.len() >= MAX_OPERATION_LABELS {
            return OTHER_OPERATION.into();
        }
        known.insert(name.clone());
        name
    }

    /// Records one executed operation.
    pub fn observe(&self, mut labels: OperationLabels, seconds: f64) {
        labels.operation = self.operation_label(std::mem::take(&mut labels.operation));
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// Registers a metric family (`name` without the `hivegraph_` prefix).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut registry = self.registry.lock().expect("metrics registry lock");
        registry.register(name, help, metric);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(operation: String) -> OperationLabels {
        OperationLabels {
            operation,
            kind: "query".into(),
            outcome: "error".into(),
        }
    }

    #[test]
    fn operation_labels_are_bounded() {
        let m = Metrics::new();
        m.observe(labels("anonymous".into()), 0.1);
        m.observe(labels("x".repeat(100_000)), 0.1);
        m.observe(labels("bad name{}".into()), 0.1);
        for i in 0..1000 {
            m.observe(labels(format!("op{i}")), 0.1);
        }
        let text = m.render();
        assert!(text.contains("operation=\"anonymous\""));
        assert!(text.contains("operation=\"other\""));
        assert!(!text.contains("xxxx") && !text.contains("bad name"));
        assert!(!text.contains("operation=\"op999\""));
        assert!(text.len() < 1_000_000, "{} bytes", text.len());
    }
}
