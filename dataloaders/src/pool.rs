//! The connection pool, and per-request statement counting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::AsyncConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};

use crate::ReadError;

/// The shared pool of PostgreSQL connections.
pub type DbPool = Pool<AsyncPgConnection>;
/// One pooled connection.
pub type DbConn = Object<AsyncPgConnection>;
/// Why no connection could be taken from the pool.
pub type PoolError = diesel_async::pooled_connection::deadpool::PoolError;

/// Whether a pool error means "every connection is busy" rather than "the database is down":
/// the wait for a free slot ran out. A dead database fails connection creation instead (an error
/// from the backend, or the create timeout), so this is the one place that tells overload from
/// outage.
pub fn is_saturated(e: &PoolError) -> bool {
    matches!(
        e,
        deadpool::managed::PoolError::Timeout(deadpool::managed::TimeoutType::Wait)
    )
}

/// Counts the SQL statements one request issues. Shared by every connection the request uses.
#[derive(Debug, Default)]
pub struct QueryStats {
    statements: AtomicU64,
    /// Whether the text of each statement is kept (see [`QueryStats::record_statements`]).
    recording: AtomicBool,
    log: Mutex<Vec<String>>,
}

/// How much of a statement's text the statement log keeps.
const LOGGED_STATEMENT_CHARS: usize = 300;

/// A statement's text on one line, without bind values, a long select list shortened to `…`,
/// and cut to [`LOGGED_STATEMENT_CHARS`].
fn shorten(text: &str) -> String {
    let sql = text.split(" -- binds:").next().unwrap_or_default();
    let mut one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(rest) = one_line.strip_prefix("SELECT ")
        && let Some(from) = rest.find(" FROM ")
        && from > 40
    {
        one_line = format!("SELECT …{}", &rest[from..]);
    }
    one_line.chars().take(LOGGED_STATEMENT_CHARS).collect()
}

impl QueryStats {
    /// The number of statements started so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// From now on, keep the (shortened) text of every statement, for developers' diagnostics.
    pub fn record_statements(&self) {
        self.recording.store(true, Ordering::Relaxed);
    }

    /// The statements recorded since [`QueryStats::record_statements`], in start order, each on
    /// one line, shortened (see `shorten`), without bind values.
    pub fn statement_log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn started(&self, query: &dyn std::fmt::Display) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) {
            let short = shorten(&query.to_string());
            if let Ok(mut log) = self.log.lock() {
                log.push(short);
            }
        }
    }
}

/// Counts a request's statements, then passes every event on to the process's default
/// instrumentation (`diesel::connection::set_default_instrumentation`: latency metrics and
/// spans, see the gateway's `db::statements`).
struct CountStatements(Arc<QueryStats>, Option<Box<dyn Instrumentation>>);

impl Instrumentation for CountStatements {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = &event {
            self.0.started(query);
        }
        if let Some(inner) = &mut self.1 {
            inner.on_connection_event(event);
        }
    }
}

static WAIT_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// Waits for a pooled connection that timed out, since the process started.
pub fn wait_timeouts() -> u64 {
    WAIT_TIMEOUTS.load(Ordering::Relaxed)
}

/// Counts `e` in [`wait_timeouts`] when it is a wait timeout; call it where `pool.get()` fails.
pub fn note_pool_error(e: &diesel_async::pooled_connection::deadpool::PoolError) {
    use deadpool::managed::{PoolError, TimeoutType};
    if matches!(e, PoolError::Timeout(TimeoutType::Wait)) {
        WAIT_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The read side of one request: a pool, the request's statement counter, and the namespaces
/// whose instance data the caller may read.
#[derive(Clone)]
pub struct Reader {
    pool: DbPool,
    stats: Arc<QueryStats>,
    /// `None`: every namespace. `Some(list)`: only instances (and their operations, samples and
    /// logs) in these namespaces exist for this reader; every instance statement filters in SQL.
    namespaces: Option<Arc<Vec<String>>>,
}

impl Reader {
    /// A reader with a fresh statement counter that sees every namespace.
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            stats: Arc::default(),
            namespaces: None,
        }
    }

    /// A reader that sees the instance data of `namespaces` only (`None`: every namespace).
    pub fn scoped(pool: DbPool, namespaces: Option<Vec<String>>) -> Self {
        Self {
            pool,
            stats: Arc::default(),
            namespaces: namespaces.map(Arc::new),
        }
    }

    /// The namespaces this reader may see, as a SQL array bind (`None` binds NULL: all).
    pub fn namespaces(&self) -> Option<Vec<String>> {
        self.namespaces.as_ref().map(|n| n.as_ref().clone())
    }

    /// Whether this reader may see instance data of `namespace`.
    pub fn sees(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.iter().any(|x| x == namespace))
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
        let mut conn = self.pool.get().await.map_err(|e| {
            note_pool_error(&e);
            ReadError::from_pool(&e)
        })?;
        conn.set_instrumentation(CountStatements(
            self.stats.clone(),
            diesel::connection::get_default_instrumentation(),
        ));
        Ok(conn)
    }
}

/// Instrumentation that counts a connection's statements against `stats` (and logs them when
/// the request asked for its statement log).
pub fn counting(stats: Arc<QueryStats>) -> impl Instrumentation {
    CountStatements(stats, diesel::connection::get_default_instrumentation())
}

/// The process's default instrumentation (`diesel::connection::set_default_instrumentation`),
/// or none: what a connection carries when no request counts its statements.
pub fn uncounted() -> Box<dyn Instrumentation> {
    diesel::connection::get_default_instrumentation().unwrap_or_else(|| Box::new(NoInstrumentation))
}

/// Instrumentation that records nothing: connections carry it while idle in the pool.
pub struct NoInstrumentation;

impl Instrumentation for NoInstrumentation {
    fn on_connection_event(&mut self, _event: InstrumentationEvent<'_>) {}
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn statements_are_logged_short_and_without_binds() {
        let long = format!(
            "SELECT {} FROM \"servers\" WHERE (\"servers\".\"id\" = ANY($1)) -- binds: [[1]]",
            (0..30)
                .map(|i| format!("\"servers\".\"c{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_eq!(
            shorten(&long),
            "SELECT … FROM \"servers\" WHERE (\"servers\".\"id\" = ANY($1))"
        );
        assert_eq!(
            shorten("SELECT k.ord, s.*\n  FROM x"),
            "SELECT k.ord, s.* FROM x"
        );
        assert_eq!(shorten(&"x".repeat(1000)).chars().count(), 300);
    }
}
