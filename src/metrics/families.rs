//! The process-wide metric families of the moving parts (websockets, the database, registry
//! syncs, clusters, operations, metrics collection, refusals), and the one-line calls that
//! record them. Every label value is bounded: a protocol, a kind or an outcome from a fixed
//! set, a status code, or the name of an administrator-created registry or cluster.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::{BoundedLabels, Labels, labels};

/// Buckets of quick things (SQL statements): 0.5 ms to 5 s.
const FAST_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Buckets of slow things (syncs, deploys): 50 ms to 15 min.
const SLOW_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn fast() -> Histogram {
    Histogram::new(FAST_BUCKETS)
}

fn slow() -> Histogram {
    Histogram::new(SLOW_BUCKETS)
}

/// The families, shared by every registry of the process (see [`Families::register`]).
pub struct Families {
    pub websockets: Gauges,
    pub subscriptions: Gauges,
    pub deliveries: Counter,
    pub gap_notices: Counter,
    pub statement_duration: Histograms,
    pub syncs: Counters,
    pub sync_duration: Histograms,
    pub sync_servers: Counters,
    pub sync_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    pub cluster_status: Gauges,
    pub watch_restarts: Counters,
    pub k8s_api_errors: Counters,
    pub operations: Counters,
    pub operation_duration: Histograms,
    pub collections: Counters,
    pub refusals: Counters,
    pub compiled_reads: Counters,
    pub ready: Gauge,
    pub readiness_changes: Counter,
    /// Subscription fields seen as label values (the schema's, at most a few dozen).
    fields: BoundedLabels,
}

/// The families of this process.
pub fn families() -> &'static Families {
    static FAMILIES: LazyLock<Families> = LazyLock::new(Families::new);
    &FAMILIES
}

impl Families {
    fn new() -> Self {
        let f = Self::empty();
        // Series that dashboards and alerts read exist from the start, at zero.
        for protocol in ["graphql-transport-ws", "graphql-ws"] {
            let _ = f
                .websockets
                .get_or_create(&labels(&[("protocol", protocol)]));
        }
        f
    }

    fn empty() -> Self {
        Families {
            websockets: Default::default(),
            subscriptions: Default::default(),
            deliveries: Default::default(),
            gap_notices: Default::default(),
            statement_duration: Family::new_with_constructor(fast),
            syncs: Default::default(),
            sync_duration: Family::new_with_constructor(slow),
            sync_servers: Default::default(),
            sync_last_success: Default::default(),
            cluster_status: Default::default(),
            watch_restarts: Default::default(),
            k8s_api_errors: Default::default(),
            operations: Default::default(),
            operation_duration: Family::new_with_constructor(slow),
            collections: Default::default(),
            refusals: Default::default(),
            compiled_reads: Default::default(),
            ready: Default::default(),
            readiness_changes: Default::default(),
            fields: BoundedLabels::new(50),
        }
    }

    /// Registers every family in `r` (the `hivegraph_` sub-registry).
    pub fn register(&self, r: &mut Registry) {
        let f = self;
        r.register(
            "websockets",
            "Open GraphQL websockets, by subprotocol",
            f.websockets.clone(),
        );
        r.register(
            "subscriptions",
            "Running subscriptions, by root field",
            f.subscriptions.clone(),
        );
        r.register(
            "subscription_deliveries",
            "Subscription messages queued for a socket",
            f.deliveries.clone(),
        );
        r.register(
            "subscription_gap_notices",
            "Subscription messages that announced skipped updates (extensions.gap)",
            f.gap_notices.clone(),
        );
        r.register(
            "db_statement_duration_seconds",
            "SQL statement latency, by kind (read or write)",
            f.statement_duration.clone(),
        );
        r.register(
            "registry_syncs",
            "Registry syncs finished, by registry and outcome",
            f.syncs.clone(),
        );
        r.register(
            "registry_sync_duration_seconds",
            "Registry sync duration, by registry",
            f.sync_duration.clone(),
        );
        r.register(
            "registry_sync_servers",
            "Servers a sync added, updated, removed or skipped, by registry",
            f.sync_servers.clone(),
        );
        r.register(
            "registry_last_successful_sync_timestamp_seconds",
            "When a sync of the registry last committed (Unix time)",
            f.sync_last_success.clone(),
        );
        r.register(
            "cluster_status",
            "1 for the cluster's current status, 0 for the others",
            f.cluster_status.clone(),
        );
        r.register(
            "cluster_watch_restarts",
            "Kubernetes watches that failed and restart, by API server",
            f.watch_restarts.clone(),
        );
        r.register(
            "cluster_api_errors",
            "Failed Kubernetes API calls, by API server and HTTP status code (0: no answer)",
            f.k8s_api_errors.clone(),
        );
        r.register(
            "operations",
            "Instance operations (deploys, scales, ...) finished, by kind and outcome",
            f.operations.clone(),
        );
        r.register(
            "operation_duration_seconds",
            "Instance operation duration from start to final state, by kind",
            f.operation_duration.clone(),
        );
        r.register(
            "metrics_collections",
            "Instance metrics collections, by source and outcome",
            f.collections.clone(),
        );
        r.register(
            "ready",
            "1 while /readyz answers ready, 0 while it answers not ready",
            f.ready.clone(),
        );
        r.register(
            "readiness_changes",
            "Times /readyz changed its answer",
            f.readiness_changes.clone(),
        );
        r.register(
            "refusals",
            "Operations refused by a limit (rate_limit, persisted_operation)",
            f.refusals.clone(),
        );
        r.register(
            "compiled_reads",
            "Single HTTP operations by the path that answered: compiled (a plan), declined (a plan that gave the request to the executor), executor (no plan)",
            f.compiled_reads.clone(),
        );
    }
}

/// Keeps a gauge raised while it lives.
pub struct Held(Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn hold(gauge: Gauge) -> Held {
    gauge.inc();
    Held(gauge)
}

/// `/readyz` answered `ready` (counts a change of answer).
pub fn readiness(ready: bool) {
    let f = families();
    if f.ready.set(i64::from(ready)) != i64::from(ready) {
        f.readiness_changes.inc();
    }
}

/// An open websocket of `protocol` (`graphql-transport-ws` or `graphql-ws`), until dropped.
pub fn websocket(protocol: &'static str) -> Held {
    hold(
        families()
            .websockets
            .get_or_create(&labels(&[("protocol", protocol)]))
            .clone(),
    )
}

/// A running subscription of the root field `field`, until dropped.
pub fn subscription(field: &str) -> Held {
    let f = families();
    let field = f.fields.admit(field);
    hold(
        f.subscriptions
            .get_or_create(&labels(&[("field", &field)]))
            .clone(),
    )
}

/// A subscription message was queued; `gap`: it carries a gap notice.
pub fn delivered(gap: bool) {
    families().deliveries.inc();
    if gap {
        families().gap_notices.inc();
    }
}

/// One SQL statement of `kind` (`read` or `write`) took `took`.
pub fn statement(kind: &'static str, took: Duration) {
    families()
        .statement_duration
        .get_or_create(&labels(&[("kind", kind)]))
        .observe(took.as_secs_f64());
}

/// What one registry sync did: servers added, updated, removed and skipped.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncCounts {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub skipped: u64,
}

/// A sync of `registry` finished (`ok`: it committed) after `took`.
pub fn sync_finished(registry: &str, ok: bool, took: Duration, counts: SyncCounts) {
    let f = families();
    // Both outcomes exist from the first sync on, so that `increase()` sees the first failure.
    for outcome in ["success", "failure"] {
        let c = f
            .syncs
            .get_or_create(&labels(&[("registry", registry), ("outcome", outcome)]));
        if (outcome == "success") == ok {
            c.inc();
        }
    }
    let registry_only = labels(&[("registry", registry)]);
    f.sync_duration
        .get_or_create(&registry_only)
        .observe(took.as_secs_f64());
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        f.sync_last_success
            .get_or_create(&registry_only)
            .set(now.as_secs_f64());
    }
    let changes = [
        ("added", counts.added),
        ("updated", counts.updated),
        ("removed", counts.removed),
        ("skipped", counts.skipped),
    ];
    for (change, n) in changes {
        f.sync_servers
            .get_or_create(&labels(&[("registry", registry), ("change", change)]))
            .inc_by(n);
    }
}

/// The statuses a cluster can be in (one gauge each, 1 for the current one).
pub const CLUSTER_STATUSES: [&str; 4] = ["connected", "disconnected", "unauthorized", "unknown"];

/// `cluster` is now in `status` (one of [`CLUSTER_STATUSES`]; others count as `unknown`).
pub fn cluster_status(cluster: &str, status: &str) {
    let status = if CLUSTER_STATUSES.contains(&status) {
        status
    } else {
        "unknown"
    };
    for s in CLUSTER_STATUSES {
        let g = families()
            .cluster_status
            .get_or_create(&labels(&[("cluster", cluster), ("status", s)]));
        g.set(i64::from(s == status));
    }
}

/// A watch on the API server `endpoint` failed and restarts (with backoff).
pub fn watch_restarted(endpoint: &str) {
    families()
        .watch_restarts
        .get_or_create(&labels(&[("api_server", endpoint)]))
        .inc();
}

/// A Kubernetes API call to the API server `endpoint` failed with HTTP `code` (0: no answer).
pub fn k8s_api_error(endpoint: &str, code: u16) {
    let code = code.to_string();
    families()
        .k8s_api_errors
        .get_or_create(&labels(&[("api_server", endpoint), ("code", &code)]))
        .inc();
}

/// An operation of `kind` (`deploy`, `scale`, ...) reached its final state `outcome`
/// (`succeeded`, `failed`, `cancelled`); it started at `started`.
pub fn operation_finished(kind: &str, outcome: &str, started: chrono::DateTime<chrono::Utc>) {
    let took = (chrono::Utc::now() - started).to_std().unwrap_or_default();
    let f = families();
    f.operations
        .get_or_create(&labels(&[("kind", kind), ("outcome", outcome)]))
        .inc();
    f.operation_duration
        .get_or_create(&labels(&[("kind", kind)]))
        .observe(took.as_secs_f64());
}

/// A metrics collection from `source` (`metrics_api`, `kubelet`, ...) succeeded or failed.
pub fn collection(source: &str, ok: bool) {
    let outcome = if ok { "success" } else { "failure" };
    families()
        .collections
        .get_or_create(&labels(&[("source", source), ("outcome", outcome)]))
        .inc();
}

/// A single HTTP operation answered by `path`: `compiled`, `declined` or `executor`.
pub fn compiled_read(path: &'static str) {
    families()
        .compiled_reads
        .get_or_create(&labels(&[("path", path)]))
        .inc();
}

/// An operation refused by `limit` (`rate_limit` or `persisted_operation`).
pub fn refused(limit: &'static str) {
    families()
        .refusals
        .get_or_create(&labels(&[("limit", limit)]))
        .inc();
}
