//! GraphQL over HTTP (the GraphQL-over-HTTP spec): the media type of an answer, chosen from the
//! request's `Accept`; status codes; and GET requests read from the query string.
//!
//! - `application/json` (also for a missing `Accept`, `*/*`, `application/*` or nothing we
//!   serve): every well-formed request gets 200.
//! - `application/graphql-response+json` (when preferred): a request that did not execute (parse,
//!   validation and other request errors) gets 400 (429 when rate limited), and no `data`.
//!
//! Under both, a request error carries no `data` entry; a field error keeps `data`.

use std::collections::HashMap;

use async_graphql::{BatchResponse, Request, Response as GqlResponse};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;

/// The media types an answer may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`.
    Json,
    /// `application/graphql-response+json`.
    GraphqlResponse,
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

impl MediaType {
    /// The media type the request's `Accept` prefers among those served (by `q`, then order).
    pub fn accepted(headers: &HeaderMap) -> MediaType {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return MediaType::Json;
        };
        let mut best: Option<(f32, MediaType)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let media = match name.as_str() {
                GRAPHQL_RESPONSE => MediaType::GraphqlResponse,
                "application/json" | "application/*" | "*/*" => MediaType::Json,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, media));
            }
        }
        best.map_or(MediaType::Json, |(_, m)| m)
    }

    /// The `content-type` of an answer in this media type.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::Json => "application/json",
            MediaType::GraphqlResponse => GRAPHQL_RESPONSE,
        })
    }
}

/// Whether a response answers a request that did not execute: no data, and errors that belong
/// to no field.
fn is_request_error(r: &GqlResponse) -> bool {
    r.data == async_graphql::Value::Null
        && !r.errors.is_empty()
        && r.errors.iter().all(|e| e.path.is_empty())
}

fn has_code(r: &GqlResponse, code: &str) -> bool {
    r.errors.iter().any(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .is_some_and(|c| *c == async_graphql::Value::from(code))
    })
}

/// The `retryAfterSeconds` of a response refused as a whole for overload: no data came out
/// (`data` null, or every root field null) and every error is `OVERLOADED`.
fn overload_refusal(r: &GqlResponse) -> Option<u64> {
    let no_data = match &r.data {
        async_graphql::Value::Null => true,
        async_graphql::Value::Object(m) => m.values().all(|v| *v == async_graphql::Value::Null),
        _ => false,
    };
    if !no_data || r.errors.is_empty() {
        return None;
    }
    r.errors.iter().try_fold(0u64, |most, e| {
        let ext = e.extensions.as_ref()?;
        if ext.get("code")? != &async_graphql::Value::from(crate::error::Code::Overloaded.as_str())
        {
            return None;
        }
        let after = match ext.get("retryAfterSeconds") {
            Some(async_graphql::Value::Number(n)) => n.as_u64().unwrap_or(1),
            _ => 1,
        };
        Some(most.max(after))
    })
}

/// One response as JSON text, without `data` when the request did not execute. An executed
/// answer is written straight from its value tree, its fields in the answer's order.
fn to_json(r: &GqlResponse) -> String {
    if !is_request_error(r) {
        return serde_json::to_string(r).unwrap_or_default();
    }
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("data");
    }
    v.to_string()
}

/// The HTTP answer to a GraphQL response, in `media`.
pub fn answer(resp: BatchResponse, media: MediaType) -> Response {
    let refused_for = match &resp {
        BatchResponse::Single(r) => overload_refusal(r),
        BatchResponse::Batch(rs) if rs.is_empty() => None,
        BatchResponse::Batch(rs) => rs
            .iter()
            .map(overload_refusal)
            .try_fold(0, |most, r| Some(most.max(r?))),
    };
    let (status, body, headers) = match &resp {
        BatchResponse::Single(r) => {
            let status = match media {
                MediaType::GraphqlResponse if is_request_error(r) => {
                    if has_code(r, "RATE_LIMITED") {
                        StatusCode::TOO_MANY_REQUESTS
                    } else {
                        StatusCode::BAD_REQUEST
                    }
                }
                _ => StatusCode::OK,
            };
            (status, to_json(r), Some(&r.http_headers))
        }
        BatchResponse::Batch(rs) => (
            StatusCode::OK,
            format!("[{}]", rs.iter().map(to_json).collect::<Vec<_>>().join(",")),
            None,
        ),
    };
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    if let Some(h) = headers {
        out.headers_mut().extend(h.clone());
    }
    out.headers_mut()
        .insert(header::CONTENT_TYPE, media.header_value());
    if let Some(after) = refused_for {
        // The whole request was refused because the gateway is saturated: say so at the HTTP
        // level too, so that proxies and clients back off.
        *out.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        out.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after.max(1)));
    }
    out
}

/// A GET request from the query string: `query`, `operationName`, and `variables` and
/// `extensions` as JSON.
pub fn parse_get(uri: &Uri) -> Result<Request, String> {
    let axum::extract::Query(params) =
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
            .map_err(|e| e.body_text())?;
    let json = |name: &str| -> Result<Option<serde_json::Value>, String> {
        params
            .get(name)
            .map(|v| serde_json::from_str(v).map_err(|e| format!("`{name}` is not JSON: {e}")))
            .transpose()
    };
    let mut req = Request::new(params.get("query").cloned().unwrap_or_default());
    req.operation_name = params.get("operationName").cloned();
    if let Some(v) = json("variables")? {
        if !v.is_object() && !v.is_null() {
            return Err("`variables` must be a JSON object".into());
        }
        req.variables = async_graphql::Variables::from_json(v);
    }
    if let Some(serde_json::Value::Object(m)) = json("extensions")? {
        for (k, v) in m {
            let v = async_graphql::Value::from_json(v).map_err(|e| e.to_string())?;
            req.extensions.insert(k, v);
        }
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> MediaType {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        MediaType::accepted(&h)
    }

    #[test]
    fn accept_headers_choose_the_media_type() {
        assert_eq!(MediaType::accepted(&HeaderMap::new()), MediaType::Json);
        assert_eq!(accept("*/*"), MediaType::Json);
        assert_eq!(accept("application/json"), MediaType::Json);
        assert_eq!(accept(GRAPHQL_RESPONSE), MediaType::GraphqlResponse);
        assert_eq!(
            accept("application/graphql-response+json, application/json;q=0.9"),
            MediaType::GraphqlResponse
        );
        assert_eq!(
            accept("application/graphql-response+json;q=0.5, application/json"),
            MediaType::Json
        );
        assert_eq!(accept("text/html"), MediaType::Json);
    }

    #[test]
    fn get_parameters_are_read() {
        let uri: Uri = "/graphql?query=%7Ba%7D&operationName=A&variables=%7B%22x%22%3A1%7D"
            .parse()
            .unwrap();
        let r = parse_get(&uri).unwrap();
        assert_eq!(
            (r.query.as_str(), r.operation_name.as_deref()),
            ("{a}", Some("A"))
        );
        let bad: Uri = "/graphql?query=x&variables=%5B1%5D".parse().unwrap();
        assert!(parse_get(&bad).is_err());
    }
}
