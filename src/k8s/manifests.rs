//! The Kubernetes objects an instance consists of: a Deployment, a Secret for secret env vars, a
//! Service for network transports, a NetworkPolicy from the server's network permissions.
//!
//! All are applied with server-side apply under the field manager [`FIELD_MANAGER`].

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// An environment variable as a server declares it (`deployment_requirements.envVars`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvDecl {
    pub name: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    /// A default makes a required variable satisfiable without a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Field manager of every server-side apply the gateway makes.
pub const FIELD_MANAGER: &str = "hivegraph";
/// Field manager of the gateway's imperative changes (pause on cancel), kept apart from
/// [`FIELD_MANAGER`] so that a later apply does not undo them.
pub const CONTROL_MANAGER: &str = "hivegraph-control";
/// Label on every object the gateway manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "hivegraph");
/// Label carrying the instance id.
pub const INSTANCE_LABEL: &str = "hivegraph.dev/instance";
/// Label carrying the server id.
pub const SERVER_LABEL: &str = "hivegraph.dev/server";
/// Pod-template annotation that `restartInstance` changes (as `kubectl rollout restart` does).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The MCP server's container.
pub const CONTAINER: &str = "mcp";
/// Port used for HTTP and SSE servers that name none.
pub const DEFAULT_PORT: u16 = 8080;

/// A plain (non-secret) environment variable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvPlain {
    pub name: String,
    pub value: String,
}

/// What an instance runs: stored in `instances.configuration` (never with secret values).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    pub server_id: Uuid,
    pub server_name: String,
    pub image: String,
    /// `stdio`, `http` or `sse`.
    pub transport: String,
    pub replicas: i32,
    #[serde(default)]
    pub env: Vec<EnvPlain>,
    /// Names of the variables held in the Secret `secret_name`.
    #[serde(default)]
    pub secret_env: Vec<String>,
    pub secret_name: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    pub resources: Option<Value>,
    pub target_port: Option<u16>,
    #[serde(default)]
    pub network_permissions: Value,
    /// The server's version when this was deployed (for version drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The server's declared environment when this was deployed (for drift in required and
    /// secret variables); absent in configurations recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_schema: Option<Vec<EnvDecl>>,
    /// The registry's own arguments at deploy time; `args` minus these are the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_args: Option<Vec<String>>,
}

impl InstanceSpec {
    /// Whether clients reach the server over the network (HTTP or SSE).
    pub fn is_network(&self) -> bool {
        self.transport != "stdio"
    }

    /// The port the container listens on, for network transports.
    pub fn port(&self) -> Option<u16> {
        self.is_network()
            .then(|| self.target_port.unwrap_or(DEFAULT_PORT))
    }

    /// Whether a NetworkPolicy follows from the server's permissions.
    pub fn wants_network_policy(&self) -> bool {
        self.network_permissions.get("outbound").is_some()
    }
}

/// Labels of every object of an instance.
pub fn labels(instance: Uuid, name: &str, server: Uuid) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("app.kubernetes.io/name".to_string(), name.to_string()),
        (INSTANCE_LABEL.to_string(), instance.to_string()),
        (SERVER_LABEL.to_string(), server.to_string()),
    ])
}

/// The label selector of an instance's pods.
pub fn selector(instance: Uuid) -> String {
    format!("{INSTANCE_LABEL}={instance}")
}

/// The Deployment. `restarted_at` keeps a restart annotation across re-applies.
pub fn deployment(
    instance: Uuid,
    name: &str,
    namespace: &str,
    spec: &InstanceSpec,
    progress_deadline_seconds: i32,
    restarted_at: Option<&str>,
) -> Value {
    let labels = labels(instance, name, spec.server_id);
    let mut env: Vec<Value> = spec
        .env
        .iter()
        .map(|e| json!({"name": e.name, "value": e.value}))
        .collect();
    if let Some(secret) = &spec.secret_name {
        for n in &spec.secret_env {
            env.push(json!({"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": n}}}));
        }
    }
    let mut container = json!({
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
    });
    if !spec.args.is_empty() {
        container["args"] = json!(spec.args);
    }
    if let Some(port) = spec.port() {
        container["ports"] = json!([{"name": "mcp", "containerPort": port, "protocol": "TCP"}]);
    }
    if let Some(r) = &spec.resources {
        container["resources"] = r.clone();
    }
    let mut template_meta = json!({"labels": labels});
    if let Some(at) = restarted_at {
        template_meta["annotations"] = json!({ RESTARTED_AT: at });
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "progressDeadlineSeconds": progress_deadline_seconds,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {INSTANCE_LABEL: instance.to_string()}},
            "template": {
                "metadata": template_meta,
                "spec": {"containers": [container]},
            },
        },
    })
}

/// The Secret holding secret env values (base64 in `data`).
pub fn secret(
    instance: Uuid,
    name: &str,
    namespace: &str,
    server: Uuid,
    values: &[(String, String)],
) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: BTreeMap<&str, String> = values
        .iter()
        .map(|(k, v)| (k.as_str(), b64.encode(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(name), "namespace": namespace,
                     "labels": labels(instance, name, server)},
        "type": "Opaque",
        "data": data,
    })
}

/// Name of an instance's Secret.
pub fn secret_name(name: &str) -> String {
    format!("{name}-env")
}

/// The Service of an HTTP or SSE instance.
pub fn service(instance: Uuid, name: &str, namespace: &str, spec: &InstanceSpec) -> Option<Value> {
    let port = spec.port()?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": labels(instance, name, spec.server_id)},
        "spec": {
            "type": "ClusterIP",
            "selector": {INSTANCE_LABEL: instance.to_string()},
            "ports": [{"name": "mcp", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }))
}

/// The egress NetworkPolicy derived from `networkPermissions.outbound`: DNS plus the allowed
/// ports, or everything with `insecureAllowAll`. NetworkPolicy cannot name hosts, so the allowed
/// hosts are recorded in an annotation for an egress proxy to enforce.
pub fn network_policy(
    instance: Uuid,
    name: &str,
    namespace: &str,
    spec: &InstanceSpec,
) -> Option<Value> {
    let outbound = spec.network_permissions.get("outbound")?;
    let allow_all = outbound
        .get("insecureAllowAll")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ports: Vec<i64> = outbound
        .get("allowPort")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let hosts: Vec<String> = outbound
        .get("allowHost")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let egress = if allow_all {
        json!([{}])
    } else {
        let mut rules = vec![json!({"ports": [
            {"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}
        ]})];
        if !ports.is_empty() {
            rules.push(json!({"ports": ports.iter()
                .map(|p| json!({"protocol": "TCP", "port": p}))
                .collect::<Vec<_>>()}));
        }
        json!(rules)
    };
    Some(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": labels(instance, name, spec.server_id),
            "annotations": {"hivegraph.dev/allowed-hosts": hosts.join(",")},
        },
        "spec": {
            "podSelector": {"matchLabels": {INSTANCE_LABEL: instance.to_string()}},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            server_id: Uuid::nil(),
            server_name: "fetch".into(),
            image: "ghcr.io/x/fetch:1".into(),
            transport: "http".into(),
            replicas: 2,
            env: vec![EnvPlain {
                name: "LEVEL".into(),
                value: "info".into(),
            }],
            secret_env: vec!["TOKEN".into()],
            secret_name: Some("web-env".into()),
            args: vec!["--x".into()],
            resources: None,
            target_port: Some(9000),
            network_permissions: json!({"outbound": {"allowPort": [443], "allowHost": ["a.b"]}}),
            server_version: None,
            env_schema: None,
            server_args: None,
        }
    }

    #[test]
    fn deployment_keeps_secrets_out_of_the_spec() {
        let d = deployment(Uuid::nil(), "web", "ns", &spec(), 600, None);
        let text = d.to_string();
        assert!(text.contains("secretKeyRef"));
        assert_eq!(d["spec"]["replicas"], json!(2));
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            json!(9000)
        );
        let s = service(Uuid::nil(), "web", "ns", &spec()).unwrap();
        assert_eq!(s["spec"]["ports"][0]["port"], json!(9000));
        let np = network_policy(Uuid::nil(), "web", "ns", &spec()).unwrap();
        assert_eq!(np["spec"]["egress"][1]["ports"][0]["port"], json!(443));
    }

    #[test]
    fn names() {}
}
