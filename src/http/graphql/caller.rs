//! Who is asking: the batch's size, the caller's credentials, and the namespaces they may see.

use super::*;

/// The refusal of a batch of no operations or of more than `HIVEGRAPH_MAX_BATCH`.
pub(super) fn refuse_batch(state: &AppState, batch: &BatchRequest) -> Option<Response> {
    let max = state.services.config.serve.limits.max_batch;
    let n = match batch {
        BatchRequest::Single(_) => 1,
        BatchRequest::Batch(v) => v.len(),
    };
    if n > max || n == 0 {
        state.metrics.reject("batch_too_large");
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            &format!("a batch may hold 1 to {max} operations; this one holds {n}"),
        ));
    }
    None
}

/// The caller and their namespace grants, loaded once per request (none for admins and
/// anonymous callers); the request's reader filters every instance statement by them.
pub(super) async fn identify(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(crate::auth::Principal, NamespaceAccess), Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.services.auth.authenticate(authorization).await {
        Ok(p) => p,
        Err(e) => {
            state.metrics.reject("unauthenticated");
            let mut resp = refuse_with_code(
                StatusCode::UNAUTHORIZED,
                &e.to_string(),
                Code::Unauthenticated,
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return Err(resp);
        }
    };
    match NamespaceAccess::load(&state.services.pool, &principal).await {
        Ok(access) => Ok((principal, access)),
        Err(e) => {
            state.metrics.reject("unavailable");
            Err(refuse_with_code(
                StatusCode::SERVICE_UNAVAILABLE,
                &e.public_message(),
                e.code(),
            ))
        }
    }
}
