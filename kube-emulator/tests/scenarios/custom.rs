//! Custom resources (the ToolHive CRDs) and StatefulSets: scenarios that a real apiserver with
//! kube-controller-manager and a fake kubelet satisfies too (no operator needed: statuses are
//! written by the scenario itself).

use super::{api_err, ok};
use crate::common::{Target, wait_for};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};

pub const MCPSERVERS_CRD: &str = "mcpservers.toolhive.stacklok.dev";

/// The bundled ToolHive CRDs, made loadable by a v1.20 apiserver (no CEL rules, no empty
/// defaults: what ../shared/tools/crd-for-k8s120.py does). The emulator takes them either way.
fn loadable_crds() -> Vec<Value> {
    fn clean(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("x-kubernetes-validations");
                if matches!(m.get("default"), Some(Value::Null))
                    || m.get("default") == Some(&json!(""))
                {
                    m.remove("default");
                }
                m.values_mut().for_each(clean);
            }
            Value::Array(a) => a.iter_mut().for_each(clean),
            _ => {}
        }
    }
    let mut crds = kube_emulator::crd::toolhive_crds();
    crds.truncate(2);
    crds.iter_mut().for_each(clean);
    crds
}

/// Install (server-side apply) the MCPServer and MCPRemoteProxy CRDs and wait until served.
pub async fn install_toolhive_crds(t: &Target) {
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    for c in loadable_crds() {
        let name = c["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(
            &name,
            &PatchParams::apply("scenarios").force(),
            &Patch::Apply(&c),
        )
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
    }
    wait_for("MCPServer served", t.budget(20.0), || async {
        t.client
            .list_api_group_resources("toolhive.stacklok.dev/v1beta1")
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.name == "mcpservers"))
    })
    .await;
}

pub fn mcpserver_resource(version: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("toolhive.stacklok.dev", version, "MCPServer");
    ApiResource::from_gvk_with_plural(&gvk, "mcpservers")
}

pub fn mcpservers(t: &Target, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(t.client.clone(), ns, &mcpserver_resource("v1beta1"))
}

pub fn mcpserver(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": name, "labels": {"team": "a"}}, "spec": spec,
    }))
    .unwrap()
}

/// The CRDs are established and discoverable (kube discovery and kubectl api-resources).
pub async fn crd_install(t: &Target) {
    install_toolhive_crds(t).await;
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let crd = api.get(MCPSERVERS_CRD).await.unwrap();
    let st = crd.status.expect("CRD status");
    let conds = st.conditions.unwrap_or_default();
    for want in ["Established", "NamesAccepted"] {
        assert!(
            conds.iter().any(|c| c.type_ == want && c.status == "True"),
            "{want}: {conds:?}"
        );
    }
    assert_eq!(st.accepted_names.unwrap().kind, "MCPServer");
    assert!(
        st.stored_versions
            .unwrap_or_default()
            .contains(&"v1beta1".to_string())
    );
    for v in ["v1alpha1", "v1beta1"] {
        let l = t
            .client
            .list_api_group_resources(&format!("toolhive.stacklok.dev/{v}"))
            .await
            .unwrap();
        let r = l
            .resources
            .iter()
            .find(|r| r.name == "mcpservers")
            .expect("mcpservers listed");
        assert_eq!((r.kind.as_str(), r.namespaced), ("MCPServer", true));
        assert!(l.resources.iter().any(|r| r.name == "mcpservers/status"));
    }
    let out = ok(
        t.kubectl(&["api-resources", "--api-group=toolhive.stacklok.dev"])
            .await,
        "api-resources",
    );
    assert!(
        out.contains("mcpservers") && out.contains("MCPServer") && out.contains("mcpremoteproxies"),
        "{out}"
    );
}

/// CR create (defaults from the schema), list with a label selector, watch, merge patch,
/// server-side apply, another served version, kubectl's printer columns, delete.
pub async fn cr_crud_watch_ssa(t: &Target) {
    install_toolhive_crds(t).await;
    let ns = t.namespace("cr").await;
    let api = mcpservers(t, &ns);
    let a = api
        .create(
            &PostParams::default(),
            &mcpserver("a", json!({"image": "ghcr.io/x/a:1"})),
        )
        .await
        .unwrap();
    assert_eq!(a.data["spec"]["transport"], "stdio", "schema default");
    assert_eq!(a.data["spec"]["proxyPort"], 8080, "schema default");
    assert_eq!(a.metadata.generation, Some(1));
    let list = api
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(
        api.list(&ListParams::default().labels("team=b"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap()
        .boxed();

    let p = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "ghcr.io/x/a:2"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    let applied = json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
        "metadata": {"name": "b"}, "spec": {"image": "ghcr.io/x/b:1", "transport": "sse"}});
    let pp = PatchParams::apply("scenario-ssa");
    let b = api.patch("b", &pp, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(b.data["spec"]["transport"], "sse");
    let mut again = applied.clone();
    again["spec"]["proxyPort"] = json!(9090);
    let b2 = api.patch("b", &pp, &Patch::Apply(&again)).await.unwrap();
    assert_eq!(b2.data["spec"]["proxyPort"], 9090);
    let managers: Vec<String> = b2
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"scenario-ssa".to_string()),
        "{managers:?}"
    );

    let alpha: Api<DynamicObject> =
        Api::namespaced_with(t.client.clone(), &ns, &mcpserver_resource("v1alpha1"));
    let old = alpha.get("b").await.unwrap();
    assert_eq!(
        old.types.unwrap().api_version,
        "toolhive.stacklok.dev/v1alpha1"
    );

    let out = ok(
        t.kubectl(&["get", "mcpservers", "-n", &ns]).await,
        "get mcpservers",
    );
    let header = out.lines().next().unwrap_or_default();
    for col in ["NAME", "STATUS", "READY", "REPLICAS", "URL", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(t.budget(10.0), stream.try_next())
        .await
        .expect("watch event")
        .unwrap()
    {
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => seen.push(o.metadata.name.unwrap()),
            WatchEvent::Deleted(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("a"));
                break;
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert!(
        seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()),
        "{seen:?}"
    );
}

/// A CR that breaks the version's openAPIV3Schema is refused with 422 and not stored.
pub async fn cr_schema_refusal(t: &Target) {
    install_toolhive_crds(t).await;
    let ns = t.namespace("cr-bad").await;
    let api = mcpservers(t, &ns);
    let pp = PostParams::default();
    let (code, reason, msg) = api_err(
        api.create(
            &pp,
            &mcpserver("bad", json!({"image": "x", "transport": "carrier-pigeon"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.starts_with("MCPServer.toolhive.stacklok.dev \"bad\" is invalid"),
        "{msg}"
    );
    assert!(msg.contains("spec.transport: Unsupported value: \"carrier-pigeon\": supported values: \"stdio\", \"streamable-http\", \"sse\""), "{msg}");
    let (code, _, msg) = api_err(
        api.create(&pp, &mcpserver("bad", json!({"transport": "sse"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(msg.contains("spec.image: Required value"), "{msg}");
    let (code, _, msg) = api_err(
        api.create(
            &pp,
            &mcpserver("bad", json!({"image": "x", "proxyPort": 70000})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        msg.contains("spec.proxyPort") && msg.contains("less than or equal to 65535"),
        "{msg}"
    );
    let (code, _, msg) = api_err(
        api.create(
            &pp,
            &mcpserver("bad", json!({"image": "x", "replicas": "two"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        msg.contains("spec.replicas") && msg.contains("integer"),
        "{msg}"
    );
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing stored"
    );
    // a valid object, then an invalid merge patch: refused, the stored object unchanged
    api.create(&pp, &mcpserver("good", json!({"image": "x"})))
        .await
        .unwrap();
    let (code, _, _) = api_err(
        api.patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"transport": "carrier-pigeon"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert_eq!(
        api.get("good").await.unwrap().data["spec"]["transport"],
        "stdio"
    );
    let (okk, _, err) = t.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &serde_json::to_string(&json!({"apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer", "metadata": {"name": "viakubectl"}, "spec": {"image": "x", "transport": "carrier-pigeon"}})).unwrap()).await;
    assert!(
        !okk && err.contains("Unsupported value: \"carrier-pigeon\""),
        "{err}"
    );
}

/// The status subresource: /status writes change only status, main writes never change it.
pub async fn cr_status_subresource(t: &Target) {
    install_toolhive_crds(t).await;
    let ns = t.namespace("cr-status").await;
    let api = mcpservers(t, &ns);
    api.create(
        &PostParams::default(),
        &mcpserver("s", json!({"image": "x"})),
    )
    .await
    .unwrap();
    let st = json!({"status": {"phase": "Ready", "url": "http://mcp-s-proxy:8080", "readyReplicas": 1}, "spec": {"image": "changed"}});
    let o = api
        .patch_status("s", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
    assert_eq!(o.data["status"]["phase"], "Ready");
    assert_eq!(
        o.data["spec"]["image"], "x",
        "spec is not written through /status"
    );
    assert_eq!(o.metadata.generation, Some(1));
    let o = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}, "spec": {"image": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        o.data["status"]["phase"], "Ready",
        "status is not written through the main resource"
    );
    assert_eq!(o.data["spec"]["image"], "y");
    assert_eq!(o.metadata.generation, Some(2));
    let got = api.get_status("s").await.unwrap();
    assert_eq!(got.data["status"]["url"], "http://mcp-s-proxy:8080");
    let out = ok(
        t.kubectl(&["get", "mcpserver", "s", "-n", &ns]).await,
        "get mcpserver",
    );
    assert!(
        out.contains("Ready") && out.contains("http://mcp-s-proxy:8080"),
        "{out}"
    );
}

fn statefulset(name: &str, replicas: i32) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "db", "image": "busybox:1.36", "command": ["sh", "-c", "while true; do sleep 5; done"]}]}}
        }
    }))
    .unwrap()
}

async fn wait_sts(
    t: &Target,
    api: &Api<StatefulSet>,
    name: &str,
    replicas: i32,
    what: &str,
) -> StatefulSet {
    wait_for(what, t.budget(60.0), || async {
        api.get(name)
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|s| {
                s.ready_replicas == Some(replicas)
                    && s.replicas == replicas
                    && s.updated_replicas == Some(replicas)
                    && s.current_revision.is_some()
                    && s.current_revision == s.update_revision
            })
    })
    .await;
    api.get(name).await.unwrap()
}

async fn pod_names(t: &Target, ns: &str, app: &str) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(t.client.clone(), ns);
    let mut names: Vec<String> = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

/// StatefulSet: ordinal pods, ready count, revisions, scale, rolling restart, GC on delete.
pub async fn statefulset_basics(t: &Target) {
    let ns = t.namespace("sts").await;
    let api: Api<StatefulSet> = Api::namespaced(t.client.clone(), &ns);
    api.create(&PostParams::default(), &statefulset("db", 2))
        .await
        .unwrap();
    let s = wait_sts(t, &api, "db", 2, "statefulset db 2/2").await;
    assert_eq!(pod_names(t, &ns, "db").await, vec!["db-0", "db-1"]);
    let rev1 = s.status.unwrap().update_revision.unwrap();
    assert!(rev1.starts_with("db-"), "{rev1}");
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    let p0 = pods.get("db-0").await.unwrap();
    assert_eq!(p0.labels().get("controller-revision-hash"), Some(&rev1));
    let owner = &p0.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("StatefulSet", Some(true))
    );

    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    wait_sts(t, &api, "db", 3, "statefulset db 3/3").await;
    assert_eq!(pod_names(t, &ns, "db").await, vec!["db-0", "db-1", "db-2"]);

    let uid0 = pods.get("db-0").await.unwrap().metadata.uid;
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}});
    api.patch("db", &PatchParams::default(), &Patch::Merge(restart))
        .await
        .unwrap();
    wait_for("rolling restart done", t.budget(90.0), || async {
        let s = api.get("db").await.unwrap();
        let st = s.status.unwrap_or_default();
        st.update_revision.as_deref() != Some(rev1.as_str())
            && st.current_revision == st.update_revision
            && st.ready_replicas == Some(3)
            && st.updated_replicas == Some(3)
    })
    .await;
    assert_ne!(
        pods.get("db-0").await.unwrap().metadata.uid,
        uid0,
        "db-0 was replaced"
    );
    let timeout = format!("--timeout={}s", t.budget(30.0).as_secs());
    let out = ok(
        t.kubectl(&["rollout", "status", "statefulset/db", "-n", &ns, &timeout])
            .await,
        "rollout status",
    );
    assert!(out.contains("roll out complete"), "{out}");
    let out = ok(
        t.kubectl(&["get", "statefulset", "-n", &ns]).await,
        "get statefulset",
    );
    assert!(out.contains("db") && out.contains("3/3"), "{out}");

    api.delete("db", &DeleteParams::background()).await.unwrap();
    wait_for("pods of db collected", t.budget(60.0), || async {
        pod_names(t, &ns, "db").await.is_empty()
    })
    .await;
}

/// `kubectl create` of built-in kinds sends protobuf bodies; the server answers JSON.
pub async fn kubectl_create_protobuf(t: &Target) {
    let ns = format!("pb-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    ok(
        t.kubectl(&["create", "namespace", &ns]).await,
        "create namespace",
    );
    let n = ns.as_str();
    ok(
        t.kubectl(&[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            n,
            "--from-literal=token=abc",
        ])
        .await,
        "create secret",
    );
    ok(
        t.kubectl(&["create", "configmap", "c1", "-n", n, "--from-literal=k=v"])
            .await,
        "create configmap",
    );
    ok(
        t.kubectl(&["create", "serviceaccount", "bot", "-n", n])
            .await,
        "create serviceaccount",
    );
    ok(
        t.kubectl(&[
            "create",
            "deployment",
            "web",
            "-n",
            n,
            "--image=busybox:1.36",
            "--replicas=2",
            "--port=8080",
        ])
        .await,
        "create deployment",
    );
    ok(
        t.kubectl(&[
            "create",
            "service",
            "clusterip",
            "web",
            "-n",
            n,
            "--tcp=80:8080",
        ])
        .await,
        "create service",
    );
    let data = ok(
        t.kubectl(&[
            "get",
            "secret",
            "s1",
            "-n",
            n,
            "-o",
            "jsonpath={.data.token}",
        ])
        .await,
        "get secret",
    );
    assert_eq!(data, "YWJj");
    let cm = ok(
        t.kubectl(&[
            "get",
            "configmap",
            "c1",
            "-n",
            n,
            "-o",
            "jsonpath={.data.k}",
        ])
        .await,
        "get configmap",
    );
    assert_eq!(cm, "v");
    let dep = ok(t.kubectl(&["get", "deployment", "web", "-n", n, "-o", "jsonpath={.spec.replicas}/{.spec.template.spec.containers[0].image}/{.spec.selector.matchLabels.app}"]).await, "get deployment");
    assert_eq!(dep, "2/busybox:1.36/web");
    let svc = ok(
        t.kubectl(&[
            "get",
            "service",
            "web",
            "-n",
            n,
            "-o",
            "jsonpath={.spec.ports[0].port}/{.spec.ports[0].targetPort}/{.spec.selector.app}",
        ])
        .await,
        "get service",
    );
    assert_eq!(svc, "80/8080/web");
    let (created, _, err) = t.kubectl(&["create", "configmap", "c1", "-n", n]).await;
    assert!(!created && err.contains("\"c1\" already exists"), "{err}");
    ok(
        t.kubectl(&["delete", "namespace", n, "--wait=false"]).await,
        "delete namespace",
    );
}

/// Whether `got` holds every field of `sent` with the same value (the apiserver may add
/// defaults, never drop or change what was sent): the path of the first difference.
fn first_difference(sent: &Value, got: &Value, path: &str) -> Option<String> {
    match (sent, got) {
        (Value::Object(s), Value::Object(g)) => s.iter().find_map(|(k, v)| {
            let p = format!("{path}.{k}");
            match g.get(k) {
                Some(gv) => first_difference(v, gv, &p),
                None => Some(format!("{p} was dropped (unknown to the schema)")),
            }
        }),
        (Value::Array(s), Value::Array(g)) if s.len() == g.len() => s
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, &format!("{path}[{i}]"))),
        _ if sent == got => None,
        _ => Some(format!("{path}: sent {sent}, stored {got}")),
    }
}

/// The custom resources the gateway writes (`fixtures/gateway-crs.json`, produced and
/// drift-checked by the gateway's `src/k8s/operator.rs` tests) pass the CRDs' schema: a
/// server-side apply dry run (field manager `hivegraph`, strict field validation where the
/// apiserver knows it) is accepted and keeps every field as sent.
pub async fn gateway_crs_validate(t: &Target) {
    install_toolhive_crds(t).await;
    wait_for("MCPRemoteProxy served", t.budget(20.0), || async {
        t.client
            .list_api_group_resources("toolhive.stacklok.dev/v1beta1")
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.name == "mcpremoteproxies"))
    })
    .await;
    let ns = t.namespace("gateway-crs").await;
    let crs: Vec<Value> =
        serde_json::from_str(include_str!("../fixtures/gateway-crs.json")).unwrap();
    assert!(crs.len() >= 5);
    for mut cr in crs {
        let kind = cr["kind"].as_str().unwrap().to_string();
        let plural = match kind.as_str() {
            "MCPServer" => "mcpservers",
            _ => "mcpremoteproxies",
        };
        let gvk = GroupVersionKind::gvk("toolhive.stacklok.dev", "v1beta1", &kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(t.client.clone(), &ns, &ar);
        cr["metadata"]["namespace"] = json!(ns);
        let name = cr["metadata"]["name"].as_str().unwrap().to_string();
        let pp = PatchParams::apply("hivegraph")
            .force()
            .dry_run()
            .validation_strict();
        let got = api
            .patch(&name, &pp, &Patch::Apply(&cr))
            .await
            .unwrap_or_else(|e| panic!("{kind} {name} refused: {e}"));
        if let Some(d) = first_difference(&cr["spec"], &got.data["spec"], "spec") {
            panic!("{kind} {name}: {d}");
        }
        assert!(
            api.get_opt(&name).await.unwrap().is_none(),
            "a dry run stores nothing"
        );
    }
}
