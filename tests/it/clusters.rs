//! Clusters registered through the API with their own credentials (issue 19), against the
//! in-process Kubernetes API emulator with TLS and token authentication, and gateways started
//! without any kubeconfig: registration checks, sealing at rest, key rotation, a second gateway
//! process using the stored credentials, `updateCluster`, and `deleteCluster`.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use kube_emulator::{AccessPolicy, Emulator};
use secrecy::SecretString;
use serde_json::{Value, json};

const CLUSTER_FIELDS: &str = "id name endpoint context inCluster status version accessLevel
    hasStoredCredentials lastError removedAt";

fn key(n: u8) -> SecretString {
    SecretString::from(B64.encode([n; 32]))
}

async fn emulator(policy: AccessPolicy) -> Emulator {
    crate::common::install_crypto();
    Emulator::builder()
        .speed(20.0)
        .namespaces(["team"])
        .policy(policy)
        .start()
        .await
        .expect("emulator starts")
}

fn config(db: &TestDb) -> hivegraph::config::Config {
    let mut cfg = hivegraph::config::Config::for_tests(&db.url);
    // No kubeconfig at all: every cluster must come with its own credentials.
    cfg.serve.k8s.kubeconfig = Some("/nonexistent/hivegraph-kubeconfig".into());
    cfg.serve.k8s.progress_deadline_seconds = 120;
    cfg.database.pool_size = 4;
    cfg.database.wait_ms = 10_000;
    cfg
}

/// A gateway process on `db` with the given keyring.
fn gateway(db: TestDb, keys: hivegraph::secrets::Keyring) -> TestApp {
    let state = hivegraph::server::build_state(config(&db), keys).expect("state");
    let router = hivegraph::router(state.clone());
    TestApp { db, state, router }
}

/// Another handle on the same database (for a second gateway process).
fn same_db(db: &TestDb) -> TestDb {
    db.clone()
}

fn credentials(emu: &Emulator) -> Value {
    json!({
        "server": emu.url(),
        "certificateAuthorityData": B64.encode(emu.ca_pem().expect("TLS")),
        "bearerToken": emu.token().expect("token auth"),
    })
}

async fn register(app: &TestApp, name: &str, creds: Value) -> Value {
    app.graphql(
        &format!(
            "mutation($i: RegisterClusterInput!) {{ registerCluster(input: $i) {{ {CLUSTER_FIELDS} }} }}"
        ),
        json!({"i": {"name": name, "credentials": creds}}),
    )
    .await
}

async fn seed_server(app: &TestApp) -> String {
    use diesel_async::SimpleAsyncConnection;
    app.db
        .conn()
        .await
        .batch_execute(
            r#"INSERT INTO registries (name, url) VALUES ('reg', 'https://example.com/r');
               INSERT INTO servers (registry_id, name, original_name, image, transport, deployment_requirements)
               SELECT id, 'fetch', 'io.example/fetch', 'ghcr.io/example/fetch:1', 'http',
                 '{"targetPort": 9090}'::jsonb FROM registries WHERE name = 'reg';"#,
        )
        .await
        .unwrap();
    app.db
        .scalar("SELECT id FROM servers WHERE name = 'fetch'")
        .await
        .unwrap()
}

async fn wait_op(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = app
            .graphql(
                "query($id: ID!) { deployment(id: $id) { status errors { message } instance { id status phase } } }",
                json!({"id": id}),
            )
            .await;
        assert_ok(&r);
        let d = r["data"]["deployment"].clone();
        if matches!(
            d["status"].as_str(),
            Some("COMPLETED" | "FAILED" | "CANCELLED")
        ) {
            return d;
        }
        assert!(Instant::now() < deadline, "operation {id} never ended: {d}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn wait_instance(app: &TestApp, id: &str, status: &str, phase: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app
            .graphql(
                "query($id: ID!) { instance(id: $id) { status phase } }",
                json!({"id": id}),
            )
            .await;
        let i = &r["data"]["instance"];
        if i["status"] == json!(status) && i["phase"] == json!(phase) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instance {id} never {status}/{phase}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_registered_by_url_ca_and_token_deploys_rotates_and_is_removed() {
    let emu = emulator(AccessPolicy::Admin).await;
    let old = hivegraph::secrets::Keyring::new(&key(1), &[]).unwrap();
    let app = gateway(TestDb::new().await, old);

    // Registered by server URL, CA and bearer token, with no kubeconfig anywhere.
    let r = register(&app, "remote", credentials(&emu)).await;
    assert_ok(&r);
    let c = &r["data"]["registerCluster"];
    assert_eq!(c["status"], json!("CONNECTED"), "{c}");
    assert_eq!(c["accessLevel"], json!("ADMIN"));
    assert_eq!(c["hasStoredCredentials"], json!(true));
    assert_eq!(c["context"], Value::Null);
    assert_eq!(c["endpoint"], json!(emu.url().trim_end_matches('/')));
    let cluster = c["id"].as_str().unwrap().to_string();
    let token = emu.token().unwrap().to_string();
    let stored = app
        .db
        .scalar("SELECT credentials::text FROM clusters")
        .await
        .unwrap();
    assert!(stored.contains("\"kid\""), "sealed: {stored}");
    assert!(!stored.contains(&token), "the token is stored in clear");

    // A deploy on it reaches READY (driver and watchers use the stored credentials).
    let server = seed_server(&app).await;
    let r = app
        .graphql(
            "mutation($i: DeployServerInput!) { deployServer(input: $i) { id instance { id } } }",
            json!({"i": {"serverId": server, "clusterId": cluster, "namespace": "team", "name": "web"}}),
        )
        .await;
    assert_ok(&r);
    let op = r["data"]["deployServer"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inst = r["data"]["deployServer"]["instance"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = wait_op(&app, &op).await;
    assert_eq!(d["status"], json!("COMPLETED"), "{d}");
    wait_instance(&app, &inst, "RUNNING", "READY").await;

    // Key rotation as documented: the gateways restart with the new key and the old one as
    // previous, `keys rotate` re-seals everything, then a gateway holding only the new key still
    // reaches the cluster and drives operations on it.
    app.state.services.k8s.shutdown().await;
    let app = gateway(
        same_db(&app.db),
        hivegraph::secrets::Keyring::new(&key(2), &[key(1)]).unwrap(),
    );
    let rotating = hivegraph::secrets::Keyring::new(&key(2), &[key(1)]).unwrap();
    let report = hivegraph::keys::rotate(&app.db.url, &rotating)
        .await
        .unwrap();
    assert_eq!(report.rotated, 1, "{report:?}");
    let second = gateway(
        same_db(&app.db),
        hivegraph::secrets::Keyring::new(&key(2), &[]).unwrap(),
    );
    let r = second
        .graphql(
            &format!("mutation($id: ID!) {{ refreshCluster(id: $id) {{ {CLUSTER_FIELDS} }} }}"),
            json!({"id": cluster}),
        )
        .await;
    assert_ok(&r);
    assert_eq!(
        r["data"]["refreshCluster"]["status"],
        json!("CONNECTED"),
        "{r}"
    );
    let r = second
        .graphql(
            "mutation($id: ID!) { scaleInstance(id: $id, replicas: 2) { id } }",
            json!({"id": inst}),
        )
        .await;
    assert_ok(&r);
    let scale = r["data"]["scaleInstance"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_op(&second, &scale).await["status"], json!("COMPLETED"));
    let cluster_uuid =
        hivegraph::ids::decode(hivegraph::ids::Kind::Cluster, &cluster, "id").unwrap();
    let k8s2 = second.state.services.k8s.clone();
    wait_until("the second gateway watches the cluster", 20, || {
        !k8s2.watches_of(cluster_uuid).is_empty()
    })
    .await;

    // New credentials (the same identity, through a kubeconfig) given to one process: the
    // other one restarts its watchers with them at once.
    let before = k8s2.watches_of(cluster_uuid);
    let r = app
        .graphql(
            "mutation($id: ID!, $i: UpdateClusterInput!) { updateCluster(id: $id, input: $i) { status } }",
            json!({"id": cluster, "i": {"credentials": {"kubeconfig": emu.kubeconfig_yaml()}}}),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r["data"]["updateCluster"]["status"], json!("CONNECTED"));
    wait_until("the other process follows the new credentials", 5, || {
        let now = k8s2.watches_of(cluster_uuid);
        !now.is_empty() && now.iter().all(|w| !before.contains(w))
    })
    .await;

    // deleteCluster is refused while the instance runs, naming it; nothing changes.
    let delete = "mutation($id: ID!) { deleteCluster(id: $id) { deletedClusterId pastInstances } }";
    let r = app.graphql(delete, json!({"id": cluster})).await;
    assert_eq!(error_code(&r).as_deref(), Some("CONFLICT"), "{r}");
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("team/web"), "{msg}");
    assert_eq!(
        app.db
            .scalar(
                "SELECT count(*) FROM clusters WHERE removed_at IS NULL AND credentials IS NOT NULL"
            )
            .await
            .unwrap(),
        "1"
    );

    // After the instance is deleted, the cluster goes; its history stays readable.
    let r = app
        .graphql(
            "mutation($id: ID!) { deleteInstance(id: $id) { id } }",
            json!({"id": inst}),
        )
        .await;
    assert_ok(&r);
    let del = r["data"]["deleteInstance"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_op(&app, &del).await["status"], json!("COMPLETED"));
    wait_instance(&app, &inst, "TERMINATED", "READY").await;
    let r = app.graphql(delete, json!({"id": cluster})).await;
    assert_ok(&r);
    assert_eq!(
        r["data"]["deleteCluster"]["deletedClusterId"],
        json!(cluster)
    );
    assert_eq!(r["data"]["deleteCluster"]["pastInstances"], json!(1));
    let r = app
        .graphql(
            "query($id: ID!) { clusters { totalCount nodes { id } }
               instance(id: $id) { status cluster { name removedAt hasStoredCredentials }
                 operations { totalCount } } }",
            json!({"id": inst}),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r["data"]["clusters"]["totalCount"], json!(0), "{r}");
    let past = &r["data"]["instance"];
    assert_eq!(past["cluster"]["name"], json!("remote"));
    assert!(past["cluster"]["removedAt"].is_string(), "{past}");
    assert_eq!(past["cluster"]["hasStoredCredentials"], json!(false));
    assert_eq!(past["operations"]["totalCount"], json!(3), "{past}");
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM clusters WHERE credentials IS NOT NULL")
            .await
            .unwrap(),
        "0",
        "the credentials are gone"
    );
    // Every process stops watching it (the other one through the change notification).
    let k8s1 = app.state.services.k8s.clone();
    wait_until(
        "watchers of the removed cluster stop everywhere",
        15,
        || k8s1.watches_of(cluster_uuid).is_empty() && k8s2.watches_of(cluster_uuid).is_empty(),
    )
    .await;
    // Operations on it are gone with it; its name can be used again.
    let r = second
        .graphql(
            "mutation($id: ID!) { refreshCluster(id: $id) { id } }",
            json!({"id": cluster}),
        )
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("NOT_FOUND"), "{r}");
    let r = app.graphql(delete, json!({"id": cluster})).await;
    assert_eq!(error_code(&r).as_deref(), Some("NOT_FOUND"), "{r}");
    let r = app
        .graphql(
            "mutation($i: DeployServerInput!) { deployServer(input: $i) { id } }",
            json!({"i": {"serverId": server, "clusterId": cluster, "namespace": "team", "name": "web2"}}),
        )
        .await;
    assert_eq!(error_field(&r).as_deref(), Some("clusterId"), "{r}");
    assert_eq!(
        app.db.count("instances").await,
        1,
        "no instance on a removed cluster"
    );
    let third = gateway(
        same_db(&app.db),
        hivegraph::secrets::Keyring::new(&key(2), &[]).unwrap(),
    );
    let r = register(&third, "remote", credentials(&emu)).await;
    assert_ok(&r);
    // Audited, without the token.
    let audit = app
        .db
        .scalar(
            "SELECT string_agg(action || ':' || outcome, ',' ORDER BY id) FROM audit_log \
             WHERE target_type = 'cluster'",
        )
        .await
        .unwrap();
    for want in [
        "registerCluster:success",
        "deleteCluster:denied",
        "deleteCluster:success",
    ] {
        assert!(audit.contains(want), "{want} in {audit}");
    }
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT count(*) FROM audit_log a WHERE a::text LIKE '%{token}%'"
            ))
            .await
            .unwrap(),
        "0"
    );
    second.state.services.k8s.shutdown().await;
    third.state.services.k8s.shutdown().await;
    app.state.services.k8s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_and_nothing_is_stored() {
    let emu = emulator(AccessPolicy::Admin).await;
    let app = gateway(
        TestDb::new().await,
        hivegraph::secrets::Keyring::ephemeral(),
    );
    let good = credentials(&emu);
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let exec_kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}'}}\n\
         users:\n- name: u\n  user:\n    exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: ['-c', 'touch /tmp/pwned']}}\n\
         contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        emu.url()
    );
    let http_url = emu.url().replace("https://", "http://");
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "wrong token",
            with(json!({"bearerToken": "not-the-token"})),
            "credentials.bearerToken",
            "UNAUTHORIZED",
        ),
        (
            "no CA: the emulator's certificate is not trusted",
            with(json!({"certificateAuthorityData": null})),
            "credentials.certificateAuthorityData",
            "TLS",
        ),
        (
            "nothing listens",
            with(json!({"server": "https://127.0.0.1:9"})),
            "credentials.server",
            "UNREACHABLE",
        ),
        (
            "plain http without insecureSkipTlsVerify",
            with(json!({"server": http_url})),
            "credentials.server",
            "http://",
        ),
        (
            "a file path as CA",
            with(json!({"certificateAuthorityData": "/etc/ssl/certs/ca.pem"})),
            "credentials.certificateAuthorityData",
            "file path",
        ),
        (
            "an exec plugin",
            json!({"kubeconfig": exec_kubeconfig}),
            "credentials.kubeconfig",
            "exec",
        ),
        (
            "a kubeconfig and a server",
            with(json!({"kubeconfig": emu.kubeconfig_yaml()})),
            "credentials.kubeconfig",
            "not both",
        ),
    ];
    for (what, creds, field, says) in cases {
        let r = register(&app, "remote", creds).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("BAD_USER_INPUT"),
            "{what}: {r}"
        );
        assert_eq!(error_field(&r).as_deref(), Some(field), "{what}: {r}");
        let msg = r["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{what}: {msg}");
        assert!(!msg.contains(emu.token().unwrap()), "{what}: {msg}");
        assert_eq!(app.db.count("clusters").await, 0, "{what}: nothing stored");
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());

    // A kubeconfig with everything inline is accepted; a read-only identity is reported so.
    let r = register(
        &app,
        "by-kubeconfig",
        json!({"kubeconfig": emu.kubeconfig_yaml()}),
    )
    .await;
    assert_ok(&r);
    assert_eq!(r["data"]["registerCluster"]["status"], json!("CONNECTED"));
    let id = r["data"]["registerCluster"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // updateCluster re-checks: a wrong token changes nothing; a rename and good credentials do.
    let update = format!(
        "mutation($id: ID!, $i: UpdateClusterInput!) {{ updateCluster(id: $id, input: $i) {{ {CLUSTER_FIELDS} }} }}"
    );
    let before = app
        .db
        .scalar("SELECT credentials::text FROM clusters")
        .await
        .unwrap();
    let r = app
        .graphql(
            &update,
            json!({"id": id, "i": {"name": "renamed", "credentials": with(json!({"bearerToken": "wrong"}))}}),
        )
        .await;
    assert_eq!(
        error_field(&r).as_deref(),
        Some("credentials.bearerToken"),
        "{r}"
    );
    assert_eq!(
        app.db
            .scalar("SELECT name || ' ' || credentials::text FROM clusters")
            .await
            .unwrap(),
        format!("by-kubeconfig {before}")
    );
    let r = app
        .graphql(
            &update,
            json!({"id": id, "i": {"name": "renamed", "credentials": good}}),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r["data"]["updateCluster"]["name"], json!("renamed"));
    assert_eq!(r["data"]["updateCluster"]["status"], json!("CONNECTED"));
    let after = app
        .db
        .scalar("SELECT credentials::text FROM clusters")
        .await
        .unwrap();
    assert_ne!(before, after, "new credentials sealed");
    let audit = app
        .db
        .scalar(
            "SELECT count(*) FROM audit_log WHERE action = 'updateCluster' AND outcome = 'success'",
        )
        .await
        .unwrap();
    assert_eq!(audit, "1");
    app.state.services.k8s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_identity_is_registered_as_read_only() {
    let emu = emulator(AccessPolicy::ReadOnly).await;
    let app = gateway(
        TestDb::new().await,
        hivegraph::secrets::Keyring::ephemeral(),
    );
    let r = register(&app, "viewer", credentials(&emu)).await;
    assert_ok(&r);
    assert_eq!(
        r["data"]["registerCluster"]["accessLevel"],
        json!("READ_ONLY")
    );
    assert_eq!(r["data"]["registerCluster"]["status"], json!("CONNECTED"));
    app.state.services.k8s.shutdown().await;
}
