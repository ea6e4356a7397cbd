//! Live subscriptions: the first message is the current state, changes follow through the
//! LISTEN/NOTIFY hub, and a lost listening connection is recovered with the current state.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Request;
use common::*;
use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use hivegraph::auth::Principal;
use hivegraph::graphql::context::RequestCtx;
use serde_json::{Value, json};

async fn create_registry(app: &TestApp, name: &str) -> String {
    let resp = app
        .graphql(
            "mutation($i: CreateRegistryInput!) { createRegistry(input: $i) { id } }",
            json!({ "i": { "name": name, "url": "http://127.0.0.1:9/registry.json" } }),
        )
        .await;
    assert_ok(&resp);
    resp["data"]["createRegistry"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn subscribe(
    app: &TestApp,
    query: &str,
    vars: Value,
) -> impl futures_util::Stream<Item = async_graphql::Response> + use<> {
    let rc = RequestCtx::new(
        app.state.services.pool.clone(),
        "test".into(),
        Principal::local(),
    );
    let req = Request::new(query)
        .variables(async_graphql::Variables::from_json(vars))
        .data(Arc::new(rc));
    app.state.schema.execute_stream(req)
}

async fn next_json(
    stream: &mut (impl futures_util::Stream<Item = async_graphql::Response> + Unpin),
) -> Value {
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open");
    let v = serde_json::to_value(&resp).unwrap();
    assert!(v.get("errors").is_none(), "{v}");
    v
}

const SYNC: &str =
    "subscription($id: ID!) { registrySync(registryId: $id) { name description status } }";

#[tokio::test]
async fn a_subscription_starts_with_the_current_state_then_pushes_changes() {
    let app = TestApp::spawn().await;
    let id = create_registry(&app, "live").await;
    let mut stream = Box::pin(subscribe(&app, SYNC, json!({ "id": id })));
    let first = next_json(&mut stream).await;
    assert_eq!(first["data"]["registrySync"]["name"], "live");
    assert_eq!(first["data"]["registrySync"]["status"], "INACTIVE");

    for i in 0..3 {
        let resp = app
            .graphql(
                "mutation($id: ID!, $d: String) { updateRegistry(id: $id, input: { description: $d }) { id } }",
                json!({ "id": id, "d": format!("change {i}") }),
            )
            .await;
        assert_ok(&resp);
        let pushed = next_json(&mut stream).await;
        assert_eq!(
            pushed["data"]["registrySync"]["description"],
            format!("change {i}")
        );
    }
}

#[tokio::test]
async fn a_change_made_outside_the_gateway_reaches_subscribers() {
    let app = TestApp::spawn().await;
    let id = create_registry(&app, "outside").await;
    let mut stream = Box::pin(subscribe(&app, SYNC, json!({ "id": id })));
    next_json(&mut stream).await;
    app.db
        .conn()
        .await
        .batch_execute("UPDATE registries SET status = 'syncing', updated_at = now()")
        .await
        .unwrap();
    let pushed = next_json(&mut stream).await;
    assert_eq!(pushed["data"]["registrySync"]["status"], "SYNCING");
}

#[tokio::test]
async fn many_subscribers_of_one_row_cost_one_load_per_change() {
    let app = TestApp::spawn().await;
    let id = create_registry(&app, "shared").await;
    let mut streams: Vec<_> = (0..50)
        .map(|_| Box::pin(subscribe(&app, SYNC, json!({ "id": id }))))
        .collect();
    for s in &mut streams {
        next_json(s).await;
    }
    let hub = app.state.services.pubsub.clone();
    assert_eq!(hub.subscriber_count(), 50);
    let (_, loads_before) = hub.counters();
    app.db
        .conn()
        .await
        .batch_execute("UPDATE registries SET description = 'fan-out', updated_at = now()")
        .await
        .unwrap();
    for s in &mut streams {
        let v = next_json(s).await;
        assert_eq!(v["data"]["registrySync"]["description"], "fan-out");
    }
    let (_, loads_after) = hub.counters();
    assert_eq!(
        loads_after - loads_before,
        1,
        "one load shared by 50 subscribers"
    );
    drop(streams);
    eventually(
        Duration::from_secs(5),
        "dropped subscribers to be released",
        || async { hub.subscriber_count() == 0 },
    )
    .await;
}

#[tokio::test]
async fn subscribers_get_the_current_state_after_the_listener_reconnects() {
    let app = TestApp::spawn().await;
    let id = create_registry(&app, "resilient").await;
    let mut stream = Box::pin(subscribe(&app, SYNC, json!({ "id": id })));
    next_json(&mut stream).await;
    let hub = app.state.services.pubsub.clone();
    for _ in 0..100 {
        if hub.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hub.is_connected());

    // Cut the listener off and keep it off while the row changes: that notification is lost.
    let mut admin = app.db.admin_conn().await;
    let mut inside = app.db.conn().await;
    let db = &app.db.name;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND application_name = 'hivegraph-listener'"
        ))
        .await
        .unwrap();
    for _ in 0..100 {
        if !hub.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!hub.is_connected(), "the listener noticed the cut");
    inside
        .batch_execute(
            "UPDATE registries SET description = 'changed while deaf', updated_at = now()",
        )
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS true"
        ))
        .await
        .unwrap();

    // On reconnect the hub re-sends the current state.
    let pushed = next_json(&mut stream).await;
    assert_eq!(
        pushed["data"]["registrySync"]["description"],
        "changed while deaf"
    );
    assert!(hub.connections() >= 2);
}

#[tokio::test]
async fn subscribing_to_something_missing_is_an_error() {
    let app = TestApp::spawn().await;
    let mut stream = Box::pin(subscribe(
        &app,
        SYNC,
        json!({ "id": uuid::Uuid::new_v4().to_string() }),
    ));
    let resp = stream.next().await.unwrap();
    let v = serde_json::to_value(&resp).unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND", "{v}");
    let mut bad = Box::pin(subscribe(&app, SYNC, json!({ "id": "garbage" })));
    let v = serde_json::to_value(bad.next().await.unwrap()).unwrap();
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{v}"
    );
}
