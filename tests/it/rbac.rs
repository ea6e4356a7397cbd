//! The ClusterRole of `deploy/kubernetes` against the API calls the gateway really makes.
//!
//! The emulator enforces exactly the ClusterRole's rules (403 otherwise) and records every
//! authorization decision. The gateway then lives through everything it does to a cluster:
//! the cluster check, a deploy (Deployment, Service, NetworkPolicy, Secret), watches, logs and
//! events, metrics collection (PodMetrics, Prometheus and MCP through the service proxy), scale,
//! restart, rollback and delete. The test fails when a call was refused (the ClusterRole is too
//! narrow) or when a rule was never used (it is too wide).

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use kube_emulator::{AccessPolicy, Emulator, PolicyRule};
use serde::Deserialize;
use serde_json::{Value, json};

const CLUSTER_ROLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/kubernetes/base/clusterrole.yaml"
);

#[derive(Deserialize)]
struct ClusterRole {
    kind: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// Calls the gateway makes to resources the emulator does not serve: (verb, group, resource).
const NOT_EMULATED: &[(&str, &str, &str)] = &[("list", "", "resourcequotas")];

/// (verb, group, resource)
type Grant = (String, String, String);

fn cluster_role() -> Vec<Rule> {
    let text = std::fs::read_to_string(CLUSTER_ROLE).expect("the ClusterRole file");
    let role: ClusterRole = serde_saphyr::from_str(&text).expect("the ClusterRole parses");
    assert_eq!(role.kind, "ClusterRole");
    role.rules
}

/// Every (verb, group, resource) the rules grant; wildcards are not allowed (least privilege).
fn grants(rules: &[Rule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in rules {
        for list in [&r.api_groups, &r.resources, &r.verbs] {
            assert!(
                !list.iter().any(|x| x == "*"),
                "no wildcards in the ClusterRole"
            );
        }
        for v in &r.verbs {
            for g in &r.api_groups {
                for res in &r.resources {
                    out.insert((v.clone(), g.clone(), res.clone()));
                }
            }
        }
    }
    out
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn policy(rules: &[Rule]) -> AccessPolicy {
    let s = strs;
    AccessPolicy::Rules(
        rules
            .iter()
            .map(|r| PolicyRule::new(&s(&r.verbs), &s(&r.api_groups), &s(&r.resources), &[]))
            .collect(),
    )
}

async fn gql(app: &TestApp, query: &str, vars: Value) -> Value {
    let r = app.graphql(query, vars).await;
    assert_ok(&r);
    r["data"].clone()
}

/// Waits for operation `id` to complete.
async fn completed(app: &TestApp, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = gql(
            app,
            "query($id: ID!) { deployment(id: $id) { operation status errors { reason message } } }",
            json!({"id": id}),
        )
        .await;
        let op = &d["deployment"];
        match op["status"].as_str() {
            Some("COMPLETED") => return,
            Some("FAILED" | "CANCELLED") => panic!("operation ended badly: {op:#}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "operation {id} not done: {op:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn mutate(app: &TestApp, field: &str, args: &str, inst: &str) -> String {
    let q = format!("mutation($id: ID!) {{ {field}(id: $id{args}) {{ id }} }}");
    let d = gql(app, &q, json!({"id": inst})).await;
    let id = d[field]["id"].as_str().unwrap().to_string();
    completed(app, &id).await;
    id
}

/// Waits until the instance has a metrics sample whose MCP health check went through.
async fn measured(app: &TestApp, inst: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = gql(
            app,
            "query($id: ID!) { instance(id: $id) { latestMetrics { cpuUsage requestCount healthChecks } } }",
            json!({"id": inst}),
        )
        .await;
        let m = &d["instance"]["latestMetrics"];
        if m["healthChecks"]["mcp"]["ok"] == json!(true) && m["cpuUsage"].is_number() {
            return;
        }
        assert!(Instant::now() < deadline, "no full sample: {m:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn seed_server(app: &TestApp) -> String {
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    c.batch_execute(
        "INSERT INTO registries (name, url) VALUES ('reg', 'https://example.com/reg');
         INSERT INTO servers (registry_id, name, original_name, image, transport,
                              deployment_requirements, network_permissions)
         SELECT id, 'web', 'io.example/web', 'ghcr.io/example/web:1', 'http',
           '{\"envVars\": [{\"name\": \"API_TOKEN\", \"required\": true, \"secret\": true}],
             \"targetPort\": 9090}'::jsonb,
           '{\"outbound\": {\"allowHost\": [\"api.example.com\"], \"allowPort\": [443]}}'::jsonb
         FROM registries WHERE name = 'reg';",
    )
    .await
    .unwrap();
    let id: uuid::Uuid = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'web'")
        .await
        .unwrap()
        .parse()
        .unwrap();
    hivegraph::ids::encode(hivegraph::ids::Kind::Server, id).to_string()
}

/// A remote server (deployed as an `MCPRemoteProxy` through the ToolHive operator).
async fn seed_remote(app: &TestApp) -> String {
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    c.batch_execute(
        "INSERT INTO servers (registry_id, name, original_name, url, transport)
         SELECT id, 'canva', 'canva', 'https://mcp.canva.com/mcp', 'http'
         FROM registries WHERE name = 'reg';",
    )
    .await
    .unwrap();
    let id: uuid::Uuid = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'canva'")
        .await
        .unwrap()
        .parse()
        .unwrap();
    hivegraph::ids::encode(hivegraph::ids::Kind::Server, id).to_string()
}

/// What the gateway did to the cluster, through its whole life cycle of an instance (and,
/// with the ToolHive operator, of a remote server's too).
async fn exercise(app: &TestApp, operator: bool) {
    let d = gql(
        app,
        "mutation { registerCluster(input: {name: \"emu\", context: \"kube-emulator\"}) { id status accessLevel } }",
        json!({}),
    )
    .await;
    let c = &d["registerCluster"];
    assert_eq!(c["status"], json!("CONNECTED"), "{c:#}");
    assert_eq!(c["accessLevel"], json!("DEPLOY"), "{c:#}");
    let server = seed_server(app).await;
    let d = gql(
        app,
        "mutation($i: DeployServerInput!) { deployServer(input: $i) { id instanceId } }",
        json!({"i": {"serverId": server, "clusterId": c["id"], "namespace": "team", "name": "web",
                     "env": [{"name": "API_TOKEN", "value": "t0ken"}],
                     "resources": {"limits": {"cpu": "200m", "memory": "128Mi"}}}}),
    )
    .await;
    let inst = d["deployServer"]["instanceId"]
        .as_str()
        .unwrap()
        .to_string();
    completed(app, d["deployServer"]["id"].as_str().unwrap()).await;
    if !operator {
        app.state.services.monitor.start();
        measured(app, &inst).await;
        app.state.services.monitor.shutdown();
    }
    let d = gql(
        app,
        "query($id: ID!) { instance(id: $id) { logs(tailLines: 5) { available lines }
             events { reason } } }",
        json!({"id": inst}),
    )
    .await;
    assert_eq!(d["instance"]["logs"]["available"], json!(true), "{d:#}");
    mutate(app, "scaleInstance", ", replicas: 2", &inst).await;
    mutate(app, "restartInstance", "", &inst).await;
    mutate(app, "rollbackInstance", "", &inst).await;
    mutate(app, "deleteInstance", "", &inst).await;
    if operator {
        let remote = seed_remote(app).await;
        let d = gql(
            app,
            "mutation($i: DeployServerInput!) { deployServer(input: $i) { id instanceId } }",
            json!({"i": {"serverId": remote, "clusterId": c["id"], "namespace": "team"}}),
        )
        .await;
        completed(app, d["deployServer"]["id"].as_str().unwrap()).await;
        let inst = d["deployServer"]["instanceId"]
            .as_str()
            .unwrap()
            .to_string();
        mutate(app, "deleteInstance", "", &inst).await;
    }
}

/// The (verb, group, resource) of every call the gateway made through the life cycle, on a
/// cluster without (`operator: false`) or with the ToolHive operator; panics on a refused call.
async fn calls(rules: &[Rule], operator: bool) -> BTreeSet<Grant> {
    let emu = Emulator::builder()
        .speed(20.0)
        .namespaces(["team"])
        .policy(policy(rules))
        .toolhive_operator(operator)
        .start()
        .await
        .expect("emulator");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let app = TestApp::spawn_with(move |c| {
        c.serve.k8s.kubeconfig = Some(kubeconfig);
        c.serve.monitoring.metrics_interval_ms = 300;
        c.database.pool_size = 4;
        c.database.wait_ms = 10_000;
    })
    .await;
    exercise(&app, operator).await;
    app.state.services.k8s.shutdown().await;

    let log = emu.access_log();
    let refused: Vec<_> = log.iter().filter(|a| !a.allowed).collect();
    assert!(
        refused.is_empty(),
        "calls the ClusterRole refuses (operator: {operator}): {refused:#?}"
    );
    log.iter()
        .map(|a| (a.verb.clone(), a.group.clone(), a.resource.clone()))
        .collect()
}

#[tokio::test]
async fn the_cluster_role_grants_exactly_the_calls_the_gateway_makes() {
    crate::common::install_crypto();
    let rules = cluster_role();
    let granted = grants(&rules);
    let mut used = calls(&rules, false).await;
    used.extend(calls(&rules, true).await);
    // A server-side apply that creates its object is also authorized as `create` by
    // kube-apiserver (the emulator records the request's own verb, `patch`).
    let applied: Vec<Grant> = used
        .iter()
        .filter(|(v, _, _)| v == "patch")
        .map(|(_, g, r)| ("create".to_string(), g.clone(), r.clone()))
        .collect();
    used.extend(applied);
    // Calls the emulator cannot see: it serves no ResourceQuota (404 before authorization),
    // while the cluster check lists them (`ClusterManager::check`).
    for (verb, group, resource) in NOT_EMULATED {
        used.insert((verb.to_string(), group.to_string(), resource.to_string()));
    }
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(unused.is_empty(), "granted but never used: {unused:#?}");
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "used but not granted: {missing:#?}");
}
