//! Registry writes. Each change runs in one transaction together with its audit record, so a
//! rejected or failed change writes nothing.

use chrono::{DateTime, Utc};
use dataloaders::DbPool;
use dataloaders::enums::{InstanceStatus, RegistryAuthKind, RegistryStatus};
use dataloaders::models::RegistryRow;
use dataloaders::schema::{instances, registries, servers};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{NewRegistry, RegistryAuth, RegistryChanges};
use crate::audit::Actor;
use crate::audit::{self, AuditEntry};
use crate::error::{AppError, AppResult};
use crate::secrets::{Binding, Keyring};

/// What `delete` removed.
#[derive(Debug, Clone, Copy)]
pub struct Deleted {
    pub servers: i64,
    pub instances: i64,
}

fn seal(keys: &Keyring, id: Uuid, auth: &RegistryAuth) -> serde_json::Value {
    use secrecy::ExposeSecret;
    let sealed = keys.seal(
        auth.to_plaintext().expose_secret(),
        Binding {
            table: "registries",
            row: id,
            column: "auth_config",
        },
    );
    serde_json::to_value(sealed).expect("serialisable")
}

/// Opens a registry's stored credentials.
pub fn open_auth(keys: &Keyring, row: &RegistryRow) -> AppResult<Option<RegistryAuth>> {
    use secrecy::ExposeSecret;
    let Some(raw) = &row.auth_config else {
        return Ok(None);
    };
    let sealed: crate::secrets::Sealed = serde_json::from_value(raw.clone()).map_err(|_| {
        AppError::Internal(std::sync::Arc::new(anyhow::anyhow!(
            "registry {}: malformed sealed auth_config",
            row.id
        )))
    })?;
    let plain = keys
        .open(
            &sealed,
            Binding {
                table: "registries",
                row: row.id,
                column: "auth_config",
            },
        )
        .map_err(|e| {
            AppError::Unavailable(format!("the registry's credentials cannot be opened: {e}"))
        })?;
    Ok(RegistryAuth::from_plaintext(plain.expose_secret()))
}

fn map_unique(e: DieselError) -> AppError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("registries_name_key") =>
        {
            AppError::bad_input("name", "a registry with this name already exists")
        }
        other => AppError::from(other),
    }
}

async fn name_taken(
    conn: &mut AsyncPgConnection,
    name: &str,
    except: Option<Uuid>,
) -> Result<bool, DieselError> {
    let mut q = registries::table
        .filter(registries::archived_at.is_null())
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(name) = lower(")
                .bind::<diesel::sql_types::Text, _>(name.to_string())
                .sql(")"),
        )
        .select(registries::id)
        .into_boxed();
    if let Some(id) = except {
        q = q.filter(registries::id.ne(id));
    }
    Ok(q.first::<Uuid>(conn).await.optional()?.is_some())
}

async fn take_conn(pool: &DbPool) -> AppResult<dataloaders::DbConn> {
    Ok(crate::db::conn(pool).await?)
}

/// Creates a registry in status INACTIVE.
pub async fn create(
    pool: &DbPool,
    keys: &Keyring,
    actor: &Actor,
    new: NewRegistry,
) -> AppResult<RegistryRow> {
    let mut pooled = take_conn(pool).await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    conn.transaction::<_, AppError, _>(async move |conn| {
        {
            if name_taken(conn, &new.name, None).await? {
                return Err(AppError::bad_input("name", "a registry with this name already exists"));
            }
            let id = Uuid::new_v4();
            let (auth_kind, auth_config) = match &new.auth {
                Some(a) => (a.kind(), Some(seal(keys, id, a))),
                None => (RegistryAuthKind::None, None),
            };
            let row: RegistryRow = diesel::insert_into(registries::table)
                .values((
                    registries::id.eq(id),
                    registries::name.eq(&new.name),
                    registries::url.eq(&new.url),
                    registries::description.eq(&new.description),
                    registries::status.eq(RegistryStatus::Inactive),
                    registries::format.eq(new.format),
                    registries::sync_interval_seconds.eq(new.sync_interval_seconds),
                    registries::next_sync_at.eq(Some(Utc::now())),
                    registries::metadata.eq(&new.metadata),
                    registries::auth_kind.eq(auth_kind),
                    registries::auth_config.eq(auth_config),
                ))
                .returning(RegistryRow::as_returning())
                .get_result(conn)
                .await
                .map_err(map_unique)?;
            audit::record(
                conn,
                AuditEntry::success(&actor, "createRegistry", "Registry", id)
                    .details(serde_json::json!({ "name": new.name, "url": new.url, "auth": auth_kind.as_db_str() })),
            )
            .await?;
            Ok(row)
        }
    })
    .await
}

/// Applies changes to a registry.
pub async fn update(
    pool: &DbPool,
    keys: &Keyring,
    actor: &Actor,
    id: Uuid,
    changes: RegistryChanges,
) -> AppResult<RegistryRow> {
    let mut pooled = take_conn(pool).await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    conn.transaction::<_, AppError, _>(async move |conn| {
        {
            let current: RegistryRow = registries::table
                .find(id)
                .filter(registries::archived_at.is_null())
                .select(RegistryRow::as_select())
                .for_update()
                .first(conn)
                .await
                .optional()?
                .ok_or(AppError::NotFound("registry"))?;
            if let Some(name) = &changes.name
                && name_taken(conn, name, Some(id)).await?
            {
                return Err(AppError::bad_input(
                    "name",
                    "a registry with this name already exists",
                ));
            }
            let mut changed = Vec::new();
            let name = changes
                .name
                .clone()
                .inspect(|_| changed.push("name"))
                .unwrap_or(current.name.clone());
            let url = changes
                .url
                .clone()
                .inspect(|_| changed.push("url"))
                .unwrap_or(current.url.clone());
            let description = changes
                .description
                .clone()
                .inspect(|_| changed.push("description"))
                .unwrap_or(current.description.clone());
            let format = changes
                .format
                .inspect(|_| changed.push("format"))
                .unwrap_or(current.format);
            let interval = changes
                .sync_interval_seconds
                .inspect(|_| changed.push("syncIntervalSeconds"))
                .unwrap_or(current.sync_interval_seconds);
            let metadata = changes
                .metadata
                .clone()
                .inspect(|_| changed.push("metadata"))
                .unwrap_or(current.metadata.clone());
            let (auth_kind, auth_config) = match &changes.auth {
                None => (current.auth_kind, current.auth_config.clone()),
                Some(None) => {
                    changed.push("authConfig");
                    (RegistryAuthKind::None, None)
                }
                Some(Some(a)) => {
                    changed.push("authConfig");
                    (a.kind(), Some(seal(keys, id, a)))
                }
            };
            // A new source or interval reschedules the next sync.
            let next_sync_at = if changes.url.is_some() || changes.format.is_some() {
                Some(Utc::now())
            } else if changes.sync_interval_seconds.is_some() {
                Some(
                    current.last_sync_at.unwrap_or_else(Utc::now)
                        + chrono::Duration::seconds(interval as i64),
                )
            } else {
                current.next_sync_at
            };
            let row: RegistryRow = diesel::update(registries::table.find(id))
                .set((
                    registries::name.eq(name),
                    registries::url.eq(url),
                    registries::description.eq(description),
                    registries::format.eq(format),
                    registries::sync_interval_seconds.eq(interval),
                    registries::metadata.eq(metadata),
                    registries::auth_kind.eq(auth_kind),
                    registries::auth_config.eq(auth_config),
                    registries::next_sync_at.eq(next_sync_at),
                    registries::updated_at.eq(Utc::now()),
                ))
                .returning(RegistryRow::as_returning())
                .get_result(conn)
                .await
                .map_err(map_unique)?;
            audit::record(
                conn,
                AuditEntry::success(&actor, "updateRegistry", "Registry", id)
                    .details(serde_json::json!({ "changed": changed })),
            )
            .await?;
            Ok(row)
        }
    })
    .await
}

/// Deletes a registry: archives it and its servers (hidden from lists, search and sync, still
/// reachable from the instances and deployments that reference them; configuration history is
/// kept forever). Refused with CONFLICT, listing them, while any instance of its servers is not
/// TERMINATED.
pub async fn delete(pool: &DbPool, actor: &Actor, id: Uuid) -> AppResult<Deleted> {
    let mut pooled = take_conn(pool).await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    // The refusal is returned as Ok(Err(..)) so that its audit record commits.
    let outcome = conn.transaction::<Result<Deleted, Vec<String>>, AppError, _>(async move |conn| {
        registries::table
            .find(id)
            .filter(registries::archived_at.is_null())
            .select(registries::id)
            .for_update()
            .first::<Uuid>(conn)
            .await
            .optional()?
            .ok_or(AppError::NotFound("registry"))?;
        let server_ids = servers::table.filter(servers::registry_id.eq(id)).select(servers::id);
        let live: Vec<(String, String, InstanceStatus)> = instances::table
            .filter(instances::server_id.eq_any(server_ids))
            .filter(instances::status.ne(InstanceStatus::Terminated))
            .select((instances::namespace, instances::name, instances::status))
            .order((instances::namespace, instances::name))
            .load(conn)
            .await?;
        if !live.is_empty() {
            let names: Vec<String> = live
                .iter()
                .map(|(ns, n, st)| format!("{ns}/{n} ({})", st.as_db_str().to_uppercase()))
                .collect();
            audit::record(
                conn,
                AuditEntry::new(&actor, "deleteRegistry", "Registry", id, "denied")
                    .details(serde_json::json!({ "reason": "instances not terminated", "instances": names })),
            )
            .await?;
            return Ok(Err(names));
        }
        let now = Utc::now();
        let servers = diesel::update(servers::table.filter(servers::registry_id.eq(id)))
            .set(servers::archived_at.eq(Some(now)))
            .execute(conn)
            .await? as i64;
        diesel::update(registries::table.find(id))
            .set((
                registries::archived_at.eq(Some(now)),
                registries::next_sync_at.eq(None::<DateTime<Utc>>),
                registries::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
        audit::record(
            conn,
            AuditEntry::success(&actor, "deleteRegistry", "Registry", id)
                .details(serde_json::json!({ "archivedServers": servers })),
        )
        .await?;
        Ok(Ok(Deleted { servers, instances: 0 }))
    })
    .await?;
    outcome.map_err(|live| {
        AppError::Conflict(format!(
            "the registry's servers have {} instance(s) that are not TERMINATED: {}; delete them first",
            live.len(),
            live.join(", ")
        ))
    })
}

/// Moves a registry from one of `from` to `to`, as the state machine allows. Returns the updated
/// row, or CONFLICT when the registry is not in an allowed state (checked and written atomically).
pub async fn transition(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    to: RegistryStatus,
    last_error: Option<String>,
) -> AppResult<RegistryRow> {
    let from: Vec<RegistryStatus> = RegistryStatus::ALL
        .iter()
        .copied()
        .filter(|s| s.can_transition_to(to))
        .collect();
    let updated: Option<RegistryRow> = diesel::update(
        registries::table
            .find(id)
            .filter(registries::status.eq_any(from)),
    )
    .set((
        registries::status.eq(to),
        registries::last_error.eq(last_error),
        registries::updated_at.eq(Utc::now()),
    ))
    .returning(RegistryRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    match updated {
        Some(row) => Ok(row),
        None => {
            let exists: Option<RegistryStatus> = registries::table
                .find(id)
                .select(registries::status)
                .first(conn)
                .await
                .optional()?;
            match exists {
                None => Err(AppError::NotFound("registry")),
                Some(current) => Err(AppError::Conflict(format!(
                    "the registry is {} and cannot become {}",
                    current.as_db_str().to_uppercase(),
                    to.as_db_str().to_uppercase()
                ))),
            }
        }
    }
}
