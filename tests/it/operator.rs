//! Catalog servers deployed through the ToolHive operator (`kube-emulator --toolhive-operator`:
//! the real `MCPServer`/`MCPRemoteProxy` CRDs, schema-validated with strict field validation,
//! and a simulated operator), and the native backend without it.
//!
//! The servers come from the real ToolHive catalog (`data/toolhive-registry.json`), synced
//! through the gateway's own registry sync; the custom resources are checked field by field.

use crate::common;
use crate::common::registry_server;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube_emulator::Emulator;
use serde_json::{Value, json};

const CANARY: &str = "CANARY-3b1f-github-token";

struct Env {
    _emu: Emulator,
    app: TestApp,
    kube: kube::Client,
    cluster: Value,
    _dir: tempfile::TempDir,
}

/// The emulator (with or without the operator), the gateway, the real catalog synced and the
/// cluster registered.
async fn env(operator: bool) -> Env {
    crate::common::install_crypto();
    let emu = Emulator::builder()
        .speed(20.0)
        .namespaces(["team"])
        .toolhive_operator(operator)
        .start()
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let app = TestApp::spawn_with(move |c| {
        c.serve.k8s.kubeconfig = Some(kubeconfig);
        c.serve.k8s.progress_deadline_seconds = 120;
        c.database.pool_size = 4;
        c.database.wait_ms = 10_000;
    })
    .await;
    let cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&emu.kubeconfig_yaml()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let kube = kube::Client::try_from(cfg).unwrap();
    sync_catalog(&app).await;
    let r = app
        .graphql(
            "mutation { registerCluster(input: {name: \"emu\", context: \"kube-emulator\"}) {
                id status capabilities } }",
            json!({}),
        )
        .await;
    assert_ok(&r);
    Env {
        _emu: emu,
        app,
        kube,
        cluster: r["data"]["registerCluster"].clone(),
        _dir: dir,
    }
}

async fn sync_catalog(app: &TestApp) {
    use registry_server::{RegistryServer, gql};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/toolhive-registry.json");
    let srv = RegistryServer::start().await;
    srv.state.set_custom(
        "toolhive",
        "application/json",
        std::fs::read_to_string(path).unwrap(),
    );
    let reg = gql::create(app, "toolhive", &srv.url("/custom/toolhive"), json!({})).await;
    assert_eq!(gql::sync(app, &reg).await["status"], "ACTIVE");
}

/// A server of the catalog by name.
async fn server(app: &TestApp, name: &str) -> String {
    app.db
        .scalar(&format!("SELECT id FROM servers WHERE name = '{name}'"))
        .await
        .unwrap_or_else(|| panic!("{name} is in the catalog"))
}

/// A server outside the catalog (for the failure scenarios, picked by image).
async fn seed_stdio(app: &TestApp, name: &str, image: &str) -> String {
    use diesel_async::SimpleAsyncConnection;
    app.db
        .conn()
        .await
        .batch_execute(&format!(
            "INSERT INTO servers (registry_id, name, original_name, image, transport)
             SELECT id, '{name}', '{name}', '{image}', 'stdio' FROM registries LIMIT 1;"
        ))
        .await
        .unwrap();
    server(app, name).await
}

const INSTANCE: &str = "id name status phase healthStatus healthReason endpoint configuration
    replicas { desired current ready } events { reason objectKind }";

async fn deploy(e: &Env, server: &str, extra: Value) -> Value {
    let mut input = json!({"serverId": server, "clusterId": e.cluster["id"], "namespace": "team"});
    input
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    e.app
        .graphql(
            "mutation($i: DeployServerInput!) { deployServer(input: $i) {
                id instanceId status } }",
            json!({"i": input}),
        )
        .await
}

/// Deploys and waits for the operation's end; returns (operation, instance id).
async fn deployed(e: &Env, server: &str, extra: Value) -> (Value, String) {
    let r = deploy(e, server, extra).await;
    assert_ok(&r);
    let d = &r["data"]["deployServer"];
    let o = wait_op(&e.app, d["id"].as_str().unwrap()).await;
    (o, d["instanceId"].as_str().unwrap().to_string())
}

async fn wait_op(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = app
            .graphql(
                "query($id: ID!) { deployment(id: $id) { id operation status
                    errors { reason message } steps { name status message } } }",
                json!({"id": id}),
            )
            .await;
        assert_ok(&r);
        let o = r["data"]["deployment"].clone();
        if matches!(
            o["status"].as_str(),
            Some("COMPLETED" | "FAILED" | "CANCELLED")
        ) {
            return o;
        }
        assert!(Instant::now() < deadline, "operation {id} not done: {o:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn instance(app: &TestApp, id: &str) -> Value {
    let r = app
        .graphql(
            &format!("query($id: ID!) {{ instance(id: $id) {{ {INSTANCE} }} }}"),
            json!({"id": id}),
        )
        .await;
    assert_ok(&r);
    r["data"]["instance"].clone()
}

async fn wait_instance(app: &TestApp, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = instance(app, id).await;
        if pred(&i) {
            return i;
        }
        assert!(Instant::now() < deadline, "instance {id}: {i:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn mutate(app: &TestApp, field: &str, args: &str, inst: &str) -> Value {
    let q = format!("mutation($id: ID!) {{ {field}(id: $id{args}) {{ id status }} }}");
    app.graphql(&q, json!({"id": inst})).await
}

/// Runs a lifecycle mutation and waits for its operation to complete.
async fn completed(app: &TestApp, field: &str, args: &str, inst: &str) -> Value {
    let r = mutate(app, field, args, inst).await;
    assert_ok(&r);
    let o = wait_op(app, r["data"][field]["id"].as_str().unwrap()).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{field}: {o:#}");
    o
}

fn resource(kind: &str) -> ApiResource {
    let plural = if kind == "MCPServer" {
        "mcpservers"
    } else {
        "mcpremoteproxies"
    };
    ApiResource {
        group: "toolhive.stacklok.dev".into(),
        version: "v1beta1".into(),
        api_version: "toolhive.stacklok.dev/v1beta1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

async fn cr(e: &Env, kind: &str, name: &str) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(e.kube.clone(), "team", &resource(kind))
        .get_opt(name)
        .await
        .unwrap()
}

fn instance_label(o: &DynamicObject) -> String {
    o.metadata.labels.as_ref().unwrap()["hivegraph.dev/instance"].clone()
}

fn uuid_of(global: &str) -> String {
    let (_, id) = hivegraph::ids::decode_any(global).expect("a global id");
    id.to_string()
}

fn assert_ready(i: &Value) {
    assert_eq!(i["status"], json!("RUNNING"), "{i:#}");
    assert_eq!(i["phase"], json!("READY"), "{i:#}");
    // The endpoint answers inside the cluster only: the gateway cannot probe it.
    assert_eq!(i["healthStatus"], json!("UNKNOWN"), "{i:#}");
}

#[tokio::test]
async fn stdio_http_and_remote_servers_run_through_the_operator() {
    let e = env(true).await;
    let caps = &e.cluster["capabilities"];
    for c in [
        "mcpservers.toolhive.stacklok.dev",
        "mcpremoteproxies.toolhive.stacklok.dev",
    ] {
        assert!(caps.as_array().unwrap().contains(&json!(c)), "{caps}");
    }

    // stdio: `time`
    let (o, time) = deployed(&e, &server(&e.app, "time").await, json!({})).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    let i = wait_instance(&e.app, &time, |i| i["endpoint"].is_string()).await;
    assert_ready(&i);
    assert_eq!(
        i["endpoint"],
        json!("http://mcp-time-proxy.team.svc.cluster.local:8080")
    );
    assert_eq!(i["replicas"]["ready"], json!(1));
    let c = cr(&e, "MCPServer", "time").await.expect("the MCPServer");
    assert_eq!(instance_label(&c), uuid_of(&time));
    assert_eq!(
        c.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "hivegraph"
    );
    let s = &c.data["spec"];
    assert_eq!(s["image"], json!("docker.io/mcp/time:latest"));
    assert_eq!(s["transport"], json!("stdio"));
    assert_eq!(s["proxyPort"], json!(8080));
    assert_eq!(s["replicas"], json!(1));
    assert!(s.get("mcpPort").is_none(), "{s}");
    assert!(s.get("env").is_none() && s.get("secrets").is_none(), "{s}");
    assert_eq!(
        s["permissionProfile"],
        json!({"type": "configmap", "name": "time-permissions", "key": "permissions.json"})
    );
    let cm = Api::<ConfigMap>::namespaced(e.kube.clone(), "team")
        .get("time-permissions")
        .await
        .unwrap();
    let profile: Value =
        serde_json::from_str(&cm.data.unwrap()["permissions.json"]).expect("JSON profile");
    assert_eq!(
        profile,
        json!({"network": {"outbound": {"insecure_allow_all": false, "allow_host": [],
                                        "allow_port": []}}})
    );
    // The operator's two workloads run it: the proxy Deployment and the MCP StatefulSet.
    assert!(
        Api::<StatefulSet>::namespaced(e.kube.clone(), "team")
            .get_opt("time")
            .await
            .unwrap()
            .is_some()
    );
    // A stdio server runs one process: scaling it to 2 is refused, and nothing changes.
    let r = mutate(&e.app, "scaleInstance", ", replicas: 2", &time).await;
    assert_eq!(error_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("stdio"),
        "{r}"
    );
    let c = cr(&e, "MCPServer", "time").await.unwrap();
    assert_eq!(c.data["spec"]["replicas"], json!(1));
    assert_eq!(
        e.app
            .db
            .scalar("SELECT count(*)::text FROM deployments WHERE operation = 'scale'")
            .await
            .as_deref(),
        Some("0")
    );

    // streamable-http: `fetch`
    let (o, fetch) = deployed(&e, &server(&e.app, "fetch").await, json!({})).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    let i = wait_instance(&e.app, &fetch, |i| i["endpoint"].is_string()).await;
    assert_ready(&i);
    assert_eq!(
        i["endpoint"],
        json!("http://mcp-fetch-proxy.team.svc.cluster.local:8080")
    );
    let s = cr(&e, "MCPServer", "fetch").await.unwrap().data["spec"].clone();
    assert_eq!(
        s["image"],
        json!("ghcr.io/stackloklabs/gofetch/server:1.0.3")
    );
    assert_eq!(s["transport"], json!("streamable-http"));
    assert_eq!(s["mcpPort"], json!(8080));
    assert_eq!(s["proxyPort"], json!(8080));
    assert_eq!(
        (s["replicas"].clone(), s["backendReplicas"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(s["resources"]["limits"]["cpu"], json!("500m"), "{s}");

    // remote: `canva`
    let (o, canva) = deployed(&e, &server(&e.app, "canva").await, json!({})).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    let i = wait_instance(&e.app, &canva, |i| i["endpoint"].is_string()).await;
    assert_ready(&i);
    assert_eq!(
        i["endpoint"],
        json!("http://mcp-canva-remote-proxy.team.svc.cluster.local:8080")
    );
    let c = cr(&e, "MCPRemoteProxy", "canva").await.expect("the proxy");
    assert_eq!(instance_label(&c), uuid_of(&canva));
    let s = &c.data["spec"];
    assert_eq!(s["remoteUrl"], json!("https://mcp.canva.com/mcp"));
    assert_eq!(s["transport"], json!("streamable-http"));
    assert_eq!(s["proxyPort"], json!(8080));
    assert_eq!(s["replicas"], json!(1));
}

#[tokio::test]
async fn a_secret_token_lives_only_in_the_gateways_secret() {
    let e = env(true).await;
    let (o, gh) = deployed(
        &e,
        &server(&e.app, "github").await,
        json!({"env": [{"name": "GITHUB_PERSONAL_ACCESS_TOKEN", "value": CANARY},
                       {"name": "GITHUB_TOOLSETS", "value": "repos"}]}),
    )
    .await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    let c = cr(&e, "MCPServer", "github").await.unwrap();
    let text = serde_json::to_string(&c).unwrap();
    assert!(!text.contains(CANARY), "the token is not in the CR: {text}");
    let s = &c.data["spec"];
    assert_eq!(
        s["image"],
        json!("ghcr.io/github/github-mcp-server:v0.31.0")
    );
    assert_eq!(
        s["secrets"],
        json!([{"name": "github-env", "key": "GITHUB_PERSONAL_ACCESS_TOKEN",
                "targetEnvName": "GITHUB_PERSONAL_ACCESS_TOKEN"}])
    );
    assert_eq!(
        s["env"],
        json!([{"name": "GITHUB_TOOLSETS", "value": "repos"}])
    );
    let p = &s["permissionProfile"];
    assert_eq!(p["name"], json!("github-permissions"));
    let secret = Api::<Secret>::namespaced(e.kube.clone(), "team")
        .get("github-env")
        .await
        .unwrap();
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["hivegraph.dev/instance"], uuid_of(&gh));
    let data = secret.data.unwrap();
    assert_eq!(
        data["GITHUB_PERSONAL_ACCESS_TOKEN"].0,
        CANARY.as_bytes(),
        "the Secret holds the token"
    );
    // Nowhere else: not in the instance, the operation or the database.
    let i = instance(&e.app, &gh).await;
    assert!(!i.to_string().contains(CANARY));
    let dumped = e
        .app
        .db
        .scalar(
            "SELECT string_agg(t::text, ' ') FROM (SELECT configuration::text AS t FROM instances
             UNION ALL SELECT parameters::text FROM deployments) x",
        )
        .await
        .unwrap();
    assert!(!dumped.contains(CANARY));
    // The proxy's pods get the value through the Secret reference, not the CR.
    let sts = Api::<StatefulSet>::namespaced(e.kube.clone(), "team")
        .get("github")
        .await
        .unwrap();
    let env = serde_json::to_string(&sts.spec.template.spec.unwrap().containers[0].env).unwrap();
    assert!(env.contains("github-env") && !env.contains(CANARY), "{env}");

    // Changes made outside the gateway show up: the resource deleted by hand ends the instance.
    Api::<DynamicObject>::namespaced_with(e.kube.clone(), "team", &resource("MCPServer"))
        .delete("github", &Default::default())
        .await
        .unwrap();
    wait_instance(&e.app, &gh, |i| i["status"] == json!("TERMINATED")).await;
}

#[tokio::test]
async fn scale_restart_rollback_and_delete_through_the_operator() {
    let e = env(true).await;
    let (o, fetch) = deployed(&e, &server(&e.app, "fetch").await, json!({})).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");

    completed(&e.app, "scaleInstance", ", replicas: 2", &fetch).await;
    let s = cr(&e, "MCPServer", "fetch").await.unwrap().data["spec"].clone();
    assert_eq!(
        (s["replicas"].clone(), s["backendReplicas"].clone()),
        (json!(2), json!(2))
    );
    let i = wait_instance(&e.app, &fetch, |i| i["replicas"]["ready"] == json!(2)).await;
    assert_eq!(i["configuration"]["replicas"], json!(2));

    let before = Api::<Pod>::namespaced(e.kube.clone(), "team")
        .list(&ListParams::default().labels("toolhive-name=fetch"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect::<Vec<_>>();
    completed(&e.app, "restartInstance", "", &fetch).await;
    let c = cr(&e, "MCPServer", "fetch").await.unwrap();
    let at =
        &c.metadata.annotations.as_ref().unwrap()["mcpserver.toolhive.stacklok.dev/restarted-at"];
    assert!(at.ends_with('Z'), "RFC 3339: {at}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = Api::<Pod>::namespaced(e.kube.clone(), "team")
            .list(&ListParams::default().labels("toolhive-name=fetch"))
            .await
            .unwrap()
            .items;
        let fresh = pods
            .iter()
            .filter(|p| !before.contains(p.metadata.uid.as_ref().unwrap()))
            .count();
        if fresh >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the operator restarted the pods");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Rollback re-applies the configuration before the last change (the scale).
    completed(&e.app, "rollbackInstance", "", &fetch).await;
    let s = cr(&e, "MCPServer", "fetch").await.unwrap().data["spec"].clone();
    assert_eq!(
        (s["replicas"].clone(), s["backendReplicas"].clone()),
        (json!(1), json!(1))
    );
    let i = instance(&e.app, &fetch).await;
    assert_eq!(i["configuration"]["replicas"], json!(1));

    completed(&e.app, "deleteInstance", "", &fetch).await;
    let i = instance(&e.app, &fetch).await;
    assert_eq!(i["status"], json!("TERMINATED"));
    assert!(i["endpoint"].is_null());
    assert!(cr(&e, "MCPServer", "fetch").await.is_none());
    let ns = "team";
    assert!(
        Api::<ConfigMap>::namespaced(e.kube.clone(), ns)
            .get_opt("fetch-permissions")
            .await
            .unwrap()
            .is_none()
    );
    // The operator's workloads went with the resource: nothing is left behind.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = Api::<Pod>::namespaced(e.kube.clone(), ns)
            .list(&ListParams::default().labels("toolhive-name=fetch"))
            .await
            .unwrap()
            .items
            .len();
        let deps = Api::<Deployment>::namespaced(e.kube.clone(), ns)
            .get_opt("fetch")
            .await
            .unwrap();
        let sts = Api::<StatefulSet>::namespaced(e.kube.clone(), ns)
            .get_opt("fetch")
            .await
            .unwrap();
        let svc = Api::<Service>::namespaced(e.kube.clone(), ns)
            .get_opt("mcp-fetch-proxy")
            .await
            .unwrap();
        if pods == 0 && deps.is_none() && sts.is_none() && svc.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {pods} pods");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fails_with(image: &str, reasons: &[&str]) {
    let e = env(true).await;
    let server = seed_stdio(&e.app, "bad", image).await;
    let (o, inst) = deployed(&e, &server, json!({})).await;
    assert_eq!(o["status"], json!("FAILED"), "{o:#}");
    let reason = o["errors"][0]["reason"].as_str().unwrap();
    assert!(
        reasons.contains(&reason),
        "{reason} not in {reasons:?}: {o:#}"
    );
    let i = wait_instance(&e.app, &inst, |i| i["status"] == json!("FAILED")).await;
    assert_eq!(i["healthStatus"], json!("UNHEALTHY"));
    let why = i["healthReason"].as_str().unwrap();
    assert!(reasons.iter().any(|r| why.contains(r)), "{why}");
}

#[tokio::test]
async fn an_image_pull_failure_ends_failed_with_the_reason() {
    fails_with(
        "ghcr.io/example/does-not-exist:1",
        &["ErrImagePull", "ImagePullBackOff"],
    )
    .await;
}

#[tokio::test]
async fn a_crash_loop_ends_failed_with_the_reason() {
    fails_with("ghcr.io/example/crashloop:1", &["CrashLoopBackOff"]).await;
}

// ---------------------------------------------------------------------------------------------
// without the operator
// ---------------------------------------------------------------------------------------------

async fn nothing_created(e: &Env) {
    assert_eq!(e.app.db.count("instances").await, 0);
    assert_eq!(e.app.db.count("deployments").await, 0);
    let deps = Api::<Deployment>::namespaced(e.kube.clone(), "team")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(deps.items.is_empty());
    let ours = ListParams::default().labels("app.kubernetes.io/managed-by=hivegraph");
    let secrets = Api::<Secret>::namespaced(e.kube.clone(), "team")
        .list(&ours)
        .await
        .unwrap();
    assert!(secrets.items.is_empty());
}

#[tokio::test]
async fn without_the_operator_stdio_is_refused_and_http_runs_hardened() {
    let e = env(false).await;
    assert!(
        !e.cluster["capabilities"]
            .to_string()
            .contains("mcpservers.toolhive.stacklok.dev"),
        "{}",
        e.cluster
    );
    let r = deploy(&e, &server(&e.app, "time").await, json!({})).await;
    assert_eq!(error_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    let ext = &r["errors"][0]["extensions"];
    assert_eq!(ext["reason"], json!("STDIO_NEEDS_TOOLHIVE_OPERATOR"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ToolHive operator"),
        "{r}"
    );
    let r = deploy(
        &e,
        &server(&e.app, "github").await,
        json!({"env": [{"name": "GITHUB_PERSONAL_ACCESS_TOKEN", "value": CANARY}]}),
    )
    .await;
    assert_eq!(
        r["errors"][0]["extensions"]["reason"],
        json!("STDIO_NEEDS_TOOLHIVE_OPERATOR")
    );
    let r = deploy(&e, &server(&e.app, "canva").await, json!({})).await;
    assert_eq!(
        r["errors"][0]["extensions"]["reason"],
        json!("REMOTE_NEEDS_TOOLHIVE_OPERATOR"),
        "{r}"
    );
    nothing_created(&e).await;

    let (o, fetch) = deployed(&e, &server(&e.app, "fetch").await, json!({})).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    let i = wait_instance(&e.app, &fetch, |i| i["endpoint"].is_string()).await;
    assert_eq!(
        i["endpoint"],
        json!("http://fetch.team.svc.cluster.local:8080/mcp")
    );
    let d = Api::<Deployment>::namespaced(e.kube.clone(), "team")
        .get("fetch")
        .await
        .unwrap();
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    for probe in [&c.readiness_probe, &c.liveness_probe] {
        let p = probe.clone().expect("probed");
        assert_eq!(
            p.tcp_socket.unwrap().port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("mcp".into())
        );
    }
}

#[tokio::test]
async fn without_the_operator_unenforceable_hosts_are_said_so() {
    let e = env(false).await;
    let (o, osv) = deployed(&e, &server(&e.app, "osv").await, json!({})).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    let i = instance(&e.app, &osv).await;
    let note = i["configuration"]["egressNote"].as_str().expect("a note");
    assert!(
        note.contains("api.osv.dev") && note.contains("not enforced"),
        "{note}"
    );
    let np =
        Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(e.kube.clone(), "team")
            .get("osv")
            .await
            .unwrap();
    let egress = serde_json::to_value(np.spec.unwrap().egress).unwrap();
    assert_eq!(
        egress[1]["ports"],
        json!([{"port": 443, "protocol": "TCP"}]),
        "{egress}"
    );
}

#[tokio::test]
async fn a_foreign_service_named_like_the_instance_is_never_taken_over() {
    let e = env(false).await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "fetch", "labels": {"app": "someone-else"}},
        "spec": {"selector": {"app": "someone-else"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    let api = Api::<Service>::namespaced(e.kube.clone(), "team");
    let before = api.create(&PostParams::default(), &svc).await.unwrap();
    let r = deploy(&e, &server(&e.app, "fetch").await, json!({})).await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r}");
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("Service team/fetch"), "{msg}");
    nothing_created(&e).await;
    let after = api.get("fetch").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.metadata.labels, before.metadata.labels);
}
