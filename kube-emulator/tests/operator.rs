//! The simulated ToolHive operator (`--toolhive-operator`). Emulator-only: the real-cluster
//! tier has no ToolHive operator (and its fake kubelet pulls no images and runs no processes,
//! so image pull failures and crash loops cannot happen there).

#[expect(
    dead_code,
    reason = "the harness serves three test binaries; each uses a part"
)]
mod common;
#[expect(
    dead_code,
    reason = "the harness serves three test binaries; each uses a part"
)]
mod scenarios;

use common::{Target, wait_for};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube_emulator::Emulator;
use scenarios::{mcpserver, mcpservers};
use serde_json::{Value, json};

/// Copies of shared/data/toolhive-operator/examples (see crds/README.md).
const EXAMPLES: &str = "crds/examples";

async fn target() -> Target {
    let emu = Emulator::builder()
        .speed(20.0)
        .namespaces(["toolhive-system"])
        .toolhive_operator(true)
        .start()
        .await
        .expect("start emulator");
    Target::from_emulator(emu).await
}

fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLES)
}

async fn wait_phase(t: &Target, ns: &str, name: &str, phase: &str) -> DynamicObject {
    let api = mcpservers(t, ns);
    wait_for(&format!("{ns}/{name} {phase}"), t.budget(60.0), || async {
        api.get(name).await.is_ok_and(|o| {
            o.data["status"]["phase"] == json!(phase)
                && o.data["status"]["observedGeneration"] == json!(o.metadata.generation)
        })
    })
    .await;
    api.get(name).await.unwrap()
}

fn ready_condition(o: &DynamicObject) -> Value {
    o.data["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or_default()
}

async fn kubectl_ok(t: &Target, args: &[&str]) -> String {
    let (ok, out, err) = t.kubectl(args).await;
    assert!(ok, "kubectl {args:?}: {out}\n{err}");
    out
}

async fn owned_objects(t: &Target, ns: &str, name: &str) -> usize {
    let lp = ListParams::default().labels(&format!("toolhive-name={name}"));
    let c = t.client.clone();
    let deps = Api::<Deployment>::namespaced(c.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .len();
    let sts = Api::<StatefulSet>::namespaced(c.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .len();
    let svcs = Api::<Service>::namespaced(c.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .len();
    let pods = Api::<Pod>::namespaced(c, ns).list(&lp).await.unwrap().items;
    deps + sts
        + svcs
        + pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count()
}

/// The "done when" walk-through with the Debian kubectl, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_examples_ready_and_deleted() {
    let t = target().await;
    let dir = examples_dir();
    kubectl_ok(&t, &["create", "namespace", "demo"]).await;
    for (file, transport) in [
        ("mcpserver_yardstick_stdio.yaml", "stdio"),
        ("mcpserver_yardstick_streamablehttp.yaml", "streamable-http"),
        ("mcpserver_yardstick_sse.yaml", "sse"),
    ] {
        kubectl_ok(&t, &["apply", "-f", dir.join(file).to_str().unwrap()]).await;
        let o = wait_phase(&t, "toolhive-system", "yardstick", "Ready").await;
        assert_eq!(o.data["spec"]["transport"], transport);
        let out = kubectl_ok(&t, &["get", "mcpservers", "-n", "toolhive-system"]).await;
        assert!(out.contains("yardstick") && out.contains("Ready"), "{out}");
        assert!(
            out.contains("http://mcp-yardstick-proxy.toolhive-system.svc.cluster.local:8080"),
            "{out}"
        );
    }
    for file in [
        "mcpserver_fetch.yaml",
        "mcpserver_github.yaml",
        "mcpserver_with_restart_strategy.yaml",
        "mcpremoteproxy_with_bearer_token.yaml",
    ] {
        kubectl_ok(&t, &["apply", "-f", dir.join(file).to_str().unwrap()]).await;
    }
    wait_phase(&t, "toolhive-system", "fetch", "Ready").await;
    // the documented bounce: kubectl annotate (a merge patch of the CR)
    kubectl_ok(
        &t,
        &[
            "annotate",
            "mcpserver",
            "fetch",
            "-n",
            "toolhive-system",
            "--overwrite",
            "mcpserver.toolhive.stacklok.dev/restarted-at=2030-01-01T00:00:00Z",
        ],
    )
    .await;
    let fetch = mcpservers(&t, "toolhive-system");
    wait_for("restart processed", t.budget(30.0), || async {
        fetch.get("fetch").await.is_ok_and(|o| {
            o.annotations()
                .get("mcpserver.toolhive.stacklok.dev/last-processed-restart")
                == Some(&"2030-01-01T00:00:00Z".to_string())
        })
    })
    .await;
    wait_phase(&t, "default", "my-server", "Ready").await;
    let remote: Api<DynamicObject> =
        Api::namespaced_with(t.client.clone(), "default", &remote_proxy_resource());
    wait_for("remote proxy Ready", t.budget(60.0), || async {
        remote
            .get("api-proxy")
            .await
            .is_ok_and(|o| o.data["status"]["phase"] == "Ready")
    })
    .await;
    let rp = remote.get("api-proxy").await.unwrap();
    assert_eq!(
        rp.data["status"]["url"],
        "http://mcp-api-proxy-remote-proxy.default.svc.cluster.local:8080"
    );
    let out = kubectl_ok(
        &t,
        &["get", "statefulset,deploy,svc", "-n", "toolhive-system"],
    )
    .await;
    for want in [
        "statefulset.apps/yardstick",
        "deployment.apps/yardstick",
        "service/mcp-yardstick-proxy",
        "statefulset.apps/fetch",
        "service/mcp-fetch-proxy",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // invalid CR: 422 from kubectl
    let bad = std::fs::read_to_string(dir.join("mcpserver_fetch.yaml"))
        .unwrap()
        .replace("streamable-http", "carrier-pigeon")
        .replace("name: fetch", "name: bad");
    let (ok, _, err) = t.kubectl_stdin(&["apply", "-f", "-"], &bad).await;
    assert!(
        !ok && err.contains("spec.transport: Unsupported value: \"carrier-pigeon\""),
        "{err}"
    );
    // delete leaves nothing behind
    assert!(owned_objects(&t, "toolhive-system", "yardstick").await >= 5);
    kubectl_ok(
        &t,
        &[
            "delete",
            "mcpserver",
            "yardstick",
            "-n",
            "toolhive-system",
            "--timeout=60s",
        ],
    )
    .await;
    wait_for("yardstick's objects collected", t.budget(60.0), || async {
        owned_objects(&t, "toolhive-system", "yardstick").await == 0
    })
    .await;
}

fn remote_proxy_resource() -> kube::api::ApiResource {
    let gvk =
        kube::api::GroupVersionKind::gvk("toolhive.stacklok.dev", "v1beta1", "MCPRemoteProxy");
    kube::api::ApiResource::from_gvk_with_plural(&gvk, "mcpremoteproxies")
}

/// The workloads follow mcpserver-workloads.md: names, images, env from secrets, stdin,
/// ownerReferences; a missing Secret keeps the server Pending until it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_and_missing_secret() {
    let t = target().await;
    let ns = t.namespace("thv").await;
    let api = mcpservers(&t, &ns);
    let spec = json!({"image": "ghcr.io/github/github-mcp-server", "transport": "stdio", "args": ["--read-only"],
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "secrets": [{"name": "github-token", "key": "token", "targetEnvName": "GITHUB_PERSONAL_ACCESS_TOKEN"}],
        "resources": {"limits": {"cpu": "200m"}}});
    api.create(&PostParams::default(), &mcpserver("gh", spec))
        .await
        .unwrap();
    let o = wait_phase(&t, &ns, "gh", "Pending").await;
    let cond = ready_condition(&o);
    assert_eq!(cond["reason"], "SecretNotFound");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("\"github-token\""),
        "{cond}"
    );
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "github-token"}, "stringData": {"token": "t"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(t.client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let o = wait_phase(&t, &ns, "gh", "Ready").await;
    assert_eq!(o.data["status"]["readyReplicas"], 1);
    assert_eq!(ready_condition(&o)["status"], "True");
    assert!(
        o.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f.ends_with("/finalizer"))
    );
    let uid = o.metadata.uid.unwrap();

    let dep = Api::<Deployment>::namespaced(t.client.clone(), &ns)
        .get("gh")
        .await
        .unwrap();
    assert_eq!(
        dep.metadata.generation,
        Some(1),
        "no bounce of a new server"
    );
    let pc = &dep.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        pc.image.as_deref(),
        Some("ghcr.io/stacklok/toolhive/proxyrunner:v0.44.0")
    );
    assert_eq!(dep.metadata.owner_references.unwrap()[0].uid, uid);
    let svc = Api::<Service>::namespaced(t.client.clone(), &ns)
        .get("mcp-gh-proxy")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8080);
    let sts = Api::<StatefulSet>::namespaced(t.client.clone(), &ns)
        .get("gh")
        .await
        .unwrap();
    let c = &sts.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/github/github-mcp-server"));
    assert_eq!(c.args.clone().unwrap(), vec!["--read-only"]);
    assert_eq!(c.stdin, Some(true));
    let env = serde_json::to_value(&c.env).unwrap();
    assert!(
        env.to_string().contains("\"GITHUB_PERSONAL_ACCESS_TOKEN\"")
            && env.to_string().contains("secretKeyRef"),
        "{env}"
    );
    assert_eq!(sts.metadata.owner_references.unwrap()[0].uid, uid);
    assert!(
        Api::<Pod>::namespaced(t.client.clone(), &ns)
            .get("gh-0")
            .await
            .is_ok()
    );

    // a configmap permission profile that does not exist keeps the server Pending
    let pp = json!({"image": "ghcr.io/x/p:1", "permissionProfile": {"type": "configmap", "name": "perms", "key": "p.json"}});
    api.create(&PostParams::default(), &mcpserver("perm", pp))
        .await
        .unwrap();
    let o = wait_phase(&t, &ns, "perm", "Pending").await;
    let cond = ready_condition(&o);
    assert_eq!(cond["reason"], "ConfigMapNotFound");
    assert!(
        cond["message"].as_str().unwrap().contains("\"perms\""),
        "{cond}"
    );
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "perms"}, "data": {"p.json": "{}"}}))
            .unwrap();
    Api::namespaced(t.client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    wait_phase(&t, &ns, "perm", "Ready").await;
}

/// Failure paths: a bad image gives Failed with the pull reason; a crash loop gives Failed
/// with BackOff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_image_pull_and_crash_loop() {
    let t = target().await;
    let ns = t.namespace("thv-fail").await;
    let api = mcpservers(&t, &ns);
    let pp = PostParams::default();
    api.create(
        &pp,
        &mcpserver(
            "pull",
            json!({"image": "registry.invalid/mcp/does-not-exist:1", "transport": "sse"}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &pp,
        &mcpserver("crash", json!({"image": "ghcr.io/example/crashloop-mcp:1"})),
    )
    .await
    .unwrap();
    let o = wait_phase(&t, &ns, "pull", "Failed").await;
    let cond = ready_condition(&o);
    let reason = cond["reason"].as_str().unwrap();
    assert!(
        matches!(reason, "ErrImagePull" | "ImagePullBackOff"),
        "{cond}"
    );
    assert_eq!(cond["status"], "False");
    assert!(
        o.data["status"]["message"]
            .as_str()
            .unwrap()
            .contains("pull-0"),
        "{o:?}"
    );
    let o = wait_phase(&t, &ns, "crash", "Failed").await;
    let cond = ready_condition(&o);
    assert!(
        cond["reason"].as_str().unwrap().ends_with("BackOff"),
        "{cond}"
    );
    assert!(o.data["status"].get("url").is_none());
}

async fn pod_uids(t: &Target, ns: &str, name: &str) -> Vec<String> {
    let lp = ListParams::default().labels(&format!("toolhive-name={name}"));
    let mut v: Vec<String> = Api::<Pod>::namespaced(t.client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid)
        .collect();
    v.sort();
    v
}

async fn annotate(api: &Api<DynamicObject>, name: &str, ann: Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": ann}})),
    )
    .await
    .unwrap();
}

async fn restarted(t: &Target, ns: &str, before: &[String]) {
    wait_for("new pods after restart", t.budget(60.0), || async {
        let now = pod_uids(t, ns, "r").await;
        now.len() == 2 && now.iter().all(|u| !before.contains(u))
    })
    .await;
    wait_phase(t, ns, "r", "Ready").await;
}

/// Restart annotation (rolling, then immediate), processed once per timestamp; stdio replica
/// cap; scale to zero is Stopped; a deleted StatefulSet comes back; Terminating on delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_scale_and_delete() {
    let t = target().await;
    let ns = t.namespace("thv-restart").await;
    let api = mcpservers(&t, &ns);
    api.create(
        &PostParams::default(),
        &mcpserver("r", json!({"image": "ghcr.io/x/mcp:1"})),
    )
    .await
    .unwrap();
    wait_phase(&t, &ns, "r", "Ready").await;
    let before = pod_uids(&t, &ns, "r").await;
    assert_eq!(before.len(), 2, "proxy pod and MCP pod");
    annotate(
        &api,
        "r",
        json!({"mcpserver.toolhive.stacklok.dev/restarted-at": "2025-09-14T10:30:00Z"}),
    )
    .await;
    restarted(&t, &ns, &before).await;
    let o = api.get("r").await.unwrap();
    assert_eq!(
        o.metadata.annotations.unwrap()["mcpserver.toolhive.stacklok.dev/last-processed-restart"],
        "2025-09-14T10:30:00Z"
    );
    let before = pod_uids(&t, &ns, "r").await;
    annotate(&api, "r", json!({"mcpserver.toolhive.stacklok.dev/restarted-at": "2025-09-15T10:30:00Z", "mcpserver.toolhive.stacklok.dev/restart-strategy": "immediate"})).await;
    restarted(&t, &ns, &before).await;
    // an older timestamp is not processed
    let before = pod_uids(&t, &ns, "r").await;
    annotate(
        &api,
        "r",
        json!({"mcpserver.toolhive.stacklok.dev/restarted-at": "2025-01-01T00:00:00Z"}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(pod_uids(&t, &ns, "r").await, before);

    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let o = wait_phase(&t, &ns, "r", "Ready").await;
    let capped = o.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "StdioReplicaCapped" && c["status"] == "True");
    assert!(capped, "{:?}", o.data["status"]);
    let dep = Api::<Deployment>::namespaced(t.client.clone(), &ns)
        .get("r")
        .await
        .unwrap();
    assert_eq!(dep.spec.replicas, Some(1));

    let sts: Api<StatefulSet> = Api::namespaced(t.client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let gen_before = deps.get("r").await.unwrap().metadata.generation;
    sts.delete("r", &DeleteParams::default()).await.unwrap();
    wait_for("StatefulSet recreated", t.budget(30.0), || async {
        sts.get("r").await.is_ok()
    })
    .await;
    wait_phase(&t, &ns, "r", "Ready").await;
    let gen_after = deps.get("r").await.unwrap().metadata.generation;
    assert!(gen_after > gen_before, "the proxy Deployment was bounced");

    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    wait_phase(&t, &ns, "r", "Stopped").await;

    let rv = api
        .get("r")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    api.delete("r", &DeleteParams::default()).await.unwrap();
    let mut phases = Vec::new();
    while let Some(ev) = tokio::time::timeout(t.budget(30.0), events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        match ev {
            WatchEvent::Modified(o) => phases.push(o.data["status"]["phase"].clone()),
            WatchEvent::Deleted(_) => break,
            _ => {}
        }
    }
    assert!(phases.contains(&json!("Terminating")), "{phases:?}");
    wait_for("children collected", t.budget(30.0), || async {
        owned_objects(&t, &ns, "r").await == 0
    })
    .await;
}

/// The upstream CRD files load unchanged with `kubectl apply` (client-side and server-side) on
/// an emulator started without the operator; an example then shows in `kubectl get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_crds_load_unchanged() {
    let t = Target::emulator(20.0).await;
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let (ok, _, err) = t.kubectl(&["get", "mcpservers"]).await;
    assert!(
        !ok && err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    let servers = crds.join("crd-mcpservers.yaml");
    let proxies = crds.join("crd-mcpremoteproxies.yaml");
    kubectl_ok(&t, &["apply", "-f", servers.to_str().unwrap()]).await;
    kubectl_ok(
        &t,
        &["apply", "--server-side", "-f", proxies.to_str().unwrap()],
    )
    .await;
    let out = kubectl_ok(&t, &["get", "crds"]).await;
    assert!(
        out.contains("mcpservers.toolhive.stacklok.dev")
            && out.contains("mcpremoteproxies.toolhive.stacklok.dev"),
        "{out}"
    );
    kubectl_ok(&t, &["create", "namespace", "toolhive-system"]).await;
    let example = examples_dir().join("mcpserver_fetch.yaml");
    kubectl_ok(&t, &["apply", "-f", example.to_str().unwrap()]).await;
    let out = kubectl_ok(
        &t,
        &[
            "get",
            "mcpserver",
            "fetch",
            "-n",
            "toolhive-system",
            "-o",
            "jsonpath={.spec.transport}/{.spec.proxyPort}/{.spec.sessionAffinity}",
        ],
    )
    .await;
    assert_eq!(
        out, "streamable-http/8080/ClientIP",
        "schema defaults applied"
    );
    // no operator: nothing made of it
    let deps: Api<Deployment> = Api::namespaced(t.client.clone(), "toolhive-system");
    assert!(
        deps.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    kubectl_ok(&t, &["delete", "-f", servers.to_str().unwrap()]).await;
    kubectl_ok(&t, &["apply", "-f", servers.to_str().unwrap()]).await;
    let left = mcpservers(&t, "toolhive-system")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "deleting the CRD deleted its objects"
    );
}

/// MCPRemoteProxy: Pending while a referenced auth config is missing, then a Deployment and a
/// Service `mcp-<name>-remote-proxy`, Ready with the URL; deleting it collects both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_proxy_waits_for_its_auth_config() {
    let t = target().await;
    let ns = t.namespace("thv-remote").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(t.client.clone(), &ns, &remote_proxy_resource());
    let rp: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPRemoteProxy",
        "metadata": {"name": "rp"},
        "spec": {"remoteUrl": "https://mcp.example.com/api", "externalAuthConfigRef": {"name": "auth"}},
    }))
    .unwrap();
    api.create(&PostParams::default(), &rp).await.unwrap();
    let phase = |want: &'static str| {
        let api = api.clone();
        async move {
            api.get("rp")
                .await
                .is_ok_and(|o| o.data["status"]["phase"] == want)
        }
    };
    wait_for("remote proxy Pending", t.budget(30.0), || phase("Pending")).await;
    let o = api.get("rp").await.unwrap();
    assert_eq!(
        ready_condition(&o)["reason"],
        "MCPExternalAuthConfigNotFound"
    );
    let gvk = kube::api::GroupVersionKind::gvk(
        "toolhive.stacklok.dev",
        "v1beta1",
        "MCPExternalAuthConfig",
    );
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "mcpexternalauthconfigs");
    let auth: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPExternalAuthConfig",
        "metadata": {"name": "auth"}, "spec": {"type": "bearerToken"},
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(t.client.clone(), &ns, &ar)
        .create(&PostParams::default(), &auth)
        .await
        .unwrap();
    wait_for("remote proxy Ready", t.budget(60.0), || phase("Ready")).await;
    let o = api.get("rp").await.unwrap();
    let url = format!("http://mcp-rp-remote-proxy.{ns}.svc.cluster.local:8080");
    assert_eq!(o.data["status"]["url"], json!(url));
    let svc = Api::<Service>::namespaced(t.client.clone(), &ns);
    assert!(svc.get("mcp-rp-remote-proxy").await.is_ok());
    api.delete("rp", &DeleteParams::default()).await.unwrap();
    wait_for(
        "remote proxy children collected",
        t.budget(30.0),
        || async { owned_objects(&t, &ns, "rp").await == 0 },
    )
    .await;
}
