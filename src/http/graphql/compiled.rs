//! The compiled read path as a request policy (`crate::graphql::compiled`): a single read-only
//! request whose document the executor answered before is answered from its plan; every other
//! request, and every request the plan declines, goes to the executor. In `check` mode both
//! answer every request that can be planned, and an answer that differs fails the request.

use std::sync::Arc;

use async_graphql::{Request, Response};

use super::*;
use crate::config::CompiledReads;
use crate::graphql::compiled::{self, Answer, Known, Plan};

/// Answers `batch` through the compiled path or the executor, as configured.
pub(super) async fn execute(
    state: &AppState,
    batch: BatchRequest,
    rc: Arc<RequestCtx>,
) -> BatchResponse {
    let serve = &state.services.config.serve;
    let mode = match serve.limits.persisted_operations {
        // An allow-list is the executor's extension to enforce.
        Some(_) => CompiledReads::Off,
        None => serve.compiled_reads,
    };
    let request = match batch {
        BatchRequest::Single(r) if mode != CompiledReads::Off => r,
        other => return state.schema.execute_batch(other.data(rc)).await,
    };
    BatchResponse::Single(match mode {
        CompiledReads::Check => check(state, request, rc).await,
        _ => planned_or_executed(state, request, rc).await,
    })
}

async fn compiled_answer(
    state: &AppState,
    plan: &Plan,
    request: &Request,
    rc: &RequestCtx,
    charge: bool,
) -> Option<Answer> {
    let limiter = charge.then_some(state.limiter.as_ref());
    let max = state.services.config.serve.limits.max_complexity;
    compiled::answer(
        plan,
        request,
        rc,
        Some(&state.services.caches),
        max,
        limiter,
    )
    .await
}

/// The plan's answer when the document has a plan and the plan answers; the executor's
/// otherwise, which teaches the plans a new document.
async fn planned_or_executed(state: &AppState, request: Request, rc: Arc<RequestCtx>) -> Response {
    match state.plans.lookup(&request) {
        Known::Planned(plan) => {
            if let Some(answer) = compiled_answer(state, &plan, &request, &rc, true).await {
                crate::metrics::compiled_read("compiled");
                return answer.response;
            }
            crate::metrics::compiled_read("declined");
            return state.schema.execute(request.data(rc)).await;
        }
        Known::Executor => {
            crate::metrics::compiled_read("executor");
            return state.schema.execute(request.data(rc)).await;
        }
        Known::Unseen => crate::metrics::compiled_read("executor"),
    }
    let op = request.operation_name.clone();
    let query = request.query.clone();
    let response = state.schema.execute(request.data(rc)).await;
    state.plans.learn(&query, op.as_deref(), &response);
    response
}

/// How often a difference is measured again before it counts: a write between the two answers
/// can make them differ once.
const CHECK_ATTEMPTS: usize = 3;

/// Both paths answer; the executor's answer is returned, or an INTERNAL_SERVER_ERROR when the
/// compiled answer differs from it every time.
async fn check(state: &AppState, request: Request, rc: Arc<RequestCtx>) -> Response {
    let Some(plan) = compiled::plan::plan(&request.query, request.operation_name.as_deref()) else {
        crate::metrics::compiled_read("executor");
        return state.schema.execute(request.data(rc)).await;
    };
    let mut why = String::new();
    for _ in 0..CHECK_ATTEMPTS {
        let mine = compiled_answer(state, &plan, &request, &rc, false).await;
        let theirs = state.schema.execute(copy(&request).data(rc.clone())).await;
        match mine.map(|m| differs(&m, &theirs, plan.stable_order)) {
            None => {
                crate::metrics::compiled_read("declined");
                return theirs;
            }
            Some(None) => {
                crate::metrics::compiled_read("compiled");
                return theirs;
            }
            Some(Some(d)) => why = d,
        }
    }
    tracing::error!(query = %request.query, difference = %why, "compiled read path differs from the executor");
    Response::from_errors(vec![crate::error::graphql_error(
        Code::InternalServerError,
        format!("the compiled read path differs from the executor: {why}"),
        None,
    )])
}

/// `v` with the keys of every object in it sorted.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.into_iter().map(|(k, v)| (k, sorted(v))).collect()
        }
        serde_json::Value::Array(items) => items.into_iter().map(sorted).collect(),
        other => other,
    }
}

fn copy(r: &Request) -> Request {
    let mut c = Request::new(r.query.clone()).variables(r.variables.clone());
    c.operation_name.clone_from(&r.operation_name);
    c.extensions.clone_from(&r.extensions);
    c
}

/// How a compiled answer differs from the executor's, if it does: byte for byte when the
/// executor's field order is stable for the document (`Plan::stable_order`), in any field order
/// otherwise. Errors the executor gives before executing (parsing, validation, depth and alias
/// limits, the rate limit, which the check does not charge) are not differences: the compiled
/// path never learns such documents.
fn differs(mine: &Answer, theirs: &Response, stable_order: bool) -> Option<String> {
    let before_execution = |e: &async_graphql::ServerError| {
        let code = match e.extensions.as_ref().and_then(|x| x.get("code")) {
            Some(async_graphql::Value::String(c)) => c.as_str(),
            _ => "",
        };
        matches!(
            code,
            "GRAPHQL_PARSE_FAILED" | "GRAPHQL_VALIDATION_FAILED" | "RATE_LIMITED"
        ) || (code == "QUERY_TOO_COMPLEX" && !e.message.contains("too complex"))
    };
    if !theirs.errors.is_empty() {
        if theirs.errors.iter().all(before_execution) {
            return None;
        }
        return Some(format!(
            "the executor answered with errors ({}), the compiled path with data",
            theirs.errors[0].message
        ));
    }
    let text = |v: &async_graphql::Value| match stable_order {
        true => serde_json::to_string(v).unwrap_or_default(),
        // Without serde_json's `preserve_order`, `to_value` sorts the keys too; `sorted` makes sure.
        false => serde_json::to_string(&sorted(serde_json::to_value(v).unwrap_or_default()))
            .unwrap_or_default(),
    };
    let (a, b) = (text(&mine.response.data), text(&theirs.data));
    if a != b {
        let at = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        let near =
            |t: &str| -> String { t.chars().skip(at.saturating_sub(300)).take(600).collect() };
        return Some(format!(
            "data at character {at}: compiled …{} / executor …{}",
            near(&a),
            near(&b)
        ));
    }
    let charged = theirs
        .extensions
        .get(RATE_LIMIT_EXTENSION)
        .and_then(|v| match v {
            async_graphql::Value::Object(m) => m.get("cost").cloned(),
            _ => None,
        });
    match charged {
        Some(c) if c != async_graphql::Value::from(mine.cost) => {
            Some(format!("cost: compiled {} / executor {c}", mine.cost))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::Value;

    fn answer(data: Value, cost: u64) -> Answer {
        Answer {
            response: Response::new(data),
            cost,
        }
    }

    fn object(name: &str) -> Value {
        let mut m = async_graphql::indexmap::IndexMap::new();
        m.insert(async_graphql::Name::new("name"), Value::from(name));
        Value::Object(m)
    }

    #[test]
    fn a_difference_in_data_cost_or_errors_is_found() {
        let theirs = Response::new(object("a"));
        assert_eq!(differs(&answer(object("a"), 1), &theirs, true), None);
        assert!(differs(&answer(object("b"), 1), &theirs, true).is_some());
        let mut charged = Response::new(object("a"));
        let report = rate_limit_value(&crate::graphql::abuse::Charged {
            limit: 100,
            cost: 3,
            remaining: 97,
            reset_in_secs: 60,
        });
        charged
            .extensions
            .insert(RATE_LIMIT_EXTENSION.into(), report);
        assert_eq!(differs(&answer(object("a"), 3), &charged, true), None);
        assert!(differs(&answer(object("a"), 2), &charged, true).is_some());
        let failed = Response::from_errors(vec![crate::error::graphql_error(
            Code::BadUserInput,
            "first must be between 1 and 100",
            Some("first"),
        )]);
        assert!(differs(&answer(object("a"), 1), &failed, true).is_some());
        let invalid = Response::from_errors(vec![crate::error::graphql_error(
            Code::GraphqlValidationFailed,
            "unknown field",
            None,
        )]);
        assert_eq!(differs(&answer(object("a"), 1), &invalid, true), None);
    }
}
