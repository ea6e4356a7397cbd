//! Clusters, deployments and instances against the in-process Kubernetes API emulator
//! (kube-emulator, real HTTP through kube-rs), at a fast simulated speed.
//!
//! Each test checks the instance (status, phase, replicas, health) and the Deployment operation
//! record along the way, and what exists in the cluster.

use crate::common;
use crate::common::registry_server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube_emulator::{AccessPolicy, Emulator};
use serde_json::{Value, json};

const SPEED: f64 = 20.0;
const CANARY: &str = "CANARY-5f0d7c8e-secret-value";

struct Env {
    emu: Emulator,
    app: TestApp,
    kube: kube::Client,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

async fn env_with(
    build: impl FnOnce(kube_emulator::EmulatorBuilder) -> kube_emulator::EmulatorBuilder,
) -> Env {
    crate::common::install_crypto();
    let emu = build(Emulator::builder().speed(SPEED).namespaces(["team"]))
        .start()
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kubeconfig.clone();
    let app = TestApp::spawn_with(move |c| {
        c.serve.k8s.kubeconfig = Some(kc);
        c.serve.k8s.progress_deadline_seconds = 120;
        // Many tests run at once against one PostgreSQL (max_connections 100).
        c.database.pool_size = 4;
        // Builds of the rest of the workspace share these two cores: be patient with
        // connection set-up.
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
    Env {
        emu,
        app,
        kube,
        kubeconfig,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(|b| b).await
}

/// A server row: `image` picks the emulator's simulated lifecycle.
async fn seed_server(app: &TestApp, name: &str, image: &str, transport: &str) -> String {
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    c.batch_execute(&format!(
        "INSERT INTO registries (name, url) VALUES ('reg-{name}', 'https://example.com/{name}');
         INSERT INTO servers (registry_id, name, original_name, image, transport,
                              deployment_requirements, network_permissions)
         SELECT id, '{name}', 'io.example/{name}', '{image}', '{transport}',
           '{{\"envVars\": [{{\"name\": \"API_TOKEN\", \"required\": true, \"secret\": true}},
                            {{\"name\": \"LOG_LEVEL\", \"required\": false, \"default\": \"info\"}}],
             \"args\": [\"--serve\"], \"targetPort\": 9090}}'::jsonb,
           '{{\"outbound\": {{\"allowHost\": [\"api.example.com\"], \"allowPort\": [443],
                              \"insecureAllowAll\": false}}}}'::jsonb
         FROM registries WHERE name = 'reg-{name}';"
    ))
    .await
    .unwrap();
    app.db
        .scalar(&format!("SELECT id FROM servers WHERE name = '{name}'"))
        .await
        .unwrap()
}

async fn register(app: &TestApp) -> Value {
    let r = app
        .graphql(
            "mutation($i: RegisterClusterInput!) { registerCluster(input: $i) {
                id name endpoint context status version capabilities resourceQuota accessLevel
                simulated lastCheckedAt lastError } }",
            json!({"i": {"name": "emu", "context": "kube-emulator"}}),
        )
        .await;
    assert_ok(&r);
    r["data"]["registerCluster"].clone()
}

const OP_FIELDS: &str = "id operation status initiatedBy startedAt completedAt parameters
    steps { name status at message } errors { reason message at } rollbackInfo instanceId
    logs { at level message }";
const INSTANCE_FIELDS: &str = "id name namespace status phase replicas { desired current ready }
    healthStatus healthReason deployedAt configuration
    lastWarning { type reason message count objectKind objectName }
    events { type reason message count firstSeen lastSeen objectKind objectName }";

async fn deploy(app: &TestApp, input: Value) -> Value {
    app.graphql(
        &format!(
            "mutation($i: DeployServerInput!) {{ deployServer(input: $i) {{ {OP_FIELDS} }} }}"
        ),
        json!({"i": input}),
    )
    .await
}

async fn op(app: &TestApp, id: &str) -> Value {
    let r = app
        .graphql(
            &format!("query($id: ID!) {{ deployment(id: $id) {{ {OP_FIELDS} }} }}"),
            json!({"id": id}),
        )
        .await;
    assert_ok(&r);
    r["data"]["deployment"].clone()
}

async fn instance(app: &TestApp, id: &str) -> Value {
    let r = app
        .graphql(
            &format!("query($id: ID!) {{ instance(id: $id) {{ {INSTANCE_FIELDS} }} }}"),
            json!({"id": id}),
        )
        .await;
    assert_ok(&r);
    r["data"]["instance"].clone()
}

/// Polls the operation until it ends; returns it with every status seen on the way.
async fn wait_op(app: &TestApp, id: &str, secs: u64) -> (Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let o = op(app, id).await;
        let st = o["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&st) {
            seen.push(st.clone());
        }
        if matches!(st.as_str(), "COMPLETED" | "FAILED" | "CANCELLED") {
            return (o, seen);
        }
        assert!(
            Instant::now() < deadline,
            "operation {id} still {st} after {secs}s: {o:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the instance until `pred` holds.
async fn wait_instance(app: &TestApp, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let i = instance(app, id).await;
        if pred(&i) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "instance {id} did not reach the expected state: {i:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn replicas(i: &Value) -> (i64, i64, i64) {
    (
        i["replicas"]["desired"].as_i64().unwrap(),
        i["replicas"]["current"].as_i64().unwrap(),
        i["replicas"]["ready"].as_i64().unwrap(),
    )
}

fn step_names(o: &Value) -> Vec<String> {
    o["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn assert_completed(o: &Value, seen: &[String], operation: &str) {
    assert_eq!(o["operation"], json!(operation), "{o:#}");
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    assert!(o["completedAt"].is_string(), "completedAt set: {o:#}");
    assert_eq!(o["errors"], json!([]));
    assert_eq!(seen.last().map(String::as_str), Some("COMPLETED"));
    let steps = step_names(o);
    assert!(steps.contains(&"start:succeeded".to_string()), "{steps:?}");
    assert_eq!(steps.last().unwrap(), "complete:succeeded", "{steps:?}");
    assert!(!o["logs"].as_array().unwrap().is_empty(), "step logs kept");
}

fn healthy_input(server: &str, cluster: &str) -> Value {
    json!({
        "serverId": server, "clusterId": cluster, "namespace": "team", "name": "web",
        "env": [{"name": "API_TOKEN", "value": CANARY}, {"name": "EXTRA", "value": "1"}],
        "args": ["--verbose"],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    })
}

async fn deployments_in(kube: &kube::Client, ns: &str) -> usize {
    Api::<Deployment>::namespaced(kube.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn cluster_is_checked_and_follows_the_api_server() {
    let e = env().await;
    let app = &e.app;
    let c = register(app).await;
    assert_eq!(c["status"], json!("CONNECTED"), "{c:#}");
    assert_eq!(c["version"], json!("v1.33.0"));
    assert_eq!(c["accessLevel"], json!("ADMIN"));
    assert_eq!(c["simulated"], json!(true));
    assert_eq!(c["context"], json!("kube-emulator"));
    assert_eq!(c["endpoint"], json!(e.emu.url()));
    assert!(c["lastCheckedAt"].is_string());
    let caps: Vec<&str> = c["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"apps/v1") && caps.contains(&"networking.k8s.io/v1"),
        "{caps:?}"
    );
    assert!(caps.contains(&"metrics.k8s.io/v1beta1"), "{caps:?}");
    assert_eq!(c["resourceQuota"]["nodes"].as_array().unwrap().len(), 1);
    let id = c["id"].as_str().unwrap().to_string();

    // Bad input: nothing written.
    for (input, field) in [
        (json!({"name": "bad name!"}), "name"),
        (json!({"name": "emu"}), "name"),
        (json!({"name": "other", "context": "nope"}), "context"),
        (
            json!({"name": "other", "context": "kube-emulator", "inCluster": true}),
            "context",
        ),
    ] {
        let r = app
            .graphql(
                "mutation($i: RegisterClusterInput!) { registerCluster(input: $i) { id } }",
                json!({"i": input}),
            )
            .await;
        assert_eq!(error_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
        assert_eq!(error_field(&r).as_deref(), Some(field), "{r}");
    }
    assert_eq!(app.db.count("clusters").await, 1);

    let refresh = |id: String| async move {
        let r = app
            .graphql(
                "mutation($id: ID!) { refreshCluster(id: $id) { status lastError lastCheckedAt accessLevel version } }",
                json!({"id": id}),
            )
            .await;
        assert_ok(&r);
        r["data"]["refreshCluster"].clone()
    };
    // Credentials revoked: UNAUTHORIZED; the gateway keeps serving.
    e.emu.set_reject_credentials(true);
    let r = refresh(id.clone()).await;
    assert_eq!(r["status"], json!("UNAUTHORIZED"), "{r:#}");
    assert_eq!(r["version"], json!("v1.33.0"), "last known version kept");
    e.emu.set_reject_credentials(false);
    assert_eq!(refresh(id.clone()).await["status"], json!("CONNECTED"));
    // API server gone: DISCONNECTED, found by the periodic check too.
    e.emu.set_outage(true);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app
            .graphql(
                "query($id: ID!) { cluster(id: $id) { status lastError } }",
                json!({"id": id}),
            )
            .await;
        if r["data"]["cluster"]["status"] == json!("DISCONNECTED") {
            assert!(r["data"]["cluster"]["lastError"].is_string());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "periodic check did not notice the outage: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(refresh(id.clone()).await["status"], json!("DISCONNECTED"));
    e.emu.set_outage(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = refresh(id.clone()).await;
        if r["status"] == json!("CONNECTED") {
            break;
        }
        assert!(Instant::now() < deadline, "cluster did not come back: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = &e.kubeconfig;
}

#[tokio::test]
async fn clusters_older_than_the_minimum_are_refused() {
    let e = env_with(|b| b.version(1, 20, 2)).await;
    let r = e
        .app
        .graphql(
            "mutation { registerCluster(input: {name: \"old\", context: \"kube-emulator\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    assert_eq!(error_field(&r).as_deref(), Some("context"));
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("v1.20.2") && msg.contains("1.24"), "{msg}");
    assert_eq!(e.app.db.count("clusters").await, 0);
}

#[tokio::test]
async fn bad_deploy_input_creates_nothing() {
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "fetch", "ghcr.io/example/fetch:1", "http").await;
    let ok = healthy_input(&server, &cluster);
    let with = |k: &str, v: Value| {
        let mut i = ok.clone();
        i[k] = v;
        i
    };
    let cases = [
        (
            with("serverId", json!(uuid::Uuid::new_v4().to_string())),
            "BAD_USER_INPUT",
            Some("serverId"),
        ),
        (
            with("clusterId", json!(uuid::Uuid::new_v4().to_string())),
            "BAD_USER_INPUT",
            Some("clusterId"),
        ),
        (
            with("namespace", json!("missing")),
            "BAD_USER_INPUT",
            Some("namespace"),
        ),
        (
            with("namespace", json!("Bad_NS")),
            "BAD_USER_INPUT",
            Some("namespace"),
        ),
        (
            with("name", json!("Bad_Name")),
            "BAD_USER_INPUT",
            Some("name"),
        ),
        (
            with("name", json!("a".repeat(64))),
            "BAD_USER_INPUT",
            Some("name"),
        ),
        (
            with("env", json!([{"name": "EXTRA", "value": "1"}])),
            "BAD_USER_INPUT",
            Some("env"),
        ),
        (
            with("env", json!([{"name": "API_TOKEN", "value": ""}])),
            "BAD_USER_INPUT",
            Some("env"),
        ),
        (
            with("replicas", json!(-1)),
            "BAD_USER_INPUT",
            Some("replicas"),
        ),
        (
            with("resources", json!({"requests": {"cpu": "lots"}})),
            "BAD_USER_INPUT",
            Some("resources"),
        ),
    ];
    for (input, code, field) in cases {
        let r = deploy(app, input.clone()).await;
        assert_eq!(error_code(&r).as_deref(), Some(code), "{input}: {r}");
        assert_eq!(error_field(&r).as_deref(), field, "{input}: {r}");
    }
    assert_eq!(app.db.count("instances").await, 0);
    assert_eq!(app.db.count("deployments").await, 0);
    assert_eq!(deployments_in(&e.kube, "team").await, 0);
    let secrets = Api::<Secret>::namespaced(e.kube.clone(), "team")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(secrets.items.is_empty());
    // A name already used by an object the gateway does not manage.
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "taken"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    Api::<Deployment>::namespaced(e.kube.clone(), "team")
        .patch("taken", &PatchParams::apply("test"), &Patch::Apply(&d))
        .await
        .unwrap();
    // (CONFLICT naming the object: the gateway never takes over what it did not create.)
    let r = deploy(app, with("name", json!("taken"))).await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r}");
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("Deployment team/taken"), "{msg}");
    assert_eq!(app.db.count("instances").await, 0);
}

#[tokio::test]
async fn read_only_access_refuses_deploys() {
    let e = env_with(|b| b.policy(AccessPolicy::ReadOnly)).await;
    let app = &e.app;
    let c = register(app).await;
    assert_eq!(c["accessLevel"], json!("READ_ONLY"), "{c:#}");
    let cluster = c["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "fetch", "ghcr.io/example/fetch:1", "http").await;
    let r = deploy(app, healthy_input(&server, &cluster)).await;
    assert_eq!(error_code(&r).as_deref(), Some("FORBIDDEN"), "{r}");
    assert_eq!(app.db.count("instances").await, 0);
    assert_eq!(app.db.count("deployments").await, 0);
    assert_eq!(deployments_in(&e.kube, "team").await, 0);
    // Namespaced deploy rights elsewhere give DEPLOY, but not in this namespace.
    e.emu
        .set_policy(AccessPolicy::DeployOnly(vec!["default".into()]));
    let r = app
        .graphql(
            "mutation($id: ID!) { refreshCluster(id: $id) { accessLevel } }",
            json!({"id": cluster}),
        )
        .await;
    assert_eq!(
        r["data"]["refreshCluster"]["accessLevel"],
        json!("DEPLOY"),
        "{r}"
    );
    let r = deploy(app, healthy_input(&server, &cluster)).await;
    assert_eq!(error_code(&r).as_deref(), Some("FORBIDDEN"), "{r}");
    assert_eq!(app.db.count("instances").await, 0);
}

#[tokio::test]
async fn healthy_deploy_then_scale_restart_rollback_delete() {
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "fetch", "ghcr.io/example/fetch:1", "http").await;

    // --- deploy
    let r = deploy(app, healthy_input(&server, &cluster)).await;
    assert_ok(&r);
    let d = &r["data"]["deployServer"];
    assert_eq!(d["status"], json!("INITIATED"), "returned at once: {d:#}");
    assert_eq!(d["operation"], json!("DEPLOY"));
    assert!(d["completedAt"].is_null());
    let op_id = d["id"].as_str().unwrap().to_string();
    let inst_id = d["instanceId"].as_str().unwrap().to_string();
    let i = instance(app, &inst_id).await;
    assert!(
        matches!(i["status"].as_str(), Some("PENDING" | "RUNNING")),
        "{i:#}"
    );
    let (o, seen) = wait_op(app, &op_id, 30).await;
    assert_completed(&o, &seen, "DEPLOY");
    let steps = step_names(&o);
    for s in [
        "validate:succeeded",
        "check-secret:succeeded",
        "apply-deployment:succeeded",
        "apply-service:succeeded",
        "apply-network-policy:succeeded",
    ] {
        assert!(steps.contains(&s.to_string()), "{s} in {steps:?}");
    }
    let i = wait_instance(app, &inst_id, 10, |i| i["status"] == json!("RUNNING")).await;
    assert_eq!(i["phase"], json!("READY"), "{i:#}");
    assert_eq!(replicas(&i), (1, 1, 1));
    assert_eq!(i["healthStatus"], json!("HEALTHY"));
    assert!(
        i["healthReason"]
            .as_str()
            .unwrap()
            .contains("successfully rolled out")
    );
    assert!(i["deployedAt"].is_string());
    assert!(
        !i["events"].as_array().unwrap().is_empty(),
        "events recorded: {i:#}"
    );

    // What is in the cluster: the secret value only in the Secret.
    let dep = Api::<Deployment>::namespaced(e.kube.clone(), "team")
        .get("web")
        .await
        .unwrap();
    let dep_json = serde_json::to_string(&dep).unwrap();
    assert!(!dep_json.contains(CANARY), "secret value in the Deployment");
    assert!(
        dep_json.contains("secretKeyRef")
            && dep_json.contains("--serve")
            && dep_json.contains("--verbose")
    );
    assert!(dep_json.contains("LOG_LEVEL"), "defaults applied");
    let sec = Api::<Secret>::namespaced(e.kube.clone(), "team")
        .get("web-env")
        .await
        .unwrap();
    assert_eq!(sec.data.unwrap()["API_TOKEN"].0, CANARY.as_bytes());
    let svc = Api::<Service>::namespaced(e.kube.clone(), "team")
        .get("web")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 9090);
    let np = Api::<NetworkPolicy>::namespaced(e.kube.clone(), "team")
        .get("web")
        .await
        .unwrap();
    assert!(serde_json::to_string(&np).unwrap().contains("443"));
    // ...and never in the database.
    for (table, col) in [
        ("instances", "configuration"),
        ("deployments", "parameters"),
        ("deployments", "steps"),
        ("deployment_logs", "message"),
        ("audit_log", "details"),
    ] {
        let n = app
            .db
            .scalar(&format!(
                "SELECT count(*) FROM {table} WHERE {col}::text LIKE '%{CANARY}%'"
            ))
            .await
            .unwrap();
        assert_eq!(n, "0", "secret value in {table}.{col}");
    }

    // Logs through the API (cached).
    let r = app
        .graphql(
            "query($id: ID!) { instance(id: $id) { logs(tailLines: 5) { available reason pod container lines } } }",
            json!({"id": inst_id}),
        )
        .await;
    assert_ok(&r);
    let logs = &r["data"]["instance"]["logs"];
    assert_eq!(logs["available"], json!(true), "{logs:#}");
    assert_eq!(logs["container"], json!("mcp"));
    let n = logs["lines"].as_array().unwrap().len();
    assert!((1..=5).contains(&n), "{logs:#}");

    // A finished operation cannot be cancelled.
    let r = app
        .graphql(
            "mutation($id: ID!) { cancelDeployment(id: $id) { id } }",
            json!({"id": op_id}),
        )
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r}");

    // --- scale to 3
    let r = app
        .graphql(
            &format!(
                "mutation($id: ID!) {{ scaleInstance(id: $id, replicas: 3) {{ {OP_FIELDS} }} }}"
            ),
            json!({"id": inst_id}),
        )
        .await;
    assert_ok(&r);
    let s = &r["data"]["scaleInstance"];
    assert_eq!(s["status"], json!("INITIATED"));
    assert_eq!(s["rollbackInfo"]["previousReplicas"], json!(1));
    // One operation at a time.
    let r2 = app
        .graphql(
            "mutation($id: ID!) { restartInstance(id: $id) { id } }",
            json!({"id": inst_id}),
        )
        .await;
    assert_eq!(error_code(&r2).as_deref(), Some("CONFLICT"), "{r2}");
    let (o, seen) = wait_op(app, s["id"].as_str().unwrap(), 30).await;
    assert_completed(&o, &seen, "SCALE");
    let i = wait_instance(app, &inst_id, 10, |i| replicas(i) == (3, 3, 3)).await;
    assert_eq!(
        (
            i["status"].as_str(),
            i["phase"].as_str(),
            i["healthStatus"].as_str()
        ),
        (Some("RUNNING"), Some("READY"), Some("HEALTHY")),
        "{i:#}"
    );

    // --- restart
    let r = app
        .graphql(
            &format!("mutation($id: ID!) {{ restartInstance(id: $id) {{ {OP_FIELDS} }} }}"),
            json!({"id": inst_id}),
        )
        .await;
    assert_ok(&r);
    let (o, seen) = wait_op(
        app,
        r["data"]["restartInstance"]["id"].as_str().unwrap(),
        30,
    )
    .await;
    assert_completed(&o, &seen, "RESTART");
    let dep = Api::<Deployment>::namespaced(e.kube.clone(), "team")
        .get("web")
        .await
        .unwrap();
    let ann = dep
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap_or_default();
    assert!(ann.contains_key("kubectl.kubernetes.io/restartedAt"));
    assert_eq!(
        dep.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let i = wait_instance(app, &inst_id, 10, |i| {
        i["healthStatus"] == json!("HEALTHY") && replicas(i) == (3, 3, 3)
    })
    .await;
    assert_eq!(i["phase"], json!("READY"));

    // --- rollback to revision 1
    let r = app
        .graphql(
            &format!("mutation($id: ID!) {{ rollbackInstance(id: $id) {{ {OP_FIELDS} }} }}"),
            json!({"id": inst_id}),
        )
        .await;
    assert_ok(&r);
    let rb = &r["data"]["rollbackInstance"];
    assert_eq!(
        rb["rollbackInfo"],
        json!({"previousRevision": 2, "toRevision": 1}),
        "{rb:#}"
    );
    let (o, seen) = wait_op(app, rb["id"].as_str().unwrap(), 30).await;
    assert_completed(&o, &seen, "ROLLBACK");
    let dep = Api::<Deployment>::namespaced(e.kube.clone(), "team")
        .get("web")
        .await
        .unwrap();
    let ann = dep
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap_or_default();
    assert!(
        !ann.contains_key("kubectl.kubernetes.io/restartedAt"),
        "template of revision 1 restored"
    );
    assert_eq!(
        dep.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );
    let i = wait_instance(app, &inst_id, 10, |i| {
        i["status"] == json!("RUNNING") && replicas(i) == (3, 3, 3) && i["phase"] == json!("READY")
    })
    .await;
    assert_eq!(i["healthStatus"], json!("HEALTHY"));

    // --- delete
    let r = app
        .graphql(
            &format!("mutation($id: ID!) {{ deleteInstance(id: $id) {{ {OP_FIELDS} }} }}"),
            json!({"id": inst_id}),
        )
        .await;
    assert_ok(&r);
    let (o, seen) = wait_op(app, r["data"]["deleteInstance"]["id"].as_str().unwrap(), 30).await;
    assert_completed(&o, &seen, "DELETE");
    let i = instance(app, &inst_id).await;
    assert_eq!(
        (i["status"].as_str(), i["phase"].as_str()),
        (Some("TERMINATED"), Some("READY")),
        "{i:#}"
    );
    assert_eq!(replicas(&i), (0, 0, 0));
    assert_eq!(deployments_in(&e.kube, "team").await, 0);
    assert!(
        Api::<Secret>::namespaced(e.kube.clone(), "team")
            .get_opt("web-env")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Service>::namespaced(e.kube.clone(), "team")
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
    );
    // Terminated: no more operations; the history has all five.
    let r = app
        .graphql(
            "mutation($id: ID!) { scaleInstance(id: $id, replicas: 1) { id } }",
            json!({"id": inst_id}),
        )
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r}");
    let r = app
        .graphql(
            "query($id: ID!) { instance(id: $id) { operations { totalCount edges { node { operation status } } } } }",
            json!({"id": inst_id}),
        )
        .await;
    assert_eq!(
        r["data"]["instance"]["operations"]["totalCount"],
        json!(5),
        "{r}"
    );
}

async fn failing_deploy(image: &str, expected: &[&str], warning: &str) {
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "bad", image, "http").await;
    let r = deploy(
        app,
        json!({"serverId": server, "clusterId": cluster, "namespace": "team",
                               "env": [{"name": "API_TOKEN", "value": "t"}]}),
    )
    .await;
    assert_ok(&r);
    let d = &r["data"]["deployServer"];
    let inst_id = d["instanceId"].as_str().unwrap().to_string();
    let (o, seen) = wait_op(app, d["id"].as_str().unwrap(), 40).await;
    assert_eq!(o["status"], json!("FAILED"), "{o:#}");
    assert!(seen.contains(&"FAILED".to_string()));
    assert!(o["completedAt"].is_string());
    let reason = o["errors"][0]["reason"].as_str().unwrap();
    assert!(
        expected.contains(&reason),
        "reason {reason} not in {expected:?}: {o:#}"
    );
    assert!(step_names(&o).contains(&"complete:failed".to_string()));
    let i = wait_instance(app, &inst_id, 10, |i| {
        i["lastWarning"].is_object() && i["status"] == json!("FAILED")
    })
    .await;
    assert_eq!(i["healthStatus"], json!("UNHEALTHY"));
    assert_eq!(i["replicas"]["ready"], json!(0));
    assert_eq!(i["replicas"]["desired"], json!(1));
    let why = i["healthReason"].as_str().unwrap();
    assert!(expected.iter().any(|r| why.contains(r)), "{i:#}");
    assert_eq!(i["lastWarning"]["type"], json!("Warning"));
    assert_eq!(i["lastWarning"]["reason"], json!(warning), "{i:#}");
    // The failed instance can be deleted.
    let r = app
        .graphql(
            "mutation($id: ID!) { deleteInstance(id: $id) { id } }",
            json!({"id": inst_id}),
        )
        .await;
    assert_ok(&r);
    let (o, _) = wait_op(app, r["data"]["deleteInstance"]["id"].as_str().unwrap(), 30).await;
    assert_eq!(o["status"], json!("COMPLETED"));
    assert_eq!(instance(app, &inst_id).await["status"], json!("TERMINATED"));
}

#[tokio::test]
async fn crash_loop_fails_the_deploy() {
    failing_deploy(
        "ghcr.io/example/crashloop:1",
        &["CrashLoopBackOff"],
        "BackOff",
    )
    .await;
}

#[tokio::test]
async fn image_pull_failure_fails_the_deploy() {
    failing_deploy(
        "ghcr.io/example/does-not-exist:1",
        &["ErrImagePull", "ImagePullBackOff"],
        "Failed",
    )
    .await;
}

#[tokio::test]
async fn cancel_stops_the_rollout() {
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "slow", "ghcr.io/example/slow-start:1", "http").await;
    let mut input = healthy_input(&server, &cluster);
    input["replicas"] = json!(2);
    let r = deploy(app, input).await;
    assert_ok(&r);
    let d = &r["data"]["deployServer"];
    let op_id = d["id"].as_str().unwrap().to_string();
    let inst_id = d["instanceId"].as_str().unwrap().to_string();
    let r = app
        .graphql(
            &format!("mutation($id: ID!) {{ cancelDeployment(id: $id) {{ {OP_FIELDS} }} }}"),
            json!({"id": op_id}),
        )
        .await;
    assert_ok(&r);
    let c = &r["data"]["cancelDeployment"];
    assert_eq!(c["status"], json!("CANCELLED"), "{c:#}");
    assert!(c["completedAt"].is_string());
    assert!(step_names(c).contains(&"cancel:succeeded".to_string()));
    // Cancelled stays cancelled; the driver stops; a second cancel conflicts.
    let r = app
        .graphql(
            "mutation($id: ID!) { cancelDeployment(id: $id) { id } }",
            json!({"id": op_id}),
        )
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r}");
    // Deliberate: time passes to show the driver does not move the operation on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let o = op(app, &op_id).await;
    assert_eq!(o["status"], json!("CANCELLED"), "{o:#}");
    assert!(o["errors"].as_array().unwrap().is_empty());
    // A cancelled deploy removes what it created and leaves the instance TERMINATED, with the
    // cancel as the reason.
    let i = wait_instance(app, &inst_id, 10, |i| i["status"] == json!("TERMINATED")).await;
    assert!(
        i["healthReason"]
            .as_str()
            .unwrap()
            .contains("deploy cancelled"),
        "{i:#}"
    );
    assert_eq!(replicas(&i), (0, 0, 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while deployments_in(&e.kube, "team").await > 0 {
        assert!(
            Instant::now() < deadline,
            "the cancelled deploy's Deployment is gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let services = Api::<Service>::namespaced(e.kube.clone(), "team");
    assert!(services.get_opt("web").await.unwrap().is_none());
    let secrets = Api::<Secret>::namespaced(e.kube.clone(), "team");
    assert!(secrets.get_opt("web-env").await.unwrap().is_none());
    // The state machine holds in the database too: an ended operation cannot be reopened, by
    // the gateway or by hand.
    let uuid = app
        .db
        .scalar(
            "SELECT id FROM deployments WHERE instance_id = (SELECT id FROM instances WHERE name = 'web')",
        )
        .await
        .unwrap();
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    let err = c
        .batch_execute(&format!(
            "UPDATE deployments SET status = 'in_progress' WHERE id = '{uuid}'"
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot move from cancelled to in_progress"),
        "{err}"
    );
}

#[tokio::test]
async fn a_completed_operation_cannot_be_moved_back_by_sql() {
    let db = TestDb::new().await;
    use diesel_async::SimpleAsyncConnection;
    let mut c = db.conn().await;
    c.batch_execute(
        "INSERT INTO registries (name, url) VALUES ('r', 'https://example.com/r');
         INSERT INTO servers (registry_id, name, original_name, image, transport)
           SELECT id, 's', 'io.example/s', 'ghcr.io/example/s:1', 'http' FROM registries;
         INSERT INTO clusters (name, endpoint) VALUES ('c', 'https://127.0.0.1:1');
         INSERT INTO instances (server_id, cluster_id, name, namespace)
           SELECT s.id, c.id, 'i', 'team' FROM servers s, clusters c;
         INSERT INTO deployments (instance_id, server_id, operation, initiated_by)
           SELECT i.id, i.server_id, 'deploy', 'tester' FROM instances i;",
    )
    .await
    .unwrap();
    let moves = |to: &str| {
        let done = if matches!(to, "initiated" | "in_progress") {
            "NULL"
        } else {
            "now()"
        };
        format!("UPDATE deployments SET status = '{to}', completed_at = {done}")
    };
    // Allowed: initiated -> in_progress -> completed.
    c.batch_execute(&moves("in_progress")).await.unwrap();
    c.batch_execute(&moves("completed")).await.unwrap();
    for to in ["in_progress", "initiated", "failed", "cancelled"] {
        let err = c.batch_execute(&moves(to)).await.unwrap_err().to_string();
        assert!(err.contains("cannot move from completed"), "{to}: {err}");
    }
    assert_eq!(
        db.scalar("SELECT status FROM deployments").await.as_deref(),
        Some("completed")
    );
    // An ended operation needs its completion time.
    let err = c
        .batch_execute(
            "INSERT INTO deployments (instance_id, server_id, operation, initiated_by, status)
               SELECT i.id, i.server_id, 'scale', 'tester', 'completed' FROM instances i",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("deployments_completed_at_when_done"), "{err}");
}

#[tokio::test]
async fn changes_made_outside_the_gateway_show_up() {
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "fetch", "ghcr.io/example/fetch:1", "http").await;
    let r = deploy(app, healthy_input(&server, &cluster)).await;
    assert_ok(&r);
    let d = &r["data"]["deployServer"];
    let inst_id = d["instanceId"].as_str().unwrap().to_string();
    let (o, _) = wait_op(app, d["id"].as_str().unwrap(), 30).await;
    assert_eq!(o["status"], json!("COMPLETED"));
    let api = Api::<Deployment>::namespaced(e.kube.clone(), "team");
    // kubectl scale deploy/web --replicas=2
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let i = wait_instance(app, &inst_id, 15, |i| replicas(i) == (2, 2, 2)).await;
    assert_eq!(
        (i["status"].as_str(), i["phase"].as_str()),
        (Some("RUNNING"), Some("READY"))
    );
    // kubectl delete deploy/web
    api.delete("web", &DeleteParams::background())
        .await
        .unwrap();
    let i = wait_instance(app, &inst_id, 15, |i| i["status"] == json!("TERMINATED")).await;
    assert_eq!(i["phase"], json!("READY"));
    assert_eq!(replicas(&i), (0, 0, 0));
}

#[tokio::test]
async fn an_api_outage_mid_deploy_ends_in_the_right_state() {
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "slow", "ghcr.io/example/slow-start:1", "http").await;
    let r = deploy(app, healthy_input(&server, &cluster)).await;
    assert_ok(&r);
    let d = &r["data"]["deployServer"];
    let op_id = d["id"].as_str().unwrap().to_string();
    let inst_id = d["instanceId"].as_str().unwrap().to_string();
    // Deliberate: the outage starts while the driver is under way, and lasts long enough for
    // its calls to fail several times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.emu.set_outage(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let o = op(app, &op_id).await;
    assert!(
        matches!(
            o["status"].as_str(),
            Some("IN_PROGRESS" | "INITIATED" | "COMPLETED")
        ),
        "{o:#}"
    );
    e.emu.set_outage(false);
    let (o, _) = wait_op(app, &op_id, 60).await;
    assert_eq!(o["status"], json!("COMPLETED"), "{o:#}");
    let i = wait_instance(app, &inst_id, 20, |i| {
        i["phase"] == json!("READY") && i["status"] == json!("RUNNING")
    })
    .await;
    assert_eq!(replicas(&i), (1, 1, 1));
}

#[tokio::test]
async fn in_flight_operations_survive_a_gateway_restart_and_are_driven_once() {
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let server = seed_server(app, "slow", "ghcr.io/example/slow-start:1", "http").await;
    let r = deploy(app, healthy_input(&server, &cluster)).await;
    assert_ok(&r);
    assert_eq!(r["data"]["deployServer"]["status"], json!("INITIATED"));
    let op_uuid: uuid::Uuid = app
        .db
        .scalar("SELECT id FROM deployments")
        .await
        .unwrap()
        .parse()
        .unwrap();
    // Crash: drivers stop; a lease they held stays until it expires.
    app.state.services.k8s.abort().await;
    let mut cfg = hivegraph::config::Config::for_tests(&app.db.url);
    cfg.serve.k8s.kubeconfig = Some(e.kubeconfig.clone());
    cfg.database.pool_size = 3;
    cfg.database.wait_ms = 10_000;
    // A lease that a loaded machine cannot let lapse by accident (a renewal waits for one of
    // three pooled connections), so that a second take-over would mean a bug.
    cfg.serve.k8s.lease_seconds = 10;
    // Two new gateway processes on the same database.
    let second =
        hivegraph::server::build_state(cfg.clone(), hivegraph::secrets::Keyring::ephemeral())
            .unwrap();
    let third =
        hivegraph::server::build_state(cfg, hivegraph::secrets::Keyring::ephemeral()).unwrap();
    let pool = &second.services.pool;
    use hivegraph::k8s::store::{claim, release};
    let deadline = Instant::now() + Duration::from_secs(10);
    let short = chrono::Duration::seconds(2);
    // Once the crashed process's lease expires, one claimant gets it; nobody else can while it
    // holds; its owner can renew it.
    loop {
        if claim(pool, op_uuid, "claimant-a", short)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the crashed process's lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        claim(pool, op_uuid, "claimant-b", short)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        claim(pool, op_uuid, "claimant-a", short)
            .await
            .unwrap()
            .is_some()
    );
    release(pool, op_uuid, "claimant-a").await.unwrap();
    second.services.k8s.start_background();
    third.services.k8s.start_background();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = app
            .db
            .scalar("SELECT status FROM deployments")
            .await
            .unwrap();
        if st == "completed" {
            break;
        }
        assert!(st == "in_progress" || st == "initiated", "status {st}");
        assert!(Instant::now() < deadline, "not picked up after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Picked up by exactly one of the two new processes.
    let resumes: i64 = app
        .db
        .scalar("SELECT count(*) FROM deployments, jsonb_array_elements(steps) s WHERE s->>'name' IN ('resume', 'start')")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let completes: i64 = app
        .db
        .scalar("SELECT count(*) FROM deployments, jsonb_array_elements(steps) s WHERE s->>'name' = 'complete'")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(completes, 1);
    assert!(
        resumes <= 2,
        "started once, resumed at most once: {resumes}"
    );
    let inst = app
        .db
        .scalar("SELECT status || '/' || phase || '/' || replicas_ready FROM instances")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut inst = inst;
    while inst != "running/ready/1" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        inst = app
            .db
            .scalar("SELECT status || '/' || phase || '/' || replicas_ready FROM instances")
            .await
            .unwrap();
    }
    assert_eq!(inst, "running/ready/1");
    second.services.k8s.shutdown().await;
    third.services.k8s.shutdown().await;
}

/// A legacy registry.json with one server, `web`, at `tag`; `required` adds a required env var.
fn catalog(tag: &str, required: Option<&str>) -> String {
    let mut env = vec![json!({"name": "LOG_LEVEL", "required": false, "default": "info"})];
    if let Some(name) = required {
        env.push(json!({"name": name, "required": true, "secret": true}));
    }
    json!({ "version": "1.0.0", "last_updated": "2026-01-01T00:00:00Z", "servers": {
        "web": { "description": "a web server", "image": format!("ghcr.io/example/web:{tag}"),
                 "transport": "streamable-http", "target_port": 9090, "env_vars": env,
                 "version": tag }
    }})
    .to_string()
}

fn deployed_image(d: &Deployment) -> String {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test]
async fn a_sync_that_bumps_the_image_offers_an_upgrade_live_and_upgrade_then_rollback_move_the_instance()
 {
    use registry_server::{RegistryServer, gql};
    let e = env().await;
    let app = &e.app;
    let cluster = register(app).await["id"].as_str().unwrap().to_string();
    let srv = RegistryServer::start().await;
    srv.state
        .set_custom("cat", "application/json", catalog("1.0.0", None));
    let reg = gql::create(app, "catalog", &srv.url("/custom/cat"), json!({})).await;
    assert_eq!(gql::sync(app, &reg).await["status"], "ACTIVE");
    let server = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'web'")
        .await
        .unwrap();
    let r = deploy(
        app,
        json!({"serverId": server, "clusterId": cluster, "namespace": "team", "name": "web",
               "args": ["--mine"]}),
    )
    .await;
    assert_ok(&r);
    let inst_id = r["data"]["deployServer"]["instanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let (o, seen) = wait_op(app, r["data"]["deployServer"]["id"].as_str().unwrap(), 60).await;
    assert_completed(&o, &seen, "DEPLOY");
    const UPGRADE: &str = "upgrade { currentImage availableImage currentVersion availableVersion
        envChanges { newlyRequired removed secretChanged } }";
    let q = format!("query($id: ID!) {{ instance(id: $id) {{ configuration {UPGRADE} }} }}");
    let r = app.graphql(&q, json!({"id": inst_id})).await;
    assert_ok(&r);
    assert!(
        r["data"]["instance"]["upgrade"].is_null(),
        "up to date: {r}"
    );

    // A live instanceStatus subscriber sees the upgrade appear when a sync bumps the image.
    let rc = hivegraph::graphql::context::RequestCtx::new(
        app.state.services.pool.clone(),
        "test".into(),
        hivegraph::auth::Principal::local(),
    );
    let sub = async_graphql::Request::new(format!(
        "subscription($id: ID!) {{ instanceStatus(instanceId: $id) {{ {UPGRADE} }} }}"
    ))
    .variables(async_graphql::Variables::from_json(json!({"id": inst_id})))
    .data(std::sync::Arc::new(rc));
    let mut stream = app.state.schema.execute_stream(sub);
    use futures_util::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.data.to_string().contains("upgrade: null"),
        "{:?}",
        first.data
    );
    srv.state
        .set_custom("cat", "application/json", catalog("1.1.0", Some("API_KEY")));
    assert_eq!(gql::sync(app, &reg).await["status"], "ACTIVE");
    let offered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let resp = stream.next().await.unwrap();
            let v = resp.data.into_json().unwrap();
            let up = v["instanceStatus"]["upgrade"].clone();
            if !up.is_null() {
                return up;
            }
        }
    })
    .await
    .expect("the upgrade is pushed over instanceStatus");
    assert_eq!(offered["currentImage"], "ghcr.io/example/web:1.0.0");
    assert_eq!(offered["availableImage"], "ghcr.io/example/web:1.1.0");
    assert_eq!(offered["currentVersion"], "1.0.0");
    assert_eq!(offered["availableVersion"], "1.1.0");
    assert_eq!(offered["envChanges"]["newlyRequired"], json!(["API_KEY"]));
    let listed = app
        .graphql(
            "{ yes: instances(filter: {upgradeAvailable: true}) { totalCount }
               no: instances(filter: {upgradeAvailable: false}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_ok(&listed);
    assert_eq!(
        (
            listed["data"]["yes"]["totalCount"].as_i64(),
            listed["data"]["no"]["totalCount"].as_i64()
        ),
        (Some(1), Some(0))
    );

    // Without the newly required variable the upgrade is refused, naming it; nothing changes.
    let up = format!(
        "mutation($id: ID!, $env: [EnvValueInput!]) {{ upgradeInstance(id: $id, env: $env) {{ {OP_FIELDS} }} }}"
    );
    let refused = app.graphql(&up, json!({"id": inst_id})).await;
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("BAD_USER_INPUT"),
        "{refused}"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("API_KEY")
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM deployments WHERE operation = 'upgrade'")
            .await
            .as_deref(),
        Some("0")
    );
    let deployments = Api::<Deployment>::namespaced(e.kube.clone(), "team");
    assert_eq!(
        deployed_image(&deployments.get("web").await.unwrap()),
        "ghcr.io/example/web:1.0.0"
    );

    // With it, the UPGRADE operation moves the instance to the new image; the value is secret.
    let r = app
        .graphql(
            &up,
            json!({"id": inst_id, "env": [{"name": "API_KEY", "value": CANARY}]}),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r["data"]["upgradeInstance"]["operation"], "UPGRADE");
    let (o, seen) = wait_op(
        app,
        r["data"]["upgradeInstance"]["id"].as_str().unwrap(),
        60,
    )
    .await;
    assert_completed(&o, &seen, "UPGRADE");
    let d = deployments.get("web").await.unwrap();
    assert_eq!(deployed_image(&d), "ghcr.io/example/web:1.1.0");
    let args = d.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&"--mine".to_string()),
        "the user's arguments are kept: {args:?}"
    );
    let r = app.graphql(&q, json!({"id": inst_id})).await;
    assert_ok(&r);
    let inst = &r["data"]["instance"];
    assert!(inst["upgrade"].is_null(), "{inst}");
    assert_eq!(inst["configuration"]["image"], "ghcr.io/example/web:1.1.0");
    assert!(
        !inst.to_string().contains(CANARY),
        "the secret value is never shown"
    );
    let secret = Api::<Secret>::namespaced(e.kube.clone(), "team")
        .get("web-env")
        .await
        .unwrap();
    assert!(secret.data.unwrap().contains_key("API_KEY"));
    let audited = app
        .db
        .scalar("SELECT count(*) FROM audit_log WHERE action = 'upgradeInstance' AND outcome = 'success'")
        .await;
    assert_eq!(audited.as_deref(), Some("1"));

    // Rollback returns to the previous image and configuration: the upgrade is offered again.
    let r = app
        .graphql(
            &format!("mutation($id: ID!) {{ rollbackInstance(id: $id) {{ {OP_FIELDS} }} }}"),
            json!({"id": inst_id}),
        )
        .await;
    assert_ok(&r);
    let (o, seen) = wait_op(
        app,
        r["data"]["rollbackInstance"]["id"].as_str().unwrap(),
        60,
    )
    .await;
    assert_completed(&o, &seen, "ROLLBACK");
    assert_eq!(
        deployed_image(&deployments.get("web").await.unwrap()),
        "ghcr.io/example/web:1.0.0"
    );
    let r = app.graphql(&q, json!({"id": inst_id})).await;
    assert_ok(&r);
    assert_eq!(
        r["data"]["instance"]["configuration"]["image"],
        "ghcr.io/example/web:1.0.0"
    );
    assert_eq!(
        r["data"]["instance"]["upgrade"]["availableImage"],
        "ghcr.io/example/web:1.1.0"
    );
}
