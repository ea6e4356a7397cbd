//! The secret canary (shared/docs/hardening.md §4.2): known secrets are planted (a registry's
//! auth token and header value, a deployment's secret env value) and driven through mutations,
//! queries, errors, a deployment on the emulated cluster, websocket subscriptions, the audit log
//! and `/metrics`, with every log line captured at TRACE. The canary must never appear in any
//! response, websocket frame, log line, error or metric, nor in the database outside ciphertext.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kube_emulator::Emulator;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::*;

const CANARY: &str = "CANARY-8d3f61b2-never-leak";

/// Every log line the process writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Everything seen on the way, searched at the end.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }
}

async fn gql(app: &TestApp, seen: &mut Seen, what: &str, q: &str, vars: Value) -> Value {
    let r = app.graphql_with_headers(q, vars, &[]).await;
    seen.add(what, r.text.clone());
    r.json()
}

async fn ws_frames(
    addr: std::net::SocketAddr,
    query: &str,
    vars: Value,
    until: &str,
) -> Vec<String> {
    let mut req = format!("ws://{addr}/graphql")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connects");
    ws.send(Message::text(
        json!({ "type": "connection_init", "payload": {} }).to_string(),
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": vars } })
            .to_string(),
    ))
    .await
    .unwrap();
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        else {
            continue;
        };
        let text = msg.to_text().unwrap_or_default().to_string();
        frames.push(text.clone());
        if text.contains(until) || text.contains("\"complete\"") || text.contains("\"error\"") {
            break;
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_never_leaks() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            "trace,hyper=debug,hyper_util=debug,h2=info,rustls=info,tungstenite=debug,tokio_tungstenite=debug,tower=debug",
        )
        .with_writer(logs.clone())
        .try_init()
        .expect(
            "the canary captures every log line through the process-wide subscriber, so it needs \
             a process of its own: run it with cargo nextest (a process per test) or alone \
             (cargo test --test it canary::)",
        );
    crate::common::install_crypto();
    // The cluster's bearer token is a canary too: the gateway has no kubeconfig and holds it only
    // as credentials registered through the API.
    let emu = Emulator::builder()
        .speed(20.0)
        .namespaces(["team"])
        .token(Some(format!("{CANARY}-cluster")))
        .start()
        .await
        .expect("emulator starts");
    let app = TestApp::spawn_with(move |c| {
        c.serve.k8s.kubeconfig = Some("/nonexistent/hivegraph-kubeconfig".into());
        c.serve.k8s.progress_deadline_seconds = 120;
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut seen = Seen::default();

    // A registry whose token is the canary; then its header value; errors that carry it.
    let r = gql(
        &app,
        &mut seen,
        "createRegistry",
        r#"mutation($t: String!) { createRegistry(input: { name: "private", url: "https://127.0.0.1:9/r.json",
            authConfig: { bearerToken: $t } }) { id authConfig { kind configured } } }"#,
        json!({ "t": CANARY }),
    )
    .await;
    assert_ok(&r);
    let reg = r["data"]["createRegistry"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gql(
        &app,
        &mut seen,
        "updateRegistry",
        r#"mutation($id: ID!, $t: String!) { updateRegistry(id: $id, input: {
            authConfig: { headerName: "X-Api-Key", headerValue: $t } }) { authConfig { kind configured } } }"#,
        json!({ "id": reg, "t": CANARY }),
    )
    .await;
    assert_ok(&r);
    for (what, q) in [
        (
            "bad header name",
            r#"mutation($id: ID!, $t: String!) { updateRegistry(id: $id, input: { authConfig: { headerName: "Host", headerValue: $t } }) { id } }"#,
        ),
        (
            "two methods",
            r#"mutation($id: ID!, $t: String!) { updateRegistry(id: $id, input: { authConfig: { bearerToken: $t, password: $t } }) { id } }"#,
        ),
        (
            "token in the URL",
            r#"mutation($id: ID!, $t: String!) { updateRegistry(id: $id, input: { url: "https://user:CANARY-8d3f61b2-never-leak@127.0.0.1:9/r.json", description: $t }) { id } }"#,
        ),
    ] {
        let r = gql(&app, &mut seen, what, q, json!({ "id": reg, "t": CANARY })).await;
        if what != "token in the URL" {
            assert!(error_code(&r).is_some(), "{what}: {r}");
        }
    }
    // The description above is not a secret: undo it so that only secrets carry the canary.
    let _ = gql(
        &app,
        &mut seen,
        "reset",
        r#"mutation($id: ID!) { updateRegistry(id: $id, input: { description: "", url: "https://127.0.0.1:9/r.json" }) { id } }"#,
        json!({ "id": reg }),
    )
    .await;
    seen.0
        .retain(|(w, _)| w != "token in the URL" && w != "reset");
    // A sync sends the credentials upstream (which is down): its errors and logs stay clean.
    let r = gql(
        &app,
        &mut seen,
        "syncRegistry",
        "mutation($id: ID!) { syncRegistry(id: $id) { status } }",
        json!({ "id": reg }),
    )
    .await;
    assert_ok(&r);
    let sync_frames = ws_frames(
        addr,
        "subscription($id: ID!) { registrySync(registryId: $id) { status lastError authConfig { configured } } }",
        json!({ "id": reg }),
        "ERROR",
    )
    .await;
    for f in &sync_frames {
        seen.add("registrySync frame", f.clone());
    }

    // A cluster registered with the canary as its token; refusals that carry the canary.
    let ca = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        emu.ca_pem().unwrap(),
    );
    let creds = json!({ "server": emu.url(), "certificateAuthorityData": ca,
                        "bearerToken": emu.token().unwrap() });
    let register = "mutation($i: RegisterClusterInput!) { registerCluster(input: $i) { id status lastError hasStoredCredentials } }";
    let exec_kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}'}}\n\
         users:\n- name: u\n  user:\n    exec: {{apiVersion: v1, command: {CANARY}}}\n\
         contexts:\n- name: x\n  context: {{cluster: c, user: u}}\n",
        emu.url()
    );
    for (what, bad) in [
        (
            "wrong token",
            json!({ "server": emu.url(), "certificateAuthorityData": ca, "bearerToken": format!("{CANARY}-wrong") }),
        ),
        (
            "no CA",
            json!({ "server": emu.url(), "bearerToken": emu.token().unwrap() }),
        ),
        (
            "token and certificate",
            json!({ "server": emu.url(), "bearerToken": CANARY, "clientCertificateData": CANARY }),
        ),
        (
            "token with a space",
            json!({ "server": emu.url(), "bearerToken": format!("{CANARY} x") }),
        ),
        (
            "CA that is not PEM",
            json!({ "server": emu.url(), "bearerToken": "t", "certificateAuthorityData": CANARY }),
        ),
        ("exec kubeconfig", json!({ "kubeconfig": exec_kubeconfig })),
        (
            "broken kubeconfig",
            json!({ "kubeconfig": format!("users: [{{token: {CANARY}") }),
        ),
        (
            "token kubeconfig with a server",
            json!({ "kubeconfig": emu.kubeconfig_yaml(), "server": emu.url() }),
        ),
    ] {
        let r = gql(
            &app,
            &mut seen,
            what,
            register,
            json!({ "i": { "name": "emu", "credentials": bad } }),
        )
        .await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("BAD_USER_INPUT"),
            "{what}: {r}"
        );
    }
    let cluster = gql(
        &app,
        &mut seen,
        "registerCluster",
        register,
        json!({ "i": { "name": "emu", "credentials": creds } }),
    )
    .await;
    assert_ok(&cluster);
    assert_eq!(
        cluster["data"]["registerCluster"]["status"],
        json!("CONNECTED"),
        "{cluster}"
    );
    let r = gql(
        &app,
        &mut seen,
        "updateCluster",
        "mutation($id: ID!, $i: UpdateClusterInput!) { updateCluster(id: $id, input: $i) { status lastError } }",
        json!({ "id": cluster["data"]["registerCluster"]["id"], "i": { "credentials": { "kubeconfig": emu.kubeconfig_yaml() } } }),
    )
    .await;
    assert_ok(&r);
    let cluster = cluster["data"]["registerCluster"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    {
        use diesel_async::SimpleAsyncConnection;
        app.db
            .conn()
            .await
            .batch_execute(
                r#"INSERT INTO registries (name, url) VALUES ('reg-echo', 'https://example.com/echo');
                   INSERT INTO servers (registry_id, name, original_name, image, transport, deployment_requirements)
                   SELECT id, 'echo', 'io.example/echo', 'ghcr.io/example/echo:1', 'http',
                     '{"envVars": [{"name": "API_TOKEN", "required": true, "secret": true}], "targetPort": 9090}'::jsonb
                   FROM registries WHERE name = 'reg-echo';"#,
            )
            .await
            .unwrap();
    }
    let server_uuid = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'echo'")
        .await
        .unwrap();
    let server = hivegraph::ids::encode(hivegraph::ids::Kind::Server, server_uuid.parse().unwrap())
        .to_string();
    let bad = gql(
        &app,
        &mut seen,
        "deploy to a missing namespace",
        "mutation($i: DeployServerInput!) { deployServer(input: $i) { id } }",
        json!({ "i": { "serverId": server, "clusterId": cluster, "namespace": "nowhere",
                       "env": [{ "name": "API_TOKEN", "value": CANARY }] } }),
    )
    .await;
    assert!(error_code(&bad).is_some(), "{bad}");
    let d = gql(
        &app,
        &mut seen,
        "deployServer",
        "mutation($i: DeployServerInput!) { deployServer(input: $i) { id parameters instance { id configuration } } }",
        json!({ "i": { "serverId": server, "clusterId": cluster, "namespace": "team",
                       "env": [{ "name": "API_TOKEN", "value": CANARY }, { "name": "PLAIN", "value": "x" }] } }),
    )
    .await;
    assert_ok(&d);
    let op = d["data"]["deployServer"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inst = d["data"]["deployServer"]["instance"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let frames = ws_frames(
        addr,
        "subscription($id: ID!) { deploymentProgress(deploymentId: $id) { status parameters steps { name message } errors { message } logs { message } } }",
        json!({ "id": op }),
        "COMPLETED",
    )
    .await;
    assert!(
        frames.iter().any(|f| f.contains("COMPLETED")),
        "the deployment completes: {frames:?}"
    );
    for f in frames {
        seen.add("deploymentProgress frame", f);
    }
    for f in ws_frames(
        addr,
        "subscription($id: ID!) { instanceStatus(instanceId: $id) { status configuration events { message } } }",
        json!({ "id": inst }),
        "RUNNING",
    )
    .await
    {
        seen.add("instanceStatus frame", f);
    }
    // Everything readable about it.
    let everything = r#"query($op: ID!, $inst: ID!, $reg: ID!) {
        registry(id: $reg) { metadata authConfig { kind configured } lastError lastSyncReport { mode } }
        deployment(id: $op) { parameters steps { message } errors { message } rollbackInfo logs { message } }
        instance(id: $inst) { configuration events { message } logs(tailLines: 50) { lines reason }
          operations { edges { node { parameters } } } }
        auditLog(first: 100) { edges { node { action details targetId } } }
        clusters { nodes { endpoint context hasStoredCredentials lastError resourceQuota } }
        node(id: $inst) { id }
    }"#;
    let r = gql(
        &app,
        &mut seen,
        "read everything",
        everything,
        json!({ "op": op, "inst": inst, "reg": reg }),
    )
    .await;
    assert_ok(&r);
    // Operations on it, and their errors.
    for (what, q) in [
        (
            "scale",
            "mutation($id: ID!) { scaleInstance(id: $id, replicas: 2) { parameters } }",
        ),
        (
            "scale bad",
            "mutation($id: ID!) { scaleInstance(id: $id, replicas: -5) { parameters } }",
        ),
        (
            "restart",
            "mutation($id: ID!) { restartInstance(id: $id) { parameters } }",
        ),
    ] {
        gql(&app, &mut seen, what, q, json!({ "id": inst })).await;
    }
    // Removing the cluster, refused then not: the errors and audit records stay clean too.
    let cluster_id = cluster.clone();
    let r = gql(
        &app,
        &mut seen,
        "deleteCluster refused",
        "mutation($id: ID!) { deleteCluster(id: $id) { pastInstances } }",
        json!({ "id": cluster_id }),
    )
    .await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r}");
    let metrics = app.get("/metrics").await;
    seen.add("/metrics", metrics.text);

    eventually(
        Duration::from_secs(10),
        "more than 50 log lines",
        || async {
            String::from_utf8_lossy(&logs.0.lock().unwrap())
                .lines()
                .count()
                > 50
        },
    )
    .await;
    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        log_text.lines().count() > 50,
        "logs were captured ({} lines)",
        log_text.lines().count()
    );
    seen.add("logs", log_text);
    // (Taken before the checks below, whose own SQL names the canary.)
    // The cluster holds the value only in its Secret (checked in tests/k8s.rs); the database
    // nowhere in clear text.
    for table in [
        "registries",
        "servers",
        "clusters",
        "instances",
        "deployments",
        "deployment_logs",
        "monitoring_metrics",
        "audit_log",
        "namespace_grants",
    ] {
        let n = app
            .db
            .scalar(&format!(
                "SELECT count(*) FROM {table} t WHERE t::text LIKE '%{CANARY}%'"
            ))
            .await
            .unwrap();
        assert_eq!(n, "0", "the canary is stored in clear in {table}");
    }
    let sealed = app
        .db
        .scalar("SELECT auth_config->>'kid' FROM registries WHERE name = 'private'")
        .await;
    assert!(
        sealed.is_some(),
        "the registry credentials are stored, sealed"
    );
    let sealed = app
        .db
        .scalar("SELECT credentials->>'kid' FROM clusters WHERE name = 'emu'")
        .await;
    assert!(
        sealed.is_some(),
        "the cluster credentials are stored, sealed"
    );
    // A plain dump of the whole database (every table, sequence and function).
    let dump = std::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg(&app.db.url)
        .output()
        .expect("pg_dump runs (installed with PostgreSQL)");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.contains("COPY public.clusters"),
        "the dump has the clusters"
    );
    seen.add("pg_dump", dump);

    assert!(seen.0.len() > 15);
    for (what, text) in &seen.0 {
        if let Some(at) = text.find(CANARY) {
            let from = at.saturating_sub(200);
            panic!(
                "the canary leaked in {what}: …{}…",
                &text[from..(at + CANARY.len()).min(text.len())]
            );
        }
    }
    drop(emu);
}
