//! The database side of a sync: the per-registry advisory lock, the move into SYNCING, the one
//! transaction that stores a sync's result, and the move into ERROR.
//!
//! Concurrency: a sync holds a session-level advisory lock (`pg_try_advisory_lock(key(id))`) on its
//! own connection from before the registry enters SYNCING until after it leaves it. A second
//! trigger, in this or any other gateway process, fails to take the lock and gets CONFLICT. If a
//! process dies mid-sync its connection closes, PostgreSQL releases the lock, and a registry found
//! in SYNCING whose lock is free is known to be abandoned (see `recover_abandoned`).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use dataloaders::enums::{InstanceStatus, RegistryFormat, RegistryStatus};
use dataloaders::models::RegistryRow;
use dataloaders::schema::{instances, registries, servers};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::normalize::{self, Entry, NewServer};
use super::report::{MAX_SKIPPED_LISTED, SkippedEntry, SyncMode, SyncReport};
use crate::audit::Actor;
use crate::audit::{self, AuditEntry};
use crate::db::AdvisoryLock;
use crate::error::{AppError, AppResult};
use crate::registries::store::transition;

/// Message of a registry found in SYNCING with no live sync.
pub const ABANDONED: &str =
    "the previous sync was interrupted (the gateway stopped while syncing); it is retried";
/// Rows per INSERT statement (21 bind parameters each, well under PostgreSQL's 65535).
const BATCH: usize = 1000;
/// Longest stored `last_error`.
const MAX_ERROR_CHARS: usize = 1000;

/// Opens a connection of the sync's own (never a pooled one, so that a session lock can never
/// outlive its sync inside the pool).
pub async fn connect(
    database_url: &str,
    statement_timeout_ms: u64,
) -> AppResult<AsyncPgConnection> {
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "sync: cannot connect to the database");
            AppError::Unavailable("the database is unavailable; try again shortly".into())
        })?;
    conn.batch_execute(&format!(
        "SET statement_timeout = {statement_timeout_ms}; SET lock_timeout = 10000; \
         SET idle_in_transaction_session_timeout = 600000; SET application_name = 'hivegraph-sync'"
    ))
    .await?;
    Ok(conn)
}

/// Tries to take the sync lock of a registry on this session.
pub async fn try_lock(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<bool> {
    Ok(AdvisoryLock::Sync(id).try_session(conn).await?)
}

/// Releases the sync lock of a registry held by this session.
pub async fn unlock(conn: &mut AsyncPgConnection, id: Uuid) {
    if let Err(e) = AdvisoryLock::Sync(id).release_session(conn).await {
        tracing::warn!(registry = %id, error = %e, "sync: could not release the sync lock; it ends with the connection");
    }
}

/// What a sync remembers about the upstream between syncs (`registries.sync_state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    /// The registry URL this state belongs to; a changed URL starts over with a full sync.
    pub url: Option<String>,
    /// The format the registry was read as.
    pub format: Option<RegistryFormat>,
    /// The API list endpoint, for API formats.
    pub list_url: Option<String>,
    /// The newest `updatedAt` seen from an MCP Registry API, for `updated_since`.
    pub watermark: Option<DateTime<Utc>>,
    /// When the last full read happened.
    pub last_full_sync_at: Option<DateTime<Utc>>,
}

impl SyncState {
    /// Reads the stored state (an unreadable one counts as empty).
    pub fn from_row(row: &RegistryRow) -> SyncState {
        serde_json::from_value(row.sync_state.clone()).unwrap_or_default()
    }
}

/// Moves a registry into SYNCING (the caller holds its sync lock). A registry found in SYNCING is
/// an abandoned sync (its lock was free) and passes through ERROR first, as the state machine
/// requires. With `require_due` (the scheduler), a registry that is no longer due, because
/// another process synced it since the scheduler looked, is refused with CONFLICT.
pub async fn begin(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    actor: Option<&Actor>,
    require_due: bool,
) -> AppResult<RegistryRow> {
    let actor = actor.cloned();
    conn.transaction::<_, AppError, _>(async move |conn| {
        let (status, next): (RegistryStatus, Option<DateTime<Utc>>) = registries::table
            .find(id)
            .filter(registries::archived_at.is_null())
            .select((registries::status, registries::next_sync_at))
            .for_update()
            .first(conn)
            .await
            .optional()?
            .ok_or(AppError::NotFound("registry"))?;
        if require_due
            && (status == RegistryStatus::Syncing || next.is_some_and(|n| n > Utc::now()))
        {
            return Err(AppError::Conflict("the registry is no longer due".into()));
        }
        if status == RegistryStatus::Syncing {
            transition(conn, id, RegistryStatus::Error, Some(ABANDONED.into())).await?;
        }
        transition(conn, id, RegistryStatus::Syncing, None).await?;
        let now = Utc::now();
        let row: RegistryRow = diesel::update(registries::table.find(id))
            .set((
                registries::last_sync_attempt_at.eq(now),
                registries::updated_at.eq(now),
            ))
            .returning(RegistryRow::as_returning())
            .get_result(conn)
            .await?;
        if let Some(actor) = &actor {
            audit::record(
                conn,
                AuditEntry::success(actor, "syncRegistry", "Registry", id).details(
                    serde_json::json!({ "name": row.name, "format": row.format.as_db_str() }),
                ),
            )
            .await?;
        }
        Ok(row)
    })
    .await
}

/// Counts after a commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub servers: i64,
    pub container: i64,
    pub remote: i64,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    servers: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    container: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    remote: i64,
}

async fn totals(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Totals, diesel::result::Error> {
    let r: CountRow = diesel::sql_query(
        "SELECT count(*) AS servers, \
                count(*) FILTER (WHERE image IS NOT NULL) AS container, \
                count(*) FILTER (WHERE image IS NULL) AS remote \
           FROM servers WHERE registry_id = $1 AND removed_upstream_at IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .get_result(conn)
    .await?;
    Ok(Totals {
        servers: r.servers,
        container: r.container,
        remote: r.remote,
    })
}

/// (id, original name, name, sync hash, removed upstream at) of a stored server.
type ExistingRow = (Uuid, String, String, Option<String>, Option<DateTime<Utc>>);

struct Existing {
    id: Uuid,
    name: String,
    hash: Option<String>,
    removed: bool,
}

/// Stores a sync's entries in one transaction and moves the registry to ACTIVE. Nothing is
/// written if any statement fails. Returns the registry's totals.
pub async fn commit(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    entries: Vec<Entry>,
    mode: SyncMode,
    state: SyncState,
    report: &mut SyncReport,
    started: Instant,
) -> AppResult<Totals> {
    let received_servers = entries
        .iter()
        .filter(|e| matches!(e, Entry::Server { .. }))
        .count();
    let skipped_total = entries
        .iter()
        .filter(|e| matches!(e, Entry::Skipped { .. }))
        .count();
    if mode == SyncMode::Full && received_servers == 0 && skipped_total > 0 {
        return Err(AppError::Unavailable(format!(
            "every entry of the registry is malformed ({skipped_total} skipped); the servers of the last good sync are kept"
        )));
    }
    let report_in = report.clone();
    let (totals, report_out) = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let mut report = report_in;
            let interval: i32 = registries::table
                .find(id)
                .filter(registries::status.eq(RegistryStatus::Syncing))
                .select(registries::sync_interval_seconds)
                .for_update()
                .first(conn)
                .await
                .optional()?
                .ok_or_else(|| {
                    AppError::Conflict(
                        "the registry left SYNCING or was deleted during the sync".into(),
                    )
                })?;

            let rows: Vec<ExistingRow> = servers::table
                .filter(servers::registry_id.eq(id))
                .select((
                    servers::id,
                    servers::original_name,
                    servers::name,
                    servers::sync_hash,
                    servers::removed_upstream_at,
                ))
                .load(conn)
                .await?;
            let existing: HashMap<String, Existing> = rows
                .into_iter()
                .map(|(sid, orig, name, hash, removed)| {
                    (
                        orig,
                        Existing {
                            id: sid,
                            name,
                            hash,
                            removed: removed.is_some(),
                        },
                    )
                })
                .collect();

            // Classify the entries.
            let mut present: HashSet<String> = HashSet::new();
            let mut gone: HashSet<String> = HashSet::new();
            let mut writes: Vec<(NewServer, String, bool)> = Vec::new(); // server, hash, is_new
            for e in entries {
                match e {
                    Entry::Server { server, latest } => {
                        let known = existing.get(&server.original_name);
                        present.insert(server.original_name.clone());
                        if !latest && known.is_some() {
                            // A non-latest version never replaces the stored latest one.
                            report.unchanged += 1;
                            continue;
                        }
                        let hash = server.content_hash();
                        match known {
                            Some(k) if k.hash.as_deref() == Some(hash.as_str()) && !k.removed => {
                                report.unchanged += 1
                            }
                            Some(_) => {
                                report.updated += 1;
                                writes.push((*server, hash, false));
                            }
                            None => {
                                report.added += 1;
                                writes.push((*server, hash, true));
                            }
                        }
                    }
                    Entry::Deleted { original_name } => {
                        gone.insert(original_name);
                    }
                    Entry::Skipped { name, reason } => {
                        // A malformed new version keeps the last good one.
                        present.insert(name.clone());
                        report.skipped_count += 1;
                        if report.skipped.len() < MAX_SKIPPED_LISTED {
                            report.skipped.push(SkippedEntry { name, reason });
                        }
                    }
                }
            }
            let vanished: Vec<(&String, &Existing)> = existing
                .iter()
                .filter(|(orig, k)| {
                    let missing = match mode {
                        SyncMode::Full => !present.contains(*orig),
                        SyncMode::Incremental => gone.contains(*orig) && !present.contains(*orig),
                    };
                    missing && !k.removed
                })
                .collect();

            // Vanished servers: deleted unless an instance references them, then only marked.
            let vanished_ids: Vec<Uuid> = vanished.iter().map(|(_, k)| k.id).collect();
            let referenced: HashSet<Uuid> = if vanished_ids.is_empty() {
                HashSet::new()
            } else {
                instances::table
                    .filter(instances::server_id.eq_any(&vanished_ids))
                    .select(instances::server_id)
                    .distinct()
                    .load::<Uuid>(conn)
                    .await?
                    .into_iter()
                    .collect()
            };
            let (keep, drop): (Vec<Uuid>, Vec<Uuid>) = vanished_ids
                .iter()
                .partition(|sid| referenced.contains(sid));
            let now = Utc::now();
            if !drop.is_empty() {
                report.removed += diesel::delete(servers::table.filter(servers::id.eq_any(&drop)))
                    .execute(conn)
                    .await? as i32;
            }
            if !keep.is_empty() {
                report.marked_removed +=
                    diesel::update(servers::table.filter(servers::id.eq_any(&keep)))
                        .set((
                            servers::removed_upstream_at.eq(Some(now)),
                            servers::updated_at.eq(now),
                        ))
                        .execute(conn)
                        .await? as i32;
            }

            // DNS-label names: kept for known servers, assigned uniquely to new ones.
            let dropped: HashSet<Uuid> = drop.into_iter().collect();
            let mut taken: HashSet<String> = existing
                .values()
                .filter(|k| !dropped.contains(&k.id))
                .map(|k| k.name.clone())
                .collect();
            writes.sort_by(|a, b| a.0.original_name.cmp(&b.0.original_name));
            let mut names = Vec::with_capacity(writes.len());
            for (server, _, is_new) in &writes {
                if !is_new {
                    names.push(existing[&server.original_name].name.clone());
                    continue;
                }
                let mut candidate = server.name_hint.clone();
                let mut n = 0;
                while taken.contains(&candidate) || !crate::validate::is_dns_label(&candidate) {
                    candidate =
                        normalize::disambiguated_label(&server.name_hint, &server.original_name, n);
                    n += 1;
                }
                taken.insert(candidate.clone());
                names.push(candidate);
            }

            for (chunk, chunk_names) in writes.chunks(BATCH).zip(names.chunks(BATCH)) {
                let rows: Vec<_> = chunk
                    .iter()
                    .zip(chunk_names)
                    .map(|((s, hash, _), name)| {
                        (
                            servers::registry_id.eq(id),
                            servers::name.eq(name),
                            servers::original_name.eq(&s.original_name),
                            servers::description.eq(&s.description),
                            servers::version.eq(&s.version),
                            servers::image.eq(&s.image),
                            servers::url.eq(&s.url),
                            servers::transport.eq(s.transport),
                            servers::tier.eq(s.tier),
                            servers::status.eq(s.status),
                            servers::category.eq(&s.category),
                            servers::capabilities.eq(&s.capabilities),
                            servers::repository_url.eq(&s.repository_url),
                            servers::network_permissions.eq(&s.network_permissions),
                            servers::pull_count.eq(s.pull_count),
                            servers::stars.eq(s.stars),
                            servers::last_updated.eq(s.last_updated),
                            servers::deployment_requirements.eq(&s.deployment_requirements),
                            servers::removed_upstream_at.eq(None::<DateTime<Utc>>),
                            servers::sync_hash.eq(Some(hash)),
                            servers::updated_at.eq(now),
                        )
                    })
                    .collect();
                diesel::insert_into(servers::table)
                    .values(rows)
                    .on_conflict((servers::registry_id, servers::original_name))
                    .do_update()
                    .set((
                        servers::description.eq(excluded(servers::description)),
                        servers::version.eq(excluded(servers::version)),
                        servers::image.eq(excluded(servers::image)),
                        servers::url.eq(excluded(servers::url)),
                        servers::transport.eq(excluded(servers::transport)),
                        servers::tier.eq(excluded(servers::tier)),
                        servers::status.eq(excluded(servers::status)),
                        servers::category.eq(excluded(servers::category)),
                        servers::capabilities.eq(excluded(servers::capabilities)),
                        servers::repository_url.eq(excluded(servers::repository_url)),
                        servers::network_permissions.eq(excluded(servers::network_permissions)),
                        servers::pull_count.eq(excluded(servers::pull_count)),
                        servers::stars.eq(excluded(servers::stars)),
                        servers::last_updated.eq(excluded(servers::last_updated)),
                        servers::deployment_requirements
                            .eq(excluded(servers::deployment_requirements)),
                        servers::removed_upstream_at.eq(excluded(servers::removed_upstream_at)),
                        servers::sync_hash.eq(excluded(servers::sync_hash)),
                        servers::updated_at.eq(excluded(servers::updated_at)),
                    ))
                    .execute(conn)
                    .await?;
            }

            // Instances of updated servers may now have an upgrade: touching them sends their
            // change notification, so `instanceStatus` subscribers see `upgrade` at once.
            let updated: Vec<&str> = writes
                .iter()
                .filter(|(_, _, is_new)| !is_new)
                .map(|(s, _, _)| s.original_name.as_str())
                .collect();
            if !updated.is_empty() {
                let of_updated = servers::table
                    .filter(servers::registry_id.eq(id))
                    .filter(servers::original_name.eq_any(&updated))
                    .select(servers::id);
                diesel::update(
                    instances::table
                        .filter(instances::server_id.eq_any(of_updated))
                        .filter(instances::status.ne(InstanceStatus::Terminated)),
                )
                .set(instances::updated_at.eq(now))
                .execute(conn)
                .await?;
            }

            let totals = totals(conn, id).await?;
            report.container_servers = totals.container as i32;
            report.remote_servers = totals.remote as i32;
            report.succeeded = true;
            report.error = None;
            let finished = Utc::now();
            report.finished_at = Some(finished);
            report.duration_ms = started.elapsed().as_millis() as i64;

            transition(conn, id, RegistryStatus::Active, None).await?;
            diesel::update(registries::table.find(id))
                .set((
                    registries::server_count.eq(totals.servers as i32),
                    registries::last_sync_at.eq(Some(finished)),
                    registries::next_sync_at
                        .eq(Some(finished + chrono::Duration::seconds(interval as i64))),
                    registries::consecutive_failures.eq(0),
                    registries::last_sync_report.eq(Some(report.to_json())),
                    registries::sync_state.eq(serde_json::to_value(&state).expect("serialisable")),
                    registries::updated_at.eq(finished),
                ))
                .execute(conn)
                .await?;
            Ok((totals, report))
        })
        .await?;
    *report = report_out;
    Ok(totals)
}

/// The delay before retrying a registry after `failures` consecutive failed syncs: `base *
/// 2^(failures-1)` with up to 10 % jitter, capped at the registry's interval.
pub fn error_backoff(failures: i32, interval_seconds: i32, base_seconds: u64) -> chrono::Duration {
    use rand::Rng;
    let exp = (failures.max(1) - 1).min(20) as u32;
    let raw = base_seconds.max(1).saturating_mul(1u64 << exp) as f64;
    let jittered = raw * rand::thread_rng().gen_range(0.9..=1.0);
    let capped = jittered.min(interval_seconds.max(1) as f64);
    chrono::Duration::milliseconds((capped * 1000.0) as i64)
}

/// Moves a registry from SYNCING to ERROR with a readable message, counts the failure (unless
/// `count_failure` is false, as for an interruption by shutdown) and schedules the retry. Its
/// servers are not touched. Returns None when the registry is gone.
pub async fn fail(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    message: &str,
    report: &SyncReport,
    backoff_base_seconds: u64,
    count_failure: bool,
) -> AppResult<Option<RegistryRow>> {
    let message: String = message.chars().take(MAX_ERROR_CHARS).collect();
    let report = report.to_json();
    conn.transaction::<_, AppError, _>(async move |conn| {
        let row = match transition(conn, id, RegistryStatus::Error, Some(message)).await {
            Ok(r) => r,
            Err(AppError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let failures = if count_failure {
            row.consecutive_failures + 1
        } else {
            row.consecutive_failures
        };
        let next = if count_failure {
            Utc::now() + error_backoff(failures, row.sync_interval_seconds, backoff_base_seconds)
        } else {
            Utc::now()
        };
        let row = diesel::update(registries::table.find(id))
            .set((
                registries::consecutive_failures.eq(failures),
                registries::next_sync_at.eq(Some(next)),
                registries::last_sync_report.eq(Some(report)),
            ))
            .returning(RegistryRow::as_returning())
            .get_result(conn)
            .await?;
        Ok(Some(row))
    })
    .await
}

/// Moves registries left in SYNCING by a dead sync (their lock is free) to ERROR, due at once.
/// Safe with several gateway processes: a live sync holds its lock, so it is never touched.
pub async fn recover_abandoned(conn: &mut AsyncPgConnection) -> AppResult<Vec<Uuid>> {
    let stuck: Vec<Uuid> = registries::table
        .filter(registries::status.eq(RegistryStatus::Syncing))
        .select(registries::id)
        .load(conn)
        .await?;
    let mut recovered = Vec::new();
    for id in stuck {
        if !try_lock(conn, id).await? {
            continue;
        }
        let r = conn
            .transaction::<_, AppError, _>(async move |conn| {
                let status: Option<RegistryStatus> = registries::table
                    .find(id)
                    .select(registries::status)
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?;
                if status != Some(RegistryStatus::Syncing) {
                    return Ok(false);
                }
                transition(conn, id, RegistryStatus::Error, Some(ABANDONED.into())).await?;
                diesel::update(registries::table.find(id))
                    .set((
                        registries::next_sync_at.eq(Some(Utc::now())),
                        registries::consecutive_failures.eq(registries::consecutive_failures + 1),
                    ))
                    .execute(conn)
                    .await?;
                Ok(true)
            })
            .await;
        unlock(conn, id).await;
        if r? {
            tracing::warn!(registry = %id, "sync: recovered a registry left in SYNCING by an interrupted sync");
            recovered.push(id);
        }
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_by_the_interval() {
        let s = |f| error_backoff(f, 3600, 30).num_milliseconds();
        assert!((27_000..=30_000).contains(&s(1)), "{}", s(1));
        assert!((54_000..=60_000).contains(&s(2)), "{}", s(2));
        assert!((108_000..=120_000).contains(&s(3)), "{}", s(3));
        assert_eq!(s(12), 3_600_000);
        assert_eq!(error_backoff(50, 600, 30).num_seconds(), 600);
    }
}
