//! The read graph: a nested query costs a number of SQL statements bounded by its depth, not by
//! the rows it returns; nested pages stay batched; `node(id)` goes through the same loaders; the
//! TTL caches answer repeated reads, are scoped, invalidated by writes, and reported on /metrics.
//!
//! Statement counts come from the `x-hivegraph-debug: sql` header (`extensions.sqlStatements` and
//! `extensions.sqlLog`). These tests run on a multi-threaded runtime, like the server, so that a
//! batch cut in the middle of a GraphQL level would show up as an extra statement.

mod common;

use common::*;
use diesel_async::SimpleAsyncConnection;
use serde_json::{Value, json};

const SEED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/lib/seed-nested.sql"
));

/// Adds `registries` x `servers` x `instances` synthetic rows (see scripts/lib/seed-nested.sql).
async fn seed(app: &TestApp, registries: u32, servers: u32, instances: u32, metrics: u32) {
    let sql = SEED
        .replace("{{registries}}", &registries.to_string())
        .replace("{{servers}}", &servers.to_string())
        .replace("{{instances}}", &instances.to_string())
        .replace("{{metrics}}", &metrics.to_string());
    app.db
        .conn()
        .await
        .batch_execute(&sql)
        .await
        .expect("seed the nested data");
    settle(app).await;
}

/// Waits until the caches' change listener has applied every change notification committed so
/// far (seeding sends thousands), so that a test's cache expectations are not disturbed by
/// invalidations arriving late. Sends a sentinel notification until the listener reports it.
async fn settle(app: &TestApp) {
    let sentinel = uuid::Uuid::new_v4();
    let caches = &app.state.services.caches;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut conn = app.db.conn().await;
    while caches.last_change() != Some(hivegraph::changes::Topic::Registry(sentinel)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the caches' change listener never caught up"
        );
        conn.batch_execute(&format!(
            "SELECT pg_notify('hivegraph_changes', 'registry:{sentinel}')"
        ))
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Registries → servers → instances → (latest metrics, deploy operation, cluster), and back up
/// (server.registry, instance.server).
const NESTED: &str = r#"
query Nested($registries: Int!, $servers: Int!) {
  registries(first: $registries) {
    totalCount
    edges { node {
      id name
      servers(first: $servers) {
        totalCount
        pageInfo { hasNextPage endCursor }
        edges { node {
          id name stars
          registry { id name }
          instances(first: 2) {
            totalCount
            edges { node {
              id name status
              server { id name }
              cluster { id name status }
              deployment { id status operation }
              latestMetrics { timestamp cpuUsage }
            } }
          }
        } }
      }
    } }
  }
}"#;

/// The statements one cold run of NESTED issues: one per level and kind, whatever the size.
const NESTED_STATEMENTS: &[&str] = &[
    "FROM \"registries\"",                    // the registries page
    "SELECT COUNT(*) FROM \"registries\"",    // its totalCount
    "FROM servers x WHERE x.registry_id",     // servers of every registry
    "FROM servers WHERE registry_id = ANY",   // their totalCounts
    "FROM \"registries\" WHERE",              // server.registry
    "FROM instances x WHERE x.server_id",     // instances of every server
    "FROM instances WHERE server_id = ANY",   // their totalCounts
    "FROM \"servers\" WHERE",                 // instance.server
    "FROM \"clusters\" WHERE",                // instance.cluster
    "FROM deployments x WHERE x.instance_id", // instance.deployment
    "FROM monitoring_metrics x",              // instance.latestMetrics
];

struct Run {
    body: Value,
    statements: u64,
    log: Vec<String>,
}

async fn run(app: &TestApp, query: &str, vars: Value) -> Run {
    let reply = app
        .graphql_with_headers(query, vars, &[("x-hivegraph-debug", "sql")])
        .await;
    let body = reply.json();
    assert_ok(&body);
    let statements = body["extensions"]["sqlStatements"]
        .as_u64()
        .expect("the debug header reports sqlStatements");
    let log = body["extensions"]["sqlLog"]
        .as_array()
        .expect("the debug header reports sqlLog")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    Run {
        body,
        statements,
        log,
    }
}

/// Checks the shape of a NESTED answer: every level complete, and the walks back up land on the
/// parents.
fn check_nested(body: &Value, registries: usize, servers: usize) -> usize {
    let regs = body["data"]["registries"]["edges"].as_array().unwrap();
    assert_eq!(regs.len(), registries);
    let mut instances = 0;
    for r in regs {
        let r = &r["node"];
        let sv = r["servers"]["edges"].as_array().unwrap();
        assert_eq!(sv.len(), servers, "servers of {}", r["name"]);
        assert_eq!(r["servers"]["totalCount"], json!(servers));
        for s in sv {
            let s = &s["node"];
            assert_eq!(
                s["registry"]["id"], r["id"],
                "server.registry walks back up"
            );
            let inst = s["instances"]["edges"].as_array().unwrap();
            assert_eq!(inst.len(), 2);
            assert_eq!(s["instances"]["totalCount"], json!(2));
            for i in inst {
                let i = &i["node"];
                assert_eq!(i["server"]["id"], s["id"], "instance.server walks back up");
                assert_eq!(i["status"], "RUNNING");
                assert!(
                    i["cluster"]["name"]
                        .as_str()
                        .unwrap()
                        .starts_with("bench-cluster-")
                );
                assert_eq!(i["deployment"]["operation"], "DEPLOY");
                assert!(i["latestMetrics"]["timestamp"].is_string());
                instances += 1;
            }
        }
    }
    instances
}

fn explain(run: &Run) -> String {
    format!("{} statements:\n  {}", run.statements, run.log.join("\n  "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_query_costs_the_same_statements_at_ten_times_the_rows() {
    // 30 registries x 50 servers x 2 instances needs more than the default complexity budget, and
    // more than the default request timeout in a debug build on a busy machine.
    let app = TestApp::spawn_with(|c| {
        c.serve.limits.max_complexity = 200_000;
        c.serve.limits.request_timeout_ms = 300_000;
    })
    .await;
    seed(&app, 3, 50, 2, 3).await;

    let small = run(&app, NESTED, json!({ "registries": 3, "servers": 50 })).await;
    assert_eq!(check_nested(&small.body, 3, 50), 300);
    assert_eq!(
        small.statements,
        NESTED_STATEMENTS.len() as u64,
        "one statement per level and kind; {}",
        explain(&small)
    );
    for expected in NESTED_STATEMENTS {
        assert!(
            small.log.iter().any(|s| s.contains(expected)),
            "no statement for {expected:?}; {}",
            explain(&small)
        );
    }

    // Ten times the rows: 30 registries, 1 500 servers, 3 000 instances in one answer.
    seed(&app, 27, 50, 2, 3).await;
    app.state.services.caches.invalidate_all();
    let large = run(&app, NESTED, json!({ "registries": 30, "servers": 50 })).await;
    assert_eq!(check_nested(&large.body, 30, 50), 3000);
    assert_eq!(
        large.statements,
        small.statements,
        "ten times the rows, the same statements; small: {}\nlarge: {}",
        explain(&small),
        explain(&large)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_by_row_resolution_would_fail_the_bound() {
    // The bound above is tight: the same query shape resolved row by row would cost at least one
    // statement per parent row. Asking for the servers of each registry one root field at a time
    // (the way a naive resolver would) shows the difference the test would see.
    let app = TestApp::spawn().await;
    seed(&app, 3, 10, 1, 1).await;
    let ids: Vec<String> = app
        .graphql(
            "{ registries(first: 3) { edges { node { id } } } }",
            json!({}),
        )
        .await["data"]["registries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect();
    let batched = run(
        &app,
        "query($a: ID!, $b: ID!, $c: ID!) { \
           a: registry(id: $a) { servers(first: 10) { edges { node { instances { edges { node { id } } } } } } } \
           b: registry(id: $b) { servers(first: 10) { edges { node { instances { edges { node { id } } } } } } } \
           c: registry(id: $c) { servers(first: 10) { edges { node { instances { edges { node { id } } } } } } } }",
        json!({ "a": ids[0], "b": ids[1], "c": ids[2] }),
    )
    .await;
    // registries by id, servers of 3 registries, instances of 30 servers: 3 statements.
    assert_eq!(batched.statements, 3, "{}", explain(&batched));

    // Row by row: one request per registry (nothing can batch across requests).
    let mut row_by_row = 0;
    for id in &ids {
        app.state.services.caches.invalidate_all();
        let r = run(
            &app,
            "query($a: ID!) { a: registry(id: $a) { servers(first: 10) { edges { node { instances { edges { node { id } } } } } } } }",
            json!({ "a": id }),
        )
        .await;
        row_by_row += r.statements;
    }
    assert_eq!(row_by_row, 3 * batched.statements);
    assert!(row_by_row > batched.statements);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_pages_of_several_parents_are_one_statement() {
    let app = TestApp::spawn().await;
    seed(&app, 2, 25, 1, 1).await;
    let q = r#"query($a: ID!, $b: ID!, $ca: String, $cb: String) {
      a: registry(id: $a) { servers(first: 10, after: $ca) { pageInfo { hasNextPage endCursor } edges { node { name } } } }
      b: registry(id: $b) { servers(first: 10, after: $cb) { pageInfo { hasNextPage endCursor } edges { node { name } } } }
    }"#;
    let ids: Vec<String> = app
        .graphql("{ registries { edges { node { id } } } }", json!({}))
        .await["data"]["registries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect();
    let mut cursors = (Value::Null, Value::Null);
    let mut seen: Vec<Vec<String>> = vec![vec![], vec![]];
    for page in 0..3 {
        let r = run(
            &app,
            q,
            json!({ "a": ids[0], "b": ids[1], "ca": cursors.0, "cb": cursors.1 }),
        )
        .await;
        // Both registries by id, then both pages, each with its own cursor, in one statement.
        assert_eq!(r.statements, 2, "page {page}: {}", explain(&r));
        for (i, alias) in ["a", "b"].iter().enumerate() {
            let conn = &r.body["data"][alias]["servers"];
            let names: Vec<String> = conn["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(names.len(), if page < 2 { 10 } else { 5 });
            assert_eq!(conn["pageInfo"]["hasNextPage"], json!(page < 2));
            seen[i].extend(names);
        }
        cursors = (
            r.body["data"]["a"]["servers"]["pageInfo"]["endCursor"].clone(),
            r.body["data"]["b"]["servers"]["pageInfo"]["endCursor"].clone(),
        );
    }
    for names in seen {
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "pages continue in order without repeats");
        assert_eq!(names.len(), 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_resolves_every_entity_through_the_batched_loaders() {
    let app = TestApp::spawn().await;
    seed(&app, 2, 2, 1, 1).await;
    let ids = app
        .graphql(
            "{ registries(first: 2) { edges { node { id servers(first: 2) { edges { node { id instances(first: 1) { edges { node { id cluster { id } deployment { id } } } } } } } } } } }",
            json!({}),
        )
        .await;
    assert_ok(&ids);
    let reg = &ids["data"]["registries"]["edges"];
    let pick = |r: usize, s: usize| &reg[r]["node"]["servers"]["edges"][s]["node"];
    let inst = |r: usize, s: usize| &pick(r, s)["instances"]["edges"][0]["node"];
    let vars = json!({
        "r1": reg[0]["node"]["id"], "r2": reg[1]["node"]["id"],
        "s1": pick(0, 0)["id"], "s2": pick(1, 1)["id"],
        "i1": inst(0, 0)["id"], "i2": inst(1, 1)["id"],
        "d1": inst(0, 0)["deployment"]["id"], "d2": inst(1, 1)["deployment"]["id"],
        "c1": inst(0, 0)["cluster"]["id"], "c2": inst(1, 1)["cluster"]["id"],
    });
    let q = r#"query($r1: ID!, $r2: ID!, $s1: ID!, $s2: ID!, $i1: ID!, $i2: ID!, $d1: ID!, $d2: ID!, $c1: ID!, $c2: ID!) {
      r1: node(id: $r1) { id ... on Registry { name } }
      r2: node(id: $r2) { id ... on Registry { name } }
      s1: node(id: $s1) { id ... on Server { name } }
      s2: node(id: $s2) { id ... on Server { name } }
      i1: node(id: $i1) { id ... on Instance { name } }
      i2: node(id: $i2) { id ... on Instance { name } }
      d1: node(id: $d1) { id ... on Deployment { operation } }
      d2: node(id: $d2) { id ... on Deployment { operation } }
      c1: node(id: $c1) { id ... on Cluster { name } }
      c2: node(id: $c2) { id ... on Cluster { name } }
    }"#;
    let r = run(&app, q, vars.clone()).await;
    for alias in ["r1", "r2", "s1", "s2", "i1", "i2", "d1", "d2", "c1", "c2"] {
        assert_eq!(r.body["data"][alias]["id"], vars[alias], "{alias}");
    }
    assert_eq!(r.body["data"]["d1"]["operation"], "DEPLOY");
    // Ten nodes of five kinds: one statement per kind.
    assert_eq!(r.statements, 5, "{}", explain(&r));

    // The same objects through their typed roots give the same answers.
    let typed = app
        .graphql(
            "query($i: ID!, $c: ID!) { instance(id: $i) { name } cluster(id: $c) { name } }",
            json!({ "i": vars["i1"], "c": vars["c1"] }),
        )
        .await;
    assert_eq!(
        typed["data"]["instance"]["name"],
        r.body["data"]["i1"]["name"]
    );
    assert_eq!(
        typed["data"]["cluster"]["name"],
        r.body["data"]["c1"]["name"]
    );

    // A well-formed id of nothing is null; a malformed one is bad input.
    let nowhere = hivegraph::ids::encode(hivegraph::ids::Kind::Instance, uuid::Uuid::new_v4());
    let missing = app
        .graphql(
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": nowhere.as_str() }),
        )
        .await;
    assert_ok(&missing);
    assert!(missing["data"]["node"].is_null(), "{missing}");
    let bad = app
        .graphql("{ node(id: \"not-an-id\") { id } }", json!({}))
        .await;
    assert_eq!(error_code(&bad).as_deref(), Some("BAD_USER_INPUT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_caches_answer_repeated_reads_and_report_hit_ratios() {
    let app = TestApp::spawn().await;
    seed(&app, 3, 20, 2, 3).await;
    let vars = json!({ "registries": 3, "servers": 20 });
    let cold = run(&app, NESTED, vars.clone()).await;
    assert_eq!(
        cold.statements,
        NESTED_STATEMENTS.len() as u64,
        "{}",
        explain(&cold)
    );
    let warm = run(&app, NESTED, vars.clone()).await;
    assert_eq!(
        warm.body["data"], cold.body["data"],
        "cached answers are the same"
    );
    // Server lists and their counts (5 min), instance lists and counts (30 s) and latest metrics
    // (15 s) come from memory; the registries page, the walks back up, clusters and deploy
    // operations are read again.
    assert_eq!(warm.statements, 6, "{}", explain(&warm));
    for cached in [
        "FROM servers x",
        "FROM instances x",
        "FROM monitoring_metrics x",
        "FROM servers WHERE registry_id",
    ] {
        assert!(
            !warm.log.iter().any(|s| s.contains(cached)),
            "{cached} should be cached: {}",
            explain(&warm)
        );
    }

    let metrics = app.get("/metrics").await.text;
    let line = |name: &str, cache: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("cache=\"{cache}\"")))
            .unwrap_or_else(|| panic!("{name} for {cache} missing:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // First run: 3 page and 3 count misses; second: the same 6 lookups hit.
    assert_eq!(
        line("hivegraph_cache_hits_total", "registry_server_lists"),
        6.0
    );
    assert_eq!(
        line("hivegraph_cache_misses_total", "registry_server_lists"),
        6.0
    );
    assert_eq!(
        line("hivegraph_cache_hit_ratio", "registry_server_lists"),
        0.5
    );
    assert!(line("hivegraph_cache_hits_total", "instance_status") >= 120.0);
    assert!(line("hivegraph_cache_hits_total", "monitoring_metrics") >= 120.0);
}

const SERVERS_OF: &str = "query($id: ID!) { registry(id: $id) { servers(first: 100) { totalCount edges { node { name } } } } }";

async fn server_names(app: &TestApp, id: &Value) -> (Vec<String>, i64) {
    let r = app.graphql(SERVERS_OF, json!({ "id": id })).await;
    assert_ok(&r);
    let conn = &r["data"]["registry"]["servers"];
    (
        conn["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["name"].as_str().unwrap().to_string())
            .collect(),
        conn["totalCount"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_cached_server_lists_at_once() {
    let app = TestApp::spawn().await;
    seed(&app, 2, 3, 1, 1).await;
    let regs = app
        .graphql("{ registries { edges { node { id name } } } }", json!({}))
        .await;
    let r1 = regs["data"]["registries"]["edges"][0]["node"]["id"].clone();
    let r2 = regs["data"]["registries"]["edges"][1]["node"]["id"].clone();
    let (before, n) = server_names(&app, &r1).await;
    assert_eq!((before.len(), n), (3, 3));
    server_names(&app, &r2).await;

    // A row written behind the gateway's back is not seen while the list is cached...
    let add = |reg: &str, name: &str| {
        format!(
            "INSERT INTO servers (registry_id, name, original_name, image, transport) \
             SELECT id, '{name}', '{name}', 'ghcr.io/x/{name}:1', 'stdio' FROM registries WHERE name = '{reg}'"
        )
    };
    let reg1 = regs["data"]["registries"]["edges"][0]["node"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let reg2 = regs["data"]["registries"]["edges"][1]["node"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = app.db.conn().await;
    conn.batch_execute(&add(&reg1, "added-later"))
        .await
        .unwrap();
    conn.batch_execute(&add(&reg2, "added-later"))
        .await
        .unwrap();
    assert_eq!(
        server_names(&app, &r1).await,
        (before.clone(), 3),
        "served from the cache"
    );

    // ...and is seen at once after a write through the gateway (updateRegistry) invalidates it.
    let upd = app
        .graphql(
            "mutation($id: ID!) { updateRegistry(id: $id, input: { description: \"changed\" }) { id } }",
            json!({ "id": r1 }),
        )
        .await;
    assert_ok(&upd);
    let (after, n) = server_names(&app, &r1).await;
    assert_eq!(n, 4);
    assert!(after.contains(&"added-later".to_string()));
    // Only that registry's entries were dropped.
    assert_eq!(
        server_names(&app, &r2).await.1,
        3,
        "the other registry is still cached"
    );

    // A sync committed by another gateway process moves last_sync_at: once its notification
    // arrives (milliseconds), whole cached answers are dropped, and the server-list cache is
    // bypassed because its keys carry last_sync_at.
    conn.batch_execute(&format!(
        "UPDATE registries SET last_sync_at = now() + interval '1 second' WHERE name = '{reg2}'"
    ))
    .await
    .unwrap();
    settle(&app).await;
    assert_eq!(server_names(&app, &r2).await.1, 4);

    // The invalidation API the sync calls after committing.
    conn.batch_execute(&add(&reg1, "added-by-sync"))
        .await
        .unwrap();
    assert_eq!(server_names(&app, &r1).await.1, 4);
    let uuid = hivegraph::ids::decode_any(r1.as_str().unwrap()).unwrap().1;
    app.state.services.caches.invalidate_registry(uuid);
    assert_eq!(server_names(&app, &r1).await.1, 5);

    // Deleting (archiving) the registry drops its cached entries too: it leaves the lists at
    // once, and stays readable by id with `archivedAt` set.
    conn.batch_execute("UPDATE instances SET status = 'terminated', phase = 'terminating'")
        .await
        .unwrap();
    let listed = "{ registries(first: 50) { nodes { id } } servers(first: 100) { totalCount } }";
    let before = app.graphql(listed, json!({})).await;
    let del = app
        .graphql(
            "mutation($id: ID!) { deleteRegistry(id: $id) { deletedServers } }",
            json!({ "id": r1 }),
        )
        .await;
    assert_ok(&del);
    let after = app.graphql(listed, json!({})).await;
    let ids = |v: &Value| {
        v["data"]["registries"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].clone())
            .collect::<Vec<_>>()
    };
    assert!(
        ids(&before).contains(&r1) && !ids(&after).contains(&r1),
        "{after}"
    );
    let removed = del["data"]["deleteRegistry"]["deletedServers"]
        .as_i64()
        .unwrap();
    assert_eq!(
        after["data"]["servers"]["totalCount"].as_i64().unwrap(),
        before["data"]["servers"]["totalCount"].as_i64().unwrap() - removed
    );
    let archived = app
        .graphql(
            "query($id: ID!) { registry(id: $id) { archivedAt } }",
            json!({ "id": r1 }),
        )
        .await;
    assert!(
        archived["data"]["registry"]["archivedAt"].is_string(),
        "{archived}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_logs_are_batched_and_cached_and_foreign_cursors_refused() {
    let app = TestApp::spawn().await;
    seed(&app, 1, 3, 1, 1).await;
    let q = "{ deployments(first: 3) { edges { node { status logs(first: 1) { at level message } } } } }";
    let cold = run(&app, q, json!({})).await;
    // The operations page, then every operation's log lines in one statement.
    assert_eq!(cold.statements, 2, "{}", explain(&cold));
    let ops = cold.body["data"]["deployments"]["edges"]
        .as_array()
        .unwrap();
    assert_eq!(ops.len(), 3);
    for op in ops {
        let logs = op["node"]["logs"].as_array().unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0]["message"], "applying the deployment");
        assert_eq!(logs[0]["level"], "info");
    }
    // Finished operations' logs are then answered from the cache.
    let warm = run(&app, q, json!({})).await;
    assert_eq!(warm.statements, 1, "{}", explain(&warm));
    assert_eq!(warm.body["data"], cold.body["data"]);
    let bad = app
        .graphql(
            "{ deployments(first: 1) { edges { node { logs(first: 0) { message } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&bad).as_deref(), Some("BAD_USER_INPUT"), "{bad}");

    let server_cursor = app
        .graphql(
            "{ servers(first: 1) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await["data"]["servers"]["pageInfo"]["endCursor"]
        .clone();
    // So is a foreign cursor in a time-ordered nested list: refused before it reaches the
    // statement that pages every parent's instances at once.
    let nested = app
        .graphql(
            "query($after: String) { servers(first: 1) { edges { node { instances(after: $after) { edges { node { id } } } } } } }",
            json!({ "after": server_cursor }),
        )
        .await;
    assert_eq!(
        error_code(&nested).as_deref(),
        Some("BAD_USER_INPUT"),
        "{nested}"
    );
    assert_eq!(error_field(&nested).as_deref(), Some("after"));
    for root in ["instances", "deployments"] {
        let r = app
            .graphql(
                &format!("query($after: String) {{ {root}(after: $after) {{ totalCount }} }}"),
                json!({ "after": server_cursor }),
            )
            .await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("BAD_USER_INPUT"),
            "{root}: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_written_by_any_process_reach_the_caches() {
    let app = TestApp::spawn().await;
    seed(&app, 1, 1, 1, 2).await;
    let q = r#"{ instances(first: 1) { edges { node { id status
        latestMetrics { cpuUsage }
        server { instances { totalCount edges { node { status } } } } } } } }"#;
    let before = app.graphql(q, json!({})).await;
    assert_ok(&before);
    let node = &before["data"]["instances"]["edges"][0]["node"];
    assert_eq!(node["status"], "RUNNING");
    let id = node["id"].clone();
    let by_id = "query($id: ID!) { instance(id: $id) { status } }";
    assert_eq!(
        app.graphql(by_id, json!({ "id": id })).await["data"]["instance"]["status"],
        "RUNNING"
    );
    // Another process (the Kubernetes watcher, psql, another gateway) changes the instance and
    // stores a sample: the database announces both, and the cached answers are dropped.
    let mut conn = app.db.conn().await;
    conn.batch_execute(
        "UPDATE instances SET status = 'failed', health_status = 'unhealthy'; \
         INSERT INTO monitoring_metrics (instance_id, \"timestamp\", cpu_usage) \
           SELECT id, now() + interval '1 hour', 99 FROM instances",
    )
    .await
    .unwrap();
    settle(&app).await;
    let after = app.graphql(q, json!({})).await;
    let node = &after["data"]["instances"]["edges"][0]["node"];
    assert_eq!(node["status"], "FAILED");
    assert_eq!(node["latestMetrics"]["cpuUsage"], 99.0);
    assert_eq!(
        node["server"]["instances"]["edges"][0]["node"]["status"],
        "FAILED"
    );
    assert_eq!(
        app.graphql(by_id, json!({ "id": id })).await["data"]["instance"]["status"],
        "FAILED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_reads_are_answered_whole_until_their_data_changes() {
    let app = TestApp::spawn().await;
    seed(&app, 2, 2, 1, 2).await;
    let q = r#"query Page { registries(first: 5) { nodes { id name servers(first: 5) { nodes { name
        instances(first: 2) { nodes { id status latestMetrics { cpuUsage } } } } } } } }"#;
    let ask = |q: &'static str| {
        let app = &app;
        async move {
            let r = app.graphql_with_headers(q, json!({}), &[]).await;
            let cache = r
                .headers
                .get("x-hivegraph-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (r.json(), cache)
        }
    };
    let (first, c1) = ask(q).await;
    assert_ok(&first);
    assert_eq!(c1.as_deref(), Some("miss"));
    let (second, c2) = ask(q).await;
    assert_eq!(c2.as_deref(), Some("hit"));
    assert_eq!(second, first);
    let inst =
        &first["data"]["registries"]["nodes"][0]["servers"]["nodes"][0]["instances"]["nodes"][0];
    assert_eq!(inst["status"], "RUNNING");

    // A write by another process reaches the cache through the database's notification.
    let mut conn = app.db.conn().await;
    conn.batch_execute(&format!(
        "UPDATE instances SET status = 'failed' WHERE id = '{}'",
        hivegraph::ids::decode_any(inst["id"].as_str().unwrap())
            .unwrap()
            .1
    ))
    .await
    .unwrap();
    settle(&app).await;
    let (third, c3) = ask(q).await;
    assert_eq!(c3.as_deref(), Some("miss"));
    let inst3 =
        &third["data"]["registries"]["nodes"][0]["servers"]["nodes"][0]["instances"]["nodes"][0];
    assert_eq!(inst3["status"], "FAILED");
    assert_eq!(ask(q).await.1.as_deref(), Some("hit"));

    // A mutation of this process is visible to the very next read, notification or not.
    let q2 = "query { registries(first: 5) { nodes { id description } } }";
    ask(q2).await;
    assert_eq!(ask(q2).await.1.as_deref(), Some("hit"));
    let reg = first["data"]["registries"]["nodes"][0]["id"].clone();
    let renamed = app
        .graphql(
            "mutation($id: ID!) { updateRegistry(id: $id, input: { description: \"renamed\" }) { id } }",
            json!({ "id": reg }),
        )
        .await;
    assert_ok(&renamed);
    let (before, c) = ask(q2).await;
    assert_eq!(c.as_deref(), Some("miss"));
    // (An answer executed while the write's own notification arrived is not stored.)
    settle(&app).await;
    ask(q2).await;
    let (again, c) = ask(q2).await;
    assert_eq!(c.as_deref(), Some("hit"));
    assert_eq!(again, before);
    assert_eq!(
        before["data"]["registries"]["nodes"][0]["description"],
        "renamed"
    );

    // What no notification covers is never cached; nor are debug answers, or errors.
    let (_, c) = ask("query { clusters { totalCount } }").await;
    assert_eq!(c, None);
    let dbg = app
        .graphql_with_headers(q, json!({}), &[("x-hivegraph-debug", "sql")])
        .await;
    assert!(dbg.headers.get("x-hivegraph-cache").is_none());
    assert!(dbg.json()["extensions"]["sqlStatements"].as_u64().unwrap() > 0);
    let bad = "query { registries(first: -1) { nodes { id } } }";
    let (e1, _) = ask(bad).await;
    assert!(error_code(&e1).is_some(), "{e1}");
    let (_, c) = ask(bad).await;
    assert_eq!(
        c.as_deref(),
        Some("miss"),
        "an error answer is executed every time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_log_counts_writes_too() {
    let app = TestApp::spawn().await;
    let reply = app
        .graphql_with_headers(
            r#"mutation { createRegistry(input: {name: "counted", url: "https://example.com/r.json"}) { id } }"#,
            json!({}),
            &[("x-hivegraph-debug", "sql")],
        )
        .await;
    let body = reply.json();
    assert_ok(&body);
    let log: Vec<String> = body["extensions"]["sqlLog"]
        .as_array()
        .expect("the debug header reports sqlLog")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        log.iter()
            .any(|s| s.starts_with("INSERT INTO \"registries\"")),
        "the registry's INSERT is in the log: {log:#?}"
    );
    assert!(
        log.iter().any(|s| s.contains("audit_log")),
        "the audit record's INSERT is in the log: {log:#?}"
    );
    assert_eq!(
        body["extensions"]["sqlStatements"].as_u64(),
        Some(log.len() as u64)
    );
}
