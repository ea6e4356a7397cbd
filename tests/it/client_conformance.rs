//! What GraphQL clients expect (issue #21), in-process: spec-exact field errors, typed errors for
//! every bad request (never charged), content negotiation, APQ, cursors bound to their list.
//! The same behaviours are driven by the real npm clients in `tests/js/client_conformance.test.mjs`.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestApp, assert_ok, error_code, error_field};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn post(body: Value, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post("/graphql").header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn failed_root_fields_are_null_next_to_their_errors() {
    let app = TestApp::spawn().await;
    let r = app
        .graphql(
            r#"{ a: registries(first: 1) { totalCount } b: server(id: "x") { name } c: node(id: "garbage") { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        r["data"],
        json!({ "a": { "totalCount": 0 }, "b": null, "c": null }),
        "{r}"
    );
    assert_eq!(r["errors"].as_array().unwrap().len(), 2, "{r}");
    // A non-null root field that fails nulls `data` (GraphQL spec, "Handling Field Errors").
    let r = app
        .graphql(
            "{ a: registries { totalCount } servers(first: 0) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"], Value::Null, "{r}");
    assert_eq!(error_field(&r).as_deref(), Some("first"));
    // A page too large is the same input error whatever its size.
    for first in [101, 1_000_000] {
        let r = app
            .graphql(
                "query($n: Int) { servers(first: $n) { totalCount } }",
                json!({ "n": first }),
            )
            .await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("BAD_USER_INPUT"),
            "{first}: {r}"
        );
        assert_eq!(error_field(&r).as_deref(), Some("first"));
    }
}

#[tokio::test]
async fn bad_requests_get_typed_errors_and_are_not_charged() {
    let app = TestApp::spawn_with(|c| {
        c.serve.limits.rate_limit_per_hour = 1000;
        c.serve.limits.rate_limit_per_minute = 1000;
    })
    .await;
    let remaining = |r: &Value| r["extensions"]["rateLimit"]["remaining"].as_i64().unwrap();
    let before = remaining(&app.graphql("{ viewer { subject } }", json!({})).await);
    let r = app
        .graphql(
            "mutation($i: DeployServerInput!) { deployServer(input: $i) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("BAD_USER_INPUT"), "{r}");
    assert_eq!(error_field(&r).as_deref(), Some("i"));
    assert!(r.get("data").is_none(), "a request error has no data: {r}");
    let after = remaining(&app.graphql("{ viewer { subject } }", json!({})).await);
    // The refused deployServer paid only the 1-point charge every request pays on arrival
    // (before any expensive walk), not the 50 of a deploy; the second viewer query paid 1.
    assert_eq!(
        after,
        before - 2,
        "the refused deployServer was not charged as a deploy"
    );

    // Control characters, in variables and in literals, wherever the string goes.
    for (query, vars, field) in [
        (
            "query($s: String) { namespaceGrants(subject: $s) { namespace } }",
            json!({ "s": "a\u{0}b" }),
            "s",
        ),
        (
            "query($f: AuditLogFilter) { auditLog(filter: $f) { totalCount } }",
            json!({ "f": { "actor": "x\u{1}" } }),
            "f.actor",
        ),
        (
            r#"{ servers(filter: { category: ["a\u0000"] }) { totalCount } }"#,
            json!({}),
            "filter.category",
        ),
    ] {
        let r = app.graphql(query, vars).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("BAD_USER_INPUT"),
            "{query}: {r}"
        );
        assert_eq!(error_field(&r).as_deref(), Some(field), "{r}");
    }

    // Operation selection.
    let r = app
        .graphql(
            "query A { viewer { subject } } query B { viewer { subject } }",
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("GRAPHQL_VALIDATION_FAILED"),
        "{r}"
    );
    let reply = app
        .send(post(
            json!({ "query": "query A { viewer { subject } }", "operationName": "Z" }),
            &[],
        ))
        .await;
    assert_eq!(
        error_code(&reply.json()).as_deref(),
        Some("GRAPHQL_VALIDATION_FAILED")
    );

    // No document.
    for body in [json!({}), json!({ "query": "" })] {
        let reply = app.send(post(body, &[])).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&reply.json()).as_deref(), Some("BAD_REQUEST"));
    }
}

#[tokio::test]
async fn http_refusals_are_graphql_shaped() {
    let app = TestApp::spawn().await;
    let reply = app
        .get("/graphql?query=mutation%20%7B%20syncRegistry(id%3A%20%22x%22)%20%7B%20id%20%7D%20%7D")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "POST");
    assert_eq!(error_code(&reply.json()).as_deref(), Some("BAD_REQUEST"));
    let big = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("content-length", (64 * 1024 * 1024).to_string())
        .body(Body::from("{}"))
        .unwrap();
    let reply = app.send(big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&reply.json()).as_deref(), Some("BAD_REQUEST"));
}

#[tokio::test]
async fn answers_follow_the_accept_header() {
    let app = TestApp::spawn().await;
    let ok = json!({ "query": "{ viewer { subject } }" });
    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let reply = app.send(post(ok.clone(), &headers)).await;
        assert_eq!(
            reply.headers["content-type"], "application/json",
            "{accept:?}"
        );
    }
    let strict = [("accept", "application/graphql-response+json")];
    let reply = app.send(post(ok, &strict)).await;
    assert_eq!(
        reply.headers["content-type"],
        "application/graphql-response+json"
    );
    for (query, code) in [
        ("{ viewer {", "GRAPHQL_PARSE_FAILED"),
        ("{ nope }", "GRAPHQL_VALIDATION_FAILED"),
    ] {
        let reply = app.send(post(json!({ "query": query }), &strict)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let body = reply.json();
        assert!(body.get("data").is_none(), "{body}");
        assert_eq!(error_code(&body).as_deref(), Some(code));
        let reply = app.send(post(json!({ "query": query }), &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
    }
}

#[tokio::test]
async fn automatic_persisted_queries_over_post_and_get() {
    let app = TestApp::spawn().await;
    let doc = "query Apq { viewer { subject } }";
    let hash = hex::encode(Sha256::digest(doc.as_bytes()));
    let ext = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let r = app
        .send(post(json!({ "extensions": ext }), &[]))
        .await
        .json();
    assert_eq!(
        error_code(&r).as_deref(),
        Some("PERSISTED_QUERY_NOT_FOUND"),
        "{r}"
    );
    assert_eq!(r["errors"][0]["message"], "PersistedQueryNotFound");
    let wrong = app
        .send(post(
            json!({ "query": "{ viewer { roles } }", "extensions": ext }),
            &[],
        ))
        .await
        .json();
    assert_eq!(
        error_code(&wrong).as_deref(),
        Some("BAD_USER_INPUT"),
        "{wrong}"
    );
    let r = app
        .send(post(json!({ "query": doc, "extensions": ext }), &[]))
        .await
        .json();
    assert_eq!(r["data"]["viewer"]["subject"], "local", "{r}");
    let r = app
        .send(post(json!({ "extensions": ext }), &[]))
        .await
        .json();
    assert_eq!(r["data"]["viewer"]["subject"], "local", "{r}");
    let get = format!(
        "/graphql?operationName=Apq&extensions={}",
        url::form_urlencoded::byte_serialize(ext.to_string().as_bytes()).collect::<String>()
    );
    let r = app.get(&get).await.json();
    assert_eq!(r["data"]["viewer"]["subject"], "local", "{r}");
}

#[tokio::test]
async fn cursors_are_refused_by_other_lists() {
    let app = TestApp::spawn().await;
    let created = app
        .graphql(
            "mutation { createRegistry(input: { name: \"r\", url: \"https://example.com/r.json\" }) { id } }",
            json!({}),
        )
        .await;
    assert_ok(&created);
    let cursor = app
        .graphql("{ registries(first: 1) { edges { cursor } } }", json!({}))
        .await["data"]["registries"]["edges"][0]["cursor"]
        .clone();
    let same = app
        .graphql(
            "query($c: String) { registries(after: $c) { totalCount } }",
            json!({ "c": cursor }),
        )
        .await;
    assert_ok(&same);
    for list in ["clusters", "instances", "deployments"] {
        let r = app
            .graphql(
                &format!("query($c: String) {{ {list}(after: $c) {{ totalCount }} }}"),
                json!({ "c": cursor }),
            )
            .await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("BAD_USER_INPUT"),
            "{list}: {r}"
        );
        assert_eq!(error_field(&r).as_deref(), Some("after"));
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("`registries`"),
            "{r}"
        );
    }
    let r = app
        .graphql(
            "query($id: ID!) { instance(id: $id) { id } }",
            json!({ "id": created["data"]["createRegistry"]["id"] }),
        )
        .await;
    let message = r["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the id of an Instance"), "{r}");
}
