//! Connection pool and migrations.

pub mod statements;

use std::time::Duration;

use std::sync::Arc;

use dataloaders::{DbConn, DbPool, QueryStats};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Hook, HookError, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use crate::config::DatabaseConfig;
use crate::error::AppError;

tokio::task_local! {
    /// The statement counter of the request being served: connections taken with [`conn`] while
    /// it runs count their statements there, writes included (`x-hivegraph-debug: sql`).
    static REQUEST_STATS: Arc<QueryStats>;
}

/// Runs `fut` with the connections it takes through [`conn`] counted against `stats`.
pub async fn counted<F: std::future::Future>(stats: Arc<QueryStats>, fut: F) -> F::Output {
    REQUEST_STATS.scope(stats, fut).await
}

/// No connection could be taken from the pool: the database is down, or every connection is
/// busy (`dataloaders::ReadError::Overloaded`).
#[derive(Debug)]
pub struct NoConnection(dataloaders::ReadError);

impl std::fmt::Display for NoConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no database connection: {}", self.0)
    }
}

impl std::error::Error for NoConnection {}

impl From<NoConnection> for AppError {
    /// `UPSTREAM_UNAVAILABLE` or `OVERLOADED`, logged at a bounded rate ([`AppError::database`]).
    fn from(e: NoConnection) -> Self {
        AppError::database(e.0)
    }
}

/// A pooled connection, its statements counted against the current request (if any): the one
/// way the gateway takes a connection outside the read loaders.
pub async fn conn(pool: &DbPool) -> Result<DbConn, NoConnection> {
    use diesel_async::AsyncConnection as _;
    let mut c = pool.get().await.map_err(|e| {
        dataloaders::pool::note_pool_error(&e);
        NoConnection(dataloaders::ReadError::from_pool(&e))
    })?;
    match REQUEST_STATS.try_with(Arc::clone) {
        Ok(stats) => c.set_instrumentation(dataloaders::pool::counting(stats)),
        Err(_) => c.set_instrumentation(dataloaders::pool::uncounted()),
    }
    Ok(c)
}

/// The migrations in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Builds the pool. Connections set `statement_timeout` so that no statement outlives a request.
pub fn pool(cfg: &DatabaseConfig) -> anyhow::Result<DbPool> {
    statements::install();
    let statement_timeout = cfg.statement_timeout_ms;
    let mut manager_config = ManagerConfig::default();
    manager_config.custom_setup = Box::new(move |url| {
        let url = url.to_string();
        async move {
            use diesel_async::{AsyncConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(&url).await?;
            // The gateway's tables are small and hot: its reads are index probes into pages in
            // memory, which PostgreSQL's default random_page_cost (4, a spinning disk's) prices
            // as if each were a seek, so that it picks bitmap scans and sorts over the index
            // order of a short page (1.1 is the usual value for memory and SSDs).
            conn.batch_execute(&format!(
                "SET statement_timeout = {statement_timeout}; SET application_name = 'hivegraph'; \
                 SET random_page_cost = 1.1"
            ))
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            Ok(conn)
        }
        .boxed()
    });
    // On reuse a connection is checked for a closed socket (`Fast`); one that sat idle for a
    // while is also asked `SELECT 1` (`verify_idle`).
    manager_config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        cfg.url(),
        manager_config,
    );
    let wait = Duration::from_millis(cfg.wait_ms);
    Ok(Pool::builder(manager)
        .pre_recycle(Hook::async_fn(|conn, metrics| {
            verify_idle(conn, metrics).boxed()
        }))
        .max_size(cfg.pool_size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?)
}

/// How long a connection may sit in the pool before its reuse asks the server whether it is
/// still there.
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(2);

/// Asks a connection that sat idle for [`VERIFY_AFTER_IDLE`] whether the server still answers
/// (a restarted or failed-over server leaves every idle connection dead); the pool drops it if
/// not. A connection used moments ago is not asked: a nested read takes one per level, and
/// asking each cost about 4 % of the read's CPU (gateway and PostgreSQL, measured side by side);
/// a connection that died since is caught when its socket closes (`RecyclingMethod::Fast`), or
/// by its next statement, which then answers `UPSTREAM_UNAVAILABLE`. The check runs after the
/// previous request's statement counter is detached, so that it is counted against nobody.
async fn verify_idle(
    conn: &mut AsyncPgConnection,
    metrics: &deadpool::managed::Metrics,
) -> Result<(), HookError> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    if metrics.last_used() < VERIFY_AFTER_IDLE {
        return Ok(());
    }
    conn.set_instrumentation(dataloaders::pool::uncounted());
    conn.batch_execute("SELECT 1")
        .await
        .map_err(|e| HookError::message(format!("idle connection failed its check: {e}")))
}

/// Every PostgreSQL advisory lock the gateway takes, in one place so that keys never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryLock {
    /// Serialises migrations of several processes on one database (session lock).
    Migrations,
    /// One retention run at a time across replicas (session lock).
    Retention,
    /// One metrics rollup at a time across replicas (transaction lock).
    Rollup,
    /// One sync of a registry at a time (session lock on the sync's own connection).
    Sync(uuid::Uuid),
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

impl AdvisoryLock {
    /// The lock's key.
    pub fn key(self) -> i64 {
        match self {
            AdvisoryLock::Migrations => 0x0068_6976_656d_6967, // "hivemig"
            AdvisoryLock::Retention => 0x6869_7665_7265_7431,  // "hiveret1"
            AdvisoryLock::Rollup => 0x6869_7665_726f_6c6c,     // "hiveroll"
            AdvisoryLock::Sync(id) => {
                let (hi, lo) = id.as_u64_pair();
                (hi ^ lo ^ 0x4856_5359_4e43_0001) as i64
            }
        }
    }

    async fn ask(
        self,
        conn: &mut AsyncPgConnection,
        function: &str,
    ) -> Result<bool, diesel::result::Error> {
        use diesel_async::RunQueryDsl;
        let r: Locked = diesel::sql_query(format!("SELECT {function}($1) AS locked"))
            .bind::<diesel::sql_types::BigInt, _>(self.key())
            .get_result(conn)
            .await?;
        Ok(r.locked)
    }

    /// Tries to take the lock for this session; false when another session holds it.
    pub async fn try_session(
        self,
        conn: &mut AsyncPgConnection,
    ) -> Result<bool, diesel::result::Error> {
        self.ask(conn, "pg_try_advisory_lock").await
    }

    /// Releases the session lock (it also ends with the connection).
    pub async fn release_session(
        self,
        conn: &mut AsyncPgConnection,
    ) -> Result<bool, diesel::result::Error> {
        self.ask(conn, "pg_advisory_unlock").await
    }

    /// Tries to take the lock until the current transaction ends.
    pub async fn try_transaction(
        self,
        conn: &mut AsyncPgConnection,
    ) -> Result<bool, diesel::result::Error> {
        self.ask(conn, "pg_try_advisory_xact_lock").await
    }
}

/// Applies pending migrations; returns the versions applied. Several gateway processes starting
/// at once on one database take turns (a session advisory lock): the first applies, the others
/// then find nothing pending.
pub async fn run_migrations(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        use diesel::{Connection, RunQueryDsl};
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
        diesel::sql_query(format!(
            "SELECT pg_advisory_lock({})",
            AdvisoryLock::Migrations.key()
        ))
        .execute(&mut conn)
        .map_err(|e| anyhow::anyhow!("could not take the migration lock: {e}"))?;
        let applied: anyhow::Result<Vec<String>> = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.into_iter().map(|v| v.to_string()).collect())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        // Closing the connection would release it too; say so explicitly.
        let _ = diesel::sql_query(format!(
            "SELECT pg_advisory_unlock({})",
            AdvisoryLock::Migrations.key()
        ))
        .execute(&mut conn);
        applied
    })
    .await?
}

/// Whether every embedded migration has been applied.
pub async fn migrations_current(pool: &DbPool) -> bool {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let Ok(mut conn) = conn(pool).await else {
        return false;
    };
    let Ok(rows) = diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
        .load::<Version>(&mut conn)
        .await
    else {
        return false;
    };
    let applied: std::collections::HashSet<String> = rows.into_iter().map(|v| v.version).collect();
    diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map(|all| {
            all.iter()
                .map(|m| m.name().version().to_string())
                .all(|v| applied.contains(&v))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_lock_keys_differ() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let keys = [
            AdvisoryLock::Migrations.key(),
            AdvisoryLock::Retention.key(),
            AdvisoryLock::Rollup.key(),
            AdvisoryLock::Sync(a).key(),
            AdvisoryLock::Sync(b).key(),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        assert_eq!(AdvisoryLock::Sync(a).key(), AdvisoryLock::Sync(a).key());
    }
}
