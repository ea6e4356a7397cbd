//! API defaulting and validation for the built-in kinds (the parts clients observe).

use crate::resources::ResourceDef;
use crate::selectors::LabelSelector;
use crate::status::ApiError;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.into(), v);
    }
}

pub fn namespace(mut ns: Value) -> Value {
    let name = ns
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    ns["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    set_default(&mut ns, "spec", json!({}));
    ns["spec"]["finalizers"] = json!(["kubernetes"]);
    if ns.pointer("/status/phase").is_none() {
        ns["status"] = json!({"phase": "Active"});
    }
    ns
}

static NEXT_IP: AtomicU32 = AtomicU32::new(2);

pub fn service(mut svc: Value) -> Value {
    set_default(&mut svc, "spec", json!({}));
    let spec = &mut svc["spec"];
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    if spec["type"] != json!("ExternalName") {
        if spec.get("clusterIP").is_none_or(Value::is_null) {
            let n = if svc.pointer("/metadata/name") == Some(&json!("kubernetes")) {
                1
            } else {
                NEXT_IP.fetch_add(1, Ordering::SeqCst)
            };
            let ip = format!("10.96.{}.{}", (n / 250) % 250, n % 250);
            svc["spec"]["clusterIP"] = json!(ip);
        }
        let spec = &mut svc["spec"];
        let ip = spec["clusterIP"].clone();
        set_default(spec, "clusterIPs", json!([ip]));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
            let port = p["port"].clone();
            set_default(p, "targetPort", port);
        }
    }
    set_default(&mut svc, "status", json!({"loadBalancer": {}}));
    svc
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

pub fn pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                let img = c["image"].as_str().unwrap_or_default().to_string();
                set_default(c, "imagePullPolicy", json!(image_pull_policy(&img)));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ps) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ps {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

pub fn pod(mut pod: Value) -> Value {
    set_default(&mut pod, "spec", json!({}));
    pod_spec(&mut pod["spec"]);
    set_default(&mut pod["spec"], "serviceAccountName", json!("default"));
    set_default(&mut pod["spec"], "serviceAccount", json!("default"));
    set_default(&mut pod["spec"], "enableServiceLinks", json!(true));
    set_default(&mut pod["spec"], "priority", json!(0));
    set_default(
        &mut pod["spec"],
        "preemptionPolicy",
        json!("PreemptLowerPriority"),
    );
    set_default(
        &mut pod["spec"],
        "tolerations",
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ]),
    );
    if pod.get("status").is_none_or(|s| s.get("phase").is_none()) {
        pod["status"] = json!({"phase": "Pending", "qosClass": qos_class(&pod["spec"])});
    }
    pod
}

fn qos_class(spec: &Value) -> &'static str {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let any_res = cs.iter().any(|c| {
        c.pointer("/resources/requests")
            .is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
            || c.pointer("/resources/limits")
                .is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
    });
    if !any_res {
        return "BestEffort";
    }
    let guaranteed = cs.iter().all(|c| {
        let l = c.pointer("/resources/limits");
        let r = c.pointer("/resources/requests");
        ["cpu", "memory"].iter().all(|k| {
            l.and_then(|l| l.get(*k)).is_some()
                && r.and_then(|r| r.get(*k))
                    .is_none_or(|v| Some(v) == l.and_then(|l| l.get(*k)))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

pub fn deployment(mut d: Value) -> Value {
    set_default(&mut d, "spec", json!({}));
    let spec = &mut d["spec"];
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    set_default(spec, "strategy", json!({}));
    set_default(&mut spec["strategy"], "type", json!("RollingUpdate"));
    if spec["strategy"]["type"] == json!("RollingUpdate") {
        set_default(&mut spec["strategy"], "rollingUpdate", json!({}));
        set_default(
            &mut spec["strategy"]["rollingUpdate"],
            "maxSurge",
            json!("25%"),
        );
        set_default(
            &mut spec["strategy"]["rollingUpdate"],
            "maxUnavailable",
            json!("25%"),
        );
    }
    set_default(spec, "template", json!({}));
    set_default(&mut spec["template"], "metadata", json!({}));
    set_default(&mut spec["template"], "spec", json!({}));
    pod_spec(&mut spec["template"]["spec"]);
    set_default(&mut d, "status", json!({}));
    d
}

pub fn statefulset(mut s: Value) -> Value {
    set_default(&mut s, "spec", json!({}));
    let spec = &mut s["spec"];
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "updateStrategy", json!({}));
    set_default(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
    if spec["updateStrategy"]["type"] == json!("RollingUpdate") {
        set_default(
            &mut spec["updateStrategy"],
            "rollingUpdate",
            json!({"partition": 0}),
        );
    }
    set_default(spec, "template", json!({}));
    set_default(&mut spec["template"], "metadata", json!({}));
    set_default(&mut spec["template"], "spec", json!({}));
    pod_spec(&mut spec["template"]["spec"]);
    set_default(&mut s, "status", json!({"replicas": 0}));
    s
}

pub fn replicaset(mut rs: Value) -> Value {
    set_default(&mut rs, "spec", json!({}));
    set_default(&mut rs["spec"], "replicas", json!(1));
    set_default(&mut rs["spec"], "template", json!({}));
    set_default(&mut rs["spec"]["template"], "spec", json!({}));
    pod_spec(&mut rs["spec"]["template"]["spec"]);
    set_default(&mut rs, "status", json!({"replicas": 0}));
    rs
}

/// Apply the defaults for a storage.
pub fn apply(storage: &str, obj: Value) -> Value {
    match storage {
        "namespaces" => namespace(obj),
        "services" => service(obj),
        "pods" => pod(obj),
        "deployments" => deployment(obj),
        "replicasets" => replicaset(obj),
        "statefulsets" => statefulset(obj),
        "secrets" => {
            let mut o = obj;
            set_default(&mut o, "type", json!("Opaque"));
            o
        }
        _ => obj,
    }
}

fn containers_invalid(spec: &Value, prefix: &str, causes: &mut Vec<(String, String)>) {
    match spec.get("containers").and_then(Value::as_array) {
        None => causes.push((format!("{prefix}.containers"), "Required value".into())),
        Some(cs) if cs.is_empty() => {
            causes.push((format!("{prefix}.containers"), "Required value".into()))
        }
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c["name"].as_str().is_none_or(str::is_empty) {
                    causes.push((
                        format!("{prefix}.containers[{i}].name"),
                        "Required value".into(),
                    ));
                }
                if c["image"].as_str().is_none_or(str::is_empty) {
                    causes.push((
                        format!("{prefix}.containers[{i}].image"),
                        "Required value".into(),
                    ));
                }
            }
        }
    }
}

fn go_map(labels: Option<&Value>) -> String {
    let parts: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k:?}:{}", v)).collect())
        .unwrap_or_default();
    format!("map[string]string{{{}}}", parts.join(", "))
}

/// 422 validation for the kinds the gateway writes.
pub fn validate(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut causes: Vec<(String, String)> = Vec::new();
    match def.storage {
        "deployments" | "replicasets" | "statefulsets" => {
            let spec = &obj["spec"];
            if let Some(r) = spec["replicas"].as_i64()
                && r < 0
            {
                causes.push((
                    "spec.replicas".into(),
                    format!("Invalid value: {r}: must be greater than or equal to 0"),
                ));
            }
            match spec.get("selector") {
                None | Some(Value::Null) => {
                    causes.push(("spec.selector".into(), "Required value".into()))
                }
                Some(sel) => {
                    let s = LabelSelector::from_object(sel);
                    if s.is_empty() {
                        causes.push((
                            "spec.selector".into(),
                            "Invalid value: \"null\": empty selector is invalid for deployment"
                                .into(),
                        ));
                    } else if !s.matches_labels(spec.pointer("/template/metadata/labels")) {
                        causes.push((
                            "spec.template.metadata.labels".into(),
                            format!(
                                "Invalid value: {}: `selector` does not match template `labels`",
                                go_map(spec.pointer("/template/metadata/labels"))
                            ),
                        ));
                    }
                }
            }
            containers_invalid(&spec["template"]["spec"], "spec.template.spec", &mut causes);
        }
        "pods" => containers_invalid(&obj["spec"], "spec", &mut causes),
        "services" => {
            if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
                for (i, p) in ports.iter().enumerate() {
                    let port = p["port"].as_i64().unwrap_or(0);
                    if !(1..=65535).contains(&port) {
                        causes.push((
                            format!("spec.ports[{i}].port"),
                            format!(
                                "Invalid value: {port}: must be between 1 and 65535, inclusive"
                            ),
                        ));
                    }
                }
            }
        }
        "configmaps" | "secrets" => {
            if let Some(m) = obj.get("data").and_then(Value::as_object) {
                for k in m.keys() {
                    if k.is_empty()
                        || !k
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    {
                        causes.push((format!("data[{k}]"), format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
                    }
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, name, &causes))
    }
}
