//! Abuse resistance (rate limit, persisted operations), retention jobs and key rotation.

mod common;

use chrono::{Duration as Days, Utc};
use diesel_async::SimpleAsyncConnection;
use secrecy::SecretString;
use serde_json::json;

use common::{TestApp, TestDb, assert_ok, error_code};
use hivegraph::persisted::sha256_hex;

#[tokio::test]
async fn the_rate_limit_charges_query_cost_per_user_and_says_when_to_retry() {
    let app = TestApp::spawn_with(|c| {
        c.serve.limits.rate_limit_per_hour = 100;
        c.serve.limits.rate_limit_per_minute = 25;
    })
    .await;
    // Cheap queries cost 1 point each, and the answer says what is left.
    let r = app.graphql("{ viewer { subject } }", json!({})).await;
    assert_ok(&r);
    let rl = &r["extensions"]["rateLimit"];
    assert_eq!(
        (rl["limit"].as_u64(), rl["cost"].as_u64()),
        (Some(100), Some(1))
    );
    assert_eq!(rl["remaining"].as_u64(), Some(99));
    assert!(rl["resetAt"].as_str().is_some());
    // An expensive query (complexity ~ 20 x 20 children) costs more.
    let heavy = "{ registries(first: 20) { edges { node { servers(first: 20) { edges { node { id } } } } } } }";
    let r = app.graphql(heavy, json!({})).await;
    let cost = r["extensions"]["rateLimit"]["cost"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!((8..=20).contains(&cost), "cost grows with complexity: {r}");
    let mut used = 1 + cost;
    // A second one does not fit in the minute budget (25): refused before it runs.
    let r = app.graphql(heavy, json!({})).await;
    assert_eq!(error_code(&r).as_deref(), Some("RATE_LIMITED"), "{r}");
    // Spend the rest with cheap queries until a mutation (5 points) no longer fits.
    while used + 5 <= 25 {
        assert_ok(&app.graphql("{ viewer { subject } }", json!({})).await);
        used += 1;
    }
    let over = app
        .graphql(
            r#"mutation { createRegistry(input: { name: "rl", url: "https://127.0.0.1:9/r.json" }) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_code(&over).as_deref(), Some("RATE_LIMITED"), "{over}");
    let ext = &over["errors"][0]["extensions"];
    let retry = ext["retryAfterSeconds"].as_u64().unwrap();
    assert!((1..=60).contains(&retry), "{over}");
    assert_eq!(ext["limit"].as_u64(), Some(25));
    assert_eq!(app.db.count("registries").await, 0, "nothing ran");
}

#[tokio::test]
async fn only_persisted_operations_run_when_an_allow_list_is_set() {
    let listed = "query Who { viewer { subject } }";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ops.json");
    std::fs::write(&path, json!({ sha256_hex(listed): listed }).to_string()).unwrap();
    let app =
        TestApp::spawn_with(|c| c.serve.limits.persisted_operations = Some(path.clone())).await;
    // The listed document itself runs.
    assert_ok(&app.graphql(listed, json!({})).await);
    // So does its hash alone (APQ style).
    let body = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(listed) } } });
    let r = app
        .send(
            axum::http::Request::post("/graphql")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(r["data"]["viewer"]["subject"], json!("local"), "{r}");
    // Anything else is refused, with a code.
    let r = app.graphql("{ viewer { subject } }", json!({})).await;
    assert_eq!(error_code(&r).as_deref(), Some("OPERATION_NOT_ALLOWED"));
    let body = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": "00" } } });
    let r = app
        .send(
            axum::http::Request::post("/graphql")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(error_code(&r).as_deref(), Some("PERSISTED_QUERY_NOT_FOUND"));
    // A manifest whose digests do not match is refused at start-up.
    std::fs::write(&path, json!({ "00": listed }).to_string()).unwrap();
    let mut config = hivegraph::config::Config::for_tests(&app.db.url);
    config.serve.limits.persisted_operations = Some(path);
    assert!(config.validate().is_err());
}

const OLD_DATA: &str = r#"
INSERT INTO clusters (id, name, endpoint, status, access_level)
VALUES ('00000000-0000-0000-0000-0000000000c1', 'c1', 'https://127.0.0.1:1', 'connected', 'deploy');
INSERT INTO registries (id, name, url) VALUES ('00000000-0000-0000-0000-0000000000a1', 'r1', 'https://x.example/r.json');
INSERT INTO servers (id, registry_id, name, original_name, description, image, transport, tier, status)
VALUES ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000a1', 's', 's', 'd', 'ghcr.io/x/s:1', 'stdio', 'official', 'available');
INSERT INTO instances (id, server_id, cluster_id, name, namespace, status, phase, configuration)
VALUES ('00000000-0000-0000-0000-0000000000d1', '00000000-0000-0000-0000-0000000000b1',
        '00000000-0000-0000-0000-0000000000c1', 'i', 'ns', 'running', 'ready', '{"replicas": 1}');
INSERT INTO deployments (id, instance_id, server_id, operation, initiated_by, status, started_at, completed_at, parameters)
VALUES ('00000000-0000-0000-0000-0000000000e1', '00000000-0000-0000-0000-0000000000d1',
        '00000000-0000-0000-0000-0000000000b1', 'deploy', 'x', 'completed', now() - interval '3 years',
        now() - interval '3 years', '{"replicas": 1}');
INSERT INTO deployment_logs (deployment_id, logged_at, message)
SELECT '00000000-0000-0000-0000-0000000000e1', now() - make_interval(days => d), 'line'
FROM generate_series(0, 59) AS d;
INSERT INTO audit_log (at, actor, action, outcome)
SELECT now() - make_interval(days => d * 10), 'a', 'x', 'success' FROM generate_series(0, 49) AS d;
"#;

#[tokio::test]
async fn retention_keeps_logs_30_days_audit_one_year_and_configuration_forever() {
    let app = TestApp::spawn().await;
    app.db.conn().await.batch_execute(OLD_DATA).await.unwrap();
    let pool = &app.state.services.pool;
    // Another replica holds the lock: this one skips.
    let mut other = app.db.conn().await;
    other
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({})",
            hivegraph::db::AdvisoryLock::Retention.key()
        ))
        .await
        .unwrap();
    let skipped = hivegraph::retention::run_once(pool, Utc::now())
        .await
        .unwrap();
    assert!(!skipped.ran);
    assert_eq!(app.db.count("deployment_logs").await, 60);
    other
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock({})",
            hivegraph::db::AdvisoryLock::Retention.key()
        ))
        .await
        .unwrap();

    let r = hivegraph::retention::run_once(pool, Utc::now())
        .await
        .unwrap();
    assert!(r.ran);
    // Log lines 0..=29 days old stay (30 lines); 30..59 go.
    assert_eq!(r.deployment_logs, 30);
    assert_eq!(app.db.count("deployment_logs").await, 30);
    // Audit records every 10 days: 0..=360 days stay (37), 370..490 go (13).
    assert_eq!(r.audit_records, 13);
    assert_eq!(app.db.count("audit_log").await, 37);
    // A year later (injected clock): the rest of the audit log goes, configuration stays.
    let later = Utc::now() + Days::days(400);
    let r = hivegraph::retention::run_once(pool, later).await.unwrap();
    assert_eq!(r.audit_records, 37);
    assert_eq!(app.db.count("deployment_logs").await, 0);
    assert_eq!(
        app.db.count("deployments").await,
        1,
        "configuration history is kept"
    );
    assert_eq!(
        app.db
            .scalar("SELECT parameters->>'replicas' FROM deployments")
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(app.db.count("instances").await, 1);
}

fn key(byte: u8) -> SecretString {
    use base64::Engine;
    SecretString::from(base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

#[tokio::test]
async fn keys_rotate_reencrypts_every_secret_under_the_current_key() {
    let db = TestDb::new().await;
    let old = hivegraph::secrets::Keyring::new(&key(1), &[]).unwrap();
    let state =
        hivegraph::server::build_state(hivegraph::config::Config::for_tests(&db.url), old).unwrap();
    let actor = hivegraph::audit::Actor {
        name: "t".into(),
        request_id: "r".into(),
    };
    let auth = hivegraph::registries::validate_auth(hivegraph::registries::AuthInput {
        bearer_token: Some("rotate-me-token".into()),
        username: None,
        password: None,
        header_name: None,
        header_value: None,
    })
    .unwrap();
    let row = hivegraph::registries::store::create(
        &state.services.pool,
        &state.services.keys,
        &actor,
        hivegraph::registries::NewRegistry {
            name: "private".into(),
            url: "https://x.example/r.json".into(),
            description: None,
            format: dataloaders::enums::RegistryFormat::Auto,
            sync_interval_seconds: 3600,
            metadata: json!({}),
            auth: Some(auth),
        },
    )
    .await
    .unwrap();
    let kid = || async {
        db.scalar("SELECT auth_config->>'kid' FROM registries")
            .await
    };
    let before = kid().await;
    let rotating = hivegraph::secrets::Keyring::new(&key(2), &[key(1)]).unwrap();
    let report = hivegraph::keys::rotate(&db.url, &rotating).await.unwrap();
    assert_eq!((report.rotated, report.current), (1, 0));
    let after = kid().await;
    assert_ne!(before, after);
    assert_eq!(after.as_deref(), Some(rotating.current_key_id()));
    // Running it again changes nothing; the new key alone now opens the secret.
    let again = hivegraph::keys::rotate(&db.url, &rotating).await.unwrap();
    assert_eq!((again.rotated, again.current), (0, 1));
    let new_only = hivegraph::secrets::Keyring::new(&key(2), &[]).unwrap();
    let mut conn = db.conn().await;
    let stored: dataloaders::models::RegistryRow = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        dataloaders::schema::registries::table
            .find(row.id)
            .select(dataloaders::models::RegistryRow::as_select())
            .first(&mut conn)
            .await
            .unwrap()
    };
    assert!(hivegraph::registries::store::open_auth(&new_only, &stored).is_ok());
    let old_only = hivegraph::secrets::Keyring::new(&key(1), &[]).unwrap();
    assert!(hivegraph::registries::store::open_auth(&old_only, &stored).is_err());
}

#[tokio::test]
async fn answers_from_the_response_cache_are_charged_like_executions() {
    let app = TestApp::spawn_with(|c| {
        c.serve.limits.rate_limit_per_hour = 1000;
        c.serve.limits.rate_limit_per_minute = 100;
    })
    .await;
    let q = "{ registries(first: 20) { edges { node { servers(first: 20) { totalCount } } } } }";
    // Until the change listener has connected (it empties every cache when it does), an answer
    // may be executed again: ask until one comes from the cache.
    let mut last: Option<serde_json::Value> = None;
    let mut hit = None;
    for _ in 0..50 {
        let r = app.graphql_with_headers(q, json!({}), &[]).await;
        let from_cache = r.headers["x-hivegraph-cache"] == "hit";
        let body = r.json();
        assert_ok(&body);
        if from_cache {
            hit = Some(body);
            break;
        }
        last = Some(body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (executed, hit) = (last.expect("executed first"), hit.expect("then cached"));
    assert_eq!(hit["data"], executed["data"]);
    let (was, now) = (
        &executed["extensions"]["rateLimit"],
        &hit["extensions"]["rateLimit"],
    );
    let cost = was["cost"].as_u64().unwrap();
    assert!(cost > 1, "{executed}");
    assert_eq!(now["cost"].as_u64(), Some(cost));
    assert_eq!(
        now["remaining"].as_u64(),
        Some(was["remaining"].as_u64().unwrap() - cost),
        "{hit}"
    );
    assert!(now["resetAt"].as_str().is_some());
    // Once the minute's budget is spent, a cached answer is refused like any other.
    let mut refused = None;
    for _ in 0..100 {
        let r = app.graphql(q, json!({})).await;
        if r["errors"].is_array() {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the budget runs out");
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("RATE_LIMITED"),
        "{refused}"
    );
    assert!(refused["data"].is_null(), "{refused}");
}
