//! The websocket protocols over a real socket: close codes, keep-alives, planned shutdown, token
//! expiry, and a stalled client that must not hold up another.

use crate::common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const SECRET: &str = "0123456789abcdef0123456789abcdef-ws";
const SYNC: &str = "subscription($id: ID!) { registrySync(registryId: $id) { description } }";

/// Serves the app's router on a loopback port; returns the ws URL.
async fn listen(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("ws://{addr}/graphql")
}

async fn connect(url: &str, protocol: &str) -> Ws {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(
        resp.headers()["sec-websocket-protocol"].to_str().unwrap(),
        protocol
    );
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text message (pings are skipped), or the close frame as `{"close": code, "reason"}`.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(Some(f)))) => {
                return json!({ "close": u16::from(f.code), "reason": f.reason.as_str() });
            }
            Some(Ok(Message::Close(None))) | None => return json!({ "close": null }),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return json!({ "close": null, "error": e.to_string() }),
        }
    }
}

/// Messages until the close frame; returns the close code.
async fn close_code(ws: &mut Ws) -> (u16, String) {
    loop {
        let v = recv(ws).await;
        if let Some(code) = v.get("close") {
            return (
                code.as_u64().expect("a close code") as u16,
                v["reason"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
}

async fn init(ws: &mut Ws) {
    send(ws, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(recv(ws).await["type"], "connection_ack");
}

async fn create_registry(app: &TestApp, name: &str) -> String {
    let resp = app
        .graphql(
            "mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }",
            json!({ "i": { "name": name, "url": "http://127.0.0.1:9/registry.json" } }),
        )
        .await;
    assert_ok(&resp);
    resp["data"]["createRegistry"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn describe(app: &TestApp, id: &str, d: &str) {
    let resp = app
        .graphql(
            "mutation($id: ID!, $d: String) { updateRegistry(id: $id, input: { description: $d }) { id } }",
            json!({ "id": id, "d": d }),
        )
        .await;
    assert_ok(&resp);
}

fn subscribe_msg(id: &str, registry: &str) -> Value {
    json!({ "type": "subscribe", "id": id, "payload": { "query": SYNC, "variables": { "id": registry } } })
}

#[tokio::test]
async fn no_connection_init_within_the_timeout_closes_with_4408() {
    let app = TestApp::spawn_with(|c| c.serve.ws.ws_init_timeout_ms = 300).await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    let started = std::time::Instant::now();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn subscribe_before_init_closes_with_4401() {
    let app = TestApp::spawn().await;
    let url = listen(&app).await;
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = connect(&url, protocol).await;
        send(&mut ws, subscribe_msg("1", "x")).await;
        assert_eq!(close_code(&mut ws).await.0, 4401, "{protocol}");
    }
}

#[tokio::test]
async fn a_duplicate_id_closes_with_4409_and_long_reasons_fit_a_control_frame() {
    let app = TestApp::spawn().await;
    let registry = create_registry(&app, "dup").await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    init(&mut ws).await;
    let long_id = "é".repeat(200);
    send(&mut ws, subscribe_msg(&long_id, &registry)).await;
    let first = recv(&mut ws).await;
    assert_eq!(first["type"], "next", "{first}");
    send(&mut ws, subscribe_msg(&long_id, &registry)).await;
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, 4409);
    assert!(reason.starts_with("Subscriber for"), "{reason}");
    assert!(reason.len() <= 123, "{} bytes", reason.len());
}

#[tokio::test]
async fn a_second_init_closes_with_4429() {
    let app = TestApp::spawn().await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    init(&mut ws).await;
    send(&mut ws, json!({ "type": "connection_init" })).await;
    assert_eq!(close_code(&mut ws).await.0, 4429);
}

#[tokio::test]
async fn pings_get_pongs_and_stop_completes_on_the_legacy_protocol() {
    let app = TestApp::spawn().await;
    let registry = create_registry(&app, "pings").await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    init(&mut ws).await;
    send(&mut ws, json!({ "type": "ping", "payload": { "n": 1 } })).await;
    let pong = recv(&mut ws).await;
    assert_eq!(pong, json!({ "type": "pong", "payload": { "n": 1 } }));
    // A websocket-level ping is answered too.
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Ok(Message::Pong(p))) = ws.next().await {
                return p;
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&got[..], b"hi");

    let mut legacy = connect(&url, "graphql-ws").await;
    send(
        &mut legacy,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    assert_eq!(recv(&mut legacy).await["type"], "connection_ack");
    assert_eq!(recv(&mut legacy).await["type"], "ka");
    send(
        &mut legacy,
        json!({ "type": "start", "id": "7", "payload": { "query": SYNC, "variables": { "id": registry } } }),
    )
    .await;
    let data = recv(&mut legacy).await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(data["id"], "7");
    send(&mut legacy, json!({ "type": "stop", "id": "7" })).await;
    let done = recv(&mut legacy).await;
    assert_eq!(done, json!({ "type": "complete", "id": "7" }));
}

#[tokio::test]
async fn a_failing_operation_gets_an_error_message() {
    let app = TestApp::spawn().await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    init(&mut ws).await;
    send(
        &mut ws,
        json!({ "type": "subscribe", "id": "a", "payload": { "query": "subscription { nope }" } }),
    )
    .await;
    let err = recv(&mut ws).await;
    assert_eq!(err["type"], "error", "{err}");
    assert!(err["payload"].as_array().is_some_and(|a| !a.is_empty()));
}

#[tokio::test]
async fn planned_shutdown_sends_1012_to_every_socket() {
    let app = TestApp::spawn().await;
    let url = listen(&app).await;
    let mut a = connect(&url, "graphql-transport-ws").await;
    init(&mut a).await;
    let mut b = connect(&url, "graphql-ws").await;
    let mut c = connect(&url, "graphql-transport-ws").await; // not even initialised
    send(&mut b, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(recv(&mut b).await["type"], "connection_ack");
    eventually(Duration::from_secs(5), "three open sockets", || async {
        app.state.sockets.open() == 3
    })
    .await;
    app.state.sockets.shutdown();
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(close_code(ws).await.0, 1012);
    }
    app.state.sockets.drained(Duration::from_secs(5)).await;
    assert_eq!(app.state.sockets.open(), 0);
}

fn token(exp_in_seconds: i64) -> String {
    let claims = json!({
        "sub": "ws-user",
        "roles": ["viewer"],
        "exp": chrono::Utc::now().timestamp() + exp_in_seconds,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn jwt_app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.serve.auth = hivegraph::config::AuthMode::Jwt;
        c.serve.jwt.jwt_secret = Some(SECRET.into());
    })
    .await
}

#[tokio::test]
async fn refused_credentials_close_with_4403_on_both_protocols() {
    let app = jwt_app().await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "authorization": "Bearer not-a-token" } }),
    )
    .await;
    assert_eq!(close_code(&mut ws).await.0, 4403);

    let mut ws = connect(&url, "graphql-transport-ws").await;
    send(&mut ws, json!({ "type": "connection_init" })).await;
    assert_eq!(close_code(&mut ws).await.0, 4403, "no credentials");

    let mut legacy = connect(&url, "graphql-ws").await;
    send(
        &mut legacy,
        json!({ "type": "connection_init", "payload": { "token": "garbage" } }),
    )
    .await;
    assert_eq!(recv(&mut legacy).await["type"], "connection_error");
    assert_eq!(close_code(&mut legacy).await.0, 4403);
}

#[tokio::test]
async fn the_socket_closes_with_4403_when_the_token_expires() {
    let app = jwt_app().await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", token(2)) } }),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "connection_ack");
    let started = std::time::Instant::now();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A longer-lived token keeps its socket past that moment.
    let mut ws = connect(&url, "graphql-transport-ws").await;
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "token": token(600) } }),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "connection_ack");
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_up_another() {
    let app = TestApp::spawn_with(|c| c.serve.ws.ws_buffer = 2).await;
    let registry = create_registry(&app, "stall").await;
    let url = listen(&app).await;
    let mut stalled = connect(&url, "graphql-transport-ws").await;
    init(&mut stalled).await;
    send(&mut stalled, subscribe_msg("s", &registry)).await;
    let mut live = connect(&url, "graphql-transport-ws").await;
    init(&mut live).await;
    send(&mut live, subscribe_msg("l", &registry)).await;
    assert_eq!(recv(&mut live).await["type"], "next");
    // `stalled` never reads from here on.
    for i in 0..20 {
        describe(&app, &registry, &format!("change {i}")).await;
        let v = recv(&mut live).await;
        assert_eq!(
            v["payload"]["data"]["registrySync"]["description"],
            format!("change {i}"),
            "{v}"
        );
    }
    assert_eq!(app.state.sockets.subscriptions(), 2);
    // The stalled client, reading at last, sees the first state and the newest one; whatever was
    // skipped in between is announced in `extensions.gap` or was still buffered.
    let mut last = Value::Null;
    let mut got = 0;
    while last != json!("change 19") {
        let v = recv(&mut stalled).await;
        got += 1;
        last = v["payload"]["data"]["registrySync"]["description"].clone();
    }
    assert!(got <= 21);
}

#[tokio::test]
async fn a_subscriber_gets_one_payload_per_change_of_what_it_selected() {
    let app = TestApp::spawn_with(|c| c.serve.limits.rate_limit_per_hour = 5_000).await;
    let registry = create_registry(&app, "changes").await;
    let url = listen(&app).await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    init(&mut ws).await;
    send(&mut ws, subscribe_msg("1", &registry)).await;
    let first = recv(&mut ws).await;
    assert_eq!(first["type"], "next", "{first}");
    assert!(
        first["payload"]["extensions"]["rateLimit"].is_object(),
        "the rate limit rides on the first payload: {first}"
    );
    // Changes to fields the subscription did not select send nothing...
    for seconds in [600, 900] {
        let resp = app
            .graphql(
                "mutation($id: ID!, $s: Int) { updateRegistry(id: $id, input: { syncIntervalSeconds: $s }) { id } }",
                json!({ "id": registry, "s": seconds }),
            )
            .await;
        assert_ok(&resp);
    }
    // ...and a change to a selected field sends exactly one payload, without the rate limit.
    describe(&app, &registry, "changed").await;
    let next = recv(&mut ws).await;
    assert_eq!(
        next["payload"]["data"]["registrySync"]["description"], "changed",
        "no repeat of the unchanged state came first: {next}"
    );
    assert!(
        next["payload"]["extensions"].get("rateLimit").is_none(),
        "{next}"
    );
    let quiet = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await;
    assert!(
        !matches!(quiet, Ok(Some(Ok(Message::Text(_))))),
        "nothing more was sent: {quiet:?}"
    );
}

#[tokio::test]
async fn a_client_close_is_echoed_and_the_socket_cap_has_its_own_code() {
    let app = TestApp::spawn_with(|c| c.serve.ws.ws_max_subscriptions = 1).await;
    let url = listen(&app).await;
    let registry = create_registry(&app, "capped").await;
    let mut ws = connect(&url, "graphql-transport-ws").await;
    init(&mut ws).await;
    send(&mut ws, subscribe_msg("1", &registry)).await;
    assert_eq!(recv(&mut ws).await["type"], "next");
    send(&mut ws, subscribe_msg("2", &registry)).await;
    let refused = recv(&mut ws).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "2");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
        "{refused}"
    );
    assert_eq!(refused["payload"][0]["extensions"]["limit"], 1);
    // A normal close from the client is answered with the same code (not a dropped socket).
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        },
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await.0, 1000);
}
