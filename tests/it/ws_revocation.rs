//! Websocket rights follow revocation (issue #14): an open socket of a deployer whose namespace
//! grant is revoked can no longer mutate there, and its subscriptions end with an error and an
//! audit record, within two seconds. Also: a float `exp`, and the socket cap.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use diesel_async::SimpleAsyncConnection;
use futures_util::{SinkExt, StreamExt};
use hivegraph::config::AuthMode;
use hivegraph::ids::{Kind, encode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SECRET: &str = "0123456789abcdef0123456789abcdef-revoke";
const INST: &str = "00000000-0000-0000-0000-00000000bb0a";
const SEED: &str = r#"
INSERT INTO clusters (id, name, endpoint, status, version, access_level, simulated, capabilities)
VALUES ('00000000-0000-0000-0000-00000000bb03', 'c1', 'https://127.0.0.1:1', 'connected', 'v1.31.0',
        'deploy', true, ARRAY['apps/v1']);
INSERT INTO registries (id, name, url, status, format, server_count, last_sync_at)
VALUES ('00000000-0000-0000-0000-00000000bb01', 'r1', 'https://registry.example/r1.json', 'active',
        'toolhive', 1, now());
INSERT INTO servers (id, registry_id, name, original_name, description, image, transport, tier,
                     status, category, capabilities)
VALUES ('00000000-0000-0000-0000-00000000bb02', '00000000-0000-0000-0000-00000000bb01', 'fetch',
        'fetch', 'Fetches pages', 'ghcr.io/example/fetch:1', 'stdio', 'official', 'available',
        ARRAY['web'], ARRAY['fetch']);
INSERT INTO instances (id, server_id, cluster_id, name, namespace, status, phase, replicas_desired,
                       replicas_current, replicas_ready, health_status, created_at)
VALUES ('00000000-0000-0000-0000-00000000bb0a', '00000000-0000-0000-0000-00000000bb02',
        '00000000-0000-0000-0000-00000000bb03', 'fetch-a', 'team-a', 'running', 'ready', 1, 1, 1,
        'healthy', now());
INSERT INTO namespace_grants (subject, namespace, granted_by) VALUES ('dan', 'team-a', 'seed');
"#;

fn token(exp: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "dan", "exp": exp, "roles": ["deployer"] }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn serve(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("ws://{addr}/graphql")
}

async fn connect(url: &str, token: &str) -> Ws {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    send(&mut ws, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })).await;
    assert_eq!(recv(&mut ws).await["type"], "connection_ack");
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(f))) => return json!({ "close": f.map(|f| u16::from(f.code)) }),
            Some(Ok(_)) => continue,
            other => return json!({ "close": null, "other": format!("{other:?}") }),
        }
    }
}

async fn app() -> TestApp {
    let app = TestApp::spawn_with(|c| {
        c.serve.auth = AuthMode::Jwt;
        c.serve.jwt.jwt_secret = Some(SECRET.into());
    })
    .await;
    app.db.conn().await.batch_execute(SEED).await.unwrap();
    app
}

fn scale(id: &str) -> Value {
    json!({ "type": "subscribe", "id": id, "payload": {
        "query": "mutation($id: ID!) { scaleInstance(id: $id, replicas: 2) { id } }",
        "variables": { "id": encode(Kind::Instance, INST.parse().unwrap()) } } })
}

/// The error code of an `error` (payload: errors) or `next` (payload: a response) message.
fn code_of(v: &Value) -> String {
    let e = if v["type"] == "error" {
        &v["payload"][0]
    } else {
        &v["payload"]["errors"][0]
    };
    e["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

/// The next message about `id`.
async fn about(ws: &mut Ws, id: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["id"] == id || v.get("close").is_some() {
            return v;
        }
    }
}

#[tokio::test]
async fn a_revoked_deployer_socket_can_no_longer_mutate_and_its_subscriptions_end() {
    let app = app().await;
    let url = serve(&app).await;
    let mut ws = connect(&url, &token(json!(chrono::Utc::now().timestamp() + 3600))).await;
    let instance = encode(Kind::Instance, INST.parse().unwrap());
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "s", "payload": {
        "query": "subscription($id: ID!) { instanceStatus(instanceId: $id) { name } }",
        "variables": { "id": instance } } }),
    )
    .await;
    let first = about(&mut ws, "s").await;
    assert_eq!(
        first["payload"]["data"]["instanceStatus"]["name"], "fetch-a",
        "{first}"
    );
    // Granted: the mutation is not refused for rights (it may fail upstream: no real cluster).
    send(&mut ws, scale("m1")).await;
    let before = about(&mut ws, "m1").await;
    let code = code_of(&before);
    assert!(code != "FORBIDDEN" && code != "NOT_FOUND", "{before}");

    // Revoked by another process (straight in the database).
    app.db
        .conn()
        .await
        .batch_execute("DELETE FROM namespace_grants WHERE subject = 'dan'")
        .await
        .unwrap();
    let revoked = Instant::now();
    let ended = loop {
        let v = about(&mut ws, "s").await;
        if v["type"] != "next" {
            break v;
        }
    };
    assert!(
        revoked.elapsed() < Duration::from_millis(2500),
        "{:?}",
        revoked.elapsed()
    );
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(
        ended["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{ended}"
    );
    send(&mut ws, scale("m2")).await;
    let after = about(&mut ws, "m2").await;
    let code = code_of(&after);
    assert!(code == "FORBIDDEN" || code == "NOT_FOUND", "{after}");
    let audited = app
        .db
        .scalar("SELECT count(*)::text FROM audit_log WHERE action = 'subscriptionRevoked' AND outcome = 'denied'")
        .await;
    assert_eq!(audited.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_float_exp_closes_the_socket_when_it_passes() {
    let app = app().await;
    let url = serve(&app).await;
    let exp = chrono::Utc::now().timestamp() as f64 + 2.5;
    let mut ws = connect(&url, &token(json!(exp))).await;
    let started = Instant::now();
    let closed = loop {
        let v = recv(&mut ws).await;
        if v.get("close").is_some() {
            break v;
        }
    };
    assert_eq!(closed["close"], 4403, "{closed}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sockets_per_process_are_capped() {
    let app = TestApp::spawn_with(|c| c.serve.ws.ws_max_sockets = 1).await;
    let url = serve(&app).await;
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (_first, _) = tokio_tungstenite::connect_async(req.clone())
        .await
        .expect("upgrade");
    eventually(
        Duration::from_secs(5),
        "the first socket to be counted",
        || async { app.state.sockets.open() == 1 },
    )
    .await;
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|(_, r)| r.status())),
    }
}

fn bearer(sub: &str, role: &str) -> String {
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": chrono::Utc::now().timestamp() + 3600, "roles": [role] }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {t}")
}

/// The app, with a secret env value in the instance's configuration, viewer `vera` granted
/// team-a, and `more` SQL.
async fn app_with_secret(more: &str) -> TestApp {
    let app = app().await;
    app.db
        .conn()
        .await
        .batch_execute(&format!(
            "UPDATE instances SET configuration = '{{\"env\": [{{\"name\": \"API_URL\", \"value\": \"https://internal.example/?k=s3cr3t\"}}]}}' WHERE id = '{INST}';
             INSERT INTO namespace_grants (subject, namespace, granted_by) VALUES ('vera', 'team-a', 'seed');
             {more}"
        ))
        .await
        .unwrap();
    app
}

#[tokio::test]
async fn viewers_see_env_names_but_not_values() {
    let app = app_with_secret("").await;
    let q = "query($id: ID!) { instance(id: $id) { configuration } }";
    let vars = json!({ "id": encode(Kind::Instance, INST.parse().unwrap()) });
    let as_viewer = app
        .graphql_with_headers(
            q,
            vars.clone(),
            &[("authorization", &bearer("vera", "viewer"))],
        )
        .await
        .json();
    assert_ok(&as_viewer);
    let env = &as_viewer["data"]["instance"]["configuration"]["env"][0];
    assert_eq!(env["name"], "API_URL", "{as_viewer}");
    assert_eq!(env["redacted"], true, "{as_viewer}");
    assert!(!as_viewer.to_string().contains("s3cr3t"), "{as_viewer}");
    let as_deployer = app
        .graphql_with_headers(q, vars, &[("authorization", &bearer("dan", "deployer"))])
        .await
        .json();
    let env = &as_deployer["data"]["instance"]["configuration"]["env"][0];
    assert_eq!(
        env["value"], "https://internal.example/?k=s3cr3t",
        "{as_deployer}"
    );
}

/// Subscribers of one operation share one execution only within one authorization scope: a
/// viewer and a deployer of the same namespace (env values are shown to deployers only) and an
/// admin (who sees every namespace) each get their own payloads; two viewers with the same
/// grants share one.
#[tokio::test]
async fn a_shared_subscription_payload_never_crosses_authorization_scopes() {
    let app = app_with_secret(
        "INSERT INTO instances (id, server_id, cluster_id, name, namespace, status, phase, replicas_desired)
         VALUES ('00000000-0000-0000-0000-00000000bb0b', '00000000-0000-0000-0000-00000000bb02',
                 '00000000-0000-0000-0000-00000000bb03', 'fetch-b', 'team-b', 'running', 'ready', 1);
         INSERT INTO namespace_grants (subject, namespace, granted_by) VALUES ('val', 'team-a', 'seed');",
    )
    .await;
    let url = serve(&app).await;
    let query = "subscription($id: ID!) { instanceStatus(instanceId: $id) { replicas { ready } configuration server { instances { edges { node { name } } } } } }";
    let subscribe = json!({ "type": "subscribe", "id": "s", "payload": {
        "query": query, "variables": { "id": encode(Kind::Instance, INST.parse().unwrap()) } } });
    // The viewer subscribes first, so a feed shared by mistake would be hers.
    let mut sockets = Vec::new();
    for (sub, role) in [
        ("vera", "viewer"),
        ("dan", "deployer"),
        ("ada", "admin"),
        ("val", "viewer"),
    ] {
        let token = bearer(sub, role);
        let mut ws = connect(&url, token.trim_start_matches("Bearer ")).await;
        send(&mut ws, subscribe.clone()).await;
        let first = about(&mut ws, "s").await;
        assert_eq!(first["type"], "next", "{sub}: {first}");
        sockets.push((sub, ws));
    }

    app.db
        .conn()
        .await
        .batch_execute(&format!(
            "UPDATE instances SET replicas_ready = 0, updated_at = now() WHERE id = '{INST}'"
        ))
        .await
        .unwrap();
    for (sub, ws) in &mut sockets {
        let pushed = about(ws, "s").await;
        let status = &pushed["payload"]["data"]["instanceStatus"];
        assert_eq!(status["replicas"]["ready"], 0, "{sub}: {pushed}");
        let names: Vec<&str> = status["server"]["instances"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{sub}: {pushed}"))
            .iter()
            .map(|e| e["node"]["name"].as_str().unwrap())
            .collect();
        let secret_shown = pushed.to_string().contains("s3cr3t");
        match *sub {
            "ada" => {
                assert!(names.contains(&"fetch-b"), "{sub}: {pushed}");
                assert!(secret_shown, "{sub}: {pushed}");
            }
            "dan" => {
                assert_eq!(names, ["fetch-a"], "{sub}: {pushed}");
                assert!(secret_shown, "{sub}: {pushed}");
            }
            _ => {
                assert_eq!(names, ["fetch-a"], "{sub}: {pushed}");
                assert!(!secret_shown, "{sub}: {pushed}");
                assert_eq!(
                    status["configuration"]["env"][0]["redacted"], true,
                    "{sub}: {pushed}"
                );
            }
        }
    }
    assert_eq!(
        app.state.sockets.feeds(),
        3,
        "vera and val share, dan and ada do not"
    );
}
