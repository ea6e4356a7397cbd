//! `upgradeInstance`: moves an instance to the image, arguments and environment its server's
//! registry entry now gives, as an UPGRADE operation that keeps the previous configuration for
//! `rollbackInstance`.

use std::collections::BTreeMap;

use dataloaders::enums::DeploymentOperation;
use dataloaders::models::{DeploymentRow, InstanceRow, ServerRow};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use uuid::Uuid;

use super::deploy::{check_env_input, registry_args};
use super::drift;
use super::manifests::EnvDecl;
use super::manifests::{self, EnvPlain, InstanceSpec};
use super::{ClusterManager, kube_err, store};
use crate::audit::Actor;
use crate::error::{AppError, AppResult};

/// The environment of the upgraded instance: plain variables, and secret values to add to its
/// Secret (the values already there stay).
struct NewEnv {
    plain: Vec<EnvPlain>,
    secret_names: Vec<String>,
    new_secrets: Vec<(String, String)>,
}

/// Merges the instance's variables, the values given now, and what the server now declares.
/// A newly required variable (no default, no value kept or given) is refused, naming it.
fn merge_env(
    spec: &InstanceSpec,
    declared: &[EnvDecl],
    given: &[(String, String)],
) -> AppResult<NewEnv> {
    let is_secret = |n: &str| declared.iter().any(|d| d.name == n && d.secret);
    let mut plain: BTreeMap<String, String> = spec
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let mut secret_names: Vec<String> = spec.secret_env.clone();
    let mut new_secrets = Vec::new();
    // A variable that became secret moves its value into the Secret.
    for (n, v) in plain.clone() {
        if is_secret(&n) {
            plain.remove(&n);
            new_secrets.push((n, v));
        }
    }
    for (n, v) in given {
        if is_secret(n) {
            plain.remove(n);
            new_secrets.push((n.clone(), v.clone()));
        } else {
            secret_names.retain(|s| s != n);
            plain.insert(n.clone(), v.clone());
        }
    }
    for (n, _) in &new_secrets {
        if !secret_names.contains(n) {
            secret_names.push(n.clone());
        }
    }
    for d in declared {
        let has = plain.contains_key(&d.name) || secret_names.contains(&d.name);
        if !has
            && let Some(v) = &d.default
            && !d.secret
        {
            plain.insert(d.name.clone(), v.clone());
        } else if !has && d.required && d.default.is_none() {
            return Err(AppError::bad_input(
                "env",
                format!(
                    "the environment variable {} is now required by the server; give its value in env",
                    d.name
                ),
            ));
        }
    }
    Ok(NewEnv {
        plain: plain
            .into_iter()
            .map(|(name, value)| EnvPlain { name, value })
            .collect(),
        secret_names,
        new_secrets,
    })
}

/// The configuration after the upgrade: the server's image, version, declared environment and
/// registry arguments, with the user's own arguments and values kept.
fn upgraded_spec(
    spec: &InstanceSpec,
    server: &ServerRow,
    image: &str,
    env: &NewEnv,
    name: &str,
) -> InstanceSpec {
    let reqs = &server.deployment_requirements;
    let now_args = registry_args(reqs);
    let args = match &spec.server_args {
        Some(old) if spec.args.starts_with(old) => {
            let mut a = now_args.clone();
            a.extend(spec.args[old.len()..].iter().cloned());
            a
        }
        _ => spec.args.clone(),
    };
    InstanceSpec {
        image: image.to_string(),
        env: env.plain.clone(),
        secret_env: env.secret_names.clone(),
        secret_name: (!env.secret_names.is_empty()).then(|| manifests::secret_name(name)),
        args,
        target_port: reqs
            .get("targetPort")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .or(spec.target_port),
        network_permissions: server.network_permissions.clone(),
        server_version: server.version.clone(),
        env_schema: Some(drift::declared_env(reqs)),
        server_args: Some(now_args),
        ..spec.clone()
    }
}

impl ClusterManager {
    /// `upgradeInstance`: records an UPGRADE operation moving the instance to what its server
    /// now offers; refused with CONFLICT when it already runs that, and with BAD_USER_INPUT
    /// naming a newly required variable that has no value. Nothing changes on a refusal.
    pub async fn upgrade(
        &self,
        actor: &Actor,
        id: Uuid,
        env: Vec<(String, String)>,
    ) -> AppResult<DeploymentRow> {
        self.start_background();
        check_env_input(&env)?;
        let (inst, clients) = self.live_instance(id).await?;
        let spec: InstanceSpec =
            serde_json::from_value(inst.configuration.clone()).map_err(|_| {
                AppError::Conflict("the instance's configuration cannot be upgraded".into())
            })?;
        let server = store::server(&self.inner.pool, inst.server_id)
            .await?
            .ok_or(AppError::NotFound("server"))?;
        let Some(up) = drift::upgrade_of(&spec, &server) else {
            return Err(AppError::Conflict(
                "the instance already runs what its server's registry entry offers".into(),
            ));
        };
        let declared = drift::declared_env(&server.deployment_requirements);
        let new_env = merge_env(&spec, &declared, &env)?;
        let next = upgraded_spec(&spec, &server, &up.available_image, &new_env, &inst.name);
        Self::require_access(
            &clients,
            &inst.namespace,
            &[("patch", "apps", "deployments")],
        )
        .await?;
        let d = Self::current_deployment(&clients, &inst).await?;
        self.store_new_secrets(&clients.api, &inst, &new_env.new_secrets)
            .await?;
        self.record_op(
            actor,
            &inst,
            (DeploymentOperation::Upgrade,
                json!({
                    "fromImage": up.current_image, "toImage": up.available_image,
                    "fromVersion": up.current_version, "toVersion": up.available_version,
                    "spec": next,
                }),
                json!({"configuration": inst.configuration, "previousRevision": Self::revision_of(&d)})),
        )
        .await
    }

    /// Adds secret values to the instance's Secret (creating it when it has none yet); values
    /// already there are kept.
    async fn store_new_secrets(
        &self,
        client: &kube::Client,
        inst: &InstanceRow,
        values: &[(String, String)],
    ) -> AppResult<()> {
        if values.is_empty() {
            return Ok(());
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &inst.namespace);
        let name = manifests::secret_name(&inst.name);
        let obj = manifests::secret(inst.id, &inst.name, &inst.namespace, inst.server_id, values);
        let exists = api
            .get_opt(&name)
            .await
            .map_err(|e| kube_err(&e, "reading the instance's Secret"))?
            .is_some();
        let result = if exists {
            let patch = json!({ "data": obj["data"] });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        } else {
            let pp = PatchParams::apply(manifests::FIELD_MANAGER).force();
            api.patch(&name, &pp, &Patch::Apply(&obj)).await
        };
        result
            .map(|_| ())
            .map_err(|e| kube_err(&e, "storing the new secret values"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, required: bool, secret: bool) -> EnvDecl {
        EnvDecl {
            name: name.into(),
            required,
            secret,
            default: None,
        }
    }

    fn spec() -> InstanceSpec {
        serde_json::from_value(json!({
            "serverId": Uuid::nil(), "serverName": "s", "image": "a:1", "transport": "http",
            "replicas": 1, "env": [{"name": "LEVEL", "value": "info"}, {"name": "KEY", "value": "k"}],
            "secretEnv": ["TOKEN"], "secretName": "s-env", "args": ["--serve", "--mine"],
            "resources": null, "targetPort": 8080, "serverArgs": ["--serve"]
        }))
        .unwrap()
    }

    #[test]
    fn a_newly_required_variable_needs_a_value() {
        let declared = [decl("TOKEN", true, true), decl("REGION", true, false)];
        let e = merge_env(&spec(), &declared, &[]).err().unwrap();
        assert!(
            e.public_message().contains("REGION"),
            "{}",
            e.public_message()
        );
        let ok = merge_env(&spec(), &declared, &[("REGION".into(), "eu".into())]).unwrap();
        assert!(
            ok.plain
                .iter()
                .any(|e| e.name == "REGION" && e.value == "eu")
        );
        assert!(ok.new_secrets.is_empty());
    }

    #[test]
    fn a_variable_that_became_secret_moves_into_the_secret() {
        let declared = [decl("KEY", false, true)];
        let env = merge_env(&spec(), &declared, &[]).unwrap();
        assert!(!env.plain.iter().any(|e| e.name == "KEY"));
        assert_eq!(env.new_secrets, [("KEY".to_string(), "k".to_string())]);
        assert_eq!(env.secret_names, ["TOKEN", "KEY"]);
    }
}
