//! The periodic sync scheduler.
//!
//! Every tick it (1) recovers registries left in SYNCING by a dead sync and (2) starts the syncs
//! that are due (`next_sync_at <= now()`), up to `concurrency` at once in this process. A
//! successful sync schedules the next one an interval later; a failed one schedules a retry with
//! exponential backoff capped at the interval (`store::error_backoff`).
//!
//! Several gateway processes may share the database: a due registry is claimed by taking its
//! advisory lock and moving it to SYNCING atomically (`SyncService::start`); a process that loses
//! the race gets CONFLICT and moves on. The due query skips rows that another process has locked
//! (`FOR UPDATE SKIP LOCKED`).

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::progress::NoProgress;
use super::{SyncService, store};
use crate::error::{AppError, AppResult};

#[derive(QueryableByName)]
struct Due {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// What one tick did.
#[derive(Debug, Default, Clone)]
pub struct Tick {
    /// Registries recovered from an abandoned SYNCING state.
    pub recovered: Vec<Uuid>,
    /// Syncs started, with their handles' registry ids.
    pub started: Vec<Uuid>,
}

impl SyncService {
    /// Recovers registries left in SYNCING by a sync that died (its advisory lock is free).
    pub async fn recover_abandoned(&self) -> AppResult<Vec<Uuid>> {
        let mut conn = store::connect(
            &self.inner.database_url,
            self.inner.settings.statement_timeout_ms,
        )
        .await?;
        store::recover_abandoned(&mut conn).await
    }

    /// One scheduler pass: recover abandoned syncs, then start due ones. Returns the handles of
    /// the started syncs.
    pub async fn tick(&self) -> AppResult<(Tick, Vec<JoinHandle<super::SyncOutcome>>)> {
        let mut tick = Tick::default();
        let any_syncing = {
            let mut conn = crate::db::conn(&self.inner.pool).await?;
            use dataloaders::enums::RegistryStatus;
            use dataloaders::schema::registries;
            registries::table
                .filter(registries::status.eq(RegistryStatus::Syncing))
                .select(registries::id)
                .first::<Uuid>(&mut conn)
                .await
                .optional()?
                .is_some()
        };
        if any_syncing {
            tick.recovered = self.recover_abandoned().await?;
        }
        let free = self
            .inner
            .settings
            .concurrency
            .saturating_sub(self.in_flight());
        let mut handles = Vec::new();
        if free == 0 {
            return Ok((tick, handles));
        }
        let due: Vec<Due> = {
            let mut conn = crate::db::conn(&self.inner.pool).await?;
            diesel::sql_query(
                "SELECT id FROM registries \
                  WHERE status <> 'syncing' AND archived_at IS NULL \
                    AND (next_sync_at IS NULL OR next_sync_at <= now()) \
                  ORDER BY next_sync_at NULLS FIRST, id \
                  LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .bind::<diesel::sql_types::BigInt, _>(free as i64)
            .load(&mut conn)
            .await?
        };
        for Due { id } in due {
            match self.start_inner(id, None, Arc::new(NoProgress), true).await {
                Ok((_, handle)) => {
                    tick.started.push(id);
                    handles.push(handle);
                }
                // Another process claimed it, or it was deleted meanwhile.
                Err(AppError::Conflict(_)) | Err(AppError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(registry = %id, error = %e.public_message(), "scheduler: could not start a sync")
                }
            }
        }
        Ok((tick, handles))
    }

    /// Runs the scheduler until `shutdown`: a recovery pass at once, then a tick every
    /// `tick_seconds`.
    pub fn spawn_scheduler(&self) -> JoinHandle<()> {
        let service = self.clone();
        let mut stop = self.shutdown_signal();
        let every = Duration::from_secs(self.inner.settings.tick_seconds.max(1));
        tokio::spawn(async move {
            tracing::info!(tick_seconds = every.as_secs(), "sync scheduler started");
            loop {
                if *stop.borrow() {
                    break;
                }
                if let Err(e) = service.tick().await {
                    tracing::warn!(error = %e.public_message(), "scheduler tick failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => break,
                }
            }
            tracing::info!("sync scheduler stopped");
        })
    }
}
