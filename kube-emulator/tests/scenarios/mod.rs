//! Cluster-agnostic scenarios: each takes a [`Target`] and asserts what a real apiserver
//! (with controller-manager, scheduler and kubelet) would show.

use crate::common::{Target, deployment, pods_of, wait_deployment_ready, wait_for};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::time::Duration;

mod custom;
pub use custom::*;

fn api_err(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Status codes and bodies for the common failure paths.
pub async fn crud_status_codes(t: &Target) {
    let ns = t.namespace("crud").await;
    let api: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let d: Deployment = serde_json::from_value(deployment("web", 1, "ready", 600)).unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let rv1 = meta.resource_version.clone().unwrap();

    let (code, reason, msg) = api_err(api.create(&PostParams::default(), &d).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(msg, "deployments.apps \"web\" already exists");

    let (code, reason, msg) = api_err(api.get("nope").await.unwrap_err());
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (404, "NotFound", "deployments.apps \"nope\" not found")
    );

    let (code, _, _) = api_err(
        api.patch(
            "nope",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 404);

    // spec change bumps generation; replace with a stale resourceVersion conflicts
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let mut stale = created.clone();
    stale.metadata.resource_version = Some(rv1);
    let (code, reason, msg) = api_err(
        api.replace("web", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(msg.contains("the object has been modified; please apply your changes to the latest version and try again"), "{msg}");

    // label-only change does not bump generation
    let p = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));

    // 422: selector does not match template labels
    let mut bad = deployment("bad", 1, "ready", 600);
    bad["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let bad: Deployment = serde_json::from_value(bad).unwrap();
    let (code, reason, msg) = api_err(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.starts_with(
            "Deployment.apps \"bad\" is invalid: spec.template.metadata.labels: Invalid value"
        ),
        "{msg}"
    );

    // 400: unsupported field selector
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    let (code, reason, msg) = api_err(
        pods.list(&ListParams::default().fields("spec.foo=bar"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (400, "BadRequest", "field label not supported: spec.foo")
    );

    // strategic merge: env merged by name, containers by name
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "mcp", "env": [{"name": "A", "value": "1"}]}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "mcp", "env": [{"name": "B", "value": "2"}]}]}}}});
    let d2 = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    let c = &d2.spec.template.spec.unwrap().containers[0];
    assert_eq!(c.env.as_ref().map(|e| e.len()), Some(2));
    assert!(c.image.is_some(), "strategic patch must keep the image");

    // delete of a Deployment returns a Status (object gone)
    let res = api
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    assert!(res.is_right(), "expected Status for deleted deployment");
}

/// Server-side apply: create (201), re-apply (200), conflict without force, force.
pub async fn server_side_apply(t: &Target) {
    let ns = t.namespace("ssa").await;
    let api: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let d = deployment("ssa", 1, "ready", 600);
    let pp = PatchParams::apply("gateway");
    let created = api.patch("ssa", &pp, &Patch::Apply(&d)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let mf = created.metadata.managed_fields.clone().unwrap_or_default();
    assert!(mf.iter().any(
        |m| m.manager.as_deref() == Some("gateway") && m.operation.as_deref() == Some("Apply")
    ));

    let mut d2 = d.clone();
    d2["spec"]["replicas"] = json!(3);
    let other = PatchParams::apply("other-manager");
    let (code, reason, msg) = api_err(
        api.patch("ssa", &other, &Patch::Apply(&d2))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        msg.contains("conflict with \"gateway\"") && msg.contains(".spec.replicas"),
        "{msg}"
    );

    let forced = api
        .patch("ssa", &other.clone().force(), &Patch::Apply(&d2))
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(3));
    // gateway now conflicts with other-manager
    let (code, _, msg) = api_err(api.patch("ssa", &pp, &Patch::Apply(&d)).await.unwrap_err());
    assert_eq!(code, 409);
    assert!(msg.contains("other-manager"), "{msg}");

    // ConfigMap: field removed from the applied config is removed from the object
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}});
    cms.patch("cfg", &pp, &Patch::Apply(&cm)).await.unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let got = cms.patch("cfg", &pp, &Patch::Apply(&cm)).await.unwrap();
    let data = got.data.unwrap();
    assert!(
        data.contains_key("a") && !data.contains_key("b"),
        "{data:?}"
    );
}

/// Deployment -> ReplicaSet -> Pods, status counts, conditions, events, GC with DELETED events.
pub async fn deployment_lifecycle_and_gc(t: &Target) {
    let ns = t.namespace("life").await;
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    let d: Deployment = serde_json::from_value(deployment("app", 2, "ready", 600)).unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    wait_deployment_ready(t, &ns, "app", 2).await;
    let d = deps.get("app").await.unwrap();
    let st = d.status.clone().unwrap();
    assert_eq!(st.observed_generation, d.metadata.generation);
    assert_eq!((st.replicas, st.ready_replicas), (Some(2), Some(2)));
    let conds = st.conditions.unwrap();
    let find = |t: &str| {
        conds
            .iter()
            .find(|c| c.type_.as_deref() == Some(t))
            .cloned()
            .unwrap()
    };
    assert_eq!(
        find("Available").reason.as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        find("Progressing").reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let rss: Api<ReplicaSet> = Api::namespaced(t.client.clone(), &ns);
    let rs_list = rss
        .list(&ListParams::default().labels("app=app"))
        .await
        .unwrap();
    assert_eq!(rs_list.items.len(), 1);
    let rs = &rs_list.items[0];
    assert!(
        rs.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("pod-template-hash")
    );
    assert_eq!(
        rs.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let ps = pods_of(t, &ns, "app").await;
    assert_eq!(ps.len(), 2);
    for p in &ps {
        let s = p.status.as_ref().unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(s.pod_ip.is_some());
        assert_eq!(
            p.metadata.owner_references.as_ref().unwrap()[0].kind,
            "ReplicaSet"
        );
    }
    // events from the controllers, readable through both event APIs
    let core: Api<CoreEvent> = Api::namespaced(t.client.clone(), &ns);
    let evs = core
        .list(
            &ListParams::default().fields("involvedObject.kind=Deployment,involvedObject.name=app"),
        )
        .await
        .unwrap();
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ScalingReplicaSet")),
        "{:?}",
        evs.items
    );
    let v1: Api<EventsV1> = Api::namespaced(t.client.clone(), &ns);
    let evs = v1
        .list(&ListParams::default().fields("regarding.kind=ReplicaSet"))
        .await
        .unwrap();
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
    );
    let pod_name = ps[0].metadata.name.clone().unwrap();
    let evs = core
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod_name}")))
        .await
        .unwrap();
    for r in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        assert!(
            evs.items.iter().any(|e| e.reason.as_deref() == Some(r)),
            "missing {r} event"
        );
    }

    // rolling update: new RS, revision 2
    deps.patch("app", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "mcp", "image": "busybox:1.37"}]}}}})))
        .await
        .unwrap();
    wait_for("rollout of revision 2", t.budget(60.0), || {
        let deps = deps.clone();
        async move {
            let d = deps.get("app").await.unwrap();
            let s = d.status.unwrap_or_default();
            d.metadata
                .annotations
                .unwrap_or_default()
                .get("deployment.kubernetes.io/revision")
                .map(String::as_str)
                == Some("2")
                && s.updated_replicas == Some(2)
                && s.replicas == Some(2)
                && s.available_replicas == Some(2)
        }
    })
    .await;

    // GC: watch pods, delete the deployment, expect DELETED for every pod and no RS left
    let lp = pods.list(&ListParams::default()).await.unwrap();
    let rv = lp.metadata.resource_version.unwrap();
    let names: Vec<String> = lp
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();
    deps.delete("app", &DeleteParams::background())
        .await
        .unwrap();
    let mut deleted = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + t.budget(40.0);
    while deleted.len() < names.len() {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("DELETED events in time")
            .unwrap()
            .expect("stream open");
        if let WatchEvent::Deleted(p) = ev {
            deleted.insert(p.metadata.name.unwrap());
        }
    }
    wait_for("replicasets collected", t.budget(20.0), || {
        let rss = rss.clone();
        async move {
            rss.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        }
    })
    .await;
}

/// kube-runtime watcher + reflector converge on the cluster state.
pub async fn watcher_reflector(t: &Target) {
    let ns = t.namespace("refl").await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream =
        reflector(writer, watcher(cms.clone(), watcher::Config::default())).applied_objects();
    let handle = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(r) = s.next().await {
            let _ = r;
        }
    });
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("c{i}"), "labels": {"i": i.to_string()}}, "data": {"v": "1"}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    cms.patch(
        "c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    wait_for("reflector converged", Duration::from_secs(15), || {
        let reader = reader.clone();
        async move {
            let st = reader.state();
            st.len() == 4
                && st.iter().any(|c| {
                    c.metadata.name.as_deref() == Some("c1")
                        && c.data.as_ref().and_then(|d| d.get("v")).map(String::as_str) == Some("2")
                })
        }
    })
    .await;
    handle.abort();
}

/// list paging with limit/continue and label selectors.
pub async fn paging_and_selectors(t: &Target) {
    let ns = t.namespace("page").await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("p{i}"), "labels": {"tier": tier, "n": i.to_string()}}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert!(
            page.metadata
                .resource_version
                .as_deref()
                .is_some_and(|s| !s.is_empty())
        );
        pages += 1;
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    // kube-root-ca.crt may exist on a real cluster
    names.retain(|n| n.starts_with('p'));
    assert_eq!(names.len(), 7);
    assert!(pages >= 3);
    let count = |sel: &str| {
        let cms = cms.clone();
        let sel = sel.to_string();
        async move {
            cms.list(&ListParams::default().labels(&sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("tier=even").await, 4);
    assert_eq!(count("tier==odd").await, 3);
    assert_eq!(count("tier!=even,tier").await, 3);
    assert_eq!(count("n in (1,2,3)").await, 3);
    assert_eq!(count("n notin (1,2,3),tier").await, 4);
    assert_eq!(
        count("!tier").await,
        cms.list(&ListParams::default()).await.unwrap().items.len() - 7
    );
    assert_eq!(
        cms.list(&ListParams::default().fields("metadata.name=p3"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

/// Logs of a ready pod: tailLines, timestamps, follow.
pub async fn pod_logs(t: &Target) {
    let ns = t.namespace("logs").await;
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(deployment("lg", 1, "ready", 600)).unwrap(),
    )
    .await
    .unwrap();
    wait_deployment_ready(t, &ns, "lg", 1).await;
    let pod = pods_of(t, &ns, "lg").await.remove(0);
    let name = pod.metadata.name.unwrap();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    let all = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert!(!all.trim().is_empty());
    let tail = pods
        .logs(
            &name,
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.lines().count(), 1);
    let ts = pods
        .logs(
            &name,
            &LogParams {
                timestamps: true,
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = ts.split(' ').next().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(first).is_ok(), "{ts}");
    let err = pods
        .logs(
            &name,
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(api_err(err).0, 400);
    let err = pods
        .logs(
            &name,
            &LogParams {
                container: Some("nope".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(api_err(err).0, 400);
    // follow: a new line arrives within the heartbeat period
    use futures_util::AsyncBufReadExt;
    let stream = pods
        .log_stream(
            &name,
            &LogParams {
                follow: true,
                tail_lines: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut lines = stream.lines();
    let line = tokio::time::timeout(t.budget(15.0), lines.next())
        .await
        .expect("a followed log line")
        .unwrap()
        .unwrap();
    assert!(!line.is_empty());
}

/// Image pull failure: ErrImagePull/ImagePullBackOff, Failed events, progress deadline.
pub async fn image_pull_failure(t: &Target) {
    let ns = t.namespace("pull").await;
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(deployment("ipf", 1, "image-pull-failure", 30)).unwrap(),
    )
    .await
    .unwrap();
    wait_for("ProgressDeadlineExceeded", t.budget(90.0), || {
        let deps = deps.clone();
        async move {
            deps.get("ipf")
                .await
                .unwrap()
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| {
                    c.type_.as_deref() == Some("Progressing")
                        && c.status.as_deref() == Some("False")
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
        }
    })
    .await;
    let pod = pods_of(t, &ns, "ipf").await.remove(0);
    let st = pod.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let reason = st.container_statuses.unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .reason
        .clone()
        .unwrap();
    assert!(
        reason == "ErrImagePull" || reason == "ImagePullBackOff",
        "{reason}"
    );
    let core: Api<CoreEvent> = Api::namespaced(t.client.clone(), &ns);
    let evs = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name={}",
            pod.metadata.name.unwrap()
        )))
        .await
        .unwrap();
    assert!(evs.items.iter().any(|e| e.reason.as_deref() == Some("Failed") && e.type_.as_deref() == Some("Warning")));
}

/// Crash loop: CrashLoopBackOff with lastState.terminated and a growing restartCount.
pub async fn crash_loop(t: &Target) {
    let ns = t.namespace("crash").await;
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(deployment("cl", 1, "crash-loop", 600)).unwrap(),
    )
    .await
    .unwrap();
    let restarts = |t: &Target| {
        let ns = ns.clone();
        let client = t.client.clone();
        async move {
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            let p = pods
                .list(&ListParams::default().labels("app=cl"))
                .await
                .unwrap()
                .items;
            p.first()
                .and_then(|p| p.status.clone())
                .and_then(|s| s.container_statuses)
                .map(|c| c[0].clone())
        }
    };
    wait_for(
        "CrashLoopBackOff with restarts >= 2",
        t.budget(120.0),
        || {
            let f = restarts(t);
            async move {
                f.await.is_some_and(|c| {
                    c.restart_count >= 2
                        && c.last_state
                            .as_ref()
                            .and_then(|l| l.terminated.as_ref())
                            .is_some_and(|t| t.exit_code != 0)
                })
            }
        },
    )
    .await;
    let pod = pods_of(t, &ns, "cl").await.remove(0);
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    let prev = pods
        .logs(
            pod.metadata.name.as_deref().unwrap(),
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!prev.trim().is_empty());
}

// ------------------------------------------------------------------------------------------
// kubectl scenarios (subprocesses with KUBECONFIG pointing at the target)
// ------------------------------------------------------------------------------------------

fn yaml_of(v: &serde_json::Value) -> String {
    // JSON is YAML; kubectl apply -f - accepts it
    serde_json::to_string_pretty(v).unwrap()
}

fn ok(r: (bool, String, String), what: &str) -> String {
    assert!(
        r.0,
        "kubectl {what} failed:\nstdout: {}\nstderr: {}",
        r.1, r.2
    );
    r.1
}

/// kubectl get / apply / rollout status / logs / top pod / delete on a healthy Deployment.
pub async fn kubectl_healthy(t: &Target) {
    let ns = t.namespace("kctl").await;
    let n = ns.as_str();
    let d = deployment("web", 2, "ready", 600);
    let out = ok(
        t.kubectl_stdin(&["apply", "-n", n, "-f", "-"], &yaml_of(&d))
            .await,
        "apply (create)",
    );
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let timeout = format!("--timeout={}s", t.budget(60.0).as_secs());
    let out = ok(
        t.kubectl(&["rollout", "status", "-n", n, "deployment/web", &timeout])
            .await,
        "rollout status",
    );
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let out = ok(
        t.kubectl(&["get", "-n", n, "deployments"]).await,
        "get deployments",
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..4], &["2/2", "2", "2"], "{out}");
    let out = ok(
        t.kubectl(&["get", "-n", n, "pods", "-l", "app=web"]).await,
        "get pods",
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("1/1") && l.contains("Running"))
            .count(),
        2,
        "{out}"
    );
    // re-apply with a change: rolling update
    let mut d2 = d.clone();
    d2["spec"]["template"]["spec"]["containers"][0]["image"] = serde_json::json!("busybox:1.37");
    let out = ok(
        t.kubectl_stdin(&["apply", "-n", n, "-f", "-"], &yaml_of(&d2))
            .await,
        "apply (update)",
    );
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    ok(
        t.kubectl(&["rollout", "status", "-n", n, "deployment/web", &timeout])
            .await,
        "rollout status (update)",
    );
    let out = ok(
        t.kubectl(&["get", "-n", n, "rs", "-o", "name"]).await,
        "get rs",
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = ok(
        t.kubectl(&["rollout", "history", "-n", n, "deployment/web"])
            .await,
        "rollout history",
    );
    assert!(out.contains('2'), "{out}");
    let out = ok(
        t.kubectl(&["logs", "-n", n, "deployment/web", "--tail=5"])
            .await,
        "logs",
    );
    assert!(!out.trim().is_empty(), "empty logs");
    // metrics: allow time for the first scrape
    let mut top = (false, String::new(), String::new());
    for _ in 0..100 {
        top = t.kubectl(&["top", "pod", "-n", n]).await;
        if top.0 && top.1.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = ok(top, "top pod");
    assert!(
        out.contains("CPU(cores)") && out.contains("MEMORY(bytes)"),
        "{out}"
    );
    let out = ok(
        t.kubectl(&["delete", "-n", n, "deployment/web", &timeout])
            .await,
        "delete",
    );
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let mut empty = false;
    for _ in 0..200 {
        let out = ok(
            t.kubectl(&["get", "-n", n, "pods", "-o", "name"]).await,
            "get pods after delete",
        );
        if out.trim().is_empty() {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(empty, "pods were not garbage collected");
}

/// `kubectl rollout status` reports the progress-deadline error for an image pull failure.
pub async fn kubectl_progress_deadline(t: &Target) {
    let ns = t.namespace("kpd").await;
    let n = ns.as_str();
    let d = deployment("ipf", 1, "image-pull-failure", 30);
    ok(
        t.kubectl_stdin(&["apply", "-n", n, "-f", "-"], &yaml_of(&d))
            .await,
        "apply",
    );
    let timeout = format!("--timeout={}s", t.budget(120.0).as_secs());
    let (success, stdout, stderr) = t
        .kubectl(&["rollout", "status", "-n", n, "deployment/ipf", &timeout])
        .await;
    assert!(!success, "rollout status must fail: {stdout}");
    assert!(
        stderr.contains("error: deployment \"ipf\" exceeded its progress deadline"),
        "{stderr}"
    );
    let out = ok(t.kubectl(&["get", "-n", n, "pods"]).await, "get pods");
    assert!(
        out.contains("ErrImagePull") || out.contains("ImagePullBackOff"),
        "{out}"
    );
    let (success, _, stderr) = t.kubectl(&["logs", "-n", n, "deployment/ipf"]).await;
    assert!(!success && stderr.contains("waiting to start"), "{stderr}");
}

/// `kubectl get pods` shows CrashLoopBackOff with a growing restart count.
pub async fn kubectl_crash_loop(t: &Target) {
    let ns = t.namespace("kcl").await;
    let n = ns.as_str();
    ok(
        t.kubectl_stdin(
            &["apply", "-n", n, "-f", "-"],
            &yaml_of(&deployment("cl", 1, "crash-loop", 600)),
        )
        .await,
        "apply",
    );
    let restarts_of = |out: &str| -> Option<(String, u32)> {
        let line = out.lines().find(|l| l.starts_with("cl-"))?;
        let cols: Vec<&str> = line.split_whitespace().collect();
        Some((cols[2].to_string(), cols[3].parse().ok()?))
    };
    let start = std::time::Instant::now();
    let mut seen: Vec<u32> = Vec::new();
    let mut saw_backoff = false;
    while start.elapsed() < t.budget(150.0) {
        let out = ok(t.kubectl(&["get", "-n", n, "pods"]).await, "get pods");
        if let Some((status, r)) = restarts_of(&out) {
            if status == "CrashLoopBackOff" {
                saw_backoff = true;
            }
            if seen.last() != Some(&r) {
                seen.push(r);
            }
            if saw_backoff && seen.len() >= 2 && r >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        saw_backoff,
        "never saw CrashLoopBackOff; restart counts {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen.last().copied().unwrap_or(0) >= 2,
        "restart count did not grow: {seen:?}"
    );
    let out = ok(
        t.kubectl(&["logs", "-n", n, "deployment/cl", "--previous"])
            .await,
        "logs --previous",
    );
    assert!(!out.trim().is_empty());
}

/// discovery-driven kubectl verbs keep working: api-resources, get all, events, describe.
pub async fn kubectl_discovery(t: &Target) {
    let out = ok(t.kubectl(&["api-resources"]).await, "api-resources");
    for r in [
        "deployments",
        "pods",
        "events",
        "configmaps",
        "secrets",
        "services",
    ] {
        assert!(out.contains(r), "{r} missing from api-resources:\n{out}");
    }
    ok(t.kubectl(&["get", "ns", "default"]).await, "get ns");
    ok(
        t.kubectl(&["auth", "can-i", "create", "deployments"]).await,
        "auth can-i",
    );
    let (_, v, _) = t.kubectl(&["version", "-o", "json"]).await;
    assert!(v.contains("serverVersion"), "{v}");
}
