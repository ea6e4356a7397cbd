//! Drives one operation to its end: takes the lease, acts on the cluster (server-side apply,
//! patch, replace or delete), then follows the rollout until it is done, failed, timed out or
//! cancelled. Every step is recorded with its timestamp and logged to `deployment_logs`.
//!
//! Kubernetes outages are waited out (the operation's deadline still applies); permanent API
//! errors (invalid object, forbidden) fail the operation with the Kubernetes reason. A database
//! outage is waited out too: the driver keeps its lease (renewing it as soon as the database
//! answers) and resumes the operation at once, instead of leaving it to lease expiry. While the
//! API server is unreachable the driver asks for the cluster's clients again on every retry, so
//! new credentials or a new CA are picked up within one retry.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dataloaders::enums::DeploymentOperation;
use dataloaders::models::{DeploymentRow, InstanceRow};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use uuid::Uuid;

use super::health::{Observed, Verdict};
use super::manifests::{self, InstanceSpec};
use super::{Clients, ClusterManager, is_transient, kube_reason, ownership, store};

mod operator_steps;

/// Why driving stopped early.
enum Stop {
    /// The lease was lost or the operation ended elsewhere (cancelled): stop quietly.
    Lost,
    /// The operation failed: (reason, message).
    Failed(String, String),
    /// The database did not answer: wait for it and resume.
    Database,
}

impl From<crate::error::AppError> for Stop {
    fn from(e: crate::error::AppError) -> Self {
        tracing::warn!(error = ?e, "driver: database error; resuming when it answers");
        Stop::Database
    }
}

/// How many times one driver resumes after a database error before it leaves the operation
/// to lease expiry (a database that answers the lease but keeps failing the operation).
const MAX_RESUMES: u32 = 20;

/// What one pass of the driver ended with.
enum Pass {
    /// Finished, failed, lost or not ours: nothing more to do here.
    Over,
    /// The database failed us; the lease is still ours once it answers.
    Interrupted,
}

struct Driver {
    mgr: ClusterManager,
    op: DeploymentRow,
    inst: InstanceRow,
    clients: Clients,
    lease: chrono::Duration,
    deadline: chrono::DateTime<Utc>,
    last_renew: std::time::Instant,
    min_generation: i64,
    outage_logged: bool,
    last_reason: String,
}

/// Drives operation `id` if this process can take its lease; a database outage interrupts it
/// only until the database answers again.
pub async fn drive(mgr: ClusterManager, id: Uuid) {
    for _ in 0..=MAX_RESUMES {
        match drive_once(&mgr, id).await {
            Pass::Over => return,
            Pass::Interrupted => {
                if !wait_for_database(&mgr, id).await {
                    return;
                }
                tracing::info!(op = %id, "driver: database back; resuming the operation");
            }
        }
    }
}

/// Waits until the database answers, then renews the lease: true when the lease is still ours.
async fn wait_for_database(mgr: &ClusterManager, id: Uuid) -> bool {
    let inner = mgr.inner();
    let lease = chrono::Duration::seconds(inner.cfg.lease_seconds.max(1) as i64);
    let mut pause = Duration::from_millis(100);
    loop {
        if !mgr.pause(pause).await {
            return false;
        }
        match store::renew(&inner.pool, id, &inner.owner, lease).await {
            Ok(held) => return held,
            Err(_) => pause = (pause * 2).min(Duration::from_millis(500)),
        }
    }
}

async fn drive_once(mgr: &ClusterManager, id: Uuid) -> Pass {
    let mgr = mgr.clone();
    let inner = mgr.inner().clone();
    let lease = chrono::Duration::seconds(inner.cfg.lease_seconds.max(1) as i64);
    let op = match store::claim(&inner.pool, id, &inner.owner, lease).await {
        Ok(Some(op)) => op,
        Ok(None) => return Pass::Over,
        Err(_) => return Pass::Interrupted,
    };
    let inst = match store::instance(&inner.pool, op.instance_id).await {
        Ok(Some(inst)) => inst,
        Err(_) => return Pass::Interrupted,
        Ok(None) => {
            let _ = store::finish(
                &inner.pool,
                id,
                &inner.owner,
                Some(("InstanceMissing", "the instance record is gone")),
            )
            .await;
            return Pass::Over;
        }
    };
    let clients = match clients_for(&mgr, id, inst.cluster_id, lease).await {
        Ok(c) => c,
        Err(pass) => return pass,
    };
    let deadline = op.started_at
        + chrono::Duration::seconds(inner.cfg.operation_timeout_seconds.max(1) as i64);
    let mut d = Driver {
        mgr,
        op,
        inst,
        clients,
        lease,
        deadline,
        last_renew: std::time::Instant::now(),
        min_generation: 0,
        outage_logged: false,
        last_reason: String::new(),
    };
    let result = d.run().await;
    d.record(&result);
    match result {
        Ok(()) => Pass::Over,
        Err(Stop::Lost) => {
            d.after_cancel().await;
            Pass::Over
        }
        Err(Stop::Database) => Pass::Interrupted,
        Err(Stop::Failed(reason, message)) => {
            match store::finish(
                &d.mgr.inner().pool,
                d.op.id,
                &d.mgr.inner().owner,
                Some((&reason, &message)),
            )
            .await
            {
                Ok(_) => Pass::Over,
                Err(_) => Pass::Interrupted,
            }
        }
    }
}

/// The clients of the operation's cluster, waiting (lease renewed) while they cannot be built.
async fn clients_for(
    mgr: &ClusterManager,
    id: Uuid,
    cluster: Uuid,
    lease: chrono::Duration,
) -> Result<Clients, Pass> {
    let inner = mgr.inner();
    loop {
        match mgr.clients_of(cluster).await {
            Ok(c) => return Ok(c),
            Err(crate::error::AppError::NotFound(_)) => {
                let _ = store::finish(
                    &inner.pool,
                    id,
                    &inner.owner,
                    Some(("ClusterMissing", "the cluster is no longer registered")),
                )
                .await;
                return Err(Pass::Over);
            }
            // This process lacks the key that sealed the cluster's credentials (a rotation in
            // progress): give the lease back so that a process holding the key drives it.
            Err(e) if e.public_message() == super::credentials::UNOPENED => {
                let _ = store::release(&inner.pool, id, &inner.owner).await;
                return Err(Pass::Over);
            }
            Err(e) => {
                tracing::warn!(error = ?e, "driver: no client yet");
                if !mgr.pause(Duration::from_secs(1)).await {
                    return Err(Pass::Over);
                }
                match store::renew(&inner.pool, id, &inner.owner, lease).await {
                    Ok(true) => {}
                    Ok(false) => return Err(Pass::Over),
                    Err(_) => return Err(Pass::Interrupted),
                }
            }
        }
    }
}

impl Driver {
    /// Counts the operation's end on `/metrics` (a lost lease is another process's to count).
    fn record(&self, result: &Result<(), Stop>) {
        let outcome = match result {
            Ok(()) => "succeeded",
            Err(Stop::Failed(..)) => "failed",
            Err(Stop::Lost) | Err(Stop::Database) => return,
        };
        let kind = self.op.operation.as_db_str();
        crate::metrics::operation_finished(kind, outcome, self.op.started_at);
    }

    /// A deploy cancelled while this driver was applying objects: `cancelDeployment` deleted
    /// what existed then; delete again what this driver may have created since.
    async fn after_cancel(&self) {
        if self.op.operation != DeploymentOperation::Deploy {
            return;
        }
        let cancelled = store::operation(self.pool(), self.op.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|op| op.status == dataloaders::enums::DeploymentStatus::Cancelled);
        if cancelled && let Ok(spec) = self.spec() {
            let (c, id) = (&self.clients.api, self.inst.id);
            let _ = delete_owned(c, self.ns(), self.name(), id, &spec).await;
        }
    }

    fn pool(&self) -> &dataloaders::DbPool {
        &self.mgr.inner().pool
    }
    fn owner(&self) -> &str {
        &self.mgr.inner().owner
    }
    fn ns(&self) -> &str {
        &self.inst.namespace
    }
    fn name(&self) -> &str {
        &self.inst.name
    }

    fn step_done(&self, name: &str) -> bool {
        self.op.steps.as_array().is_some_and(|steps| {
            steps
                .iter()
                .any(|s| s["name"] == json!(name) && s["status"] == json!("succeeded"))
        })
    }

    async fn step(&self, name: &str, status: &str, message: Option<&str>) -> Result<(), Stop> {
        if store::add_step(self.pool(), self.op.id, self.owner(), name, status, message).await? {
            Ok(())
        } else {
            Err(Stop::Lost)
        }
    }

    async fn keep_lease(&mut self) -> Result<(), Stop> {
        if self.mgr.is_stopping() {
            return Err(Stop::Lost);
        }
        let every = (self.lease.num_milliseconds() / 3).max(200) as u64;
        if self.last_renew.elapsed() >= Duration::from_millis(every) {
            if !store::renew(self.pool(), self.op.id, self.owner(), self.lease).await? {
                return Err(Stop::Lost);
            }
            self.last_renew = std::time::Instant::now();
        }
        if Utc::now() > self.deadline {
            return Err(Stop::Failed(
                "Timeout".into(),
                format!(
                    "the operation did not finish within {} s",
                    self.mgr.inner().cfg.operation_timeout_seconds
                ),
            ));
        }
        Ok(())
    }

    /// Runs `f` until it succeeds, retrying transient Kubernetes errors (outages) until the
    /// deadline; a permanent error fails the operation. `f` gets the cluster's current API
    /// client on every attempt: after a connection, TLS or 401 failure the clients are asked for
    /// again, so changed credentials or CA are used from the next attempt on.
    async fn retry<T, F, Fut>(&mut self, what: &str, mut f: F) -> Result<T, Stop>
    where
        F: FnMut(kube::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            self.keep_lease().await?;
            match f(self.clients.api.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) || super::reach::is_unauthorized(&e) => {
                    if !self.outage_logged {
                        self.outage_logged = true;
                        let msg = format!(
                            "Kubernetes API unavailable ({}); retrying",
                            super::reach::describe(&e)
                        );
                        self.step(what, "retrying", Some(&msg)).await?;
                    }
                    if !self.mgr.pause(delay).await {
                        return Err(Stop::Lost);
                    }
                    self.refresh_clients().await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    let (reason, message) = kube_reason(&e);
                    return Err(Stop::Failed(reason, format!("{what}: {message}")));
                }
            }
        }
    }

    /// Asks for the cluster's clients again (rebuilt when its kubeconfig or credentials
    /// changed).
    async fn refresh_clients(&mut self) {
        if let Ok(c) = self.mgr.clients_of(self.inst.cluster_id).await {
            self.clients = c;
        }
    }

    async fn run(&mut self) -> Result<(), Stop> {
        if self.op.status == dataloaders::enums::DeploymentStatus::Initiated {
            self.step(
                "start",
                "succeeded",
                Some(&format!("driven by {}", self.owner())),
            )
            .await?;
        } else {
            self.step(
                "resume",
                "succeeded",
                Some(&format!("picked up by {}", self.owner())),
            )
            .await?;
        }
        match self.op.operation {
            DeploymentOperation::Deploy => self.deploy().await?,
            DeploymentOperation::Scale => self.scale().await?,
            DeploymentOperation::Restart => self.restart().await?,
            DeploymentOperation::Rollback => self.rollback().await?,
            DeploymentOperation::Delete => self.delete().await?,
            DeploymentOperation::Upgrade => self.upgrade().await?,
        }
        self.wait().await
    }

    fn spec(&self) -> Result<InstanceSpec, Stop> {
        serde_json::from_value(self.inst.configuration.clone()).map_err(|e| {
            Stop::Failed(
                "InvalidConfiguration".into(),
                format!("the instance's stored configuration is unreadable: {e}"),
            )
        })
    }

    async fn apply<K>(&mut self, step: &str, name: &str, obj: &Value) -> Result<K, Stop>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let ns = self.ns().to_string();
        let pp = &PatchParams::apply(manifests::FIELD_MANAGER).force();
        let patch = &Patch::Apply(obj);
        let out = self
            .retry(step, |c| {
                let api: Api<K> = Api::namespaced(c, &ns);
                async move { api.patch(name, pp, patch).await }
            })
            .await?;
        Ok(out)
    }

    async fn deploy(&mut self) -> Result<(), Stop> {
        let spec = self.spec()?;
        if spec.is_operator() {
            return self.deploy_operator(&spec).await;
        }
        let (id, name, ns) = (self.inst.id, self.name().to_string(), self.ns().to_string());
        if let Some(secret) = &spec.secret_name
            && !self.step_done("check-secret")
        {
            let s = &secret.clone();
            let found = self
                .retry("check-secret", |c| {
                    let api: Api<Secret> = Api::namespaced(c, &ns);
                    async move { api.get_opt(s).await }
                })
                .await?;
            if found.is_none() {
                return Err(Stop::Failed(
                    "SecretMissing".into(),
                    format!(
                        "the Secret {secret} with the secret env values was not stored; deploy again"
                    ),
                ));
            }
            self.step("check-secret", "succeeded", Some(secret)).await?;
        }
        if !self.step_done("apply-deployment") {
            self.check_owned(&spec).await?;
            let restarted_at = None;
            let obj = manifests::deployment(
                id,
                &name,
                &ns,
                &spec,
                self.mgr.inner().cfg.progress_deadline_seconds,
                restarted_at,
            );
            let d: Deployment = self.apply("apply-deployment", &name, &obj).await?;
            self.min_generation = d.metadata.generation.unwrap_or(0);
            store::mark_deployed(self.pool(), id).await?;
            self.invalidate().await;
            self.step(
                "apply-deployment",
                "succeeded",
                Some(&format!(
                    "Deployment {ns}/{name} applied (generation {})",
                    self.min_generation
                )),
            )
            .await?;
        }
        if !self.step_done("apply-service") {
            match manifests::service(id, &name, &ns, &spec) {
                Some(obj) => {
                    let _: Service = self.apply("apply-service", &name, &obj).await?;
                    self.step(
                        "apply-service",
                        "succeeded",
                        Some(&format!(
                            "Service {ns}/{name} on port {}",
                            spec.port().unwrap_or(0)
                        )),
                    )
                    .await?;
                }
                None => {
                    self.step(
                        "apply-service",
                        "skipped",
                        Some("stdio transport: no Service"),
                    )
                    .await?
                }
            }
        }
        if !self.step_done("apply-network-policy") {
            let supported = store::cluster(self.pool(), self.inst.cluster_id)
                .await?
                .is_some_and(|c| c.capabilities.iter().any(|x| x == "networking.k8s.io/v1"));
            match manifests::network_policy(id, &name, &ns, &spec) {
                Some(obj) if supported => {
                    let _: NetworkPolicy = self.apply("apply-network-policy", &name, &obj).await?;
                    self.step(
                        "apply-network-policy",
                        "succeeded",
                        Some("egress limited to the server's network permissions"),
                    )
                    .await?;
                }
                Some(_) => {
                    self.step(
                        "apply-network-policy",
                        "skipped",
                        Some("the cluster does not serve networking.k8s.io/v1"),
                    )
                    .await?
                }
                None => {
                    self.step(
                        "apply-network-policy",
                        "skipped",
                        Some("the server declares no network permissions"),
                    )
                    .await?
                }
            }
        }
        Ok(())
    }

    async fn merge_patch(&mut self, step: &str, patch: Value) -> Result<(), Stop> {
        let (ns, name) = (self.ns().to_string(), &self.name().to_string());
        let pp = &PatchParams::apply(manifests::FIELD_MANAGER);
        let patch = &Patch::Merge(&patch);
        let d = self
            .retry(step, |c| {
                let api: Api<Deployment> = Api::namespaced(c, &ns);
                async move { api.patch(name, pp, patch).await }
            })
            .await?;
        self.min_generation = d.metadata.generation.unwrap_or(0);
        self.invalidate().await;
        Ok(())
    }

    async fn scale(&mut self) -> Result<(), Stop> {
        let replicas = self.op.parameters["replicas"].as_i64().unwrap_or(1);
        if !self.step_done("scale") {
            let spec = self.spec()?;
            if spec.is_operator() {
                self.scale_operator(&spec, replicas).await?;
            } else {
                self.merge_patch(
                    "scale",
                    json!({"spec": {"replicas": replicas, "paused": false}}),
                )
                .await?;
            }
            let mut cfg = self.inst.configuration.clone();
            cfg["replicas"] = json!(replicas);
            store::set_configuration(self.pool(), self.inst.id, &cfg).await?;
            self.step(
                "scale",
                "succeeded",
                Some(&format!("replicas set to {replicas}")),
            )
            .await?;
        }
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), Stop> {
        let at = self.op.parameters["restartedAt"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec = self.spec()?;
        if spec.is_operator() && !self.step_done("restart") {
            self.restart_operator(&spec, &at).await?;
            let msg = format!("{}={at}", super::operator::RESTARTED_AT);
            return self.step("restart", "succeeded", Some(&msg)).await;
        }
        if !self.step_done("restart") {
            self.merge_patch(
                "restart",
                json!({"spec": {"paused": false, "template": {"metadata": {"annotations": {
                    manifests::RESTARTED_AT: at
                }}}}}),
            )
            .await?;
            self.step(
                "restart",
                "succeeded",
                Some(&format!(
                    "pod template annotated {}={at}",
                    manifests::RESTARTED_AT
                )),
            )
            .await?;
        }
        Ok(())
    }

    /// Applies the upgraded configuration (recorded in the operation) as the Deployment's new
    /// revision, then records it as the instance's configuration.
    async fn upgrade(&mut self) -> Result<(), Stop> {
        if self.step_done("apply-upgrade") {
            return Ok(());
        }
        let next = self.op.parameters["spec"].clone();
        let spec: InstanceSpec = serde_json::from_value(next.clone()).map_err(|e| {
            Stop::Failed(
                "InvalidConfiguration".into(),
                format!("the upgrade's configuration is unreadable: {e}"),
            )
        })?;
        let (id, name, ns) = (self.inst.id, self.name().to_string(), self.ns().to_string());
        if spec.is_operator() {
            self.apply_resource("apply-upgrade", &spec).await?;
        } else {
            self.check_owned(&spec).await?;
            let obj = manifests::deployment(
                id,
                &name,
                &ns,
                &spec,
                self.mgr.inner().cfg.progress_deadline_seconds,
                None,
            );
            let d: Deployment = self.apply("apply-upgrade", &name, &obj).await?;
            self.min_generation = d.metadata.generation.unwrap_or(0);
            if let Some(svc) = manifests::service(id, &name, &ns, &spec) {
                let _: Service = self.apply("apply-upgrade", &name, &svc).await?;
            }
        }
        store::set_configuration(self.pool(), id, &next).await?;
        self.invalidate().await;
        self.step(
            "apply-upgrade",
            "succeeded",
            Some(&format!(
                "{} -> {} (generation {})",
                self.op.parameters["fromImage"].as_str().unwrap_or_default(),
                spec.image,
                self.min_generation
            )),
        )
        .await
    }

    async fn rollback(&mut self) -> Result<(), Stop> {
        if self.step_done("rollback") {
            return Ok(());
        }
        if self.spec()?.is_operator() {
            return self.rollback_operator().await;
        }
        let to = self.op.parameters["toRevision"].as_i64().unwrap_or(0);
        let ns = self.ns().to_string();
        let lp = &ListParams::default().labels(&manifests::selector(self.inst.id));
        let list = self
            .retry("rollback", |c| {
                let rs_api: Api<ReplicaSet> = Api::namespaced(c, &ns);
                async move { rs_api.list(lp).await }
            })
            .await?;
        let target = list.items.into_iter().find(|r| {
            r.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                .and_then(|v| v.parse::<i64>().ok())
                == Some(to)
        });
        let Some(mut template) = target.and_then(|r| r.spec.template) else {
            return Err(Stop::Failed(
                "RevisionNotFound".into(),
                format!("revision {to} is no longer kept by the cluster"),
            ));
        };
        if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove("pod-template-hash");
        }
        let ns = self.ns().to_string();
        let name = self.name().to_string();
        let mut attempts = 0;
        let d = loop {
            attempts += 1;
            let mut d = self
                .retry("rollback", |c| {
                    let api: Api<Deployment> = Api::namespaced(c, &ns);
                    let name = name.clone();
                    async move { api.get(&name).await }
                })
                .await?;
            let api: Api<Deployment> = Api::namespaced(self.clients.api.clone(), &ns);
            d.spec.template = template.clone();
            d.spec.paused = Some(false);
            d.metadata.managed_fields = None;
            match api.replace(&name, &PostParams::default(), &d).await {
                Ok(d) => break d,
                Err(kube::Error::Api(s)) if s.code == 409 && attempts < 5 => continue,
                Err(e) if is_transient(&e) => {
                    self.keep_lease().await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    let (reason, message) = kube_reason(&e);
                    return Err(Stop::Failed(reason, format!("rollback: {message}")));
                }
            }
        };
        self.min_generation = d.metadata.generation.unwrap_or(0);
        // Rolling back an upgrade restores the configuration it replaced.
        let restore = &self.op.parameters["restoreConfiguration"];
        if restore.is_object() {
            store::set_configuration(self.pool(), self.inst.id, restore).await?;
        }
        self.invalidate().await;
        self.step(
            "rollback",
            "succeeded",
            Some(&format!("pod template of revision {to} restored")),
        )
        .await
    }

    async fn delete(&mut self) -> Result<(), Stop> {
        if self.step_done("delete-objects") {
            return Ok(());
        }
        let spec = self.spec()?;
        if spec.is_operator() {
            return self.delete_operator(&spec).await;
        }
        let (ns, name, id) = (self.ns().to_string(), self.name().to_string(), self.inst.id);
        let (ns_r, name_r, spec_r) = (&ns, &name, &spec);
        self.retry("delete-objects", |c| async move {
            delete_owned(&c, ns_r, name_r, id, spec_r).await
        })
        .await?;
        self.invalidate().await;
        self.step(
            "delete-objects",
            "succeeded",
            Some(&format!(
                "Deployment, Service, NetworkPolicy and Secret of {ns}/{name} deleted"
            )),
        )
        .await
    }

    async fn invalidate(&self) {
        self.mgr
            .inner()
            .status_cache
            .invalidate(&self.inst.id)
            .await;
    }

    /// The instance's state: from the cache while the namespace's watch is synced (watch
    /// events keep it fresh), else straight from the API.
    async fn observe(&mut self) -> Result<Option<Arc<Observed>>, Stop> {
        let cache = &self.mgr.inner().status_cache;
        // The watch follows the gateway's own workloads; an operator's are read each time.
        let operator = self.spec()?.is_operator();
        if !operator
            && self.mgr.watch_synced(self.inst.cluster_id, self.ns())
            && let Some(o) = cache.get(&self.inst.id).await
            && !o.missing
            && o.rv >= self.mgr.applied_rv(self.inst.id)
        {
            return Ok(Some(o));
        }
        match ClusterManager::observe_live(&self.clients, &self.inst).await {
            Ok(o) => {
                let o = Arc::new(o);
                cache.insert(self.inst.id, o.clone()).await;
                if self.outage_logged {
                    self.outage_logged = false;
                    self.step("wait", "succeeded", Some("Kubernetes API reachable again"))
                        .await?;
                }
                Ok(Some(o))
            }
            Err(e) if is_transient(&e) || super::reach::is_unauthorized(&e) => {
                if !self.outage_logged {
                    self.outage_logged = true;
                    let msg = format!(
                        "Kubernetes API unavailable ({}); waiting",
                        super::reach::describe(&e)
                    );
                    self.step("wait", "retrying", Some(&msg)).await?;
                }
                self.refresh_clients().await;
                Ok(None)
            }
            Err(e) => {
                let (reason, message) = kube_reason(&e);
                Err(Stop::Failed(
                    reason,
                    format!("reading the rollout: {message}"),
                ))
            }
        }
    }

    async fn wait(&mut self) -> Result<(), Stop> {
        let waker = self.mgr.waker(self.inst.id);
        let poll = Duration::from_millis(self.mgr.inner().cfg.poll_ms.max(50));
        let deleting = self.op.operation == DeploymentOperation::Delete;
        let scaling = self.op.operation == DeploymentOperation::Scale;
        loop {
            self.keep_lease().await?;
            if let Some(o) = self.observe().await? {
                tracing::debug!(op = %self.op.id, status = ?o.status, phase = ?o.phase,
                    verdict = ?o.verdict, generation = o.generation,
                    observed = o.observed_generation, min = self.min_generation, "driver observed");
                // The driver follows a Deployment that it (or the operation before it) applied.
                self.mgr.record(self.inst.id, &o, scaling, true).await;
                if o.reason != self.last_reason && !o.reason.is_empty() {
                    self.last_reason = o.reason.clone();
                    let _ = store::log_line(self.pool(), self.op.id, "info", &o.reason).await;
                }
                if deleting {
                    if o.missing && o.pods == 0 {
                        store::terminate_instance(
                            self.pool(),
                            self.inst.id,
                            "deleted by deleteInstance",
                        )
                        .await?;
                        store::finish(self.pool(), self.op.id, self.owner(), None).await?;
                        return Ok(());
                    }
                } else if o.missing {
                    return Err(Stop::Failed(
                        "DeploymentDeleted".into(),
                        format!(
                            "the Deployment {} was deleted while the operation ran",
                            self.name()
                        ),
                    ));
                } else if o.observed_generation >= self.min_generation
                    && o.generation >= self.min_generation
                {
                    match &o.verdict {
                        Verdict::Done => {
                            store::finish(self.pool(), self.op.id, self.owner(), None).await?;
                            return Ok(());
                        }
                        Verdict::Failed { reason, message } => {
                            return Err(Stop::Failed(reason.clone(), message.clone()));
                        }
                        Verdict::Progressing => {}
                    }
                }
            }
            let mut stop = self.mgr.inner().stopping.subscribe();
            tokio::select! {
                _ = waker.notified() => {}
                _ = stop.changed() => return Err(Stop::Lost),
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Deletes what a deploy created for an instance (its Deployment, Service, NetworkPolicy and
/// Secret, or its custom resource, Secrets and ConfigMap): only objects carrying the
/// instance's labels; objects gone (or whose API group is not served) are fine, and anything
/// else's is left alone. Used by `deleteInstance` and by cancelling a first deploy.
pub(crate) async fn delete_owned(
    c: &kube::Client,
    ns: &str,
    name: &str,
    instance: Uuid,
    spec: &InstanceSpec,
) -> Result<(), kube::Error> {
    let dp = DeleteParams::background();
    let absent = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    for t in ownership::targets(name, spec) {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(c.clone(), ns, &t.resource);
        let found = match api.get_opt(&t.name).await {
            Err(e) if absent(&e) => None,
            other => other?,
        };
        let Some(o) = found else { continue };
        if !ownership::is_ours(kube::ResourceExt::labels(&o), Some(instance)) {
            continue;
        }
        match api.delete(&t.name, &dp).await {
            Err(e) if absent(&e) => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}
