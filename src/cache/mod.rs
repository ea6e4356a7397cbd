//! Cross-request caches (moka) with the TTLs of shared/DATA-MODEL.md, "Caching Strategy":
//!
//! | cache (metrics label)   | TTL   | what it holds                                              |
//! |-------------------------|-------|------------------------------------------------------------|
//! | `registry_server_lists` | 5 min | pages of `Registry.servers` and their `totalCount`         |
//! | `instance_status`       | 30 s  | instances by id, `Server.instances`, `Cluster.instances`   |
//! | `monitoring_metrics`    | 15 s  | `Instance.latestMetrics`, `Instance.metrics` pages, counts |
//! | `deployment_logs`       | 2 min | `Deployment.logs` of finished operations                   |
//! | `graphql_responses`     | the shortest of the above among what an answer reads | whole answers of read-only requests (see [`crate::cache::responses`]) |
//!
//! Rules:
//! - **Scoped.** Every key carries the caller's [`AuthScope`]; an answer cached for one scope is
//!   never served to another.
//! - **Around the loaders, never inside them.** A miss goes through the request's `DataLoader`, so
//!   the misses of one GraphQL level still make one batched statement. The caches are
//!   `moka::sync` caches on purpose: a lookup never yields, so every resolver of a level reaches
//!   the loader within the same poll (an awaiting lookup could push some keys into a later batch).
//! - **Invalidated at once by writes.** Every committed change of a registry, instance,
//!   deployment or monitoring sample is announced by the database (`NOTIFY hivegraph_changes`,
//!   see the `change_notifications` migration), whichever process or code path made it;
//!   the pubsub hub's listener ([`crate::pubsub::PubSub`]) drops the affected entries within milliseconds. A
//!   sync commit updates its registry row, so it invalidates that registry's server lists too.
//!   Writers in this process may also call the `invalidate_*` methods after committing, for an
//!   invalidation that is complete before they answer (the registry mutations do). A load that
//!   was running when an invalidation happened is served once but not cached (each cache keeps a
//!   generation counter), so a stale read is never cached after the write that made it stale.
//!   While the listener is reconnecting, notifications may be missed: every cache is emptied when
//!   it connects again.
//! - **Fenced by the registry's last sync.** Server-list keys include the registry's
//!   `last_sync_at` as the reader loaded it, so a sync committed by *another* gateway process
//!   is seen by the next read that loads the registry row. Whole answers
//!   ([`crate::cache::responses`]) are served without reading anything, so they follow such a
//!   sync when its notification arrives (milliseconds).
//! - Open deployment operations' logs are not cached: they are still growing.
//!
//! Hit and miss counts, and the hit ratio, are exported on `/metrics` as
//! `hivegraph_cache_hits_total`, `hivegraph_cache_misses_total` and `hivegraph_cache_hit_ratio`,
//! labelled by cache.

pub mod responses;

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use chrono::{DateTime, Utc};
use dataloaders::models::{DeploymentLogRow, InstanceRow, MetricsRow, ServerRow};
use dataloaders::{
    ChildPage, CountOf, InstanceKey, InstancesOfCluster, InstancesOfServer,
    LatestMetricsOfInstance, LogsOfDeployment, MetricsOfInstance, ReadError, Reader,
    ServersOfRegistry, Width,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use uuid::Uuid;

use crate::changes::Topic;
use responses::{Kind, ResponseCache};

/// How long a registry's server list is cached.
pub const SERVER_LISTS_TTL: Duration = Duration::from_secs(5 * 60);
/// How long instance status is cached.
pub const INSTANCE_STATUS_TTL: Duration = Duration::from_secs(30);
/// How long monitoring metrics are cached.
pub const MONITORING_METRICS_TTL: Duration = Duration::from_secs(15);
/// How long deployment logs are cached.
pub const DEPLOYMENT_LOGS_TTL: Duration = Duration::from_secs(2 * 60);

/// The most entries each underlying cache holds.
const MAX_ENTRIES: u64 = 50_000;

/// Whose view of the data an answer is: cached answers are shared only within one scope.
///
/// The scope must encode every fact that authorization uses to decide what a caller may read
/// (whether they are authenticated, their roles and their readable namespaces, for example
/// `auth=true;roles=viewer;ns=team-a,team-b`; see [`AuthScope::of`]). Two callers
/// with equal scopes must be allowed to see exactly the same answers. Prefer such a canonical
/// description over the user's identity, so that callers with the same rights share entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthScope(Arc<str>);

impl AuthScope {
    /// The scope of every caller while authentication is off.
    pub fn local() -> Self {
        AuthScope(Arc::from("local"))
    }

    /// A scope from its canonical description (see the type's documentation).
    pub fn new(canonical: impl Into<Arc<str>>) -> Self {
        AuthScope(canonical.into())
    }

    /// The scope of a caller: what authorization decides reads by: whether the caller is
    /// authenticated, their roles and their readable namespaces (sorted). The subject is left out
    /// on purpose, so that equal rights share entries.
    pub fn of(principal: &crate::auth::Principal, access: &crate::authz::NamespaceAccess) -> Self {
        let roles: Vec<String> = principal
            .roles
            .iter()
            .map(|r| format!("{r:?}").to_lowercase())
            .collect();
        AuthScope::new(format!(
            "auth={};roles={};ns={}",
            principal.authenticated,
            roles.join(","),
            access.canonical()
        ))
    }

    /// The canonical description.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A cache key: the caller's scope plus the lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scoped<K> {
    scope: AuthScope,
    key: K,
}

/// Labels of the cache metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `registry_server_lists`, `instance_status`, `monitoring_metrics`, `deployment_logs`,
    /// `graphql_responses`, `cluster_instance_state` or `pod_logs`.
    pub cache: String,
}

/// The cache metric families, registered in the gateway's registry by
/// [`crate::metrics::Metrics::register_caches`].
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Lookups answered from a cache.
    pub hits: Family<CacheLabels, Counter>,
    /// Lookups that went to the database.
    pub misses: Family<CacheLabels, Counter>,
    /// hits / (hits + misses) since start.
    pub hit_ratio: Family<CacheLabels, Gauge<f64, AtomicU64>>,
}

/// Hit and miss counts of one named cache (shared by the underlying caches of that name).
pub(crate) struct CacheStats {
    labels: CacheLabels,
    hits: AtomicU64,
    misses: AtomicU64,
    metrics: CacheMetrics,
}

impl CacheStats {
    pub(crate) fn new(name: &str, metrics: &CacheMetrics) -> Arc<Self> {
        Arc::new(CacheStats {
            labels: CacheLabels {
                cache: name.to_string(),
            },
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            metrics: metrics.clone(),
        })
    }

    pub(crate) fn record(&self, hit: bool) {
        let (hits, misses) = if hit {
            self.metrics.hits.get_or_create(&self.labels).inc();
            (
                self.hits.fetch_add(1, Ordering::Relaxed) + 1,
                self.misses.load(Ordering::Relaxed),
            )
        } else {
            self.metrics.misses.get_or_create(&self.labels).inc();
            (
                self.hits.load(Ordering::Relaxed),
                self.misses.fetch_add(1, Ordering::Relaxed) + 1,
            )
        };
        self.metrics
            .hit_ratio
            .get_or_create(&self.labels)
            .set(hits as f64 / (hits + misses) as f64);
    }
}

/// One moka cache with a TTL, scoped keys, hit statistics and a race-safe invalidation.
struct TtlCache<K, V> {
    cache: moka::sync::Cache<Scoped<K>, V>,
    /// Bumped by every invalidation; a load that saw another value is not cached.
    generation: AtomicU64,
    stats: Arc<CacheStats>,
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(ttl: Duration, stats: &Arc<CacheStats>) -> Self {
        TtlCache {
            cache: moka::sync::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(MAX_ENTRIES)
                .support_invalidation_closures()
                .build(),
            generation: AtomicU64::new(0),
            stats: stats.clone(),
        }
    }

    /// The cached value, or `load()`'s, which is then cached (unless an invalidation happened
    /// meanwhile).
    async fn get_or_load<E, Fut>(
        &self,
        scope: &AuthScope,
        key: K,
        load: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let key = Scoped {
            scope: scope.clone(),
            key,
        };
        if let Some(v) = self.cache.get(&key) {
            self.stats.record(true);
            return Ok(v);
        }
        self.stats.record(false);
        let generation = self.generation.load(Ordering::Acquire);
        let value = load().await?;
        if generation == self.generation.load(Ordering::Acquire) {
            self.cache.insert(key, value.clone());
        }
        Ok(value)
    }

    /// The cached values of `keys`, the missing ones loaded together by `load` (which answers
    /// them in order) and then cached as in [`TtlCache::get_or_load`].
    async fn get_or_load_many<E, Fut>(
        &self,
        scope: &AuthScope,
        keys: Vec<K>,
        load: impl FnOnce(Vec<K>) -> Fut,
    ) -> Result<Vec<V>, E>
    where
        Fut: Future<Output = Result<Vec<V>, E>>,
    {
        let scoped = |key: &K| Scoped {
            scope: scope.clone(),
            key: key.clone(),
        };
        let mut found: Vec<Option<V>> = keys.iter().map(|k| self.cache.get(&scoped(k))).collect();
        let missing: Vec<K> = keys
            .iter()
            .zip(&found)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for v in &found {
            self.stats.record(v.is_some());
        }
        if !missing.is_empty() {
            let generation = self.generation.load(Ordering::Acquire);
            let mut loaded = load(missing.clone()).await?.into_iter();
            let fresh = generation == self.generation.load(Ordering::Acquire);
            for (slot, key) in found.iter_mut().filter(|v| v.is_none()).zip(&missing) {
                let value = loaded.next();
                if fresh && let Some(v) = &value {
                    self.cache.insert(scoped(key), v.clone());
                }
                *slot = value;
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Drops every entry (of every scope) whose key and value satisfy `predicate`.
    fn invalidate_if(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if self
            .cache
            .invalidate_entries_if(move |k, v| predicate(&k.key, v))
            .is_err()
        {
            // Only possible if closures were not enabled at build time; fail safe.
            self.cache.invalidate_all();
        }
    }

    fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

/// Rows shared by the cache and its readers.
pub type Rows<T> = Arc<Vec<T>>;
/// A page of a registry's servers: registry, its `last_sync_at`, page.
pub type ServerPageKey = (Uuid, Option<DateTime<Utc>>, ChildPage);

struct Inner {
    /// When false, every read goes to the database (`HIVEGRAPH_READ_CACHES=off`).
    enabled: bool,
    /// The last change notification applied (diagnostics, and tests waiting for the listener).
    last_change: std::sync::Mutex<Option<Topic>>,
    metrics: CacheMetrics,
    /// Registry server lists: (registry, its last_sync_at, page) → servers.
    server_pages: TtlCache<ServerPageKey, Rows<ServerRow>>,
    /// Registry server counts: (registry, its last_sync_at) → count.
    server_counts: TtlCache<(Uuid, Option<DateTime<Utc>>), i64>,
    /// Instance status: by id.
    instances: TtlCache<Uuid, Option<Arc<InstanceRow>>>,
    /// Instance status: pages of a server's instances.
    instances_of_server: TtlCache<InstancesOfServer, Rows<InstanceRow>>,
    /// Instance status: pages of a cluster's instances.
    instances_of_cluster: TtlCache<InstancesOfCluster, Rows<InstanceRow>>,
    /// Instance status: counts per server or cluster.
    instance_counts: TtlCache<CountOf, i64>,
    /// Monitoring metrics: the newest sample per instance.
    latest_metrics: TtlCache<Uuid, Option<MetricsRow>>,
    /// Monitoring metrics: pages of samples.
    metrics_pages: TtlCache<MetricsOfInstance, Rows<MetricsRow>>,
    /// Monitoring metrics: sample counts per instance.
    metrics_counts: TtlCache<Uuid, i64>,
    /// Deployment logs: a finished operation's lines.
    log_pages: TtlCache<LogsOfDeployment, Rows<DeploymentLogRow>>,
    /// Whole answers of read-only requests (see [`crate::cache::responses`]).
    responses: ResponseCache,
}

/// A cache a domain keeps for itself, not scoped by caller (instance state as the cluster
/// reports it, pod logs), made by [`Caches::domain`]: metered under its name like every cache,
/// and holding nothing when the read caches are off.
pub struct DomainCache<K, V> {
    cache: Option<moka::future::Cache<K, V>>,
    stats: Arc<CacheStats>,
}

impl<K, V> DomainCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The cached value, counted as a hit or a miss.
    pub async fn get(&self, key: &K) -> Option<V> {
        let found = match &self.cache {
            Some(c) => c.get(key).await,
            None => None,
        };
        self.stats.record(found.is_some());
        found
    }

    /// Stores a value (nothing when the caches are off).
    pub async fn insert(&self, key: K, value: V) {
        if let Some(c) = &self.cache {
            c.insert(key, value).await;
        }
    }

    /// Drops a value.
    pub async fn invalidate(&self, key: &K) {
        if let Some(c) = &self.cache {
            c.invalidate(key).await;
        }
    }
}

/// Weighs a [`DomainCache`] entry (its capacity is then a total weight, e.g. bytes).
pub type Weigher<K, V> = fn(&K, &V) -> u32;

/// The gateway's caches. Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct Caches {
    inner: Arc<Inner>,
}

impl Default for Caches {
    fn default() -> Self {
        Self::new()
    }
}

impl Caches {
    /// Caches that never hold anything (`HIVEGRAPH_READ_CACHES=off`, see `ServeConfig`): every
    /// read goes to the database.
    pub fn disabled() -> Self {
        Self::build(false)
    }

    /// Whether the caches are in use.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Empty caches with the data model's TTLs.
    pub fn new() -> Self {
        Self::build(true)
    }

    fn build(enabled: bool) -> Self {
        let metrics = CacheMetrics::default();
        let lists = CacheStats::new("registry_server_lists", &metrics);
        let status = CacheStats::new("instance_status", &metrics);
        let samples = CacheStats::new("monitoring_metrics", &metrics);
        let logs = CacheStats::new("deployment_logs", &metrics);
        Caches {
            inner: Arc::new(Inner {
                enabled,
                responses: ResponseCache::new(enabled, &metrics),
                last_change: std::sync::Mutex::new(None),
                server_pages: TtlCache::new(SERVER_LISTS_TTL, &lists),
                server_counts: TtlCache::new(SERVER_LISTS_TTL, &lists),
                instances: TtlCache::new(INSTANCE_STATUS_TTL, &status),
                instances_of_server: TtlCache::new(INSTANCE_STATUS_TTL, &status),
                instances_of_cluster: TtlCache::new(INSTANCE_STATUS_TTL, &status),
                instance_counts: TtlCache::new(INSTANCE_STATUS_TTL, &status),
                latest_metrics: TtlCache::new(MONITORING_METRICS_TTL, &samples),
                metrics_pages: TtlCache::new(MONITORING_METRICS_TTL, &samples),
                metrics_counts: TtlCache::new(MONITORING_METRICS_TTL, &samples),
                log_pages: TtlCache::new(DEPLOYMENT_LOGS_TTL, &logs),
                metrics,
            }),
        }
    }

    /// A cache for a domain's own use, metered as `name`: entries live `ttl`, at most
    /// `capacity` of them (or `capacity` total weight with a `weigher`).
    pub fn domain<K, V>(
        &self,
        name: &str,
        ttl: Duration,
        capacity: u64,
        weigher: Option<Weigher<K, V>>,
    ) -> DomainCache<K, V>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let cache = self.inner.enabled.then(|| {
            let b = moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl);
            match weigher {
                Some(w) => b.weigher(w).build(),
                None => b.build(),
            }
        });
        DomainCache {
            cache,
            stats: CacheStats::new(name, &self.inner.metrics),
        }
    }

    /// The cache of whole answers.
    pub fn responses(&self) -> &ResponseCache {
        &self.inner.responses
    }

    /// The metric families of the caches.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// Registers the caches' hit, miss and hit-ratio metrics (labelled by cache) on `/metrics`.
    pub fn register_metrics(&self, metrics: &crate::metrics::Metrics) {
        let m = &self.inner.metrics;
        metrics.register(
            "cache_hits",
            "Lookups answered from a read cache",
            m.hits.clone(),
        );
        metrics.register(
            "cache_misses",
            "Lookups a read cache passed to the database",
            m.misses.clone(),
        );
        metrics.register(
            "cache_hit_ratio",
            "Hits divided by lookups of a read cache, since start",
            m.hit_ratio.clone(),
        );
    }

    /// Approximate number of cached entries, over every cache and scope.
    pub fn entry_count(&self) -> u64 {
        let i = &self.inner;
        i.server_pages.entry_count()
            + i.server_counts.entry_count()
            + i.instances.entry_count()
            + i.instances_of_server.entry_count()
            + i.instances_of_cluster.entry_count()
            + i.instance_counts.entry_count()
            + i.latest_metrics.entry_count()
            + i.metrics_pages.entry_count()
            + i.metrics_counts.entry_count()
            + i.log_pages.entry_count()
            + i.responses.entry_count()
    }

    /// A registry's servers changed (sync committed) or the registry was updated or deleted:
    /// drops its cached server lists and counts, in every scope.
    pub fn invalidate_registry(&self, registry_id: Uuid) {
        self.inner.responses.changed(Kind::Registry);
        self.inner
            .server_pages
            .invalidate_if(move |k, _| k.0 == registry_id);
        self.inner
            .server_counts
            .invalidate_if(move |k, _| k.0 == registry_id);
    }

    /// An instance was created, changed or deleted: drops it, the instance lists and counts of
    /// its server and cluster, and any list that holds it, in every scope.
    pub fn invalidate_instance(&self, instance_id: Uuid, server_id: Uuid, cluster_id: Uuid) {
        let i = &self.inner;
        i.responses.changed(Kind::Instance);
        i.instances.invalidate_if(move |k, _| *k == instance_id);
        i.instances_of_server.invalidate_if(move |k, v| {
            k.server_id == server_id || v.iter().any(|r| r.id == instance_id)
        });
        i.instances_of_cluster.invalidate_if(move |k, v| {
            k.cluster_id == cluster_id || v.iter().any(|r| r.id == instance_id)
        });
        i.instance_counts.invalidate_if(move |k, _| {
            matches!(k, CountOf::InstancesOfServer(id) if *id == server_id)
                || matches!(k, CountOf::InstancesOfCluster(id) if *id == cluster_id)
        });
    }

    /// New monitoring samples of an instance were stored.
    pub fn invalidate_metrics(&self, instance_id: Uuid) {
        let i = &self.inner;
        i.responses.changed(Kind::Metrics);
        i.latest_metrics
            .invalidate_if(move |k, _| *k == instance_id);
        i.metrics_pages
            .invalidate_if(move |k, _| k.instance_id == instance_id);
        i.metrics_counts
            .invalidate_if(move |k, _| *k == instance_id);
    }

    /// Log lines of a deployment operation were written.
    pub fn invalidate_deployment_logs(&self, deployment_id: Uuid) {
        let i = &self.inner;
        i.responses.changed(Kind::Deployment);
        i.log_pages
            .invalidate_if(move |k, _| k.deployment_id == deployment_id);
    }

    /// Applies one change notification of the database (called by [`crate::pubsub::PubSub`]).
    pub fn changed(&self, topic: Topic) {
        match topic {
            Topic::Registry(id) => self.invalidate_registry(id),
            Topic::Instance(id) => {
                // The notification names the instance only; a new instance belongs in lists not
                // cached with it, so every instance list and count goes (they live 30 s anyway).
                let i = &self.inner;
                i.responses.changed(Kind::Instance);
                i.instances.invalidate_if(move |k, _| *k == id);
                i.instances_of_server.invalidate_all();
                i.instances_of_cluster.invalidate_all();
                i.instance_counts.invalidate_all();
            }
            Topic::Deployment(id) => self.invalidate_deployment_logs(id),
            Topic::Metrics(instance_id) => self.invalidate_metrics(instance_id),
        }
        if let Ok(mut last) = self.inner.last_change.lock() {
            *last = Some(topic);
        }
    }

    /// The last change notification applied, if any.
    pub fn last_change(&self) -> Option<Topic> {
        self.inner.last_change.lock().ok().and_then(|l| *l)
    }

    /// Drops everything.
    pub fn invalidate_all(&self) {
        let i = &self.inner;
        i.responses.changed_all();
        i.server_pages.invalidate_all();
        i.server_counts.invalidate_all();
        i.instances.invalidate_all();
        i.instances_of_server.invalidate_all();
        i.instances_of_cluster.invalidate_all();
        i.instance_counts.invalidate_all();
        i.latest_metrics.invalidate_all();
        i.metrics_pages.invalidate_all();
        i.metrics_counts.invalidate_all();
        i.log_pages.invalidate_all();
    }
}

/// Reads of one request through the caches: a hit is answered from memory, a miss goes through
/// the request's batching loader. Without caches (a schema built without services) every read
/// goes to the loader.
pub struct CachedReads<'a> {
    caches: Option<&'a Caches>,
    scope: &'a AuthScope,
    loader: &'a DataLoader<Reader>,
}

impl<'a> CachedReads<'a> {
    /// Reads through `caches` (when given and enabled) in `scope`; misses go to `loader`.
    pub fn new(
        caches: Option<&'a Caches>,
        scope: &'a AuthScope,
        loader: &'a DataLoader<Reader>,
    ) -> Self {
        CachedReads {
            caches: caches.filter(|c| c.enabled()),
            scope,
            loader,
        }
    }

    /// A read through the cache `pick` chooses, or straight to the loader without caches.
    async fn through<K, V, Fut>(
        &self,
        pick: impl FnOnce(&Inner) -> &TtlCache<K, V>,
        key: K,
        load: impl FnOnce() -> Fut,
    ) -> Result<V, ReadError>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<V, ReadError>>,
    {
        match self.caches {
            Some(c) => pick(&c.inner).get_or_load(self.scope, key, load).await,
            None => load().await,
        }
    }

    /// Reads of many keys at once through the cache `pick` chooses (or straight to `load`
    /// without caches): one statement for every key the cache does not hold. `load` answers the
    /// keys it is given in order.
    async fn through_many<K, V, Fut>(
        &self,
        pick: impl FnOnce(&Inner) -> &TtlCache<K, V>,
        keys: Vec<K>,
        load: impl FnOnce(Vec<K>) -> Fut,
    ) -> Result<Vec<V>, ReadError>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<V>, ReadError>>,
    {
        match self.caches {
            Some(c) => {
                pick(&c.inner)
                    .get_or_load_many(self.scope, keys, load)
                    .await
            }
            None => load(keys).await,
        }
    }

    /// The width of a read of many keys: the rows a cache keeps are whole, so a narrow read
    /// goes to the database as asked only when there is no cache (see [`Width`]).
    fn width(&self, asked: Width) -> Width {
        if self.caches.is_some() {
            Width::Whole
        } else {
            asked
        }
    }

    /// Pages of rows, as the cache keeps them.
    fn pages<R>(pages: Vec<Vec<R>>) -> Vec<Rows<R>> {
        pages.into_iter().map(Arc::new).collect()
    }

    /// Pages of many registries' servers at once (see [`CachedReads::registry_servers`]), read
    /// with one statement and without the per-key batching of the request's `DataLoader`.
    pub async fn registry_servers_many(
        &self,
        keys: Vec<ServerPageKey>,
        width: Width,
    ) -> Result<Vec<Rows<ServerRow>>, ReadError> {
        let width = self.width(width);
        let load = |keys: Vec<ServerPageKey>| async move {
            let keys: Vec<ServersOfRegistry> = keys
                .into_iter()
                .map(|(registry_id, _, page)| ServersOfRegistry { registry_id, page })
                .collect();
            Ok(Self::pages(
                self.loader.loader().child_pages(&keys, width).await?,
            ))
        };
        self.through_many(|i| &i.server_pages, keys, load).await
    }

    /// Pages of many servers' instances at once.
    pub async fn instances_of_servers(
        &self,
        keys: Vec<InstancesOfServer>,
        width: Width,
    ) -> Result<Vec<Rows<InstanceRow>>, ReadError> {
        let width = self.width(width);
        let load = |keys: Vec<InstancesOfServer>| async move {
            Ok(Self::pages(
                self.loader.loader().child_pages(&keys, width).await?,
            ))
        };
        self.through_many(|i| &i.instances_of_server, keys, load)
            .await
    }

    /// The newest sample of many instances at once.
    pub async fn latest_metrics_many(
        &self,
        instance_ids: Vec<Uuid>,
        width: Width,
    ) -> Result<Vec<Option<MetricsRow>>, ReadError> {
        let width = self.width(width);
        let load =
            |ids: Vec<Uuid>| async move { self.loader.loader().latest_metrics(ids, width).await };
        self.through_many(|i| &i.latest_metrics, instance_ids, load)
            .await
    }

    /// A page of a registry's servers. `synced_at` is the registry's `last_sync_at` as loaded by
    /// this request: a newer sync makes older entries unreachable.
    pub async fn registry_servers(
        &self,
        registry_id: Uuid,
        synced_at: Option<DateTime<Utc>>,
        page: ChildPage,
    ) -> Result<Rows<ServerRow>, ReadError> {
        let load = || async {
            let key = ServersOfRegistry {
                registry_id,
                page: page.clone(),
            };
            Ok(Arc::new(
                self.loader.load_one(key).await?.unwrap_or_default(),
            ))
        };
        self.through(
            |i| &i.server_pages,
            (registry_id, synced_at, page.clone()),
            load,
        )
        .await
    }

    /// The number of a registry's servers (see [`CachedReads::registry_servers`]).
    pub async fn registry_server_count(
        &self,
        registry_id: Uuid,
        synced_at: Option<DateTime<Utc>>,
    ) -> Result<i64, ReadError> {
        let load = || CountOf::ServersOfRegistry(registry_id).load(self.loader);
        self.through(|i| &i.server_counts, (registry_id, synced_at), load)
            .await
    }

    /// An instance by id.
    pub async fn instance(&self, id: Uuid) -> Result<Option<Arc<InstanceRow>>, ReadError> {
        let load = || async { Ok(self.loader.load_one(InstanceKey(id)).await?.map(Arc::new)) };
        self.through(|i| &i.instances, id, load).await
    }

    /// A page of a server's instances.
    pub async fn instances_of_server(
        &self,
        key: InstancesOfServer,
    ) -> Result<Rows<InstanceRow>, ReadError> {
        let load = || async {
            Ok(Arc::new(
                self.loader.load_one(key.clone()).await?.unwrap_or_default(),
            ))
        };
        self.through(|i| &i.instances_of_server, key.clone(), load)
            .await
    }

    /// A page of a cluster's instances.
    pub async fn instances_of_cluster(
        &self,
        key: InstancesOfCluster,
    ) -> Result<Rows<InstanceRow>, ReadError> {
        let load = || async {
            Ok(Arc::new(
                self.loader.load_one(key.clone()).await?.unwrap_or_default(),
            ))
        };
        self.through(|i| &i.instances_of_cluster, key.clone(), load)
            .await
    }

    /// The newest monitoring sample of an instance.
    pub async fn latest_metrics(&self, instance_id: Uuid) -> Result<Option<MetricsRow>, ReadError> {
        let load = || self.loader.load_one(LatestMetricsOfInstance(instance_id));
        self.through(|i| &i.latest_metrics, instance_id, load).await
    }

    /// A page of an instance's monitoring samples.
    pub async fn metrics(&self, key: MetricsOfInstance) -> Result<Rows<MetricsRow>, ReadError> {
        let load = || async {
            Ok(Arc::new(
                self.loader.load_one(key.clone()).await?.unwrap_or_default(),
            ))
        };
        self.through(|i| &i.metrics_pages, key.clone(), load).await
    }

    /// A page of an operation's log lines; cached only when the operation has finished.
    pub async fn deployment_logs(
        &self,
        key: LogsOfDeployment,
        finished: bool,
    ) -> Result<Rows<DeploymentLogRow>, ReadError> {
        let load = || async {
            Ok(Arc::new(
                self.loader.load_one(key.clone()).await?.unwrap_or_default(),
            ))
        };
        if !finished {
            return load().await;
        }
        self.through(|i| &i.log_pages, key.clone(), load).await
    }

    /// The size of a child list, through the cache of its kind (operation and log counts are
    /// not cached).
    pub async fn count(&self, key: CountOf) -> Result<i64, ReadError> {
        let load = || key.load(self.loader);
        let Some(c) = self.caches else {
            return load().await;
        };
        match key {
            CountOf::InstancesOfServer(_) | CountOf::InstancesOfCluster(_) => {
                c.inner
                    .instance_counts
                    .get_or_load(self.scope, key, load)
                    .await
            }
            CountOf::MetricsOfInstance(id) => {
                c.inner
                    .metrics_counts
                    .get_or_load(self.scope, id, load)
                    .await
            }
            _ => load().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn stats() -> Arc<CacheStats> {
        CacheStats::new("test", &CacheMetrics::default())
    }

    async fn counted(loads: &AtomicUsize, v: i64) -> Result<i64, ()> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(v)
    }

    #[tokio::test]
    async fn domain_caches_are_metered_and_obey_the_off_switch() {
        for (caches, kept) in [(Caches::new(), true), (Caches::disabled(), false)] {
            let c = caches.domain::<u32, u32>("pod_logs", Duration::from_secs(60), 10, None);
            assert_eq!(c.get(&1).await, None);
            c.insert(1, 7).await;
            assert_eq!(c.get(&1).await, kept.then_some(7));
            c.invalidate(&1).await;
            assert_eq!(c.get(&1).await, None);
            let labels = CacheLabels {
                cache: "pod_logs".into(),
            };
            let m = caches.metrics();
            assert_eq!(m.hits.get_or_create(&labels).get(), u64::from(kept));
            assert_eq!(m.misses.get_or_create(&labels).get(), 3 - u64::from(kept));
        }
    }

    #[tokio::test]
    async fn answers_are_never_shared_across_scopes() {
        let cache: TtlCache<Uuid, i64> = TtlCache::new(Duration::from_secs(60), &stats());
        let loads = AtomicUsize::new(0);
        let id = Uuid::new_v4();
        let alice = AuthScope::new("roles=viewer;ns=a");
        let bob = AuthScope::new("roles=viewer;ns=b");
        assert_eq!(
            cache.get_or_load(&alice, id, || counted(&loads, 1)).await,
            Ok(1)
        );
        assert_eq!(
            cache.get_or_load(&alice, id, || counted(&loads, 9)).await,
            Ok(1)
        );
        assert_eq!(loads.load(Ordering::SeqCst), 1, "same scope: a hit");
        assert_eq!(
            cache.get_or_load(&bob, id, || counted(&loads, 2)).await,
            Ok(2)
        );
        assert_eq!(loads.load(Ordering::SeqCst), 2, "other scope: a miss");
        assert_eq!(cache.stats.hits.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats.misses.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let cache: TtlCache<Uuid, i64> = TtlCache::new(Duration::from_millis(50), &stats());
        let loads = AtomicUsize::new(0);
        let id = Uuid::new_v4();
        let s = AuthScope::local();
        cache
            .get_or_load(&s, id, || counted(&loads, 1))
            .await
            .unwrap();
        cache
            .get_or_load(&s, id, || counted(&loads, 1))
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        cache
            .get_or_load(&s, id, || counted(&loads, 1))
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn invalidation_is_immediate_and_selective_in_every_scope() {
        let cache: TtlCache<Uuid, i64> = TtlCache::new(Duration::from_secs(60), &stats());
        let loads = AtomicUsize::new(0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let scopes = [AuthScope::local(), AuthScope::new("other")];
        for s in &scopes {
            for id in [a, b] {
                cache
                    .get_or_load(s, id, || counted(&loads, 1))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(loads.load(Ordering::SeqCst), 4);
        cache.invalidate_if(move |k, _| *k == a);
        for s in &scopes {
            cache
                .get_or_load(s, a, || counted(&loads, 2))
                .await
                .unwrap();
            cache
                .get_or_load(s, b, || counted(&loads, 2))
                .await
                .unwrap();
        }
        assert_eq!(loads.load(Ordering::SeqCst), 6, "only `a` was reloaded");
    }

    #[tokio::test]
    async fn a_load_racing_an_invalidation_is_not_cached() {
        let cache: TtlCache<Uuid, i64> = TtlCache::new(Duration::from_secs(60), &stats());
        let id = Uuid::new_v4();
        let s = AuthScope::local();
        // The write commits and invalidates while the read is in flight.
        let v = cache
            .get_or_load(&s, id, || async {
                cache.invalidate_if(|_, _| true);
                Ok::<_, ()>(1)
            })
            .await;
        assert_eq!(v, Ok(1), "the racing read is still answered");
        let loads = AtomicUsize::new(0);
        assert_eq!(
            cache.get_or_load(&s, id, || counted(&loads, 2)).await,
            Ok(2)
        );
        assert_eq!(loads.load(Ordering::SeqCst), 1, "but it was not cached");
    }

    #[tokio::test]
    async fn registry_invalidation_spares_other_registries() {
        let caches = Caches::new();
        let s = AuthScope::local();
        let (r1, r2) = (Uuid::new_v4(), Uuid::new_v4());
        let loads = AtomicUsize::new(0);
        for r in [r1, r2] {
            caches
                .inner
                .server_counts
                .get_or_load(&s, (r, None), || counted(&loads, 3))
                .await
                .unwrap();
        }
        caches.invalidate_registry(r1);
        for r in [r1, r2] {
            caches
                .inner
                .server_counts
                .get_or_load(&s, (r, None), || counted(&loads, 3))
                .await
                .unwrap();
        }
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        // A sync committed elsewhere moves last_sync_at: the old entry is not reachable.
        caches
            .inner
            .server_counts
            .get_or_load(&s, (r2, Some(Utc::now())), || counted(&loads, 4))
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn change_notifications_drop_the_entries_they_name() {
        let caches = Caches::new();
        let s = AuthScope::local();
        let (reg, inst) = (Uuid::new_v4(), Uuid::new_v4());
        let loads = AtomicUsize::new(0);
        let i = &caches.inner;
        i.server_counts
            .get_or_load(&s, (reg, None), || counted(&loads, 1))
            .await
            .unwrap();
        i.metrics_counts
            .get_or_load(&s, inst, || counted(&loads, 1))
            .await
            .unwrap();
        caches.changed(Topic::Registry(reg));
        caches.changed(Topic::Metrics(inst));
        assert_eq!(caches.last_change(), Some(Topic::Metrics(inst)));
        i.server_counts
            .get_or_load(&s, (reg, None), || counted(&loads, 1))
            .await
            .unwrap();
        i.metrics_counts
            .get_or_load(&s, inst, || counted(&loads, 1))
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 4, "both were reloaded");
    }

    #[test]
    fn caches_can_be_turned_off() {
        assert!(Caches::new().enabled());
        assert!(!Caches::disabled().enabled());
    }

    #[test]
    fn hit_ratio_is_exported() {
        let metrics = CacheMetrics::default();
        let st = CacheStats::new("instance_status", &metrics);
        st.record(false);
        st.record(true);
        st.record(true);
        st.record(true);
        let labels = CacheLabels {
            cache: "instance_status".into(),
        };
        assert_eq!(metrics.hits.get_or_create(&labels).get(), 3);
        assert_eq!(metrics.misses.get_or_create(&labels).get(), 1);
        assert_eq!(metrics.hit_ratio.get_or_create(&labels).get(), 0.75);
    }
}
