//! Registry sync against the real data corpus (../shared/data, served from a loopback server):
//! formats, normalisation, identity across syncs, vanished servers, auth, locking and caching.

use crate::common;
use crate::common::registry_server;

use std::collections::BTreeSet;

use diesel_async::SimpleAsyncConnection;
use registry_server::{FakeMcp, RegistryServer, data_json, gql};
use serde_json::{Value, json};

use common::{TestApp, assert_ok, error_code};

async fn app() -> TestApp {
    TestApp::spawn().await
}

fn uuid_of(global: &str) -> uuid::Uuid {
    hivegraph::ids::decode(hivegraph::ids::Kind::Registry, global, "id").unwrap()
}

/// The eight seed entries whose OCI `identifier` is not a container image reference (npm names
/// such as `@edubase/mcp` filed as OCI, and an upper-case Docker Hub name).
const SEED_BAD_OCI: [&str; 8] = [
    "io.github.alexarevalo9/ticktick-mcp-server",
    "io.github.edubase/mcp",
    "io.github.gongrzhe/redis-mcp-server",
    "io.github.kiwamizamurai/mcp-kibela-server",
    "io.github.lingodotdev/lingo.dev",
    "io.github.nota/gyazo-mcp-server",
    "io.github.omedia/mcp-server-drupal",
    "io.github.translated/lara-mcp",
];

#[tokio::test]
async fn toolhive_registry_json_syncs_to_102_servers() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let id = gql::create(
        &app,
        "toolhive",
        &srv.url("/files/toolhive-registry.json"),
        json!({}),
    )
    .await;

    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 102);
    assert!(reg["lastSyncAt"].is_string());
    assert!(reg["lastError"].is_null());
    let report = &reg["lastSyncReport"];
    assert_eq!(report["succeeded"], true);
    assert_eq!(
        report["format"], "TOOLHIVE",
        "AUTO detects the legacy format"
    );
    assert_eq!(report["mode"], "FULL");
    assert_eq!(
        (
            report["containerServers"].as_i64(),
            report["remoteServers"].as_i64()
        ),
        (Some(79), Some(23))
    );
    assert_eq!(
        (report["added"].as_i64(), report["skippedCount"].as_i64()),
        (Some(102), Some(0))
    );
    assert_eq!(app.db.count("servers").await, 102);
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE image IS NOT NULL AND url IS NULL")
            .await
            .unwrap(),
        "79"
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE image IS NULL AND url IS NOT NULL")
            .await
            .unwrap(),
        "23"
    );
    // next sync = last sync + the interval
    let gap = app
        .db
        .scalar("SELECT extract(epoch FROM next_sync_at - last_sync_at)::int FROM registries")
        .await
        .unwrap();
    assert_eq!(gap, "3600");
    assert_eq!(
        app.db
            .scalar("SELECT consecutive_failures FROM registries")
            .await
            .unwrap(),
        "0"
    );

    // One container and one remote server, field by field.
    let r = app
        .graphql(
            "query($id: ID!) { registry(id: $id) { servers(first: 100) { totalCount edges { node {
                name originalName version image url transport tier status category capabilities repositoryUrl
                networkPermissions stars pullCount lastUpdated deploymentRequirements } } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_ok(&r);
    let nodes: Vec<Value> = r["data"]["registry"]["servers"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let by_name = |n: &str| {
        nodes
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n}"))
    };
    let fetch = by_name("fetch");
    assert_eq!(fetch["originalName"], "fetch");
    assert_eq!(fetch["image"], "ghcr.io/stackloklabs/gofetch/server:1.0.3");
    assert_eq!(fetch["version"], "1.0.3");
    assert_eq!(fetch["transport"], "HTTP");
    assert_eq!(fetch["tier"], "COMMUNITY");
    assert_eq!(fetch["status"], "AVAILABLE");
    assert_eq!(fetch["capabilities"], json!(["fetch"]));
    assert!(
        fetch["category"]
            .as_array()
            .unwrap()
            .contains(&json!("html"))
    );
    assert_eq!(
        fetch["repositoryUrl"],
        "https://github.com/stackloklabs/gofetch"
    );
    assert_eq!(
        fetch["networkPermissions"]["outbound"]["insecureAllowAll"],
        true
    );
    assert_eq!(
        fetch["networkPermissions"]["outbound"]["allowPort"],
        json!([443])
    );
    assert_eq!(fetch["deploymentRequirements"]["targetPort"], 8080);
    assert_eq!(fetch["stars"], 20);
    assert_eq!(fetch["lastUpdated"], "2026-02-18T00:05:37+00:00");
    let github = by_name("github-remote");
    assert!(github["image"].is_null());
    assert_eq!(github["url"], "https://api.githubcopilot.com/mcp");
    assert_eq!(github["transport"], "HTTP");
    assert_eq!(github["tier"], "OFFICIAL");
    assert!(github["deploymentRequirements"]["oauth"]["authorize_url"].is_string());
    let deprecated = app
        .db
        .scalar("SELECT string_agg(name, ',') FROM servers WHERE status = 'deprecated'")
        .await;
    assert_eq!(deprecated.as_deref(), Some("genai-toolbox"));
    // Env vars keep their required and secret flags.
    let secret_vars = app
        .db
        .scalar(
            "SELECT count(*) FROM servers, jsonb_array_elements(deployment_requirements->'envVars') v \
             WHERE (v->>'secret')::bool",
        )
        .await
        .unwrap();
    assert!(secret_vars.parse::<i64>().unwrap() > 0);
    // Transport mapping over the whole file: stdio 60, streamable-http 14 + 19, sse 5 + 4.
    let transports = app
        .db
        .scalar("SELECT string_agg(transport || '=' || n, ',' ORDER BY transport) FROM (SELECT transport, count(*) n FROM servers GROUP BY 1) t")
        .await
        .unwrap();
    assert_eq!(transports, "http=33,sse=9,stdio=60");

    // A second sync keeps every identity and rewrites nothing.
    let ids_before = app
        .db
        .scalar("SELECT md5(string_agg(id::text || name, ',' ORDER BY id)) FROM servers")
        .await;
    let fingerprint = gql::servers_fingerprint(&app).await;
    let again = gql::sync(&app, &id).await;
    assert_eq!(again["status"], "ACTIVE");
    assert_eq!(again["lastSyncReport"]["unchanged"], 102);
    assert_eq!(again["lastSyncReport"]["added"], 0);
    assert_eq!(again["lastSyncReport"]["updated"], 0);
    assert_eq!(
        app.db
            .scalar("SELECT md5(string_agg(id::text || name, ',' ORDER BY id)) FROM servers")
            .await,
        ids_before
    );
    assert_eq!(
        gql::servers_fingerprint(&app).await,
        fingerprint,
        "unchanged rows are not rewritten"
    );
    // Each attempt is audited with who asked.
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM audit_log WHERE action = 'syncRegistry'")
            .await
            .unwrap(),
        "2"
    );
}

#[tokio::test]
async fn an_mcp_registry_registered_by_its_bare_origin_syncs_in_full() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    // AUTO on `http://HOST/`: the root is 404, so the API is probed at /v0.1/servers.
    let id = gql::create(&app, "origin", &srv.url("/"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    let report = &reg["lastSyncReport"];
    assert_eq!(report["format"], "MCP_REGISTRY");
    assert_eq!(report["entries"], 358, "every page is read");
    assert_eq!(report["pages"], 4);
    assert_eq!(srv.state.requests("/v0.1/servers").len(), 4);
    // The next sync goes to the list URL that answered, without probing again.
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");

    // An origin that serves neither a document nor the API says what was tried.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
    let id = gql::create(&app, "nothing", &format!("http://{addr}"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ERROR", "{reg:#}");
    let err = reg["lastError"].as_str().unwrap();
    assert!(
        err.contains("/v0.1/servers") && err.contains("/v0/servers") && err.contains("404"),
        "{err}"
    );
}

#[tokio::test]
async fn mcp_registry_seed_syncs_every_page_then_only_changes() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let id = gql::create(
        &app,
        "official",
        &srv.url("/mcp"),
        json!({ "format": "MCP_REGISTRY" }),
    )
    .await;

    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    let report = &reg["lastSyncReport"];
    assert_eq!(report["mode"], "FULL");
    assert_eq!(report["format"], "MCP_REGISTRY");
    assert_eq!(report["entries"], 358, "every seed entry is read");
    assert_eq!(report["pages"], 4, "358 entries in pages of 100");
    let pages = srv.state.requests("/mcp/v0.1/servers");
    assert_eq!(pages.len(), 4);
    assert_eq!(pages.iter().map(|p| p.entries).sum::<usize>(), 358);
    assert!(
        pages
            .iter()
            .all(|p| p.query.contains("limit=100") && !p.query.contains("updated_since"))
    );
    assert!(pages[1..].iter().all(|p| p.query.contains("cursor=")));
    // All 358 entries are accounted for: stored, or skipped with a reason.
    assert_eq!(report["added"], 350);
    assert_eq!(report["skippedCount"], 8);
    assert_eq!(reg["serverCount"], 350);
    let skipped: BTreeSet<String> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        skipped,
        SEED_BAD_OCI.iter().map(|s| s.to_string()).collect()
    );
    for s in report["skipped"].as_array().unwrap() {
        assert!(
            s["reason"]
                .as_str()
                .unwrap()
                .contains("not a valid container image reference"),
            "{s}"
        );
    }
    // Packages: OCI images, and npm / PyPI packages as ToolHive protocol schemes.
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE image LIKE 'npx://%'")
            .await
            .unwrap(),
        "149"
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE image LIKE 'uvx://%'")
            .await
            .unwrap(),
        "121"
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE image NOT LIKE '%://%'")
            .await
            .unwrap(),
        "80"
    );
    assert_eq!(
        app.db
            .scalar("SELECT image FROM servers WHERE original_name = 'io.github.apache/iotdb'")
            .await
            .as_deref(),
        Some("apache/iotdb:2.0.5")
    );
    assert_eq!(
        app.db.scalar("SELECT name || ' ' || version FROM servers WHERE original_name = 'io.github.21st-dev/magic-mcp'").await.as_deref(),
        Some("magic-mcp 0.0.1-seed")
    );
    // DNS-label names are unique even where the short names collide (several `mcp-server`s).
    assert_eq!(
        app.db
            .scalar("SELECT count(DISTINCT name) FROM servers")
            .await
            .unwrap(),
        "350"
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT count(*) FROM servers WHERE name !~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'"
            )
            .await
            .unwrap(),
        "0"
    );

    // Changes upstream: two updates, a new version, two deletions (one server is used by an
    // instance), one new server.
    let names: Vec<String> = {
        let mcp = srv.state.mcp.lock().unwrap();
        let mut n: Vec<String> = mcp
            .entries
            .iter()
            .map(|e| e.server["name"].as_str().unwrap().to_string())
            .filter(|n| !SEED_BAD_OCI.contains(&n.as_str()))
            .collect();
        n.sort();
        n
    };
    let (upd_a, upd_b, new_version, del_free, del_used) =
        (&names[0], &names[1], &names[2], &names[3], &names[4]);
    let mut conn = app.db.conn().await;
    conn.batch_execute(&format!(
        "INSERT INTO clusters (name, endpoint) VALUES ('c1', 'https://127.0.0.1:6443');
         INSERT INTO instances (server_id, cluster_id, name, namespace)
           SELECT s.id, c.id, 'inst', 'default' FROM servers s, clusters c WHERE s.original_name = '{del_used}';"
    ))
    .await
    .unwrap();
    let used_id = app
        .db
        .scalar(&format!(
            "SELECT id FROM servers WHERE original_name = '{del_used}'"
        ))
        .await
        .unwrap();
    {
        let mut mcp = srv.state.mcp.lock().unwrap();
        mcp.update(upd_a, |s| s["description"] = json!("changed upstream A"));
        mcp.update(upd_b, |s| s["description"] = json!("changed upstream B"));
        let mut next = mcp
            .entries
            .iter()
            .find(|e| e.server["name"] == new_version.as_str())
            .unwrap()
            .server
            .clone();
        next["version"] = json!("9.9.9");
        mcp.publish(next);
        mcp.delete(del_free);
        mcp.delete(del_used);
        mcp.publish(json!({
            "name": "io.github.example/brand-new", "description": "A new server", "version": "1.0.0",
            "packages": [{"registryType": "oci", "identifier": "ghcr.io/example/brand-new:1.0.0",
                          "transport": {"type": "stdio"}}]
        }));
    }
    srv.state.clear_requests();
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    let report = &reg["lastSyncReport"];
    assert_eq!(report["mode"], "INCREMENTAL");
    let pages = srv.state.requests("/mcp/v0.1/servers");
    assert_eq!(pages.len(), 1);
    assert!(
        pages[0].query.contains("updated_since="),
        "{}",
        pages[0].query
    );
    // 2 updates + 2 versions of the republished server + 2 deletions + 1 new server
    assert_eq!(pages[0].entries, 7, "only the changes are fetched");
    assert_eq!(report["entries"], 7);
    assert_eq!(report["added"], 1);
    assert_eq!(report["updated"], 3);
    assert_eq!(report["removed"], 1);
    assert_eq!(report["markedRemoved"], 1);
    assert_eq!(reg["serverCount"], 349);
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT description FROM servers WHERE original_name = '{upd_a}'"
            ))
            .await
            .as_deref(),
        Some("changed upstream A")
    );
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT version FROM servers WHERE original_name = '{new_version}'"
            ))
            .await
            .as_deref(),
        Some("9.9.9")
    );
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT count(*) FROM servers WHERE original_name = '{del_free}'"
            ))
            .await
            .unwrap(),
        "0"
    );
    // The server an instance uses is kept, marked, with the same id.
    assert_eq!(
        app.db.scalar(&format!("SELECT (removed_upstream_at IS NOT NULL)::text || ' ' || id FROM servers WHERE original_name = '{del_used}'"))
            .await
            .unwrap(),
        format!("true {used_id}")
    );
    assert_eq!(app.db.count("instances").await, 1);

    // Nothing changed: an incremental sync reads nothing and changes nothing.
    srv.state.clear_requests();
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["lastSyncReport"]["mode"], "INCREMENTAL");
    assert_eq!(reg["lastSyncReport"]["entries"], 0);
    assert_eq!(reg["serverCount"], 349);
    assert_eq!(srv.state.requests("/mcp/v0.1/servers")[0].entries, 0);
}

#[tokio::test]
async fn mcp_registry_v0_keeps_the_latest_version_and_maps_package_types() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let latest = data_json("mcp-registry-seed-latest.json")
        .as_array()
        .cloned()
        .unwrap();
    *srv.state.mcp.lock().unwrap() = FakeMcp::load(latest);
    // AUTO: a /v0 path names the API.
    let id = gql::create(&app, "official-v0", &srv.url("/mcp/v0"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["lastSyncReport"]["format"], "MCP_REGISTRY");
    assert_eq!(reg["lastSyncReport"]["entries"], 4);
    assert_eq!(
        reg["serverCount"], 3,
        "two airtable versions make one server"
    );
    assert_eq!(srv.state.requests("/mcp/v0/servers").len(), 1);
    let images = app
        .db
        .scalar("SELECT string_agg(image, ' ' ORDER BY image) FROM servers")
        .await
        .unwrap();
    assert_eq!(
        images,
        "dnx://TimeMcpServer@1.0.8 docker.io/domdomegg/airtable-mcp-server:1.7.3 uvx://time-mcp-pypi@1.0.6"
    );
    assert_eq!(
        app.db
            .scalar("SELECT version FROM servers WHERE name = 'airtable-mcp-server'")
            .await
            .as_deref(),
        Some("1.7.3")
    );
}

#[tokio::test]
async fn toolhive_upstream_file_and_registry_server_api_agree() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let file = gql::create(
        &app,
        "upstream-file",
        &srv.url("/files/toolhive-upstream-registry.json"),
        json!({}),
    )
    .await;
    let reg = gql::sync(&app, &file).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["lastSyncReport"]["format"], "TOOLHIVE_UPSTREAM");
    assert_eq!(reg["serverCount"], 12);
    // `_meta` publisher-provided extensions are applied.
    let fetch = app
        .db
        .scalar(
            "SELECT name || '|' || tier || '|' || transport || '|' || (deployment_requirements->>'targetPort') || '|' || array_to_string(capabilities, ',') \
             FROM servers WHERE original_name = 'io.github.stacklok/fetch'",
        )
        .await
        .unwrap();
    assert_eq!(fetch, "fetch|community|http|8080|fetch");
    assert_eq!(
        app.db.scalar("SELECT stars FROM servers WHERE original_name = 'io.github.stacklok/adb-mysql-mcp-server'").await.as_deref(),
        Some("17")
    );

    let api = gql::create(
        &app,
        "registry-server",
        &srv.url("/trs/registry/main"),
        json!({}),
    )
    .await;
    let reg = gql::sync(&app, &api).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["lastSyncReport"]["format"], "TOOLHIVE_REGISTRY_SERVER");
    assert_eq!(reg["serverCount"], 12);
    let pages = srv.state.requests("/trs/registry/main/v0.1/servers");
    assert_eq!(pages.len(), 1);
    assert!(pages[0].query.contains("limit=1000"));
    let same = app
        .db
        .scalar(
            "SELECT count(*) FROM servers a JOIN servers b USING (original_name, name, image, transport, tier, status, capabilities, category) \
             WHERE a.registry_id <> b.registry_id AND a.registry_id < b.registry_id",
        )
        .await
        .unwrap();
    assert_eq!(same, "12", "the file and the API give the same servers");

    // An explicit format that does not match the document is an error, not a guess.
    let wrong = gql::create(
        &app,
        "wrong-format",
        &srv.url("/files/toolhive-registry.json"),
        json!({ "format": "TOOLHIVE_UPSTREAM" }),
    )
    .await;
    let reg = gql::sync(&app, &wrong).await;
    assert_eq!(reg["status"], "ERROR");
    assert!(
        reg["lastError"]
            .as_str()
            .unwrap()
            .contains("looks like legacy ToolHive registry.json"),
        "{reg:#}"
    );
}

#[tokio::test]
async fn malformed_entries_are_skipped_and_reported_and_vanished_servers_handled() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let doc = |servers: Value| {
        json!({ "version": "1.0.0", "last_updated": "2026-01-01T00:00:00Z", "servers": servers })
            .to_string()
    };
    srv.state.set_custom(
        "reg",
        "application/json",
        doc(json!({
            "keep": {"description": "kept", "image": "ghcr.io/x/keep:1.0.0"},
            "used": {"description": "used by an instance", "image": "ghcr.io/x/used:1.0.0"},
            "lonely": {"description": "nobody uses it", "image": "ghcr.io/x/lonely:1.0.0"},
            "Bad_Image": {"description": "bad", "image": "not a valid ref!"},
            "bad-tier": {"description": "bad", "image": "ghcr.io/x/t:1", "tier": "platinum"},
        })),
    );
    let id = gql::create(&app, "custom", &srv.url("/custom/reg"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 3);
    let report = &reg["lastSyncReport"];
    assert_eq!(report["skippedCount"], 2);
    let skipped: Vec<(String, String)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        skipped
            .iter()
            .any(|(n, r)| n == "Bad_Image" && r.contains("container image reference")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|(n, r)| n == "bad-tier" && r.contains("unknown tier")),
        "{skipped:?}"
    );

    let mut conn = app.db.conn().await;
    conn.batch_execute(
        "INSERT INTO clusters (name, endpoint) VALUES ('c1', 'https://127.0.0.1:6443');
         INSERT INTO instances (server_id, cluster_id, name, namespace, status)
           SELECT s.id, c.id, 'inst', 'default', 'terminated' FROM servers s, clusters c WHERE s.name = 'used';",
    )
    .await
    .unwrap();
    let keep_id = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'keep'")
        .await;

    // `used` and `lonely` vanish; `keep` turns malformed (its last good version stays).
    srv.state.set_custom(
        "reg",
        "application/json",
        doc(json!({
            "keep": {"description": "kept", "image": "ghcr.io/x/keep:1.0.0", "transport": "morse"},
            "fresh": {"description": "new", "image": "ghcr.io/x/fresh:2.0.0"},
        })),
    );
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    let report = &reg["lastSyncReport"];
    assert_eq!(
        (report["removed"].as_i64(), report["markedRemoved"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["skippedCount"], 1);
    assert_eq!(
        reg["serverCount"], 2,
        "keep + fresh; `used` is kept but marked"
    );
    assert_eq!(
        app.db
            .scalar("SELECT id FROM servers WHERE name = 'keep'")
            .await,
        keep_id
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE name = 'lonely'")
            .await
            .unwrap(),
        "0"
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT (removed_upstream_at IS NOT NULL)::text FROM servers WHERE name = 'used'"
            )
            .await
            .as_deref(),
        Some("true")
    );
    // It comes back: unmarked, same row.
    let used_id = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'used'")
        .await;
    srv.state.set_custom(
        "reg",
        "application/json",
        doc(json!({
            "keep": {"description": "kept", "image": "ghcr.io/x/keep:1.0.0"},
            "used": {"description": "used by an instance", "image": "ghcr.io/x/used:1.0.0"},
        })),
    );
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["serverCount"], 2);
    assert_eq!(
        app.db
            .scalar(
                "SELECT (removed_upstream_at IS NULL)::text || id FROM servers WHERE name = 'used'"
            )
            .await,
        used_id.map(|i| format!("true{i}"))
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE name = 'fresh'")
            .await
            .unwrap(),
        "0"
    );
}

#[tokio::test]
async fn private_registries_authenticate_and_never_leak_the_secret() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let token = format!("CANARY-{}", uuid::Uuid::new_v4());
    let url = srv.url("/private/toolhive-upstream-registry.json");

    *srv.state.private_auth.lock().unwrap() =
        Some(("authorization".into(), format!("Bearer {token}")));
    let bearer = gql::create(
        &app,
        "bearer",
        &url,
        json!({ "authConfig": { "bearerToken": token } }),
    )
    .await;
    assert_eq!(gql::sync(&app, &bearer).await["status"], "ACTIVE");

    let basic_value = format!("Basic {}", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("reader:{token}"))
    });
    *srv.state.private_auth.lock().unwrap() = Some(("authorization".into(), basic_value));
    let basic = gql::create(
        &app,
        "basic",
        &url,
        json!({ "authConfig": { "username": "reader", "password": token } }),
    )
    .await;
    assert_eq!(gql::sync(&app, &basic).await["status"], "ACTIVE");

    *srv.state.private_auth.lock().unwrap() = Some(("x-api-key".into(), token.clone()));
    let header = gql::create(
        &app,
        "header",
        &url,
        json!({ "authConfig": { "headerName": "X-Api-Key", "headerValue": token } }),
    )
    .await;
    let reg = gql::sync(&app, &header).await;
    assert_eq!(reg["status"], "ACTIVE");
    assert_eq!(reg["serverCount"], 12);

    // The bearer registry's token is now refused: ERROR, readable, without the secret.
    let reg = gql::sync(&app, &bearer).await;
    assert_eq!(reg["status"], "ERROR");
    let err = reg["lastError"].as_str().unwrap();
    assert!(
        err.contains("401") && err.contains(&srv.addr.to_string()),
        "{err}"
    );
    assert_eq!(reg["serverCount"], 12, "the last good servers stay");
    let everything = app
        .db
        .scalar("SELECT string_agg(r::text, ' ') FROM registries r")
        .await
        .unwrap()
        + &app
            .db
            .scalar("SELECT coalesce(string_agg(a::text, ' '), '') FROM audit_log a")
            .await
            .unwrap();
    assert!(
        !everything.contains(&token),
        "the secret appears in the database outside its ciphertext"
    );
    let r = app
        .graphql(&format!("query {{ registries {{ edges {{ node {{ {} authConfig {{ kind configured }} }} }} }} }}", gql::REGISTRY), json!({}))
        .await;
    assert!(!r.to_string().contains(&token));
}

#[tokio::test]
async fn a_second_trigger_while_syncing_is_a_conflict() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let id = gql::create(
        &app,
        "slow",
        &srv.url("/slow/1500/toolhive-upstream-registry.json"),
        json!({}),
    )
    .await;
    let first = gql::trigger(&app, &id).await;
    assert_ok(&first);
    assert_eq!(first["data"]["syncRegistry"]["status"], "SYNCING");
    let second = gql::trigger(&app, &id).await;
    assert_eq!(
        error_code(&second).as_deref(),
        Some("CONFLICT"),
        "{second:#}"
    );
    let reg = gql::wait_done(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE");
    assert_eq!(
        srv.state.requests("/slow/").len(),
        1,
        "the second trigger did not fetch"
    );

    // Another process holding the registry's sync lock (a sync running elsewhere) also means
    // CONFLICT, and the registry is left as it is.
    let key = hivegraph::db::AdvisoryLock::Sync(uuid_of(&id)).key();
    let mut other = app.db.conn().await;
    other
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .await
        .unwrap();
    let before = gql::registry(&app, &id).await;
    let r = gql::trigger(&app, &id).await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r:#}");
    assert_eq!(gql::registry(&app, &id).await, before);
    other
        .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
        .await
        .unwrap();
    assert_eq!(gql::sync(&app, &id).await["status"], "ACTIVE");

    let missing = gql::trigger(
        &app,
        &hivegraph::ids::encode(hivegraph::ids::Kind::Registry, uuid::Uuid::new_v4()),
    )
    .await;
    assert_eq!(error_code(&missing).as_deref(), Some("NOT_FOUND"));
}

/// A legacy-format registry document with the given server names.
fn tiny_registry(names: &[&str]) -> String {
    let servers: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                json!({
                    "description": format!("{n} server"),
                    "image": format!("ghcr.io/example/{n}:1.0.0"),
                    "transport": "stdio",
                    "tier": "Community",
                    "status": "Active",
                    "tools": ["t"],
                }),
            )
        })
        .collect();
    json!({ "version": "1.0.0", "last_updated": "2026-01-01T00:00:00Z", "servers": servers })
        .to_string()
}

/// The registry's server list is cached for 5 minutes; a committed sync drops it at once, so the
/// next read sees the new servers, not the cached list.
#[tokio::test]
async fn the_server_list_cache_is_dropped_when_a_sync_commits() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    srv.state.set_custom(
        "tiny",
        "application/json",
        tiny_registry(&["alpha", "beta"]),
    );
    let id = gql::create(&app, "cached", &srv.url("/custom/tiny"), json!({})).await;
    assert_eq!(gql::sync(&app, &id).await["status"], "ACTIVE");
    let names = || async {
        let r = app
            .graphql(
                "query($id: ID!) { registry(id: $id) { servers(first: 10) { totalCount nodes { name } } } }",
                json!({ "id": id }),
            )
            .await;
        assert_ok(&r);
        let servers = &r["data"]["registry"]["servers"];
        let list: Vec<String> = servers["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect();
        (servers["totalCount"].as_i64().unwrap(), list)
    };
    assert_eq!(names().await, (2, vec!["alpha".into(), "beta".into()]));
    // The server-list cache, or the whole-answer cache in front of it.
    let hits = || {
        ["registry_server_lists", "graphql_responses"]
            .iter()
            .map(|c| {
                app.state
                    .services
                    .caches
                    .metrics()
                    .hits
                    .get_or_create(&hivegraph::cache::CacheLabels {
                        cache: c.to_string(),
                    })
                    .get()
            })
            .sum::<u64>()
    };
    let hits_before = hits();
    assert_eq!(names().await.0, 2);
    assert!(
        hits() > hits_before,
        "the second read is answered from the cache"
    );
    srv.state.set_custom(
        "tiny",
        "application/json",
        tiny_registry(&["alpha", "beta", "gamma"]),
    );
    assert_eq!(gql::sync(&app, &id).await["status"], "ACTIVE");
    assert_eq!(
        names().await,
        (3, vec!["alpha".into(), "beta".into(), "gamma".into()]),
        "a committed sync drops the cached list"
    );
}

#[tokio::test]
async fn local_files_sync_when_the_gateway_allows_them() {
    let app = TestApp::spawn_with(|c| c.serve.registries.allow_file_urls = true).await;
    let groups = registry_server::data_dir().join("toolhive-registry-with-groups.json");
    let url = url::Url::from_file_path(groups.canonicalize().unwrap()).unwrap();
    let id = gql::create(&app, "groups", url.as_str(), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    // 2 servers + 1 remote, plus the 3 servers that only the legacy groups list.
    assert_eq!(reg["serverCount"], 6);
    let names = app
        .db
        .scalar("SELECT string_agg(name, ',' ORDER BY name) FROM servers")
        .await
        .unwrap();
    assert_eq!(
        names,
        "content-fetcher,fetch,fetch-1,fetch-2,fetch-3,github-remote"
    );

    // The registry shipped for first starts (a copy of the real ToolHive catalog).
    let starter =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/toolhive-registry.json");
    {
        let url = url::Url::from_file_path(starter.canonicalize().unwrap()).unwrap();
        let id = gql::create(&app, "starter", url.as_str(), json!({})).await;
        let reg = gql::sync(&app, &id).await;
        assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
        assert_eq!(reg["lastSyncReport"]["skippedCount"], 0, "{reg:#}");
    }

    // Without the permission, the sync itself refuses local files too.
    let app = TestApp::spawn().await;
    let mut conn = app.db.conn().await;
    conn.batch_execute(&format!(
        "INSERT INTO registries (name, url) VALUES ('sneaky', '{url}')"
    ))
    .await
    .unwrap();
    let raw: uuid::Uuid = app
        .db
        .scalar("SELECT id FROM registries")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let id = hivegraph::ids::encode(hivegraph::ids::Kind::Registry, raw).to_string();
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ERROR");
    assert!(
        reg["lastError"]
            .as_str()
            .unwrap()
            .contains("file:// registries are disabled"),
        "{reg:#}"
    );
}

/// Tags and tool names travel to the database as array literals: quotes, backslashes, commas,
/// braces, a `NULL` word and non-ASCII letters come back exactly, on insert and on update.
#[tokio::test]
async fn awkward_tags_and_tools_are_stored_exactly() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let doc = |tags: Value, description: &str| {
        json!({ "version": "1.0.0", "last_updated": "2026-01-01T00:00:00Z", "servers": {
            "odd": {"description": description, "image": "ghcr.io/x/odd:1.0.0", "tags": tags,
                    "tools": ["say \"hi\"", "back\\slash", "a,b"]},
            "plain": {"description": "plain", "image": "ghcr.io/x/plain:1.0.0", "tags": []},
        }})
        .to_string()
    };
    let tags = json!([
        "a \"quoted\" tag",
        "back\\slash",
        "comma,brace{}",
        "NULL",
        "ünïcode"
    ]);
    srv.state
        .set_custom("reg", "application/json", doc(tags.clone(), "first"));
    let id = gql::create(&app, "awkward", &srv.url("/custom/reg"), json!({})).await;
    assert_eq!(gql::sync(&app, &id).await["status"], "ACTIVE");
    let stored = |col: &'static str, name: &'static str| {
        let app = &app;
        async move {
            let sql = format!("SELECT to_jsonb({col}) FROM servers WHERE name = '{name}'");
            serde_json::from_str::<Value>(&app.db.scalar(&sql).await.unwrap()).unwrap()
        }
    };
    assert_eq!(stored("category", "odd").await, tags);
    assert_eq!(
        stored("capabilities", "odd").await,
        json!(["say \"hi\"", "back\\slash", "a,b"])
    );
    assert_eq!(stored("category", "plain").await, json!([]));
    let first_id = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'odd'")
        .await;

    let changed = json!(["{}", "\"", "\\"]);
    srv.state
        .set_custom("reg", "application/json", doc(changed.clone(), "second"));
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["lastSyncReport"]["updated"], 1, "{reg:#}");
    assert_eq!(reg["lastSyncReport"]["unchanged"], 1, "{reg:#}");
    assert_eq!(stored("category", "odd").await, changed);
    assert_eq!(stored("description", "odd").await, json!("second"));
    let second_id = app
        .db
        .scalar("SELECT id FROM servers WHERE name = 'odd'")
        .await;
    assert_eq!(first_id, second_id, "an update keeps the row");
}

/// A legacy document: `servers` holds `fillers` numbered servers and `extra`, `remote` goes to
/// `remote_servers`. More than a thousand entries span several of the sync's write chunks.
fn chunked_doc(fillers: usize, extra: Value, remote: Value) -> String {
    let mut servers = serde_json::Map::new();
    for i in 0..fillers {
        servers.insert(
            format!("filler/srv-{i:05}"),
            json!({"description": format!("filler {i}"), "image": format!("ghcr.io/x/f{i}:1.0.0")}),
        );
    }
    servers.extend(extra.as_object().unwrap().clone());
    json!({ "version": "1.0.0", "servers": servers, "remote_servers": remote }).to_string()
}

#[tokio::test]
async fn a_failure_after_earlier_chunks_were_written_leaves_the_servers_untouched() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    let first = chunked_doc(
        3,
        json!({"keep": {"description": "kept", "image": "ghcr.io/x/keep:1.0.0"}}),
        json!({}),
    );
    srv.state.set_custom("reg", "application/json", first);
    let id = gql::create(&app, "chunks", &srv.url("/custom/reg"), json!({})).await;
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["serverCount"], 4, "{reg:#}");
    let before = gql::servers_fingerprint(&app).await;
    // The database refuses one server that sorts after the first chunks were written.
    let mut conn = app.db.conn().await;
    conn.batch_execute(
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.original_name = 'filler/srv-02500' THEN RAISE EXCEPTION 'refused by the test'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_one BEFORE INSERT ON servers FOR EACH ROW EXECUTE FUNCTION refuse_one();",
    )
    .await
    .unwrap();
    let second = chunked_doc(
        3000,
        json!({"keep": {"description": "changed", "image": "ghcr.io/x/keep:2.0.0"}}),
        json!({}),
    );
    srv.state.set_custom("reg", "application/json", second);
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ERROR", "{reg:#}");
    assert_eq!(reg["lastSyncReport"]["succeeded"], false);
    assert_eq!(gql::servers_fingerprint(&app).await, before);
    assert_eq!(app.db.count("servers").await, 4);
    // Without the refusal the same document syncs in full.
    conn.batch_execute("DROP TRIGGER refuse_one ON servers")
        .await
        .unwrap();
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 3001);
    assert_eq!(
        (
            reg["lastSyncReport"]["added"].as_i64(),
            reg["lastSyncReport"]["updated"].as_i64(),
            reg["lastSyncReport"]["removed"].as_i64()
        ),
        (Some(2997), Some(1), Some(0))
    );
}

#[tokio::test]
async fn new_servers_written_in_chunks_get_the_names_of_a_whole_document_plan() {
    let app = app().await;
    let srv = RegistryServer::start().await;
    srv.state.set_custom(
        "reg",
        "application/json",
        chunked_doc(
            0,
            json!({"old/fetch": {"description": "old", "image": "ghcr.io/x/old:1.0.0"}}),
            json!({}),
        ),
    );
    let id = gql::create(&app, "names", &srv.url("/custom/reg"), json!({})).await;
    assert_eq!(gql::sync(&app, &id).await["serverCount"], 1);
    // `old/fetch` vanishes, so its name is free; `a/fetch` (a remote server, read after 1,500
    // container servers) sorts before `b/fetch` and takes it.
    srv.state.set_custom(
        "reg",
        "application/json",
        chunked_doc(
            1500,
            json!({"b/fetch": {"description": "b", "image": "ghcr.io/x/b:1.0.0"}}),
            json!({"a/fetch": {"description": "a", "url": "https://a.example/mcp"}}),
        ),
    );
    let reg = gql::sync(&app, &id).await;
    assert_eq!(reg["status"], "ACTIVE", "{reg:#}");
    assert_eq!(reg["serverCount"], 1502);
    assert_eq!(reg["lastSyncReport"]["removed"], 1);
    let name_of = |orig: &str| format!("SELECT name FROM servers WHERE original_name = '{orig}'");
    assert_eq!(
        app.db.scalar(&name_of("a/fetch")).await.as_deref(),
        Some("fetch")
    );
    let b = hivegraph::sync::normalize::disambiguated_label("fetch", "b/fetch", 0);
    assert_eq!(app.db.scalar(&name_of("b/fetch")).await, Some(b));
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE name LIKE 'renaming-%'")
            .await
            .as_deref(),
        Some("0")
    );
}
