//! graphql-cop's checks (shared/docs/hardening.md §2.2), re-implemented against a production-mode
//! gateway with JWT authentication and the default rate limit: every check must find nothing.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use common::{Reply, TestApp, error_code};
use hivegraph::config::{AuthMode, Mode};

const SECRET: &str = "graphql-cop-secret-0123456789abcdef";

fn bearer() -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "cop", "exp": exp, "roles": ["admin"] }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {t}")
}

async fn production() -> TestApp {
    TestApp::spawn_with(|c| {
        c.serve.mode = Mode::Production;
        c.serve.auth = AuthMode::Jwt;
        c.serve.jwt.jwt_secret = Some(SECRET.into());
        c.serve.limits = hivegraph::config::Limits::default();
    })
    .await
}

async fn post(app: &TestApp, body: Value) -> Reply {
    let auth = bearer();
    app.send(
        Request::post("/graphql")
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn query(app: &TestApp, q: &str) -> Value {
    post(app, json!({ "query": q })).await.json()
}

/// No data came back, and the error carries a code (a refusal, not a crash).
fn refused(resp: &Value, what: &str) {
    assert!(
        resp["data"].is_null() || resp.get("data").is_none(),
        "{what}: data came back: {resp}"
    );
    assert!(error_code(resp).is_some(), "{what}: no error code: {resp}");
}

/// Nothing in the answer reveals internals: no tracing, no exception, no stack trace.
fn no_internals(text: &str) {
    for leak in [
        "\"tracing\"",
        "\"exception\"",
        "stacktrace",
        "backtrace",
        "panicked",
    ] {
        assert!(!text.to_lowercase().contains(leak), "leaks {leak}: {text}");
    }
}

#[tokio::test]
async fn graphql_cop_finds_nothing_in_production() {
    let app = production().await;
    // Sanity: an ordinary query works, so the refusals below are not blanket failures.
    let ok = query(&app, "{ viewer { subject } }").await;
    assert_eq!(ok["data"]["viewer"]["subject"], json!("cop"), "{ok}");

    // Alias overloading: 101 aliases.
    let aliases: String = (0..101).map(|i| format!("a{i}: __typename ")).collect();
    let r = query(&app, &format!("query {{ {aliases} }}")).await;
    refused(&r, "alias overloading");
    assert_eq!(error_code(&r).as_deref(), Some("QUERY_TOO_COMPLEX"));

    // Array batching: 10 queries in one JSON array.
    let batch: Vec<Value> = (0..10)
        .map(|_| json!({ "query": "{ __typename }" }))
        .collect();
    let r = post(&app, Value::Array(batch)).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "array batching: {}",
        r.text
    );

    // Directive overloading: 10 repeated directives.
    let r = query(
        &app,
        &format!("query {{ __typename {} }}", "@aa ".repeat(10)),
    )
    .await;
    refused(&r, "directive overloading");

    // Field duplication: __typename x 500.
    let r = query(&app, &format!("query {{ {} }}", "__typename ".repeat(500))).await;
    refused(&r, "field duplication");

    // Circular introspection.
    let r = query(
        &app,
        "query { __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }",
    )
    .await;
    assert!(
        r["data"].is_null() || r["data"]["__schema"].is_null(),
        "circular introspection: {r}"
    );
    // Plain introspection too.
    let r = query(&app, "{ __schema { queryType { name } } }").await;
    assert!(
        r["data"].is_null() || r["data"]["__schema"].is_null(),
        "introspection: {r}"
    );

    // Field suggestions.
    let r = query(&app, "{ registres { totalCount } }").await;
    let text = r.to_string();
    assert!(error_code(&r).is_some(), "{r}");
    assert!(!text.contains("Did you mean"), "field suggestions: {text}");

    // GET method support: only with a preflight header, and only queries.
    let get = |q: &str, csrf: bool| {
        let mut req = Request::get(format!(
            "/graphql?query={}",
            url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        ))
        .header("authorization", bearer());
        if csrf {
            req = req.header("x-hivegraph-csrf", "1");
        }
        req.body(Body::empty()).unwrap()
    };
    let r = app.send(get("{ __typename }", false)).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "GET without a preflight header: {}",
        r.text
    );
    let r = app.send(get("{ __typename }", true)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET query with the header: {}",
        r.text
    );

    // Mutation over GET.
    let m = r#"mutation { createRegistry(input: { name: "cop", url: "https://127.0.0.1:9/r.json" }) { id } }"#;
    for csrf in [false, true] {
        let r = app.send(get(m, csrf)).await;
        assert!(
            matches!(
                r.status,
                StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST
            ),
            "mutation over GET: {} {}",
            r.status,
            r.text
        );
    }
    assert_eq!(app.db.count("registries").await, 0);

    // POST url-encoded (and the other simple requests).
    for ct in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let r = app
            .send(
                Request::post("/graphql")
                    .header("content-type", ct)
                    .header("authorization", bearer())
                    .body(Body::from(format!("query={}", "%7B__typename%7D")))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct}: {}",
            r.text
        );
    }

    // GraphiQL, tracing and unhandled errors.
    let page = app
        .send(
            Request::get("/graphql")
                .header("accept", "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_ne!(
        page.status,
        StatusCode::OK,
        "GraphiQL is served in production"
    );
    assert!(!page.text.to_lowercase().contains("graphiql"));
    for bad in [
        "{ __typename",
        "{ registry(id: \"not-an-id\") { id } }",
        "{ servers(first: 100000) { totalCount } }",
        "query($x: Int!) { __typename }",
    ] {
        let r = post(&app, json!({ "query": bad })).await;
        no_internals(&r.text);
        assert!(error_code(&r.json()).is_some(), "{bad}: {}", r.text);
    }
    let ok = post(&app, json!({ "query": "{ viewer { subject } }" })).await;
    no_internals(&ok.text);
    assert!(ok.json()["extensions"].get("tracing").is_none());
}
