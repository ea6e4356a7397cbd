//! Faults, round 2 (issue 22): overload that says so, nothing dropped silently.

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

/// A gateway with a pool of `size` connections and a short wait for one.
async fn small_pool(size: usize) -> TestApp {
    TestApp::spawn_with(|c| {
        c.database.pool_size = size;
        // The default fail-fast wait; it also bounds connecting, which a loaded machine needs.
        c.database.wait_ms = 1000;
    })
    .await
}

/// A connection of `pool`, retrying creation (the short wait also bounds connecting, which a
/// loaded test machine can exceed).
async fn take(pool: &dataloaders::DbPool) -> dataloaders::DbConn {
    for _ in 0..100 {
        if let Ok(c) = pool.get().await {
            return c;
        }
    }
    panic!("no connection after 100 attempts")
}

#[tokio::test]
async fn a_full_pool_answers_overloaded_with_retry_after_not_database_unavailable() {
    let app = small_pool(2).await;
    let pool = app.state.services.pool.clone();
    // Every connection busy, the database healthy.
    let held = vec![take(&pool).await, take(&pool).await];
    let reply = app
        .graphql_with_headers("{ registries { totalCount } }", json!({}), &[])
        .await;
    let body = reply.json();
    assert_eq!(error_code(&body).as_deref(), Some("OVERLOADED"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], 1);
    assert!(
        !body.to_string().contains("database is unavailable"),
        "{body}"
    );
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(reply.headers["retry-after"], "1");
    drop(held);
    // With connections free again, the same request is answered (pooled connections reused).
    let ok = app
        .graphql("{ registries { totalCount } }", json!({}))
        .await;
    assert_ok(&ok);
}

#[tokio::test]
async fn a_burst_past_the_pool_answers_overloaded() {
    let app = small_pool(2).await;
    // Keep both connections busy for a while (slow statements on a healthy database).
    let pool = app.state.services.pool.clone();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(2);
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            let held = held_tx.clone();
            tokio::spawn(async move {
                use diesel_async::SimpleAsyncConnection;
                let mut c = take(&pool).await;
                held.send(()).await.unwrap();
                c.batch_execute("SELECT pg_sleep(4)").await.unwrap();
            })
        })
        .collect();
    for _ in 0..2 {
        held_rx.recv().await.unwrap();
    }
    let burst = (0..200).map(|i| {
        let app = &app;
        async move {
            // Distinct documents: no answer comes from the response cache.
            let q = format!(
                "query Q{i} {{ registries(first: {}) {{ totalCount }} }}",
                1 + i % 50
            );
            app.graphql_with_headers(&q, json!({}), &[]).await
        }
    });
    let replies = futures_util::future::join_all(burst).await;
    let mut overloaded = 0;
    for r in &replies {
        let body = r.json();
        match error_code(&body).as_deref() {
            Some("OVERLOADED") => {
                overloaded += 1;
                assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
                assert!(r.headers.contains_key("retry-after"));
            }
            None => {}
            other => panic!("unexpected code {other:?}: {body}"),
        }
    }
    assert!(overloaded > 0, "no request was refused for overload");
    for s in sleepers {
        s.await.unwrap();
    }
}

#[tokio::test]
async fn a_dead_database_is_still_upstream_unavailable() {
    let app = TestApp::spawn_with(|c| {
        c.database.database_url = "postgres://hivegraph:hivegraph@127.0.0.1:1/nowhere".into();
        c.database.wait_ms = 300;
    })
    .await;
    let reply = app
        .graphql_with_headers("{ registries { totalCount } }", json!({}), &[])
        .await;
    let body = reply.json();
    assert_eq!(
        error_code(&body).as_deref(),
        Some("UPSTREAM_UNAVAILABLE"),
        "{body}"
    );
    assert_ne!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

use crate::common::proxy;

#[tokio::test]
async fn an_audit_record_refused_during_an_outage_is_written_when_the_database_returns() {
    let pg = proxy::Proxy::postgres().await;
    let app = TestApp::spawn_with(|c| {
        c.database.database_url = pg.route(c.database.url()).into();
        c.database.wait_ms = 2000;
    })
    .await;
    // Warm the pool, then cut the database off.
    drop(take(&app.state.services.pool).await);
    assert_ok(
        &app.graphql("{ registries { totalCount } }", json!({}))
            .await,
    );
    pg.cut();
    let create = "mutation { createRegistry(input: {name: \"during-outage\", \
                  url: \"https://registry.example/registry.json\"}) { id } }";
    let refused = app.graphql(create, json!({})).await;
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("UPSTREAM_UNAVAILABLE"),
        "{refused}"
    );
    assert!(
        hivegraph::audit::backlog::waiting() >= 1,
        "the record waits in memory"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows = app
            .db
            .scalar(
                "SELECT count(*)::text FROM audit_log \
                 WHERE action = 'createRegistry' AND outcome = 'error' \
                   AND details->>'code' = 'UPSTREAM_UNAVAILABLE'",
            )
            .await;
        if rows.as_deref() == Some("1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the audit record was not written within 5 s of the database's return ({rows:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hivegraph::audit::backlog::waiting(), 0);
}

/// Connections the database dropped are not handed out again: the pool checks each on reuse
/// (its socket, and a `SELECT 1` when it sat idle), so the next read after an outage gets a
/// fresh connection instead of an error.
#[tokio::test]
async fn connections_the_database_dropped_are_replaced_not_handed_out() {
    let pg = proxy::Proxy::postgres().await;
    let app = TestApp::spawn_with(|c| {
        c.database.database_url = pg.route(c.database.url()).into();
        c.database.pool_size = 2;
        c.database.wait_ms = 2000;
    })
    .await;
    let pool = app.state.services.pool.clone();
    // Two pooled connections, both used a moment ago.
    let (a, b) = (take(&pool).await, take(&pool).await);
    drop((a, b));
    assert_ok(
        &app.graphql("{ registries { totalCount } }", json!({}))
            .await,
    );
    // The database drops them; it is back at once.
    pg.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    pg.restore();
    for round in 0..3 {
        let reply = app
            .graphql("{ registries { totalCount } }", json!({}))
            .await;
        assert!(
            reply.get("errors").is_none(),
            "read {round} after the drop: {reply}"
        );
    }
    assert!(pool.status().size <= 2);
}

use crate::common::registry_server;

#[tokio::test]
async fn names_repeated_in_a_legacy_servers_object_are_reported_as_skipped_duplicates() {
    crate::common::install_crypto();
    let app = TestApp::spawn_with(|c| c.serve.registries.allow_file_urls = true).await;
    // 500 definitions of one name, and one other server: a JSON map would keep one silently.
    let mut body = String::from(r#"{"version": "1.0.0", "servers": {"#);
    for i in 0..500 {
        body.push_str(&format!(
            r#""dup": {{"description": "definition {i}", "image": "ghcr.io/x/dup:1.0.{i}"}},"#
        ));
    }
    body.push_str(r#""single": {"description": "one", "image": "ghcr.io/x/single:1.0.0"}}}"#);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    std::fs::write(&path, body).unwrap();
    let url = url::Url::from_file_path(&path).unwrap();
    let id = registry_server::gql::create(&app, "dups", url.as_str(), json!({})).await;
    let reg = registry_server::gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 2, "{reg:#}");
    let report = &reg["lastSyncReport"];
    assert_eq!(report["skippedCount"], 499, "{report:#}");
    let first = &report["skipped"][0];
    assert_eq!(first["name"], "dup");
    assert!(
        first["reason"].as_str().unwrap().contains("duplicate"),
        "{first}"
    );
    // The first definition is the one kept, as in the array formats.
    let kept = app
        .db
        .scalar("SELECT description FROM servers WHERE original_name = 'dup'")
        .await;
    assert_eq!(kept.as_deref(), Some("definition 0"));
}
