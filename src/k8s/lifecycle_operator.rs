//! Operations on a live instance the ToolHive operator runs: each records its operation (with
//! the configuration it replaces, for a later rollback) and leaves the cluster to the driver.

use super::*;
use operator::Kind;

/// The configuration of an instance the operator runs (`None`: a native instance).
pub(crate) fn operator_spec(inst: &InstanceRow) -> Option<InstanceSpec> {
    serde_json::from_value::<InstanceSpec>(inst.configuration.clone())
        .ok()
        .filter(InstanceSpec::is_operator)
}

fn plural(spec: &InstanceSpec) -> &'static str {
    match Kind::of(spec) {
        Kind::Server => "mcpservers",
        Kind::RemoteProxy => "mcpremoteproxies",
    }
}

impl ClusterManager {
    async fn require_on_resource(
        clients: &Clients,
        inst: &InstanceRow,
        spec: &InstanceSpec,
        verb: &'static str,
    ) -> AppResult<()> {
        Self::require_access(
            clients,
            &inst.namespace,
            &[(verb, "toolhive.stacklok.dev", plural(spec))],
        )
        .await
    }

    /// `scaleInstance`: refused (nothing changes) for a stdio server above one replica.
    pub(super) async fn operator_scale(
        &self,
        actor: &Actor,
        inst: &InstanceRow,
        clients: &Clients,
        spec: &InstanceSpec,
        replicas: i32,
    ) -> AppResult<DeploymentRow> {
        if let Some(why) = operator::replicas_refusal(spec, replicas) {
            return Err(AppError::bad_input("replicas", why));
        }
        Self::require_on_resource(clients, inst, spec, "patch").await?;
        let previous = spec.replicas;
        let op = (
            DeploymentOperation::Scale,
            json!({"replicas": replicas, "previousReplicas": previous}),
            json!({"previousReplicas": previous, "configuration": inst.configuration}),
        );
        self.record_op(actor, inst, op).await
    }

    /// `restartInstance`: the operator's `restarted-at` annotation.
    pub(super) async fn operator_restart(
        &self,
        actor: &Actor,
        inst: &InstanceRow,
        clients: &Clients,
        spec: &InstanceSpec,
    ) -> AppResult<DeploymentRow> {
        Self::require_on_resource(clients, inst, spec, "patch").await?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let op = (
            DeploymentOperation::Restart,
            json!({"restartedAt": at}),
            json!({}),
        );
        self.record_op(actor, inst, op).await
    }

    /// `rollbackInstance`: re-applies the configuration before the last change.
    pub(super) async fn operator_rollback(
        &self,
        actor: &Actor,
        inst: &InstanceRow,
        clients: &Clients,
        spec: &InstanceSpec,
    ) -> AppResult<DeploymentRow> {
        Self::require_on_resource(clients, inst, spec, "patch").await?;
        let Some(previous) =
            store::previous_configuration(&self.inner.pool, inst.id, &inst.configuration).await?
        else {
            return Err(AppError::Conflict(
                "the instance has no previous configuration to roll back to".into(),
            ));
        };
        let op = (
            DeploymentOperation::Rollback,
            json!({"configuration": previous}),
            json!({"configuration": inst.configuration}),
        );
        self.record_op(actor, inst, op).await
    }

    /// `deleteInstance`: the resource, its Secrets and ConfigMap.
    pub(super) async fn operator_delete(
        &self,
        actor: &Actor,
        inst: &InstanceRow,
        clients: &Clients,
        spec: &InstanceSpec,
    ) -> AppResult<DeploymentRow> {
        Self::require_on_resource(clients, inst, spec, "delete").await?;
        let op = (
            DeploymentOperation::Delete,
            json!({}),
            json!({"configuration": inst.configuration}),
        );
        self.record_op(actor, inst, op).await
    }
}
