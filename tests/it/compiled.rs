//! The compiled read path (`hivegraph::graphql::compiled`) answers what the executor answers.
//!
//! Every integration test runs with `compiled_reads = check` (`Config::for_tests`): each
//! request that can be planned is answered by both paths and fails when the answers differ. The
//! tests here add the principals and document shapes the path knows, and check that planned
//! documents really take the path, with the same bytes and the same cost.

use crate::authz::{EVERYONE, SEED, Who, app_with, ask};
use crate::common::{self, TestApp};

use diesel_async::SimpleAsyncConnection;
use hivegraph::config::CompiledReads;
use serde_json::{Value, json};

/// More registries, servers, instances in both namespaces, and several samples per instance,
/// on top of the authorization seed (one registry `r1`, one server, instances in `team-a` and
/// `team-b`).
const MORE: &str = r#"
INSERT INTO registries (id, name, url, status, format, server_count, last_sync_at, description)
SELECT ('00000000-0000-0000-0000-0000000bb0' || lpad(g::text, 2, '0'))::uuid, 'extra-' || g,
       'https://registry.example/extra-' || g || '.json', 'active', 'toolhive', 3, now(),
       CASE WHEN g % 2 = 0 THEN 'even' END
FROM generate_series(1, 4) g;
INSERT INTO servers (registry_id, name, original_name, description, image, transport, tier, status,
                     category, capabilities, version, pull_count, stars, network_permissions, url,
                     repository_url, sync_hash)
SELECT r.id, 'srv-' || s, 'io.example/srv-' || s, 'Server ' || s, 'ghcr.io/example/s:' || s,
       'http', 'community', 'available', ARRAY['web', 'cat-' || s], ARRAY['tool'],
       CASE WHEN s = 2 THEN NULL ELSE '1.0.' || s END, s * 10, s, '{"network":{"outbound":{"allow_port":[443]}}}',
       'https://srv-' || s || '.example/mcp', 'https://github.com/example/srv-' || s, 'h' || s
FROM registries r, generate_series(1, 3) s WHERE r.name LIKE 'extra-%';
INSERT INTO instances (server_id, cluster_id, name, namespace, status, phase, replicas_desired,
                       replicas_current, replicas_ready, health_status, created_at, endpoint,
                       health_reason)
SELECT s.id, '00000000-0000-0000-0000-00000000aa03', s.name || '-' || n || '-' || left(s.id::text, 8),
       CASE WHEN n = 1 THEN 'team-a' ELSE 'team-b' END,
       CASE WHEN n = 3 THEN 'terminated' ELSE 'running' END, 'ready', 1, 1, 1, 'healthy',
       now() - (n || ' minutes')::interval, 'http://x.svc:8080', CASE WHEN n = 2 THEN 'ok' END
FROM servers s, generate_series(1, 3) n WHERE s.name LIKE 'srv-%';
INSERT INTO monitoring_metrics (instance_id, "timestamp", cpu_usage, memory_usage, request_count,
                                response_time, error_rate, network_io)
SELECT i.id, now() - (k || ' seconds')::interval, 1.5 * k, 1000000 * k, k, 0.25, NULL,
       '{"rx": 1}'
FROM instances i, generate_series(1, 3) k WHERE i.name LIKE 'srv-%';
"#;

/// The documents: the benchmark's peer query and the shapes around it.
const DOCUMENTS: &[(&str, &str)] = &[
    (
        "peer",
        "query Nested { registries(first: 10) { nodes { name
           servers(first: 50) { nodes { name
             instances(first: 2) { nodes { name latestMetrics { timestamp cpuUsage memoryUsage } } } } } } } }",
    ),
    (
        "every field",
        "{ __typename registries(first: 3) { __typename totalCountless: pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }
           edges { __typename cursor node { __typename id name url description status format serverCount lastSyncAt
             lastSyncAttemptAt lastError syncIntervalSeconds nextSyncAt archivedAt createdAt updatedAt metadata
             servers(first: 2) { nodes { id registryId name originalName description version image url transport tier status
               category capabilities repositoryUrl networkPermissions pullCount stars lastUpdated
               deploymentRequirements removedUpstreamAt archivedAt
               instances(first: 2) { edges { cursor node { id serverId name namespace status phase deployedAt endpoint
                 healthStatus healthReason latestMetrics { __typename instanceId timestamp cpuUsage memoryUsage
                 networkIO requestCount responseTime errorRate healthChecks } } } } } } } } } }",
    ),
    (
        "fragments and aliases",
        "query F($n: Int = 2) { a: registries(first: $n) { ...Page } b: registries(first: 1) { nodes { n: name } } }
         fragment Page on RegistryConnection { nodes { ... on Registry { name } ...Reg } pageInfo { endCursor } }
         fragment Reg on Registry { servers(first: $n) { nodes { ... { name instances { nodes { namespace } } } } } }",
    ),
    (
        // Every field a narrow row answers (see `dataloaders::width`): without row caches the
        // compiled path reads narrow rows for this one, and the check compares them with the
        // executor's whole rows.
        "narrow fields",
        "{ registries(first: 3) { nodes { servers(first: 3) { edges { cursor node { id registryId name
           transport tier status pullCount stars lastUpdated removedUpstreamAt archivedAt
           instances(first: 3) { pageInfo { endCursor } nodes { id serverId name namespace status phase
             deployedAt healthStatus latestMetrics { instanceId timestamp cpuUsage memoryUsage
             requestCount responseTime errorRate } } } } } } } } }",
    ),
    (
        "variables",
        "query V($first: Int, $after: String, $inner: Int!) { registries(first: $first, after: $after) {
           nodes { name servers(first: $inner) { edges { cursor } pageInfo { hasNextPage } } } } }",
    ),
];

/// Variables for `variables`, including ones the executor refuses (the compiled path must leave
/// those to it).
fn variable_sets(cursor: &str) -> Vec<Value> {
    vec![
        json!({ "first": 2, "inner": 1 }),
        json!({ "first": null, "after": cursor, "inner": 2 }),
        json!({ "first": 500, "inner": 1 }),
        json!({ "first": 1, "after": "not a cursor", "inner": 1 }),
        json!({ "first": 1, "after": "a\u{0007}b", "inner": 1 }),
        json!({ "first": 1, "inner": null }),
        json!({ "first": "two", "inner": 1 }),
        json!({ "first": 1 }),
    ]
}

async fn seeded(read_caches: bool) -> TestApp {
    let app = app_with(|c| c.serve.read_caches = read_caches).await;
    app.db.conn().await.batch_execute(MORE).await.unwrap();
    app
}

/// The count of `hivegraph_compiled_reads_total{path=...}`.
async fn compiled_reads(app: &TestApp, path: &str) -> u64 {
    let text = app.get("/metrics").await.text;
    let prefix = format!("hivegraph_compiled_reads_total{{path=\"{path}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn assert_no_difference(r: &Value, what: &str) {
    let text = r.to_string();
    assert!(
        !text.contains("compiled read path differs"),
        "{what}: the paths differ: {text}"
    );
}

#[tokio::test]
async fn compiled_answers_equal_the_executors_for_every_principal_and_shape() {
    // With row caches, every level reads whole rows through them; without, levels whose fields
    // need no wide column read narrow rows.
    for read_caches in [true, false] {
        every_principal_and_shape(seeded(read_caches).await).await;
    }
}

async fn every_principal_and_shape(app: TestApp) {
    let first_page = ask(
        &app,
        Who::Admin,
        "{ registries(first: 2) { pageInfo { endCursor } } }",
        json!({}),
    )
    .await;
    let cursor = first_page["data"]["registries"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_string();
    let mut answered: u64 = 0;
    let mut refused = Vec::new();
    for who in EVERYONE {
        for (what, doc) in DOCUMENTS {
            let sets = if *what == "variables" {
                variable_sets(&cursor)
            } else {
                vec![json!({})]
            };
            for vars in sets {
                let r = ask(&app, who, doc, vars.clone()).await;
                assert_no_difference(&r, &format!("{what} {vars} as {who:?}"));
                if r.get("errors").is_none() {
                    answered += 1;
                } else {
                    refused.push(format!("{what} {vars} as {who:?}: {}", r["errors"][0]));
                }
            }
        }
    }
    // The anonymous caller is refused everywhere; the others read every valid variant.
    assert_eq!(
        answered,
        3 * (DOCUMENTS.len() as u64 - 1 + 2),
        "valid answers; refused: {refused:#?}"
    );
    let compiled = compiled_reads(&app, "compiled").await;
    assert!(
        compiled >= answered,
        "every valid answer was compared with a compiled one: {compiled} of {answered}"
    );
    // Refused variables, bad cursors and the anonymous caller are the executor's to answer.
    assert!(compiled_reads(&app, "declined").await >= 4 * 6);
}

#[tokio::test]
async fn planned_documents_take_the_compiled_path_with_the_same_bytes_cost_and_statements() {
    let app = TestApp::spawn_with(|c| {
        c.serve.compiled_reads = CompiledReads::On;
        c.serve.read_caches = false;
        c.serve.limits.rate_limit_per_hour = 100_000;
    })
    .await;
    app.db
        .conn()
        .await
        .batch_execute(&format!("{SEED}{MORE}"))
        .await
        .unwrap();
    let doc = DOCUMENTS[0].1;
    let ask_sql = || async {
        app.graphql_with_headers(doc, json!({}), &[("x-hivegraph-debug", "sql")])
            .await
            .json()
    };
    let executed = ask_sql().await;
    let compiled = ask_sql().await;
    assert_eq!(compiled_reads(&app, "executor").await, 1);
    assert_eq!(compiled_reads(&app, "compiled").await, 1);
    assert_eq!(executed["data"], compiled["data"]);
    let ext = |r: &Value, k: &str| r["extensions"][k].clone();
    assert_eq!(
        ext(&executed, "rateLimit")["cost"],
        ext(&compiled, "rateLimit")["cost"]
    );
    let statements = ext(&compiled, "sqlStatements").as_u64().unwrap();
    assert!(
        (1..=5).contains(&statements),
        "compiled peer query: {statements} statements"
    );
    assert_eq!(
        statements,
        ext(&executed, "sqlStatements").as_u64().unwrap()
    );
    // Byte for byte, once the per-request report is set aside.
    let bytes = |r: &Value| serde_json::to_string(&r["data"]).unwrap();
    assert_eq!(bytes(&executed), bytes(&compiled));
    common::assert_ok(&compiled);
    assert_eq!(
        compiled["data"]["registries"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}
