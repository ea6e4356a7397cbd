//! Deployment and ReplicaSet controllers modelled on kube-controller-manager.

use crate::kubelet::REPLICA_FAILURE_ANNOTATION;
use crate::resources;
use crate::selectors::LabelSelector;
use crate::store::{meta_str, now_ts, parse_ts};
use crate::{Shared, defaults};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

pub fn spawn(shared: Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![tokio::spawn(run(shared))]
}

async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    let mut state = State::default();
    let tick = Duration::from_millis(100);
    loop {
        reconcile_replicasets(&shared);
        reconcile_deployments(&shared, &mut state);
        crate::statefulsets::reconcile(&shared);
        tokio::select! {
            r = rx.changed() => { if r.is_err() { return; } }
            _ = tokio::time::sleep(tick) => {}
        }
        // small debounce so that bursts of writes are handled together
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Default)]
struct State {
    /// deployment uid -> (last progress instant, template hash being rolled out)
    progress: HashMap<String, (Instant, String)>,
}

pub(crate) fn owned_by<'a>(items: &'a [Value], uid: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|o| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .any(|r| r["uid"] == json!(uid) && r["controller"] == json!(true))
                })
        })
        .collect()
}

pub(crate) fn is_terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

pub(crate) fn pod_ready_since(p: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == json!("Ready") && c["status"] == json!("True"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(parse_ts)
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

pub(crate) fn owner_ref(o: &Value) -> Value {
    json!({
        "apiVersion": o["apiVersion"], "kind": o["kind"], "name": meta_str(o, "name"),
        "uid": meta_str(o, "uid"), "controller": true, "blockOwnerDeletion": true
    })
}

// ------------------------------------------------------------------------------------------
// ReplicaSet controller
// ------------------------------------------------------------------------------------------

fn reconcile_replicasets(shared: &Shared) {
    let store = &shared.store;
    let (rss, _) = store.list("replicasets", None);
    let (pods, _) = store.list("pods", None);
    let pod_def = resources::by_storage("pods");
    for rs in &rss {
        if is_terminating(rs) {
            continue;
        }
        let ns = meta_str(rs, "namespace");
        let name = meta_str(rs, "name");
        let uid = meta_str(rs, "uid");
        let mine: Vec<&Value> = owned_by(&pods, uid);
        let active: Vec<&Value> = mine
            .iter()
            .copied()
            .filter(|p| !is_terminating(p))
            .collect();
        let want = i(&rs["spec"]["replicas"]);
        let diff = active.len() as i64 - want;
        let failure = rs
            .pointer("/spec/template/metadata/annotations")
            .and_then(|a| a.get(REPLICA_FAILURE_ANNOTATION))
            .and_then(Value::as_str);
        let mut failure_msg: Option<String> = None;
        if diff < 0 {
            for _ in 0..(-diff).min(500) {
                let pod_name = crate::store::generate_name(&format!("{name}-"));
                if let Some(msg) = failure {
                    let m = format!("pods \"{pod_name}\" is forbidden: {msg}");
                    store.record_event(
                        rs,
                        "Warning",
                        "FailedCreate",
                        &format!("Error creating: {m}"),
                        "replicaset-controller",
                        None,
                    );
                    failure_msg = Some(m);
                    break;
                }
                let tmpl = &rs["spec"]["template"];
                let mut meta = tmpl["metadata"].clone();
                if !meta.is_object() {
                    meta = json!({});
                }
                meta["name"] = json!(pod_name);
                meta["ownerReferences"] = json!([owner_ref(rs)]);
                let pod = defaults::pod(json!({"metadata": meta, "spec": tmpl["spec"]}));
                match store.create(pod_def, ns, pod) {
                    Ok(p) => store.record_event(
                        rs,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", meta_str(&p, "name")),
                        "replicaset-controller",
                        None,
                    ),
                    Err(e) => {
                        let m = e.body["message"].as_str().unwrap_or_default().to_string();
                        store.record_event(
                            rs,
                            "Warning",
                            "FailedCreate",
                            &format!("Error creating: {m}"),
                            "replicaset-controller",
                            None,
                        );
                        failure_msg = Some(m);
                        break;
                    }
                }
            }
        } else if diff > 0 {
            let mut victims = active.clone();
            // unscheduled < pending < not ready < ready; newer first
            victims.sort_by_key(|p| {
                let scheduled = p.pointer("/spec/nodeName").is_some();
                let running = p.pointer("/status/phase") == Some(&json!("Running"));
                let ready = pod_ready_since(p).is_some();
                (
                    scheduled,
                    running,
                    ready,
                    std::cmp::Reverse(meta_str(p, "creationTimestamp").to_string()),
                )
            });
            for p in victims.into_iter().take(diff as usize) {
                let pn = meta_str(p, "name");
                if store.delete(pod_def, ns, pn, &json!({})).is_ok() {
                    store.record_event(
                        rs,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted pod: {pn}"),
                        "replicaset-controller",
                        None,
                    );
                }
            }
        }
        // status
        let (pods_now, _) = store.list("pods", Some(ns));
        let mine: Vec<&Value> = owned_by(&pods_now, uid)
            .into_iter()
            .filter(|p| !is_terminating(p))
            .collect();
        let min_ready = i(&rs["spec"]["minReadySeconds"]) as f64;
        let ready = mine.iter().filter(|p| pod_ready_since(p).is_some()).count() as i64;
        let available = mine
            .iter()
            .filter(|p| {
                pod_ready_since(p).is_some_and(|t| {
                    shared
                        .clock
                        .sim_secs((chrono::Utc::now() - t).to_std().unwrap_or_default())
                        >= min_ready
                })
            })
            .count() as i64;
        let labels_sel = LabelSelector::from_object(&rs["spec"]["selector"]);
        let fully = mine.iter().filter(|p| labels_sel.matches(p)).count() as i64;
        let mut status = json!({
            "replicas": mine.len(),
            "fullyLabeledReplicas": fully,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs["metadata"]["generation"],
        });
        if ready == 0 {
            status.as_object_mut().unwrap().remove("readyReplicas");
        }
        if available == 0 {
            status.as_object_mut().unwrap().remove("availableReplicas");
        }
        if fully == 0 {
            status
                .as_object_mut()
                .unwrap()
                .remove("fullyLabeledReplicas");
        }
        let prev_conds = rs.pointer("/status/conditions").cloned();
        match (&failure_msg, prev_conds) {
            (Some(m), _) => {
                status["conditions"] = json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": m, "lastTransitionTime": now_ts()}]);
                if let Some(old) = rs.pointer("/status/conditions/0")
                    && old["message"] == json!(m)
                {
                    status["conditions"] = json!([old]);
                }
            }
            (None, Some(c)) if failure.is_some() => status["conditions"] = c,
            _ => {}
        }
        if rs.get("status") != Some(&status) {
            store.update_with("replicasets", ns, name, Some("status"), |o| {
                o["status"] = status
            });
        }
    }
}

// ------------------------------------------------------------------------------------------
// Deployment controller
// ------------------------------------------------------------------------------------------

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{:?}:{}", k, canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// ComputeHash(template, collisionCount) with the apiserver's "safe" encoding.
pub fn template_hash(template: &Value, collision: i64) -> String {
    let mut h: u32 = 2166136261;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u32;
            h = h.wrapping_mul(16777619);
        }
    };
    feed(canonical(template).as_bytes());
    if collision > 0 {
        feed(collision.to_string().as_bytes());
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|c| ALPHA[(c as usize) % ALPHA.len()] as char)
        .collect()
}

fn strip_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    t
}

fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) if s.ends_with('%') => {
            let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = p * total as f64 / 100.0;
            if round_up {
                x.ceil() as i64
            } else {
                x.floor() as i64
            }
        }
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn revision(o: &Value) -> i64 {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_condition(
    conds: &mut Vec<Value>,
    t: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    match conds.iter_mut().find(|c| c["type"] == json!(t)) {
        Some(c) => {
            if c["status"] != json!(status) {
                c["lastTransitionTime"] = json!(now);
            }
            if c["status"] != json!(status) || c["reason"] != json!(reason) || c["message"] != json!(message) {
                c["lastUpdateTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(json!({"type": t, "status": status, "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason, "message": message})),
    }
}

fn scale_rs(shared: &Shared, d: &Value, rs: &Value, to: i64, max_surge: i64) {
    let from = i(&rs["spec"]["replicas"]);
    let replicas = i(&d["spec"]["replicas"]);
    let ns = meta_str(rs, "namespace");
    let name = meta_str(rs, "name").to_string();
    let desired = replicas.to_string();
    let max = (replicas + max_surge).to_string();
    let ann_ok = rs.pointer("/metadata/annotations").is_some_and(|a| {
        a.get("deployment.kubernetes.io/desired-replicas") == Some(&json!(desired))
            && a.get("deployment.kubernetes.io/max-replicas") == Some(&json!(max))
    });
    if from == to && ann_ok {
        return;
    }
    shared
        .store
        .update_with("replicasets", ns, &name, None, |o| {
            o["spec"]["replicas"] = json!(to);
            o["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                json!(desired);
            o["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] = json!(max);
        });
    if from != to {
        let dir = if to > from { "up" } else { "down" };
        shared.store.record_event(
            d,
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled {dir} replica set {name} from {from} to {to}"),
            "deployment-controller",
            None,
        );
    }
}

fn reconcile_deployments(shared: &Shared, state: &mut State) {
    let store = &shared.store;
    let (deps, _) = store.list("deployments", None);
    let (all_rs, _) = store.list("replicasets", None);
    let rs_def = resources::by_storage("replicasets");
    let mut live = std::collections::HashSet::new();
    for d in &deps {
        let uid = meta_str(d, "uid").to_string();
        live.insert(uid.clone());
        if is_terminating(d) {
            continue;
        }
        let ns = meta_str(d, "namespace").to_string();
        let dname = meta_str(d, "name").to_string();
        let replicas = i(&d["spec"]["replicas"]);
        let template = &d["spec"]["template"];
        let paused = d["spec"]["paused"] == json!(true);
        let strategy = d["spec"]["strategy"]["type"]
            .as_str()
            .unwrap_or("RollingUpdate")
            .to_string();
        let (mut max_surge, mut max_unavail) = if strategy == "RollingUpdate" {
            (
                int_or_percent(
                    &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
                    replicas,
                    true,
                ),
                int_or_percent(
                    &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
                    replicas,
                    false,
                ),
            )
        } else {
            (0, 0)
        };
        if strategy == "RollingUpdate" && max_surge == 0 && max_unavail == 0 {
            max_unavail = 1;
        }
        if strategy != "RollingUpdate" {
            max_surge = 0;
        }
        let mine: Vec<Value> = owned_by(&all_rs, &uid).into_iter().cloned().collect();
        let hash = template_hash(template, i(&d["status"]["collisionCount"]));
        let new_rs = mine
            .iter()
            .find(|rs| canonical(&strip_hash(&rs["spec"]["template"])) == canonical(template))
            .cloned();
        let mut old: Vec<Value> = mine
            .iter()
            .filter(|rs| Some(meta_str(rs, "uid")) != new_rs.as_ref().map(|n| meta_str(n, "uid")))
            .cloned()
            .collect();
        old.sort_by_key(|rs| (revision(rs), meta_str(rs, "creationTimestamp").to_string()));
        let max_old_rev = old.iter().map(revision).max().unwrap_or(0);
        let now = now_ts();
        let mut created_new = false;
        let new_rs = match new_rs {
            Some(rs) => {
                // rollback to an older template: bump its revision
                if revision(&rs) <= max_old_rev {
                    let rev = (max_old_rev + 1).to_string();
                    store
                        .update_with("replicasets", &ns, meta_str(&rs, "name"), None, |o| {
                            o["metadata"]["annotations"][REVISION] = json!(rev);
                        })
                        .unwrap_or(rs)
                } else {
                    rs
                }
            }
            None if paused => {
                sync_status(shared, state, d, None, &old, max_unavail, false, &now);
                continue;
            }
            None => {
                let rs_name = format!("{dname}-{hash}");
                let mut tmpl = template.clone();
                tmpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"][HASH_LABEL] = json!(hash);
                let mut labels = template["metadata"]["labels"].clone();
                labels[HASH_LABEL] = json!(hash);
                let mut ann = d["metadata"]["annotations"].clone();
                if let Some(a) = ann.as_object_mut() {
                    a.remove("kubectl.kubernetes.io/last-applied-configuration");
                } else {
                    ann = json!({});
                }
                ann[REVISION] = json!((max_old_rev + 1).to_string());
                ann["deployment.kubernetes.io/desired-replicas"] = json!(replicas.to_string());
                ann["deployment.kubernetes.io/max-replicas"] =
                    json!((replicas + max_surge).to_string());
                // initial size: room left under maxSurge
                let current: i64 = old.iter().map(|r| i(&r["spec"]["replicas"])).sum();
                let initial = if strategy == "RollingUpdate" {
                    if old.is_empty() {
                        replicas
                    } else {
                        (replicas + max_surge - current).clamp(0, replicas)
                    }
                } else if old
                    .iter()
                    .all(|r| i(&r["spec"]["replicas"]) == 0 && i(&r["status"]["replicas"]) == 0)
                {
                    replicas
                } else {
                    0
                };
                let rs = json!({
                    "metadata": {"name": rs_name, "labels": labels, "annotations": ann, "ownerReferences": [owner_ref(d)]},
                    "spec": {"replicas": initial, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0), "selector": selector, "template": tmpl},
                });
                match store.create(rs_def, &ns, defaults::replicaset(rs)) {
                    Ok(created) => {
                        created_new = true;
                        if initial > 0 {
                            store.record_event(
                                d,
                                "Normal",
                                "ScalingReplicaSet",
                                &format!("Scaled up replica set {rs_name} from 0 to {initial}"),
                                "deployment-controller",
                                None,
                            );
                        }
                        state
                            .progress
                            .insert(uid.clone(), (Instant::now(), hash.clone()));
                        created
                    }
                    Err(e) if e.code == 409 => {
                        // hash collision with a foreign template: bump collisionCount
                        store.update_with("deployments", &ns, &dname, Some("status"), |o| {
                            o["status"]["collisionCount"] =
                                json!(i(&o["status"]["collisionCount"]) + 1);
                        });
                        continue;
                    }
                    Err(_) => continue,
                }
            }
        };
        // deployment revision annotation
        let rev = revision(&new_rs).to_string();
        if d.pointer("/metadata/annotations")
            .and_then(|a| a.get(REVISION))
            != Some(&json!(rev))
        {
            store.update_with("deployments", &ns, &dname, None, |o| {
                if !o["metadata"]["annotations"].is_object() {
                    o["metadata"]["annotations"] = json!({});
                }
                o["metadata"]["annotations"][REVISION] = json!(rev);
            });
        }
        if !paused {
            // --- scaling
            let new_spec = i(&new_rs["spec"]["replicas"]);
            if strategy == "RollingUpdate" {
                let all_spec: i64 =
                    new_spec + old.iter().map(|r| i(&r["spec"]["replicas"])).sum::<i64>();
                // scale up new
                let target_new =
                    if new_spec > replicas || old.iter().all(|r| i(&r["spec"]["replicas"]) == 0) {
                        replicas
                    } else {
                        let room = replicas + max_surge - all_spec;
                        if room > 0 {
                            (new_spec + room).min(replicas)
                        } else {
                            new_spec
                        }
                    };
                scale_rs(shared, d, &new_rs, target_new, max_surge);
                // scale down old
                let all_spec =
                    target_new + old.iter().map(|r| i(&r["spec"]["replicas"])).sum::<i64>();
                let min_available = replicas - max_unavail;
                let new_unavailable =
                    target_new - i(&new_rs["status"]["availableReplicas"]).min(target_new);
                let mut budget = all_spec - min_available - new_unavailable;
                if budget > 0 {
                    // first the unhealthy old replicas
                    let mut remaining_old: Vec<(Value, i64)> = old
                        .iter()
                        .map(|r| (r.clone(), i(&r["spec"]["replicas"])))
                        .collect();
                    for (r, spec) in remaining_old.iter_mut() {
                        if budget <= 0 {
                            break;
                        }
                        let unhealthy = *spec - i(&r["status"]["availableReplicas"]).min(*spec);
                        let n = unhealthy.min(budget);
                        if n > 0 {
                            *spec -= n;
                            budget -= n;
                        }
                    }
                    // then available ones, bounded by availability
                    let all_available: i64 = i(&new_rs["status"]["availableReplicas"])
                        + old
                            .iter()
                            .map(|r| i(&r["status"]["availableReplicas"]))
                            .sum::<i64>();
                    let mut avail_budget = (all_available - min_available).min(budget).max(0);
                    for (_, spec) in remaining_old.iter_mut() {
                        if avail_budget <= 0 {
                            break;
                        }
                        let n = (*spec).min(avail_budget);
                        *spec -= n;
                        avail_budget -= n;
                    }
                    for (r, spec) in remaining_old {
                        scale_rs(shared, d, &r, spec, max_surge);
                    }
                } else {
                    for r in &old {
                        scale_rs(shared, d, r, i(&r["spec"]["replicas"]), max_surge);
                    }
                }
            } else {
                // Recreate
                for r in &old {
                    scale_rs(shared, d, r, 0, 0);
                }
                let old_running = old.iter().any(|r| i(&r["status"]["replicas"]) > 0);
                if !old_running {
                    scale_rs(shared, d, &new_rs, replicas, 0);
                }
            }
            // revision history cleanup
            let limit = d["spec"]["revisionHistoryLimit"]
                .as_i64()
                .unwrap_or(10)
                .max(0) as usize;
            let idle: Vec<&Value> = old
                .iter()
                .filter(|r| i(&r["spec"]["replicas"]) == 0 && i(&r["status"]["replicas"]) == 0)
                .collect();
            if idle.len() > limit {
                for r in idle.iter().take(idle.len() - limit) {
                    let _ = store.delete(rs_def, &ns, meta_str(r, "name"), &json!({}));
                }
            }
        }
        // re-read for status
        let new_now = store
            .get("replicasets", &ns, meta_str(&new_rs, "name"))
            .unwrap_or(new_rs);
        let old_now: Vec<Value> = old
            .iter()
            .filter_map(|r| store.get("replicasets", &ns, meta_str(r, "name")))
            .collect();
        let d_now = store
            .get("deployments", &ns, &dname)
            .unwrap_or_else(|| d.clone());
        sync_status(
            shared,
            state,
            &d_now,
            Some(&new_now),
            &old_now,
            max_unavail,
            created_new,
            &now,
        );
    }
    state.progress.retain(|k, _| live.contains(k));
}

#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one Deployment's status, computed by the caller's loop"
)]
fn sync_status(
    shared: &Shared,
    state: &mut State,
    d: &Value,
    new_rs: Option<&Value>,
    old: &[Value],
    max_unavail: i64,
    created_new: bool,
    now: &str,
) {
    let uid = meta_str(d, "uid").to_string();
    let replicas = i(&d["spec"]["replicas"]);
    let all: Vec<&Value> = new_rs.into_iter().chain(old.iter()).collect();
    let total: i64 = all.iter().map(|r| i(&r["status"]["replicas"])).sum();
    let updated = new_rs.map(|r| i(&r["status"]["replicas"])).unwrap_or(0);
    let ready: i64 = all.iter().map(|r| i(&r["status"]["readyReplicas"])).sum();
    let available: i64 = all
        .iter()
        .map(|r| i(&r["status"]["availableReplicas"]))
        .sum();
    let unavailable = (replicas - available).max(0);
    let prev = &d["status"];
    let mut conds: Vec<Value> = prev["conditions"].as_array().cloned().unwrap_or_default();
    // Available
    if available >= replicas - max_unavail {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        );
    }
    // Progressing
    let paused = d["spec"]["paused"] == json!(true);
    let rs_name = new_rs
        .map(|r| meta_str(r, "name").to_string())
        .unwrap_or_default();
    let hash = new_rs
        .and_then(|r| {
            r.pointer("/metadata/labels")
                .and_then(|l| l.get(HASH_LABEL))
                .and_then(Value::as_str)
        })
        .unwrap_or_default()
        .to_string();
    let entry = state
        .progress
        .entry(uid.clone())
        .or_insert_with(|| (Instant::now(), hash.clone()));
    if entry.1 != hash {
        *entry = (Instant::now(), hash.clone());
    }
    let progressed = created_new
        || updated > i(&prev["updatedReplicas"])
        || ready > i(&prev["readyReplicas"])
        || available > i(&prev["availableReplicas"])
        || total < i(&prev["replicas"]) && old.iter().any(|r| i(&r["status"]["replicas"]) > 0);
    let complete =
        new_rs.is_some() && updated == replicas && available == replicas && total == replicas;
    let prog = conds
        .iter()
        .find(|c| c["type"] == json!("Progressing"))
        .cloned();
    let prog_reason = prog
        .as_ref()
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_string();
    if paused {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            now,
        );
    } else if created_new {
        set_condition(
            &mut conds,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{rs_name}\""),
            now,
        );
        entry.0 = Instant::now();
    } else if complete {
        if prog_reason != "NewReplicaSetAvailable" {
            set_condition(
                &mut conds,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                now,
            );
        }
        entry.0 = Instant::now();
    } else if progressed || prog.is_none() {
        let reason = if prog.is_none() {
            "FoundNewReplicaSet"
        } else {
            "ReplicaSetUpdated"
        };
        let msg = if prog.is_none() {
            format!("Found new replica set \"{rs_name}\"")
        } else {
            format!("ReplicaSet \"{rs_name}\" is progressing.")
        };
        set_condition(&mut conds, "Progressing", "True", reason, &msg, now);
        if let Some(c) = conds.iter_mut().find(|c| c["type"] == json!("Progressing")) {
            c["lastUpdateTime"] = json!(now);
        }
        entry.0 = Instant::now();
    } else if prog_reason == "DeploymentPaused" {
        set_condition(
            &mut conds,
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed",
            now,
        );
        entry.0 = Instant::now();
    } else if prog_reason != "ProgressDeadlineExceeded" {
        let deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600) as f64;
        if shared.clock.sim_secs(entry.0.elapsed()) > deadline {
            set_condition(
                &mut conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                now,
            );
        }
    }
    // ReplicaFailure
    let failure = new_rs.and_then(|r| {
        r.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|c| c["type"] == json!("ReplicaFailure"))
                    .cloned()
            })
    });
    match failure {
        Some(f) => set_condition(
            &mut conds,
            "ReplicaFailure",
            "True",
            f["reason"].as_str().unwrap_or("FailedCreate"),
            f["message"].as_str().unwrap_or_default(),
            now,
        ),
        None => conds.retain(|c| c["type"] != json!("ReplicaFailure")),
    }
    // order like the real controller: Available, Progressing, ReplicaFailure
    conds.sort_by_key(|c| match c["type"].as_str() {
        Some("Available") => 0,
        Some("Progressing") => 1,
        _ => 2,
    });
    let mut status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": unavailable,
        "conditions": conds,
    });
    if let Some(cc) = prev.get("collisionCount") {
        status["collisionCount"] = cc.clone();
    }
    for k in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ] {
        if status[k] == json!(0) {
            status.as_object_mut().unwrap().remove(k);
        }
    }
    if d.get("status") != Some(&status) {
        shared.store.update_with(
            "deployments",
            meta_str(d, "namespace"),
            meta_str(d, "name"),
            Some("status"),
            |o| o["status"] = status,
        );
    }
}
