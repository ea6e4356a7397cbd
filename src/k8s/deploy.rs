//! `deployServer`: validate the input, resolve the environment, check the cluster's access,
//! record the instance and its INITIATED operation, and start the driver.

use super::*;
use dataloaders::models::ServerRow;

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
    /// stores secret env values in a Kubernetes Secret, and starts the driver. The steps:
    /// check the input, resolve the server's environment into a spec, choose the backend,
    /// preflight against the cluster (reads only), then record and act.
    pub async fn deploy(&self, actor: &Actor, input: DeployInput) -> AppResult<DeploymentRow> {
        self.start_background();
        let resources = check_input(&input, &self.inner.cfg.default_cpu_limit)?;
        let server = store::server(&self.inner.pool, input.server_id)
            .await?
            .ok_or_else(|| AppError::bad_input("serverId", "no server with this id"))?;
        let name = input.name.clone().unwrap_or_else(|| server.name.clone());
        if !crate::validate::is_dns_label(&name) {
            return Err(AppError::bad_input(
                "name",
                "name must be a valid Kubernetes name: at most 63 lower-case letters, digits and \
                 '-', starting and ending with a letter or digit",
            ));
        }
        let (plain, secret_values) = resolve_env(&server.deployment_requirements, &input.env)?;
        let mut spec = build_spec(&server, &input, &name, resources, plain, &secret_values)?;
        let (cluster, clients) = self
            .connected_cluster(input.cluster_id, "clusterId")
            .await?;
        spec.backend = capabilities::backend_for(&cluster.capabilities, operator::Kind::of(&spec));
        check_backend(&spec)?;
        if !spec.is_operator() {
            spec.egress_note = manifests::egress_note(&spec);
        }
        self.preflight(&cluster, &clients, &input.namespace, &name, &spec)
            .await?;
        let planned = Planned {
            server: &server,
            cluster: &cluster,
            clients: &clients,
            namespace: &input.namespace,
            name: &name,
            spec: &spec,
            secret_values: &secret_values,
        };
        self.record_deploy(actor, planned).await
    }

    /// Checks against the cluster, reading only: the namespace exists, the gateway may write
    /// what the instance needs there, the name is free, and no object the instance would
    /// write exists (the gateway never takes over someone else's objects).
    async fn preflight(
        &self,
        cluster: &ClusterRow,
        clients: &Clients,
        namespace: &str,
        name: &str,
        spec: &InstanceSpec,
    ) -> AppResult<()> {
        match Api::<Namespace>::all(clients.api.clone())
            .get_opt(namespace)
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(AppError::bad_input(
                    "namespace",
                    format!(
                        "namespace {namespace} does not exist in cluster {}",
                        cluster.name
                    ),
                ));
            }
            Err(e) if api_code(&e) == Some(403) => {
                return Err(AppError::Forbidden(format!(
                    "the gateway may not read namespace {namespace} in cluster {}",
                    cluster.name
                )));
            }
            Err(e) => return Err(kube_err(&e, "reading the namespace")),
        }
        Self::require_access(clients, namespace, &access_needs(spec)).await?;
        if store::instance_name_taken(&self.inner.pool, cluster.id, namespace, name).await? {
            return Err(AppError::bad_input(
                "name",
                format!("an instance named {name} already exists in namespace {namespace}"),
            ));
        }
        ownership::check(
            &clients.api,
            namespace,
            None,
            &ownership::targets(name, spec),
        )
        .await
    }

    /// Records the instance and its INITIATED operation, stores the secret values, and starts
    /// the driver.
    async fn record_deploy(&self, actor: &Actor, p: Planned<'_>) -> AppResult<DeploymentRow> {
        let pool = &self.inner.pool;
        let configuration = serde_json::to_value(p.spec).expect("serialisable");
        let mut parameters = configuration.clone();
        parameters["clusterId"] = json!(p.cluster.id);
        parameters["namespace"] = json!(p.namespace);
        parameters["name"] = json!(p.name);
        let (inst, op) = store::insert_deploy(
            pool,
            actor,
            store::NewInstance {
                server_id: p.server.id,
                cluster_id: p.cluster.id,
                name: p.name.to_string(),
                namespace: p.namespace.to_string(),
                replicas: p.spec.replicas,
                configuration,
                parameters,
            },
        )
        .await?;
        self.ensure_watch(p.cluster.id, p.namespace).await;
        if !p.secret_values.is_empty() {
            let (ns, name, server) = (p.namespace, p.name, p.server.id);
            let objs = if p.spec.is_operator() {
                operator::secrets(inst.id, name, ns, server, p.secret_values)
            } else {
                vec![manifests::secret(
                    inst.id,
                    name,
                    ns,
                    server,
                    p.secret_values,
                )]
            };
            store_secrets(p.clients, ns, &objs, pool, op.id).await;
        }
        self.spawn_driver(op.id);
        Ok(op)
    }
}

/// What a deploy decided, ready to record.
struct Planned<'a> {
    server: &'a ServerRow,
    cluster: &'a ClusterRow,
    clients: &'a Clients,
    namespace: &'a str,
    name: &'a str,
    spec: &'a InstanceSpec,
    secret_values: &'a [(String, String)],
}

/// Checks the input that needs no lookups; returns the resources with the default CPU limit.
fn check_input(input: &DeployInput, default_cpu_limit: &str) -> AppResult<Option<Value>> {
    check_replicas(input.replicas.unwrap_or(1))?;
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
    Ok(with_default_cpu_limit(
        input
            .resources
            .clone()
            .map(validate_resources)
            .transpose()?,
        default_cpu_limit,
    ))
}

/// Splits the environment into plain values and secret ones, following what the server
/// declares (required variables, secrets, defaults); variables it does not declare are plain.
type ResolvedEnv = (Vec<manifests::EnvPlain>, Vec<(String, String)>);

fn resolve_env(reqs: &Value, env: &[(String, String)]) -> AppResult<ResolvedEnv> {
    let declared: Vec<&Value> = reqs
        .get("envVars")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let given: HashMap<&str, &str> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let plain_of = |name: &str, value: &str| manifests::EnvPlain {
        name: name.into(),
        value: value.into(),
    };
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
            Some(v) if !v.is_empty() && secret => {
                secret_values.push((n.to_string(), v.to_string()))
            }
            Some(v) if !v.is_empty() => plain.push(plain_of(n, v)),
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
                    plain.push(plain_of(n, dv));
                }
            }
        }
    }
    for (n, v) in env {
        if !declared
            .iter()
            .any(|d| d.get("name").and_then(Value::as_str) == Some(n))
        {
            plain.push(plain_of(n, v));
        }
    }
    Ok((plain, secret_values))
}

/// The instance's spec (native backend until the cluster is known).
fn build_spec(
    server: &ServerRow,
    input: &DeployInput,
    name: &str,
    resources: Option<Value>,
    plain: Vec<manifests::EnvPlain>,
    secret_values: &[(String, String)],
) -> AppResult<InstanceSpec> {
    let (image, remote_url) = deployable(server)?;
    let reqs = &server.deployment_requirements;
    let server_args = registry_args(reqs);
    let mut args = server_args.clone();
    args.extend(input.args.iter().cloned());
    let target_port = reqs
        .get("targetPort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok());
    Ok(InstanceSpec {
        server_id: server.id,
        server_name: server.name.clone(),
        image,
        transport: server.transport.as_db_str().into(),
        replicas: input.replicas.unwrap_or(1),
        env: plain,
        secret_env: secret_values.iter().map(|(n, _)| n.clone()).collect(),
        secret_name: (!secret_values.is_empty()).then(|| manifests::secret_name(name)),
        args,
        resources,
        target_port,
        network_permissions: server.network_permissions.clone(),
        server_version: server.version.clone(),
        env_schema: Some(drift::declared_env(reqs)),
        server_args: Some(server_args),
        backend: Backend::Native,
        remote_url,
        egress_note: None,
    })
}

/// The image (container servers) or URL (remote servers) a server deploys from.
fn deployable(server: &ServerRow) -> AppResult<(String, Option<String>)> {
    match (&server.image, &server.url) {
        (Some(i), _) if !i.contains("://") => Ok((i.clone(), None)),
        (None, Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {
            Ok((String::new(), Some(url.clone())))
        }
        _ => Err(AppError::bad_input(
            "serverId",
            "this server has neither a container image nor a remote URL to deploy \
             (package-built images cannot be deployed by the gateway)",
        )),
    }
}

/// What the chosen backend cannot run: without the ToolHive operator, a stdio server (it
/// needs the operator's proxy to be reachable at all) and a remote server; with it, a stdio
/// server above one replica.
pub(super) fn check_backend(spec: &InstanceSpec) -> AppResult<()> {
    const HOW: &str = "install the ToolHive operator (helm upgrade -i toolhive-operator-crds \
        oci://ghcr.io/stacklok/toolhive/toolhive-operator-crds && helm upgrade -i \
        toolhive-operator oci://ghcr.io/stacklok/toolhive/toolhive-operator -n toolhive-system \
        --create-namespace), then refreshCluster";
    if spec.is_operator() {
        return match operator::replicas_refusal(spec, spec.replicas) {
            Some(why) => Err(AppError::bad_input("replicas", why)),
            None => Ok(()),
        };
    }
    if spec.remote_url.is_some() {
        return Err(AppError::Refused {
            field: "serverId".into(),
            reason: "REMOTE_NEEDS_TOOLHIVE_OPERATOR",
            message: format!(
                "{} is a remote server: the gateway deploys it as an MCPRemoteProxy, which \
                 needs the ToolHive operator in the cluster; {HOW}",
                spec.server_name
            ),
        });
    }
    if spec.transport == "stdio" {
        return Err(AppError::Refused {
            field: "serverId".into(),
            reason: "STDIO_NEEDS_TOOLHIVE_OPERATOR",
            message: format!(
                "{} speaks stdio: without a proxy in front of it a pod could not be reached \
                 (it would exit or sit unreachable). The cluster does not run the ToolHive \
                 operator, which bridges stdio to streamable HTTP; {HOW}",
                spec.server_name
            ),
        });
    }
    Ok(())
}

/// The RBAC rights a deploy needs in its namespace.
fn access_needs(spec: &InstanceSpec) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut needs = if spec.is_operator() {
        let plural = match operator::Kind::of(spec) {
            operator::Kind::Server => "mcpservers",
            operator::Kind::RemoteProxy => "mcpremoteproxies",
        };
        vec![
            ("create", "toolhive.stacklok.dev", plural),
            ("patch", "toolhive.stacklok.dev", plural),
        ]
    } else {
        vec![
            ("create", "apps", "deployments"),
            ("patch", "apps", "deployments"),
        ]
    };
    if !spec.is_operator() && spec.is_network() {
        needs.push(("create", "", "services"));
    }
    if spec.is_operator() && operator::permission_profile(spec).is_some() {
        needs.push(("create", "", "configmaps"));
    }
    if spec.secret_name.is_some() {
        needs.push(("create", "", "secrets"));
    }
    needs
}

/// Stores the Secrets holding secret values (before the driver starts: without them the pods
/// could never start, and the driver fails the operation naming the missing Secret).
async fn store_secrets(clients: &Clients, ns: &str, objs: &[Value], pool: &DbPool, op: Uuid) {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(clients.api.clone(), ns);
    let pp = PatchParams::apply(manifests::FIELD_MANAGER).force();
    for obj in objs {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let (level, line) = match api.patch(name, &pp, &Patch::Apply(obj)).await {
            Err(e) => {
                let (reason, msg) = kube_reason(&e);
                (
                    "error",
                    format!("storing the secret values in Secret {name} failed: {reason}: {msg}"),
                )
            }
            Ok(_) => ("info", format!("secret values stored in Secret {name}")),
        };
        let _ = store::log_line(pool, op, level, &line).await;
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
