//! Authorization: a role × operation matrix over every root query and every mutation, for
//! anonymous, viewer, deployer-with-namespace-A and admin callers, including nested fields,
//! counts, `node(id)`, subscriptions and caches, with an instance in namespace B that only the
//! admin may see.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use common::{TestApp, error_code};
use hivegraph::config::AuthMode;
use hivegraph::ids::{Kind, encode};

const SECRET: &str = "authz-test-secret-0123456789abcdef";

const REG: &str = "00000000-0000-0000-0000-00000000aa01";
const SRV: &str = "00000000-0000-0000-0000-00000000aa02";
const CLU: &str = "00000000-0000-0000-0000-00000000aa03";
const INST_A: &str = "00000000-0000-0000-0000-00000000aa0a";
const INST_B: &str = "00000000-0000-0000-0000-00000000aa0b";
const DEP_A: &str = "00000000-0000-0000-0000-00000000ad0a";
const DEP_B: &str = "00000000-0000-0000-0000-00000000ad0b";
const MISSING: &str = "00000000-0000-0000-0000-00000000ffff";

/// A cluster, a registry with one server, and an instance of it in `team-a` and in `team-b`,
/// each with a deploy operation, a log line and a monitoring sample.
pub(crate) const SEED: &str = r#"
INSERT INTO clusters (id, name, endpoint, status, version, access_level, simulated, capabilities)
VALUES ('00000000-0000-0000-0000-00000000aa03', 'c1', 'https://127.0.0.1:1', 'connected', 'v1.31.0',
        'deploy', true, ARRAY['apps/v1']);
INSERT INTO registries (id, name, url, status, format, server_count, last_sync_at)
VALUES ('00000000-0000-0000-0000-00000000aa01', 'r1', 'https://registry.example/r1.json', 'active',
        'toolhive', 1, now());
INSERT INTO servers (id, registry_id, name, original_name, description, image, transport, tier,
                     status, category, capabilities)
VALUES ('00000000-0000-0000-0000-00000000aa02', '00000000-0000-0000-0000-00000000aa01', 'fetch',
        'fetch', 'Fetches pages', 'ghcr.io/example/fetch:1', 'stdio', 'official', 'available',
        ARRAY['web'], ARRAY['fetch']);
INSERT INTO instances (id, server_id, cluster_id, name, namespace, status, phase, replicas_desired,
                       replicas_current, replicas_ready, health_status, created_at)
VALUES ('00000000-0000-0000-0000-00000000aa0a', '00000000-0000-0000-0000-00000000aa02',
        '00000000-0000-0000-0000-00000000aa03', 'fetch-a', 'team-a', 'running', 'ready', 1, 1, 1,
        'healthy', now() - interval '2 minutes'),
       ('00000000-0000-0000-0000-00000000aa0b', '00000000-0000-0000-0000-00000000aa02',
        '00000000-0000-0000-0000-00000000aa03', 'fetch-b', 'team-b', 'running', 'ready', 1, 1, 1,
        'healthy', now() - interval '1 minute');
INSERT INTO deployments (id, instance_id, server_id, operation, initiated_by, status, started_at,
                         completed_at, parameters)
VALUES ('00000000-0000-0000-0000-00000000ad0a', '00000000-0000-0000-0000-00000000aa0a',
        '00000000-0000-0000-0000-00000000aa02', 'deploy', 'seed', 'completed',
        now() - interval '2 minutes', now(), '{}'),
       ('00000000-0000-0000-0000-00000000ad0b', '00000000-0000-0000-0000-00000000aa0b',
        '00000000-0000-0000-0000-00000000aa02', 'deploy', 'seed', 'completed',
        now() - interval '1 minute', now(), '{}');
INSERT INTO deployment_logs (deployment_id, level, message)
SELECT id, 'info', 'rollout complete' FROM deployments;
INSERT INTO monitoring_metrics (instance_id, "timestamp", cpu_usage)
SELECT id, now(), 5 FROM instances;
INSERT INTO namespace_grants (subject, namespace, granted_by) VALUES ('dan', 'team-a', 'seed');
"#;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Who {
    Anonymous,
    Viewer,
    Deployer,
    Admin,
}

pub(crate) const EVERYONE: [Who; 4] = [Who::Admin, Who::Deployer, Who::Viewer, Who::Anonymous];

pub(crate) fn token(who: Who) -> Option<String> {
    let (sub, roles) = match who {
        Who::Anonymous => return None,
        Who::Viewer => ("vera", vec!["viewer"]),
        Who::Deployer => ("dan", vec!["deployer"]),
        Who::Admin => ("ada", vec!["admin"]),
    };
    let exp = chrono::Utc::now().timestamp() + 3600;
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp, "roles": roles }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    Some(format!("Bearer {t}"))
}

pub(crate) async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// [`app`] with more configuration.
pub(crate) async fn app_with(configure: impl FnOnce(&mut hivegraph::config::Config)) -> TestApp {
    let app = TestApp::spawn_with(|c| {
        c.serve.auth = AuthMode::Jwt;
        c.serve.jwt.jwt_secret = Some(SECRET.into());
        configure(c);
    })
    .await;
    app.db.conn().await.batch_execute(SEED).await.unwrap();
    app
}

pub(crate) async fn ask(app: &TestApp, who: Who, query: &str, vars: Value) -> Value {
    let auth = token(who);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    app.graphql_with_headers(query, vars, &headers).await.json()
}

fn id(kind: Kind, uuid: &str) -> String {
    encode(kind, uuid.parse().unwrap()).to_string()
}

/// What a caller gets.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Data, no error.
    Ok,
    /// This error code.
    Code(&'static str),
    /// Passes authorization: any outcome except UNAUTHENTICATED, FORBIDDEN or NOT_FOUND.
    Allowed,
}

fn check(resp: &Value, expect: &Expect, what: &str, who: Who) {
    let code = error_code(resp);
    match expect {
        Expect::Ok => assert!(
            resp.get("errors").is_none(),
            "{what} as {who:?}: expected data, got {resp}"
        ),
        Expect::Code(c) => assert_eq!(
            code.as_deref(),
            Some(*c),
            "{what} as {who:?}: expected {c}, got {resp}"
        ),
        Expect::Allowed => assert!(
            !matches!(
                code.as_deref(),
                Some("UNAUTHENTICATED" | "FORBIDDEN" | "NOT_FOUND")
            ),
            "{what} as {who:?}: expected to pass authorization, got {resp}"
        ),
    }
}

#[tokio::test]
async fn every_root_query_follows_the_access_rules() {
    let app = app().await;
    let (reg, srv, clu) = (
        id(Kind::Registry, REG),
        id(Kind::Server, SRV),
        id(Kind::Cluster, CLU),
    );
    let public: Vec<(&str, String, Value)> = vec![
        (
            "registries",
            "{ registries { totalCount edges { node { id authConfig { configured } } } } }".into(),
            json!({}),
        ),
        (
            "registry",
            "query($id: ID!) { registry(id: $id) { id name } }".into(),
            json!({ "id": reg }),
        ),
        (
            "servers",
            "{ servers(first: 5) { totalCount edges { node { id } } } }".into(),
            json!({}),
        ),
        (
            "serverFacets",
            "{ serverFacets { totalCount category { value count } } }".into(),
            json!({}),
        ),
        (
            "server",
            "query($id: ID!) { server(id: $id) { id } }".into(),
            json!({ "id": srv }),
        ),
        (
            "clusters",
            "{ clusters { totalCount edges { node { id } } } }".into(),
            json!({}),
        ),
        (
            "cluster",
            "query($id: ID!) { cluster(id: $id) { id } }".into(),
            json!({ "id": clu }),
        ),
        (
            "node",
            "query($id: ID!) { node(id: $id) { id } }".into(),
            json!({ "id": srv }),
        ),
        (
            "instances",
            "{ instances { totalCount } }".into(),
            json!({}),
        ),
        (
            "instance",
            "query($id: ID!) { instance(id: $id) { id } }".into(),
            json!({ "id": id(Kind::Instance, INST_A) }),
        ),
        (
            "deployments",
            "{ deployments { totalCount } }".into(),
            json!({}),
        ),
        (
            "deployment",
            "query($id: ID!) { deployment(id: $id) { id } }".into(),
            json!({ "id": id(Kind::Deployment, DEP_A) }),
        ),
    ];
    // Admin first, so that the caches are warm with everything before the others ask.
    for who in EVERYONE {
        for (name, q, vars) in &public {
            let expect = if who == Who::Anonymous {
                Expect::Code("UNAUTHENTICATED")
            } else {
                Expect::Ok
            };
            check(&ask(&app, who, q, vars.clone()).await, &expect, name, who);
        }
        // viewer works for everyone, and tells them what they may do.
        let v = ask(
            &app,
            who,
            "{ viewer { subject authenticated canDeploy canAdminister namespaces } }",
            json!({}),
        )
        .await;
        check(&v, &Expect::Ok, "viewer", who);
        assert_eq!(
            v["data"]["viewer"]["authenticated"],
            json!(who != Who::Anonymous)
        );
        let ns = &v["data"]["viewer"]["namespaces"];
        match who {
            Who::Admin => assert!(ns.is_null(), "admins see every namespace"),
            Who::Deployer => assert_eq!(ns, &json!(["team-a"])),
            _ => assert_eq!(ns, &json!([])),
        }
        // Admin-only queries.
        for (name, q) in [
            (
                "namespaceGrants",
                "{ namespaceGrants { subject namespace } }",
            ),
            (
                "auditLog",
                "{ auditLog(first: 5) { totalCount edges { node { action outcome } } } }",
            ),
        ] {
            let expect = match who {
                Who::Admin => Expect::Ok,
                Who::Anonymous => Expect::Code("UNAUTHENTICATED"),
                _ => Expect::Code("FORBIDDEN"),
            };
            check(&ask(&app, who, q, json!({})).await, &expect, name, who);
        }
    }
    // The refused reads of the audit trail and grants are audited too.
    let n = app
        .db
        .scalar("SELECT count(*) FROM audit_log WHERE outcome = 'denied' AND action IN ('auditLog', 'namespaceGrants')")
        .await;
    assert_eq!(
        n.as_deref(),
        Some("6"),
        "2 queries x (deployer, viewer, anonymous)"
    );
}

#[tokio::test]
async fn instance_data_is_visible_only_in_granted_namespaces_on_every_path() {
    let app = app().await;
    let (a, b) = (id(Kind::Instance, INST_A), id(Kind::Instance, INST_B));
    let (da, db) = (id(Kind::Deployment, DEP_A), id(Kind::Deployment, DEP_B));
    let nested = r#"query($srv: ID!, $clu: ID!) {
        instances { totalCount edges { node { name latestMetrics { cpuUsage } } } }
        deployments { totalCount edges { node { instance { name } } } }
        server(id: $srv) { instances { totalCount edges { node { name namespace
            operations { totalCount } metrics { totalCount } deployment { logs { message } } } } } }
        cluster(id: $clu) { instances { totalCount edges { node { name } } } }
    }"#;
    let vars = json!({ "srv": id(Kind::Server, SRV), "clu": id(Kind::Cluster, CLU) });
    for who in EVERYONE {
        let r = ask(&app, who, nested, vars.clone()).await;
        if who == Who::Anonymous {
            check(&r, &Expect::Code("UNAUTHENTICATED"), "nested", who);
            continue;
        }
        check(&r, &Expect::Ok, "nested", who);
        let d = &r["data"];
        let names = |v: &Value| -> Vec<String> {
            v["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        let (want, count): (Vec<&str>, i64) = match who {
            Who::Admin => (vec!["fetch-a", "fetch-b"], 2),
            Who::Deployer => (vec!["fetch-a"], 1),
            _ => (vec![], 0),
        };
        assert_eq!(names(&d["instances"]), want, "{who:?} root instances");
        assert_eq!(d["instances"]["totalCount"], json!(count), "{who:?}");
        assert_eq!(d["deployments"]["totalCount"], json!(count), "{who:?}");
        assert_eq!(
            names(&d["server"]["instances"]),
            want,
            "{who:?} Server.instances"
        );
        assert_eq!(d["server"]["instances"]["totalCount"], json!(count));
        assert_eq!(
            names(&d["cluster"]["instances"]),
            want,
            "{who:?} Cluster.instances"
        );
        assert_eq!(d["cluster"]["instances"]["totalCount"], json!(count));

        // By id: instance, node and deployment of namespace B; hidden means null, exactly as a
        // missing id.
        for (q, v, field) in [
            (
                "query($id: ID!) { instance(id: $id) { id } }",
                &b,
                "instance",
            ),
            ("query($id: ID!) { node(id: $id) { id } }", &b, "node"),
            (
                "query($id: ID!) { deployment(id: $id) { id } }",
                &db,
                "deployment",
            ),
            ("query($id: ID!) { node(id: $id) { id } }", &db, "node"),
        ] {
            let r = ask(&app, who, q, json!({ "id": v })).await;
            check(&r, &Expect::Ok, field, who);
            assert_eq!(
                r["data"][field].is_null(),
                who != Who::Admin,
                "{field} of namespace B as {who:?}: {r}"
            );
            let missing = ask(&app, who, q, json!({ "id": id(Kind::Instance, MISSING) })).await;
            assert_eq!(missing["data"][field], Value::Null);
        }
        for (q, v, field) in [
            (
                "query($id: ID!) { instance(id: $id) { id } }",
                &a,
                "instance",
            ),
            (
                "query($id: ID!) { deployment(id: $id) { id } }",
                &da,
                "deployment",
            ),
        ] {
            let r = ask(&app, who, q, json!({ "id": v })).await;
            assert_eq!(
                r["data"][field].is_null(),
                !matches!(who, Who::Admin | Who::Deployer),
                "{field} of namespace A as {who:?}: {r}"
            );
        }
    }
    // Filters cannot widen the view.
    let r = ask(
        &app,
        Who::Deployer,
        r#"{ instances(filter: { namespace: "team-b" }) { totalCount } }"#,
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["instances"]["totalCount"], json!(0));
}

#[tokio::test]
async fn every_mutation_follows_the_access_rules_and_refusals_are_audited() {
    let app = app().await;
    let (a, b) = (id(Kind::Instance, INST_A), id(Kind::Instance, INST_B));
    let missing_reg = id(Kind::Registry, MISSING);
    let (srv, clu) = (id(Kind::Server, SRV), id(Kind::Cluster, CLU));
    use Expect::*;
    // (mutation, variables, expectation per role: admin, deployer, viewer).
    type Row = (&'static str, &'static str, Value, [Expect; 3]);
    let admin_only = || [Allowed, Code("FORBIDDEN"), Code("FORBIDDEN")];
    let rows: Vec<Row> = vec![
        (
            "createRegistry",
            r#"mutation { createRegistry(input: { name: "bad name!", url: "https://x.example/r.json" }) { id } }"#,
            json!({}),
            [Code("BAD_USER_INPUT"), Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "updateRegistry",
            r#"mutation($id: ID!) { updateRegistry(id: $id, input: { description: "x" }) { id } }"#,
            json!({ "id": missing_reg }),
            [Code("NOT_FOUND"), Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "deleteRegistry",
            r#"mutation($id: ID!) { deleteRegistry(id: $id) { deletedServers } }"#,
            json!({ "id": missing_reg }),
            [Code("NOT_FOUND"), Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "syncRegistry",
            r#"mutation($id: ID!) { syncRegistry(id: $id) { id } }"#,
            json!({ "id": missing_reg }),
            [Code("NOT_FOUND"), Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "registerCluster",
            r#"mutation { registerCluster(input: { name: "c2", context: "nope" }) { id } }"#,
            json!({}),
            admin_only(),
        ),
        (
            "refreshCluster",
            r#"mutation($id: ID!) { refreshCluster(id: $id) { id } }"#,
            json!({ "id": id(Kind::Cluster, MISSING) }),
            [Code("NOT_FOUND"), Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "updateCluster",
            r#"mutation($id: ID!) { updateCluster(id: $id, input: { name: "renamed" }) { id } }"#,
            json!({ "id": id(Kind::Cluster, MISSING) }),
            [Code("NOT_FOUND"), Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "deleteCluster",
            r#"mutation($id: ID!) { deleteCluster(id: $id) { pastInstances } }"#,
            json!({ "id": id(Kind::Cluster, MISSING) }),
            [Code("NOT_FOUND"), Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "grantNamespace",
            r#"mutation { grantNamespace(subject: "eve", namespace: "team-c") { namespace } }"#,
            json!({}),
            [Ok, Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "revokeNamespace",
            r#"mutation { revokeNamespace(subject: "eve", namespace: "team-c") }"#,
            json!({}),
            [Ok, Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "deployServer in B",
            r#"mutation($s: ID!, $c: ID!) { deployServer(input: { serverId: $s, clusterId: $c, namespace: "team-b" }) { id } }"#,
            json!({ "s": srv, "c": clu }),
            [Allowed, Code("FORBIDDEN"), Code("FORBIDDEN")],
        ),
        (
            "deployServer in A",
            r#"mutation($s: ID!, $c: ID!) { deployServer(input: { serverId: $s, clusterId: $c, namespace: "team-a", name: "fetch-a2" }) { id } }"#,
            json!({ "s": srv, "c": clu }),
            [Allowed, Allowed, Code("FORBIDDEN")],
        ),
        (
            "cancelDeployment of B",
            r#"mutation($id: ID!) { cancelDeployment(id: $id) { id } }"#,
            json!({ "id": id(Kind::Deployment, DEP_B) }),
            [Allowed, Code("NOT_FOUND"), Code("FORBIDDEN")],
        ),
        (
            "cancelDeployment of A",
            r#"mutation($id: ID!) { cancelDeployment(id: $id) { id } }"#,
            json!({ "id": id(Kind::Deployment, DEP_A) }),
            [Allowed, Allowed, Code("FORBIDDEN")],
        ),
        (
            "scaleInstance B",
            r#"mutation($id: ID!) { scaleInstance(id: $id, replicas: 2) { id } }"#,
            json!({ "id": b }),
            [Allowed, Code("NOT_FOUND"), Code("FORBIDDEN")],
        ),
        (
            "scaleInstance A",
            r#"mutation($id: ID!) { scaleInstance(id: $id, replicas: -1) { id } }"#,
            json!({ "id": a }),
            [
                Code("BAD_USER_INPUT"),
                Code("BAD_USER_INPUT"),
                Code("FORBIDDEN"),
            ],
        ),
        (
            "restartInstance B",
            r#"mutation($id: ID!) { restartInstance(id: $id) { id } }"#,
            json!({ "id": b }),
            [Allowed, Code("NOT_FOUND"), Code("FORBIDDEN")],
        ),
        (
            "rollbackInstance B",
            r#"mutation($id: ID!) { rollbackInstance(id: $id) { id } }"#,
            json!({ "id": b }),
            [Allowed, Code("NOT_FOUND"), Code("FORBIDDEN")],
        ),
        (
            "deleteInstance B",
            r#"mutation($id: ID!) { deleteInstance(id: $id) { id } }"#,
            json!({ "id": b }),
            [Allowed, Code("NOT_FOUND"), Code("FORBIDDEN")],
        ),
        (
            "deleteInstance missing",
            r#"mutation($id: ID!) { deleteInstance(id: $id) { id } }"#,
            json!({ "id": id(Kind::Instance, MISSING) }),
            [Code("NOT_FOUND"), Code("NOT_FOUND"), Code("FORBIDDEN")],
        ),
    ];
    // Refusals first (anonymous, viewer, deployer), then the admin, whose calls may change data.
    for who in [Who::Anonymous, Who::Viewer, Who::Deployer, Who::Admin] {
        for (name, q, vars, expect) in &rows {
            let e = match who {
                Who::Anonymous => &Code("UNAUTHENTICATED"),
                Who::Viewer => &expect[2],
                Who::Deployer => &expect[1],
                Who::Admin => &expect[0],
            };
            let r = tokio::time::timeout(Duration::from_secs(30), ask(&app, who, q, vars.clone()))
                .await
                .unwrap_or_else(|_| panic!("{name} as {who:?} answered within 30 s"));
            check(&r, e, name, who);
            // A hidden instance answers exactly like a missing one.
            if who == Who::Deployer && name.ends_with("Instance B") {
                assert_eq!(r["errors"][0]["message"], json!("instance not found"));
            }
        }
    }
    // Every refusal is in the audit trail with who, what, the outcome and the request id.
    let denied = |actor: &str| {
        format!(
            "SELECT count(*) FROM audit_log WHERE actor = '{actor}' AND outcome = 'denied' AND request_id IS NOT NULL"
        )
    };
    let n = |s: Option<String>| s.unwrap().parse::<i64>().unwrap();
    assert_eq!(
        n(app.db.scalar(&denied("anonymous")).await),
        rows.len() as i64
    );
    assert_eq!(n(app.db.scalar(&denied("vera")).await), rows.len() as i64);
    // The deployer: 10 admin-only mutations, deployServer in B, and the 5 operations on B.
    assert_eq!(n(app.db.scalar(&denied("dan")).await), 10 + 1 + 5);
    let hidden = app
        .db
        .scalar("SELECT details->>'code' FROM audit_log WHERE actor = 'dan' AND action = 'scaleInstance' AND outcome = 'denied'")
        .await;
    assert_eq!(hidden.as_deref(), Some("NOT_FOUND"));
    // And the admin reads it through auditLog.
    let log = ask(
        &app,
        Who::Admin,
        r#"{ auditLog(first: 100, filter: { actor: "dan", outcome: DENIED }) { totalCount edges { cursor node { action outcome requestId } } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(log["data"]["auditLog"]["totalCount"], json!(16), "{log}");
    let page = ask(
        &app,
        Who::Admin,
        r#"query($after: String) { auditLog(first: 2, after: $after, filter: { actor: "dan" }) { edges { node { action } } pageInfo { hasNextPage } } }"#,
        json!({ "after": log["data"]["auditLog"]["edges"][0]["cursor"] }),
    )
    .await;
    assert_eq!(
        page["data"]["auditLog"]["edges"].as_array().unwrap().len(),
        2
    );
    let bad = ask(
        &app,
        Who::Admin,
        r#"{ auditLog(after: "???") { totalCount } }"#,
        json!({}),
    )
    .await;
    assert_eq!(error_code(&bad).as_deref(), Some("BAD_USER_INPUT"));
}

#[tokio::test]
async fn grants_take_effect_at_once() {
    let app = app().await;
    let q = "{ instances { totalCount } }";
    let count = |r: Value| r["data"]["instances"]["totalCount"].as_i64().unwrap();
    assert_eq!(count(ask(&app, Who::Viewer, q, json!({})).await), 0);
    let g = ask(
        &app,
        Who::Admin,
        r#"mutation { grantNamespace(subject: "vera", namespace: "team-b") { subject namespace grantedBy } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        g["data"]["grantNamespace"],
        json!({ "subject": "vera", "namespace": "team-b", "grantedBy": "ada" })
    );
    assert_eq!(count(ask(&app, Who::Viewer, q, json!({})).await), 1);
    let bad = ask(
        &app,
        Who::Admin,
        r#"mutation { grantNamespace(subject: "vera", namespace: "Not_A_Namespace") { subject } }"#,
        json!({}),
    )
    .await;
    assert_eq!(error_code(&bad).as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(bad["errors"][0]["extensions"]["field"], json!("namespace"));
    let list = ask(
        &app,
        Who::Admin,
        r#"{ namespaceGrants(subject: "vera") { namespace } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        list["data"]["namespaceGrants"],
        json!([{ "namespace": "team-b" }])
    );
    let r = ask(
        &app,
        Who::Admin,
        r#"mutation { revokeNamespace(subject: "vera", namespace: "team-b") }"#,
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["revokeNamespace"], json!(true));
    assert_eq!(count(ask(&app, Who::Viewer, q, json!({})).await), 0);
}

async fn first_event(app: &TestApp, who: Who, query: &str, vars: Value) -> Value {
    let principal = match token(who) {
        None => hivegraph::auth::Principal::anonymous(),
        Some(t) => app
            .state
            .services
            .auth
            .authenticate(Some(&t))
            .await
            .unwrap(),
    };
    let rc = hivegraph::graphql::context::RequestCtx::authorized(
        app.state.services.pool.clone(),
        "sub-test".into(),
        principal,
    )
    .await
    .unwrap();
    let req = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(vars))
        .data(Arc::new(rc));
    let mut stream = app.state.schema.execute_stream(req);
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an answer within 10 s")
        .expect("one message");
    serde_json::to_value(&resp).unwrap()
}

#[tokio::test]
async fn subscriptions_are_checked_at_subscribe_time() {
    let app = app().await;
    let subs = [
        (
            "subscription($id: ID!) { instanceStatus(instanceId: $id) { name } }",
            Kind::Instance,
            INST_A,
            INST_B,
        ),
        (
            "subscription($id: ID!) { instanceEvents(instanceId: $id) { reason } }",
            Kind::Instance,
            INST_A,
            INST_B,
        ),
        (
            "subscription($id: ID!) { instanceMetrics(instanceId: $id) { cpuUsage } }",
            Kind::Instance,
            INST_A,
            INST_B,
        ),
        (
            "subscription($id: ID!) { deploymentProgress(deploymentId: $id) { status } }",
            Kind::Deployment,
            DEP_A,
            DEP_B,
        ),
    ];
    for (q, kind, in_a, in_b) in subs {
        let anon = first_event(&app, Who::Anonymous, q, json!({ "id": id(kind, in_a) })).await;
        assert_eq!(error_code(&anon).as_deref(), Some("UNAUTHENTICATED"), "{q}");
        let hidden = first_event(&app, Who::Deployer, q, json!({ "id": id(kind, in_b) })).await;
        assert_eq!(
            error_code(&hidden).as_deref(),
            Some("NOT_FOUND"),
            "{q}: {hidden}"
        );
        let viewer = first_event(&app, Who::Viewer, q, json!({ "id": id(kind, in_a) })).await;
        assert_eq!(error_code(&viewer).as_deref(), Some("NOT_FOUND"), "{q}");
        if !q.contains("instanceEvents") {
            // Events stream nothing until there are events; the others start with the state.
            let ok = first_event(&app, Who::Deployer, q, json!({ "id": id(kind, in_a) })).await;
            assert!(ok.get("errors").is_none(), "{q}: {ok}");
            let admin = first_event(&app, Who::Admin, q, json!({ "id": id(kind, in_b) })).await;
            assert!(admin.get("errors").is_none(), "{q}: {admin}");
        }
    }
    let sync = "subscription($id: ID!) { registrySync(registryId: $id) { name } }";
    let reg = json!({ "id": id(Kind::Registry, REG) });
    let r = first_event(&app, Who::Viewer, sync, reg.clone()).await;
    assert_eq!(r["data"]["registrySync"]["name"], json!("r1"));
    let r = first_event(&app, Who::Anonymous, sync, reg).await;
    assert_eq!(error_code(&r).as_deref(), Some("UNAUTHENTICATED"));
}
