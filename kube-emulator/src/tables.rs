//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), as kubectl get uses.

use crate::resources::ResourceDef;
use crate::store::{meta_str, parse_ts};
use serde_json::{Value, json};

/// k8s.io/apimachinery/pkg/util/duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

pub fn age(ts: &str) -> String {
    match parse_ts(ts) {
        Some(t) => human_duration((chrono::Utc::now() - t).num_seconds()),
        None => "<unknown>".into(),
    }
}

/// kubectl's pod STATUS column.
pub fn pod_status_reason(pod: &Value) -> String {
    let st = &pod["status"];
    let mut reason = st["reason"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| st["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    let mut initializing = false;
    let inits = st["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let n_init = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    for (i, c) in inits.iter().enumerate() {
        if c.pointer("/state/terminated/exitCode")
            .and_then(Value::as_i64)
            == Some(0)
        {
            continue;
        }
        if let Some(t) = c.pointer("/state/terminated") {
            reason = match t["reason"].as_str() {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => format!("Init:ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
            };
        } else if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{n_init}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        let cs = st["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in cs.iter().rev() {
            if let Some(r) = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = match t["reason"].as_str() {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ => match t["signal"].as_i64() {
                        Some(s) if s != 0 => format!("Signal:{s}"),
                        _ => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                    },
                };
            } else if c.pointer("/state/running").is_some() && c["ready"] == json!(true) {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = st["conditions"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
            });
            reason = if ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        if st["reason"] == json!("NodeLost") {
            reason = "Unknown".into();
        } else if !matches!(st["phase"].as_str(), Some("Failed") | Some("Succeeded")) {
            reason = "Terminating".into();
        }
    }
    reason
}

fn col(name: &str, ty: &str, format: &str, desc: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

fn name_col() -> Value {
    col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )
}

fn age_col() -> Value {
    col(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    )
}

fn columns(def: &ResourceDef) -> Vec<Value> {
    match (def.group, def.plural) {
        ("", "pods") => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            col(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            col(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            age_col(),
            col("IP", "string", "", "IP address allocated to the pod.", 1),
            col(
                "Node",
                "string",
                "",
                "Name of the node this pod is assigned to.",
                1,
            ),
            col(
                "Nominated Node",
                "string",
                "",
                "Name of the node where the pod is nominated.",
                1,
            ),
            col("Readiness Gates", "string", "", "Readiness gates.", 1),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => vec![
            name_col(),
            col(
                "Created At",
                "date",
                "",
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
                0,
            ),
        ],
        ("apps", "statefulsets") => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            age_col(),
            col(
                "Containers",
                "string",
                "",
                "Names of each container in the template.",
                1,
            ),
            col(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.",
                1,
            ),
        ],
        ("apps", "deployments") => vec![
            name_col(),
            col(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            col(
                "Up-to-date",
                "string",
                "",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            col(
                "Available",
                "string",
                "",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            age_col(),
            col(
                "Containers",
                "string",
                "",
                "Names of each container in the template.",
                1,
            ),
            col(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.",
                1,
            ),
            col("Selector", "string", "", "Label selector for pods.", 1),
        ],
        ("apps", "replicasets") => vec![
            name_col(),
            col("Desired", "integer", "", "Number of desired pods.", 0),
            col("Current", "integer", "", "Number of actual replicas.", 0),
            col(
                "Ready",
                "integer",
                "",
                "The number of ready replicas for this replica set.",
                0,
            ),
            age_col(),
            col(
                "Containers",
                "string",
                "",
                "Names of each container in the template.",
                1,
            ),
            col(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.",
                1,
            ),
            col("Selector", "string", "", "Label selector for pods.", 1),
        ],
        ("", "services") => vec![
            name_col(),
            col("Type", "string", "", "The type of the service.", 0),
            col(
                "Cluster-IP",
                "string",
                "",
                "The cluster IP of the service.",
                0,
            ),
            col(
                "External-IP",
                "string",
                "",
                "The external IP of the service.",
                0,
            ),
            col("Port(s)", "string", "", "The ports of the service.", 0),
            age_col(),
            col("Selector", "string", "", "The selector of the service.", 1),
        ],
        ("", "namespaces") => vec![
            name_col(),
            col("Status", "string", "", "The status of the namespace", 0),
            age_col(),
        ],
        ("", "nodes") => vec![
            name_col(),
            col("Status", "string", "", "The status of the node", 0),
            col("Roles", "string", "", "The roles of the node", 0),
            age_col(),
            col(
                "Version",
                "string",
                "",
                "Kubelet Version reported by the node.",
                0,
            ),
        ],
        (_, "events") => vec![
            col(
                "Last Seen",
                "string",
                "",
                "Time when last event occurred",
                0,
            ),
            col("Type", "string", "", "Type of event", 0),
            col("Reason", "string", "", "Reason of event", 0),
            col("Object", "string", "", "The object this event is about", 0),
            col("Message", "string", "", "Message of event", 0),
        ],
        _ => vec![name_col(), age_col()],
    }
}

fn cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = meta_str(o, "name").to_string();
    let created = age(meta_str(o, "creationTimestamp"));
    let containers = |tmpl: &Value| -> (String, String) {
        let cs = tmpl
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        (
            cs.iter()
                .map(|c| c["name"].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
            cs.iter()
                .map(|c| c["image"].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
        )
    };
    let selector = |s: &Value| -> String {
        let mut parts = Vec::new();
        if let Some(m) = s.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
        if parts.is_empty() {
            "<none>".into()
        } else {
            parts.join(",")
        }
    };
    let i = |v: &Value| v.as_i64().unwrap_or(0);
    match (def.group, def.plural) {
        ("", "pods") => {
            let cs = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = cs.iter().filter(|c| c["ready"] == json!(true)).count();
            let restarts: i64 = cs.iter().map(|c| i(&c["restartCount"])).sum();
            let last_restart = cs
                .iter()
                .filter_map(|c| {
                    c.pointer("/lastState/terminated/finishedAt")
                        .and_then(Value::as_str)
                })
                .filter_map(parse_ts)
                .max();
            let restarts_s = match last_restart {
                Some(t) if restarts > 0 => format!(
                    "{restarts} ({} ago)",
                    human_duration((chrono::Utc::now() - t).num_seconds())
                ),
                _ => restarts.to_string(),
            };
            let ip = o
                .pointer("/status/podIP")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let node = o
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(pod_status_reason(o)),
                json!(restarts_s),
                json!(created),
                json!(ip),
                json!(node),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![json!(name), json!(meta_str(o, "creationTimestamp"))]
        }
        ("apps", "statefulsets") => {
            let (c, im) = containers(&o["spec"]["template"]);
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    i(&o["status"]["readyReplicas"]),
                    i(&o["spec"]["replicas"])
                )),
                json!(created),
                json!(c),
                json!(im),
            ]
        }
        ("apps", "deployments") => {
            let (c, im) = containers(&o["spec"]["template"]);
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    i(&o["status"]["readyReplicas"]),
                    i(&o["spec"]["replicas"])
                )),
                json!(i(&o["status"]["updatedReplicas"])),
                json!(i(&o["status"]["availableReplicas"])),
                json!(created),
                json!(c),
                json!(im),
                json!(selector(&o["spec"]["selector"])),
            ]
        }
        ("apps", "replicasets") => {
            let (c, im) = containers(&o["spec"]["template"]);
            vec![
                json!(name),
                json!(i(&o["spec"]["replicas"])),
                json!(i(&o["status"]["replicas"])),
                json!(i(&o["status"]["readyReplicas"])),
                json!(created),
                json!(c),
                json!(im),
                json!(selector(&o["spec"]["selector"])),
            ]
        }
        ("", "services") => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                i(&p["port"]),
                                p["protocol"].as_str().unwrap_or("TCP")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let sel: Vec<String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(name),
                json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP")),
                json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>")),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(created),
                json!(if sel.is_empty() {
                    "<none>".to_string()
                } else {
                    sel.join(",")
                }),
            ]
        }
        ("", "namespaces") => vec![
            json!(name),
            json!(o["status"]["phase"].as_str().unwrap_or("Active")),
            json!(created),
        ],
        ("", "nodes") => vec![
            json!(name),
            json!("Ready"),
            json!("agent"),
            json!(created),
            json!("kwok-v0.7.0"),
        ],
        (_, "events") => {
            let last = o["lastTimestamp"]
                .as_str()
                .or_else(|| o["eventTime"].as_str())
                .unwrap_or_default();
            let inv = &o["involvedObject"];
            let objname = format!(
                "{}/{}",
                inv["kind"].as_str().unwrap_or_default().to_lowercase(),
                inv["name"].as_str().unwrap_or_default()
            );
            vec![
                json!(age(last)),
                json!(o["type"].as_str().unwrap_or_default()),
                json!(o["reason"].as_str().unwrap_or_default()),
                json!(objname),
                json!(o["message"].as_str().unwrap_or_default()),
            ]
        }
        _ => vec![json!(name), json!(created)],
    }
}

fn partial_metadata(o: &Value) -> Value {
    let mut meta = o["metadata"].clone();
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// Render objects (stored shape) as a meta.k8s.io/v1 Table.
pub fn table(
    def: &ResourceDef,
    items: &[Value],
    list_meta: Value,
    include_object: &str,
    external: impl Fn(&Value) -> Value,
) -> Value {
    render(
        columns(def),
        |o| cells(def, o),
        items,
        list_meta,
        include_object,
        external,
    )
}

/// A Table from given column definitions and a cell function.
pub fn render(
    columns: Vec<Value>,
    cells: impl Fn(&Value) -> Vec<Value>,
    items: &[Value],
    list_meta: Value,
    include_object: &str,
    external: impl Fn(&Value) -> Value,
) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => external(o),
                _ => partial_metadata(o),
            };
            let mut row = json!({"cells": cells(o)});
            if !object.is_null() {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
