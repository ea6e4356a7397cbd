//! hivegraph's read side: the diesel schema, row types, and the batched loaders that every
//! GraphQL resolver reads through.
//!
//! Each lookup has its own key type (`RegistryKey`, `ServersOfRegistry`, ...). A [`Reader`] answers
//! any batch of one key type with exactly one SQL statement, so a nested GraphQL query costs a
//! number of statements bounded by its depth, not by the number of rows it returns.

pub mod batch;
pub mod enums;
pub mod loaders;
pub mod models;
pub mod pool;
pub mod prepared;
pub mod reads;
pub mod schema;
pub mod search;
pub mod width;

pub use batch::PollGate;
pub use loaders::*;
pub use pool::{DbConn, DbPool, QueryStats, Reader};
pub use search::{ServerOrder, ServerPosition};
pub use width::Width;

/// Errors of the read side. Messages are for logs; the GraphQL layer masks them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// No connection could be taken from the pool because the database is unreachable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// No connection could be taken from the pool in time because every connection is busy
    /// (the database itself answers).
    #[error("database pool saturated: {0}")]
    Overloaded(String),
    /// A statement failed.
    #[error("query failed: {0}")]
    Query(String),
}

impl ReadError {
    /// The read error of a failure to take a pooled connection: [`ReadError::Overloaded`] when
    /// the pool is saturated ([`pool::is_saturated`]), [`ReadError::Unavailable`] otherwise.
    pub fn from_pool(e: &pool::PoolError) -> Self {
        if pool::is_saturated(e) {
            ReadError::Overloaded(e.to_string())
        } else {
            ReadError::Unavailable(e.to_string())
        }
    }
}

impl From<diesel::result::Error> for ReadError {
    /// A statement that could not reach the server (its connection closed or broke) is the
    /// database being unavailable, not a failed query.
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, info) => {
                ReadError::Unavailable(info.message().to_string())
            }
            e => ReadError::Query(e.to_string()),
        }
    }
}
