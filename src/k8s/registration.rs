//! `registerCluster`, `updateCluster` and `deleteCluster`, and keeping every process's clients
//! and watchers in step with the cluster rows.
//!
//! * A cluster is reached through the gateway's kubeconfig (a context), its in-cluster identity,
//!   or credentials given through the API ([`super::credentials`]). Credentials are checked
//!   (reachability, TLS, authentication, version, access level) before anything is stored; a
//!   failure stores nothing and says why.
//! * Clients are cached per cluster with the source they were built from; a change of the row
//!   (new credentials, removal) makes every process rebuild them: at once through the change
//!   notification `cluster:<id>` ([`ClusterManager::cluster_changed`]), and at the latest on the
//!   next recovery round ([`ClusterManager::reconcile_watches`]).

use std::collections::HashSet;

use dataloaders::enums::ClusterStatus;
use dataloaders::models::ClusterRow;
use uuid::Uuid;

use super::credentials::{self, Credentials, CredentialsInput};
use super::sources::source_of_config;
use super::store::{self, ClusterCheck};
use super::{Clients, ClusterInput, ClusterManager, ClusterUpdate};
use crate::audit::Actor;
use crate::error::{AppError, AppResult};

/// Checks a cluster name: 1 to 64 letters, digits and hyphens.
fn check_name(name: &str) -> AppResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_input(
            "name",
            "name must be 1 to 64 letters, digits and hyphens",
        ))
    }
}

/// Why a connection failed, from the error and its sources: `TLS` or `UNREACHABLE`.
fn failure_kind(e: &kube::Error) -> (&'static str, String) {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        chain.push(err.to_string());
        cur = err.source();
    }
    let text = chain.join(": ");
    let lower = text.to_ascii_lowercase();
    let tls = ["certificate", "tls", "handshake", "unknownissuer", "ssl"]
        .iter()
        .any(|w| lower.contains(w));
    let innermost = chain.last().cloned().unwrap_or_default();
    (if tls { "TLS" } else { "UNREACHABLE" }, innermost)
}

/// What a failed check of API-given credentials becomes: a refusal naming the field to fix.
async fn refusal(
    clients: &Clients,
    creds: &Credentials,
    kubeconfig: bool,
    check: &ClusterCheck,
) -> AppError {
    let field = |name: &str| {
        if kubeconfig {
            "credentials.kubeconfig".to_string()
        } else {
            format!("credentials.{name}")
        }
    };
    if check.status == ClusterStatus::Unauthorized {
        return AppError::bad_input(
            creds.credential_field(kubeconfig),
            "UNAUTHORIZED: the API server rejected these credentials (401 Unauthorized); nothing \
             was stored",
        );
    }
    // Ask once more to see the transport error itself (the check keeps only a summary).
    let (kind, detail) = match clients.api.apiserver_version().await {
        Err(e) if matches!(e, kube::Error::Api(_)) => ("UNREACHABLE", e.to_string()),
        Err(e) => failure_kind(&e),
        Ok(_) => (
            "UNREACHABLE",
            check.error.clone().unwrap_or_else(|| "no answer".into()),
        ),
    };
    let (name, what) = if kind == "TLS" {
        (
            "certificateAuthorityData",
            "the API server's certificate cannot be verified with the given CA",
        )
    } else {
        ("server", "the API server cannot be reached")
    };
    AppError::bad_input(
        field(name),
        format!("{kind}: {what} ({detail}); nothing was stored"),
    )
}

impl ClusterManager {
    /// The source of a row's clients and, for clusters registered through the API, their opened
    /// credentials.
    pub(crate) fn access_of(&self, row: &ClusterRow) -> AppResult<(String, Option<Credentials>)> {
        match &row.credentials {
            Some(sealed) => {
                let creds = credentials::open(&self.inner.keys, row.id, sealed)?;
                Ok((creds.fingerprint(), Some(creds)))
            }
            None => Ok((
                source_of_config(
                    row.context.as_deref(),
                    row.in_cluster,
                    self.inner.cfg.kubeconfig.as_deref(),
                ),
                None,
            )),
        }
    }

    fn too_old(&self, field: &str, check: &ClusterCheck) -> AppResult<()> {
        match &check.version {
            Some(v) if !self.version_ok(v) => Err(AppError::bad_input(
                field,
                format!(
                    "TOO_OLD: the cluster runs Kubernetes {v}, older than the oldest supported \
                     version {}.{} (HIVEGRAPH_K8S_MIN_VERSION)",
                    self.inner.min_version.0, self.inner.min_version.1
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Validates API-given credentials and checks the cluster with them; refuses unless it is
    /// reachable, trusts them and runs a supported version.
    async fn checked_credentials(
        &self,
        input: CredentialsInput,
        context: Option<&str>,
    ) -> AppResult<(Credentials, Clients, ClusterCheck)> {
        let kubeconfig = input.kubeconfig.is_some();
        let creds = credentials::validate(input, context)?;
        let clients = self
            .clients_from(creds.kube_config().await?, creds.fingerprint())
            .map_err(|_| {
                AppError::bad_input(
                    creds.credential_field(kubeconfig),
                    "the certificates or key cannot be used (not valid PEM of the expected kind)",
                )
            })?;
        let check = self.check(&clients).await;
        if check.status != ClusterStatus::Connected {
            return Err(refusal(&clients, &creds, kubeconfig, &check).await);
        }
        let field = if kubeconfig {
            "credentials.kubeconfig"
        } else {
            "credentials.server"
        };
        self.too_old(field, &check)?;
        Ok((creds, clients, check))
    }

    /// `registerCluster`.
    pub async fn register(&self, actor: &Actor, input: ClusterInput) -> AppResult<ClusterRow> {
        self.start_background();
        check_name(&input.name)?;
        if input.in_cluster && (input.context.is_some() || input.credentials.is_some()) {
            let field = if input.context.is_some() {
                "context"
            } else {
                "credentials"
            };
            return Err(AppError::bad_input(
                field,
                "give one of context, inCluster or credentials",
            ));
        }
        if store::cluster_name_taken(&self.inner.pool, &input.name, None).await? {
            return Err(AppError::bad_input(
                "name",
                "a cluster with this name already exists",
            ));
        }
        let id = Uuid::new_v4();
        let (clients, check, context, sealed) = match input.credentials {
            Some(given) => {
                let (creds, clients, check) = self
                    .checked_credentials(given, input.context.as_deref())
                    .await?;
                let sealed = credentials::seal(&self.inner.keys, id, &creds);
                (clients, check, None, Some(sealed))
            }
            None => {
                let clients = self
                    .build_clients(input.context.as_deref(), input.in_cluster)
                    .await?;
                let check = self.check(&clients).await;
                let field = if input.in_cluster {
                    "inCluster"
                } else {
                    "context"
                };
                self.too_old(field, &check)?;
                (clients, check, input.context, None)
            }
        };
        let row = store::insert_cluster(
            &self.inner.pool,
            actor,
            store::NewCluster {
                id,
                name: input.name,
                endpoint: clients.endpoint.clone(),
                context,
                in_cluster: input.in_cluster,
                credentials: sealed,
            },
            &check,
        )
        .await?;
        self.inner.clients.lock().unwrap().insert(row.id, clients);
        Ok(row)
    }

    /// `updateCluster`: a new name, and/or new credentials (or another context of the gateway's
    /// kubeconfig), checked like a registration before anything is stored.
    pub async fn update_cluster(
        &self,
        actor: &Actor,
        id: Uuid,
        input: ClusterUpdate,
    ) -> AppResult<ClusterRow> {
        self.start_background();
        if store::cluster(&self.inner.pool, id).await?.is_none() {
            return Err(AppError::NotFound("cluster"));
        }
        if let Some(name) = &input.name {
            check_name(name)?;
            if store::cluster_name_taken(&self.inner.pool, name, Some(id)).await? {
                return Err(AppError::bad_input(
                    "name",
                    "a cluster with this name already exists",
                ));
            }
        }
        let access = match (input.credentials, input.context) {
            (Some(given), context) => {
                let (creds, clients, check) =
                    self.checked_credentials(given, context.as_deref()).await?;
                let sealed = credentials::seal(&self.inner.keys, id, &creds);
                Some((clients.endpoint, None, Some(sealed), check))
            }
            (None, Some(context)) => {
                let clients = self.build_clients(Some(&context), false).await?;
                let check = self.check(&clients).await;
                self.too_old("context", &check)?;
                Some((clients.endpoint, Some(context), None, check))
            }
            (None, None) => None,
        };
        let row = store::update_cluster(
            &self.inner.pool,
            actor,
            id,
            store::ClusterChange {
                name: input.name,
                access,
            },
        )
        .await?;
        self.forget_cluster(id).await;
        Ok(row)
    }

    /// `deleteCluster`: refused while an instance on it is not TERMINATED; otherwise removes it
    /// and its credentials and stops this process's watchers of it (other processes follow on
    /// the change notification). Returns the number of past instances kept as history.
    pub async fn delete_cluster(&self, actor: &Actor, id: Uuid) -> AppResult<i64> {
        let past = store::remove_cluster(&self.inner.pool, actor, id).await?;
        self.forget_cluster(id).await;
        Ok(past)
    }

    /// A cluster row changed in some process (credentials, context, removal): follow it here.
    pub fn cluster_changed(&self, id: Uuid) {
        let me = self.clone();
        tokio::spawn(async move { me.forget_cluster(id).await });
    }

    /// Drops the cached clients of a cluster and stops its watchers; when the cluster is still
    /// registered the watchers start again with fresh clients.
    pub(crate) async fn forget_cluster(&self, id: Uuid) {
        self.inner.clients.lock().unwrap().remove(&id);
        let stopped: Vec<String> = {
            let mut watches = self.inner.watches.lock().unwrap();
            let keys: Vec<(Uuid, String)> =
                watches.keys().filter(|(c, _)| *c == id).cloned().collect();
            keys.into_iter()
                .filter_map(|k| {
                    let h = watches.remove(&k)?;
                    h.stop.notify_one();
                    Some(k.1)
                })
                .collect()
        };
        if matches!(store::cluster(&self.inner.pool, id).await, Ok(Some(_))) {
            for ns in stopped {
                self.ensure_watch(id, &ns).await;
            }
        }
    }

    /// Stops watchers whose cluster was removed or whose credentials changed since they
    /// started (a missed change notification); the recovery round then restarts the ones still
    /// needed.
    pub(crate) async fn reconcile_watches(&self) {
        let watched: Vec<(Uuid, String)> = self
            .inner
            .watches
            .lock()
            .unwrap()
            .iter()
            .map(|((c, _), h)| (*c, h.source.clone()))
            .collect();
        let mut done = HashSet::new();
        for (cluster, source) in watched {
            if done.contains(&cluster) {
                continue;
            }
            let current = match store::cluster(&self.inner.pool, cluster).await {
                Ok(Some(row)) => self.access_of(&row).ok().map(|(s, _)| s),
                Ok(None) => None,
                Err(_) => continue,
            };
            if current.as_deref() != Some(source.as_str()) {
                tracing::info!(%cluster, "the cluster's credentials changed; restarting its watches");
                done.insert(cluster);
                self.forget_cluster(cluster).await;
            }
        }
    }

    /// The running watches of `cluster` in this process: namespace and the source of the
    /// credentials they use (a fingerprint, never the credentials).
    pub fn watches_of(&self, cluster: Uuid) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .inner
            .watches
            .lock()
            .unwrap()
            .iter()
            .filter(|((c, _), h)| *c == cluster && !h.task.is_finished())
            .map(|((_, ns), h)| (ns.clone(), h.source.clone()))
            .collect();
        out.sort();
        out
    }
}
