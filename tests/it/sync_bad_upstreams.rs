//! Bad upstreams (shared/docs/hardening.md §6, R1–R4): each leaves its registry in ERROR with a
//! clear message, the servers of the last good sync untouched, and other registries unaffected.

use crate::common;
use crate::common::registry_server;

use std::time::Instant;

use registry_server::{RegistryServer, gql};
use serde_json::json;

use common::TestApp;

/// A gateway with a short request timeout, so that the hanging server fails fast.
async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.serve.sync.timeout_ms = 1_000;
        c.serve.sync.connect_timeout_ms = 500;
        c.serve.sync.retries = 1;
        c.serve.sync.retry_base_ms = 20;
    })
    .await
}

/// Syncs a good registry, points it at `bad_path`, syncs again, and checks that the registry is
/// in ERROR with a message containing `expect`, that no server changed, and that another
/// registry stays ACTIVE. Returns the failed registry.
async fn bad_upstream(bad_path: &str, expect: &[&str]) -> serde_json::Value {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let good = srv.url("/files/toolhive-upstream-registry.json");
    let id = gql::create(&app, "victim", &good, json!({})).await;
    let bystander = gql::create(
        &app,
        "bystander",
        &srv.url("/files/toolhive-registry.json"),
        json!({}),
    )
    .await;
    assert_eq!(gql::sync(&app, &id).await["status"], "ACTIVE");
    assert_eq!(gql::sync(&app, &bystander).await["status"], "ACTIVE");
    let before = gql::servers_fingerprint(&app).await;
    let last_good = gql::registry(&app, &id).await;

    gql::set_url(&app, &id, &srv.url(bad_path)).await;
    let t0 = Instant::now();
    let reg = gql::sync(&app, &id).await;
    let took = t0.elapsed();
    assert_eq!(reg["status"], "ERROR", "{reg:#}");
    let err = reg["lastError"].as_str().expect("a readable lastError");
    for e in expect {
        assert!(err.contains(e), "{bad_path}: {err:?} should mention {e:?}");
    }
    assert!(
        !err.contains(bad_path),
        "errors name the host, never the URL: {err}"
    );
    assert_eq!(
        reg["serverCount"], 12,
        "the count of the last good sync stays"
    );
    assert_eq!(
        reg["lastSyncAt"], last_good["lastSyncAt"],
        "lastSyncAt is the last successful sync"
    );
    assert_eq!(reg["lastSyncReport"]["succeeded"], false);
    assert_eq!(reg["lastSyncReport"]["error"], err);
    assert_eq!(
        gql::servers_fingerprint(&app).await,
        before,
        "no server row changed"
    );
    assert_eq!(app.db.count("servers").await, 12 + 102);
    // A failure is counted and retried later with backoff (30 s base, below the interval).
    let row = app
        .db
        .scalar(
            "SELECT consecutive_failures || ' ' || (extract(epoch FROM next_sync_at - now()) BETWEEN 20 AND 31) \
             FROM registries WHERE name = 'victim'",
        )
        .await
        .unwrap();
    assert_eq!(row, "1 true");
    assert_eq!(gql::registry(&app, &bystander).await["status"], "ACTIVE");
    assert!(took.as_secs() < 10, "the bad upstream took {took:?}");

    // The upstream recovers: the next sync clears the error.
    gql::set_url(&app, &id, &good).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE");
    assert!(reg["lastError"].is_null());
    assert_eq!(
        app.db
            .scalar("SELECT consecutive_failures FROM registries WHERE name = 'victim'")
            .await
            .unwrap(),
        "0"
    );
    reg
}

#[tokio::test]
async fn garbage_json() {
    bad_upstream("/bad/garbage", &["not valid JSON", "line 1"]).await;
}

#[tokio::test]
async fn html_page() {
    bad_upstream("/bad/html", &["HTML page"]).await;
}

#[tokio::test]
async fn fifty_megabyte_body_streamed() {
    bad_upstream("/bad/huge", &["larger than the 10 MiB limit", "127.0.0.1"]).await;
}

#[tokio::test]
async fn fifty_megabyte_body_declared() {
    bad_upstream("/bad/huge-declared", &["larger than the 10 MiB limit"]).await;
}

#[tokio::test]
async fn hanging_server() {
    bad_upstream("/bad/hang", &["did not answer within 1 s"]).await;
}

#[tokio::test]
async fn unauthorized_401() {
    bad_upstream("/bad/401", &["HTTP 401", "credentials"]).await;
}

#[tokio::test]
async fn redirect_loop() {
    bad_upstream("/bad/loop-a", &["redirected more than 5 times"]).await;
}

#[tokio::test]
async fn server_error_500_after_retries() {
    bad_upstream("/bad/500", &["HTTP 500"]).await;
}

#[tokio::test]
async fn not_a_registry_document() {
    bad_upstream("/bad/empty-object", &["not a registry format"]).await;
}

#[tokio::test]
async fn unreachable_host() {
    // Nothing listens on the port of a dropped listener.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = app().await;
    let id = gql::create(
        &app,
        "nowhere",
        &format!("http://127.0.0.1:{port}/registry.json"),
        json!({}),
    )
    .await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ERROR");
    let err = reg["lastError"].as_str().unwrap();
    assert!(
        err.contains("could not connect") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let app = TestApp::spawn_with(|c| {
        c.serve.sync.retries = 2;
        c.serve.sync.retry_base_ms = 20;
    })
    .await;
    let srv = RegistryServer::start().await;
    let id = gql::create(&app, "flaky", &srv.url("/bad/flaky"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 12);
    assert_eq!(
        srv.state.requests("/bad/flaky").len(),
        3,
        "two 503s, then success"
    );

    // Retries are bounded: with one retry allowed, the same two 503s fail the sync.
    let app = TestApp::spawn_with(|c| {
        c.serve.sync.retries = 1;
        c.serve.sync.retry_base_ms = 20;
    })
    .await;
    let srv = RegistryServer::start().await;
    let id = gql::create(&app, "flaky", &srv.url("/bad/flaky"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ERROR");
    assert!(reg["lastError"].as_str().unwrap().contains("HTTP 503"));
    assert_eq!(srv.state.requests("/bad/flaky").len(), 2);
}

#[tokio::test]
async fn redirects_are_followed_within_limits() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let id = gql::create(&app, "moved", &srv.url("/bad/redirect-ok"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 12);
}

/// R4 (SSRF): by default a registry may not live at, or redirect to, a loopback, private or
/// link-local address. Creation refuses such URLs with a typed error and writes nothing.
#[tokio::test]
async fn private_addresses_are_refused_when_registries_are_created() {
    let app = TestApp::spawn_with(|c| c.serve.registries.allow_private_networks = false).await;
    for url in [
        "http://127.0.0.1:8080/registry.json",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/registry.json",
        "http://localhost:5432/",
        "http://10.0.0.8/registry.json",
    ] {
        let r = app
            .graphql(
                "mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }",
                json!({ "i": { "name": "inner", "url": url } }),
            )
            .await;
        let e = &r["errors"][0];
        assert_eq!(e["extensions"]["code"], "BAD_USER_INPUT", "{url}: {r}");
        assert_eq!(e["extensions"]["field"], "url", "{url}: {r}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES"),
            "{url}: {r}"
        );
    }
    assert_eq!(app.db.count("registries").await, 0, "nothing was written");
}

/// A registry URL stored while private networks were allowed is still refused at fetch time once
/// they are not: the check runs before every request, not only at creation.
#[tokio::test]
async fn private_addresses_are_refused_at_fetch_time() {
    let srv = RegistryServer::start().await;
    let app = TestApp::spawn_with(|c| {
        c.serve.registries.allow_private_networks = false;
        c.serve.sync.retries = 0;
    })
    .await;
    let url = srv.url("/files/toolhive-registry.json");
    {
        use diesel_async::RunQueryDsl;
        let mut c = app.db.conn().await;
        diesel::sql_query(format!(
            "INSERT INTO registries (name, url) VALUES ('stored', '{url}')"
        ))
        .execute(&mut c)
        .await
        .expect("insert the registry row");
    }
    let id = app
        .db
        .scalar("SELECT id FROM registries WHERE name = 'stored'")
        .await
        .expect("the registry row");
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ERROR", "{reg:#}");
    let err = reg["lastError"].as_str().unwrap();
    assert!(
        err.contains("refused to connect") && err.contains("HIVEGRAPH_ALLOW_PRIVATE_REGISTRIES"),
        "{err}"
    );
    assert!(
        srv.state.requests("/files/").is_empty(),
        "no request reached the private address"
    );
    assert_eq!(app.db.count("servers").await, 0);
}

/// Each redirect hop is checked against the allow-list: a registry that redirects to the cloud
/// metadata address is refused before the request is made.
#[tokio::test]
async fn redirects_are_rechecked_against_the_allow_list() {
    let srv = RegistryServer::start().await;
    let app = TestApp::spawn_with(|c| {
        c.serve.registries.allowed_hosts = vec!["127.0.0.1".into()];
        c.serve.sync.retries = 0;
    })
    .await;
    // A host off the list is refused at creation.
    let r = app
        .graphql(
            "mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }",
            json!({ "i": { "name": "elsewhere", "url": "https://registry.example.com/r.json" } }),
        )
        .await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{r}"
    );
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("allow-list"),
        "{r}"
    );
    let id = gql::create(&app, "hopper", &srv.url("/bad/to-metadata"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ERROR", "{reg:#}");
    let err = reg["lastError"].as_str().unwrap();
    assert!(
        err.contains("refused to follow a redirect") && err.contains("169.254.169.254"),
        "{err}"
    );
}
