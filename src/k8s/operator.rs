//! The ToolHive operator backend: an instance is one `MCPServer` (container servers) or
//! `MCPRemoteProxy` (remote servers) custom resource of `toolhive.stacklok.dev/v1beta1`, plus
//! the Secret(s) holding its secret values and the ConfigMap holding its permission profile.
//! The operator turns the resource into a proxy-runner Deployment, a Service and (for
//! `MCPServer`) a StatefulSet running the MCP image; the instance's truth is the resource's
//! `status` and the pods behind it (`shared/data/toolhive-operator/`).
//!
//! Everything here but [`observe`] is pure, so the resources are unit-tested field by field.

use base64::Engine;
use dataloaders::enums::{HealthStatus, InstancePhase, InstanceStatus};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use serde_json::{Value, json};
use uuid::Uuid;

use super::health::{self, Observed, Verdict};
use super::manifests::{InstanceSpec, labels};

/// API group and version of the resources the gateway writes.
pub const API_VERSION: &str = "toolhive.stacklok.dev/v1beta1";
/// `Cluster.capabilities` entry: the cluster serves `MCPServer` and the gateway may create it.
pub const MCPSERVERS: &str = "mcpservers.toolhive.stacklok.dev";
/// `Cluster.capabilities` entry: the cluster serves `MCPRemoteProxy` and the gateway may
/// create it.
pub const REMOTE_PROXIES: &str = "mcpremoteproxies.toolhive.stacklok.dev";
/// Annotation whose new RFC 3339 value makes the operator restart the server's pods.
pub const RESTARTED_AT: &str = "mcpserver.toolhive.stacklok.dev/restarted-at";
/// Port of the proxy runner in front of every server.
pub const PROXY_PORT: u16 = 8080;
/// Label the operator puts on the workloads and pods of a resource.
pub const NAME_LABEL: &str = "toolhive-name";
/// Key of the permission profile in the `<name>-permissions` ConfigMap.
pub const PERMISSIONS_KEY: &str = "permissions.json";

/// `MCPServer` or `MCPRemoteProxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    RemoteProxy,
}

impl Kind {
    /// The kind an instance is deployed as.
    pub fn of(spec: &InstanceSpec) -> Kind {
        if spec.remote_url.is_some() {
            Kind::RemoteProxy
        } else {
            Kind::Server
        }
    }

    /// The Kubernetes kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Server => "MCPServer",
            Kind::RemoteProxy => "MCPRemoteProxy",
        }
    }

    /// The resource for dynamic API calls.
    pub fn resource(self) -> ApiResource {
        let plural = match self {
            Kind::Server => "mcpservers",
            Kind::RemoteProxy => "mcpremoteproxies",
        };
        ApiResource {
            group: "toolhive.stacklok.dev".into(),
            version: "v1beta1".into(),
            api_version: API_VERSION.into(),
            kind: self.name().into(),
            plural: plural.into(),
        }
    }

    /// The `Cluster.capabilities` entry this kind needs.
    pub fn capability(self) -> &'static str {
        match self {
            Kind::Server => MCPSERVERS,
            Kind::RemoteProxy => REMOTE_PROXIES,
        }
    }
}

/// The resource's API in `ns`.
pub fn api(client: &kube::Client, ns: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.resource())
}

/// The CRD's transport name for the registry's (`http` is `streamable-http`).
pub fn transport(spec: &InstanceSpec) -> &'static str {
    match spec.transport.as_str() {
        "stdio" => "stdio",
        "sse" => "sse",
        _ => "streamable-http",
    }
}

/// Why a replica count is refused for this instance (stdio servers run one process).
pub fn replicas_refusal(spec: &InstanceSpec, replicas: i32) -> Option<String> {
    (spec.transport == "stdio" && replicas > 1).then(|| {
        format!(
            "{} speaks stdio: its proxy bridges a single process, so it runs at most 1 replica \
             (asked for {replicas})",
            spec.server_name
        )
    })
}

/// Names of the Secrets holding an `MCPServer`'s secret env values, one per variable
/// (`spec.secrets` is a list keyed by Secret name): `<name>-env`, then `<name>-env-2`, ….
pub fn secret_names(name: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| match i {
            0 => super::manifests::secret_name(name),
            _ => format!("{}-{}", super::manifests::secret_name(name), i + 1),
        })
        .collect()
}

/// The Secrets of an operator instance (`values` in the order of `spec.secret_env`).
pub fn secrets(
    instance: Uuid,
    name: &str,
    namespace: &str,
    server: Uuid,
    values: &[(String, String)],
) -> Vec<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    secret_names(name, values.len())
        .into_iter()
        .zip(values)
        .map(|(secret, (key, value))| {
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret, "namespace": namespace,
                             "labels": labels(instance, name, server)},
                "type": "Opaque",
                "data": {key: b64.encode(value)},
            })
        })
        .collect()
}

/// Name of an instance's permission-profile ConfigMap.
pub fn permissions_name(name: &str) -> String {
    format!("{name}-permissions")
}

/// The ToolHive permission profile (`network.outbound` in ToolHive's own snake_case) from the
/// registry's network permissions.
pub fn permission_profile(spec: &InstanceSpec) -> Option<Value> {
    let out = spec.network_permissions.get("outbound")?;
    Some(json!({"network": {"outbound": {
        "insecure_allow_all": out.get("insecureAllowAll").cloned().unwrap_or(json!(false)),
        "allow_host": out.get("allowHost").cloned().unwrap_or(json!([])),
        "allow_port": out.get("allowPort").cloned().unwrap_or(json!([])),
    }}}))
}

/// The ConfigMap `<name>-permissions` holding the permission profile, when the registry
/// declares network permissions.
pub fn permissions_configmap(
    instance: Uuid,
    name: &str,
    namespace: &str,
    spec: &InstanceSpec,
) -> Option<Value> {
    let profile = permission_profile(spec)?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": permissions_name(name), "namespace": namespace,
                     "labels": labels(instance, name, spec.server_id)},
        "data": {PERMISSIONS_KEY: profile.to_string()},
    }))
}

/// `resources` in the CRD's shape (cpu and memory only).
fn crd_resources(r: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for part in ["limits", "requests"] {
        let mut m = serde_json::Map::new();
        for q in ["cpu", "memory"] {
            if let Some(v) = r.get(part).and_then(|p| p.get(q)) {
                m.insert(q.into(), v.clone());
            }
        }
        if !m.is_empty() {
            out.insert(part.into(), Value::Object(m));
        }
    }
    Value::Object(out)
}

fn metadata(instance: Uuid, name: &str, namespace: &str, spec: &InstanceSpec) -> Value {
    json!({"name": name, "namespace": namespace, "labels": labels(instance, name, spec.server_id)})
}

/// The `MCPServer` of a container server. Secret values never appear: `spec.secrets` names
/// the Secrets (see [`secret_names`]).
pub fn mcp_server(instance: Uuid, name: &str, namespace: &str, spec: &InstanceSpec) -> Value {
    let mut s = json!({
        "image": spec.image,
        "transport": transport(spec),
        "proxyPort": PROXY_PORT,
        "replicas": spec.replicas,
    });
    if spec.transport != "stdio" {
        s["mcpPort"] = json!(spec.target_port.unwrap_or(super::manifests::DEFAULT_PORT));
        s["backendReplicas"] = json!(spec.replicas);
    }
    if !spec.args.is_empty() {
        s["args"] = json!(spec.args);
    }
    if !spec.env.is_empty() {
        s["env"] = json!(spec.env);
    }
    if !spec.secret_env.is_empty() {
        let refs: Vec<Value> = secret_names(name, spec.secret_env.len())
            .into_iter()
            .zip(&spec.secret_env)
            .map(|(secret, var)| json!({"name": secret, "key": var, "targetEnvName": var}))
            .collect();
        s["secrets"] = json!(refs);
    }
    if let Some(r) = &spec.resources {
        s["resources"] = crd_resources(r);
    }
    if permission_profile(spec).is_some() {
        s["permissionProfile"] = json!({
            "type": "configmap", "name": permissions_name(name), "key": PERMISSIONS_KEY,
        });
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": Kind::Server.name(),
        "metadata": metadata(instance, name, namespace, spec),
        "spec": s,
    })
}

/// The `MCPRemoteProxy` of a remote server.
pub fn remote_proxy(instance: Uuid, name: &str, namespace: &str, spec: &InstanceSpec) -> Value {
    let mut s = json!({
        "remoteUrl": spec.remote_url.clone().unwrap_or_default(),
        "transport": if spec.transport == "sse" { "sse" } else { "streamable-http" },
        "proxyPort": PROXY_PORT,
        "replicas": spec.replicas,
    });
    if let Some(r) = &spec.resources {
        s["resources"] = crd_resources(r);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": Kind::RemoteProxy.name(),
        "metadata": metadata(instance, name, namespace, spec),
        "spec": s,
    })
}

/// The custom resource of an instance.
pub fn custom_resource(instance: Uuid, name: &str, namespace: &str, spec: &InstanceSpec) -> Value {
    match Kind::of(spec) {
        Kind::Server => mcp_server(instance, name, namespace, spec),
        Kind::RemoteProxy => remote_proxy(instance, name, namespace, spec),
    }
}

// ---------------------------------------------------------------------------------------------
// instance truth
// ---------------------------------------------------------------------------------------------

/// Whether an event concerns the resource `name`: the resource itself, its StatefulSet, its
/// proxy Deployment and ReplicaSets, or one of its pods.
fn event_concerns(ev: &Event, name: &str, pod_names: &[String]) -> bool {
    let obj = &ev.involved_object;
    let kind = obj.kind.as_deref().unwrap_or("");
    (matches!(kind, "MCPServer" | "MCPRemoteProxy" | "StatefulSet")
        && obj.name.as_deref() == Some(name))
        || health::event_concerns(ev, name, pod_names)
}

fn rv_of(meta: &kube::api::ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// The `Ready` condition's (reason, message) of a resource's status.
fn ready_condition(status: &Value) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready"));
    let s = |k: &str| {
        c.and_then(|c| c[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (s("reason"), s("message"))
}

/// The instance's state from its resource (`None`: gone), the pods behind it and its events.
/// A ready server's transport cannot be probed from the gateway (it answers inside the
/// cluster), so its health is `UNKNOWN`, never a guessed `HEALTHY`.
pub fn derive(cr: Option<&DynamicObject>, pods: &[Pod], events: &[&Event]) -> Observed {
    let (events, last_warning) = health::summarize_events(events.to_vec());
    let live = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    let Some(cr) = cr else {
        return Observed::gone(pods.len(), events, last_warning);
    };
    let status = &cr.data["status"];
    let generation = cr.metadata.generation.unwrap_or(0);
    let observed_generation = status["observedGeneration"].as_i64().unwrap_or(0);
    let desired = cr.data["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    let ready = status["readyReplicas"].as_i64().unwrap_or(0) as i32;
    let rv = std::iter::once(&cr.metadata)
        .chain(pods.iter().map(|p| &p.metadata))
        .filter_map(rv_of)
        .max()
        .unwrap_or(0);
    let phase = status["phase"].as_str().unwrap_or("Pending");
    let (reason, message) = ready_condition(status);
    let message = status["message"].as_str().map_or(message, str::to_string);
    let mut o = Observed {
        missing: false,
        rv,
        pods: live,
        generation,
        observed_generation,
        revision: None,
        status: InstanceStatus::Pending,
        phase: InstancePhase::Deploying,
        desired,
        current: live as i32,
        ready,
        health: HealthStatus::Unknown,
        reason: format!("{}: {message}", cr.types.as_ref().map_or("", |t| &t.kind)),
        last_warning,
        events,
        verdict: Verdict::Progressing,
        endpoint: status["url"].as_str().map(str::to_string),
    };
    let running = if ready > 0 {
        InstanceStatus::Running
    } else {
        InstanceStatus::Pending
    };
    if cr.metadata.deletion_timestamp.is_some() || phase == "Terminating" {
        o.status = running;
        o.phase = InstancePhase::Terminating;
        return o;
    }
    match phase {
        "Ready" | "Running" => {
            o.status = InstanceStatus::Running;
            o.phase = InstancePhase::Ready;
            o.verdict = Verdict::Done;
            o.reason = format!(
                "{message}; the MCP endpoint answers inside the cluster, so the gateway cannot \
                 probe it (health UNKNOWN)"
            );
        }
        "Stopped" => {
            o.status = InstanceStatus::Stopped;
            o.phase = InstancePhase::Ready;
            o.verdict = Verdict::Done;
        }
        "Failed" => {
            let reason = if reason.is_empty() {
                "Failed".to_string()
            } else {
                reason
            };
            o.status = InstanceStatus::Failed;
            o.health = HealthStatus::Unhealthy;
            o.reason = format!("{reason}: {message}");
            o.verdict = Verdict::Failed { reason, message };
        }
        _ => o.status = running,
    }
    o
}

/// Reads an operator instance's state straight from the API.
pub async fn observe(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    kind: Kind,
) -> Result<Observed, kube::Error> {
    let cr = api(client, namespace, kind).get_opt(name).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{NAME_LABEL}={name}")))
        .await?
        .items;
    let pod_names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().limit(500))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| event_concerns(e, name, &pod_names))
        .collect();
    Ok(derive(cr.as_ref(), &pods, &mine))
}

/// The pods and container `Instance.logs` reads for an operator instance: the MCP server's
/// (the StatefulSet's) by default, the proxy runner's with `container: "proxy"`; another
/// container name reads that container of the MCP server's pod.
pub fn log_target(name: &str, container: Option<String>) -> (String, Option<String>) {
    let proxy = container.as_deref() == Some("proxy");
    let component = if proxy { "proxy" } else { "mcp-server" };
    (
        format!("{NAME_LABEL}={name},app.kubernetes.io/component={component}"),
        container.filter(|_| !proxy),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::manifests::{Backend, EnvPlain, INSTANCE_LABEL};

    fn spec(transport: &str) -> InstanceSpec {
        InstanceSpec {
            server_id: Uuid::nil(),
            server_name: "github".into(),
            image: "ghcr.io/github/github-mcp-server:v0.31.0".into(),
            transport: transport.into(),
            replicas: 1,
            env: vec![EnvPlain {
                name: "GITHUB_HOST".into(),
                value: "github.com".into(),
            }],
            secret_env: vec!["GITHUB_PERSONAL_ACCESS_TOKEN".into()],
            secret_name: Some("gh-env".into()),
            args: vec![],
            resources: Some(json!({"limits": {"cpu": "500m", "ephemeral-storage": "1Gi"}})),
            target_port: Some(9000),
            network_permissions: json!({"outbound": {"allowHost": [".github.com"],
                "allowPort": [443], "insecureAllowAll": false}}),
            server_version: None,
            env_schema: None,
            server_args: None,
            backend: Backend::Operator,
            remote_url: None,
            egress_note: None,
        }
    }

    #[test]
    fn an_mcpserver_holds_no_secret_value() {
        let id = Uuid::from_u128(7);
        let cr = mcp_server(id, "gh", "ns", &spec("stdio"));
        assert_eq!(cr["apiVersion"], json!("toolhive.stacklok.dev/v1beta1"));
        assert_eq!(cr["kind"], json!("MCPServer"));
        assert_eq!(
            cr["metadata"]["labels"][INSTANCE_LABEL],
            json!(id.to_string())
        );
        let s = &cr["spec"];
        assert_eq!(
            s["image"],
            json!("ghcr.io/github/github-mcp-server:v0.31.0")
        );
        assert_eq!(s["transport"], json!("stdio"));
        assert_eq!(s["proxyPort"], json!(8080));
        assert!(s.get("mcpPort").is_none(), "stdio has no MCP port");
        assert_eq!(
            s["env"],
            json!([{"name": "GITHUB_HOST", "value": "github.com"}])
        );
        assert_eq!(
            s["secrets"],
            json!([{"name": "gh-env", "key": "GITHUB_PERSONAL_ACCESS_TOKEN",
                    "targetEnvName": "GITHUB_PERSONAL_ACCESS_TOKEN"}])
        );
        assert_eq!(s["resources"], json!({"limits": {"cpu": "500m"}}));
        assert_eq!(
            s["permissionProfile"],
            json!({"type": "configmap", "name": "gh-permissions", "key": "permissions.json"})
        );
        let secrets = secrets(
            id,
            "gh",
            "ns",
            Uuid::nil(),
            &[("T".into(), "s3cr3t".into())],
        );
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0]["metadata"]["name"], json!("gh-env"));
        assert!(!cr.to_string().contains("s3cr3t"));
    }

    #[test]
    fn http_servers_name_their_port_and_backend() {
        let cr = mcp_server(Uuid::nil(), "f", "ns", &spec("http"));
        assert_eq!(cr["spec"]["transport"], json!("streamable-http"));
        assert_eq!(cr["spec"]["mcpPort"], json!(9000));
        assert_eq!(cr["spec"]["backendReplicas"], json!(1));
        assert_eq!(replicas_refusal(&spec("http"), 3), None);
        assert!(replicas_refusal(&spec("stdio"), 2).is_some());
        assert_eq!(replicas_refusal(&spec("stdio"), 1), None);
    }

    #[test]
    fn many_secret_values_take_one_secret_each() {
        assert_eq!(secret_names("a", 3), vec!["a-env", "a-env-2", "a-env-3"]);
        let mut s = spec("stdio");
        s.secret_env = vec!["A".into(), "B".into()];
        let cr = mcp_server(Uuid::nil(), "a", "ns", &s);
        assert_eq!(cr["spec"]["secrets"][1]["name"], json!("a-env-2"));
        assert_eq!(cr["spec"]["secrets"][1]["key"], json!("B"));
    }

    #[test]
    fn the_permission_profile_is_toolhives() {
        let cm = permissions_configmap(Uuid::nil(), "gh", "ns", &spec("stdio")).unwrap();
        let p: Value = serde_json::from_str(cm["data"][PERMISSIONS_KEY].as_str().unwrap()).unwrap();
        assert_eq!(
            p["network"]["outbound"]["allow_host"],
            json!([".github.com"])
        );
        assert_eq!(p["network"]["outbound"]["allow_port"], json!([443]));
        let mut none = spec("stdio");
        none.network_permissions = json!({});
        assert!(permissions_configmap(Uuid::nil(), "x", "ns", &none).is_none());
    }

    #[test]
    fn a_remote_proxy() {
        let mut s = spec("http");
        s.remote_url = Some("https://mcp.canva.com/mcp".into());
        let cr = custom_resource(Uuid::nil(), "canva", "ns", &s);
        assert_eq!(cr["kind"], json!("MCPRemoteProxy"));
        assert_eq!(cr["spec"]["remoteUrl"], json!("https://mcp.canva.com/mcp"));
        assert_eq!(cr["spec"]["transport"], json!("streamable-http"));
    }

    /// The resources the gateway writes for catalog-shaped servers, kept in
    /// `kube-emulator/tests/fixtures/gateway-crs.json`: the emulator's scenario
    /// `gateway_crs_validate` applies them (server-side dry-run) against the real CRDs, on the
    /// emulator and on the real-cluster tier. `HIVEGRAPH_UPDATE_GOLDEN=1` rewrites the file.
    #[test]
    fn the_fixture_of_written_resources_is_current() {
        let id = Uuid::from_u128(0x4242);
        let mut time = spec("stdio");
        (time.image, time.server_name) = ("docker.io/mcp/time:latest".into(), "time".into());
        (time.env, time.secret_env, time.resources) = (vec![], vec![], None);
        time.network_permissions =
            json!({"outbound": {"allowHost": [], "allowPort": [], "insecureAllowAll": false}});
        let mut fetch = spec("http");
        fetch.image = "ghcr.io/stackloklabs/gofetch/server:1.0.3".into();
        (fetch.env, fetch.secret_env, fetch.target_port) = (vec![], vec![], Some(8080));
        fetch.replicas = 2;
        fetch.args = vec!["--log-level".into(), "debug".into()];
        let mut github = spec("stdio");
        github.resources = Some(json!({"limits": {"cpu": "500m", "memory": "256Mi"},
                                        "requests": {"cpu": "100m"}}));
        let mut many = spec("sse");
        many.secret_env = vec!["A_KEY".into(), "B_SECRET".into(), "C_TOKEN".into()];
        let mut canva = spec("http");
        canva.remote_url = Some("https://mcp.canva.com/mcp".into());
        let crs = vec![
            custom_resource(id, "time", "ns", &time),
            custom_resource(id, "fetch", "ns", &fetch),
            custom_resource(id, "github", "ns", &github),
            custom_resource(id, "many", "ns", &many),
            custom_resource(id, "canva", "ns", &canva),
        ];
        let text = serde_json::to_string_pretty(&crs).unwrap() + "\n";
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/kube-emulator/tests/fixtures/gateway-crs.json"
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a test's switch to rewrite its fixture"
        )]
        let update = std::env::var_os("HIVEGRAPH_UPDATE_GOLDEN").is_some();
        if update {
            std::fs::write(path, &text).unwrap();
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == text,
            "{path} is stale: run HIVEGRAPH_UPDATE_GOLDEN=1 cargo test --lib operator"
        );
    }

    fn cr(status: Value, deleting: bool) -> DynamicObject {
        let mut v = json!({"apiVersion": API_VERSION, "kind": "MCPServer",
            "metadata": {"name": "t", "generation": 2, "resourceVersion": "9"},
            "spec": {"replicas": 1}, "status": status});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn status_maps_onto_the_instance() {
        let ready = derive(
            Some(&cr(
                json!({"phase": "Ready", "readyReplicas": 1, "observedGeneration": 2,
                                "url": "http://mcp-t-proxy.ns.svc.cluster.local:8080"}),
                false,
            )),
            &[],
            &[],
        );
        assert_eq!(ready.status, InstanceStatus::Running);
        assert_eq!(ready.health, HealthStatus::Unknown);
        assert_eq!(ready.verdict, Verdict::Done);
        assert_eq!(
            ready.endpoint.as_deref(),
            Some("http://mcp-t-proxy.ns.svc.cluster.local:8080")
        );
        let failed = derive(
            Some(&cr(
                json!({"phase": "Failed", "observedGeneration": 2, "message": "pod t-0: ErrImagePull: x",
                       "conditions": [{"type": "Ready", "status": "False", "reason": "ErrImagePull"}]}),
                false,
            )),
            &[],
            &[],
        );
        assert_eq!(failed.status, InstanceStatus::Failed);
        assert!(
            matches!(&failed.verdict, Verdict::Failed { reason, .. } if reason == "ErrImagePull")
        );
        let stopped = derive(Some(&cr(json!({"phase": "Stopped"}), false)), &[], &[]);
        assert_eq!(stopped.status, InstanceStatus::Stopped);
        let deleting = derive(Some(&cr(json!({"phase": "Ready"}), true)), &[], &[]);
        assert_eq!(deleting.phase, InstancePhase::Terminating);
        let pending = derive(Some(&cr(json!({}), false)), &[], &[]);
        assert_eq!(pending.status, InstanceStatus::Pending);
        assert_eq!(pending.verdict, Verdict::Progressing);
        let gone = derive(None, &[], &[]);
        assert!(gone.missing);
        assert_eq!(gone.verdict, Verdict::Done);
    }
}
