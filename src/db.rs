//! Connection pool and migrations.

pub mod statements;

use std::time::Duration;

use dataloaders::DbPool;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use crate::config::DatabaseConfig;

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
            conn.batch_execute(&format!(
                "SET statement_timeout = {statement_timeout}; SET application_name = 'hivegraph'"
            ))
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            Ok(conn)
        }
        .boxed()
    });
    // Check connections on reuse, after detaching the previous request's statement counter so
    // that the check is not counted against anybody.
    manager_config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
        async move {
            use diesel_async::{AsyncConnection, SimpleAsyncConnection};
            match diesel::connection::get_default_instrumentation() {
                Some(every) => conn.set_instrumentation(every),
                None => conn.set_instrumentation(dataloaders::pool::NoInstrumentation),
            }
            conn.batch_execute("SELECT 1").await
        }
        .boxed()
    }));
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        cfg.url(),
        manager_config,
    );
    let wait = Duration::from_millis(cfg.wait_ms);
    Ok(Pool::builder(manager)
        .max_size(cfg.pool_size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?)
}

/// The session advisory lock that serialises migrations of several processes on one database.
const MIGRATION_LOCK: i64 = 0x0068_6976_656d_6967; // "hivemig"

/// Applies pending migrations; returns the versions applied. Several gateway processes starting
/// at once on one database take turns (a session advisory lock): the first applies, the others
/// then find nothing pending.
pub async fn run_migrations(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        use diesel::{Connection, RunQueryDsl};
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .execute(&mut conn)
            .map_err(|e| anyhow::anyhow!("could not take the migration lock: {e}"))?;
        let applied: anyhow::Result<Vec<String>> = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.into_iter().map(|v| v.to_string()).collect())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        // Closing the connection would release it too; say so explicitly.
        let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
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
    let Ok(mut conn) = pool.get().await else {
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
