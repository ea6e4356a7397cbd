//! Registry management through GraphQL: CRUD, every validation rule with bad input, and the
//! guarantee that a rejected change writes nothing.

use crate::common;

use common::*;
use serde_json::{Value, json};

const CREATE: &str = r#"
mutation($input: CreateRegistryInput!) {
  createRegistry(input: $input) {
    id name url description status format serverCount lastSyncAt syncIntervalSeconds metadata
    authConfig { kind configured }
  }
}"#;

const UPDATE: &str = r#"
mutation($id: ID!, $input: UpdateRegistryInput!) {
  updateRegistry(id: $id, input: $input) { id name url description status syncIntervalSeconds authConfig { kind configured } }
}"#;

async fn create(app: &TestApp, input: Value) -> Value {
    app.graphql(CREATE, json!({ "input": input })).await
}

async fn create_ok(app: &TestApp, name: &str) -> Value {
    let resp = create(
        app,
        json!({ "name": name, "url": format!("https://127.0.0.1:9/{name}.json") }),
    )
    .await;
    assert_ok(&resp);
    resp["data"]["createRegistry"].clone()
}

#[tokio::test]
async fn a_new_registry_starts_inactive_with_no_servers() {
    let app = TestApp::spawn().await;
    let resp = create(
        &app,
        json!({
            "name": "toolhive-main",
            "url": "https://127.0.0.1:9/registry.json",
            "description": "The main catalogue",
            "format": "TOOLHIVE",
            "syncIntervalSeconds": 900,
            "metadata": { "team": "platform" }
        }),
    )
    .await;
    assert_ok(&resp);
    let r = &resp["data"]["createRegistry"];
    assert_eq!(r["name"], "toolhive-main");
    assert_eq!(r["status"], "INACTIVE");
    assert_eq!(r["format"], "TOOLHIVE");
    assert_eq!(r["serverCount"], 0);
    assert_eq!(r["lastSyncAt"], Value::Null);
    assert_eq!(r["syncIntervalSeconds"], 900);
    assert_eq!(r["metadata"]["team"], "platform");
    assert_eq!(
        r["authConfig"],
        json!({ "kind": "NONE", "configured": false })
    );

    let fetched = app.graphql("query($id: ID!) { registry(id: $id) { name } node(id: $id) { id ... on Registry { url } } }", json!({ "id": r["id"] })).await;
    assert_ok(&fetched);
    assert_eq!(fetched["data"]["registry"]["name"], "toolhive-main");
    assert_eq!(
        fetched["data"]["node"]["url"],
        "https://127.0.0.1:9/registry.json"
    );
    assert_eq!(
        app.db.count("audit_log").await,
        1,
        "the creation is audited"
    );
}

#[tokio::test]
async fn registries_page_with_stable_cursors_and_filter_by_status() {
    let app = TestApp::spawn().await;
    for name in ["alpha", "bravo", "charlie"] {
        create_ok(&app, name).await;
    }
    let mut conn_sql = app.db.conn().await;
    use diesel_async::SimpleAsyncConnection;
    conn_sql
        .batch_execute(
            "UPDATE registries SET status = 'error', last_error = 'boom' WHERE name = 'bravo'",
        )
        .await
        .unwrap();

    let q = "query($after: String) { registries(first: 2, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { name } } } }";
    let page1 = app.graphql(q, json!({})).await;
    assert_ok(&page1);
    let c = &page1["data"]["registries"];
    assert_eq!(c["totalCount"], 3);
    assert_eq!(c["pageInfo"]["hasNextPage"], true);
    let names: Vec<&str> = c["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "bravo"]);
    let page2 = app
        .graphql(q, json!({ "after": c["pageInfo"]["endCursor"] }))
        .await;
    let c2 = &page2["data"]["registries"];
    assert_eq!(c2["edges"][0]["node"]["name"], "charlie");
    assert_eq!(c2["pageInfo"]["hasNextPage"], false);

    let errored = app.graphql("{ registries(filter: { status: [ERROR] }) { totalCount edges { node { name status lastError } } } }", json!({})).await;
    assert_ok(&errored);
    assert_eq!(errored["data"]["registries"]["totalCount"], 1);
    assert_eq!(
        errored["data"]["registries"]["edges"][0]["node"]["lastError"],
        "boom"
    );

    let bad_cursor = app.graphql(q, json!({ "after": "not-a-cursor" })).await;
    assert_eq!(error_code(&bad_cursor).as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(error_field(&bad_cursor).as_deref(), Some("after"));
    let too_many = app
        .graphql("{ registries(first: 101) { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&too_many).as_deref(), Some("BAD_USER_INPUT"));
}

/// Each bad input is refused with BAD_USER_INPUT naming the field, and no row is written.
#[tokio::test]
async fn every_validation_rule_refuses_bad_input_and_writes_nothing() {
    let app = TestApp::spawn().await;
    create_ok(&app, "existing").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "name": "", "url": "https://127.0.0.1:9/x" }),
            "name",
        ),
        (
            json!({ "name": "has space", "url": "https://127.0.0.1:9/x" }),
            "name",
        ),
        (
            json!({ "name": "dots.are.not.ok", "url": "https://127.0.0.1:9/x" }),
            "name",
        ),
        (
            json!({ "name": "x".repeat(65), "url": "https://127.0.0.1:9/x" }),
            "name",
        ),
        (
            json!({ "name": "EXISTING", "url": "https://127.0.0.1:9/x" }),
            "name",
        ),
        (json!({ "name": "ok", "url": "ftp://a.example/x" }), "url"),
        (json!({ "name": "ok", "url": "file:///etc/passwd" }), "url"),
        (json!({ "name": "ok", "url": "not a url" }), "url"),
        (
            json!({ "name": "ok", "url": "https://user:secret@a.example/x" }),
            "url",
        ),
        (
            json!({ "name": "ok", "url": "https://127.0.0.1:9/x", "syncIntervalSeconds": 5 }),
            "syncIntervalSeconds",
        ),
        (
            json!({ "name": "ok", "url": "https://127.0.0.1:9/x", "metadata": [1, 2] }),
            "metadata",
        ),
        (
            json!({ "name": "ok", "url": "https://127.0.0.1:9/x", "description": "d".repeat(1025) }),
            "description",
        ),
        (
            json!({ "name": "ok", "url": "https://127.0.0.1:9/x", "authConfig": { "bearerToken": "t", "username": "u", "password": "p" } }),
            "authConfig",
        ),
        (
            json!({ "name": "ok", "url": "https://127.0.0.1:9/x", "authConfig": { "username": "u" } }),
            "authConfig",
        ),
        (
            json!({ "name": "ok", "url": "https://127.0.0.1:9/x", "authConfig": { "headerName": "Host", "headerValue": "evil" } }),
            "authConfig.headerName",
        ),
    ];
    for (input, field) in cases {
        let resp = create(&app, input.clone()).await;
        assert_eq!(
            error_code(&resp).as_deref(),
            Some("BAD_USER_INPUT"),
            "input {input}: {resp}"
        );
        assert_eq!(
            error_field(&resp).as_deref(),
            Some(field),
            "input {input}: {resp}"
        );
        assert_eq!(resp["data"], Value::Null, "no partial data for {input}");
    }
    assert_eq!(app.db.count("registries").await, 1, "nothing was written");
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM audit_log WHERE outcome = 'success'")
            .await
            .as_deref(),
        Some("1"),
        "only the first creation succeeded"
    );
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM audit_log WHERE outcome = 'error' AND details->>'code' = 'BAD_USER_INPUT'")
            .await,
        app.db
            .scalar("SELECT count(*) - 1 FROM audit_log")
            .await,
        "every refused creation was audited as an error, with its code"
    );

    // An enum value outside the schema is refused by GraphQL validation, before any resolver.
    let resp = create(
        &app,
        json!({ "name": "ok", "url": "https://127.0.0.1:9/x", "format": "YAML" }),
    )
    .await;
    assert!(resp["errors"].is_array());
    assert_eq!(app.db.count("registries").await, 1);
}

#[tokio::test]
async fn file_urls_are_allowed_only_when_configured() {
    let app = TestApp::spawn_with(|c| c.serve.registries.allow_file_urls = true).await;
    let resp = create(
        &app,
        json!({ "name": "local", "url": "file:///srv/registry.json" }),
    )
    .await;
    assert_ok(&resp);
    assert_eq!(
        resp["data"]["createRegistry"]["url"],
        "file:///srv/registry.json"
    );
}

#[tokio::test]
async fn update_changes_settings_but_never_the_status_and_bad_updates_write_nothing() {
    let app = TestApp::spawn().await;
    let r = create_ok(&app, "first").await;
    create_ok(&app, "second").await;
    let id = r["id"].clone();

    let resp = app
        .graphql(UPDATE, json!({ "id": id, "input": { "name": "renamed", "description": "new words", "syncIntervalSeconds": 120 } }))
        .await;
    assert_ok(&resp);
    let u = &resp["data"]["updateRegistry"];
    assert_eq!(u["name"], "renamed");
    assert_eq!(u["description"], "new words");
    assert_eq!(u["syncIntervalSeconds"], 120);
    assert_eq!(u["status"], "INACTIVE");

    let before = app
        .db
        .scalar("SELECT row_to_json(r)::text FROM registries r WHERE name = 'renamed'")
        .await;
    for (input, field) in [
        (json!({ "name": "second" }), "name"),
        (json!({ "name": "bad name" }), "name"),
        (json!({ "url": "gopher://x" }), "url"),
        (
            json!({ "syncIntervalSeconds": 10_000_000 }),
            "syncIntervalSeconds",
        ),
        (
            json!({ "authConfig": { "bearerToken": "x" }, "clearAuthConfig": true }),
            "clearAuthConfig",
        ),
    ] {
        let resp = app
            .graphql(UPDATE, json!({ "id": id, "input": input }))
            .await;
        assert_eq!(
            error_code(&resp).as_deref(),
            Some("BAD_USER_INPUT"),
            "{resp}"
        );
        assert_eq!(error_field(&resp).as_deref(), Some(field), "{resp}");
    }
    let after = app
        .db
        .scalar("SELECT row_to_json(r)::text FROM registries r WHERE name = 'renamed'")
        .await;
    assert_eq!(before, after, "rejected updates changed nothing");

    let missing = app
        .graphql(
            UPDATE,
            json!({ "id": uuid::Uuid::new_v4().to_string(), "input": { "name": "x" } }),
        )
        .await;
    assert_eq!(error_code(&missing).as_deref(), Some("NOT_FOUND"));
    let wrong_kind = app
        .graphql(
            "query($id: ID!) { server(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&wrong_kind).as_deref(), Some("BAD_USER_INPUT"));
}

#[tokio::test]
async fn registry_credentials_are_write_only_and_encrypted_at_rest() {
    let app = TestApp::spawn().await;
    let canary = format!("CANARY-{}", uuid::Uuid::new_v4());
    let reply = app
        .graphql_with_headers(
            CREATE,
            json!({ "input": { "name": "private", "url": "https://127.0.0.1:9/r.json", "authConfig": { "bearerToken": canary } } }),
            &[],
        )
        .await;
    assert!(!reply.text.contains(&canary), "the token is never echoed");
    let resp = reply.json();
    assert_ok(&resp);
    assert_eq!(
        resp["data"]["createRegistry"]["authConfig"],
        json!({ "kind": "BEARER", "configured": true })
    );
    let stored = app
        .db
        .scalar("SELECT auth_config::text FROM registries")
        .await
        .unwrap();
    assert!(!stored.contains(&canary), "stored sealed, not in clear");
    assert!(stored.contains("\"kid\""));
    let audit = app
        .db
        .scalar("SELECT string_agg(details::text, ' ') FROM audit_log")
        .await
        .unwrap();
    assert!(!audit.contains(&canary), "the audit trail holds no secret");

    let id = resp["data"]["createRegistry"]["id"].clone();
    let cleared = app
        .graphql(
            UPDATE,
            json!({ "id": id, "input": { "clearAuthConfig": true } }),
        )
        .await;
    assert_ok(&cleared);
    assert_eq!(
        cleared["data"]["updateRegistry"]["authConfig"],
        json!({ "kind": "NONE", "configured": false })
    );
    assert_eq!(
        app.db
            .scalar("SELECT auth_config::text FROM registries")
            .await,
        None
    );
}

const DELETE: &str = "mutation($id: ID!, $force: Boolean) { deleteRegistry(id: $id, force: $force) { deletedRegistryId deletedServers deletedInstances } }";

async fn seed_running_instance(app: &TestApp, registry_name: &str) {
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    c.batch_execute(&format!(
        "INSERT INTO servers (registry_id, name, original_name, image, transport)
           SELECT id, 'fetch', 'io.github.stacklok/fetch', 'ghcr.io/stackloklabs/gofetch/server:1.0.1', 'stdio'
           FROM registries WHERE name = '{registry_name}';
         INSERT INTO clusters (name, endpoint, status) VALUES ('local', 'https://127.0.0.1:6443', 'connected');
         INSERT INTO instances (server_id, cluster_id, name, namespace, status, phase)
           SELECT s.id, c.id, 'fetch', 'default', 'running', 'ready' FROM servers s, clusters c;"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn delete_refuses_while_instances_live_and_then_archives_keeping_history() {
    let app = TestApp::spawn().await;
    let r = create_ok(&app, "busy").await;
    seed_running_instance(&app, "busy").await;
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    c.batch_execute(
        "INSERT INTO deployments (instance_id, server_id, operation, initiated_by, status, completed_at)
           SELECT id, server_id, 'deploy', 'tester', 'completed', now() FROM instances",
    )
    .await
    .unwrap();

    // Refused, naming the instance, even with the old `force`.
    for force in [None, Some(true)] {
        let refused = app
            .graphql(DELETE, json!({ "id": r["id"], "force": force }))
            .await;
        assert_eq!(
            error_code(&refused).as_deref(),
            Some("CONFLICT"),
            "{refused}"
        );
        let msg = refused["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("default/fetch (RUNNING)"), "{msg}");
    }
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM registries WHERE archived_at IS NULL")
            .await
            .as_deref(),
        Some("1")
    );
    let denied = app
        .db
        .scalar("SELECT outcome FROM audit_log WHERE action = 'deleteRegistry' LIMIT 1")
        .await;
    assert_eq!(denied.as_deref(), Some("denied"), "the refusal is audited");

    // Once the instance is TERMINATED, the registry is archived: out of lists and search...
    c.batch_execute("UPDATE instances SET status = 'terminated', phase = 'terminating'")
        .await
        .unwrap();
    let done = app.graphql(DELETE, json!({ "id": r["id"] })).await;
    assert_ok(&done);
    assert_eq!(done["data"]["deleteRegistry"]["deletedServers"], 1);
    assert_eq!(done["data"]["deleteRegistry"]["deletedInstances"], 0);
    let lists = app
        .graphql(
            "{ registries { totalCount } servers(search: \"fetch\") { totalCount } serverFacets { totalCount } }",
            json!({}),
        )
        .await;
    assert_ok(&lists);
    assert_eq!(lists["data"]["registries"]["totalCount"], 0, "{lists}");
    assert_eq!(lists["data"]["servers"]["totalCount"], 0, "{lists}");
    assert_eq!(lists["data"]["serverFacets"]["totalCount"], 0, "{lists}");
    // ...and every record of the instance's history is still readable through it.
    let history = app
        .graphql(
            "{ instances(first: 5) { nodes { status server { name archivedAt registry { name archivedAt } }
                 operations(first: 5) { nodes { status server { name } } } } } }",
            json!({}),
        )
        .await;
    assert_ok(&history);
    let inst = &history["data"]["instances"]["nodes"][0];
    assert_eq!(inst["server"]["name"], "fetch", "{history}");
    assert!(inst["server"]["archivedAt"].is_string());
    assert_eq!(inst["server"]["registry"]["name"], "busy");
    assert!(inst["server"]["registry"]["archivedAt"].is_string());
    assert_eq!(inst["operations"]["nodes"][0]["status"], "COMPLETED");
    // The database keeps referenced history from being deleted by hand too.
    let err = c
        .batch_execute("DELETE FROM servers")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("foreign key"), "{err}");
    // The name is free again; the archived registry is never synced or updated.
    create_ok(&app, "busy").await;
    let again = app.graphql(DELETE, json!({ "id": r["id"] })).await;
    assert_eq!(error_code(&again).as_deref(), Some("NOT_FOUND"), "{again}");
    let sync = app
        .graphql(
            "mutation($id: ID!) { syncRegistry(id: $id) { id } }",
            json!({ "id": r["id"] }),
        )
        .await;
    assert_eq!(error_code(&sync).as_deref(), Some("NOT_FOUND"), "{sync}");
}

#[tokio::test]
async fn an_idle_registry_deletes_with_its_servers() {
    let app = TestApp::spawn().await;
    let r = create_ok(&app, "idle").await;
    seed_running_instance(&app, "idle").await;
    use diesel_async::SimpleAsyncConnection;
    app.db
        .conn()
        .await
        .batch_execute("UPDATE instances SET status = 'terminated', phase = 'terminating'")
        .await
        .unwrap();
    let resp = app.graphql(DELETE, json!({ "id": r["id"] })).await;
    assert_ok(&resp);
    assert_eq!(resp["data"]["deleteRegistry"]["deletedServers"], 1);
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM servers WHERE archived_at IS NOT NULL")
            .await
            .as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn the_database_refuses_what_validation_would_refuse() {
    // Defence in depth: even a write that bypasses the gateway's validation cannot store an
    // invalid registry, server, instance, deployment or sample.
    let app = TestApp::spawn().await;
    create_ok(&app, "base").await;
    seed_running_instance(&app, "base").await;
    use diesel_async::SimpleAsyncConnection;
    let mut c = app.db.conn().await;
    for bad in [
        "INSERT INTO registries (name, url) VALUES ('bad name', 'https://x')",
        "INSERT INTO registries (name, url) VALUES ('ok', 'ftp://x')",
        "UPDATE registries SET status = 'exploded'",
        "UPDATE servers SET transport = 'carrier-pigeon'",
        "UPDATE servers SET name = 'Not_A_Label'",
        "UPDATE instances SET replicas_ready = -1",
        "INSERT INTO deployments (instance_id, server_id, initiated_by, status) SELECT id, server_id, 'me', 'completed' FROM instances",
        "INSERT INTO deployments (instance_id, server_id, initiated_by, status, completed_at) SELECT id, server_id, 'me', 'failed', now() FROM instances",
        "INSERT INTO monitoring_metrics (instance_id, timestamp, cpu_usage) SELECT id, now(), 101 FROM instances",
        "INSERT INTO monitoring_metrics (instance_id, timestamp, error_rate) SELECT id, now(), -1 FROM instances",
    ] {
        assert!(
            c.batch_execute(bad).await.is_err(),
            "the database accepted: {bad}"
        );
    }
    c.batch_execute(
        "INSERT INTO deployments (instance_id, server_id, initiated_by, status, completed_at) SELECT id, server_id, 'me', 'completed', now() FROM instances",
    )
    .await
    .expect("a completed deployment with completed_at is fine");
}
