//! Typed errors, mapped to GraphQL `extensions.code` at the boundary.
//!
//! Internal failures are logged with their detail and reach clients only as
//! `INTERNAL_SERVER_ERROR` with a request-independent message.
//!
//! `AppError` deliberately does not implement `Display`: async-graphql converts every `Display`
//! type into an error carrying its text and no code, so leaving it out makes `?` in a resolver go
//! through our own conversion, which sets the code and masks internal detail.

use async_graphql::ErrorExtensions;

/// Every `extensions.code` the gateway sends (listed in the README's "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The input is invalid; `extensions.field` names it.
    BadUserInput,
    /// The HTTP request is not an acceptable GraphQL request (no document, wrong method, too large, CSRF-prone, a subscription over HTTP).
    BadRequest,
    /// The object does not exist, or the caller may not know that it does.
    NotFound,
    /// No valid credentials.
    Unauthenticated,
    /// The caller may not do this.
    Forbidden,
    /// The object's state does not allow the operation.
    Conflict,
    /// A service the gateway depends on (database, cluster, registry) is unavailable.
    UpstreamUnavailable,
    /// Every database connection is busy while the database is healthy; `retryAfterSeconds`
    /// says when to try again.
    Overloaded,
    /// The operation is over a depth, complexity, alias or selection limit.
    QueryTooComplex,
    /// Introspection is off (`HIVEGRAPH_INTROSPECTION`).
    IntrospectionDisabled,
    /// The caller's query-cost budget is spent; `retryAfterSeconds` says when it is back.
    RateLimited,
    /// The socket already holds its most subscriptions.
    TooManySubscriptions,
    /// A persisted-query hash the gateway does not know.
    PersistedQueryNotFound,
    /// Not one of the persisted operations the gateway is limited to.
    OperationNotAllowed,
    /// The request took longer than its time limit.
    Timeout,
    /// The document does not parse.
    GraphqlParseFailed,
    /// The document does not validate against the schema.
    GraphqlValidationFailed,
    /// A bug or unexpected failure; the detail is logged, never sent.
    InternalServerError,
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 18] = [
        Code::BadUserInput,
        Code::BadRequest,
        Code::NotFound,
        Code::Unauthenticated,
        Code::Forbidden,
        Code::Conflict,
        Code::UpstreamUnavailable,
        Code::Overloaded,
        Code::QueryTooComplex,
        Code::IntrospectionDisabled,
        Code::RateLimited,
        Code::TooManySubscriptions,
        Code::PersistedQueryNotFound,
        Code::OperationNotAllowed,
        Code::Timeout,
        Code::GraphqlParseFailed,
        Code::GraphqlValidationFailed,
        Code::InternalServerError,
    ];

    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::BadRequest => "BAD_REQUEST",
            Code::NotFound => "NOT_FOUND",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::Conflict => "CONFLICT",
            Code::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Code::Overloaded => "OVERLOADED",
            Code::QueryTooComplex => "QUERY_TOO_COMPLEX",
            Code::IntrospectionDisabled => "INTROSPECTION_DISABLED",
            Code::RateLimited => "RATE_LIMITED",
            Code::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            Code::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Code::OperationNotAllowed => "OPERATION_NOT_ALLOWED",
            Code::Timeout => "TIMEOUT",
            Code::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            Code::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            Code::InternalServerError => "INTERNAL_SERVER_ERROR",
        }
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A GraphQL error carrying `code`, and the offending input `field` when given: the one way
/// errors are built outside resolvers (limits, policies, persisted queries, websockets).
pub fn graphql_error(
    code: Code,
    message: impl Into<String>,
    field: Option<&str>,
) -> async_graphql::ServerError {
    let mut e = async_graphql::ServerError::new(message, None);
    set_code(&mut e, code);
    if let Some(f) = field {
        e.extensions
            .get_or_insert_with(Default::default)
            .set("field", f);
    }
    e
}

/// Sets (or replaces) the code of an error.
pub fn set_code(e: &mut async_graphql::ServerError, code: Code) {
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
}

/// Whether an error already carries a code.
pub fn has_code(e: &async_graphql::ServerError) -> bool {
    e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

/// An error a resolver can return.
#[derive(Debug, Clone)]
pub enum AppError {
    /// The input is invalid; `field` names the offending input field.
    BadInput { field: String, message: String },
    /// Valid input the gateway refuses for a named reason (`extensions.reason`), answered as
    /// `BAD_USER_INPUT` like [`AppError::BadInput`].
    Refused {
        field: String,
        reason: &'static str,
        message: String,
    },
    /// The object does not exist (or the caller may not know that it exists).
    NotFound(&'static str),
    /// The object exists but the caller may not see it: answered exactly like [`AppError::NotFound`]
    /// (so that existence does not leak), but audited as a denial.
    Hidden(&'static str),
    /// The caller spent their query-cost budget; `retry_after_secs` says when enough is back.
    RateLimited { retry_after_secs: u64, limit: u64 },
    /// The request carries no valid credentials.
    Unauthenticated,
    /// The caller may not do this.
    Forbidden(String),
    /// The object is not in a state that allows the operation.
    Conflict(String),
    /// A service the gateway depends on (database, cluster, registry) is unavailable.
    Unavailable(String),
    /// The gateway is saturated (every database connection busy) while its dependencies are
    /// healthy: retry after `retry_after_secs`.
    Overloaded { retry_after_secs: u64 },
    /// A bug or an unexpected failure. The detail is logged, never returned.
    Internal(std::sync::Arc<anyhow::Error>),
}

impl AppError {
    /// Whether this error is an authorization refusal (audited as `denied`).
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            AppError::Hidden(_) | AppError::Unauthenticated | AppError::Forbidden(_)
        )
    }

    /// Shorthand for a `BAD_USER_INPUT` error.
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::BadInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The message shown to clients.
    pub fn public_message(&self) -> String {
        match self {
            AppError::BadInput { message, .. } | AppError::Refused { message, .. } => {
                message.clone()
            }
            AppError::NotFound(what) | AppError::Hidden(what) => format!("{what} not found"),
            AppError::RateLimited {
                retry_after_secs, ..
            } => format!("rate limit exceeded; retry in {retry_after_secs} s"),
            AppError::Overloaded { retry_after_secs } => format!(
                "the gateway is overloaded (every database connection is busy); retry in \
                 {retry_after_secs} s"
            ),
            AppError::Unauthenticated => "authentication required".into(),
            AppError::Forbidden(m) | AppError::Conflict(m) | AppError::Unavailable(m) => m.clone(),
            AppError::Internal(_) => "internal error".into(),
        }
    }

    /// The `extensions.code` of this error.
    pub fn code(&self) -> Code {
        match self {
            AppError::BadInput { .. } | AppError::Refused { .. } => Code::BadUserInput,
            AppError::NotFound(_) | AppError::Hidden(_) => Code::NotFound,
            AppError::RateLimited { .. } => Code::RateLimited,
            AppError::Unauthenticated => Code::Unauthenticated,
            AppError::Forbidden(_) => Code::Forbidden,
            AppError::Conflict(_) => Code::Conflict,
            AppError::Unavailable(_) => Code::UpstreamUnavailable,
            AppError::Overloaded { .. } => Code::Overloaded,
            AppError::Internal(_) => Code::InternalServerError,
        }
    }
}

/// When a client refused for overload should retry: the pool's wait is about a second.
pub const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;

/// Refusals for a dead database and for a saturated pool, each logged at most once a second with
/// the number of refusals since the previous line (a burst of 2,000 refusals is one line, not
/// 2,000).
static DB_DOWN_LOG: crate::log_gate::LogGate = crate::log_gate::LogGate::new();
static OVERLOAD_LOG: crate::log_gate::LogGate = crate::log_gate::LogGate::new();

impl AppError {
    /// The error of a database read or connection that failed, logged at a bounded rate: the
    /// one mapping from pool failures to `OVERLOADED` or `UPSTREAM_UNAVAILABLE`.
    pub fn database(e: dataloaders::ReadError) -> Self {
        match e {
            dataloaders::ReadError::Unavailable(detail) => {
                if let Some(count) = DB_DOWN_LOG.admit() {
                    tracing::warn!(%detail, count, "database unavailable");
                }
                AppError::Unavailable("the database is unavailable; try again shortly".into())
            }
            dataloaders::ReadError::Overloaded(detail) => {
                if let Some(count) = OVERLOAD_LOG.admit() {
                    tracing::warn!(%detail, count, "refused: every database connection is busy");
                }
                AppError::Overloaded {
                    retry_after_secs: OVERLOAD_RETRY_AFTER_SECS,
                }
            }
            dataloaders::ReadError::Query(detail) => {
                AppError::Internal(std::sync::Arc::new(anyhow::anyhow!(detail)))
            }
        }
    }
}

impl From<dataloaders::ReadError> for AppError {
    fn from(e: dataloaders::ReadError) -> Self {
        match e {
            e
            @ (dataloaders::ReadError::Unavailable(_) | dataloaders::ReadError::Overloaded(_)) => {
                AppError::database(e)
            }
            dataloaders::ReadError::Query(detail) => {
                AppError::Internal(std::sync::Arc::new(anyhow::anyhow!(detail)))
            }
        }
    }
}

impl From<diesel::result::Error> for AppError {
    /// `UPSTREAM_UNAVAILABLE` for a statement that could not reach the server (its connection
    /// closed under it), `INTERNAL_SERVER_ERROR` for any other failure.
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _) => {
                AppError::database(e.into())
            }
            e => AppError::Internal(std::sync::Arc::new(e.into())),
        }
    }
}

impl From<std::sync::Arc<dataloaders::ReadError>> for AppError {
    fn from(e: std::sync::Arc<dataloaders::ReadError>) -> Self {
        AppError::from((*e).clone())
    }
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        if let AppError::Internal(source) = self {
            tracing::error!(error = ?source, "internal error");
        }
        async_graphql::Error::new(self.public_message()).extend_with(|_, ext| {
            ext.set("code", self.code().as_str());
            if let AppError::BadInput { field, .. } = self {
                ext.set("field", field.as_str());
            }
            if let AppError::Refused { field, reason, .. } = self {
                ext.set("field", field.as_str());
                ext.set("reason", *reason);
            }
            if let AppError::RateLimited {
                retry_after_secs,
                limit,
            } = self
            {
                ext.set("retryAfterSeconds", *retry_after_secs);
                ext.set("limit", *limit);
            }
            if let AppError::Overloaded { retry_after_secs } = self {
                ext.set("retryAfterSeconds", *retry_after_secs);
            }
        })
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        e.extend()
    }
}

/// Result type of resolvers and services.
pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented_and_spelled_for_clients() {
        let readme = include_str!("../README.md");
        let errors = &readme[readme
            .find("## Errors")
            .expect("README has an Errors section")..];
        for code in Code::ALL {
            let s = code.as_str();
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
            assert!(
                errors.contains(&format!("`{s}`")),
                "README does not list {s}"
            );
        }
    }

    #[test]
    fn app_errors_map_to_their_codes() {
        let cases = [
            (AppError::bad_input("x", "y"), Code::BadUserInput),
            (AppError::NotFound("thing"), Code::NotFound),
            (AppError::Hidden("thing"), Code::NotFound),
            (AppError::Unauthenticated, Code::Unauthenticated),
            (AppError::Forbidden("no".into()), Code::Forbidden),
            (AppError::Conflict("busy".into()), Code::Conflict),
            (
                AppError::Unavailable("down".into()),
                Code::UpstreamUnavailable,
            ),
            (
                AppError::RateLimited {
                    retry_after_secs: 3,
                    limit: 10,
                },
                Code::RateLimited,
            ),
            (
                AppError::Overloaded {
                    retry_after_secs: 1,
                },
                Code::Overloaded,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code);
            let ext = e.extend().extensions.expect("extensions");
            assert_eq!(
                ext.get("code"),
                Some(&async_graphql::Value::from(code.as_str()))
            );
        }
        let e = graphql_error(Code::QueryTooComplex, "deep", Some("q"));
        let ext = e.extensions.as_ref().expect("extensions");
        assert_eq!(
            ext.get("code"),
            Some(&async_graphql::Value::from("QUERY_TOO_COMPLEX"))
        );
        assert_eq!(ext.get("field"), Some(&async_graphql::Value::from("q")));
        assert!(has_code(&e));
    }
}
