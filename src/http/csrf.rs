//! CSRF protection: browsers may send "simple" cross-site requests (text/plain, form and
//! multipart bodies, or no content type) without a preflight. Such POSTs are refused unless they
//! carry a header that forces a preflight.

use crate::error::Code;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Headers whose presence proves the request passed a CORS preflight (browsers cannot add them to
/// simple requests).
pub const PREFLIGHT_HEADERS: &[&str] = &[
    "x-hivegraph-csrf",
    "apollo-require-preflight",
    "x-apollo-operation-name",
];

/// Content types a GraphQL POST may use.
const ALLOWED_TYPES: &[&str] = &[
    "application/json",
    "application/graphql-response+json",
    "application/graphql",
];

fn has_preflight_header(req: &Request) -> bool {
    has_preflight(req.headers())
}

/// Whether `headers` hold one of [`PREFLIGHT_HEADERS`], non-empty.
pub fn has_preflight(headers: &axum::http::HeaderMap) -> bool {
    PREFLIGHT_HEADERS
        .iter()
        .any(|h| headers.get(*h).is_some_and(|v| !v.as_bytes().is_empty()))
}

/// The media type of a request, lower-cased, without parameters.
fn media_type(req: &Request) -> Option<String> {
    let raw = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        raw.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Middleware refusing CSRF-prone POSTs with 415 (or 400 when the content type is missing).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !has_preflight_header(&req) {
        let ok = media_type(&req).is_some_and(|t| ALLOWED_TYPES.contains(&t.as_str()));
        if !ok {
            state.metrics.reject("csrf");
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST bodies must be application/json (or send an x-hivegraph-csrf header); \
                 form, multipart and text/plain requests are refused to prevent cross-site request forgery",
            );
        }
    }
    next.run(req).await
}

/// A GraphQL-shaped error response.
pub fn refuse(status: StatusCode, message: &str) -> Response {
    refuse_with_code(status, message, Code::BadRequest)
}

/// A GraphQL-shaped error response with an explicit code.
pub fn refuse_with_code(status: StatusCode, message: &str, code: Code) -> Response {
    let body =
        serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body.to_string()),
    )
        .into_response()
}
