//! Typed errors, mapped to GraphQL `extensions.code` at the boundary.
//!
//! Internal failures are logged with their detail and reach clients only as
//! `INTERNAL_SERVER_ERROR` with a request-independent message.
//!
//! `AppError` deliberately does not implement `Display`: async-graphql converts every `Display`
//! type into an error carrying its text and no code, so leaving it out makes `?` in a resolver go
//! through our own conversion, which sets the code and masks internal detail.

use async_graphql::ErrorExtensions;

/// An error a resolver can return.
#[derive(Debug, Clone)]
pub enum AppError {
    /// The input is invalid; `field` names the offending input field.
    BadInput { field: String, message: String },
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
            AppError::BadInput { message, .. } => message.clone(),
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
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadInput { .. } => "BAD_USER_INPUT",
            AppError::NotFound(_) | AppError::Hidden(_) => "NOT_FOUND",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::Unauthenticated => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::Conflict(_) => "CONFLICT",
            AppError::Unavailable(_) => "UPSTREAM_UNAVAILABLE",
            AppError::Overloaded { .. } => OVERLOADED,
            AppError::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }
}

/// The code of [`AppError::Overloaded`].
pub const OVERLOADED: &str = "OVERLOADED";

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

impl From<dataloaders::pool::PoolError> for AppError {
    fn from(e: dataloaders::pool::PoolError) -> Self {
        AppError::database(dataloaders::ReadError::from_pool(&e))
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
    fn from(e: diesel::result::Error) -> Self {
        AppError::Internal(std::sync::Arc::new(e.into()))
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
            ext.set("code", self.code());
            if let AppError::BadInput { field, .. } = self {
                ext.set("field", field.as_str());
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
