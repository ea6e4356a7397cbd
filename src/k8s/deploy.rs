//! `deployServer`: validate the input, resolve the environment, check the cluster's access,
//! record the instance and its INITIATED operation, and start the driver.

use super::*;

impl ClusterManager {
    pub(super) async fn connected_cluster(
        &self,
        id: Uuid,
        field: &str,
    ) -> AppResult<(ClusterRow, Clients)> {
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
    pub(super) async fn require_access(
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
        if !crate::validate::is_dns_label(&input.namespace) {
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
        if !crate::validate::is_dns_label(&name) {
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
}

/// Checks a `resources` input: an object with only `requests` and `limits`, each mapping
/// resource names to quantities.
pub(super) fn validate_resources(r: Value) -> AppResult<Value> {
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
pub(super) fn check_env_input(env: &[(String, String)]) -> AppResult<()> {
    let mut seen = std::collections::HashSet::new();
    for (n, v) in env {
        if !crate::validate::is_env_name(n) {
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
pub(super) fn registry_args(requirements: &Value) -> Vec<String> {
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
pub(super) fn with_default_cpu_limit(resources: Option<Value>, default: &str) -> Option<Value> {
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
pub(super) fn check_replicas(replicas: i32) -> AppResult<()> {
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
    pub(super) fn a_default_cpu_limit_fills_only_what_is_missing() {
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
    pub(super) fn resources_are_checked() {
        assert!(validate_resources(json!({"requests": {"cpu": "100m", "memory": "64Mi"}})).is_ok());
        assert!(validate_resources(json!({"limits": {"cpu": 1}})).is_ok());
        assert!(validate_resources(json!({"foo": {}})).is_err());
        assert!(validate_resources(json!({"requests": {"cpu": "lots"}})).is_err());
        assert!(validate_resources(json!([1])).is_err());
    }
}
