//! `application/vnd.kubernetes.protobuf` request bodies. kubectl sends protobuf for the typed
//! objects it builds itself (`kubectl create namespace|secret|configmap|deployment|
//! serviceaccount|service`, `kubectl auth can-i`). The `k8s\0` envelope and the object messages are
//! decoded with kube-rs's `k8s-pb` types and turned into the JSON form the handlers work on;
//! answers stay JSON (kubectl accepts `application/json`).

use base64::Engine;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The protobuf content type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Decode a protobuf request body for `kind`; `Err` carries the reason.
pub fn decode(body: &[u8], kind: &str) -> Result<Value, String> {
    let env = body
        .strip_prefix(b"k8s\x00")
        .ok_or("missing the k8s protobuf envelope prefix")?;
    let unknown = Unknown::decode(env).map_err(|e| e.to_string())?;
    let raw = unknown.raw.unwrap_or_default();
    let tm = unknown.type_meta.unwrap_or_default();
    let sent_kind = tm.kind.unwrap_or_default();
    if !sent_kind.is_empty() && sent_kind != kind {
        return Err(format!("expected a {kind}, got a {sent_kind}"));
    }
    let mut v = object(&raw, kind)?;
    v["apiVersion"] = json!(tm.api_version.unwrap_or_default());
    v["kind"] = json!(kind);
    Ok(v)
}

fn object(raw: &[u8], kind: &str) -> Result<Value, String> {
    let err = |e: prost::DecodeError| e.to_string();
    Ok(match kind {
        "Namespace" => {
            let n = core::Namespace::decode(raw).map_err(err)?;
            let fins = n.spec.map(|s| s.finalizers).unwrap_or_default();
            obj([
                ("metadata", object_meta(n.metadata)),
                ("spec", obj([("finalizers", strs(&fins))])),
            ])
        }
        "Secret" => secret(core::Secret::decode(raw).map_err(err)?),
        "ConfigMap" => config_map(core::ConfigMap::decode(raw).map_err(err)?),
        "ServiceAccount" => {
            let sa = core::ServiceAccount::decode(raw).map_err(err)?;
            obj([
                ("metadata", object_meta(sa.metadata)),
                (
                    "automountServiceAccountToken",
                    opt(sa.automount_service_account_token),
                ),
            ])
        }
        "Deployment" => deployment(apps::Deployment::decode(raw).map_err(err)?),
        "Service" => service(core::Service::decode(raw).map_err(err)?),
        "SelfSubjectAccessReview" => access_review(raw).map_err(err)?,
        "SelfSubjectRulesReview" => {
            let r = authz::SelfSubjectRulesReview::decode(raw).map_err(err)?;
            let ns = r.spec.and_then(|s| s.namespace);
            obj([
                ("metadata", json!({})),
                ("spec", obj([("namespace", opt(ns))])),
            ])
        }
        other => return Err(format!("protobuf bodies of kind {other} are not supported")),
    })
}

/// A JSON object of the non-null pairs.
fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        let empty = v.is_null()
            || v.as_object().is_some_and(Map::is_empty)
            || v.as_array().is_some_and(Vec::is_empty);
        if !empty {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map(Into::into).unwrap_or(Value::Null)
}

fn strs(v: &[String]) -> Value {
    json!(v)
}

fn map(m: &BTreeMap<String, String>) -> Value {
    json!(m)
}

fn object_meta(m: Option<meta::ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    obj([
        ("name", opt(m.name)),
        ("generateName", opt(m.generate_name)),
        ("namespace", opt(m.namespace)),
        ("labels", map(&m.labels)),
        ("annotations", map(&m.annotations)),
        ("finalizers", strs(&m.finalizers)),
    ])
}

fn secret(s: core::Secret) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: Map<String, Value> = s
        .data
        .iter()
        .map(|(k, v)| (k.clone(), json!(b64.encode(v))))
        .collect();
    obj([
        ("metadata", object_meta(s.metadata)),
        ("type", opt(s.r#type)),
        ("data", Value::Object(data)),
        ("stringData", map(&s.string_data)),
        ("immutable", opt(s.immutable)),
    ])
}

fn config_map(c: core::ConfigMap) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bin: Map<String, Value> = c
        .binary_data
        .iter()
        .map(|(k, v)| (k.clone(), json!(b64.encode(v))))
        .collect();
    obj([
        ("metadata", object_meta(c.metadata)),
        ("data", map(&c.data)),
        ("binaryData", Value::Object(bin)),
        ("immutable", opt(c.immutable)),
    ])
}

fn int_or_string(v: Option<k8s_pb::apimachinery::pkg::util::intstr::IntOrString>) -> Value {
    match v {
        Some(x) if x.r#type == Some(1) => opt(x.str_val),
        Some(x) => opt(x.int_val),
        None => Value::Null,
    }
}

fn service(svc: core::Service) -> Value {
    let s = svc.spec.unwrap_or_default();
    let ports: Vec<Value> = s
        .ports
        .into_iter()
        .map(|p| {
            obj([
                ("name", opt(p.name)),
                ("protocol", opt(p.protocol)),
                ("port", opt(p.port)),
                ("targetPort", int_or_string(p.target_port)),
                ("nodePort", opt(p.node_port)),
            ])
        })
        .collect();
    obj([
        ("metadata", object_meta(svc.metadata)),
        (
            "spec",
            obj([
                ("ports", json!(ports)),
                ("selector", map(&s.selector)),
                ("clusterIP", opt(s.cluster_ip)),
                ("type", opt(s.r#type)),
                ("externalName", opt(s.external_name)),
                ("sessionAffinity", opt(s.session_affinity)),
            ]),
        ),
    ])
}

fn label_selector(s: Option<meta::LabelSelector>) -> Value {
    let s = s.unwrap_or_default();
    let exprs: Vec<Value> = s
        .match_expressions
        .into_iter()
        .map(|e| {
            obj([
                ("key", opt(e.key)),
                ("operator", opt(e.operator)),
                ("values", strs(&e.values)),
            ])
        })
        .collect();
    obj([
        ("matchLabels", map(&s.match_labels)),
        ("matchExpressions", json!(exprs)),
    ])
}

fn deployment(d: apps::Deployment) -> Value {
    let s = d.spec.unwrap_or_default();
    let strategy = s.strategy.map(|st| obj([("type", opt(st.r#type))]));
    let template = s.template.unwrap_or_default();
    obj([
        ("metadata", object_meta(d.metadata)),
        (
            "spec",
            obj([
                ("replicas", opt(s.replicas)),
                ("selector", label_selector(s.selector)),
                (
                    "template",
                    obj([
                        ("metadata", object_meta(template.metadata)),
                        ("spec", pod_spec(template.spec.unwrap_or_default())),
                    ]),
                ),
                ("strategy", opt(strategy)),
                ("minReadySeconds", opt(s.min_ready_seconds)),
                ("revisionHistoryLimit", opt(s.revision_history_limit)),
                ("progressDeadlineSeconds", opt(s.progress_deadline_seconds)),
                ("paused", opt(s.paused)),
            ]),
        ),
    ])
}

fn pod_spec(p: core::PodSpec) -> Value {
    let containers: Vec<Value> = p.containers.into_iter().map(container).collect();
    obj([
        ("containers", json!(containers)),
        ("restartPolicy", opt(p.restart_policy)),
        (
            "terminationGracePeriodSeconds",
            opt(p.termination_grace_period_seconds),
        ),
        ("dnsPolicy", opt(p.dns_policy)),
        ("nodeSelector", map(&p.node_selector)),
        ("serviceAccountName", opt(p.service_account_name)),
        ("schedulerName", opt(p.scheduler_name)),
    ])
}

fn quantities(m: BTreeMap<String, k8s_pb::apimachinery::pkg::api::resource::Quantity>) -> Value {
    let out: Map<String, Value> = m
        .into_iter()
        .map(|(k, q)| (k, json!(q.string.unwrap_or_default())))
        .collect();
    Value::Object(out)
}

fn container(c: core::Container) -> Value {
    let ports: Vec<Value> = c
        .ports
        .into_iter()
        .map(|p| {
            obj([
                ("name", opt(p.name)),
                ("containerPort", opt(p.container_port)),
                ("protocol", opt(p.protocol)),
            ])
        })
        .collect();
    let env: Vec<Value> = c
        .env
        .into_iter()
        .map(|e| obj([("name", opt(e.name)), ("value", opt(e.value))]))
        .collect();
    let res = c.resources.unwrap_or_default();
    let resources = json!({"limits": quantities(res.limits), "requests": quantities(res.requests)});
    obj([
        ("name", opt(c.name)),
        ("image", opt(c.image)),
        ("command", strs(&c.command)),
        ("args", strs(&c.args)),
        ("workingDir", opt(c.working_dir)),
        ("ports", json!(ports)),
        ("env", json!(env)),
        (
            "resources",
            obj([
                ("limits", resources["limits"].clone()),
                ("requests", resources["requests"].clone()),
            ]),
        ),
        ("imagePullPolicy", opt(c.image_pull_policy)),
        ("terminationMessagePath", opt(c.termination_message_path)),
        (
            "terminationMessagePolicy",
            opt(c.termination_message_policy),
        ),
        ("stdin", opt(c.stdin)),
        ("tty", opt(c.tty)),
    ])
}

fn access_review(raw: &[u8]) -> Result<Value, prost::DecodeError> {
    let r = authz::SelfSubjectAccessReview::decode(raw)?;
    let spec = r.spec.unwrap_or_default();
    let ra = spec.resource_attributes.map(|a| {
        obj([
            ("namespace", opt(a.namespace)),
            ("verb", opt(a.verb)),
            ("group", opt(a.group)),
            ("version", opt(a.version)),
            ("resource", opt(a.resource)),
            ("subresource", opt(a.subresource)),
            ("name", opt(a.name)),
        ])
    });
    let nra = spec
        .non_resource_attributes
        .map(|a| obj([("path", opt(a.path)), ("verb", opt(a.verb))]));
    Ok(obj([
        ("metadata", json!({})),
        (
            "spec",
            obj([
                ("resourceAttributes", opt(ra)),
                ("nonResourceAttributes", opt(nra)),
            ]),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = b"k8s\x00".to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn secret_and_deployment() {
        let s = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("tok".into()),
                ..Default::default()
            }),
            data: [("token".to_string(), b"abc".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Secret", s.encode_to_vec()), "Secret").unwrap();
        assert_eq!(v["metadata"]["name"], "tok");
        assert_eq!(v["data"]["token"], "YWJj");
        assert_eq!(v["kind"], "Secret");
        let d = apps::Deployment {
            metadata: Some(meta::ObjectMeta {
                name: Some("web".into()),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                template: Some(core::PodTemplateSpec {
                    metadata: None,
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("nginx".into()),
                            image: Some("nginx".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let v = decode(
            &envelope("apps/v1", "Deployment", d.encode_to_vec()),
            "Deployment",
        )
        .unwrap();
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
        assert!(decode(&envelope("v1", "ConfigMap", vec![]), "Secret").is_err());
        assert!(decode(b"not an envelope", "Secret").is_err());
        assert!(decode(&envelope("v1", "Pod", vec![]), "Pod").is_err());
    }
}
