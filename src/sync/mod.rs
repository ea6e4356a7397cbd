//! Registry sync: fetching registries and storing their servers.
//!
//! A sync of one registry:
//! 1. takes the registry's advisory lock on a connection of its own (`store::try_lock`); if another
//!    sync holds it, in this or any other gateway process, the trigger gets CONFLICT (it does not
//!    join the running sync: follow that one with the `registrySync` subscription);
//! 2. moves the registry to SYNCING and returns (the `syncRegistry` mutation answers here);
//! 3. in the background, reads the source (`fetch`) and normalises every entry (`normalize`),
//!    skipping malformed ones with a reason; a document's entries are normalised in chunks
//!    while earlier chunks are already being written (`formats::Entries`);
//! 4. stores everything in one transaction and moves the registry to ACTIVE (`store::commit`), or
//!    on any failure moves it to ERROR with a readable message and leaves its servers untouched
//!    (`store::fail`);
//! 5. drops the registry's cached server list and releases the lock.
//!
//! The scheduler (`scheduler`) runs due syncs periodically, retries ERROR registries with
//! exponential backoff, and recovers registries left in SYNCING by a crashed process.

pub mod cli;
pub mod duplicate_keys;
pub mod egress;
pub mod fetch;
pub mod formats;
pub mod http;
pub mod normalize;
pub mod plan;
pub mod progress;
pub mod report;
pub mod scheduler;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use dataloaders::DbPool;
use dataloaders::enums::RegistryStatus;
use dataloaders::models::RegistryRow;
use diesel_async::AsyncPgConnection;
use tokio::sync::{OwnedRwLockReadGuard, RwLock, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::audit::Actor;
use crate::config::{RegistryPolicy, SyncConfig};
use crate::error::{AppError, AppResult};
use crate::registries::store::open_auth;
use crate::secrets::Keyring;

pub use progress::{NoProgress, ProgressEvent, SyncProgress};
pub use report::{SkippedEntry, SyncMode, SyncReport};

/// The result of one finished sync.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub registry_id: Uuid,
    pub registry_name: String,
    /// ACTIVE on success, ERROR on failure (or SYNCING if the registry vanished meanwhile).
    pub status: RegistryStatus,
    pub server_count: i32,
    pub report: SyncReport,
}

struct Inner {
    pool: DbPool,
    keys: Arc<Keyring>,
    database_url: String,
    settings: SyncConfig,
    client: http::RegistryClient,
    caches: crate::cache::Caches,
    shutdown: watch::Sender<bool>,
    /// Each running sync holds a read guard; shutdown takes the write side to wait for them.
    running: Arc<RwLock<()>>,
    in_flight: AtomicUsize,
}

/// Runs and schedules registry syncs.
#[derive(Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
}

impl SyncService {
    /// A sync service over `pool`. Each sync also opens one connection of its own to
    /// `database_url`, which holds the registry's advisory lock.
    pub fn new(
        pool: DbPool,
        keys: Arc<Keyring>,
        database_url: &str,
        settings: SyncConfig,
        policy: &RegistryPolicy,
        caches: crate::cache::Caches,
    ) -> anyhow::Result<Self> {
        let client = http::RegistryClient::new(&settings, policy)?;
        let (shutdown, _) = watch::channel(false);
        Ok(SyncService {
            inner: Arc::new(Inner {
                pool,
                keys,
                database_url: database_url.to_string(),
                settings,
                client,
                caches,
                shutdown,
                running: Arc::new(RwLock::new(())),
                in_flight: AtomicUsize::new(0),
            }),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &SyncConfig {
        &self.inner.settings
    }

    /// Syncs running in this process.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Starts a sync of one registry and returns it in SYNCING; the sync continues in the
    /// background. CONFLICT when a sync of the registry is already running.
    pub async fn trigger(&self, id: Uuid, actor: &Actor) -> AppResult<RegistryRow> {
        let (row, _handle) = self.start(id, Some(actor), Arc::new(NoProgress)).await?;
        Ok(row)
    }

    /// Starts a sync and returns the registry in SYNCING plus a handle that yields the outcome.
    /// `actor` is recorded in the audit trail (None for the scheduler).
    pub async fn start(
        &self,
        id: Uuid,
        actor: Option<&Actor>,
        progress: Arc<dyn SyncProgress>,
    ) -> AppResult<(RegistryRow, JoinHandle<SyncOutcome>)> {
        self.start_inner(id, actor, progress, false).await
    }

    async fn start_inner(
        &self,
        id: Uuid,
        actor: Option<&Actor>,
        progress: Arc<dyn SyncProgress>,
        require_due: bool,
    ) -> AppResult<(RegistryRow, JoinHandle<SyncOutcome>)> {
        let inner = self.inner.clone();
        if *inner.shutdown.borrow() {
            return Err(AppError::Unavailable(
                "the gateway is shutting down; try again shortly".into(),
            ));
        }
        let guard: OwnedRwLockReadGuard<()> =
            inner.running.clone().try_read_owned().map_err(|_| {
                AppError::Unavailable("the gateway is shutting down; try again shortly".into())
            })?;
        let mut conn =
            store::connect(&inner.database_url, inner.settings.statement_timeout_ms).await?;
        if !store::try_lock(&mut conn, id).await? {
            let exists = {
                use diesel::prelude::*;
                use diesel_async::RunQueryDsl;
                dataloaders::schema::registries::table
                    .find(id)
                    .select(dataloaders::schema::registries::id)
                    .first::<Uuid>(&mut conn)
                    .await
                    .optional()?
                    .is_some()
            };
            return Err(if exists {
                AppError::Conflict(
                    "a sync of this registry is already running; follow it with the registrySync subscription".into(),
                )
            } else {
                AppError::NotFound("registry")
            });
        }
        // On error the connection drops, which releases the lock.
        let row = store::begin(&mut conn, id, actor, require_due).await?;
        inner.in_flight.fetch_add(1, Ordering::AcqRel);
        tracing::info!(registry = %id, name = %row.name, "sync started");
        let started_row = row.clone();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            let outcome = inner.clone().run(conn, started_row, progress).await;
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            outcome
        });
        Ok((row, handle))
    }

    /// Runs a sync to its end and returns the outcome (for the command line and tests).
    pub async fn sync_now(
        &self,
        id: Uuid,
        actor: Option<&Actor>,
        progress: Arc<dyn SyncProgress>,
    ) -> AppResult<SyncOutcome> {
        let (_, handle) = self.start(id, actor, progress).await?;
        handle
            .await
            .map_err(|e| AppError::Internal(Arc::new(anyhow::anyhow!("the sync task failed: {e}"))))
    }

    /// Stops starting syncs, interrupts running ones (they end in ERROR, due again at once) and
    /// waits up to `grace` for them to record that.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.inner.shutdown.send(true);
        if tokio::time::timeout(grace, self.inner.running.write())
            .await
            .is_err()
        {
            tracing::warn!(
                "sync: running syncs did not stop in time; they are recovered at the next start"
            );
        }
    }

    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
}

impl Inner {
    async fn run(
        self: Arc<Self>,
        mut conn: AsyncPgConnection,
        row: RegistryRow,
        progress: Arc<dyn SyncProgress>,
    ) -> SyncOutcome {
        let id = row.id;
        let t0 = Instant::now();
        let mut report = SyncReport {
            started_at: Some(Utc::now()),
            ..SyncReport::default()
        };
        let result: Result<store::Totals, (String, bool)> = async {
            let auth = open_auth(&self.keys, &row).map_err(|e| (e.public_message(), false))?;
            let mut reader = fetch::Reader {
                client: &self.client,
                auth: auth.as_ref(),
                cancel: self.shutdown.subscribe(),
                progress: progress.as_ref(),
                max_pages: self.settings.max_pages,
            };
            let fetched = reader
                .read(&row)
                .await
                .map_err(|f| (f.message, f.cancelled))?;
            drop(reader);
            tracing::debug!(registry = %id, entries = fetched.entries.len(), ms = t0.elapsed().as_millis() as u64, "sync: read");
            report.format = Some(fetched.format);
            report.mode = fetched.mode;
            report.pages = fetched.pages as i32;
            report.bytes = fetched.bytes as i64;
            report.entries = fetched.received as i32;
            progress.event(ProgressEvent::Storing {
                entries: fetched.entries.len(),
            });
            store::commit(
                &mut conn,
                id,
                fetched.entries,
                fetched.mode,
                fetched.state,
                &mut report,
                t0,
            )
            .await
            .map_err(|e| (e.public_message(), false))
        }
        .await;

        let (status, server_count) = match result {
            Ok(totals) => {
                // Other processes drop theirs on the registry row's change notification.
                self.caches.invalidate_registry(id);
                tracing::info!(
                    registry = %id, name = %row.name, servers = totals.servers, added = report.added,
                    updated = report.updated, removed = report.removed, skipped = report.skipped_count,
                    ms = report.duration_ms, "sync committed"
                );
                (RegistryStatus::Active, totals.servers as i32)
            }
            Err((message, cancelled)) => {
                report.succeeded = false;
                report.error = Some(message.clone());
                report.finished_at = Some(Utc::now());
                report.duration_ms = t0.elapsed().as_millis() as i64;
                tracing::warn!(registry = %id, name = %row.name, error = %message, "sync failed");
                match store::fail(
                    &mut conn,
                    id,
                    &message,
                    &report,
                    self.settings.error_backoff_seconds,
                    !cancelled,
                )
                .await
                {
                    Ok(Some(r)) => (r.status, r.server_count),
                    Ok(None) => (RegistryStatus::Syncing, 0),
                    Err(e) => {
                        tracing::error!(registry = %id, error = ?e, "sync: could not record the failure");
                        (RegistryStatus::Syncing, row.server_count)
                    }
                }
            }
        };
        store::unlock(&mut conn, id).await;
        drop(conn);
        crate::metrics::sync_finished(&row.name, report.succeeded, t0.elapsed(), report.counts());
        progress.event(ProgressEvent::Done);
        SyncOutcome {
            registry_id: id,
            registry_name: row.name.clone(),
            status,
            server_count,
            report,
        }
    }
}
