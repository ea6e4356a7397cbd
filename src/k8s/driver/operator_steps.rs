//! The driver's steps for instances the ToolHive operator runs: the custom resource, its
//! permission ConfigMap and Secrets are written (after checking they are the instance's), the
//! operator does the rest, and the resource's status says when it is done.

use kube::api::{ApiResource, DynamicObject};

use super::delete_owned;

use super::*;
use crate::k8s::operator::{self, Kind};
use crate::k8s::ownership;

impl Driver {
    /// Refuses to go on when an object the instance writes exists and is not the instance's.
    pub(super) async fn check_owned(&mut self, spec: &InstanceSpec) -> Result<(), Stop> {
        let targets = ownership::targets(self.name(), spec);
        match ownership::check(&self.clients.api, self.ns(), Some(self.inst.id), &targets).await {
            Ok(()) => Ok(()),
            Err(e) => Err(Stop::Failed("Conflict".into(), e.public_message())),
        }
    }

    async fn apply_dynamic(
        &mut self,
        step: &str,
        resource: &ApiResource,
        obj: &Value,
    ) -> Result<DynamicObject, Stop> {
        let ns = self.ns().to_string();
        // Strict: a field the CRD's schema does not know is an error, not silently dropped.
        let pp = PatchParams::apply(manifests::FIELD_MANAGER)
            .force()
            .validation_strict();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let patch = Patch::Apply(obj);
        let (ns, name, pp, patch) = (&ns, &name, &pp, &patch);
        // Each attempt uses the clients of that moment (they change with the credentials).
        self.retry(step, |c| {
            let api: Api<DynamicObject> = Api::namespaced_with(c, ns, resource);
            async move { api.patch(name, pp, patch).await }
        })
        .await
    }

    /// Writes the permission ConfigMap (when the registry declares permissions) and the custom
    /// resource of `spec`; the operation then follows the resource's generation.
    pub(super) async fn apply_resource(
        &mut self,
        step: &str,
        spec: &InstanceSpec,
    ) -> Result<String, Stop> {
        let (id, name, ns) = (self.inst.id, self.name().to_string(), self.ns().to_string());
        self.check_owned(spec).await?;
        if let Some(cm) = operator::permissions_configmap(id, &name, &ns, spec) {
            let cm_res = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
            self.apply_dynamic(step, &cm_res, &cm).await?;
        }
        let kind = Kind::of(spec);
        let cr = operator::custom_resource(id, &name, &ns, spec);
        let applied = self.apply_dynamic(step, &kind.resource(), &cr).await?;
        self.min_generation = applied.metadata.generation.unwrap_or(0);
        self.invalidate().await;
        Ok(format!(
            "{} {ns}/{name} applied (generation {})",
            kind.name(),
            self.min_generation
        ))
    }

    /// `deployServer` through the operator: the Secrets were stored by the mutation; the
    /// resource is applied once they are there.
    pub(super) async fn deploy_operator(&mut self, spec: &InstanceSpec) -> Result<(), Stop> {
        if !spec.secret_env.is_empty() && !self.step_done("check-secret") {
            let ns = self.ns().to_string();
            for s in operator::secret_names(self.name(), spec.secret_env.len()) {
                let (ns, s) = (&ns, &s);
                let found = self
                    .retry("check-secret", |c| {
                        let api: Api<Secret> = Api::namespaced(c, ns);
                        async move { api.get_opt(s).await }
                    })
                    .await?;
                if found.is_none() {
                    return Err(Stop::Failed(
                        "SecretMissing".into(),
                        format!("the Secret {s} with secret values was not stored; deploy again"),
                    ));
                }
            }
            self.step("check-secret", "succeeded", None).await?;
        }
        if !self.step_done("apply-resource") {
            let msg = self.apply_resource("apply-resource", spec).await?;
            store::mark_deployed(self.pool(), self.inst.id).await?;
            self.step("apply-resource", "succeeded", Some(&msg)).await?;
        }
        Ok(())
    }

    async fn merge_resource(
        &mut self,
        step: &str,
        spec: &InstanceSpec,
        patch: Value,
    ) -> Result<(), Stop> {
        self.check_owned(spec).await?;
        let (ns, kind) = (self.ns().to_string(), Kind::of(spec));
        let pp = PatchParams::default();
        let name = self.name().to_string();
        let patch = Patch::Merge(&patch);
        let (ns, name, pp, patch) = (&ns, &name, &pp, &patch);
        let r = self
            .retry(step, |c| {
                let api = operator::api(&c, ns, kind);
                async move { api.patch(name, pp, patch).await }
            })
            .await?;
        self.min_generation = r.metadata.generation.unwrap_or(0);
        self.invalidate().await;
        Ok(())
    }

    /// `scaleInstance`: the resource's replica fields.
    pub(super) async fn scale_operator(
        &mut self,
        spec: &InstanceSpec,
        replicas: i64,
    ) -> Result<(), Stop> {
        let mut s = json!({"replicas": replicas});
        if spec.transport != "stdio" && Kind::of(spec) == Kind::Server {
            s["backendReplicas"] = json!(replicas);
        }
        self.merge_resource("scale", spec, json!({"spec": s})).await
    }

    /// `restartInstance`: a new `restarted-at` annotation, which the operator acts on once.
    pub(super) async fn restart_operator(
        &mut self,
        spec: &InstanceSpec,
        at: &str,
    ) -> Result<(), Stop> {
        let patch = json!({"metadata": {"annotations": {operator::RESTARTED_AT: at}}});
        self.merge_resource("restart", spec, patch).await
    }

    /// `rollbackInstance`: re-applies the configuration recorded before the last change.
    pub(super) async fn rollback_operator(&mut self) -> Result<(), Stop> {
        let previous = self.op.parameters["configuration"].clone();
        let spec: InstanceSpec = serde_json::from_value(previous.clone()).map_err(|e| {
            Stop::Failed(
                "InvalidConfiguration".into(),
                format!("the previous configuration is unreadable: {e}"),
            )
        })?;
        let msg = self.apply_resource("rollback", &spec).await?;
        store::set_configuration(self.pool(), self.inst.id, &previous).await?;
        self.step(
            "rollback",
            "succeeded",
            Some(&format!("previous configuration re-applied: {msg}")),
        )
        .await
    }

    /// `deleteInstance`: the resource, its Secrets and ConfigMap, each only if it is the
    /// instance's.
    pub(super) async fn delete_operator(&mut self, spec: &InstanceSpec) -> Result<(), Stop> {
        let (ns, name, id) = (self.ns().to_string(), self.name().to_string(), self.inst.id);
        let (ns, name, spec_r) = (&ns, &name, spec);
        self.retry("delete-objects", |c| async move {
            delete_owned(&c, ns, name, id, spec_r).await
        })
        .await?;
        self.invalidate().await;
        self.step(
            "delete-objects",
            "succeeded",
            Some(&format!(
                "{} {ns}/{name}, its Secrets and permission ConfigMap deleted",
                Kind::of(spec).name()
            )),
        )
        .await
    }
}
