//! Operations on a live instance: scale, restart, roll back, delete and cancel.

use super::deploy::check_replicas;
use super::lifecycle_operator::operator_spec;
use super::*;

impl ClusterManager {
    /// Records an operation on a live instance (INITIATED, with what a rollback needs), makes
    /// sure its namespace is watched, and starts its driver: the end of every lifecycle call.
    pub(super) async fn record_op(
        &self,
        actor: &Actor,
        inst: &InstanceRow,
        (operation, parameters, rollback_info): (DeploymentOperation, Value, Value),
    ) -> AppResult<DeploymentRow> {
        let op = store::insert_op(
            &self.inner.pool,
            actor,
            inst,
            operation,
            parameters,
            rollback_info,
        )
        .await?;
        self.ensure_watch(inst.cluster_id, &inst.namespace).await;
        self.spawn_driver(op.id);
        Ok(op)
    }

    pub(super) async fn live_instance(&self, id: Uuid) -> AppResult<(InstanceRow, Clients)> {
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

    pub(super) async fn current_deployment(
        clients: &Clients,
        inst: &InstanceRow,
    ) -> AppResult<Deployment> {
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

    pub(super) fn revision_of(d: &Deployment) -> Option<i64> {
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
        if let Some(spec) = operator_spec(&inst) {
            return self
                .operator_scale(actor, &inst, &clients, &spec, replicas)
                .await;
        }
        Self::require_access(
            &clients,
            &inst.namespace,
            &[("patch", "apps", "deployments")],
        )
        .await?;
        let d = Self::current_deployment(&clients, &inst).await?;
        let previous = d.spec.replicas.unwrap_or(1);
        self.record_op(
            actor,
            &inst,
            (
                DeploymentOperation::Scale,
                json!({"replicas": replicas, "previousReplicas": previous}),
                json!({"previousReplicas": previous, "previousRevision": Self::revision_of(&d)}),
            ),
        )
        .await
    }

    /// `restartInstance`.
    pub async fn restart(&self, actor: &Actor, id: Uuid) -> AppResult<DeploymentRow> {
        self.start_background();
        let (inst, clients) = self.live_instance(id).await?;
        if let Some(spec) = operator_spec(&inst) {
            return self.operator_restart(actor, &inst, &clients, &spec).await;
        }
        Self::require_access(
            &clients,
            &inst.namespace,
            &[("patch", "apps", "deployments")],
        )
        .await?;
        let d = Self::current_deployment(&clients, &inst).await?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.record_op(
            actor,
            &inst,
            (
                DeploymentOperation::Restart,
                json!({"restartedAt": at}),
                json!({"previousRevision": Self::revision_of(&d)}),
            ),
        )
        .await
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
        if let Some(spec) = operator_spec(&inst) {
            return self.operator_rollback(actor, &inst, &clients, &spec).await;
        }
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
        self.record_op(
            actor,
            &inst,
            (DeploymentOperation::Rollback,
                json!({"toRevision": target, "fromRevision": current, "restoreConfiguration": restore}),
                json!({"previousRevision": current, "toRevision": target})),
        )
        .await
    }

    /// `deleteInstance`.
    pub async fn delete(&self, actor: &Actor, id: Uuid) -> AppResult<DeploymentRow> {
        self.start_background();
        let (inst, clients) = self.live_instance(id).await?;
        if let Some(spec) = operator_spec(&inst) {
            return self.operator_delete(actor, &inst, &clients, &spec).await;
        }
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
        self.record_op(
            actor,
            &inst,
            (
                DeploymentOperation::Delete,
                json!({}),
                json!({"previousRevision": rev, "configuration": inst.configuration}),
            ),
        )
        .await
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
        crate::metrics::operation_finished(row.operation.as_db_str(), "cancelled", row.started_at);
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

    pub(super) async fn stop_rollout(&self, op: &DeploymentRow) -> AppResult<()> {
        let inst = store::instance(&self.inner.pool, op.instance_id)
            .await?
            .ok_or(AppError::NotFound("instance"))?;
        if op.operation == DeploymentOperation::Deploy {
            return self.undo_deploy(op, &inst).await;
        }
        if operator_spec(&inst).is_some() {
            // The operator reconciles the resource as it is: nothing to pause.
            return Ok(());
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
    pub(super) async fn undo_deploy(
        &self,
        op: &DeploymentRow,
        inst: &InstanceRow,
    ) -> AppResult<()> {
        let why = format!("deploy cancelled ({})", op.initiated_by);
        store::terminate_instance(&self.inner.pool, inst.id, &why).await?;
        self.inner.status_cache.invalidate(&inst.id).await;
        let clients = self.clients_of(inst.cluster_id).await?;
        let spec: InstanceSpec = serde_json::from_value(inst.configuration.clone())
            .map_err(|e| AppError::Internal(std::sync::Arc::new(e.into())))?;
        driver::delete_owned(&clients.api, &inst.namespace, &inst.name, inst.id, &spec)
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
}
