//! Whole answers of read-only GraphQL requests, cached as the bytes sent to the client.
//!
//! The row caches of [`crate::cache`] spare the database, but every request still runs the
//! executor over every field and serializes the tree again; for a nested page of a few thousand
//! objects that is most of the work. This cache keeps the serialized `data` of an answer and
//! serves it again to the same request from the same scope, while none of the data it was built
//! from changed.
//!
//! - **What is cached.** A single (not batched) query over the types whose every change the
//!   database announces: registries and their servers, instances, deployment operations and
//!   monitoring samples (see the `change_notifications` migration), plus their connections,
//!   edges and leaf values. An operation that reaches anything else (clusters, audit records,
//!   grants, pod logs, metrics rollups, deployment log lines, introspection) is never cached.
//!   Which types an operation reaches is read from the document against the schema, once per
//!   document.
//! - **Key.** The caller's [`AuthScope`], the operation name, the document, the variables and
//!   the request's extensions: two callers share an answer only when authorization would give
//!   them the same one.
//! - **Invalidation.** One generation counter per kind of data (registries, instances,
//!   deployments, monitoring samples). Every change notification, every invalidation by a writer
//!   of this process and every mutation executed here advances the counters of what it touched;
//!   an answer is served only while the counters of the kinds it reads are where they were when
//!   its execution *started*, so an answer computed across a write is never served.
//! - **TTL.** The shortest TTL of the data model's caches among the kinds the answer reads
//!   (monitoring samples 15 s, instance status 30 s, deployments 2 min, server lists 5 min), as
//!   a bound for changes nobody announces.
//! - **Rate limit.** An answer served from the cache is charged the points its execution cost,
//!   and carries a fresh `extensions.rateLimit`.
//!
//! `HIVEGRAPH_READ_CACHES=off` turns this cache off with the others.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, TypeKind,
    TypeSystemDefinition,
};
use axum::body::Bytes;

use super::{
    AuthScope, CacheMetrics, CacheStats, DEPLOYMENT_LOGS_TTL, INSTANCE_STATUS_TTL,
    MONITORING_METRICS_TTL, SERVER_LISTS_TTL,
};

/// A kind of data whose changes the database announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Registries and their servers (a sync commits by updating its registry row).
    Registry = 0,
    /// Instances.
    Instance = 1,
    /// Deployment operations.
    Deployment = 2,
    /// Monitoring samples.
    Metrics = 3,
}

const KINDS: [Kind; 4] = [
    Kind::Registry,
    Kind::Instance,
    Kind::Deployment,
    Kind::Metrics,
];

impl Kind {
    fn ttl(self) -> Duration {
        match self {
            Kind::Registry => SERVER_LISTS_TTL,
            Kind::Instance => INSTANCE_STATUS_TTL,
            Kind::Deployment => DEPLOYMENT_LOGS_TTL,
            Kind::Metrics => MONITORING_METRICS_TTL,
        }
    }

    /// The kind of the data behind a schema type; `Some(None)` for types that hold no stored
    /// data of their own (page info); `None` for types that may not be cached.
    fn of_type(name: &str) -> Option<Option<Kind>> {
        Some(Some(match name {
            "Registry"
            | "RegistryConnection"
            | "RegistryEdge"
            | "RegistryAuthSummary"
            | "SyncReport"
            | "SkippedEntry"
            | "Server"
            | "ServerConnection"
            | "ServerEdge"
            | "ServerFacets"
            | "FacetCount" => Kind::Registry,
            "Instance" | "InstanceConnection" | "InstanceEdge" | "InstanceEvent" | "Replicas"
            | "InstanceUpgrade" | "EnvChanges" => Kind::Instance,
            "Deployment"
            | "DeploymentConnection"
            | "DeploymentEdge"
            | "DeploymentStep"
            | "DeploymentErrorDetail" => Kind::Deployment,
            "MonitoringMetrics" | "MonitoringMetricsConnection" | "MonitoringMetricsEdge" => {
                Kind::Metrics
            }
            "PageInfo" => return Some(None),
            _ => return None,
        }))
    }
}

/// Root fields whose answers may be cached (every other root field reads something else:
/// clusters, grants, the audit trail, the caller, or the request itself).
const CACHEABLE_ROOTS: &[&str] = &[
    "registries",
    "registry",
    "servers",
    "serverFacets",
    "server",
    "instances",
    "instance",
    "deployments",
    "deployment",
];

/// Fields of cacheable types that read something no notification covers: live pod logs,
/// metrics rollups (written by the rollup job without a notification), deployment log lines.
const UNCACHEABLE_FIELDS: &[(&str, &str)] = &[
    ("Instance", "logs"),
    ("Instance", "metrics"),
    ("Deployment", "logs"),
];

/// Fields that read a kind of data other than their type's: `Instance.resourceUsage` is the
/// latest monitoring sample.
const FIELDS_READING: &[((&str, &str), Kind)] = &[
    (("Instance", "resourceUsage"), Kind::Metrics),
    // Compared with the server's current registry entry.
    (("Instance", "upgrade"), Kind::Registry),
];

/// The kinds of data an answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deps(u8);

impl Deps {
    fn add(&mut self, k: Kind) {
        self.0 |= 1 << k as u8;
    }

    /// Whether the answer reads `k`.
    pub fn has(self, k: Kind) -> bool {
        self.0 & (1 << k as u8) != 0
    }

    fn ttl(self) -> Duration {
        KINDS
            .iter()
            .filter(|k| self.has(**k))
            .map(|k| k.ttl())
            .min()
            .unwrap_or(MONITORING_METRICS_TTL)
    }
}

/// What the schema says about one output type.
struct Shape {
    /// Field name → the named type it returns (lists unwrapped).
    fields: HashMap<String, String>,
    /// For interfaces and unions: the object types it may be.
    possible: Vec<String>,
}

/// The output types of the schema, from its SDL.
struct Shapes(HashMap<String, Shape>);

impl Shapes {
    fn from_sdl(sdl: &str) -> Self {
        fn named(t: &async_graphql::parser::types::Type) -> String {
            match &t.base {
                BaseType::Named(n) => n.to_string(),
                BaseType::List(inner) => named(inner),
            }
        }
        let mut types: HashMap<String, Shape> = HashMap::new();
        let mut implementors: HashMap<String, Vec<String>> = HashMap::new();
        let Ok(doc) = async_graphql::parser::parse_schema(sdl) else {
            return Shapes(types);
        };
        for def in doc.definitions {
            let TypeSystemDefinition::Type(t) = def else {
                continue;
            };
            let name = t.node.name.node.to_string();
            let (fields, possible) = match &t.node.kind {
                TypeKind::Object(o) => {
                    for i in &o.implements {
                        implementors
                            .entry(i.node.to_string())
                            .or_default()
                            .push(name.clone());
                    }
                    (&o.fields, Vec::new())
                }
                TypeKind::Interface(i) => (&i.fields, Vec::new()),
                TypeKind::Union(u) => {
                    let members = u.members.iter().map(|m| m.node.to_string()).collect();
                    types.insert(
                        name,
                        Shape {
                            fields: HashMap::new(),
                            possible: members,
                        },
                    );
                    continue;
                }
                _ => continue,
            };
            let fields = fields
                .iter()
                .map(|f| (f.node.name.node.to_string(), named(&f.node.ty.node)))
                .collect();
            types.insert(name, Shape { fields, possible });
        }
        for (iface, objects) in implementors {
            if let Some(shape) = types.get_mut(&iface) {
                shape.possible = objects;
            }
        }
        Shapes(types)
    }

    /// The kinds an operation of `doc` reads, or `None` when it may not be cached.
    fn plan(&self, doc: &ExecutableDocument, operation_name: Option<&str>) -> Option<Deps> {
        let mut ops = doc.operations.iter();
        let op = match operation_name {
            Some(wanted) => ops.find(|(n, _)| n.map(|n| n.as_str()) == Some(wanted))?.1,
            None => {
                let first = ops.next()?.1;
                if ops.next().is_some() {
                    return None;
                }
                first
            }
        };
        if op.node.ty != OperationType::Query {
            return None;
        }
        let mut deps = Deps::default();
        let mut walk = Walk {
            shapes: self,
            doc,
            deps: &mut deps,
            fragments: HashSet::new(),
        };
        walk.root(&op.node.selection_set.node)?;
        Some(deps)
    }
}

struct Walk<'a> {
    shapes: &'a Shapes,
    doc: &'a ExecutableDocument,
    deps: &'a mut Deps,
    fragments: HashSet<String>,
}

impl Walk<'_> {
    fn root(&mut self, set: &SelectionSet) -> Option<()> {
        for sel in &set.items {
            match &sel.node {
                Selection::Field(f) => {
                    let name = f.node.name.node.as_str();
                    if name == "__typename" {
                        continue;
                    }
                    if !CACHEABLE_ROOTS.contains(&name) {
                        return None;
                    }
                    let ty = self.shapes.0.get("QueryRoot")?.fields.get(name)?.clone();
                    self.typed(&ty, &f.node.selection_set.node)?;
                }
                // Fragments on the root are rare; they are not worth the bookkeeping.
                _ => return None,
            }
        }
        Some(())
    }

    /// Records the kinds of `ty` (every possible type of an interface or union) and walks
    /// `set` on it.
    fn typed(&mut self, ty: &str, set: &SelectionSet) -> Option<()> {
        let Some(shape) = self.shapes.0.get(ty) else {
            // A scalar or an enum: a leaf.
            return Some(());
        };
        if shape.possible.is_empty() {
            if let Some(kind) = Kind::of_type(ty)? {
                self.deps.add(kind);
            }
        } else {
            for t in &shape.possible {
                if let Some(kind) = Kind::of_type(t)? {
                    self.deps.add(kind);
                }
            }
        }
        self.selections(ty, set)
    }

    fn selections(&mut self, ty: &str, set: &SelectionSet) -> Option<()> {
        for sel in &set.items {
            match &sel.node {
                Selection::Field(f) => {
                    let name = f.node.name.node.as_str();
                    if name == "__typename" {
                        continue;
                    }
                    if name.starts_with("__") || UNCACHEABLE_FIELDS.contains(&(ty, name)) {
                        return None;
                    }
                    for (field, kind) in FIELDS_READING {
                        if *field == (ty, name) {
                            self.deps.add(*kind);
                        }
                    }
                    let ret = self.shapes.0.get(ty)?.fields.get(name)?.clone();
                    self.typed(&ret, &f.node.selection_set.node)?;
                }
                Selection::InlineFragment(fr) => match &fr.node.type_condition {
                    Some(tc) => {
                        self.typed(tc.node.on.node.as_str(), &fr.node.selection_set.node)?
                    }
                    None => self.selections(ty, &fr.node.selection_set.node)?,
                },
                Selection::FragmentSpread(sp) => {
                    let name = sp.node.fragment_name.node.to_string();
                    if !self.fragments.insert(name.clone()) {
                        continue;
                    }
                    let fr = self
                        .doc
                        .fragments
                        .get(sp.node.fragment_name.node.as_str())?;
                    let on = fr.node.type_condition.node.on.node.to_string();
                    self.typed(&on, &fr.node.selection_set.node)?;
                }
            }
        }
        Some(())
    }
}

/// The schema's SDL: `schema.graphql` is generated from the schema and drift-checked against it
/// (`tests/schema.rs`), so the cache reads the type shapes without depending on `graphql`.
const SCHEMA_SDL: &str = include_str!("../../schema.graphql");

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| Shapes::from_sdl(SCHEMA_SDL))
}

/// What the cache knows about an operation of a document.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The kinds of data the answer reads; `None` when it may not be cached.
    pub deps: Option<Deps>,
    /// The operation's name, or `anonymous` (the metrics' label).
    pub operation: String,
}

/// One cached answer.
pub struct Entry {
    /// `{"data":…}`, exactly as sent without extensions.
    pub body: Bytes,
    /// The rate-limit points its execution cost (`None` with the rate limit off).
    pub cost: Option<u64>,
    /// The operation's name, or `anonymous` (the metrics' label).
    pub operation: String,
    deps: Deps,
    generations: [u64; 4],
    expires: Instant,
}

/// Taken before an execution starts: the answer may be stored only if nothing it reads
/// changed meanwhile.
pub struct Ticket {
    key: Arc<str>,
    operation: String,
    deps: Deps,
    generations: [u64; 4],
}

/// A document and the name of the operation to run.
type PlanKey = (Arc<str>, Option<Arc<str>>);

struct Inner {
    enabled: bool,
    entries: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    plans: moka::sync::Cache<PlanKey, Arc<Plan>>,
    generations: [AtomicU64; 4],
    stats: Arc<CacheStats>,
}

/// The cache of whole answers. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

/// The most bytes of answers held (keys included).
const MAX_BYTES: u64 = 128 * 1024 * 1024;
/// The most bytes of documents (and their plans) held by the plan cache.
pub const MAX_PLAN_BYTES: u64 = 16 * 1024 * 1024;
/// Requests larger than this (document plus operation name, or variables) bypass the caches.
pub const MAX_KEYED_REQUEST_BYTES: usize = 16 * 1024;
/// Larger answers are not cached.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

impl ResponseCache {
    /// An empty cache; `enabled: false` never holds anything.
    pub fn new(enabled: bool, metrics: &CacheMetrics) -> Self {
        ResponseCache {
            inner: Arc::new(Inner {
                enabled,
                entries: moka::sync::Cache::builder()
                    .max_capacity(MAX_BYTES)
                    .weigher(|k: &Arc<str>, v: &Arc<Entry>| {
                        (k.len() + v.body.len()).try_into().unwrap_or(u32::MAX)
                    })
                    .time_to_live(SERVER_LISTS_TTL)
                    .build(),
                // Weighed by the documents' bytes: keys come from any client, anonymous ones
                // included, and a document may be as large as a request body.
                plans: moka::sync::Cache::builder()
                    .max_capacity(MAX_PLAN_BYTES)
                    .weigher(|k: &PlanKey, v: &Arc<Plan>| {
                        let bytes = k.0.len()
                            + k.1.as_ref().map_or(0, |n| n.len())
                            + v.operation.len()
                            + 64;
                        bytes.try_into().unwrap_or(u32::MAX)
                    })
                    .build(),
                generations: Default::default(),
                stats: CacheStats::new("graphql_responses", metrics),
            }),
        }
    }

    /// Whether answers are cached at all.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Whether a request is small enough to be a key of the caches. Larger documents (and
    /// variables) are executed without them: real operations are far smaller, and keys of
    /// client-chosen size would let unique large requests hold memory until eviction, which
    /// the caches run in batches (measured: 1,000 unique 100 KB documents grew the process by
    /// about 280 MB before this bound, 1 MB after).
    pub fn may_cache(&self, req: &async_graphql::Request) -> bool {
        req.query.len() + req.operation_name.as_ref().map_or(0, String::len)
            <= MAX_KEYED_REQUEST_BYTES
            && serde_json::to_string(&req.variables)
                .is_ok_and(|v| v.len() <= MAX_KEYED_REQUEST_BYTES)
    }

    /// The bytes the plan cache holds (after pending evictions).
    pub fn plan_bytes(&self) -> u64 {
        self.inner.plans.run_pending_tasks();
        self.inner.plans.weighted_size()
    }

    /// What the cache knows about an operation of a document (analysed once per document).
    pub fn plan(&self, query: &str, operation_name: Option<&str>) -> Arc<Plan> {
        let key = (
            Arc::<str>::from(query),
            operation_name.map(Arc::<str>::from),
        );
        self.inner.plans.get_with(key, || {
            let doc = async_graphql::parser::parse_query(query).ok();
            let deps = doc
                .as_ref()
                .and_then(|doc| shapes().plan(doc, operation_name));
            let operation = match (operation_name, &doc) {
                (Some(n), _) => n.to_string(),
                (None, Some(doc)) => doc
                    .operations
                    .iter()
                    .next()
                    .and_then(|(n, _)| n.map(|n| n.to_string()))
                    .unwrap_or_else(|| "anonymous".into()),
                (None, None) => "anonymous".into(),
            };
            Arc::new(Plan { deps, operation })
        })
    }

    /// The key of a request from `scope`: everything in the request that can change its answer.
    pub fn key(scope: &AuthScope, request: &async_graphql::Request) -> Arc<str> {
        let variables = serde_json::to_string(&request.variables).unwrap_or_default();
        let mut extensions: Vec<(&String, String)> = request
            .extensions
            .iter()
            .map(|(k, v)| (k, serde_json::to_string(v).unwrap_or_default()))
            .collect();
        extensions.sort();
        let extensions = serde_json::to_string(&extensions).unwrap_or_default();
        Arc::from(format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
            scope.as_str(),
            request.operation_name.as_deref().unwrap_or(""),
            request.query,
            variables,
            extensions
        ))
    }

    fn current(&self) -> [u64; 4] {
        let g = &self.inner.generations;
        [
            g[0].load(Ordering::Acquire),
            g[1].load(Ordering::Acquire),
            g[2].load(Ordering::Acquire),
            g[3].load(Ordering::Acquire),
        ]
    }

    fn fresh(&self, deps: Deps, generations: &[u64; 4]) -> bool {
        let now = self.current();
        KINDS
            .iter()
            .all(|k| !deps.has(*k) || now[*k as usize] == generations[*k as usize])
    }

    /// The cached answer under `key`, if it is still current (counted as a hit).
    pub fn get(&self, key: &Arc<str>) -> Option<Arc<Entry>> {
        let hit = self
            .inner
            .entries
            .get(key)
            .filter(|e| e.expires > Instant::now() && self.fresh(e.deps, &e.generations));
        if hit.is_some() {
            self.inner.stats.record(true);
        }
        hit
    }

    /// Starts an execution whose answer may be stored under `key` (counted as a miss; requests
    /// that are never cached are not counted at all).
    pub fn ticket(&self, key: Arc<str>, deps: Deps, operation: &str) -> Ticket {
        self.inner.stats.record(false);
        Ticket {
            key,
            operation: operation.to_string(),
            deps,
            generations: self.current(),
        }
    }

    /// Stores an answer, unless something it reads changed since its ticket was taken.
    pub fn put(&self, ticket: Ticket, body: Bytes, cost: Option<u64>) {
        if !self.inner.enabled
            || body.len() > MAX_ANSWER_BYTES
            || !self.fresh(ticket.deps, &ticket.generations)
        {
            return;
        }
        let entry = Entry {
            body,
            cost,
            operation: ticket.operation,
            deps: ticket.deps,
            generations: ticket.generations,
            expires: Instant::now() + ticket.deps.ttl(),
        };
        self.inner.entries.insert(ticket.key, Arc::new(entry));
    }

    /// Data of `kind` changed: answers that read it are no longer served.
    pub fn changed(&self, kind: Kind) {
        self.inner.generations[kind as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// Anything may have changed (a mutation ran here, or change notifications were missed).
    pub fn changed_all(&self) {
        for k in KINDS {
            self.changed(k);
        }
    }

    /// Approximate number of cached answers.
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(q: &str) -> Option<Deps> {
        let doc = async_graphql::parser::parse_query(q).unwrap();
        shapes().plan(&doc, None)
    }

    #[test]
    fn nested_reads_depend_on_every_kind_they_reach() {
        let d = plan(
            "{ registries { nodes { name servers { nodes { name instances { nodes { name \
             latestMetrics { cpuUsage } } } } } } } }",
        )
        .expect("cacheable");
        assert!(d.has(Kind::Registry) && d.has(Kind::Instance) && d.has(Kind::Metrics));
        assert!(!d.has(Kind::Deployment));
        assert_eq!(d.ttl(), MONITORING_METRICS_TTL);
        let d = plan("{ registries { totalCount pageInfo { hasNextPage } } }").unwrap();
        assert_eq!(d.ttl(), SERVER_LISTS_TTL);
        // Through a fragment and an inline fragment.
        let d = plan(
            "query { servers { nodes { ...S } } } fragment S on Server { name \
             ... on Server { instances { nodes { operations { nodes { status } } } } } }",
        )
        .unwrap();
        assert!(d.has(Kind::Deployment) && d.has(Kind::Instance) && d.has(Kind::Registry));
    }

    #[test]
    fn what_no_notification_covers_is_never_cached() {
        for q in [
            "{ clusters { nodes { name } } }",
            "{ instances { nodes { cluster { name } } } }",
            "{ instances { nodes { logs { lines } } } }",
            "{ instances { nodes { metrics(resolution: HOUR) { nodes { cpuUsage } } } } }",
            "{ deployments { nodes { logs { message } } } }",
            "{ viewer { subject } }",
            "{ requestId }",
            "{ node(id: \"x\") { id } }",
            "{ __schema { queryType { name } } }",
            "query One { registries { totalCount } } query Two { registries { totalCount } }",
            "mutation { syncRegistry(id: \"x\") { id } }",
        ] {
            let doc = async_graphql::parser::parse_query(q).unwrap();
            assert_eq!(shapes().plan(&doc, None), None, "{q}");
        }
    }

    #[test]
    fn an_answer_computed_across_a_change_is_not_stored_and_a_change_evicts() {
        let c = ResponseCache::new(true, &CacheMetrics::default());
        let mut deps = Deps::default();
        deps.add(Kind::Instance);
        let key: Arc<str> = Arc::from("k");
        let t = c.ticket(key.clone(), deps, "q");
        c.changed(Kind::Instance);
        c.put(t, Bytes::from_static(b"{\"data\":1}"), None);
        assert!(c.get(&key).is_none());

        let t = c.ticket(key.clone(), deps, "q");
        c.put(t, Bytes::from_static(b"{\"data\":2}"), Some(3));
        let e = c.get(&key).expect("stored");
        assert_eq!(&e.body[..], b"{\"data\":2}");
        assert_eq!(e.cost, Some(3));
        // Another kind changing leaves it alone; its own kind evicts it.
        c.changed(Kind::Registry);
        assert!(c.get(&key).is_some());
        c.changed(Kind::Instance);
        assert!(c.get(&key).is_none());
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let c = ResponseCache::new(false, &CacheMetrics::default());
        let key: Arc<str> = Arc::from("k");
        let t = c.ticket(key.clone(), Deps(1), "q");
        c.put(t, Bytes::from_static(b"{}"), None);
        assert!(c.get(&key).is_none());
    }

    #[test]
    fn the_plan_cache_is_bounded_in_bytes() {
        let c = ResponseCache::new(true, &CacheMetrics::default());
        let filler = "x".repeat(100 * 1024);
        for i in 0..400 {
            c.plan(
                &format!("query Q{i}{filler} {{ registries {{ totalCount }} }}"),
                None,
            );
        }
        assert!(
            c.plan_bytes() <= MAX_PLAN_BYTES,
            "{} bytes of plans",
            c.plan_bytes()
        );
    }
}
