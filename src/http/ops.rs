//! Operational endpoints.

use crate::error::Code;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;

/// Set when a planned shutdown begins: `/readyz` answers 503 from then on, so that load
/// balancers stop sending new requests while in-flight ones finish.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// The process is shutting down.
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Liveness: the process serves requests.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Readiness: not shutting down, the database answers and every migration is applied.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_string(),
        );
    }
    let pool = state.services.pool.clone();
    let check = async move {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = crate::db::conn(&pool)
            .await
            .map_err(|_| "database unreachable")?;
        conn.batch_execute("SELECT 1")
            .await
            .map_err(|_| "database unreachable")?;
        drop(conn);
        if !crate::db::migrations_current(&pool).await {
            return Err("migrations not applied");
        }
        Ok::<_, &str>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database check timed out\n".to_string(),
        ),
    }
}

/// Prometheus metrics; behind `Authorization: Bearer <HIVEGRAPH_METRICS_TOKEN>` when set.
pub async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(token) = &state.services.config.serve.metrics_token {
        use secrecy::ExposeSecret;
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let expected = token.expose_secret().as_bytes();
        let ok = sent.is_some_and(|s| {
            use sha2::Digest;
            // Compared as digests: no timing hint about the token's prefix.
            sha2::Sha256::digest(s.as_bytes()) == sha2::Sha256::digest(expected)
        });
        if !ok {
            let mut resp = super::csrf::refuse_with_code(
                StatusCode::UNAUTHORIZED,
                "GET /metrics needs the metrics bearer token",
                Code::Unauthenticated,
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The SDL, served when introspection is (`HIVEGRAPH_INTROSPECTION`; on in dev mode only).
pub async fn schema_sdl(State(state): State<AppState>) -> axum::response::Response {
    let serve = &state.services.config.serve;
    if !serve.limits.introspection(serve.mode) {
        return super::csrf::refuse_with_code(
            StatusCode::NOT_FOUND,
            "the schema is not published: introspection is disabled on this gateway",
            Code::IntrospectionDisabled,
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        crate::graphql::print_sdl(&state.schema),
    )
        .into_response()
}
