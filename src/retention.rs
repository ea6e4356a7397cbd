//! Retention jobs (shared/DATA-MODEL.md, "Data Retention"):
//!
//! | data                                              | kept        |
//! |---------------------------------------------------|-------------|
//! | deployment logs (`deployment_logs`)               | 30 days     |
//! | audit log (`audit_log`)                           | 1 year      |
//! | configuration history (`deployments` parameters, steps and rollback info; `instances.configuration`) | forever: never deleted |
//!
//! Monitoring metrics and their rollups have their own jobs (not here).
//!
//! Safe on several replicas: a run holds a PostgreSQL advisory lock ([`AdvisoryLock::Retention`]) for its whole
//! duration; a replica that cannot take it skips the run. Rows go in batches of [`BATCH`], so that
//! no statement runs long or holds many locks. The clock is injected, so tests can run the job
//! "a year later".

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Timestamptz};
use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;

use dataloaders::DbPool;

use crate::clock::Clock;
use crate::db::AdvisoryLock;

/// Rows deleted per statement.
pub const BATCH: i64 = 5_000;
/// How often the job runs in `serve`.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// False when another replica held the lock (nothing was done).
    pub ran: bool,
    /// Deployment log lines deleted (older than 30 days).
    pub deployment_logs: u64,
    /// Audit records deleted (older than 1 year).
    pub audit_records: u64,
}

#[derive(QueryableByName)]
struct Deleted {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Deletes in batches until nothing older than the cut-off is left.
async fn purge(
    conn: &mut diesel_async::AsyncPgConnection,
    sql: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    loop {
        let d: Deleted = sql_query(sql)
            .bind::<Timestamptz, _>(now)
            .bind::<BigInt, _>(BATCH)
            .get_result(conn)
            .await?;
        total += d.n as u64;
        if d.n < BATCH {
            return Ok(total);
        }
    }
}

/// Runs the retention jobs once, as of `now`.
pub async fn run_once(pool: &DbPool, now: DateTime<Utc>) -> anyhow::Result<RetentionReport> {
    let mut conn = crate::db::conn(pool).await?;
    if !AdvisoryLock::Retention.try_session(&mut conn).await? {
        return Ok(RetentionReport::default());
    }
    let result = async {
        let deployment_logs = purge(
            &mut conn,
            "WITH gone AS (DELETE FROM deployment_logs WHERE id IN ( \
               SELECT id FROM deployment_logs WHERE logged_at < $1 - interval '30 days' LIMIT $2) \
             RETURNING 1) SELECT count(*) AS n FROM gone",
            now,
        )
        .await?;
        let audit_records = purge(
            &mut conn,
            "WITH gone AS (DELETE FROM audit_log WHERE id IN ( \
               SELECT id FROM audit_log WHERE at < $1 - interval '1 year' LIMIT $2) \
             RETURNING 1) SELECT count(*) AS n FROM gone",
            now,
        )
        .await?;
        anyhow::Ok(RetentionReport {
            ran: true,
            deployment_logs,
            audit_records,
        })
    }
    .await;
    // Always give the lock back: the connection returns to the pool.
    let _ = AdvisoryLock::Retention.release_session(&mut conn).await;
    result
}

/// Runs the retention jobs every [`INTERVAL`] (the first run shortly after start).
pub fn spawn(pool: DbPool, clock: Arc<dyn Clock>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tick.tick().await;
            match run_once(&pool, clock.now()).await {
                Ok(r) if r.ran => tracing::info!(
                    deployment_logs = r.deployment_logs,
                    audit_records = r.audit_records,
                    "retention: expired rows deleted"
                ),
                Ok(_) => tracing::debug!("retention: another replica is running it"),
                Err(e) => {
                    tracing::warn!(error = %e, "retention run failed; retrying next interval")
                }
            }
        }
    })
}
