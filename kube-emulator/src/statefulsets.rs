//! StatefulSet controller modelled on kube-controller-manager: ordinal pods `NAME-0..N-1`
//! (created in order and only when the lower ordinals are Running and Ready, unless
//! `podManagementPolicy: Parallel`), scale-down from the highest ordinal, rolling update from
//! the highest ordinal (one pod at a time) when the template changes, and status with
//! `readyReplicas`, `currentRevision`/`updateRevision`. Pods carry an ownerReference, so
//! deleting the StatefulSet garbage-collects them.

use crate::Shared;
use crate::controllers::{is_terminating, owned_by, owner_ref, pod_ready_since, template_hash};
use crate::defaults;
use crate::store::meta_str;
use serde_json::{Value, json};

const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// One pass over every StatefulSet.
pub fn reconcile(shared: &Shared) {
    let (sets, _) = shared.store.list("statefulsets", None);
    let (pods, _) = shared.store.list("pods", None);
    for sts in sets.iter().filter(|s| !is_terminating(s)) {
        let mine = owned_by(&pods, meta_str(sts, "uid"));
        reconcile_one(shared, sts, &mine);
    }
}

fn update_revision(sts: &Value) -> String {
    let hash = template_hash(&sts["spec"]["template"], 0);
    format!("{}-{hash}", meta_str(sts, "name"))
}

fn pod_revision(p: &Value) -> &str {
    p.pointer("/metadata/labels")
        .and_then(|l| l.get(REVISION_LABEL))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn ordinal(sts: &Value, p: &Value) -> Option<i64> {
    meta_str(p, "name")
        .strip_prefix(&format!("{}-", meta_str(sts, "name")))?
        .parse()
        .ok()
}

fn reconcile_one(shared: &Shared, sts: &Value, mine: &[&Value]) {
    let want = sts["spec"]["replicas"].as_i64().unwrap_or(1);
    let parallel = sts["spec"]["podManagementPolicy"] == json!("Parallel");
    let rev = update_revision(sts);
    let mut by_ord: Vec<(i64, &Value)> = mine
        .iter()
        .filter_map(|p| ordinal(sts, p).map(|o| (o, *p)))
        .collect();
    by_ord.sort_by_key(|(o, _)| *o);
    let settled = by_ord
        .iter()
        .all(|(_, p)| !is_terminating(p) && pod_ready_since(p).is_some());
    for ord in 0..want {
        if by_ord.iter().any(|(o, _)| *o == ord) {
            continue;
        }
        let lower_ready = by_ord
            .iter()
            .filter(|(o, _)| *o < ord)
            .all(|(_, p)| !is_terminating(p) && pod_ready_since(p).is_some());
        if parallel || lower_ready {
            create_pod(shared, sts, ord, &rev);
        }
        if !parallel {
            break;
        }
    }
    let extra: Vec<&Value> = by_ord
        .iter()
        .rev()
        .filter(|(o, p)| *o >= want && !is_terminating(p))
        .map(|(_, p)| *p)
        .collect();
    for p in extra.iter().take(if parallel { usize::MAX } else { 1 }) {
        delete_pod(shared, sts, p);
    }
    let complete = by_ord.len() as i64 == want && extra.is_empty();
    if complete && settled {
        let stale = by_ord.iter().rev().find(|(_, p)| pod_revision(p) != rev);
        if let Some((_, p)) = stale {
            delete_pod(shared, sts, p);
        }
    }
    write_status(shared, sts, &rev);
}

fn create_pod(shared: &Shared, sts: &Value, ord: i64, rev: &str) {
    let name = format!("{}-{ord}", meta_str(sts, "name"));
    let tmpl = &sts["spec"]["template"];
    let mut meta = tmpl["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    meta["name"] = json!(name);
    meta["labels"][REVISION_LABEL] = json!(rev);
    meta["labels"][POD_NAME_LABEL] = json!(name);
    meta["labels"]["apps.kubernetes.io/pod-index"] = json!(ord.to_string());
    meta["ownerReferences"] = json!([owner_ref(sts)]);
    let mut spec = tmpl["spec"].clone();
    spec["hostname"] = json!(name);
    if let Some(svc) = sts["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(svc);
    }
    let pod = defaults::pod(json!({"metadata": meta, "spec": spec}));
    let ns = meta_str(sts, "namespace");
    let def = shared.store.def_of("pods");
    let (etype, reason, msg) = match shared.store.create(def, ns, pod) {
        Ok(_) => (
            "Normal",
            "SuccessfulCreate",
            format!(
                "create Pod {name} in StatefulSet {} successful",
                meta_str(sts, "name")
            ),
        ),
        Err(e) => (
            "Warning",
            "FailedCreate",
            format!(
                "create Pod {name} in StatefulSet {} failed error: {}",
                meta_str(sts, "name"),
                e.body["message"].as_str().unwrap_or_default()
            ),
        ),
    };
    shared
        .store
        .record_event(sts, etype, reason, &msg, "statefulset-controller", None);
}

fn delete_pod(shared: &Shared, sts: &Value, p: &Value) {
    let def = shared.store.def_of("pods");
    let name = meta_str(p, "name");
    if shared
        .store
        .delete(def, meta_str(p, "namespace"), name, &json!({}))
        .is_ok()
    {
        let msg = format!(
            "delete Pod {name} in StatefulSet {} successful",
            meta_str(sts, "name")
        );
        shared.store.record_event(
            sts,
            "Normal",
            "SuccessfulDelete",
            &msg,
            "statefulset-controller",
            None,
        );
    }
}

fn write_status(shared: &Shared, sts: &Value, rev: &str) {
    let ns = meta_str(sts, "namespace");
    let (pods_now, _) = shared.store.list("pods", Some(ns));
    let live: Vec<&Value> = owned_by(&pods_now, meta_str(sts, "uid"))
        .into_iter()
        .filter(|p| !is_terminating(p))
        .collect();
    let ready = live.iter().filter(|p| pod_ready_since(p).is_some()).count();
    let updated = live.iter().filter(|p| pod_revision(p) == rev).count();
    let want = sts["spec"]["replicas"].as_i64().unwrap_or(1) as usize;
    let prev_current = sts
        .pointer("/status/currentRevision")
        .and_then(Value::as_str);
    let current = match prev_current {
        Some(c) if !(updated == want && live.len() == want) => c.to_string(),
        _ => rev.to_string(),
    };
    let current_count = live.iter().filter(|p| pod_revision(p) == current).count();
    let status = json!({
        "observedGeneration": sts["metadata"]["generation"],
        "replicas": live.len(),
        "readyReplicas": ready,
        "currentReplicas": current_count,
        "updatedReplicas": updated,
        "availableReplicas": ready,
        "currentRevision": current,
        "updateRevision": rev,
        "collisionCount": 0,
    });
    if sts.get("status") != Some(&status) {
        shared.store.update_with(
            "statefulsets",
            ns,
            meta_str(sts, "name"),
            Some("status"),
            |o| o["status"] = status,
        );
    }
}
