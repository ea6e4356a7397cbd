//! Faults, round 2 (issue 22) against the Kubernetes API emulator: a cluster whose API server
//! restarts with a new CA and token, a database outage in the middle of an operation, and a
//! cluster unreachable past the instance status TTL.

use crate::common;
use crate::common::proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube_emulator::Emulator;
use serde_json::{Value, json};

struct Env {
    emu: Emulator,
    app: TestApp,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    _pg: Option<proxy::Proxy>,
}

async fn emulator(listen: SocketAddr, speed: f64) -> Emulator {
    crate::common::install_crypto();
    // The port may take a moment to be free again after the previous emulator on it stopped.
    for _ in 0..50 {
        if let Ok(emu) = Emulator::builder()
            .listen(listen)
            .speed(speed)
            .namespaces(["team"])
            .start()
            .await
        {
            return emu;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the emulator cannot listen on {listen}");
}

/// An emulator at `speed` and a gateway using it; with `pg`, the gateway reaches PostgreSQL
/// through that proxy and holds operation leases for the production default (30 s).
async fn env(speed: f64, pg: Option<proxy::Proxy>) -> Env {
    let emu = emulator("127.0.0.1:0".parse().unwrap(), speed).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kubeconfig.clone();
    let route = pg.as_ref().map(|p| p.addr);
    let app = TestApp::spawn_with(move |c| {
        c.serve.k8s.kubeconfig = Some(kc);
        c.serve.k8s.progress_deadline_seconds = 120;
        c.database.pool_size = 4;
        c.database.wait_ms = 2_000;
        if let Some(addr) = route {
            c.serve.k8s.lease_seconds = 30;
            let mut u = url::Url::parse(c.database.url()).unwrap();
            u.set_port(Some(addr.port())).unwrap();
            c.database.database_url = u.to_string().into();
        }
    })
    .await;
    Env {
        emu,
        app,
        kubeconfig,
        _dir: dir,
        _pg: pg,
    }
}

async fn seed_server(app: &TestApp, name: &str, image: &str) -> String {
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    c.batch_execute(&format!(
        "INSERT INTO registries (name, url) VALUES ('reg-{name}', 'https://example.com/{name}');
         INSERT INTO servers (registry_id, name, original_name, image, transport)
         SELECT id, '{name}', 'io.example/{name}', '{image}', 'http'
         FROM registries WHERE name = 'reg-{name}';"
    ))
    .await
    .unwrap();
    let id = app
        .db
        .scalar(&format!("SELECT id FROM servers WHERE name = '{name}'"))
        .await
        .unwrap();
    hivegraph::ids::encode(hivegraph::ids::Kind::Server, id.parse().unwrap()).0
}

async fn register(app: &TestApp) -> String {
    let r = app
        .graphql(
            "mutation { registerCluster(input: {name: \"emu\", context: \"kube-emulator\"}) { id status } }",
            json!({}),
        )
        .await;
    assert_ok(&r);
    r["data"]["registerCluster"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Starts a deploy of `server` as instance `name`; returns (operation id, instance id).
async fn deploy(app: &TestApp, server: &str, cluster: &str, name: &str) -> (String, String) {
    let r = app
        .graphql(
            "mutation($i: DeployServerInput!) { deployServer(input: $i) { id instanceId } }",
            json!({"i": {"serverId": server, "clusterId": cluster, "namespace": "team", "name": name}}),
        )
        .await;
    assert_ok(&r);
    let d = &r["data"]["deployServer"];
    (
        d["id"].as_str().unwrap().to_string(),
        d["instanceId"].as_str().unwrap().to_string(),
    )
}

/// Polls `query` (with `$id`) until `pred` holds on `data[field]`; returns it.
async fn poll(
    app: &TestApp,
    query: &str,
    id: &str,
    field: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = app.graphql(query, json!({"id": id})).await;
        let v = r["data"][field].clone();
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{field} {id} not as expected after {secs} s: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const OP: &str = "query($id: ID!) { deployment(id: $id) { status errors { reason message } \
                  steps { name status message } } }";
const INSTANCE: &str =
    "query($id: ID!) { instance(id: $id) { status phase healthStatus healthReason } }";
const CLUSTER: &str = "query($id: ID!) { cluster(id: $id) { status lastError } }";

fn ended(o: &Value) -> bool {
    matches!(
        o["status"].as_str(),
        Some("COMPLETED" | "FAILED" | "CANCELLED")
    )
}

fn has_step(o: &Value, name: &str) -> bool {
    o["steps"].as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["name"] == json!(name) && s["status"] == json!("succeeded"))
    })
}

/// A copy of `emu`'s Deployments of namespace `team` (minus `skip`), as a restarted API server
/// keeping its data would have them.
async fn deployments_of(emu: &Emulator, skip: &[&str]) -> Vec<Deployment> {
    let client = client_of(emu).await;
    Api::<Deployment>::namespaced(client, "team")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| !skip.contains(&d.metadata.name.as_deref().unwrap_or("")))
        .map(|mut d| {
            d.metadata.resource_version = None;
            d.metadata.uid = None;
            d.metadata.managed_fields = None;
            d.metadata.creation_timestamp = None;
            d.status = None;
            d
        })
        .collect()
}

async fn client_of(emu: &Emulator) -> kube::Client {
    let cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&emu.kubeconfig_yaml()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn an_api_server_restarted_with_a_new_ca_and_token_is_followed_without_a_restart() {
    let mut e = env(2.0, None).await;
    let app = &e.app;
    let cluster = register(app).await;
    let ready = seed_server(app, "ready", "ghcr.io/example/ready:1").await;
    let slow = seed_server(app, "slow", "ghcr.io/example/slow-start:1").await;
    // Two instances that will have lost their Deployments, and a deploy under way.
    let mut gone = Vec::new();
    for name in ["gone-a", "gone-b"] {
        let (op, inst) = deploy(app, &ready, &cluster, name).await;
        let o = poll(app, OP, &op, "deployment", 60, ended).await;
        assert_eq!(o["status"], "COMPLETED", "{o:#}");
        gone.push(inst);
    }
    let (stuck, stuck_inst) = deploy(app, &slow, &cluster, "stuck").await;
    poll(app, OP, &stuck, "deployment", 60, |o| {
        has_step(o, "apply-deployment")
    })
    .await;

    // The API server restarts on the same address with a new CA and a new token, keeping its
    // objects except the two Deployments (deleted meanwhile).
    let kept = deployments_of(&e.emu, &["gone-a", "gone-b"]).await;
    let addr = e.emu.addr();
    e.emu.set_outage(true); // closes the old listener
    let restarted = emulator(addr, 20.0).await;
    drop(std::mem::replace(&mut e.emu, restarted));
    let client = client_of(&e.emu).await;
    for d in kept {
        Api::<Deployment>::namespaced(client.clone(), "team")
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    // The gateway's kubeconfig still holds the old CA: the check says it is a certificate
    // problem, not "client error (Connect)" (a check between the two servers may first find
    // the port closed, which it names too).
    poll(app, CLUSTER, &cluster, "cluster", 30, |c| {
        c["status"] == "DISCONNECTED"
            && c["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("certificate") && !e.ends_with("(Connect)"))
    })
    .await;

    // The kubeconfig is rewritten (new CA and token); no gateway restart.
    e.emu.write_kubeconfig(&e.kubeconfig).unwrap();
    let changed = Instant::now();
    let o = poll(app, OP, &stuck, "deployment", 60, ended).await;
    assert_eq!(
        o["status"], "COMPLETED",
        "the stuck deploy completes: {o:#}"
    );
    // Its instance follows the restarted server (whose resource versions start again).
    poll(app, INSTANCE, &stuck_inst, "instance", 30, |i| {
        i["status"] == "RUNNING" && i["healthStatus"] == "HEALTHY"
    })
    .await;
    for inst in &gone {
        let i = poll(app, INSTANCE, inst, "instance", 60, |i| {
            i["status"] == "TERMINATED"
        })
        .await;
        assert_eq!(i["healthStatus"], "UNKNOWN", "{i:#}");
    }
    assert!(changed.elapsed() < Duration::from_secs(60));
    let c = poll(app, CLUSTER, &cluster, "cluster", 30, |c| {
        c["status"] == "CONNECTED"
    })
    .await;
    assert!(c["lastError"].is_null(), "{c:#}");
}

#[tokio::test]
async fn rejected_credentials_make_the_cluster_unauthorized_with_the_code() {
    let e = env(20.0, None).await;
    let app = &e.app;
    let cluster = register(app).await;
    e.emu.set_reject_credentials(true);
    let c = poll(app, CLUSTER, &cluster, "cluster", 30, |c| {
        c["status"] == "UNAUTHORIZED"
    })
    .await;
    assert!(
        c["lastError"].as_str().unwrap_or_default().contains("401"),
        "{c:#}"
    );
    e.emu.set_reject_credentials(false);
    let r = app
        .graphql(
            "mutation($id: ID!) { refreshCluster(id: $id) { status lastError } }",
            json!({"id": cluster}),
        )
        .await;
    assert_eq!(r["data"]["refreshCluster"]["status"], "CONNECTED", "{r:#}");
}

#[tokio::test]
async fn an_operation_cut_by_a_database_outage_completes_as_soon_as_the_database_returns() {
    let pg = proxy::Proxy::postgres().await;
    let e = env(4.0, Some(pg)).await;
    let app = &e.app;
    let pg = e._pg.as_ref().unwrap();
    let cluster = register(app).await;
    // Ready 30 simulated seconds after it starts: 7.5 s here, inside the outage.
    let slow = seed_server(app, "slow", "ghcr.io/example/slow-start:1").await;
    let (op, inst) = deploy(app, &slow, &cluster, "cut").await;
    poll(app, OP, &op, "deployment", 60, |o| {
        has_step(o, "apply-deployment")
    })
    .await;
    pg.cut();
    tokio::time::sleep(Duration::from_secs(10)).await;
    pg.restore();
    let back = Instant::now();
    let o = poll(app, OP, &op, "deployment", 30, ended).await;
    let took = back.elapsed();
    assert_eq!(o["status"], "COMPLETED", "{o:#}");
    assert!(
        took < Duration::from_secs(5),
        "completed {took:?} after the database returned (at most 5 s): {o:#}"
    );
    let i = poll(app, INSTANCE, &inst, "instance", 5, |i| {
        i["status"] == "RUNNING"
    })
    .await;
    assert_eq!(i["healthStatus"], "HEALTHY", "{i:#}");
}

#[tokio::test]
async fn instance_health_is_unknown_while_its_cluster_is_unreachable_past_the_ttl() {
    let e = env(20.0, None).await;
    let app = &e.app;
    let cluster = register(app).await;
    let ready = seed_server(app, "ready", "ghcr.io/example/ready:1").await;
    let (op, inst) = deploy(app, &ready, &cluster, "web").await;
    let o = poll(app, OP, &op, "deployment", 60, ended).await;
    assert_eq!(o["status"], "COMPLETED", "{o:#}");
    poll(app, INSTANCE, &inst, "instance", 30, |i| {
        i["healthStatus"] == "HEALTHY"
    })
    .await;

    e.emu.set_outage(true);
    let down = Instant::now();
    let i = poll(app, INSTANCE, &inst, "instance", 60, |i| {
        i["healthStatus"] == "UNKNOWN"
    })
    .await;
    assert!(
        down.elapsed() >= Duration::from_secs(30),
        "not before the status TTL: {:?}",
        down.elapsed()
    );
    let reason = i["healthReason"].as_str().unwrap_or_default();
    assert!(reason.contains("unreachable since 20"), "{i:#}");
    assert_eq!(i["status"], "RUNNING", "the last known status stays: {i:#}");

    e.emu.set_outage(false);
    let i = poll(app, INSTANCE, &inst, "instance", 30, |i| {
        i["healthStatus"] == "HEALTHY"
    })
    .await;
    assert!(
        !i["healthReason"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{i:#}"
    );
}
