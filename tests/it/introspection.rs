//! Introspection: the standard query of graphql-js 16 (every option) is answered wherever
//! introspection is on, within bounds of its own; data fields keep their limits.

use crate::common;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

/// graphql-js 16 `getIntrospectionQuery({ descriptions, specifiedByUrl, directiveIsRepeatable,
/// schemaDescription, inputValueDeprecation, oneOf })`, as GraphiQL and codegen tools send it.
const STANDARD: &str = include_str!("../fixtures/introspection-query.graphql");

fn of_types(n: usize) -> String {
    format!(
        "{{ __type(name: \"Registry\") {{ {}name{} }} }}",
        "ofType { ".repeat(n),
        " }".repeat(n)
    )
}

#[tokio::test]
async fn the_standard_introspection_query_is_answered_and_charged_once() {
    let app = TestApp::spawn_with(|c| c.serve.limits.rate_limit_per_hour = 1000).await;
    let resp = app.graphql(STANDARD, json!({})).await;
    assert_ok(&resp);
    let schema = &resp["data"]["__schema"];
    assert_eq!(schema["queryType"]["name"], "QueryRoot");
    assert_eq!(schema["mutationType"]["name"], "MutationRoot");
    assert_eq!(schema["subscriptionType"]["name"], "SubscriptionRoot");
    assert!(schema["types"].as_array().unwrap().len() > 50);
    assert_eq!(
        resp["extensions"]["rateLimit"]["cost"], 1,
        "a pure-introspection operation costs one point: {}",
        resp["extensions"]
    );
    // The schema file is published alongside.
    let sdl = app.get("/schema.graphql").await;
    assert_eq!(sdl.status, StatusCode::OK);
    assert!(sdl.text.contains("type QueryRoot"));
}

#[tokio::test]
async fn introspection_has_bounds_of_its_own() {
    let app = TestApp::spawn().await;
    let refused = |resp: &Value, what: &str| {
        assert_eq!(
            error_code(resp).as_deref(),
            Some("QUERY_TOO_COMPLEX"),
            "{what}: {resp}"
        );
        assert!(resp["data"].is_null(), "{what}: {resp}");
    };
    // ofType as deep as the standard query nests it (9), not deeper.
    assert_ok(&app.graphql(&of_types(9), json!({})).await);
    refused(&app.graphql(&of_types(10), json!({})).await, "ofType x10");
    // Through fragments too.
    let frag = format!(
        "query {{ __type(name: \"Registry\") {{ ...R }} }} fragment R on __Type {{ {}name{} }}",
        "ofType { ".repeat(10),
        " }".repeat(10)
    );
    refused(
        &app.graphql(&frag, json!({})).await,
        "ofType x10 in a fragment",
    );
    // __schema once per operation.
    refused(
        &app.graphql(
            "{ __schema { description } s: __schema { description } }",
            json!({}),
        )
        .await,
        "two __schema",
    );
    // Few aliases of introspection fields.
    let aliases: String = (0..6)
        .map(|i| format!("t{i}: __type(name: \"Registry\") {{ name }} "))
        .collect();
    refused(
        &app.graphql(&format!("{{ {aliases} }}"), json!({})).await,
        "6 aliased __type",
    );
    // Data fields keep their own depth limit, fragments or not.
    let deep = "{ registries { edges { node { servers { edges { node { registry { servers { edges { node { registry { servers { edges { node { name } } } } } } } } } } } } } } }";
    refused(&app.graphql(deep, json!({})).await, "deep data");
}

#[tokio::test]
async fn introspection_can_be_configured_on_in_production() {
    let app = TestApp::spawn_with(|c| {
        c.serve.mode = hivegraph::config::Mode::Production;
        c.serve.limits.introspection = Some(true);
    })
    .await;
    assert_ok(&app.graphql(STANDARD, json!({})).await);
    assert_eq!(app.get("/schema.graphql").await.status, StatusCode::OK);

    let off = TestApp::spawn_with(|c| c.serve.limits.introspection = Some(false)).await;
    let resp = off.graphql(STANDARD, json!({})).await;
    assert_eq!(
        error_code(&resp).as_deref(),
        Some("INTROSPECTION_DISABLED"),
        "{resp}"
    );
}
