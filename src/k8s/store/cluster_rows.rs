//! Cluster rows: registration, updates, removal and check results.

use super::*;

/// The result of checking a cluster.
#[derive(Debug, Clone)]
pub struct ClusterCheck {
    pub status: ClusterStatus,
    pub version: Option<String>,
    pub capabilities: Vec<String>,
    pub resource_quota: Value,
    pub access_level: AccessLevel,
    pub simulated: bool,
    pub error: Option<String>,
}

/// A new cluster row.
pub struct NewCluster {
    /// Chosen before the insert: sealed credentials are bound to the row id.
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    pub context: Option<String>,
    pub in_cluster: bool,
    /// Sealed credentials (see `credentials::seal`).
    pub credentials: Option<Value>,
}

fn cluster_unique(e: DieselError) -> AppError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("clusters_name_key") =>
        {
            AppError::bad_input("name", "a cluster with this name already exists")
        }
        other => AppError::from(other),
    }
}

/// Whether a registered cluster other than `except` has this name (case-insensitive).
pub async fn cluster_name_taken(
    pool: &DbPool,
    name: &str,
    except: Option<Uuid>,
) -> AppResult<bool> {
    let mut c = conn(pool).await?;
    let n: i64 = clusters::table
        .filter(clusters::removed_at.is_null())
        .filter(clusters::id.ne(except.unwrap_or(Uuid::nil())))
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(name) = lower(")
                .bind::<diesel::sql_types::Text, _>(name.to_string())
                .sql(")"),
        )
        .count()
        .get_result(&mut c)
        .await?;
    Ok(n > 0)
}

/// Inserts a checked cluster with its audit record.
pub async fn insert_cluster(
    pool: &DbPool,
    actor: &Actor,
    new: NewCluster,
    check: &ClusterCheck,
) -> AppResult<ClusterRow> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    let check = check.clone();
    c.transaction::<_, AppError, _>(async move |c| {
        let row: ClusterRow = diesel::insert_into(clusters::table)
            .values((
                clusters::id.eq(new.id),
                clusters::name.eq(&new.name),
                clusters::endpoint.eq(&new.endpoint),
                clusters::context.eq(&new.context),
                clusters::in_cluster.eq(new.in_cluster),
                clusters::credentials.eq(&new.credentials),
                clusters::simulated.eq(check.simulated),
                clusters::status.eq(check.status),
                clusters::version.eq(&check.version),
                clusters::capabilities.eq(&check.capabilities),
                clusters::resource_quota.eq(&check.resource_quota),
                clusters::access_level.eq(check.access_level),
                clusters::last_checked_at.eq(Some(Utc::now())),
                clusters::last_error.eq(&check.error),
            ))
            .returning(ClusterRow::as_returning())
            .get_result(c)
            .await
            .map_err(cluster_unique)?;
        audit::record(
            c,
            AuditEntry::success(&actor, "registerCluster", "cluster", row.id).details(json!({
                "name": row.name, "context": row.context, "inCluster": row.in_cluster,
                "endpoint": row.endpoint, "storedCredentials": row.credentials.is_some(),
                "status": row.status, "accessLevel": row.access_level,
            })),
        )
        .await?;
        Ok(row)
    })
    .await
}

/// New settings of a cluster (`updateCluster`); `None` keeps the current value.
pub struct ClusterChange {
    pub name: Option<String>,
    /// New way to reach the cluster: endpoint, context, sealed credentials, and the check made
    /// with it.
    pub access: Option<(String, Option<String>, Option<Value>, ClusterCheck)>,
}

/// Applies `updateCluster` with its audit record.
pub async fn update_cluster(
    pool: &DbPool,
    actor: &Actor,
    id: Uuid,
    change: ClusterChange,
) -> AppResult<ClusterRow> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    c.transaction::<_, AppError, _>(async move |c| {
        let target = clusters::table
            .find(id)
            .filter(clusters::removed_at.is_null());
        let found: Option<Uuid> = target
            .select(clusters::id)
            .for_update()
            .first(c)
            .await
            .optional()?;
        if found.is_none() {
            return Err(AppError::NotFound("cluster"));
        }
        if let Some(name) = &change.name {
            diesel::update(target)
                .set(clusters::name.eq(name))
                .execute(c)
                .await
                .map_err(cluster_unique)?;
        }
        if let Some((endpoint, context, credentials, check)) = &change.access {
            diesel::update(target)
                .set((
                    clusters::endpoint.eq(endpoint),
                    clusters::context.eq(context),
                    clusters::in_cluster.eq(false),
                    clusters::credentials.eq(credentials),
                    clusters::status.eq(check.status),
                    clusters::version.eq(&check.version),
                    clusters::capabilities.eq(&check.capabilities),
                    clusters::resource_quota.eq(&check.resource_quota),
                    clusters::access_level.eq(check.access_level),
                    clusters::simulated.eq(check.simulated),
                    clusters::last_checked_at.eq(Some(Utc::now())),
                    clusters::last_error.eq(&check.error),
                ))
                .execute(c)
                .await?;
        }
        let row: ClusterRow = diesel::update(target)
            .set(clusters::updated_at.eq(Utc::now()))
            .returning(ClusterRow::as_returning())
            .get_result(c)
            .await?;
        audit::record(
            c,
            AuditEntry::success(&actor, "updateCluster", "cluster", id).details(json!({
                "name": row.name, "renamed": change.name.is_some(),
                "credentialsReplaced": change.access.is_some(), "endpoint": row.endpoint,
                "storedCredentials": row.credentials.is_some(), "status": row.status,
                "accessLevel": row.access_level,
            })),
        )
        .await?;
        Ok(row)
    })
    .await
}

/// `deleteCluster`: refused (`CONFLICT`, audited as denied, naming them) while any instance on
/// the cluster is not TERMINATED; otherwise the row becomes a tombstone without credentials, so
/// that the history of its past instances stays readable. Returns the number of those past
/// instances.
pub async fn remove_cluster(pool: &DbPool, actor: &Actor, id: Uuid) -> AppResult<i64> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    // A refusal is returned as Ok(Err(..)) so that its audit record commits.
    c.transaction::<Result<i64, AppError>, AppError, _>(async move |c| {
            let target = clusters::table
                .find(id)
                .filter(clusters::removed_at.is_null());
            // Locks out deploys to this cluster until we are done (they lock the row too).
            let name: Option<String> = target
                .select(clusters::name)
                .for_update()
                .first(c)
                .await
                .optional()?;
            let Some(name) = name else {
                return Err(AppError::NotFound("cluster"));
            };
            let live: Vec<(Uuid, String, String, InstanceStatus)> = instances::table
                .filter(instances::cluster_id.eq(id))
                .filter(instances::status.ne(InstanceStatus::Terminated))
                .order((instances::namespace, instances::name))
                .select((
                    instances::id,
                    instances::namespace,
                    instances::name,
                    instances::status,
                ))
                .load(c)
                .await?;
            if !live.is_empty() {
                let listed: Vec<String> = live
                    .iter()
                    .map(|(_, ns, n, st)| format!("{ns}/{n} ({})", st.as_db_str().to_uppercase()))
                    .collect();
                audit::record(
                    c,
                    AuditEntry::new(&actor, "deleteCluster", "cluster", id, "denied").details(
                        json!({"reason": "live instances",
                               "instances": live.iter().map(|l| l.0).collect::<Vec<_>>()}),
                    ),
                )
                .await?;
                return Ok(Err(AppError::Conflict(format!(
                    "cluster {name} still has {} instance(s) that are not terminated: {}; delete                      them first with deleteInstance",
                    live.len(),
                    listed.join(", ")
                ))));
            }
            let past: i64 = instances::table
                .filter(instances::cluster_id.eq(id))
                .count()
                .get_result(c)
                .await?;
            diesel::update(target)
                .set((
                    clusters::removed_at.eq(Some(Utc::now())),
                    clusters::credentials.eq(None::<Value>),
                    clusters::status.eq(ClusterStatus::Disconnected),
                    clusters::last_error.eq(Some("the cluster was removed")),
                    clusters::updated_at.eq(Utc::now()),
                ))
                .execute(c)
                .await?;
            audit::record(
                c,
                AuditEntry::success(&actor, "deleteCluster", "cluster", id)
                    .details(json!({"name": name, "pastInstances": past})),
            )
            .await?;
            Ok(Ok(past))
        })
        .await?
}

/// Locks a registered cluster's row against removal for the rest of the transaction; false
/// when the cluster was removed.
pub(super) async fn lock_cluster(c: &mut AsyncPgConnection, id: Uuid) -> AppResult<bool> {
    Ok(clusters::table
        .find(id)
        .filter(clusters::removed_at.is_null())
        .select(clusters::id)
        .for_share()
        .first::<Uuid>(c)
        .await
        .optional()?
        .is_some())
}

/// Stores the result of a check.
pub async fn update_cluster_check(
    pool: &DbPool,
    id: Uuid,
    check: &ClusterCheck,
) -> AppResult<Option<ClusterRow>> {
    let mut c = conn(pool).await?;
    // A failed check keeps what was last known about version, capabilities and access.
    let reachable = check.status == ClusterStatus::Connected;
    let q = diesel::update(clusters::table.find(id));
    let row = if reachable {
        q.set((
            clusters::status.eq(check.status),
            clusters::version.eq(&check.version),
            clusters::capabilities.eq(&check.capabilities),
            clusters::resource_quota.eq(&check.resource_quota),
            clusters::access_level.eq(check.access_level),
            clusters::simulated.eq(check.simulated),
            clusters::last_checked_at.eq(Some(Utc::now())),
            clusters::last_error.eq(&check.error),
            clusters::updated_at.eq(Utc::now()),
        ))
        .returning(ClusterRow::as_returning())
        .get_result(&mut c)
        .await
        .optional()?
    } else {
        q.set((
            clusters::status.eq(check.status),
            clusters::last_checked_at.eq(Some(Utc::now())),
            clusters::last_error.eq(&check.error),
            clusters::updated_at.eq(Utc::now()),
        ))
        .returning(ClusterRow::as_returning())
        .get_result(&mut c)
        .await
        .optional()?
    };
    Ok(row.inspect(|r| crate::metrics::cluster_status(&r.name, r.status.as_db_str())))
}

/// One registered cluster (None once removed).
pub async fn cluster(pool: &DbPool, id: Uuid) -> AppResult<Option<ClusterRow>> {
    let mut c = conn(pool).await?;
    Ok(clusters::table
        .find(id)
        .filter(clusters::removed_at.is_null())
        .select(ClusterRow::as_select())
        .first(&mut c)
        .await
        .optional()?)
}

/// Every registered cluster (not removed ones).
pub async fn all_clusters(pool: &DbPool) -> AppResult<Vec<ClusterRow>> {
    let mut c = conn(pool).await?;
    Ok(clusters::table
        .filter(clusters::removed_at.is_null())
        .select(ClusterRow::as_select())
        .load(&mut c)
        .await?)
}
