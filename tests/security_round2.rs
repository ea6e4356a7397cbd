//! Security, round 2 (issue #14): each test fails on the code before it.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use hivegraph::config::{AuthMode, Mode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// `levels` fragments, each spreading the next 10 times: 10^levels visits when expanded.
fn fragment_bomb(levels: usize) -> String {
    let mut q = String::from("query { ...F0 }\n");
    for i in 0..levels {
        let spreads = format!("...F{} ", i + 1).repeat(10);
        q.push_str(&format!("fragment F{i} on QueryRoot {{ {spreads} }}\n"));
    }
    q.push_str(&format!(
        "fragment F{levels} on QueryRoot {{ __typename }}\n"
    ));
    q
}

fn post_json(body: Value) -> Request<Body> {
    Request::post("/graphql")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_bomb_is_refused_at_once_and_health_stays_fast() {
    let app = TestApp::spawn().await;
    let bomb = fragment_bomb(12);
    assert!(bomb.len() < 2_000, "{} bytes", bomb.len());
    // Sixteen at once: before, each walked 10^12 spreads and never yielded.
    let mut running = Vec::new();
    for _ in 0..16 {
        let router = app.router.clone();
        let req = post_json(json!({ "query": bomb }));
        running.push(tokio::spawn(async move {
            let started = Instant::now();
            let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (started.elapsed(), body)
        }));
    }
    let started = Instant::now();
    let health = app.get("/healthz").await;
    let health_took = started.elapsed();
    assert_eq!(health.status, StatusCode::OK);
    for r in running {
        let (took, body) = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("the bomb is answered")
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error_code(&v).as_deref(), Some("QUERY_TOO_COMPLEX"), "{v}");
        // Expanding the bomb would take minutes; a refusal takes microseconds. The bound leaves
        // room for a loaded debug build (speed itself is measured in scripts/bench, not here).
        assert!(took < Duration::from_secs(2), "answered in {took:?}");
    }
    assert!(
        health_took < Duration::from_secs(1),
        "/healthz took {health_took:?}"
    );
}

#[tokio::test]
async fn the_rate_limit_is_charged_before_the_document_is_walked() {
    let app = TestApp::spawn_with(|c| {
        c.serve.limits.rate_limit_per_minute = 3;
        c.serve.limits.rate_limit_per_hour = 0;
    })
    .await;
    let bomb = fragment_bomb(12);
    for _ in 0..3 {
        let v = app.graphql(&bomb, json!({})).await;
        assert_eq!(error_code(&v).as_deref(), Some("QUERY_TOO_COMPLEX"), "{v}");
    }
    let v = app.graphql(&bomb, json!({})).await;
    assert_eq!(error_code(&v).as_deref(), Some("RATE_LIMITED"), "{v}");
}

#[tokio::test]
async fn mutation_cost_follows_fragments() {
    let app = TestApp::spawn_with(|c| {
        c.serve.limits.rate_limit_per_minute = 100;
        c.serve.limits.rate_limit_per_hour = 0;
    })
    .await;
    // Three deployServer (3 x 50 points) hidden in an inline fragment are over a budget of 100.
    let deploys: String = (0..3)
        .map(|i| format!("d{i}: deployServer(input: {{ serverId: \"x\", clusterId: \"y\", namespace: \"n\" }}) {{ id }} "))
        .collect();
    let q = format!("mutation {{ ... on MutationRoot {{ {deploys} }} }}");
    let v = app.graphql(&q, json!({})).await;
    assert_eq!(error_code(&v).as_deref(), Some("RATE_LIMITED"), "{v}");
}

#[tokio::test]
async fn operation_names_cannot_grow_the_metrics() {
    let app = TestApp::spawn().await;
    let long = "N".repeat(100 * 1024);
    // Warm up (first plans, first labels, allocator pools), then measure from there.
    for i in 0..20 {
        let q = format!("query warm{i} {{ __typename }}");
        app.send(post_json(json!({ "query": q }))).await;
    }
    let start = resident_bytes();
    for i in 0..1000 {
        let q = format!("query {long}{i} {{ __typename }}");
        let reply = app.send(post_json(json!({ "query": q }))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Before the caches refused large keys, this grew by about 280 MB.
    let grown = resident_bytes().saturating_sub(start);
    assert!(
        grown < 50 << 20,
        "the process grew by {} MB over 1,000 unique 100 KB names",
        grown >> 20
    );
    let metrics = app.get("/metrics").await;
    assert!(
        metrics.text.len() < 1_000_000,
        "{} bytes",
        metrics.text.len()
    );
    assert!(metrics.text.contains("operation=\"other\""));
    let plans = app.state.services.caches.responses().plan_bytes();
    assert!(
        plans <= hivegraph::cache::responses::MAX_PLAN_BYTES,
        "{plans} bytes of plans"
    );
}

#[tokio::test]
async fn foreign_hosts_and_cross_origin_websockets_are_refused_in_none_mode() {
    let app = TestApp::spawn_with(|c| c.serve.listen = "127.0.0.1:8080".parse().unwrap()).await;
    // DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1.
    let rebound = Request::post("/graphql")
        .header("host", "evil.example:8080")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "query": "{ viewer { subject } }" }).to_string(),
        ))
        .unwrap();
    let reply = app.send(rebound).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    // A cross-site websocket.
    let upgrade = |origin: &str| {
        Request::get("/graphql")
            .header("host", "127.0.0.1:8080")
            .header("origin", origin)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "graphql-transport-ws")
            .body(Body::empty())
            .unwrap()
    };
    let reply = app.send(upgrade("https://evil.example")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    // The local names still work.
    let local = Request::post("/graphql")
        .header("host", "localhost:8080")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "query": "{ viewer { subject } }" }).to_string(),
        ))
        .unwrap();
    assert_eq!(app.send(local).await.status, StatusCode::OK);
    // Each refusal is audited.
    let mut audited = 0;
    for _ in 0..50 {
        audited = app
            .db
            .scalar("SELECT count(*)::text FROM audit_log WHERE action = 'crossOriginRequest' AND outcome = 'denied'")
            .await
            .unwrap_or_default()
            .parse::<i64>()
            .unwrap_or(0);
        if audited >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(audited, 2);
}

const SECRET: &str = "round2-test-secret-0123456789abcdef";

fn bearer(sub: &str, roles: &[&str], exp: Value) -> String {
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp, "roles": roles }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {t}")
}

#[tokio::test]
async fn a_token_without_a_role_reads_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.serve.auth = AuthMode::Jwt;
        c.serve.jwt.jwt_secret = Some(SECRET.into());
    })
    .await;
    let exp = json!(chrono::Utc::now().timestamp() + 3600);
    let none = bearer("mallory", &[], exp.clone());
    for q in [
        "{ registries { totalCount } }",
        "{ servers { totalCount } }",
        "{ clusters { totalCount } }",
    ] {
        let v = app
            .graphql_with_headers(q, json!({}), &[("authorization", &none)])
            .await
            .json();
        assert_eq!(error_code(&v).as_deref(), Some("FORBIDDEN"), "{q}: {v}");
    }
    let viewer = bearer("vera", &["viewer"], exp);
    let v = app
        .graphql_with_headers(
            "{ registries { totalCount } }",
            json!({}),
            &[("authorization", &viewer)],
        )
        .await
        .json();
    assert_ok(&v);
}

#[test]
fn production_refuses_unsafe_authentication() {
    let mut c = hivegraph::config::Config::for_tests("postgres://x");
    c.serve.mode = Mode::Production;
    assert!(c.validate().unwrap_err().contains("HIVEGRAPH_AUTH=none"));
    c.serve.auth = AuthMode::Jwt;
    c.serve.jwt.jwt_secret = Some(SECRET.into());
    assert!(c.validate().unwrap_err().contains("HIVEGRAPH_JWT_AUDIENCE"));
    c.serve.jwt.jwt_audience = Some("hivegraph".into());
    assert!(c.validate().unwrap_err().contains("ISSUER"));
    c.serve.jwt.jwt_issuer = Some("https://idp.example".into());
    assert_eq!(c.validate(), Ok(()));
}

#[tokio::test]
async fn production_keeps_sql_debugging_off_and_can_guard_metrics() {
    let app = TestApp::spawn_with(|c| {
        c.serve.mode = Mode::Production;
        c.serve.metrics_token = Some("scrape-me".into());
    })
    .await;
    let reply = app
        .graphql_with_headers("{ __typename }", json!({}), &[("x-hivegraph-debug", "sql")])
        .await;
    let v = reply.json();
    assert!(v["extensions"].get("sqlStatements").is_none(), "{v}");
    assert_eq!(app.get("/metrics").await.status, StatusCode::UNAUTHORIZED);
    let wrong = Request::get("/metrics")
        .header("authorization", "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(wrong).await.status, StatusCode::UNAUTHORIZED);
    let right = Request::get("/metrics")
        .header("authorization", "Bearer scrape-me")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(right).await.status, StatusCode::OK);
}

#[tokio::test]
async fn registry_urls_with_credentials_in_the_query_are_refused() {
    let app = TestApp::spawn().await;
    let v = app
        .graphql(
            r#"mutation { createRegistry(input: { name: "leaky", url: "https://registry.example/r.json?access_token=abc" }) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_code(&v).as_deref(), Some("BAD_USER_INPUT"), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("authConfig"),
        "{v}"
    );
    assert_eq!(app.db.count("registries").await, 0);
}

#[tokio::test]
async fn cursors_and_log_arguments_are_bounded() {
    let app = TestApp::spawn().await;
    let long = "A".repeat(100_000);
    let v = app
        .graphql(
            "query($a: String) { servers(after: $a) { totalCount } }",
            json!({ "a": long }),
        )
        .await;
    assert_eq!(error_code(&v).as_deref(), Some("BAD_USER_INPUT"), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most"),
        "{v}"
    );
    // Instance.logs has a real cost: fifteen aliased reads of 10,000 lines are too complex.
    let logs: String = (0..15)
        .map(|i| format!("l{i}: logs(tailLines: 10000) {{ lines }} "))
        .collect();
    let q = format!("{{ instances(first: 100) {{ edges {{ node {{ {logs} }} }} }} }}");
    let v = app.graphql(&q, json!({})).await;
    assert_eq!(error_code(&v).as_deref(), Some("QUERY_TOO_COMPLEX"), "{v}");
}

#[tokio::test]
async fn an_anonymous_refused_request_writes_one_audit_row() {
    let app = TestApp::spawn_with(|c| {
        c.serve.auth = AuthMode::Jwt;
        c.serve.jwt.jwt_secret = Some(SECRET.into());
    })
    .await;
    let fields: String = (0..15)
        .map(|i| format!("r{i}: createRegistry(input: {{ name: \"n{i}\", url: \"https://r.example/{i}.json\" }}) {{ id }} "))
        .collect();
    let v = app
        .graphql(&format!("mutation {{ {fields} }}"), json!({}))
        .await;
    assert!(v["errors"].is_array(), "{v}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = app
        .db
        .scalar("SELECT count(*)::text FROM audit_log WHERE outcome = 'denied'")
        .await;
    assert_eq!(rows.as_deref(), Some("1"), "{v}");
}

/// This process's resident memory (the gateway runs in-process), from /proc.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}
