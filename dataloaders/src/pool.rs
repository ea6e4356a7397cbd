//! The connection pool, and per-request statement counting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::AsyncConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};

use crate::ReadError;

/// The shared pool of PostgreSQL connections.
pub type DbPool = Pool<AsyncPgConnection>;
/// One pooled connection.
pub type DbConn = Object<AsyncPgConnection>;

/// Counts the SQL statements one request issues. Shared by every connection the request uses.
#[derive(Debug, Default)]
pub struct QueryStats {
    statements: AtomicU64,
}

impl QueryStats {
    /// The number of statements started so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

struct CountStatements(Arc<QueryStats>);

impl Instrumentation for CountStatements {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { .. } = event {
            self.0.statements.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The read side of one request: a pool plus the request's statement counter.
#[derive(Clone)]
pub struct Reader {
    pool: DbPool,
    stats: Arc<QueryStats>,
}

impl Reader {
    /// A reader with a fresh statement counter.
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            stats: Arc::default(),
        }
    }

    /// The statement counter of this reader.
    pub fn stats(&self) -> Arc<QueryStats> {
        self.stats.clone()
    }

    /// The pool behind this reader.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Takes a connection whose statements are counted against this reader.
    pub async fn conn(&self) -> Result<DbConn, ReadError> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        conn.set_instrumentation(CountStatements(self.stats.clone()));
        Ok(conn)
    }
}

/// Instrumentation that records nothing: connections carry it while idle in the pool.
pub struct NoInstrumentation;

impl Instrumentation for NoInstrumentation {
    fn on_connection_event(&mut self, _event: InstrumentationEvent<'_>) {}
}
