//! `Host` and `Origin` checks. A gateway with `HIVEGRAPH_AUTH=none` makes every caller the local
//! admin, so a web page the developer visits must not reach it: through DNS rebinding (a foreign
//! name resolving to 127.0.0.1, seen in `Host`) or through a cross-site websocket (browsers send
//! no CORS preflight for websockets, only an `Origin`). Refusals are 403 with an audit record.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::config::{AuthMode, ServeConfig};
use crate::error::Code;

/// The host name of a `Host` header or an origin's authority, without port, lower-cased
/// (brackets kept for IPv6 literals).
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(end) = a.strip_prefix('[').and_then(|r| r.find(']')) {
        return a[..end + 2].to_string();
    }
    a.split(':').next().unwrap_or_default().to_string()
}

/// The host names requests may be addressed to, or `None` for any.
fn allowed_hosts(serve: &ServeConfig) -> Option<Vec<String>> {
    if !serve.origins.allowed_hosts.is_empty() {
        return Some(
            serve
                .origins
                .allowed_hosts
                .iter()
                .map(|h| host_name(h))
                .collect(),
        );
    }
    if serve.auth != AuthMode::None {
        return None;
    }
    let ip = match serve.listen.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    Some(vec![
        ip,
        "localhost".into(),
        "127.0.0.1".into(),
        "[::1]".into(),
    ])
}

/// Why a request is refused, if it is.
pub fn refusal(serve: &ServeConfig, headers: &HeaderMap, websocket: bool) -> Option<String> {
    // Browsers always send `Host`; a request without it cannot come from a rebound page.
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let (Some(host), Some(allowed)) = (host, allowed_hosts(serve))
        && !allowed.contains(&host_name(host))
    {
        return Some(format!(
            "the Host {host:?} is not served here (HIVEGRAPH_ALLOWED_HOSTS)"
        ));
    }
    if !websocket {
        return None;
    }
    // Non-browser clients send no `Origin`; browsers always do on websockets.
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null");
    let allowed = &serve.origins.allowed_origins;
    let ok = if allowed.is_empty() {
        let authority = origin.split_once("://").map(|(_, a)| a);
        authority.is_some_and(|a| host.is_some_and(|h| a.eq_ignore_ascii_case(h)))
    } else {
        allowed
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    };
    (!ok).then(|| {
        format!("websockets from the origin {origin:?} are not allowed (HIVEGRAPH_ALLOWED_ORIGINS)")
    })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Middleware refusing foreign `Host`s and cross-origin websockets with 403 and an audit record.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let serve = &state.services.config.serve;
    let websocket = is_upgrade(req.headers());
    let Some(why) = refusal(serve, req.headers(), websocket) else {
        return next.run(req).await;
    };
    state.metrics.reject("origin");
    tracing::warn!(reason = %why, path = %req.uri().path(), "request refused");
    let actor = crate::audit::Actor {
        name: "anonymous".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let entry = crate::audit::AuditEntry::raw(&actor, "crossOriginRequest", "http", None, "denied")
        .details(serde_json::json!({ "reason": why, "path": req.uri().path() }));
    let pool = state.services.pool.clone();
    tokio::spawn(async move { crate::audit::record_standalone(&pool, entry).await });
    super::csrf::refuse_with_code(StatusCode::FORBIDDEN, &why, Code::Forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hosts_and_origins_of_a_local_gateway() {
        let mut serve = Config::for_tests("postgres://x").serve;
        serve.listen = "127.0.0.1:8080".parse().unwrap();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "LOCALHOST",
        ] {
            assert_eq!(
                refusal(&serve, &headers(&[("host", ok)]), false),
                None,
                "{ok}"
            );
        }
        assert!(refusal(&serve, &headers(&[("host", "evil.example:8080")]), false).is_some());
        let same = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ];
        assert_eq!(refusal(&serve, &headers(&same), true), None);
        let cross = [
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ];
        assert!(refusal(&serve, &headers(&cross), true).is_some());
        assert!(
            refusal(
                &serve,
                &headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]),
                true
            )
            .is_some()
        );
        serve.origins.allowed_origins = vec!["https://app.example".into()];
        let listed = [
            ("host", "127.0.0.1:8080"),
            ("origin", "https://app.example"),
        ];
        assert_eq!(refusal(&serve, &headers(&listed), true), None);
        serve.origins.allowed_hosts = vec!["gw.example".into()];
        assert!(refusal(&serve, &headers(&[("host", "127.0.0.1:8080")]), false).is_some());
        assert_eq!(
            refusal(&serve, &headers(&[("host", "gw.example")]), false),
            None
        );
    }
}
