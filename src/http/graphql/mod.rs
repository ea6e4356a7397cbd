//! GraphQL over HTTP (POST, and GET for queries only) and over websockets.

use std::time::Instant;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse};
use async_graphql_axum::{GraphQLBatchRequest, rejection::GraphQLRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use axum::body::Bytes;

use super::AppState;
use super::csrf::{refuse, refuse_with_code};
use crate::authz::NamespaceAccess;
use crate::cache::AuthScope;
use crate::cache::responses::{Entry, ResponseCache};
use crate::error::Code;
use crate::graphql::abuse::{RATE_LIMIT_EXTENSION, charge, rate_limit_value};
use crate::graphql::context::RequestCtx;
use crate::metrics::OperationLabels;

/// The header that asks for SQL statement counts (`sqlStatements`) and the shortened statements
/// themselves (`sqlLog`) in the response `extensions`: `x-hivegraph-debug: sql`.
pub const DEBUG_HEADER: &str = "x-hivegraph-debug";

mod cached;
mod caller;
mod compiled;
mod debug_sql;
mod operation_metrics;

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

/// The span of a request's GraphQL execution: the operation's kind and name (the first one's
/// in a batch). The name is the bounded metrics label, never the document or its variables.
fn operation_span(request_id: &str, labels: &[(String, &'static str)]) -> tracing::Span {
    let (name, kind) = labels
        .first()
        .map(|(n, k)| (n.as_str(), *k))
        .unwrap_or(("anonymous", "unknown"));
    let name: String = name
        .chars()
        .take(crate::metrics::MAX_OPERATION_NAME)
        .collect();
    tracing::info_span!(
        "graphql",
        request_id = %request_id,
        otel.name = %format!("{kind} {name}"),
        graphql.operation.name = %name,
        graphql.operation.type = %kind,
        graphql.batch_size = labels.len(),
    )
}

/// Executes a batch with the request's context, timeout and metrics.
async fn execute(state: &AppState, headers: &HeaderMap, batch: BatchRequest) -> Response {
    let media = super::negotiate::MediaType::accepted(headers);
    let mut out = execute_inner(state, headers, batch, media).await;
    if out
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        == Some(b"application/graphql-response+json")
    {
        out.headers_mut()
            .insert(header::CONTENT_TYPE, media.header_value());
    }
    out
}

/// One request through the request policies, in order: batch size, the caller and their
/// rights (`caller.rs`), the response cache (`cached.rs`), execution under the time limit with
/// statements counted (`debug_sql.rs`) by the compiled read path or the executor
/// (`compiled.rs`), and operation metrics (`operation_metrics.rs`). The
/// policies that need the parsed document (limits, rate limit, persisted operations, the error
/// policy) are schema extensions in `crate::graphql`.
async fn execute_inner(
    state: &AppState,
    headers: &HeaderMap,
    batch: BatchRequest,
    media: super::negotiate::MediaType,
) -> Response {
    if let Some(refused) = caller::refuse_batch(state, &batch) {
        return refused;
    }
    let request_id = request_id(headers);
    let debug_sql = debug_sql::wanted(state, headers);
    let (principal, access) = match caller::identify(state, headers).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let ticket = match cached::lookup(state, &batch, (&principal, &access), debug_sql) {
        cached::Lookup::Hit(entry) => {
            return cached_answer(state, &principal.subject, &entry, &request_id);
        }
        cached::Lookup::Miss(ticket) => ticket,
    };
    let rc = RequestCtx::with_access(
        state.services.pool.clone(),
        request_id.clone(),
        principal,
        access,
    );
    let stats = rc.stats();
    if debug_sql {
        stats.record_statements();
    }
    let labels = operation_metrics::labels(&batch);
    let started = Instant::now();
    let Some(mut resp) = run(state, batch, rc, &request_id, &labels).await else {
        operation_metrics::timed_out(state, labels, started.elapsed().as_secs_f64());
        return refuse_with_code(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "the request did not finish within {} ms",
                state.services.config.serve.limits.request_timeout_ms
            ),
            Code::Timeout,
        );
    };
    let elapsed = started.elapsed().as_secs_f64();
    let (reply, cache_state) = cached::store(state, &labels, ticket, &resp);
    operation_metrics::observe(state, labels, &resp, elapsed);
    if debug_sql {
        debug_sql::attach(&mut resp, &stats);
    }
    let mut out = match reply {
        Some(body) => json_answer(body),
        None => super::negotiate::answer(resp, media),
    };
    if let Ok(v) = request_id.parse() {
        out.headers_mut().insert("x-request-id", v);
    }
    if let Some(c) = cache_state {
        out.headers_mut()
            .insert(CACHE_HEADER, axum::http::HeaderValue::from_static(c));
    }
    out
}

/// Executes the batch in its span, its statements counted, within the request time limit;
/// `None` when the limit passed.
async fn run(
    state: &AppState,
    batch: BatchRequest,
    rc: RequestCtx,
    request_id: &str,
    labels: &[(String, &'static str)],
) -> Option<BatchResponse> {
    let stats = rc.stats();
    let gate = rc.gate.clone();
    let answer = compiled::execute(state, batch, std::sync::Arc::new(rc));
    let run = tracing::Instrument::instrument(
        gate.holding(crate::db::counted(stats, answer)),
        operation_span(request_id, labels),
    );
    let limit = state.services.config.serve.limits.request_timeout();
    tokio::time::timeout(limit, run).await.ok()
}

/// The response header that tells whether an answer came from the response cache (`hit`) or was
/// executed and may be cached (`miss`); absent for answers that are never cached.
pub const CACHE_HEADER: &str = "x-hivegraph-cache";

/// The `{"data":…}` body of an answer that may be cached, and the rate-limit points it cost:
/// no errors, no extensions but the rate-limit report, no headers or cache hints of its own.
fn cacheable(r: &async_graphql::Response) -> Option<(Bytes, Option<u64>)> {
    if !r.errors.is_empty()
        || !r.http_headers.is_empty()
        || r.cache_control.value().is_some()
        || r.extensions.keys().any(|k| k != RATE_LIMIT_EXTENSION)
        || matches!(r.data, async_graphql::Value::Null)
    {
        return None;
    }
    let cost = match r.extensions.get(RATE_LIMIT_EXTENSION) {
        Some(async_graphql::Value::Object(m)) => match m.get("cost") {
            Some(async_graphql::Value::Number(n)) => Some(n.as_u64()?),
            _ => return None,
        },
        Some(_) => return None,
        None => None,
    };
    let mut body = Vec::with_capacity(4096);
    body.extend_from_slice(b"{\"data\":");
    serde_json::to_writer(&mut body, &r.data).ok()?;
    body.push(b'}');
    Some((Bytes::from(body), cost))
}

/// `{"data":…}` with `extensions.rateLimit` added when there is a report.
fn with_rate_limit(data: &Bytes, report: Option<&async_graphql::Value>) -> Bytes {
    let Some(report) = report else {
        return data.clone();
    };
    let report = serde_json::to_vec(report).unwrap_or_default();
    let mut b = Vec::with_capacity(data.len() + report.len() + 32);
    b.extend_from_slice(&data[..data.len() - 1]);
    b.extend_from_slice(b",\"extensions\":{\"rateLimit\":");
    b.extend_from_slice(&report);
    b.extend_from_slice(b"}}");
    Bytes::from(b)
}

/// A serialized GraphQL answer, with the content type async-graphql-axum gives its own.
fn json_answer(body: Bytes) -> Response {
    let mut out = Response::new(axum::body::Body::from(body));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/graphql-response+json"),
    );
    out
}

/// An answer from the response cache: charged to the caller's rate limit like an execution, with
/// a fresh `extensions.rateLimit`.
fn cached_answer(state: &AppState, subject: &str, entry: &Entry, request_id: &str) -> Response {
    let started = Instant::now();
    let mut body = entry.body.clone();
    let mut outcome = "ok";
    if let Some(cost) = entry.cost.filter(|_| state.limiter.enabled()) {
        match charge(&state.limiter, subject, cost) {
            Ok(c) => body = with_rate_limit(&body, Some(&rate_limit_value(&c))),
            Err(e) => {
                outcome = "error";
                let refused = async_graphql::Response::from_errors(vec![e]);
                body = Bytes::from(serde_json::to_vec(&refused).unwrap_or_default());
            }
        }
    }
    state.metrics.observe(
        OperationLabels {
            operation: entry.operation.clone(),
            kind: "query".into(),
            outcome: outcome.into(),
        },
        started.elapsed().as_secs_f64(),
    );
    let mut out = json_answer(body);
    let h = out.headers_mut();
    h.insert(CACHE_HEADER, axum::http::HeaderValue::from_static("hit"));
    if let Ok(v) = request_id.parse() {
        h.insert("x-request-id", v);
    }
    out
}

/// Refuses a body whose declared length is over the limit with a GraphQL-shaped 413 (the body
/// limit layer behind it answers in plain text).
pub async fn refuse_large_bodies(
    State(state): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let max = state.services.config.serve.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        state.metrics.reject("body_too_large");
        return refuse_with_code(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than the limit of {max} bytes"),
            Code::BadRequest,
        );
    }
    next.run(req).await
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
                "the request body is not a valid GraphQL request: a JSON object with a `query` string, \
                 and optional `variables` and `extensions` objects and `operationName` string",
            );
        }
    };
    let batch = match prepare(&state, &headers, batch) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    execute(&state, &headers, batch).await
}

/// Fills in persisted documents (APQ) and refuses requests without a document, before anything
/// else looks at the documents.
fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    mut batch: BatchRequest,
) -> Result<BatchRequest, Box<Response>> {
    let allow_list = state
        .services
        .config
        .serve
        .limits
        .persisted_operations
        .is_some();
    let media = super::negotiate::MediaType::accepted(headers);
    for r in batch.iter_mut() {
        if !allow_list && let Err(e) = state.persisted.resolve(r) {
            return Err(Box::new(super::negotiate::answer(
                BatchResponse::Single(async_graphql::Response::from_errors(vec![e])),
                media,
            )));
        }
        if r.query.trim().is_empty() && !(allow_list && r.extensions.contains_key("persistedQuery"))
        {
            return Err(Box::new(refuse(
                StatusCode::BAD_REQUEST,
                "the request holds no GraphQL document: send it in `query` (or its hash in \
                 `extensions.persistedQuery`)",
            )));
        }
    }
    Ok(batch)
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
    let has_query = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("query=") || p.starts_with("extensions="))
    });
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
    let batch = match super::negotiate::parse_get(req.uri()) {
        Ok(r) => BatchRequest::Single(r),
        Err(why) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("the query string is not a valid GraphQL request: {why}"),
            );
        }
    };
    let batch = match prepare(&state, &headers, batch) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    for r in batch.iter() {
        // Every operation of the document must be a query: which one runs may depend on a
        // parameter, and a document that holds a mutation has no business on GET.
        if !only_queries(&r.query)
            || operation_kind(&r.query, r.operation_name.as_deref()) != Some(OperationType::Query)
        {
            state.metrics.reject("get_non_query");
            let mut refused = refuse_with_code(
                StatusCode::METHOD_NOT_ALLOWED,
                "only queries may be sent with GET; send mutations and subscriptions with POST or a websocket",
                Code::BadRequest,
            );
            refused
                .headers_mut()
                .insert(header::ALLOW, axum::http::HeaderValue::from_static("POST"));
            return refused;
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
    let serve = &state.services.config.serve;
    if state.sockets.open() >= serve.ws.ws_max_sockets {
        state.metrics.reject("too_many_sockets");
        return refuse_with_code(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many websockets are open on this gateway; retry later",
            Code::UpstreamUnavailable,
        );
    }
    let max_message = serve.limits.max_body_bytes;
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    upgrade
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .read_buffer_size(super::ws::READ_BUFFER_BYTES)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| super::ws::serve(socket, protocol, state))
}
