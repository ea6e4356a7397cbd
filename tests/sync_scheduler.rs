//! The sync scheduler: due registries, retries with backoff, recovery of abandoned syncs, several
//! gateway processes on one database, and shutdown. Also the `hivegraph registry sync` command.

mod common;
#[path = "common/registry_server.rs"]
mod registry_server;

use std::sync::Arc;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use hivegraph::sync::SyncService;
use registry_server::{RegistryServer, gql};
use serde_json::json;

use common::TestApp;

async fn app() -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    TestApp::spawn().await
}

fn uuid_of(global: &str) -> uuid::Uuid {
    hivegraph::ids::decode(hivegraph::ids::Kind::Registry, global, "id").unwrap()
}

/// Runs one tick and waits for the syncs it started.
async fn tick(sync: &SyncService) -> hivegraph::sync::scheduler::Tick {
    let (tick, handles) = sync.tick().await.expect("tick");
    for h in handles {
        h.await.expect("sync task");
    }
    tick
}

/// A second "gateway process": its own pool and sync service on the same database.
fn other_process(app: &TestApp) -> SyncService {
    let config = hivegraph::config::Config::for_tests(&app.db.url);
    let pool = hivegraph::db::pool(&config.database).unwrap();
    SyncService::new(
        pool,
        Arc::new(hivegraph::secrets::Keyring::ephemeral()),
        &app.db.url,
        config.serve.sync.clone(),
        &config.serve.registries,
        hivegraph::cache::Caches::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn due_registries_sync_and_the_next_sync_is_an_interval_later() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let id = gql::create(
        &app,
        "sched",
        &srv.url("/files/toolhive-upstream-registry.json"),
        json!({ "syncIntervalSeconds": 600 }),
    )
    .await;
    let sync = &app.state.services.sync;
    let t = tick(sync).await;
    assert_eq!(
        t.started,
        vec![uuid_of(&id)],
        "a new registry is due at once"
    );
    let reg = gql::registry(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE");
    assert_eq!(reg["serverCount"], 12);
    assert_eq!(
        app.db
            .scalar("SELECT extract(epoch FROM next_sync_at - last_sync_at)::int FROM registries")
            .await
            .unwrap(),
        "600"
    );
    // Nothing is due now.
    assert!(tick(sync).await.started.is_empty());
    // Once due again, it is refreshed.
    let mut conn = app.db.conn().await;
    conn.batch_execute("UPDATE registries SET next_sync_at = now() - interval '1 second'")
        .await
        .unwrap();
    assert_eq!(tick(sync).await.started.len(), 1);
    assert_eq!(srv.state.requests("/files/").len(), 2);
}

#[tokio::test]
async fn failing_registries_are_retried_with_growing_backoff() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let id = gql::create(
        &app,
        "broken",
        &srv.url("/bad/500"),
        json!({ "syncIntervalSeconds": 100 }),
    )
    .await;
    let sync = &app.state.services.sync;
    let delay = || async {
        app.db
            .scalar("SELECT consecutive_failures || ' ' || round(extract(epoch FROM next_sync_at - updated_at)) FROM registries")
            .await
            .unwrap()
    };
    tick(sync).await;
    assert_eq!(gql::registry(&app, &id).await["status"], "ERROR");
    let d1 = delay().await;
    assert!(
        ["1 27", "1 28", "1 29", "1 30"].contains(&d1.as_str()),
        "{d1}"
    );
    let mut conn = app.db.conn().await;
    let make_due = "UPDATE registries SET next_sync_at = now() - interval '1 second'";
    conn.batch_execute(make_due).await.unwrap();
    tick(sync).await;
    let d2 = delay().await;
    assert!(
        d2.starts_with("2 ") && (54..=60).contains(&d2[2..].parse::<i32>().unwrap()),
        "{d2}"
    );
    conn.batch_execute(make_due).await.unwrap();
    tick(sync).await;
    assert_eq!(delay().await, "3 100", "capped at the registry's interval");
    // The upstream heals: the next retry succeeds and resets the count.
    gql::set_url(
        &app,
        &id,
        &srv.url("/files/toolhive-upstream-registry.json"),
    )
    .await;
    conn.batch_execute(make_due).await.unwrap();
    tick(sync).await;
    let reg = gql::registry(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE");
    assert_eq!(
        app.db
            .scalar("SELECT consecutive_failures FROM registries")
            .await
            .unwrap(),
        "0"
    );
}

#[tokio::test]
async fn abandoned_syncs_are_recovered_but_live_ones_are_not() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let crashed = gql::create(
        &app,
        "crashed",
        &srv.url("/files/toolhive-upstream-registry.json"),
        json!({}),
    )
    .await;
    let live = gql::create(
        &app,
        "live",
        &srv.url("/files/toolhive-upstream-registry.json"),
        json!({}),
    )
    .await;
    let mut conn = app.db.conn().await;
    // Both look stuck in SYNCING; `live` still has its lock held by another session (a sync
    // running in another process), `crashed` does not (its process died).
    conn.batch_execute(
        "UPDATE registries SET status = 'syncing', next_sync_at = now() + interval '1 hour'",
    )
    .await
    .unwrap();
    let key = hivegraph::db::AdvisoryLock::Sync(uuid_of(&live)).key();
    let mut other = app.db.conn().await;
    other
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .await
        .unwrap();

    let t = tick(&app.state.services.sync).await;
    assert_eq!(t.recovered, vec![uuid_of(&crashed)]);
    assert_eq!(
        t.started,
        vec![uuid_of(&crashed)],
        "a recovered registry is due at once"
    );
    let reg = gql::registry(&app, &crashed).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 12);
    assert_eq!(
        gql::registry(&app, &live).await["status"],
        "SYNCING",
        "a live sync is left alone"
    );

    // The other process dies: its lock goes with its connection, and the registry is recovered.
    drop(other);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = tick(&app.state.services.sync).await;
    assert_eq!(t.recovered, vec![uuid_of(&live)]);
    assert_eq!(gql::registry(&app, &live).await["status"], "ACTIVE");
}

#[tokio::test]
async fn several_processes_sync_each_due_registry_once() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let url = srv.url(&format!("/slow/300/toolhive-upstream-registry.json?r={i}"));
        ids.push(gql::create(&app, &format!("shared-{i}"), &url, json!({})).await);
    }
    let a = app.state.services.sync.clone();
    let b = other_process(&app);
    let c = other_process(&app);
    let (ta, tb, tc) = tokio::join!(tick(&a), tick(&b), tick(&c));
    let mut started: Vec<uuid::Uuid> = ta
        .started
        .into_iter()
        .chain(tb.started)
        .chain(tc.started)
        .collect();
    started.sort();
    started.dedup();
    let total = started.len();
    assert!(total <= 4);
    // Whatever is left is picked up by later ticks; no registry is ever synced twice.
    for _ in 0..4 {
        let (ta, tb) = tokio::join!(tick(&a), tick(&b));
        started.extend(ta.started.into_iter().chain(tb.started));
    }
    for id in &ids {
        assert_eq!(gql::registry(&app, id).await["status"], "ACTIVE");
    }
    for i in 0..4 {
        let fetches = srv
            .state
            .requests("/slow/")
            .into_iter()
            .filter(|s| s.query == format!("r={i}"))
            .count();
        assert_eq!(fetches, 1, "registry {i} was fetched {fetches} times");
    }
}

#[tokio::test]
async fn shutdown_interrupts_running_syncs_into_error_due_at_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = TestApp::spawn_with(|c| c.serve.sync.timeout_ms = 60_000).await;
    let srv = RegistryServer::start().await;
    let id = gql::create(&app, "hung", &srv.url("/bad/hang"), json!({})).await;
    let sync = app.state.services.sync.clone();
    let (row, handle) = sync
        .start(uuid_of(&id), None, Arc::new(hivegraph::sync::NoProgress))
        .await
        .unwrap();
    assert_eq!(row.status, dataloaders::enums::RegistryStatus::Syncing);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sync.shutdown(Duration::from_secs(5)).await;
    let outcome = handle.await.unwrap();
    assert_eq!(outcome.status, dataloaders::enums::RegistryStatus::Error);
    let reg = gql::registry(&app, &id).await;
    assert!(
        reg["lastError"].as_str().unwrap().contains("shutting down"),
        "{reg:#}"
    );
    assert_eq!(
        app.db
            .scalar("SELECT consecutive_failures || ' ' || (next_sync_at <= now()) FROM registries")
            .await
            .unwrap(),
        "0 true"
    );
    // After shutdown no new sync starts.
    let r = gql::trigger(&app, &id).await;
    assert_eq!(
        common::error_code(&r).as_deref(),
        Some("UPSTREAM_UNAVAILABLE")
    );
}

async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hivegraph"))
        .args(["registry", "sync"])
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("HIVEGRAPH_SYNC_TIMEOUT_MS", "2000")
        .env("HIVEGRAPH_SYNC_RETRIES", "0")
        // The test registries are served from loopback.
        .env("HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES", "true")
        .env("RUST_LOG", "warn")
        .env_remove("HIVEGRAPH_SECRET_KEY")
        .output()
        .await
        .expect("run hivegraph")
}

#[tokio::test]
async fn the_cli_syncs_by_name_id_or_all() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let id = gql::create(
        &app,
        "cli-one",
        &srv.url("/files/toolhive-registry.json"),
        json!({}),
    )
    .await;
    gql::create(
        &app,
        "cli-two",
        &srv.url("/files/toolhive-upstream-registry.json"),
        json!({}),
    )
    .await;

    let out = cli(&app, &["cli-one"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("registry cli-one: ACTIVE, 102 servers (79 container, 23 remote)"),
        "{stdout}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\u{1b}'),
        "no progress bar when stderr is not a terminal"
    );
    assert_eq!(gql::registry(&app, &id).await["serverCount"], 102);

    let out = cli(&app, &["--all", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["registry"], "cli-one");
    assert_eq!(results[0]["report"]["unchanged"], 102);
    assert_eq!(results[1]["serverCount"], 12);
    assert!(doc["peakRssMiB"].as_f64().unwrap() > 1.0);

    // By id, against a broken upstream: a readable error and a failing exit status.
    gql::set_url(&app, &id, &srv.url("/bad/html")).await;
    let out = cli(&app, &[&uuid_of(&id).to_string()]).await;
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("registry cli-one: ERROR") && stdout.contains("HTML page"),
        "{stdout}"
    );
    let out = cli(&app, &["no-such-registry"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no registry named"));
}
