//! The database side of a sync: the per-registry advisory lock, the move into SYNCING, the one
//! transaction that stores a sync's result, and the move into ERROR.
//!
//! Concurrency: a sync holds a session-level advisory lock (`pg_try_advisory_lock(key(id))`) on its
//! own connection from before the registry enters SYNCING until after it leaves it. A second
//! trigger, in this or any other gateway process, fails to take the lock and gets CONFLICT. If a
//! process dies mid-sync its connection closes, PostgreSQL releases the lock, and a registry found
//! in SYNCING whose lock is free is known to be abandoned (see `recover_abandoned`).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use dataloaders::enums::{InstanceStatus, RegistryFormat, RegistryStatus};
use dataloaders::models::RegistryRow;
use dataloaders::schema::{instances, registries, servers};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::formats::Entries;
use super::normalize::Entry;
use super::plan::{Planner, Renamed, Stored, StoredServers, SyncPlan, Write};
use super::report::{SyncMode, SyncReport};
use crate::audit::Actor;
use crate::audit::{self, AuditEntry};
use crate::db::AdvisoryLock;
use crate::error::{AppError, AppResult};
use crate::registries::store::transition;
use dataloaders::prepared::Prepared;

/// Message of a registry found in SYNCING with no live sync.
pub const ABANDONED: &str =
    "the previous sync was interrupted (the gateway stopped while syncing); it is retried";
/// Entries per chunk: normalised, planned and written by one upsert statement (each column is
/// one bound array, see [`upsert_servers`]).
const CHUNK: usize = 500;
/// Chunks normalised ahead of the writer.
const AHEAD: usize = 8;
/// Upsert statements sent before the previous ones finished.
const IN_FLIGHT: usize = 2;
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

/// Stores a sync's entries in one transaction and moves the registry to ACTIVE. Nothing is
/// written if any statement fails. Returns the registry's totals.
///
/// The entries are normalised on a blocking thread and handed over in chunks of [`CHUNK`]; each
/// chunk is planned and written while later ones are normalised, and the next statement is sent
/// while PostgreSQL still executes the previous one, so the gateway's work overlaps the
/// database's. Whatever depends on every entry (vanished servers, final names of new servers,
/// the refusal of an all-malformed registry) is settled after the last chunk, in the same
/// transaction.
pub async fn commit(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    entries: Entries,
    mode: SyncMode,
    state: SyncState,
    report: &mut SyncReport,
    started: Instant,
) -> AppResult<Totals> {
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    let producer = tokio::task::spawn_blocking(move || {
        entries.stream(CHUNK, |chunk| tx.blocking_send(chunk).is_ok())
    });
    let report_in = report.clone();
    let (totals, report_out) = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let mut report = report_in;
            let interval = lock_syncing(conn, id).await?;
            let stored = stored_servers(conn, id).await?;
            let t = Instant::now();
            let now = Utc::now();
            let mut planner = Planner::new(&stored, mode);
            write_chunks(conn, id, now, &mut planner, rx).await?;
            producer.await.map_err(|e| {
                AppError::Internal(Arc::new(anyhow::anyhow!("reading the entries failed: {e}")))
            })?;
            let (plan, renamed) = planner.finish();
            refuse_all_malformed(&plan, mode)?;
            plan.count_into(&mut report);
            let (removed, marked) = apply(conn, id, &plan, &renamed, now).await?;
            tracing::debug!(registry = %id, added = plan.added, updated = plan.updated, renamed = renamed.len(),
                ms = t.elapsed().as_millis() as u64, "sync: planned and written");
            report.removed += removed;
            report.marked_removed += marked;
            let totals = totals(conn, id).await?;
            finish(conn, id, &totals, interval, &state, &mut report, started).await?;
            Ok((totals, report))
        })
        .await?;
    *report = report_out;
    Ok(totals)
}

/// Plans and writes each chunk of entries as it arrives, with up to [`IN_FLIGHT`] statements
/// sent ahead (pipelined on the one connection: PostgreSQL runs them in order, in the
/// transaction). On a failed statement, waits for those already sent, then returns its error.
async fn write_chunks(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
    planner: &mut Planner<'_>,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<Entry>>,
) -> AppResult<()> {
    use futures_util::StreamExt;
    let conn: &AsyncPgConnection = conn;
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            chunk = chunks.recv(), if open && in_flight.len() < IN_FLIGHT => match chunk {
                Some(entries) => {
                    let writes = planner.add(entries);
                    if !writes.is_empty() {
                        in_flight.push_back(upsert_servers(conn, id, now, &writes));
                    }
                }
                None => open = false,
            },
            Some(done) = in_flight.next() => if let Err(e) = done {
                while in_flight.next().await.is_some() {}
                return Err(e.into());
            },
        }
    }
    Ok(())
}

/// A full sync whose every entry is malformed would delete every server: refused, so the
/// servers of the last good sync stay.
fn refuse_all_malformed(plan: &SyncPlan, mode: SyncMode) -> AppResult<()> {
    let skipped = plan.skipped_count;
    if mode == SyncMode::Full && plan.server_entries == 0 && skipped > 0 {
        return Err(AppError::Unavailable(format!(
            "every entry of the registry is malformed ({skipped} skipped); the servers of the last good sync are kept"
        )));
    }
    Ok(())
}

/// Locks the registry row while it is SYNCING; returns its sync interval (seconds).
async fn lock_syncing(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<i32> {
    registries::table
        .find(id)
        .filter(registries::status.eq(RegistryStatus::Syncing))
        .select(registries::sync_interval_seconds)
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            AppError::Conflict("the registry left SYNCING or was deleted during the sync".into())
        })
}

/// The registry's stored servers, by original name, with whether an instance uses each.
async fn stored_servers(conn: &mut AsyncPgConnection, id: Uuid) -> AppResult<StoredServers> {
    let used = diesel::dsl::exists(instances::table.filter(instances::server_id.eq(servers::id)));
    let rows: Vec<StoredRow> = servers::table
        .filter(servers::registry_id.eq(id))
        .select((
            servers::id,
            servers::original_name,
            servers::name,
            servers::sync_hash,
            servers::removed_upstream_at,
            used,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(sid, orig, name, hash, removed, referenced)| {
            let removed = removed.is_some();
            (
                orig,
                Stored {
                    id: sid,
                    name,
                    hash,
                    removed,
                    referenced,
                },
            )
        })
        .collect())
}

/// (id, original name, name, sync hash, removed upstream at, used by an instance).
type StoredRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    bool,
);

/// The columns a sync writes from a registry entry, each with the element type of the array it
/// travels in, listed once: the INSERT, its ON CONFLICT update and the binds of
/// [`upsert_servers`] all follow this order. `text[]` columns travel as array literals.
const WRITTEN: [(&str, &str); 18] = [
    ("name", "text"),
    ("original_name", "text"),
    ("sync_hash", "text"),
    ("description", "text"),
    ("version", "text"),
    ("image", "text"),
    ("url", "text"),
    ("transport", "text"),
    ("tier", "text"),
    ("status", "text"),
    ("category", "text[]"),
    ("capabilities", "text[]"),
    ("repository_url", "text"),
    ("network_permissions", "jsonb"),
    ("pull_count", "int8"),
    ("stars", "int8"),
    ("last_updated", "timestamptz"),
    ("deployment_requirements", "jsonb"),
];

/// One statement per chunk of writes: every column is bound as one array (`$3`..) and unnested,
/// so PostgreSQL parses and plans a short statement once instead of a VALUES list of thousands
/// of parameters. `$1` is the registry, `$2` the time of the sync. A known server keeps its name.
static UPSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let cols: Vec<&str> = WRITTEN.iter().map(|(c, _)| *c).collect();
    let values: Vec<String> = WRITTEN
        .iter()
        .map(|(c, ty)| match *ty {
            "text[]" => format!("w.{c}::text[]"),
            _ => format!("w.{c}"),
        })
        .collect();
    let arrays: Vec<String> = WRITTEN
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| {
            let element = if *ty == "text[]" { "text" } else { ty };
            format!("${}::{element}[]", i + 3)
        })
        .collect();
    let updates: Vec<String> = cols
        .iter()
        .filter(|c| !matches!(**c, "name" | "original_name"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO servers (registry_id, updated_at, {cols}) \
         SELECT $1, $2, {values} FROM unnest({arrays}) AS w({cols}) \
         ON CONFLICT (registry_id, original_name) DO UPDATE SET \
         removed_upstream_at = NULL, updated_at = excluded.updated_at, {updates}",
        cols = cols.join(", "),
        values = values.join(", "),
        arrays = arrays.join(", "),
        updates = updates.join(", "),
    )
});

/// A PostgreSQL array literal of `items`, every element quoted (for a `text[]` sent as text).
fn array_literal(items: &[String]) -> String {
    let mut s = String::with_capacity(2 + items.iter().map(|i| i.len() + 3).sum::<usize>());
    s.push('{');
    for (k, item) in items.iter().enumerate() {
        if k > 0 {
            s.push(',');
        }
        s.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// The upsert of one chunk of writes (columns as in [`WRITTEN`]), kept prepared by the
/// connection ([`Prepared`]): a plain `sql_query` is prepared anew at each use, a round trip
/// that would stall the pipeline between chunks.
fn upsert_query(
    id: Uuid,
    now: DateTime<Utc>,
    writes: &[Write],
) -> Prepared<impl diesel::query_builder::QueryFragment<diesel::pg::Pg> + Send + '_> {
    use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz};
    fn col<'a, T>(writes: &'a [Write], f: impl Fn(&'a Write) -> T) -> Vec<T> {
        writes.iter().map(f).collect()
    }
    Prepared(
        diesel::sql_query(UPSERT_SQL.as_str())
            .bind::<diesel::sql_types::Uuid, _>(id)
            .bind::<Timestamptz, _>(now)
            .bind::<Array<Text>, _>(col(writes, |w| w.name.as_str()))
            .bind::<Array<Text>, _>(col(writes, |w| w.server.original_name.as_str()))
            .bind::<Array<Text>, _>(col(writes, |w| w.hash.as_str()))
            .bind::<Array<Text>, _>(col(writes, |w| w.server.description.as_str()))
            .bind::<Array<Nullable<Text>>, _>(col(writes, |w| w.server.version.as_deref()))
            .bind::<Array<Nullable<Text>>, _>(col(writes, |w| w.server.image.as_deref()))
            .bind::<Array<Nullable<Text>>, _>(col(writes, |w| w.server.url.as_deref()))
            .bind::<Array<Text>, _>(col(writes, |w| w.server.transport.as_db_str()))
            .bind::<Array<Text>, _>(col(writes, |w| w.server.tier.as_db_str()))
            .bind::<Array<Text>, _>(col(writes, |w| w.server.status.as_db_str()))
            .bind::<Array<Text>, _>(col(writes, |w| array_literal(&w.server.category)))
            .bind::<Array<Text>, _>(col(writes, |w| array_literal(&w.server.capabilities)))
            .bind::<Array<Nullable<Text>>, _>(col(writes, |w| w.server.repository_url.as_deref()))
            .bind::<Array<Jsonb>, _>(col(writes, |w| &w.server.network_permissions))
            .bind::<Array<BigInt>, _>(col(writes, |w| w.server.pull_count))
            .bind::<Array<BigInt>, _>(col(writes, |w| w.server.stars))
            .bind::<Array<Nullable<Timestamptz>>, _>(col(writes, |w| w.server.last_updated))
            .bind::<Array<Jsonb>, _>(col(writes, |w| &w.server.deployment_requirements)),
    )
}

/// Inserts or updates one chunk of writes in one statement. The parameters are encoded at once;
/// the returned future only waits for the result, so several can be in flight on one connection.
fn upsert_servers<'c>(
    mut conn: &'c AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
    writes: &[Write],
) -> futures_util::future::BoxFuture<'c, QueryResult<usize>> {
    upsert_query(id, now, writes).execute(&mut conn)
}

/// Writes what a plan settles after the last chunk: deletes and marks vanished servers, gives
/// renamed new servers their final names, and touches the instances of updated servers.
/// Returns (servers deleted, servers marked removed).
async fn apply(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    plan: &SyncPlan,
    renamed: &[Renamed],
    now: DateTime<Utc>,
) -> AppResult<(i32, i32)> {
    let mut removed = 0;
    let mut marked = 0;
    if !plan.delete.is_empty() {
        removed = diesel::delete(servers::table.filter(servers::id.eq_any(&plan.delete)))
            .execute(conn)
            .await? as i32;
    }
    if !plan.mark_removed.is_empty() {
        marked = diesel::update(servers::table.filter(servers::id.eq_any(&plan.mark_removed)))
            .set((
                servers::removed_upstream_at.eq(Some(now)),
                servers::updated_at.eq(now),
            ))
            .execute(conn)
            .await? as i32;
    }
    rename(conn, id, renamed).await?;
    touch_instances_of(conn, id, &plan.updated_names(), now).await?;
    Ok((removed, marked))
}

/// Gives new servers written under a provisional name their final one. Two statements, so that
/// names swapped between them never collide: first a name made from the row's id, then the
/// final one.
async fn rename(conn: &mut AsyncPgConnection, id: Uuid, renamed: &[Renamed]) -> QueryResult<()> {
    use diesel::sql_types::{Array, Text};
    if renamed.is_empty() {
        return Ok(());
    }
    let originals: Vec<&str> = renamed.iter().map(|r| r.original_name.as_str()).collect();
    let names: Vec<&str> = renamed.iter().map(|r| r.name.as_str()).collect();
    diesel::sql_query(
        "UPDATE servers SET name = 'renaming-' || replace(id::text, '-', '') \
         WHERE registry_id = $1 AND original_name = ANY($2)",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Array<Text>, _>(&originals)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE servers s SET name = r.name FROM unnest($2::text[], $3::text[]) AS r(original_name, name) \
         WHERE s.registry_id = $1 AND s.original_name = r.original_name",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Array<Text>, _>(&originals)
    .bind::<Array<Text>, _>(&names)
    .execute(conn)
    .await?;
    Ok(())
}

/// Instances of updated servers may now have an upgrade: touching them sends their change
/// notification, so `instanceStatus` subscribers see `upgrade` at once.
async fn touch_instances_of(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    updated: &[&str],
    now: DateTime<Utc>,
) -> AppResult<()> {
    if updated.is_empty() {
        return Ok(());
    }
    let of_updated = servers::table
        .filter(servers::registry_id.eq(id))
        .filter(servers::original_name.eq_any(updated))
        .select(servers::id);
    diesel::update(
        instances::table
            .filter(instances::server_id.eq_any(of_updated))
            .filter(instances::status.ne(InstanceStatus::Terminated)),
    )
    .set(instances::updated_at.eq(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Completes the report and moves the registry to ACTIVE with its new totals and schedule.
async fn finish(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    totals: &Totals,
    interval: i32,
    state: &SyncState,
    report: &mut SyncReport,
    started: Instant,
) -> AppResult<()> {
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
            registries::sync_state.eq(serde_json::to_value(state).expect("serialisable")),
            registries::updated_at.eq(finished),
        ))
        .execute(conn)
        .await?;
    Ok(())
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

    #[test]
    fn array_literals_quote_every_element() {
        assert_eq!(array_literal(&[]), "{}");
        let items = [
            "a b".to_string(),
            "q\"x".into(),
            "b\\s".into(),
            "{,}".into(),
            "NULL".into(),
        ];
        assert_eq!(
            array_literal(&items),
            r#"{"a b","q\"x","b\\s","{,}","NULL"}"#
        );
    }

    #[test]
    fn the_upsert_binds_every_written_column_once() {
        let sql = UPSERT_SQL.as_str();
        assert!(sql.contains(&format!("${}::jsonb[]", WRITTEN.len() + 2)));
        assert!(!sql.contains(&format!("${}", WRITTEN.len() + 3)));
        assert!(
            sql.contains("w.category::text[]")
                && sql.contains("capabilities = excluded.capabilities")
        );
        assert!(
            !sql.contains("name = excluded.name,") && !sql.contains(" original_name = excluded")
        );
    }

    #[test]
    fn the_upsert_query_is_the_upsert_sql_with_every_column_bound() {
        let query = upsert_query(Uuid::nil(), Utc::now(), &[]);
        let debug = diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string();
        let (sql, binds) = debug.split_once(" -- binds: ").unwrap();
        assert_eq!(sql, UPSERT_SQL.as_str());
        // The registry, the time, and one array per written column.
        assert_eq!(binds.matches('[').count(), 1 + WRITTEN.len());
    }
}
