//! Kubernetes: clusters, deployments of registry servers, and instances that follow what the
//! cluster reports.
//!
//! * Clusters are reached through the gateway's kubeconfig (a named context, or its current
//!   one) or the in-cluster service account, checked at registration and every
//!   `HIVEGRAPH_K8S_CHECK_SECONDS` ([`ClusterManager::start_background`]).
//! * Mutations validate everything, record an operation (INITIATED) and return; a driver task
//!   ([`driver`]) takes the operation's lease and moves it to COMPLETED, FAILED or CANCELLED.
//! * Watchers ([`watch`]) on Deployments, Pods and Events keep every instance row current
//!   following [`health::derive`].
//!
//! The oldest supported Kubernetes version is `HIVEGRAPH_K8S_MIN_VERSION` (default 1.24).

pub mod credentials;
pub mod drift;
pub mod driver;
pub mod health;
pub mod manifests;
pub mod reach;
mod registration;
pub mod store;
mod upgrade;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataloaders::DbPool;
use dataloaders::enums::*;
use dataloaders::models::{ClusterRow, DeploymentRow, InstanceRow};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::K8sConfig;
use crate::error::{AppError, AppResult};
use crate::registries::store::Actor;
use health::Observed;
use manifests::InstanceSpec;
use store::ClusterCheck;

/// API clients of one cluster: one with short timeouts for requests, one for long watches.
#[derive(Clone)]
pub struct Clients {
    pub api: kube::Client,
    pub watch: kube::Client,
    pub endpoint: String,
    pub default_namespace: String,
    /// What the clients were built from (context, in-cluster identity, or a fingerprint of the
    /// stored credentials): cached clients and running watchers whose source no longer matches
    /// the cluster's row are rebuilt.
    pub source: String,
}

/// Settings of `registerCluster`.
pub struct ClusterInput {
    pub name: String,
    pub context: Option<String>,
    pub in_cluster: bool,
    /// Credentials given through the API (sealed at rest), instead of the gateway's kubeconfig.
    pub credentials: Option<credentials::CredentialsInput>,
}

/// Settings of `updateCluster`: what is absent stays.
pub struct ClusterUpdate {
    pub name: Option<String>,
    pub context: Option<String>,
    pub credentials: Option<credentials::CredentialsInput>,
}

/// What `deployServer` was asked.
pub struct DeployInput {
    pub server_id: Uuid,
    pub cluster_id: Uuid,
    pub namespace: String,
    pub name: Option<String>,
    pub replicas: Option<i32>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub resources: Option<Value>,
}

/// Pod logs of an instance.
#[derive(Debug, Clone)]
pub struct PodLogs {
    pub available: bool,
    pub reason: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub lines: Vec<String>,
}

type LogKey = (Uuid, Option<i32>, Option<i32>, Option<String>);

/// The Kubernetes side of the gateway (one per process; cheap to clone).
#[derive(Clone)]
pub struct ClusterManager {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: DbPool,
    pub(crate) cfg: K8sConfig,
    /// Seals and opens the credentials of clusters registered through the API.
    pub(crate) keys: Arc<crate::secrets::Keyring>,
    min_version: (u32, u32),
    /// Lease owner id of this process.
    pub(crate) owner: String,
    clients: Mutex<HashMap<Uuid, Clients>>,
    /// Running watchers per (cluster, namespace); the flag says whether the watch is synced.
    pub(crate) watches: Mutex<HashMap<(Uuid, String), watch::WatchHandle>>,
    /// Running drivers per operation.
    pub(crate) drivers: Mutex<HashMap<Uuid, tokio::task::JoinHandle<()>>>,
    /// Wakes an operation's driver when its instance changes.
    pub(crate) wakers: Mutex<HashMap<Uuid, Arc<tokio::sync::Notify>>>,
    /// Instance status as last derived from the cluster; 30 s, dropped on every watch event.
    pub(crate) status_cache: moka::future::Cache<Uuid, Arc<Observed>>,
    /// Highest observation `rv` written per instance, so that a lagging watch store never
    /// overwrites a fresher observation.
    applied_rv: Mutex<HashMap<Uuid, u64>>,
    /// Pod logs, 2 minutes.
    logs_cache: moka::future::Cache<LogKey, Arc<PodLogs>>,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

/// Most lines `Instance.logs` may ask for.
pub const MAX_LOG_LINES: i32 = 10_000;
/// Most bytes of a pod log read at once (the API server stops there).
pub const MAX_LOG_BYTES: i64 = 1024 * 1024;
/// Most bytes of logs cached.
const MAX_LOG_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Parses `major.minor` (a leading `v` and a patch part are ignored).
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim().trim_start_matches('v');
    let mut it = s.split('.');
    let major = it.next()?.parse().ok()?;
    let minor_raw = it.next().unwrap_or("0");
    let digits: String = minor_raw
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some((major, digits.parse().ok()?))
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A Kubernetes error as a client-facing error (no credentials or URLs with tokens leak: kube
/// errors carry the API server's message, which names objects only).
pub(crate) fn kube_err(e: &kube::Error, what: &str) -> AppError {
    match e {
        kube::Error::Api(s) if s.code == 401 => AppError::Unavailable(format!(
            "{what}: the cluster rejected the gateway's credentials"
        )),
        kube::Error::Api(s) if s.code == 403 => {
            AppError::Forbidden(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 404 || s.code == 409 => {
            AppError::Conflict(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code < 500 && s.code != 429 => {
            AppError::bad_input("input", format!("{what}: {}", s.message))
        }
        other => {
            tracing::warn!(error = %other, "{what}");
            AppError::Unavailable(format!("{what}: the cluster's API server is unreachable"))
        }
    }
}

/// Whether a Kubernetes error is worth retrying (network, 5xx, 429, timeouts).
pub(crate) fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 0,
        _ => true,
    }
}

/// A short reason and message of a Kubernetes error, for an operation's `errors`.
pub(crate) fn kube_reason(e: &kube::Error) -> (String, String) {
    match e {
        kube::Error::Api(s) => (
            if s.reason.is_empty() {
                format!("HTTP{}", s.code)
            } else {
                s.reason.clone()
            },
            s.message.clone(),
        ),
        other => ("Unreachable".into(), other.to_string()),
    }
}

impl ClusterManager {
    /// A manager; nothing runs until the first use or [`Self::start_background`].
    pub fn new(
        pool: DbPool,
        cfg: K8sConfig,
        keys: Arc<crate::secrets::Keyring>,
    ) -> anyhow::Result<Self> {
        let min_version = parse_version(&cfg.min_version).ok_or_else(|| {
            anyhow::anyhow!(
                "HIVEGRAPH_K8S_MIN_VERSION must look like 1.24, not {:?}",
                cfg.min_version
            )
        })?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into());
        let owner = format!("{host}/{}/{}", std::process::id(), Uuid::new_v4().simple());
        Ok(ClusterManager {
            inner: Arc::new(Inner {
                pool,
                keys,
                min_version,
                owner,
                clients: Mutex::new(HashMap::new()),
                watches: Mutex::new(HashMap::new()),
                drivers: Mutex::new(HashMap::new()),
                wakers: Mutex::new(HashMap::new()),
                status_cache: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(Duration::from_secs(30))
                    .build(),
                // Keyed by client input (tailLines, sinceSeconds, container): weighed by bytes.
                logs_cache: moka::future::Cache::builder()
                    .max_capacity(MAX_LOG_CACHE_BYTES)
                    .weigher(|_k: &LogKey, v: &Arc<PodLogs>| {
                        let bytes: usize =
                            v.lines.iter().map(|l| l.len() + 24).sum::<usize>() + 256;
                        bytes.try_into().unwrap_or(u32::MAX)
                    })
                    .time_to_live(Duration::from_secs(120))
                    .build(),
                background: Mutex::new(Vec::new()),
                applied_rv: Mutex::new(HashMap::new()),
                stopping: tokio::sync::watch::channel(false).0,
                cfg,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The instance status cache (30 s; invalidated on every watch event of the instance).
    pub fn status_cache(&self) -> &moka::future::Cache<Uuid, Arc<Observed>> {
        &self.inner.status_cache
    }

    /// Writes an observation into the instance row unless a fresher one was written already
    /// (observations of a missing Deployment are confirmed by their callers and always count).
    /// Returns whether the observation was current.
    /// `deployed_before`: the observer knew the instance deployed before it looked (see
    /// `store::apply_observation`).
    pub(crate) async fn record(
        &self,
        id: Uuid,
        o: &Observed,
        scaling: bool,
        deployed_before: bool,
    ) -> bool {
        {
            let mut seen = self.inner.applied_rv.lock().unwrap();
            let last = seen.entry(id).or_insert(0);
            if !o.missing && o.rv != 0 && o.rv < *last {
                return false;
            }
            *last = if o.missing { 0 } else { o.rv.max(*last) };
        }
        if let Err(e) =
            store::apply_observation(&self.inner.pool, id, o, scaling, deployed_before).await
        {
            tracing::warn!(error = ?e, %id, "instance update failed");
        }
        true
    }

    /// The highest observation `rv` written for an instance.
    pub(crate) fn applied_rv(&self, id: Uuid) -> u64 {
        self.inner
            .applied_rv
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    /// Starts the periodic work once: cluster checks, pick-up of orphaned operations (after a
    /// restart or another process's crash), watchers of namespaces with live instances, and the
    /// 30-day purge of step logs.
    pub fn start_background(&self) {
        let mut bg = self.inner.background.lock().unwrap();
        if !bg.is_empty() || *self.inner.stopping.borrow() {
            return;
        }
        let me = self.clone();
        bg.push(tokio::spawn(async move { me.check_loop().await }));
        let me = self.clone();
        bg.push(tokio::spawn(async move { me.recovery_loop().await }));
    }

    /// Stops drivers, watchers and the periodic work, then gives back the leases of the
    /// operations this process drove, so another process can take them over at once.
    ///
    /// Tasks are asked to stop and finish their current step: a task aborted in the middle of a
    /// database transaction would return its connection to the pool with the transaction (and
    /// its row locks) still open.
    pub async fn shutdown(&self) {
        let driven: Vec<Uuid> = self.inner.drivers.lock().unwrap().keys().copied().collect();
        self.stop_tasks(Duration::from_secs(10)).await;
        for id in driven {
            let _ = store::release(&self.inner.pool, id, &self.inner.owner).await;
        }
    }

    /// Stops everything without giving leases back, as a crash would (for tests of the
    /// take-over): leases expire after `HIVEGRAPH_K8S_LEASE_SECONDS`.
    pub async fn abort(&self) {
        self.stop_tasks(Duration::from_secs(10)).await;
    }

    async fn stop_tasks(&self, grace: Duration) {
        self.inner.stopping.send_replace(true);
        let mut tasks: Vec<tokio::task::JoinHandle<()>> =
            self.inner.background.lock().unwrap().drain(..).collect();
        tasks.extend(self.inner.drivers.lock().unwrap().drain().map(|(_, t)| t));
        tasks.extend(
            self.inner
                .watches
                .lock()
                .unwrap()
                .drain()
                .map(|(_, w)| w.task),
        );
        let deadline = tokio::time::Instant::now() + grace;
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Sleeps `d`; false when the manager is stopping.
    pub(crate) async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.inner.stopping.subscribe();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = stop.changed() => false,
            _ = tokio::time::sleep(d) => !*self.inner.stopping.borrow(),
        }
    }

    /// Whether the manager is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    async fn check_loop(&self) {
        let every = Duration::from_secs(self.inner.cfg.check_seconds.max(1));
        let mut last_purge = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            if let Ok(rows) = store::all_clusters(&self.inner.pool).await {
                for row in rows {
                    let _ = self.check_and_store(&row).await;
                }
            }
            if last_purge.elapsed() >= Duration::from_secs(3600) {
                last_purge = std::time::Instant::now();
                match store::purge_logs(&self.inner.pool).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(n, "purged deployment logs older than 30 days")
                    }
                    _ => {}
                }
            }
            if !self.pause(every).await {
                return;
            }
        }
    }

    async fn recovery_loop(&self) {
        let every = Duration::from_secs(self.inner.cfg.lease_seconds.clamp(1, 10));
        loop {
            self.reconcile_watches().await;
            if let Ok(live) = store::live_instances(&self.inner.pool).await {
                for (_, cluster, ns, _) in live {
                    self.ensure_watch(cluster, &ns).await;
                }
            }
            if let Ok(ops) = store::orphaned_ops(&self.inner.pool).await {
                for id in ops {
                    self.spawn_driver(id);
                }
            }
            if !self.pause(every).await {
                return;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // clients
    // -----------------------------------------------------------------------------------------

    async fn kube_config(
        &self,
        context: Option<&str>,
        in_cluster: bool,
    ) -> AppResult<kube::Config> {
        if in_cluster {
            return kube::Config::incluster().map_err(|e| {
                AppError::bad_input(
                    "inCluster",
                    format!("the gateway has no in-cluster configuration: {e}"),
                )
            });
        }
        let kc = match &self.inner.cfg.kubeconfig {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        }
        .map_err(|e| {
            // Every cluster check, watcher and collector asks again: say it once a minute, not
            // once per instance.
            static LAST_WARNED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let now = chrono::Utc::now().timestamp();
            let last = LAST_WARNED.load(std::sync::atomic::Ordering::Relaxed);
            if now - last >= 60
                && LAST_WARNED
                    .compare_exchange(
                        last,
                        now,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_ok()
            {
                tracing::warn!(error = %e, "the gateway's kubeconfig cannot be read");
            }
            AppError::Unavailable("the gateway's kubeconfig cannot be read".into())
        })?;
        match context {
            Some(ctx) if !kc.contexts.iter().any(|c| c.name == ctx) => {
                return Err(AppError::bad_input(
                    "context",
                    format!("the gateway's kubeconfig has no context {ctx:?}"),
                ));
            }
            None if kc.current_context.as_deref().unwrap_or("").is_empty() => {
                return Err(AppError::bad_input(
                    "context",
                    "the gateway's kubeconfig has no current context; name one",
                ));
            }
            _ => {}
        }
        let opts = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| {
                AppError::bad_input(
                    "context",
                    format!("the kubeconfig context cannot be used: {e}"),
                )
            })
    }

    /// Clients from a configuration; `source` says what it was built from.
    fn clients_from(&self, base: kube::Config, source: String) -> AppResult<Clients> {
        let timeout = Duration::from_millis(self.inner.cfg.timeout_ms);
        let endpoint = base
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let default_namespace = base.default_namespace.clone();
        let mut api_cfg = base.clone();
        api_cfg.connect_timeout = Some(timeout);
        api_cfg.read_timeout = Some(timeout);
        api_cfg.write_timeout = Some(timeout);
        let mut watch_cfg = base;
        watch_cfg.connect_timeout = Some(timeout);
        let mk = |c: kube::Config| {
            kube::Client::try_from(c)
                .map_err(|e| AppError::Internal(Arc::new(anyhow::anyhow!("kube client: {e}"))))
        };
        Ok(Clients {
            api: mk(api_cfg)?,
            watch: mk(watch_cfg)?,
            endpoint,
            default_namespace,
            source,
        })
    }

    /// Clients of a kubeconfig context or the in-cluster identity.
    async fn build_clients(&self, context: Option<&str>, in_cluster: bool) -> AppResult<Clients> {
        let base = self.kube_config(context, in_cluster).await?;
        self.clients_from(base, source_of_config(context, in_cluster))
    }

    /// The clients of a registered cluster: from its stored credentials when it has some, else
    /// from the gateway's kubeconfig or in-cluster identity. Built once, then cached while the
    /// row's credentials stay the same.
    pub async fn clients(&self, row: &ClusterRow) -> AppResult<Clients> {
        if row.removed_at.is_some() {
            return Err(AppError::NotFound("cluster"));
        }
        let (source, stored) = self.access_of(row)?;
        if let Some(c) = self.inner.clients.lock().unwrap().get(&row.id)
            && c.source == source
        {
            return Ok(c.clone());
        }
        let c = match stored {
            Some(creds) => self.clients_from(creds.kube_config().await?, source)?,
            None => {
                self.build_clients(row.context.as_deref(), row.in_cluster)
                    .await?
            }
        };
        self.inner.clients.lock().unwrap().insert(row.id, c.clone());
        Ok(c)
    }

    /// Timeout of one Kubernetes API request, in milliseconds.
    pub fn request_timeout_ms(&self) -> u64 {
        self.inner.cfg.timeout_ms
    }

    pub(crate) async fn clients_of(&self, cluster: Uuid) -> AppResult<Clients> {
        let row = store::cluster(&self.inner.pool, cluster)
            .await?
            .ok_or(AppError::NotFound("cluster"))?;
        self.clients(&row).await
    }

    // -----------------------------------------------------------------------------------------
    // clusters
    // -----------------------------------------------------------------------------------------

    /// Whether the cluster's RBAC lets the gateway `verb` `resource`.
    async fn can(
        client: &kube::Client,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<bool, kube::Error> {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    namespace: namespace.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
        let r = api.create(&PostParams::default(), &review).await?;
        Ok(r.status.map(|s| s.allowed).unwrap_or(false))
    }

    /// Checks a cluster: reachability, credentials, version, API groups, access level, nodes and
    /// quotas. Never fails: problems become the status and `error`.
    pub async fn check(&self, clients: &Clients) -> ClusterCheck {
        let c = &clients.api;
        let mut out = ClusterCheck {
            status: ClusterStatus::Connected,
            version: None,
            capabilities: Vec::new(),
            resource_quota: json!({}),
            access_level: AccessLevel::ReadOnly,
            simulated: false,
            error: None,
        };
        let info = match c.apiserver_version().await {
            Ok(i) => i,
            Err(e) => {
                let (status, msg) = match api_code(&e) {
                    Some(401) => (
                        ClusterStatus::Unauthorized,
                        "the API server rejected the credentials (401 Unauthorized)".to_string(),
                    ),
                    Some(code) => (
                        ClusterStatus::Disconnected,
                        format!("the API server answered /version with HTTP {code}"),
                    ),
                    None => (
                        ClusterStatus::Disconnected,
                        format!("the API server is unreachable: {e}"),
                    ),
                };
                out.status = status;
                out.error = Some(msg);
                return out;
            }
        };
        out.version = Some(info.git_version.clone());
        let marker = format!("{} {}", info.git_version, info.platform).to_ascii_lowercase();
        out.simulated = marker.contains("emulator") || marker.contains("kwok");

        match c.list_api_groups().await {
            Ok(groups) => {
                let wanted = [
                    "apps/v1",
                    "networking.k8s.io/v1",
                    "metrics.k8s.io/v1beta1",
                    "events.k8s.io/v1",
                    "authorization.k8s.io/v1",
                    "autoscaling/v2",
                    "toolhive.stacklok.dev/v1beta1",
                    "toolhive.stacklok.dev/v1alpha1",
                ];
                for g in &groups.groups {
                    for v in &g.versions {
                        if wanted.contains(&v.group_version.as_str()) {
                            out.capabilities.push(v.group_version.clone());
                        }
                    }
                }
                out.capabilities.sort();
            }
            Err(e) if api_code(&e) == Some(401) => {
                out.status = ClusterStatus::Unauthorized;
                out.error = Some("the API server rejected the credentials (401)".into());
                return out;
            }
            Err(e) => out.error = Some(format!("API discovery failed: {e}")),
        }

        out.access_level = match self.access_level(clients).await {
            Ok(a) => a,
            Err(e) if api_code(&e) == Some(401) => {
                out.status = ClusterStatus::Unauthorized;
                out.error = Some("the API server rejected the credentials (401)".into());
                return out;
            }
            Err(e) if is_transient(&e) && api_code(&e).is_none() => {
                out.status = ClusterStatus::Disconnected;
                out.error = Some(format!("the API server is unreachable: {e}"));
                return out;
            }
            Err(e) => {
                out.error = Some(format!("access review failed: {e}"));
                AccessLevel::ReadOnly
            }
        };

        let (quota, fake_nodes) = Self::resources(c).await;
        out.resource_quota = quota;
        out.simulated |= fake_nodes;
        out
    }

    async fn access_level(&self, clients: &Clients) -> Result<AccessLevel, kube::Error> {
        let c = &clients.api;
        if Self::can(c, "*", "*", "*", None).await? {
            return Ok(AccessLevel::Admin);
        }
        if Self::can(c, "create", "apps", "deployments", None).await? {
            return Ok(AccessLevel::Deploy);
        }
        // Namespaced rights: the namespaces we can list, else the context's default one.
        let mut candidates = vec![clients.default_namespace.clone()];
        if let Ok(list) = Api::<Namespace>::all(c.clone())
            .list(&ListParams::default().limit(100))
            .await
        {
            candidates.extend(list.items.into_iter().filter_map(|n| n.metadata.name));
        }
        candidates.dedup();
        for ns in candidates.iter().take(100) {
            if Self::can(c, "create", "apps", "deployments", Some(ns)).await? {
                return Ok(AccessLevel::Deploy);
            }
        }
        Ok(AccessLevel::ReadOnly)
    }

    /// Node allocatable resources and ResourceQuotas, and whether every node is a simulated
    /// (KWOK-style) node.
    async fn resources(c: &kube::Client) -> (Value, bool) {
        let mut quota = serde_json::Map::new();
        let mut fake = false;
        match Api::<Node>::all(c.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(nodes) => {
                fake = !nodes.items.is_empty()
                    && nodes.items.iter().all(|n| {
                        n.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("kwok.x-k8s.io/node"))
                            .is_some_and(|v| v == "fake")
                    });
                let list: Vec<Value> = nodes
                    .items
                    .iter()
                    .map(|n| {
                        json!({
                            "name": n.metadata.name,
                            "allocatable": n.status.as_ref().and_then(|s| s.allocatable.as_ref())
                                .map(|a| a.iter().map(|(k, v)| (k.clone(), json!(v.0))).collect::<serde_json::Map<_, _>>()),
                        })
                    })
                    .collect();
                quota.insert("nodes".into(), json!(list));
            }
            Err(e) => {
                quota.insert(
                    "nodesError".into(),
                    json!(format!("nodes cannot be listed: {}", kube_reason(&e).1)),
                );
            }
        }
        match Api::<k8s_openapi::api::core::v1::ResourceQuota>::all(c.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(q) => {
                let list: Vec<Value> = q
                    .items
                    .iter()
                    .map(|q| {
                        json!({
                            "namespace": q.metadata.namespace, "name": q.metadata.name,
                            "hard": q.status.as_ref().and_then(|s| s.hard.as_ref()).map(|h| h.iter().map(|(k, v)| (k.clone(), json!(v.0))).collect::<serde_json::Map<_, _>>()),
                            "used": q.status.as_ref().and_then(|s| s.used.as_ref()).map(|h| h.iter().map(|(k, v)| (k.clone(), json!(v.0))).collect::<serde_json::Map<_, _>>()),
                        })
                    })
                    .collect();
                quota.insert("quotas".into(), json!(list));
            }
            Err(e) if api_code(&e) == Some(404) => {
                quota.insert("quotas".into(), json!([]));
            }
            Err(e) => {
                quota.insert(
                    "quotasError".into(),
                    json!(format!("quotas cannot be listed: {}", kube_reason(&e).1)),
                );
            }
        }
        (Value::Object(quota), fake)
    }

    fn version_ok(&self, version: &str) -> bool {
        parse_version(version).is_some_and(|v| v >= self.inner.min_version)
    }

    async fn check_and_store(&self, row: &ClusterRow) -> AppResult<ClusterRow> {
        let clients = match self.clients(row).await {
            Ok(c) => c,
            Err(e) => {
                let check = ClusterCheck {
                    status: ClusterStatus::Disconnected,
                    version: None,
                    capabilities: vec![],
                    resource_quota: json!({}),
                    access_level: row.access_level,
                    simulated: row.simulated,
                    error: Some(e.public_message()),
                };
                return store::update_cluster_check(&self.inner.pool, row.id, &check)
                    .await?
                    .ok_or(AppError::NotFound("cluster"));
            }
        };
        let mut check = self.check(&clients).await;
        if check.status == ClusterStatus::Connected
            && let Some(v) = &check.version
            && !self.version_ok(v)
        {
            check.error = Some(format!(
                "the cluster now runs Kubernetes {v}, older than the oldest supported version {}.{}",
                self.inner.min_version.0, self.inner.min_version.1
            ));
        }
        store::update_cluster_check(&self.inner.pool, row.id, &check)
            .await?
            .ok_or(AppError::NotFound("cluster"))
    }

    /// `refreshCluster`: rebuilds the clients (the kubeconfig may have changed) and checks again.
    pub async fn refresh(&self, id: Uuid) -> AppResult<ClusterRow> {
        self.start_background();
        let row = store::cluster(&self.inner.pool, id)
            .await?
            .ok_or(AppError::NotFound("cluster"))?;
        self.inner.clients.lock().unwrap().remove(&id);
        self.check_and_store(&row).await
    }

    // -----------------------------------------------------------------------------------------
    // deployServer
    // -----------------------------------------------------------------------------------------

    async fn connected_cluster(&self, id: Uuid, field: &str) -> AppResult<(ClusterRow, Clients)> {
        let row = store::cluster(&self.inner.pool, id)
            .await?
            .ok_or_else(|| AppError::bad_input(field, "no cluster with this id"))?;
        if row.status != ClusterStatus::Connected {
            return Err(AppError::Unavailable(format!(
                "cluster {} is {}{}",
                row.name,
                row.status.as_db_str().to_uppercase(),
                row.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )));
        }
        let clients = self.clients(&row).await?;
        Ok((row, clients))
    }

    /// Checks that the cluster's RBAC allows every `(verb, group, resource)` in `namespace`.
    async fn require_access(
        clients: &Clients,
        namespace: &str,
        needs: &[(&str, &str, &str)],
    ) -> AppResult<()> {
        for (verb, group, resource) in needs {
            let ok = Self::can(&clients.api, verb, group, resource, Some(namespace))
                .await
                .map_err(|e| kube_err(&e, "access review"))?;
            if !ok {
                let g = if group.is_empty() { "core" } else { group };
                return Err(AppError::Forbidden(format!(
                    "the cluster's RBAC does not let the gateway {verb} {resource} ({g}) in \
                     namespace {namespace}: DEPLOY access is needed"
                )));
            }
        }
        Ok(())
    }

    /// `deployServer`: validates everything, records the instance and its INITIATED operation,
    /// stores secret env values in a Kubernetes Secret, and starts the driver.
    pub async fn deploy(&self, actor: &Actor, input: DeployInput) -> AppResult<DeploymentRow> {
        self.start_background();
        let pool = &self.inner.pool;
        // --- input that needs no lookups
        let replicas = input.replicas.unwrap_or(1);
        check_replicas(replicas)?;
        if !manifests::is_dns_label(&input.namespace) {
            return Err(AppError::bad_input(
                "namespace",
                "namespace must be a valid Kubernetes name (DNS-1123 label)",
            ));
        }
        if input.args.len() > 64 || input.args.iter().any(|a| a.len() > 4096) {
            return Err(AppError::bad_input(
                "args",
                "at most 64 args of at most 4096 characters",
            ));
        }
        check_env_input(&input.env)?;
        let resources = with_default_cpu_limit(
            input.resources.map(validate_resources).transpose()?,
            &self.inner.cfg.default_cpu_limit,
        );
        // --- the server
        let server = store::server(pool, input.server_id)
            .await?
            .ok_or_else(|| AppError::bad_input("serverId", "no server with this id"))?;
        let image = server
            .image
            .clone()
            .filter(|i| !i.contains("://"))
            .ok_or_else(|| {
                AppError::bad_input(
                    "serverId",
                    "this server has no container image to deploy (remote servers and \
                     package-built images cannot be deployed by the gateway)",
                )
            })?;
        let name = input.name.clone().unwrap_or_else(|| server.name.clone());
        if !manifests::is_dns_label(&name) {
            return Err(AppError::bad_input(
                "name",
                "name must be a valid Kubernetes name: at most 63 lower-case letters, digits and \
                 '-', starting and ending with a letter or digit",
            ));
        }
        let reqs = &server.deployment_requirements;
        let declared: Vec<&Value> = reqs
            .get("envVars")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let given: HashMap<&str, &str> = input
            .env
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut plain = Vec::new();
        let mut secret_values = Vec::new();
        for d in &declared {
            let Some(n) = d.get("name").and_then(Value::as_str) else {
                continue;
            };
            let required = d.get("required").and_then(Value::as_bool).unwrap_or(false);
            let secret = d.get("secret").and_then(Value::as_bool).unwrap_or(false);
            let default = d.get("default").and_then(Value::as_str);
            match given.get(n) {
                Some(v) if !v.is_empty() => {
                    if secret {
                        secret_values.push((n.to_string(), v.to_string()));
                    } else {
                        plain.push(manifests::EnvPlain {
                            name: n.into(),
                            value: v.to_string(),
                        });
                    }
                }
                _ if required && default.is_none() => {
                    return Err(AppError::bad_input(
                        "env",
                        format!("the required environment variable {n} is missing"),
                    ));
                }
                _ => {
                    if let Some(dv) = default
                        && !secret
                    {
                        plain.push(manifests::EnvPlain {
                            name: n.into(),
                            value: dv.into(),
                        });
                    }
                }
            }
        }
        for (n, v) in &input.env {
            if !declared
                .iter()
                .any(|d| d.get("name").and_then(Value::as_str) == Some(n))
            {
                plain.push(manifests::EnvPlain {
                    name: n.clone(),
                    value: v.clone(),
                });
            }
        }
        let server_args = registry_args(reqs);
        let mut args = server_args.clone();
        args.extend(input.args.iter().cloned());
        let target_port = reqs
            .get("targetPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        let spec = InstanceSpec {
            server_id: server.id,
            server_name: server.name.clone(),
            image,
            transport: server.transport.as_db_str().into(),
            replicas,
            env: plain,
            secret_env: secret_values.iter().map(|(n, _)| n.clone()).collect(),
            secret_name: (!secret_values.is_empty()).then(|| manifests::secret_name(&name)),
            args,
            resources,
            target_port,
            network_permissions: server.network_permissions.clone(),
            server_version: server.version.clone(),
            env_schema: Some(drift::declared_env(reqs)),
            server_args: Some(server_args),
        };
        // --- the cluster (reads only)
        let (cluster, clients) = self
            .connected_cluster(input.cluster_id, "clusterId")
            .await?;
        match Api::<Namespace>::all(clients.api.clone())
            .get_opt(&input.namespace)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(AppError::bad_input(
                    "namespace",
                    format!(
                        "namespace {} does not exist in cluster {}",
                        input.namespace, cluster.name
                    ),
                ));
            }
            Err(e) if api_code(&e) == Some(403) => {
                return Err(AppError::Forbidden(format!(
                    "the gateway may not read namespace {} in cluster {}",
                    input.namespace, cluster.name
                )));
            }
            Err(e) => return Err(kube_err(&e, "reading the namespace")),
        }
        let mut needs = vec![
            ("create", "apps", "deployments"),
            ("patch", "apps", "deployments"),
        ];
        if spec.is_network() {
            needs.push(("create", "", "services"));
        }
        if spec.secret_name.is_some() {
            needs.push(("create", "", "secrets"));
        }
        Self::require_access(&clients, &input.namespace, &needs).await?;
        if store::instance_name_taken(pool, cluster.id, &input.namespace, &name).await? {
            return Err(AppError::bad_input(
                "name",
                format!(
                    "an instance named {name} already exists in namespace {}",
                    input.namespace
                ),
            ));
        }
        match Api::<Deployment>::namespaced(clients.api.clone(), &input.namespace)
            .get_opt(&name)
            .await
        {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(AppError::bad_input(
                    "name",
                    format!(
                        "a Deployment named {name} already exists in namespace {}",
                        input.namespace
                    ),
                ));
            }
            Err(e) => return Err(kube_err(&e, "checking the name")),
        }
        // --- record, then act
        let configuration = serde_json::to_value(&spec).expect("serialisable");
        let mut parameters = configuration.clone();
        parameters["clusterId"] = json!(cluster.id);
        parameters["namespace"] = json!(input.namespace);
        parameters["name"] = json!(name);
        let (inst, op) = store::insert_deploy(
            pool,
            actor,
            store::NewInstance {
                server_id: server.id,
                cluster_id: cluster.id,
                name: name.clone(),
                namespace: input.namespace.clone(),
                replicas,
                configuration,
                parameters,
            },
        )
        .await?;
        self.ensure_watch(cluster.id, &input.namespace).await;
        if !secret_values.is_empty() {
            let obj =
                manifests::secret(inst.id, &name, &input.namespace, server.id, &secret_values);
            let api: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(clients.api.clone(), &input.namespace);
            let pp = PatchParams::apply(manifests::FIELD_MANAGER).force();
            if let Err(e) = api
                .patch(&manifests::secret_name(&name), &pp, &Patch::Apply(&obj))
                .await
            {
                // Without the Secret the pods could never start; the driver fails the
                // operation with this reason.
                let (reason, msg) = kube_reason(&e);
                let _ = store::log_line(
                    pool,
                    op.id,
                    "error",
                    &format!("storing the secret env values failed: {reason}: {msg}"),
                )
                .await;
            } else {
                let _ = store::log_line(
                    pool,
                    op.id,
                    "info",
                    &format!(
                        "secret env values stored in Secret {}",
                        manifests::secret_name(&name)
                    ),
                )
                .await;
            }
        }
        self.spawn_driver(op.id);
        Ok(op)
    }

    // -----------------------------------------------------------------------------------------
    // lifecycle
    // -----------------------------------------------------------------------------------------

    async fn live_instance(&self, id: Uuid) -> AppResult<(InstanceRow, Clients)> {
        let inst = store::instance(&self.inner.pool, id)
            .await?
            .ok_or(AppError::NotFound("instance"))?;
        if inst.status == InstanceStatus::Terminated {
            return Err(AppError::Conflict(
                "the instance is terminated; deploy it again instead".into(),
            ));
        }
        if let Some(op) = store::open_op_of(&self.inner.pool, id).await? {
            return Err(AppError::Conflict(format!(
                "a {} operation ({}) is still running on this instance; wait for it or cancel it",
                op.operation.as_db_str(),
                op.status.as_db_str().to_uppercase()
            )));
        }
        let (_, clients) = self.connected_cluster(inst.cluster_id, "id").await?;
        Ok((inst, clients))
    }

    async fn current_deployment(clients: &Clients, inst: &InstanceRow) -> AppResult<Deployment> {
        Api::<Deployment>::namespaced(clients.api.clone(), &inst.namespace)
            .get_opt(&inst.name)
            .await
            .map_err(|e| kube_err(&e, "reading the Deployment"))?
            .ok_or_else(|| {
                AppError::Conflict(format!(
                    "the Deployment {} no longer exists in the cluster",
                    inst.name
                ))
            })
    }

    fn revision_of(d: &Deployment) -> Option<i64> {
        d.metadata
            .annotations
            .as_ref()?
            .get("deployment.kubernetes.io/revision")?
            .parse()
            .ok()
    }

    /// `scaleInstance`.
    pub async fn scale(&self, actor: &Actor, id: Uuid, replicas: i32) -> AppResult<DeploymentRow> {
        self.start_background();
        check_replicas(replicas)?;
        let (inst, clients) = self.live_instance(id).await?;
        Self::require_access(
            &clients,
            &inst.namespace,
            &[("patch", "apps", "deployments")],
        )
        .await?;
        let d = Self::current_deployment(&clients, &inst).await?;
        let previous = d.spec.replicas.unwrap_or(1);
        let op = store::insert_op(
            &self.inner.pool,
            actor,
            &inst,
            DeploymentOperation::Scale,
            json!({"replicas": replicas, "previousReplicas": previous}),
            json!({"previousReplicas": previous, "previousRevision": Self::revision_of(&d)}),
        )
        .await?;
        self.ensure_watch(inst.cluster_id, &inst.namespace).await;
        self.spawn_driver(op.id);
        Ok(op)
    }

    /// `restartInstance`.
    pub async fn restart(&self, actor: &Actor, id: Uuid) -> AppResult<DeploymentRow> {
        self.start_background();
        let (inst, clients) = self.live_instance(id).await?;
        Self::require_access(
            &clients,
            &inst.namespace,
            &[("patch", "apps", "deployments")],
        )
        .await?;
        let d = Self::current_deployment(&clients, &inst).await?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let op = store::insert_op(
            &self.inner.pool,
            actor,
            &inst,
            DeploymentOperation::Restart,
            json!({"restartedAt": at}),
            json!({"previousRevision": Self::revision_of(&d)}),
        )
        .await?;
        self.ensure_watch(inst.cluster_id, &inst.namespace).await;
        self.spawn_driver(op.id);
        Ok(op)
    }

    /// The ReplicaSet holding the revision before the Deployment's current one.
    pub(crate) async fn previous_revision(
        clients: &Clients,
        inst: &InstanceRow,
        current: i64,
    ) -> AppResult<Option<(i64, ReplicaSet)>> {
        let rs = Api::<ReplicaSet>::namespaced(clients.api.clone(), &inst.namespace)
            .list(&ListParams::default().labels(&manifests::selector(inst.id)))
            .await
            .map_err(|e| kube_err(&e, "listing ReplicaSets"))?;
        Ok(rs
            .items
            .into_iter()
            .filter_map(|r| {
                let rev: i64 = r
                    .metadata
                    .annotations
                    .as_ref()?
                    .get("deployment.kubernetes.io/revision")?
                    .parse()
                    .ok()?;
                (rev < current).then_some((rev, r))
            })
            .max_by_key(|(rev, _)| *rev))
    }

    /// `rollbackInstance`: back to the revision before the current one (as
    /// `kubectl rollout undo`).
    pub async fn rollback(&self, actor: &Actor, id: Uuid) -> AppResult<DeploymentRow> {
        self.start_background();
        let (inst, clients) = self.live_instance(id).await?;
        Self::require_access(
            &clients,
            &inst.namespace,
            &[("update", "apps", "deployments")],
        )
        .await?;
        let d = Self::current_deployment(&clients, &inst).await?;
        let current = Self::revision_of(&d).unwrap_or(0);
        let Some((target, _)) = Self::previous_revision(&clients, &inst, current).await? else {
            return Err(AppError::Conflict(
                "the instance has no previous revision to roll back to".into(),
            ));
        };
        // When the revision being left is an upgrade's, its configuration is restored too.
        let restore = store::latest_op(&self.inner.pool, inst.id)
            .await?
            .filter(|op| op.operation == DeploymentOperation::Upgrade)
            .and_then(|op| op.rollback_info)
            .map(|info| info["configuration"].clone())
            .unwrap_or(Value::Null);
        let op = store::insert_op(
            &self.inner.pool,
            actor,
            &inst,
            DeploymentOperation::Rollback,
            json!({"toRevision": target, "fromRevision": current, "restoreConfiguration": restore}),
            json!({"previousRevision": current, "toRevision": target}),
        )
        .await?;
        self.ensure_watch(inst.cluster_id, &inst.namespace).await;
        self.spawn_driver(op.id);
        Ok(op)
    }

    /// `deleteInstance`.
    pub async fn delete(&self, actor: &Actor, id: Uuid) -> AppResult<DeploymentRow> {
        self.start_background();
        let (inst, clients) = self.live_instance(id).await?;
        Self::require_access(
            &clients,
            &inst.namespace,
            &[("delete", "apps", "deployments")],
        )
        .await?;
        let rev = Api::<Deployment>::namespaced(clients.api.clone(), &inst.namespace)
            .get_opt(&inst.name)
            .await
            .ok()
            .flatten()
            .and_then(|d| Self::revision_of(&d));
        let op = store::insert_op(
            &self.inner.pool,
            actor,
            &inst,
            DeploymentOperation::Delete,
            json!({}),
            json!({"previousRevision": rev, "configuration": inst.configuration}),
        )
        .await?;
        self.ensure_watch(inst.cluster_id, &inst.namespace).await;
        self.spawn_driver(op.id);
        Ok(op)
    }

    /// `cancelDeployment`: records CANCELLED, then stops the rollout in the cluster. A cancelled
    /// deploy (the instance's first operation) removes what it created and leaves the instance
    /// TERMINATED; any other operation pauses the Deployment and, for a scale, sets it back to
    /// the replica count it had before.
    pub async fn cancel(&self, actor: &Actor, id: Uuid) -> AppResult<DeploymentRow> {
        self.start_background();
        // The driver notices on its next write (conditioned on the operation being open) and
        // stops; it is not aborted, which could leave a transaction open.
        let row = store::cancel(&self.inner.pool, actor, id).await?;
        let me = self.clone();
        let op = row.clone();
        // The record is final; stopping the rollout is best effort (the cluster may be away).
        let stop = async move {
            if let Err(e) = me.stop_rollout(&op).await {
                let _ = store::log_line(
                    &me.inner.pool,
                    op.id,
                    "warn",
                    &format!("stopping the rollout failed: {}", e.public_message()),
                )
                .await;
            }
        };
        let _ =
            tokio::time::timeout(Duration::from_millis(self.inner.cfg.timeout_ms * 2), stop).await;
        Ok(row)
    }

    async fn stop_rollout(&self, op: &DeploymentRow) -> AppResult<()> {
        let inst = store::instance(&self.inner.pool, op.instance_id)
            .await?
            .ok_or(AppError::NotFound("instance"))?;
        if op.operation == DeploymentOperation::Deploy {
            return self.undo_deploy(op, &inst).await;
        }
        let clients = self.clients_of(inst.cluster_id).await?;
        let api: Api<Deployment> = Api::namespaced(clients.api.clone(), &inst.namespace);
        if api
            .get_opt(&inst.name)
            .await
            .map_err(|e| kube_err(&e, "reading the Deployment"))?
            .is_none()
        {
            return Ok(());
        }
        let mut patch = json!({"spec": {"paused": true}});
        let previous = op
            .rollback_info
            .as_ref()
            .and_then(|r| r.get("previousReplicas"))
            .and_then(Value::as_i64);
        if matches!(
            op.operation,
            DeploymentOperation::Deploy | DeploymentOperation::Scale
        ) && let Some(p) = previous
        {
            patch["spec"]["replicas"] = json!(p);
        }
        api.patch(
            &inst.name,
            &PatchParams::apply(manifests::CONTROL_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| kube_err(&e, "pausing the Deployment"))?;
        let _ = store::log_line(
            &self.inner.pool,
            op.id,
            "info",
            &format!("rollout stopped: {patch}"),
        )
        .await;
        self.inner.status_cache.invalidate(&inst.id).await;
        self.wake(inst.id);
        Ok(())
    }

    /// Cancelling a deploy: the instance is TERMINATED at once (the cancel is the record of
    /// why), then its objects are deleted from the cluster.
    async fn undo_deploy(&self, op: &DeploymentRow, inst: &InstanceRow) -> AppResult<()> {
        let why = format!("deploy cancelled ({})", op.initiated_by);
        store::terminate_instance(&self.inner.pool, inst.id, &why).await?;
        self.inner.status_cache.invalidate(&inst.id).await;
        let clients = self.clients_of(inst.cluster_id).await?;
        driver::delete_objects(&clients.api, &inst.namespace, &inst.name)
            .await
            .map_err(|e| kube_err(&e, "deleting the cancelled deploy's objects"))?;
        let _ = store::log_line(
            &self.inner.pool,
            op.id,
            "info",
            &format!(
                "{}/{}: objects deleted, instance terminated",
                inst.namespace, inst.name
            ),
        )
        .await;
        self.wake(inst.id);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // drivers, watchers, logs
    // -----------------------------------------------------------------------------------------

    /// Starts driving an operation in this process (no-op when already driven here; the
    /// driver itself takes the lease, so another process's driver is never doubled).
    pub fn spawn_driver(&self, op: Uuid) {
        if *self.inner.stopping.borrow() {
            return;
        }
        let mut drivers = self.inner.drivers.lock().unwrap();
        if let Some(t) = drivers.get(&op)
            && !t.is_finished()
        {
            return;
        }
        let me = self.clone();
        drivers.insert(
            op,
            tokio::spawn(async move {
                driver::drive(me.clone(), op).await;
                me.inner.drivers.lock().unwrap().remove(&op);
            }),
        );
    }

    pub(crate) fn waker(&self, instance: Uuid) -> Arc<tokio::sync::Notify> {
        self.inner
            .wakers
            .lock()
            .unwrap()
            .entry(instance)
            .or_default()
            .clone()
    }

    pub(crate) fn wake(&self, instance: Uuid) {
        if let Some(n) = self.inner.wakers.lock().unwrap().get(&instance) {
            n.notify_one();
        }
    }

    /// Makes sure Deployments, Pods and Events of `namespace` in `cluster` are watched.
    pub async fn ensure_watch(&self, cluster: Uuid, namespace: &str) {
        if *self.inner.stopping.borrow() {
            return;
        }
        let key = (cluster, namespace.to_string());
        {
            let w = self.inner.watches.lock().unwrap();
            if w.get(&key).is_some_and(|h| !h.task.is_finished()) {
                return;
            }
        }
        let Ok(clients) = self.clients_of(cluster).await else {
            return;
        };
        // Check again under the lock: two callers may have got here at once.
        let mut w = self.inner.watches.lock().unwrap();
        if w.get(&key).is_some_and(|h| !h.task.is_finished()) {
            return;
        }
        let handle = watch::spawn(self.clone(), cluster, namespace.to_string(), clients);
        w.insert(key, handle);
    }

    /// Whether the watch of `(cluster, namespace)` is synced, so that cached statuses are fresh.
    pub(crate) fn watch_synced(&self, cluster: Uuid, namespace: &str) -> bool {
        self.inner
            .watches
            .lock()
            .unwrap()
            .get(&(cluster, namespace.to_string()))
            .is_some_and(|h| h.synced.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Reads an instance's state straight from the API (Deployment, pods, events).
    pub(crate) async fn observe_live(
        clients: &Clients,
        inst: &InstanceRow,
    ) -> Result<Observed, kube::Error> {
        let d = Api::<Deployment>::namespaced(clients.api.clone(), &inst.namespace)
            .get_opt(&inst.name)
            .await?;
        let pods = Api::<Pod>::namespaced(clients.api.clone(), &inst.namespace)
            .list(&ListParams::default().labels(&manifests::selector(inst.id)))
            .await?
            .items;
        let pod_names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(
            clients.api.clone(),
            &inst.namespace,
        )
        .list(&ListParams::default().limit(500))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
        let mine: Vec<&k8s_openapi::api::core::v1::Event> = events
            .iter()
            .filter(|e| health::event_concerns(e, &inst.name, &pod_names))
            .collect();
        Ok(health::derive(d.as_ref(), &pods, &mine))
    }

    /// `Instance.logs`: the newest (ready, else any) pod's log, cached for 2 minutes.
    pub async fn logs(
        &self,
        inst: &InstanceRow,
        cluster: &ClusterRow,
        tail_lines: Option<i32>,
        since_seconds: Option<i32>,
        container: Option<String>,
    ) -> PodLogs {
        let key = (inst.id, tail_lines, since_seconds, container.clone());
        if let Some(hit) = self.inner.logs_cache.get(&key).await {
            return (*hit).clone();
        }
        let out = self
            .read_logs(inst, cluster, tail_lines, since_seconds, container)
            .await;
        self.inner
            .logs_cache
            .insert(key, Arc::new(out.clone()))
            .await;
        out
    }

    async fn read_logs(
        &self,
        inst: &InstanceRow,
        cluster: &ClusterRow,
        tail_lines: Option<i32>,
        since_seconds: Option<i32>,
        container: Option<String>,
    ) -> PodLogs {
        let unavailable =
            |reason: String, pod: Option<String>, container: Option<String>| PodLogs {
                available: false,
                reason: Some(reason),
                pod,
                container,
                lines: vec![],
            };
        if inst.status == InstanceStatus::Terminated {
            return unavailable("the instance is terminated".into(), None, container);
        }
        let clients = match self.clients(cluster).await {
            Ok(c) => c,
            Err(e) => return unavailable(e.public_message(), None, container),
        };
        let api: Api<Pod> = Api::namespaced(clients.api.clone(), &inst.namespace);
        let pods = match api
            .list(&ListParams::default().labels(&manifests::selector(inst.id)))
            .await
        {
            Ok(p) => p.items,
            Err(e) => {
                return unavailable(
                    format!("the pods cannot be listed: {}", kube_reason(&e).1),
                    None,
                    container,
                );
            }
        };
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let pod = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .max_by_key(|p| {
                (
                    ready(p),
                    p.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                )
            });
        let Some(pod) = pod else {
            return unavailable("the instance has no pods".into(), None, container);
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let container = container.unwrap_or_else(|| manifests::CONTAINER.to_string());
        let lp = LogParams {
            container: Some(container.clone()),
            tail_lines: tail_lines.map(i64::from),
            since_seconds: since_seconds.map(i64::from),
            limit_bytes: Some(MAX_LOG_BYTES),
            ..Default::default()
        };
        match api.logs(&pod_name, &lp).await {
            Ok(text) => PodLogs {
                available: true,
                reason: None,
                pod: Some(pod_name),
                container: Some(container),
                lines: text.lines().map(str::to_string).collect(),
            },
            Err(e) => unavailable(kube_reason(&e).1, Some(pod_name), Some(container)),
        }
    }
}

/// The source of clients built from the gateway's kubeconfig or in-cluster identity.
fn source_of_config(context: Option<&str>, in_cluster: bool) -> String {
    match (in_cluster, context) {
        (true, _) => "in-cluster".into(),
        (false, Some(c)) => format!("context:{c}"),
        (false, None) => "context".into(),
    }
}

/// Checks a `resources` input: an object with only `requests` and `limits`, each mapping
/// resource names to quantities.
fn validate_resources(r: Value) -> AppResult<Value> {
    let bad = || {
        AppError::bad_input(
            "resources",
            "resources must look like {\"requests\": {\"cpu\": \"100m\"}, \"limits\": {\"memory\": \"128Mi\"}}",
        )
    };
    let obj = r.as_object().ok_or_else(bad)?;
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        if k != "requests" && k != "limits" {
            return Err(bad());
        }
        let m = v.as_object().ok_or_else(bad)?;
        let mut q = serde_json::Map::new();
        for (name, val) in m {
            let s = match val {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad()),
            };
            let ok = !s.is_empty()
                && s.len() <= 32
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+')
                && s.starts_with(|c: char| c.is_ascii_digit() || c == '.');
            if !ok || name.is_empty() || name.len() > 253 {
                return Err(bad());
            }
            q.insert(name.clone(), json!(s));
        }
        out.insert(k.clone(), Value::Object(q));
    }
    Ok(Value::Object(out))
}

/// Checks `env` input: valid names, each once, values of at most 32 KiB.
fn check_env_input(env: &[(String, String)]) -> AppResult<()> {
    let mut seen = std::collections::HashSet::new();
    for (n, v) in env {
        if !manifests::is_env_name(n) {
            return Err(AppError::bad_input(
                "env",
                format!("{n:?} is not a valid environment variable name"),
            ));
        }
        if !seen.insert(n.clone()) {
            return Err(AppError::bad_input(
                "env",
                format!("environment variable {n} is given twice"),
            ));
        }
        if v.len() > 32 * 1024 {
            return Err(AppError::bad_input(
                "env",
                format!("the value of {n} is too long"),
            ));
        }
    }
    Ok(())
}

/// The arguments a server's registry entry gives its container.
fn registry_args(requirements: &Value) -> Vec<String> {
    requirements
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Adds the configured default CPU limit to `resources` when they set no CPU limit (the share
/// of that limit is what `MonitoringMetrics.cpuUsage` reports).
fn with_default_cpu_limit(resources: Option<Value>, default: &str) -> Option<Value> {
    if default.is_empty() {
        return resources;
    }
    let mut r = resources.unwrap_or_else(|| json!({}));
    if r.pointer("/limits/cpu").is_none() {
        if r.get("limits").is_none() {
            r["limits"] = json!({});
        }
        r["limits"]["cpu"] = json!(default);
    }
    Some(r)
}

/// The replica rule of `deployServer` and `scaleInstance`: 0 (stopped) to 100.
fn check_replicas(replicas: i32) -> AppResult<()> {
    if (0..=100).contains(&replicas) {
        return Ok(());
    }
    Err(AppError::bad_input(
        "replicas",
        "replicas must be between 0 and 100 (0 stops the instance)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_cpu_limit_fills_only_what_is_missing() {
        assert_eq!(
            with_default_cpu_limit(None, "500m"),
            Some(json!({"limits": {"cpu": "500m"}}))
        );
        let own = json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "2", "memory": "1Gi"}});
        assert_eq!(with_default_cpu_limit(Some(own.clone()), "500m"), Some(own));
        assert_eq!(
            with_default_cpu_limit(Some(json!({"limits": {"memory": "1Gi"}})), "250m"),
            Some(json!({"limits": {"memory": "1Gi", "cpu": "250m"}}))
        );
        assert_eq!(with_default_cpu_limit(None, ""), None);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v1.33.0"), Some((1, 33)));
        assert_eq!(parse_version("1.24"), Some((1, 24)));
        assert_eq!(parse_version("v1.27.3-gke.100"), Some((1, 27)));
        assert_eq!(parse_version("1.28+"), Some((1, 28)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("v1.20.2").unwrap() < (1, 24));
    }

    #[test]
    fn resources_are_checked() {
        assert!(validate_resources(json!({"requests": {"cpu": "100m", "memory": "64Mi"}})).is_ok());
        assert!(validate_resources(json!({"limits": {"cpu": 1}})).is_ok());
        assert!(validate_resources(json!({"foo": {}})).is_err());
        assert!(validate_resources(json!({"requests": {"cpu": "lots"}})).is_err());
        assert!(validate_resources(json!([1])).is_err());
    }
}
