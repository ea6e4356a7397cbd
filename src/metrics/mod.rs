//! Prometheus metrics: one registry per gateway state (`/metrics`), holding the GraphQL
//! request metrics and the read caches' of that state, the process-wide families of the moving
//! parts ([`families`], recorded with one-line calls such as [`subscription`] or
//! [`sync_finished`]), the database pool's state, the process's own metrics and
//! `hivegraph_build_info`. Served as OpenMetrics to scrapers that ask for it, in the classic text
//! format otherwise ([`classic`]).

pub mod classic;
mod families;
mod labels;
mod process;

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use families::*;
pub use labels::{BoundedLabels, MAX_NAME as MAX_OPERATION_NAME, OTHER as OTHER_OPERATION};

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

/// Most distinct operation names kept as label values; later names count as `other`.
pub const MAX_OPERATION_LABELS: usize = 200;

/// The gateway's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Operation names admitted as label values (at most [`MAX_OPERATION_LABELS`]).
    operations: BoundedLabels,
    process: process::ProcessGauges,
    pool: process::PoolGauges,
    /// The pool whose state [`Metrics::render`] reads (see [`Metrics::register_pool`]).
    db: Mutex<Option<dataloaders::DbPool>>,
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
        let mut root = Registry::default();
        let process = process::ProcessGauges::default();
        process.register(&mut root);
        let registry = root.sub_registry_with_prefix("hivegraph");
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
        let build_info = Family::<Vec<(&'static str, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register("build_info", "The gateway's version (always 1)", build_info);
        families().register(registry);
        let pool = process::PoolGauges::default();
        pool.register(registry);
        Metrics {
            registry: Mutex::new(root),
            operations: BoundedLabels::new(MAX_OPERATION_LABELS),
            process,
            pool,
            db: Mutex::new(None),
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
    pub fn observe(&self, mut labels: OperationLabels, seconds: f64) {
        labels.operation = self.operations.admit(&labels.operation);
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
        let mut root = self.registry.lock().expect("metrics registry lock");
        root.sub_registry_with_prefix("hivegraph")
            .register(name, help, metric);
    }

    /// Reports the state of `pool` (size, connections in use, waiters) at each scrape.
    pub fn register_pool(&self, pool: &dataloaders::DbPool) {
        *self.db.lock().unwrap_or_else(|p| p.into_inner()) = Some(pool.clone());
    }

    /// The metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let registry = self.registry.lock().expect("metrics registry lock");
        self.process.refresh();
        if let Some(db) = db {
            self.pool.refresh(&db);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The metrics in the format an `Accept` header asks for, with its content type.
    pub fn render_for(&self, accept: &str) -> (&'static str, String) {
        let text = self.render();
        if classic::wants_openmetrics(accept) {
            (classic::OPENMETRICS_CONTENT_TYPE, text)
        } else {
            (classic::CONTENT_TYPE, classic::from_openmetrics(&text))
        }
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
