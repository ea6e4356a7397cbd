//! A simulated ToolHive operator (`kube-emulator --toolhive-operator`), following
//! `toolhive-operator/mcpserver-workloads.md` and `restart-annotation.md`:
//!
//! * `MCPServer` → a proxy-runner Deployment `<name>`, a Service `mcp-<name>-proxy` and a
//!   StatefulSet `<name>` running the MCP image, all owned by the CR (deleting it
//!   garbage-collects them); a missing StatefulSet is recreated on the next pass;
//! * `MCPRemoteProxy` → a Deployment `<name>` and a Service `mcp-<name>-remote-proxy`;
//! * status: `phase` (`Pending`/`Ready`/`Failed`/`Stopped`/`Terminating`), `url`,
//!   `readyReplicas`, `observedGeneration`, `message` and a `Ready` condition;
//! * the `restarted-at` annotation restarts pods (rolling through the pod templates, or
//!   `immediate` by deleting them), once per timestamp (`last-processed-restart`);
//! * a finalizer that this operator removes after reporting `Terminating`.

use crate::Shared;
use crate::controllers::{is_terminating, owner_ref};
use crate::defaults;
use crate::store::{meta_str, now_ts};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const GROUP: &str = "toolhive.stacklok.dev";
pub const MCPSERVERS: &str = "mcpservers.toolhive.stacklok.dev";
pub const REMOTE_PROXIES: &str = "mcpremoteproxies.toolhive.stacklok.dev";
pub const PROXY_IMAGE: &str = "ghcr.io/stacklok/toolhive/proxyrunner:v0.44.0";
pub const FINALIZER: &str = "mcpserver.toolhive.stacklok.dev/finalizer";
pub const RESTARTED_AT: &str = "mcpserver.toolhive.stacklok.dev/restarted-at";
pub const RESTART_STRATEGY: &str = "mcpserver.toolhive.stacklok.dev/restart-strategy";
pub const LAST_RESTART: &str = "mcpserver.toolhive.stacklok.dev/last-processed-restart";
/// Kept on child pod templates across reconciles (`kubectl rollout restart`).
const KUBECTL_RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Run the operator until the emulator stops.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    loop {
        for kind in [MCPSERVERS, REMOTE_PROXIES] {
            let (items, _) = shared.store.list(kind, None);
            for cr in &items {
                reconcile(&shared, kind, cr);
            }
        }
        tokio::select! {
            r = rx.changed() => { if r.is_err() { return; } }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn reconcile(shared: &Shared, kind: &'static str, cr: &Value) {
    let ns = meta_str(cr, "namespace");
    let name = meta_str(cr, "name");
    if is_terminating(cr) {
        finish_deletion(shared, kind, cr);
        return;
    }
    if !has_finalizer(cr) {
        shared.store.update_with(kind, ns, name, None, |o| {
            let f = o["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            o["metadata"]["finalizers"] = json!([f, vec![json!(FINALIZER)]].concat());
        });
        return;
    }
    let status = if kind == MCPSERVERS {
        process_restart(shared, cr);
        reconcile_server(shared, cr)
    } else {
        reconcile_remote(shared, cr)
    };
    write_status(shared, kind, cr, status);
}

fn has_finalizer(o: &Value) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.contains(&json!(FINALIZER)))
}

/// `Terminating` is reported, then the finalizer is removed (the store then deletes the CR
/// and the garbage collector its workloads).
fn finish_deletion(shared: &Shared, kind: &'static str, cr: &Value) {
    if !has_finalizer(cr) {
        return;
    }
    let (ns, name) = (meta_str(cr, "namespace"), meta_str(cr, "name"));
    if cr.pointer("/status/phase") != Some(&json!("Terminating")) {
        shared
            .store
            .update_with(kind, ns, name, Some("status"), |o| {
                o["status"]["phase"] = json!("Terminating");
                o["status"]["message"] = json!("the MCP server is being deleted");
            });
        return;
    }
    shared.store.update_with(kind, ns, name, None, |o| {
        if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
            f.retain(|x| x != FINALIZER);
        }
    });
}

/// What a reconcile concluded.
struct Outcome {
    phase: &'static str,
    ready: bool,
    reason: String,
    message: String,
    url: Option<String>,
    ready_replicas: i64,
    extra: Vec<Value>,
}

impl Outcome {
    fn pending(reason: &str, message: String) -> Outcome {
        Outcome {
            phase: "Pending",
            ready: false,
            reason: reason.into(),
            message,
            url: None,
            ready_replicas: 0,
            extra: vec![],
        }
    }
}

/// The labels of a CR's children (and their pod selectors).
fn labels(cr: &Value, component: &str) -> Value {
    let name = meta_str(cr, "name");
    json!({
        "app.kubernetes.io/name": cr["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "toolhive-operator",
        "toolhive": "true",
        "toolhive-name": name,
    })
}

fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

// ------------------------------------------------------------------------------------------
// MCPServer
// ------------------------------------------------------------------------------------------

fn reconcile_server(shared: &Shared, cr: &Value) -> Outcome {
    let (ns, name) = (meta_str(cr, "namespace"), meta_str(cr, "name"));
    let spec = &cr["spec"];
    if let Some(missing) = missing_reference(shared, ns, spec) {
        return missing;
    }
    let stdio = spec["transport"].as_str().unwrap_or("stdio") == "stdio";
    let asked = int(&spec["replicas"], 1);
    let backend_asked = if asked == 0 {
        0
    } else {
        int(&spec["backendReplicas"], 1)
    };
    let capped = stdio && (asked > 1 || backend_asked > 1);
    let (replicas, backend) = if capped {
        (1, 1)
    } else {
        (asked, backend_asked)
    };
    let port = int(&spec["proxyPort"], 8080);
    let proxy = proxy_deployment(
        cr,
        replicas,
        port,
        &[
            "run".into(),
            format!(
                "--transport={}",
                spec["transport"].as_str().unwrap_or("stdio")
            ),
            format!("--proxy-port={port}"),
            format!("--name={name}"),
            spec["image"].as_str().unwrap_or_default().to_string(),
        ],
    );
    let had_proxy = shared.store.get("deployments", ns, name).is_some();
    ensure(shared, "deployments", ns, proxy);
    ensure(
        shared,
        "services",
        ns,
        service(cr, &format!("mcp-{name}-proxy"), port),
    );
    if had_proxy && shared.store.get("statefulsets", ns, name).is_none() {
        bounce_proxy(shared, ns, name);
    }
    ensure(
        shared,
        "statefulsets",
        ns,
        backend_statefulset(cr, backend, stdio),
    );
    let mut out = workload_outcome(shared, ns, name, replicas, true);
    if out.phase == "Ready" {
        out.url = Some(format!(
            "http://mcp-{name}-proxy.{ns}.svc.cluster.local:{port}"
        ));
    }
    if capped {
        out.extra.push(json!({"type": "StdioReplicaCapped", "status": "True", "reason": "StdioTransport",
            "message": format!("stdio transport supports a single replica; replicas {asked} (backend {backend_asked}) capped to 1")}));
    }
    out
}

/// A Secret of `spec.secrets` or the ConfigMap of a `configmap` permission profile that does
/// not exist keeps the server Pending.
fn missing_reference(shared: &Shared, ns: &str, spec: &Value) -> Option<Outcome> {
    for s in spec["secrets"].as_array().into_iter().flatten() {
        let sn = s["name"].as_str().unwrap_or_default();
        if shared.store.get("secrets", ns, sn).is_none() {
            return Some(Outcome::pending(
                "SecretNotFound",
                format!("Secret \"{sn}\" referenced by spec.secrets not found in namespace {ns}"),
            ));
        }
    }
    let pp = &spec["permissionProfile"];
    if pp["type"] == json!("configmap") {
        let cm = pp["name"].as_str().unwrap_or_default();
        if shared.store.get("configmaps", ns, cm).is_none() {
            return Some(Outcome::pending(
                "ConfigMapNotFound",
                format!(
                    "ConfigMap \"{cm}\" referenced by spec.permissionProfile not found in namespace {ns}"
                ),
            ));
        }
    }
    None
}

fn proxy_deployment(cr: &Value, replicas: i64, port: i64, args: &[String]) -> Value {
    let name = meta_str(cr, "name");
    let l = labels(cr, "proxy");
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": l, "ownerReferences": [owner_ref(cr)]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": l},
            "template": {"metadata": {"labels": l}, "spec": {"containers": [{
                "name": "toolhive", "image": PROXY_IMAGE, "args": args,
                "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            }]}},
        },
    })
}

fn service(cr: &Value, svc_name: &str, port: i64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": svc_name, "labels": labels(cr, "proxy"), "ownerReferences": [owner_ref(cr)]},
        "spec": {"selector": labels(cr, "proxy"), "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]},
    })
}

fn backend_env(spec: &Value) -> Vec<Value> {
    let mut env: Vec<Value> = spec["env"].as_array().cloned().unwrap_or_default();
    for s in spec["secrets"].as_array().into_iter().flatten() {
        let key = s["key"].as_str().unwrap_or_default();
        let var = s["targetEnvName"].as_str().unwrap_or(key);
        env.push(
            json!({"name": var, "valueFrom": {"secretKeyRef": {"name": s["name"], "key": key}}}),
        );
    }
    env
}

fn backend_statefulset(cr: &Value, replicas: i64, stdio: bool) -> Value {
    let name = meta_str(cr, "name");
    let spec = &cr["spec"];
    let l = labels(cr, "mcp-server");
    let mut c = json!({"name": "mcp", "image": spec["image"], "env": backend_env(spec)});
    for k in ["args", "resources"] {
        if let Some(v) = spec.get(k) {
            c[k] = v.clone();
        }
    }
    if stdio {
        c["stdin"] = json!(true);
    } else {
        let p = int(&spec["mcpPort"], int(&spec["proxyPort"], 8080));
        c["ports"] = json!([{"name": "mcp", "containerPort": p, "protocol": "TCP"}]);
    }
    let mut tmeta = json!({"labels": l});
    if let Some(sc) = cr.pointer("/metadata/annotations/emulator.hivegraph.dev~1scenario") {
        tmeta["annotations"] = json!({crate::kubelet::SCENARIO_ANNOTATION: sc});
    }
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": l, "ownerReferences": [owner_ref(cr)]},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": l},
                 "template": {"metadata": tmeta, "spec": {"containers": [c]}}},
    })
}

/// A missing StatefulSet: the proxy Deployment is bounced (the runner re-applies the workload),
/// as mcpserver-workloads.md describes; the server stays Pending until both are back.
fn bounce_proxy(shared: &Shared, ns: &str, name: &str) {
    shared
        .store
        .update_with("deployments", ns, name, None, |o| {
            o["spec"]["template"]["metadata"]["annotations"][KUBECTL_RESTARTED_AT] =
                json!(now_ts());
        });
}

/// Create the child, or bring its spec back to the desired one (keeping restart annotations).
fn ensure(shared: &Shared, storage: &'static str, ns: &str, mut desired: Value) {
    let name = meta_str(&desired, "name").to_string();
    let Some(cur) = shared.store.get(storage, ns, &name) else {
        let def = shared.store.def_of(storage);
        let _ = shared
            .store
            .create(def, ns, defaults::apply(storage, desired));
        return;
    };
    if storage == "services" {
        desired["spec"]["clusterIP"] = cur["spec"]["clusterIP"].clone();
    }
    let mut spec = defaults::apply(storage, desired)["spec"].take();
    for key in [KUBECTL_RESTARTED_AT, RESTARTED_AT] {
        let path = format!(
            "/spec/template/metadata/annotations/{}",
            key.replace('/', "~1")
        );
        if let Some(v) = cur.pointer(&path) {
            spec["template"]["metadata"]["annotations"][key] = v.clone();
        }
    }
    if cur["spec"] != spec {
        shared
            .store
            .update_with(storage, ns, &name, None, |o| o["spec"] = spec);
    }
}

/// Phase from the proxy Deployment (and the backend StatefulSet for MCPServers).
fn workload_outcome(
    shared: &Shared,
    ns: &str,
    name: &str,
    replicas: i64,
    backend: bool,
) -> Outcome {
    if let Some(fail) = backend.then(|| backend_failure(shared, ns, name)).flatten() {
        return fail;
    }
    let dep = shared
        .store
        .get("deployments", ns, name)
        .unwrap_or_default();
    let dep_ready = int(&dep["status"]["readyReplicas"], 0);
    let dep_ok = dep_ready >= replicas
        && int(&dep["status"]["replicas"], 0) == replicas
        && dep["status"]["observedGeneration"] == dep["metadata"]["generation"];
    let sts_ok = !backend || statefulset_ready(shared, ns, name);
    if replicas == 0 && dep_ok {
        let mut o = Outcome::pending("Stopped", "the MCP server is scaled to zero".into());
        o.phase = "Stopped";
        return o;
    }
    if dep_ok && sts_ok {
        return Outcome {
            phase: "Ready",
            ready: true,
            reason: "Ready".into(),
            message: "the MCP server is ready".into(),
            url: None,
            ready_replicas: dep_ready,
            extra: vec![],
        };
    }
    let mut o = Outcome::pending(
        "NotReady",
        format!(
            "waiting for the proxy Deployment ({dep_ready}/{replicas} ready){}",
            if sts_ok {
                ""
            } else {
                " and the MCP server StatefulSet"
            }
        ),
    );
    o.ready_replicas = dep_ready;
    o
}

fn statefulset_ready(shared: &Shared, ns: &str, name: &str) -> bool {
    let Some(sts) = shared.store.get("statefulsets", ns, name) else {
        return false;
    };
    let st = &sts["status"];
    int(&st["readyReplicas"], 0) == int(&sts["spec"]["replicas"], 1)
        && st["currentRevision"] == st["updateRevision"]
        && st["observedGeneration"] == sts["metadata"]["generation"]
}

/// An MCP pod of the StatefulSet that cannot start: image pull failure or crash loop.
fn backend_failure(shared: &Shared, ns: &str, name: &str) -> Option<Outcome> {
    let (pods, _) = shared.store.list("pods", Some(ns));
    let sts_pods = pods.iter().filter(|p| {
        p.pointer("/metadata/labels/toolhive-name") == Some(&json!(name))
            && p.pointer("/metadata/labels/app.kubernetes.io~1component")
                == Some(&json!("mcp-server"))
            && !is_terminating(p)
    });
    for p in sts_pods {
        for cs in p
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let w = &cs["state"]["waiting"];
            let reason = w["reason"].as_str().unwrap_or_default();
            if matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "CrashLoopBackOff"
            ) {
                let msg = format!(
                    "pod {}: {reason}: {}",
                    meta_str(p, "name"),
                    w["message"].as_str().unwrap_or_default()
                );
                let mut o = Outcome::pending(reason, msg);
                o.phase = "Failed";
                return Some(o);
            }
        }
    }
    None
}

/// Handle a new `restarted-at` timestamp once: rolling (pod template annotation) or
/// immediate (delete the pods).
fn process_restart(shared: &Shared, cr: &Value) {
    let ann = |k: &str| {
        cr.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1")))
            .and_then(Value::as_str)
    };
    let Some(at) = ann(RESTARTED_AT).filter(|s| crate::store::parse_ts(s).is_some()) else {
        return;
    };
    let newer = ann(LAST_RESTART)
        .and_then(crate::store::parse_ts)
        .is_none_or(|last| crate::store::parse_ts(at).is_some_and(|t| t > last));
    if !newer {
        return;
    }
    let (ns, name) = (meta_str(cr, "namespace"), meta_str(cr, "name"));
    if ann(RESTART_STRATEGY) == Some("immediate") {
        let def = shared.store.def_of("pods");
        let (pods, _) = shared.store.list("pods", Some(ns));
        for p in pods
            .iter()
            .filter(|p| p.pointer("/metadata/labels/toolhive-name") == Some(&json!(name)))
        {
            let _ = shared
                .store
                .delete(def, ns, meta_str(p, "name"), &json!({}));
        }
    } else {
        for storage in ["deployments", "statefulsets"] {
            shared.store.update_with(storage, ns, name, None, |o| {
                o["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] = json!(at);
            });
        }
    }
    shared.store.update_with(MCPSERVERS, ns, name, None, |o| {
        o["metadata"]["annotations"][LAST_RESTART] = json!(at);
    });
}

// ------------------------------------------------------------------------------------------
// MCPRemoteProxy
// ------------------------------------------------------------------------------------------

/// Referenced auth configurations of a remote proxy that do not exist keep it Pending.
fn missing_config(shared: &Shared, ns: &str, spec: &Value) -> Option<Outcome> {
    let refs = [
        (
            "externalAuthConfigRef",
            "mcpexternalauthconfigs.toolhive.stacklok.dev",
            "MCPExternalAuthConfig",
        ),
        (
            "oidcConfigRef",
            "mcpoidcconfigs.toolhive.stacklok.dev",
            "MCPOIDCConfig",
        ),
    ];
    for (field, storage, kind) in refs {
        let Some(n) = spec[field]["name"].as_str() else {
            continue;
        };
        if shared.store.get(storage, ns, n).is_none() {
            return Some(Outcome::pending(
                &format!("{kind}NotFound"),
                format!("{kind} \"{n}\" referenced by spec.{field} not found in namespace {ns}"),
            ));
        }
    }
    None
}

fn reconcile_remote(shared: &Shared, cr: &Value) -> Outcome {
    let (ns, name) = (meta_str(cr, "namespace"), meta_str(cr, "name"));
    let spec = &cr["spec"];
    if let Some(missing) = missing_config(shared, ns, spec) {
        return missing;
    }
    let replicas = int(&spec["replicas"], 1);
    let port = int(&spec["proxyPort"], 8080);
    let args = [
        "run".to_string(),
        format!(
            "--remote-url={}",
            spec["remoteUrl"].as_str().unwrap_or_default()
        ),
        format!(
            "--transport={}",
            spec["transport"].as_str().unwrap_or("streamable-http")
        ),
        format!("--proxy-port={port}"),
        format!("--name={name}"),
    ];
    ensure(
        shared,
        "deployments",
        ns,
        proxy_deployment(cr, replicas, port, &args),
    );
    let svc = format!("mcp-{name}-remote-proxy");
    ensure(shared, "services", ns, service(cr, &svc, port));
    let mut out = workload_outcome(shared, ns, name, replicas, false);
    if out.phase == "Ready" {
        out.url = Some(format!("http://{svc}.{ns}.svc.cluster.local:{port}"));
    }
    out
}

// ------------------------------------------------------------------------------------------
// status
// ------------------------------------------------------------------------------------------

fn write_status(shared: &Shared, kind: &'static str, cr: &Value, o: Outcome) {
    let old = &cr["status"];
    let mut conds = vec![condition(
        old,
        "Ready",
        if o.ready { "True" } else { "False" },
        &o.reason,
        &o.message,
    )];
    for x in &o.extra {
        let t = x["type"].as_str().unwrap_or_default();
        let mut c = condition(
            old,
            t,
            "True",
            x["reason"].as_str().unwrap_or_default(),
            x["message"].as_str().unwrap_or_default(),
        );
        c["observedGeneration"] = cr["metadata"]["generation"].clone();
        conds.push(c);
    }
    conds[0]["observedGeneration"] = cr["metadata"]["generation"].clone();
    let mut status = json!({
        "phase": o.phase,
        "message": o.message,
        "readyReplicas": o.ready_replicas,
        "observedGeneration": cr["metadata"]["generation"],
        "conditions": conds,
    });
    if let Some(u) = o.url {
        status["url"] = json!(u);
    }
    if *old != status {
        let (ns, name) = (meta_str(cr, "namespace"), meta_str(cr, "name"));
        shared
            .store
            .update_with(kind, ns, name, Some("status"), |x| x["status"] = status);
    }
}

/// A condition, keeping its lastTransitionTime while the status is unchanged.
fn condition(old: &Value, t: &str, status: &str, reason: &str, message: &str) -> Value {
    let prev = old["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == json!(t)));
    let since = match prev {
        Some(p) if p["status"] == json!(status) => p["lastTransitionTime"].clone(),
        _ => json!(now_ts()),
    };
    json!({"type": t, "status": status, "reason": reason, "message": message, "lastTransitionTime": since})
}
