//! GraphQL over HTTP (POST, and GET for queries only) and over websockets.

use std::time::Instant;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse, rejection::GraphQLRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::csrf::{refuse, refuse_with_code};
use crate::graphql::context::RequestCtx;
use crate::metrics::OperationLabels;
use crate::state::AppState;

/// The header that asks for SQL statement counts (`sqlStatements`) and the shortened statements
/// themselves (`sqlLog`) in the response `extensions`: `x-hivegraph-debug: sql`.
pub const DEBUG_HEADER: &str = "x-hivegraph-debug";

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The type and name of the operation a request selects.
fn operation_of(
    query: &str,
    operation_name: Option<&str>,
) -> Option<(OperationType, Option<String>)> {
    let doc = async_graphql::parser::parse_query(query).ok()?;
    let mut ops = doc.operations.iter();
    let (name, op) = match operation_name {
        Some(wanted) => ops.find(|(n, _)| n.map(|n| n.as_str()) == Some(wanted))?,
        None => ops.next()?,
    };
    Some((op.node.ty, name.map(|n| n.to_string())))
}

/// Whether every operation in the document is a query (false when it does not parse).
fn only_queries(query: &str) -> bool {
    async_graphql::parser::parse_query(query)
        .map(|doc| {
            doc.operations
                .iter()
                .all(|(_, op)| op.node.ty == OperationType::Query)
        })
        .unwrap_or(false)
}

fn operation_kind(query: &str, operation_name: Option<&str>) -> Option<OperationType> {
    operation_of(query, operation_name).map(|(ty, _)| ty)
}

fn kind_label(kind: Option<OperationType>) -> &'static str {
    match kind {
        Some(OperationType::Query) => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        None => "unknown",
    }
}

/// Executes a batch with the request's context, timeout and metrics.
async fn execute(state: &AppState, headers: &HeaderMap, batch: BatchRequest) -> Response {
    let limits = &state.services.config.serve.limits;
    let n = match &batch {
        BatchRequest::Single(_) => 1,
        BatchRequest::Batch(v) => v.len(),
    };
    if n > limits.max_batch || n == 0 {
        state.metrics.reject("batch_too_large");
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!(
                "a batch may hold 1 to {} operations; this one holds {n}",
                limits.max_batch
            ),
        );
    }
    let request_id = request_id(headers);
    let debug_sql = headers
        .get(DEBUG_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "sql"));
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.services.auth.authenticate(authorization).await {
        Ok(p) => p,
        Err(e) => {
            state.metrics.reject("unauthenticated");
            let mut resp =
                refuse_with_code(StatusCode::UNAUTHORIZED, &e.to_string(), "UNAUTHENTICATED");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    };
    // The caller's namespace grants, loaded once per request (none for admins and anonymous
    // callers); the request's reader filters every instance statement by them.
    let rc =
        match RequestCtx::authorized(state.services.pool.clone(), request_id.clone(), principal)
            .await
        {
            Ok(rc) => rc,
            Err(e) => {
                state.metrics.reject("unavailable");
                return refuse_with_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &e.public_message(),
                    e.code(),
                );
            }
        };
    let stats = rc.stats();
    if debug_sql {
        stats.record_statements();
    }
    let gate = rc.gate.clone();
    let labels: Vec<(String, &'static str)> = batch
        .iter()
        .map(|r| {
            let op = operation_of(&r.query, r.operation_name.as_deref());
            let name = op
                .as_ref()
                .and_then(|(_, n)| n.clone())
                .unwrap_or_else(|| "anonymous".into());
            (name, kind_label(op.map(|(ty, _)| ty)))
        })
        .collect();
    let batch = batch.data(std::sync::Arc::new(rc));
    let started = Instant::now();
    let span = tracing::info_span!("graphql", request_id = %request_id);
    let run = {
        let _enter = span.enter();
        gate.holding(state.schema.execute_batch(batch))
    };
    let result = tokio::time::timeout(limits.request_timeout(), run).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut resp = match result {
        Ok(resp) => resp,
        Err(_) => {
            state.metrics.reject("timeout");
            for (operation, kind) in labels {
                state.metrics.observe(
                    OperationLabels {
                        operation,
                        kind: kind.into(),
                        outcome: "timeout".into(),
                    },
                    elapsed,
                );
            }
            return refuse_with_code(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "the request did not finish within {} ms",
                    limits.request_timeout_ms
                ),
                "TIMEOUT",
            );
        }
    };
    let outcomes: Vec<bool> = match &resp {
        BatchResponse::Single(r) => vec![r.errors.is_empty()],
        BatchResponse::Batch(rs) => rs.iter().map(|r| r.errors.is_empty()).collect(),
    };
    for ((operation, kind), ok) in labels.into_iter().zip(outcomes) {
        let outcome = if ok { "ok" } else { "error" };
        state.metrics.observe(
            OperationLabels {
                operation,
                kind: kind.into(),
                outcome: outcome.into(),
            },
            elapsed,
        );
    }
    if debug_sql {
        let count = async_graphql::Value::from(stats.statements());
        let log = async_graphql::Value::List(
            stats
                .statement_log()
                .into_iter()
                .map(async_graphql::Value::from)
                .collect(),
        );
        match &mut resp {
            BatchResponse::Single(r) => {
                r.extensions.insert("sqlStatements".into(), count);
                r.extensions.insert("sqlLog".into(), log);
            }
            BatchResponse::Batch(rs) => {
                for r in rs {
                    r.extensions.insert("sqlStatements".into(), count.clone());
                    r.extensions.insert("sqlLog".into(), log.clone());
                }
            }
        }
    }
    let mut out = GraphQLResponse::from(resp).into_response();
    if let Ok(v) = request_id.parse() {
        out.headers_mut().insert("x-request-id", v);
    }
    out
}

/// `POST /graphql`.
pub async fn post_graphql(State(state): State<AppState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let batch = match GraphQLBatchRequest::<GraphQLRejection>::from_request(req, &()).await {
        Ok(b) => b.into_inner(),
        Err(rejection) => {
            let text = rejection.0.to_string();
            if text.contains("length limit") || text.contains("too large") {
                state.metrics.reject("body_too_large");
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is too large",
                );
            }
            return refuse(
                StatusCode::BAD_REQUEST,
                "the request body is not a valid GraphQL request",
            );
        }
    };
    execute(&state, &headers, batch).await
}

/// `GET /graphql`: a websocket upgrade, GraphiQL for browsers, or a query in the URL (never a
/// mutation).
pub async fn get_graphql(State(state): State<AppState>, req: Request) -> Response {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return websocket(state, req).await;
    }
    let has_query = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("query=")));
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if !has_query {
        if wants_html && state.services.config.serve.mode == crate::config::Mode::Dev {
            return graphiql_page();
        }
        return refuse(
            StatusCode::BAD_REQUEST,
            "GET /graphql needs a ?query= parameter",
        );
    }
    let headers = req.headers().clone();
    // In production a query in the URL must prove a preflight too (graphql-cop's "GET method
    // support"): a cross-site page cannot make a browser send it.
    if state.services.config.serve.mode == crate::config::Mode::Production
        && !super::csrf::has_preflight(&headers)
    {
        state.metrics.reject("csrf");
        return refuse(
            StatusCode::BAD_REQUEST,
            "GET /graphql?query= needs an x-hivegraph-csrf header in production; or POST application/json",
        );
    }
    let batch = match GraphQLBatchRequest::<GraphQLRejection>::from_request(req, &()).await {
        Ok(b) => b.into_inner(),
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the query string is not a valid GraphQL request",
            );
        }
    };
    for r in batch.iter() {
        // Every operation of the document must be a query: which one runs may depend on a
        // parameter, and a document that holds a mutation has no business on GET.
        if !only_queries(&r.query)
            || operation_kind(&r.query, r.operation_name.as_deref()) != Some(OperationType::Query)
        {
            state.metrics.reject("get_non_query");
            return refuse_with_code(
                StatusCode::METHOD_NOT_ALLOWED,
                "only queries may be sent with GET; send mutations and subscriptions with POST or a websocket",
                "BAD_REQUEST",
            );
        }
    }
    execute(&state, &headers, batch).await
}

fn graphiql_page() -> Response {
    crate::http::graphiql_page("/graphql", "/graphql")
}

async fn websocket(state: AppState, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let protocol = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').find_map(|p| {
                p.trim()
                    .parse::<async_graphql::http::WebSocketProtocols>()
                    .ok()
            })
        });
    let Some(protocol) = protocol else {
        return (StatusCode::BAD_REQUEST, "unsupported websocket subprotocol").into_response();
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| super::ws::serve(socket, protocol, state))
}
