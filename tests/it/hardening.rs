//! The hardened endpoint: each control has a test that fails without it.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{Value, json};

const CREATE: &str = r#"mutation { createRegistry(input: { name: "csrf-victim", url: "https://127.0.0.1:9/r.json" }) { id } }"#;

fn post(content_type: Option<&str>, body: String) -> Request<Body> {
    let mut req = Request::post("/graphql");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn csrf_simple_requests_are_refused_and_run_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({ "query": CREATE }).to_string();
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=xyz"),
        None,
    ] {
        let reply = app.send(post(ct, body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct:?}: {}",
            reply.text
        );
        assert!(reply.text.contains("cross-site request forgery"));
    }
    assert_eq!(
        app.db.count("registries").await,
        0,
        "no refused request ran"
    );

    // A request that proves a preflight (custom header) is accepted even with a simple type.
    let mut req = Request::post("/graphql")
        .header("content-type", "text/plain")
        .header("x-hivegraph-csrf", "1")
        .body(Body::from(body.clone()))
        .unwrap();
    req.headers_mut()
        .insert("x-request-id", "csrf-ok".parse().unwrap());
    let ok = app.send(req).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert!(!ok.text.contains("errors"), "{}", ok.text);
    assert_eq!(app.db.count("registries").await, 1);
}

#[tokio::test]
async fn mutations_never_run_over_get() {
    let app = TestApp::spawn().await;
    let url = format!("/graphql?query={}", urlencode(CREATE));
    let reply = app.get(&url).await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        reply.text
    );
    assert_eq!(app.db.count("registries").await, 0);

    let q = app
        .get(&format!(
            "/graphql?query={}",
            urlencode("{ registries { totalCount } }")
        ))
        .await;
    assert_eq!(q.status, StatusCode::OK);
    assert_eq!(q.json()["data"]["registries"]["totalCount"], 0);

    // A document whose selected operation is a mutation is refused even if it also holds a query.
    let mixed = "query A { registries { totalCount } } mutation B { deleteRegistry(id: \"x\") { deletedServers } }";
    let reply = app
        .get(&format!(
            "/graphql?query={}&operationName=B",
            urlencode(mixed)
        ))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(3 * 1024 * 1024);
    let body = json!({ "query": "{ registries { totalCount } }", "variables": { "pad": padding } })
        .to_string();
    let reply = app.send(post(Some("application/json"), body)).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        &reply.text[..reply.text.len().min(200)]
    );
}

#[tokio::test]
async fn depth_and_complexity_limits() {
    let app = TestApp::spawn().await;
    let deep = "{ registries { edges { node { servers { edges { node { registry { servers { edges { node { registry { servers { edges { node { name } } } } } } } } } } } } } } }";
    let resp = app.graphql(deep, json!({})).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("QUERY_TOO_COMPLEX"),
        "{resp}"
    );

    let wide = "{ registries(first: 100) { edges { node { servers(first: 100) { edges { node { instances(first: 100) { edges { node { name namespace status } } } } } } } } } }";
    let resp = app.graphql(wide, json!({})).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("QUERY_TOO_COMPLEX"),
        "{resp}"
    );

    let fine = "{ registries(first: 10) { edges { node { servers(first: 10) { edges { node { name } } } } } } }";
    assert_ok(&app.graphql(fine, json!({})).await);
}

#[tokio::test]
async fn alias_and_root_field_limits() {
    let app = TestApp::spawn().await;
    let aliases: String = (0..16)
        .map(|i| format!("a{i}: registries {{ totalCount }} "))
        .collect();
    let resp = app.graphql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("QUERY_TOO_COMPLEX"),
        "{resp}"
    );
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("aliases")
    );

    // Fragments cannot hide aliases.
    let frag = format!("query {{ ...F }} fragment F on QueryRoot {{ {aliases} }}");
    let resp = app.graphql(&frag, json!({})).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("QUERY_TOO_COMPLEX"),
        "{resp}"
    );

    let roots: String = (0..21).map(|_| "__typename ".to_string()).collect();
    let resp = app.graphql(&format!("{{ {roots} }}"), json!({})).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("QUERY_TOO_COMPLEX"),
        "{resp}"
    );

    let few: String = (0..3)
        .map(|i| format!("a{i}: registries {{ totalCount }} "))
        .collect();
    assert_ok(&app.graphql(&format!("{{ {few} }}"), json!({})).await);
}

#[tokio::test]
async fn batches_are_capped() {
    let app = TestApp::spawn().await;
    let op = json!({ "query": "{ registries { totalCount } }" });
    let two = Value::Array(vec![op.clone(), op.clone()]).to_string();
    let reply = app.send(post(Some("application/json"), two)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json().as_array().unwrap().len(), 2);

    let six = Value::Array(vec![op; 6]).to_string();
    let reply = app.send(post(Some("application/json"), six)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
}

#[tokio::test]
async fn requests_time_out() {
    let app = TestApp::spawn_with(|c| c.serve.limits.request_timeout_ms = 1).await;
    use diesel_async::SimpleAsyncConnection;
    app.db
        .conn()
        .await
        .batch_execute("INSERT INTO registries (name, url) VALUES ('a', 'https://127.0.0.1:9/r')")
        .await
        .unwrap();
    // Three levels of batched loads (each waits for its batch window, then the database) cannot
    // finish in 1 ms.
    let q = "{ registries { edges { node { servers { totalCount edges { node { instances { totalCount } } } } } } } }";
    let reply = app.graphql_with_headers(q, json!({}), &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        &reply.text[..reply.text.len().min(300)]
    );
    assert_eq!(error_code(&reply.json()).as_deref(), Some("TIMEOUT"));
}

#[tokio::test]
async fn production_mode_hides_the_schema() {
    let prod = TestApp::spawn_with(|c| c.serve.mode = hivegraph::config::Mode::Production).await;
    for q in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"Registry\") { name } }",
    ] {
        let resp = prod.graphql(q, json!({})).await;
        assert_eq!(
            error_code(&resp).as_deref(),
            Some("INTROSPECTION_DISABLED"),
            "introspection is off: {resp}"
        );
        assert!(resp["data"].is_null(), "{resp}");
    }
    assert_ok(&prod.graphql("{ __typename }", json!({})).await);
    let sdl = prod.get("/schema.graphql").await;
    assert_eq!(sdl.status, StatusCode::NOT_FOUND, "{}", sdl.text);
    assert_eq!(
        error_code(&sdl.json()).as_deref(),
        Some("INTROSPECTION_DISABLED")
    );
    let typo = prod.graphql("{ registry { nam } }", json!({})).await;
    let msg = typo["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !msg.contains("Did you mean"),
        "no suggestions in production: {msg}"
    );
    let page = prod
        .send(
            Request::get("/graphql")
                .header("accept", "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_ne!(page.status, StatusCode::OK, "no GraphiQL in production");

    let dev = TestApp::spawn().await;
    let resp = dev
        .graphql("{ __schema { types { name } } }", json!({}))
        .await;
    assert_ok(&resp);
    let typo = dev.graphql("{ registries { totalCont } }", json!({})).await;
    assert!(
        typo["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean"),
        "dev keeps suggestions: {typo}"
    );
}

#[tokio::test]
async fn every_error_carries_a_code() {
    let app = TestApp::spawn().await;
    let parse = app.graphql("{ registries { ", json!({})).await;
    assert_eq!(error_code(&parse).as_deref(), Some("GRAPHQL_PARSE_FAILED"));
    let invalid = app.graphql("{ nope }", json!({})).await;
    assert_eq!(
        error_code(&invalid).as_deref(),
        Some("GRAPHQL_VALIDATION_FAILED")
    );
    let missing = app
        .graphql(
            "query($id: ID!) { registry(id: $id) { name } }",
            json!({ "id": "garbage" }),
        )
        .await;
    assert_eq!(error_code(&missing).as_deref(), Some("BAD_USER_INPUT"));
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_with_a_code_and_not_ready() {
    let app = TestApp::spawn_with(|c| {
        c.database.database_url = "postgres://hivegraph:hivegraph@127.0.0.1:1/nowhere".into();
        c.database.wait_ms = 300;
    })
    .await;
    let started = std::time::Instant::now();
    let resp = app
        .graphql("{ registries { totalCount } }", json!({}))
        .await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("UPSTREAM_UNAVAILABLE"),
        "{resp}"
    );
    assert!(
        !resp.to_string().contains("127.0.0.1:1"),
        "no internal detail: {resp}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(
        app.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn operations_surface() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let reply = app
        .graphql_with_headers(
            "query ListRegistries { registries { totalCount } }",
            json!({}),
            &[("x-request-id", "req-42")],
        )
        .await;
    assert_eq!(reply.headers.get("x-request-id").unwrap(), "req-42");
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.text.contains("hivegraph_graphql_requests_total{operation=\"ListRegistries\",kind=\"query\",outcome=\"ok\"} 1"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("hivegraph_graphql_request_duration_seconds_bucket")
    );
    let sdl = app.get("/schema.graphql").await;
    assert!(sdl.text.contains("type Registry"));
}

#[tokio::test]
async fn the_debug_header_reports_sql_statements() {
    let app = TestApp::spawn().await;
    let q = "{ registries(first: 5) { totalCount edges { node { name servers(first: 5) { totalCount edges { node { name } } } } } } }";
    let plain = app.graphql_with_headers(q, json!({}), &[]).await.json();
    assert!(
        plain
            .get("extensions")
            .is_none_or(|e| e.get("sqlStatements").is_none())
    );
    let debug = app
        .graphql_with_headers(q, json!({}), &[("x-hivegraph-debug", "sql")])
        .await
        .json();
    assert_ok(&debug);
    // An empty database: one page query and one count.
    assert_eq!(debug["extensions"]["sqlStatements"], 2, "{debug}");
}

/// Replicas starting at once on a fresh database take turns applying migrations: each succeeds,
/// and every migration is applied exactly once.
#[tokio::test]
async fn concurrent_migrations_on_a_fresh_database_all_succeed() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let name = format!("hg_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = AsyncPgConnection::establish(&admin_url()).await.unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let url = url_for(&name);
    let runs =
        futures_util::future::join_all((0..3).map(|_| hivegraph::db::run_migrations(&url))).await;
    let mut applied = Vec::new();
    for r in runs {
        applied.extend(r.expect("every concurrent migration run succeeds"));
    }
    let expected = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(
        applied.len(),
        expected,
        "each migration applied once: {applied:?}"
    );
    applied.sort();
    applied.dedup();
    assert_eq!(applied.len(), expected);
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_subscription_over_http_is_a_client_error() {
    // Found by schemathesis: it was masked as INTERNAL_SERVER_ERROR.
    let app = TestApp::spawn().await;
    let resp = app
        .graphql(
            "subscription { registrySync(registryId: \"x\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&resp).as_deref(), Some("BAD_REQUEST"), "{resp}");
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("websocket"),
        "{resp}"
    );
}

#[tokio::test]
async fn nul_characters_are_bad_input_not_internal_errors() {
    // Found by schemathesis: a NUL reached PostgreSQL and came back INTERNAL_SERVER_ERROR.
    let app = TestApp::spawn().await;
    let literal = app
        .graphql(
            r#"{ namespaceGrants(namespace: "a\u0000b") { namespace } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(&literal).as_deref(),
        Some("BAD_USER_INPUT"),
        "{literal}"
    );
    let variable = app
        .graphql(
            "query($n: String) { namespaceGrants(namespace: $n) { namespace } }",
            json!({ "n": "a\u{0}b" }),
        )
        .await;
    assert_eq!(
        error_code(&variable).as_deref(),
        Some("BAD_USER_INPUT"),
        "{variable}"
    );
    // A namespace that cannot exist is bad input too.
    let bad = app
        .graphql(
            r#"{ namespaceGrants(namespace: "Not A Namespace") { namespace } }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_code(&bad).as_deref(), Some("BAD_USER_INPUT"), "{bad}");
}
