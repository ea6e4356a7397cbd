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

mod api_metrics;
pub mod capabilities;
mod clusters;
pub mod credentials;
mod deploy;
pub mod drift;
pub mod driver;
pub mod health;
mod lifecycle;
mod lifecycle_operator;
mod logs;
pub mod manifests;
pub mod operator;
pub mod ownership;
pub mod reach;
mod registration;
mod sources;
pub mod staleness;
pub mod store;
mod tasks;
mod upgrade;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataloaders::DbPool;
use dataloaders::enums::*;
use dataloaders::models::{ClusterRow, DeploymentRow, InstanceRow};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::Actor;
use crate::cache::{Caches, DomainCache, INSTANCE_STATUS_TTL};
use crate::config::K8sConfig;
use crate::error::{AppError, AppResult};
use health::Observed;
use manifests::{Backend, InstanceSpec};
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
    pub(crate) status_cache: DomainCache<Uuid, Arc<Observed>>,
    /// Highest observation `rv` written per instance, so that a lagging watch store never
    /// overwrites a fresher observation.
    applied_rv: Mutex<HashMap<Uuid, u64>>,
    /// Pod logs, 2 minutes.
    logs_cache: DomainCache<LogKey, Arc<PodLogs>>,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Clusters found unreachable, and since when (instance health goes stale).
    pub(crate) outages: staleness::Outages,
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
        caches: &Caches,
    ) -> anyhow::Result<Self> {
        let min_version = parse_version(&cfg.min_version).ok_or_else(|| {
            anyhow::anyhow!(
                "HIVEGRAPH_K8S_MIN_VERSION must look like 1.24, not {:?}",
                cfg.min_version
            )
        })?;
        let owner = format!(
            "{}/{}/{}",
            cfg.hostname,
            std::process::id(),
            Uuid::new_v4().simple()
        );
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
                status_cache: caches.domain(
                    "cluster_instance_state",
                    INSTANCE_STATUS_TTL,
                    100_000,
                    None,
                ),
                // Keyed by client input (tailLines, sinceSeconds, container): weighed by bytes.
                logs_cache: caches.domain(
                    "pod_logs",
                    Duration::from_secs(120),
                    MAX_LOG_CACHE_BYTES,
                    Some(|_k: &LogKey, v: &Arc<PodLogs>| {
                        let bytes: usize =
                            v.lines.iter().map(|l| l.len() + 24).sum::<usize>() + 256;
                        bytes.try_into().unwrap_or(u32::MAX)
                    }),
                ),
                background: Mutex::new(Vec::new()),
                applied_rv: Mutex::new(HashMap::new()),
                stopping: tokio::sync::watch::channel(false).0,
                outages: Default::default(),
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

    /// Writes an observation into the instance row unless a fresher one was written already
    /// (observations of a missing Deployment are confirmed by their callers and always count).
    /// Returns false only when the database did not take it (the caller derives it again
    /// later); a stale observation is dropped and counts as done.
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
                return true;
            }
            *last = if o.missing { 0 } else { o.rv.max(*last) };
        }
        if let Err(e) =
            store::apply_observation(&self.inner.pool, id, o, scaling, deployed_before).await
        {
            tracing::warn!(error = ?e, %id, "instance update failed");
            return false;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("v1.33.0"), Some((1, 33)));
        assert_eq!(parse_version("1.24"), Some((1, 24)));
        assert_eq!(parse_version("v1.27.3-gke.100"), Some((1, 27)));
        assert_eq!(parse_version("1.28+"), Some((1, 28)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("v1.20.2").unwrap() < (1, 24));
    }
}
