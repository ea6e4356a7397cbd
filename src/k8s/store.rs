//! Database side of clusters, instances and deployment operations. Operation records follow the
//! data model's state machine; every write by a driver is conditioned on holding the operation's
//! lease (`lease_owner`), so two gateway processes can never both drive one operation.

use chrono::{DateTime, Utc};
use dataloaders::DbPool;
use dataloaders::enums::*;
use dataloaders::models::{ClusterRow, DeploymentRow, InstanceRow, ServerRow};
use dataloaders::schema::{clusters, deployment_logs, deployments, instances, servers};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use uuid::Uuid;

use super::health::Observed;
use crate::audit::Actor;
use crate::audit::{self, AuditEntry};
use crate::error::{AppError, AppResult};

async fn conn(pool: &DbPool) -> AppResult<dataloaders::DbConn> {
    Ok(crate::db::conn(pool).await?)
}

/// A step record (`DeploymentStep` in GraphQL).
pub fn step(name: &str, status: &str, message: Option<&str>) -> Value {
    json!({"name": name, "status": status, "at": Utc::now(), "message": message})
}

// ---------------------------------------------------------------------------------------------
// clusters
// ---------------------------------------------------------------------------------------------

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
async fn lock_cluster(c: &mut AsyncPgConnection, id: Uuid) -> AppResult<bool> {
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
    Ok(row)
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

// ---------------------------------------------------------------------------------------------
// servers and instances
// ---------------------------------------------------------------------------------------------

/// One server.
pub async fn server(pool: &DbPool, id: Uuid) -> AppResult<Option<ServerRow>> {
    let mut c = conn(pool).await?;
    Ok(servers::table
        .find(id)
        .select(ServerRow::as_select())
        .first(&mut c)
        .await
        .optional()?)
}

/// One instance.
pub async fn instance(pool: &DbPool, id: Uuid) -> AppResult<Option<InstanceRow>> {
    let mut c = conn(pool).await?;
    Ok(instances::table
        .find(id)
        .select(InstanceRow::as_select())
        .first(&mut c)
        .await
        .optional()?)
}

/// Whether a live (not terminated) instance uses this name.
pub async fn instance_name_taken(
    pool: &DbPool,
    cluster: Uuid,
    namespace: &str,
    name: &str,
) -> AppResult<bool> {
    let mut c = conn(pool).await?;
    let n: i64 = instances::table
        .filter(instances::cluster_id.eq(cluster))
        .filter(instances::namespace.eq(namespace))
        .filter(instances::name.eq(name))
        .filter(instances::status.ne(InstanceStatus::Terminated))
        .count()
        .get_result(&mut c)
        .await?;
    Ok(n > 0)
}

/// Live instances, as (id, cluster, namespace, name).
pub async fn live_instances(pool: &DbPool) -> AppResult<Vec<(Uuid, Uuid, String, String)>> {
    let mut c = conn(pool).await?;
    Ok(instances::table
        .filter(instances::status.ne(InstanceStatus::Terminated))
        .select((
            instances::id,
            instances::cluster_id,
            instances::namespace,
            instances::name,
        ))
        .load(&mut c)
        .await?)
}

/// Records that the instance's Deployment was applied (first time only).
pub async fn mark_deployed(pool: &DbPool, id: Uuid) -> AppResult<()> {
    let mut c = conn(pool).await?;
    diesel::update(
        instances::table
            .find(id)
            .filter(instances::deployed_at.is_null()),
    )
    .set(instances::deployed_at.eq(Some(Utc::now())))
    .execute(&mut c)
    .await?;
    Ok(())
}

/// Stores a new desired configuration (after a scale).
pub async fn set_configuration(pool: &DbPool, id: Uuid, configuration: &Value) -> AppResult<()> {
    let mut c = conn(pool).await?;
    diesel::update(instances::table.find(id))
        .set((
            instances::configuration.eq(configuration),
            instances::updated_at.eq(Utc::now()),
        ))
        .execute(&mut c)
        .await?;
    Ok(())
}

/// Writes an observation into the instance row when it changes anything. A terminated instance
/// stays terminated. A missing Deployment terminates the instance only when the observer knew
/// the instance deployed before it looked (`deployed_before`): the row's `deployed_at` read
/// now may have been set by a driver that created the Deployment after the observer looked.
/// `scaling` reports a progressing rollout as SCALING (a scale operation is open).
pub async fn apply_observation(
    pool: &DbPool,
    id: Uuid,
    o: &Observed,
    scaling: bool,
    deployed_before: bool,
) -> AppResult<bool> {
    let mut c = conn(pool).await?;
    let Some(row) = instances::table
        .find(id)
        .select(InstanceRow::as_select())
        .first(&mut c)
        .await
        .optional()?
    else {
        return Ok(false);
    };
    if row.status == InstanceStatus::Terminated {
        return Ok(false);
    }
    if o.missing && (row.deployed_at.is_none() || !deployed_before) {
        return Ok(false);
    }
    let mut phase = o.phase;
    if scaling && phase == InstancePhase::Deploying && o.status != InstanceStatus::Failed {
        phase = InstancePhase::Scaling;
    }
    let status = if o.missing && o.pods > 0 {
        // Still terminating: terminated once the last pod is gone.
        row.status
    } else {
        o.status
    };
    let events = Value::Array(o.events.clone());
    let reason = Some(o.reason.clone()).filter(|r| !r.is_empty());
    let unchanged = row.status == status
        && row.phase == phase
        && row.replicas_desired == o.desired
        && row.replicas_current == o.current
        && row.replicas_ready == o.ready
        && row.health_status == o.health
        && row.health_reason == reason
        && row.last_warning == o.last_warning
        && row.events == events;
    if unchanged {
        return Ok(false);
    }
    let n = diesel::update(
        instances::table
            .find(id)
            .filter(instances::status.ne(InstanceStatus::Terminated)),
    )
    .set((
        instances::status.eq(status),
        instances::phase.eq(phase),
        instances::replicas_desired.eq(o.desired),
        instances::replicas_current.eq(o.current),
        instances::replicas_ready.eq(o.ready),
        instances::health_status.eq(o.health),
        instances::health_reason.eq(reason),
        instances::last_warning.eq(&o.last_warning),
        instances::events.eq(events),
        instances::updated_at.eq(Utc::now()),
    ))
    .execute(&mut c)
    .await?;
    Ok(n > 0)
}

/// Marks an instance TERMINATED (its objects are gone from the cluster).
pub async fn terminate_instance(pool: &DbPool, id: Uuid, reason: &str) -> AppResult<()> {
    let mut c = conn(pool).await?;
    diesel::update(instances::table.find(id))
        .set((
            instances::status.eq(InstanceStatus::Terminated),
            // The objects are gone: nothing is in progress any more.
            instances::phase.eq(InstancePhase::Ready),
            instances::replicas_desired.eq(0),
            instances::replicas_current.eq(0),
            instances::replicas_ready.eq(0),
            instances::health_status.eq(HealthStatus::Unknown),
            instances::health_reason.eq(Some(reason)),
            instances::updated_at.eq(Utc::now()),
        ))
        .execute(&mut c)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// operations
// ---------------------------------------------------------------------------------------------

fn open_op_conflict(e: DieselError) -> AppError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("deployments_one_open_per_instance") =>
        {
            AppError::Conflict(
                "another operation on this instance is still running; wait for it or cancel it"
                    .into(),
            )
        }
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("instances_live_object_key") =>
        {
            AppError::bad_input("name", "an instance with this name already exists there")
        }
        other => AppError::from(other),
    }
}

/// A new instance with its first (deploy) operation.
pub struct NewInstance {
    pub server_id: Uuid,
    pub cluster_id: Uuid,
    pub name: String,
    pub namespace: String,
    pub replicas: i32,
    pub configuration: Value,
    pub parameters: Value,
}

/// Creates the instance and its INITIATED deploy operation in one transaction, with the audit
/// record and the first step log.
pub async fn insert_deploy(
    pool: &DbPool,
    actor: &Actor,
    new: NewInstance,
) -> AppResult<(InstanceRow, DeploymentRow)> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    c.transaction::<_, AppError, _>(async move |c| {
        if !lock_cluster(c, new.cluster_id).await? {
            return Err(AppError::bad_input("clusterId", "no cluster with this id"));
        }
        let inst: InstanceRow = diesel::insert_into(instances::table)
            .values((
                instances::server_id.eq(new.server_id),
                instances::cluster_id.eq(new.cluster_id),
                instances::name.eq(&new.name),
                instances::namespace.eq(&new.namespace),
                instances::status.eq(InstanceStatus::Pending),
                instances::phase.eq(InstancePhase::Deploying),
                instances::replicas_desired.eq(new.replicas),
                instances::configuration.eq(&new.configuration),
                instances::health_reason.eq(Some("deployment initiated")),
            ))
            .returning(InstanceRow::as_returning())
            .get_result(c)
            .await
            .map_err(open_op_conflict)?;
        let steps = json!([step(
            "validate",
            "succeeded",
            Some("input and cluster checked")
        )]);
        let op: DeploymentRow = diesel::insert_into(deployments::table)
            .values((
                deployments::instance_id.eq(inst.id),
                deployments::server_id.eq(new.server_id),
                deployments::operation.eq(DeploymentOperation::Deploy),
                deployments::initiated_by.eq(&actor.name),
                deployments::status.eq(DeploymentStatus::Initiated),
                deployments::parameters.eq(&new.parameters),
                deployments::steps.eq(steps),
                deployments::rollback_info.eq(Some(
                    json!({"previousRevision": null, "previousReplicas": 0}),
                )),
            ))
            .returning(DeploymentRow::as_returning())
            .get_result(c)
            .await
            .map_err(open_op_conflict)?;
        diesel::insert_into(deployment_logs::table)
            .values((
                deployment_logs::deployment_id.eq(op.id),
                deployment_logs::level.eq("info"),
                deployment_logs::message.eq(format!(
                    "deploy of {}/{} initiated by {}",
                    inst.namespace, inst.name, actor.name
                )),
            ))
            .execute(c)
            .await?;
        audit::record(
            c,
            AuditEntry::success(&actor, "deployServer", "instance", inst.id)
                .details(json!({"deploymentId": op.id, "parameters": new.parameters})),
        )
        .await?;
        Ok((inst, op))
    })
    .await
}

/// Records a lifecycle operation (scale, restart, rollback, delete) of an instance.
pub async fn insert_op(
    pool: &DbPool,
    actor: &Actor,
    inst: &InstanceRow,
    operation: DeploymentOperation,
    parameters: Value,
    rollback_info: Value,
) -> AppResult<DeploymentRow> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    let (iid, sid) = (inst.id, inst.server_id);
    let label = format!("{}/{}", inst.namespace, inst.name);
    c.transaction::<_, AppError, _>(async move |c| {
        // Refuse on a terminated instance, under a row lock so a concurrent delete is seen.
        let status: InstanceStatus = instances::table
            .find(iid)
            .select(instances::status)
            .for_update()
            .first(c)
            .await?;
        if status == InstanceStatus::Terminated {
            return Err(AppError::Conflict(
                "the instance is terminated; deploy it again instead".into(),
            ));
        }
        let op: DeploymentRow = diesel::insert_into(deployments::table)
            .values((
                deployments::instance_id.eq(iid),
                deployments::server_id.eq(sid),
                deployments::operation.eq(operation),
                deployments::initiated_by.eq(&actor.name),
                deployments::status.eq(DeploymentStatus::Initiated),
                deployments::parameters.eq(&parameters),
                deployments::steps.eq(json!([step("validate", "succeeded", None)])),
                deployments::rollback_info.eq(Some(&rollback_info)),
            ))
            .returning(DeploymentRow::as_returning())
            .get_result(c)
            .await
            .map_err(open_op_conflict)?;
        diesel::insert_into(deployment_logs::table)
            .values((
                deployment_logs::deployment_id.eq(op.id),
                deployment_logs::level.eq("info"),
                deployment_logs::message.eq(format!(
                    "{operation} of {label} initiated by {}",
                    actor.name
                )),
            ))
            .execute(c)
            .await?;
        let action = match operation {
            DeploymentOperation::Deploy => "deployServer",
            DeploymentOperation::Scale => "scaleInstance",
            DeploymentOperation::Restart => "restartInstance",
            DeploymentOperation::Rollback => "rollbackInstance",
            DeploymentOperation::Delete => "deleteInstance",
            DeploymentOperation::Upgrade => "upgradeInstance",
        };
        audit::record(
            c,
            AuditEntry::success(&actor, action, "instance", iid)
                .details(json!({"deploymentId": op.id, "parameters": parameters})),
        )
        .await?;
        Ok(op)
    })
    .await
}

/// One operation.
pub async fn operation(pool: &DbPool, id: Uuid) -> AppResult<Option<DeploymentRow>> {
    let mut c = conn(pool).await?;
    Ok(deployments::table
        .find(id)
        .select(DeploymentRow::as_select())
        .first(&mut c)
        .await
        .optional()?)
}

/// The open operation of an instance, if any.
/// The newest operation of an instance that changed it (scale, restart, rollback or
/// upgrade), whatever its outcome.
pub async fn latest_op(pool: &DbPool, instance: Uuid) -> AppResult<Option<DeploymentRow>> {
    let mut c = conn(pool).await?;
    Ok(deployments::table
        .filter(deployments::instance_id.eq(instance))
        .filter(deployments::operation.eq_any([
            DeploymentOperation::Scale,
            DeploymentOperation::Restart,
            DeploymentOperation::Rollback,
            DeploymentOperation::Upgrade,
        ]))
        .order(deployments::started_at.desc())
        .select(DeploymentRow::as_select())
        .first(&mut c)
        .await
        .optional()?)
}

pub async fn open_op_of(pool: &DbPool, instance: Uuid) -> AppResult<Option<DeploymentRow>> {
    let mut c = conn(pool).await?;
    Ok(deployments::table
        .filter(deployments::instance_id.eq(instance))
        .filter(
            deployments::status.eq_any([DeploymentStatus::Initiated, DeploymentStatus::InProgress]),
        )
        .select(DeploymentRow::as_select())
        .first(&mut c)
        .await
        .optional()?)
}

/// Open operations whose lease is free or expired (to be picked up after a restart).
pub async fn orphaned_ops(pool: &DbPool) -> AppResult<Vec<Uuid>> {
    let mut c = conn(pool).await?;
    Ok(deployments::table
        .filter(
            deployments::status.eq_any([DeploymentStatus::Initiated, DeploymentStatus::InProgress]),
        )
        .filter(
            deployments::lease_until
                .is_null()
                .or(deployments::lease_until.lt(Utc::now())),
        )
        .select(deployments::id)
        .load(&mut c)
        .await?)
}

/// Takes the lease of an open operation: succeeds only when nobody else holds an unexpired one.
pub async fn claim(
    pool: &DbPool,
    id: Uuid,
    owner: &str,
    lease: chrono::Duration,
) -> AppResult<Option<DeploymentRow>> {
    let mut c = conn(pool).await?;
    let now = Utc::now();
    Ok(diesel::update(
        deployments::table
            .find(id)
            .filter(
                deployments::status
                    .eq_any([DeploymentStatus::Initiated, DeploymentStatus::InProgress]),
            )
            .filter(
                deployments::lease_owner
                    .is_null()
                    .or(deployments::lease_owner.eq(owner))
                    .or(deployments::lease_until.is_null())
                    .or(deployments::lease_until.lt(now)),
            ),
    )
    .set((
        deployments::lease_owner.eq(Some(owner)),
        deployments::lease_until.eq(Some(now + lease)),
        deployments::updated_at.eq(now),
    ))
    .returning(DeploymentRow::as_returning())
    .get_result(&mut c)
    .await
    .optional()?)
}

/// Extends a held lease; false when the operation ended or another process holds it.
pub async fn renew(
    pool: &DbPool,
    id: Uuid,
    owner: &str,
    lease: chrono::Duration,
) -> AppResult<bool> {
    let mut c = conn(pool).await?;
    let n = diesel::update(
        deployments::table
            .find(id)
            .filter(deployments::lease_owner.eq(owner))
            .filter(
                deployments::status
                    .eq_any([DeploymentStatus::Initiated, DeploymentStatus::InProgress]),
            ),
    )
    .set(deployments::lease_until.eq(Some(Utc::now() + lease)))
    .execute(&mut c)
    .await?;
    Ok(n > 0)
}

/// Gives a lease back (graceful shutdown), so another process can take over at once.
pub async fn release(pool: &DbPool, id: Uuid, owner: &str) -> AppResult<()> {
    let mut c = conn(pool).await?;
    diesel::update(
        deployments::table
            .find(id)
            .filter(deployments::lease_owner.eq(owner)),
    )
    .set(deployments::lease_until.eq(Some(Utc::now() - chrono::Duration::seconds(1))))
    .execute(&mut c)
    .await?;
    Ok(())
}

/// The states an operation may be in for an update that leaves it in `next`: those the state
/// machine allows moving from, and `next` itself when it is not an end state (a step appended
/// to a running operation). Every status write filters on this.
fn moving_to(next: DeploymentStatus) -> Vec<DeploymentStatus> {
    let mut from = DeploymentStatus::sources_of(next);
    if !next.is_terminal() {
        from.push(next);
    }
    from
}

/// Appends a step (and its log line), moving INITIATED to IN_PROGRESS. False when the lease is
/// lost or the operation ended (cancelled).
pub async fn add_step(
    pool: &DbPool,
    id: Uuid,
    owner: &str,
    name: &str,
    status: &str,
    message: Option<&str>,
) -> AppResult<bool> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let owner = owner.to_string();
    let st = step(name, status, message);
    let line = match message {
        Some(m) => format!("{name}: {status}: {m}"),
        None => format!("{name}: {status}"),
    };
    let level = match status {
        "failed" => "error",
        "retrying" => "warn",
        _ => "info",
    };
    c.transaction::<_, AppError, _>(async move |c| {
        let n = diesel::update(
            deployments::table
                .find(id)
                .filter(deployments::lease_owner.eq(&owner))
                .filter(deployments::status.eq_any(moving_to(DeploymentStatus::InProgress))),
        )
        .set((
            deployments::status.eq(DeploymentStatus::InProgress),
            deployments::steps.eq(diesel::dsl::sql::<diesel::sql_types::Jsonb>("steps || ")
                .bind::<diesel::sql_types::Jsonb, _>(json!([st]))),
            deployments::updated_at.eq(Utc::now()),
        ))
        .execute(c)
        .await?;
        if n == 0 {
            return Ok(false);
        }
        diesel::insert_into(deployment_logs::table)
            .values((
                deployment_logs::deployment_id.eq(id),
                deployment_logs::level.eq(level),
                deployment_logs::message.eq(line),
            ))
            .execute(c)
            .await?;
        Ok(true)
    })
    .await
}

/// Sets `rollback_info` (what undoing this operation needs), once known.
pub async fn set_rollback_info(
    pool: &DbPool,
    id: Uuid,
    owner: &str,
    info: &Value,
) -> AppResult<()> {
    let mut c = conn(pool).await?;
    diesel::update(
        deployments::table
            .find(id)
            .filter(deployments::lease_owner.eq(owner)),
    )
    .set(deployments::rollback_info.eq(Some(info)))
    .execute(&mut c)
    .await?;
    Ok(())
}

/// Ends an operation as COMPLETED or FAILED (with `error` = (reason, message)).
pub async fn finish(
    pool: &DbPool,
    id: Uuid,
    owner: &str,
    error: Option<(&str, &str)>,
) -> AppResult<bool> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let owner = owner.to_string();
    let (status, st, errors, line, level) = match error {
        None => (
            DeploymentStatus::Completed,
            step("complete", "succeeded", None),
            json!([]),
            "operation completed".to_string(),
            "info",
        ),
        Some((reason, message)) => (
            DeploymentStatus::Failed,
            step("complete", "failed", Some(&format!("{reason}: {message}"))),
            json!([{"reason": reason, "message": message, "at": Utc::now()}]),
            format!("operation failed: {reason}: {message}"),
            "error",
        ),
    };
    c.transaction::<_, AppError, _>(async move |c| {
        let now = Utc::now();
        let n = diesel::update(
            deployments::table
                .find(id)
                .filter(deployments::lease_owner.eq(&owner))
                .filter(deployments::status.eq_any(moving_to(status))),
        )
        .set((
            deployments::status.eq(status),
            deployments::completed_at.eq(Some(now)),
            deployments::steps.eq(diesel::dsl::sql::<diesel::sql_types::Jsonb>("steps || ")
                .bind::<diesel::sql_types::Jsonb, _>(json!([st]))),
            deployments::errors.eq(diesel::dsl::sql::<diesel::sql_types::Jsonb>("errors || ")
                .bind::<diesel::sql_types::Jsonb, _>(errors)),
            deployments::lease_owner.eq(None::<String>),
            deployments::lease_until.eq(None::<DateTime<Utc>>),
            deployments::updated_at.eq(now),
        ))
        .execute(c)
        .await?;
        if n == 0 {
            return Ok(false);
        }
        diesel::insert_into(deployment_logs::table)
            .values((
                deployment_logs::deployment_id.eq(id),
                deployment_logs::level.eq(level),
                deployment_logs::message.eq(line),
            ))
            .execute(c)
            .await?;
        Ok(true)
    })
    .await
}

/// Cancels an INITIATED or IN_PROGRESS operation; anything else is a CONFLICT.
pub async fn cancel(pool: &DbPool, actor: &Actor, id: Uuid) -> AppResult<DeploymentRow> {
    let mut pooled = conn(pool).await?;
    let c: &mut AsyncPgConnection = &mut pooled;
    let actor = actor.clone();
    c.transaction::<_, AppError, _>(async move |c| {
        let op: DeploymentRow = deployments::table
            .find(id)
            .select(DeploymentRow::as_select())
            .for_update()
            .first(c)
            .await
            .optional()?
            .ok_or(AppError::NotFound("deployment"))?;
        if !op.status.can_transition_to(DeploymentStatus::Cancelled) {
            return Err(AppError::Conflict(format!(
                "only INITIATED or IN_PROGRESS operations can be cancelled; this one is {}",
                op.status.as_db_str().to_uppercase()
            )));
        }
        if op.operation == DeploymentOperation::Delete && op.status == DeploymentStatus::InProgress
        {
            return Err(AppError::Conflict(
                "a deletion that has reached the cluster cannot be cancelled".into(),
            ));
        }
        let now = Utc::now().max(op.started_at);
        let row: DeploymentRow = diesel::update(deployments::table.find(id))
            .set((
                deployments::status.eq(DeploymentStatus::Cancelled),
                deployments::completed_at.eq(Some(now)),
                deployments::steps.eq(diesel::dsl::sql::<diesel::sql_types::Jsonb>("steps || ")
                    .bind::<diesel::sql_types::Jsonb, _>(json!([step(
                    "cancel",
                    "succeeded",
                    Some(&format!("cancelled by {}", actor.name))
                )]))),
                deployments::lease_owner.eq(None::<String>),
                deployments::lease_until.eq(None::<DateTime<Utc>>),
                deployments::updated_at.eq(now),
            ))
            .returning(DeploymentRow::as_returning())
            .get_result(c)
            .await?;
        diesel::insert_into(deployment_logs::table)
            .values((
                deployment_logs::deployment_id.eq(id),
                deployment_logs::level.eq("warn"),
                deployment_logs::message.eq(format!("cancelled by {}", actor.name)),
            ))
            .execute(c)
            .await?;
        audit::record(
            c,
            AuditEntry::success(&actor, "cancelDeployment", "deployment", id),
        )
        .await?;
        Ok(row)
    })
    .await
}

/// Appends a log line to an operation (outside its lease; for cancel follow-ups).
pub async fn log_line(pool: &DbPool, id: Uuid, level: &str, message: &str) -> AppResult<()> {
    let mut c = conn(pool).await?;
    diesel::insert_into(deployment_logs::table)
        .values((
            deployment_logs::deployment_id.eq(id),
            deployment_logs::level.eq(level),
            deployment_logs::message.eq(message),
        ))
        .execute(&mut c)
        .await?;
    Ok(())
}

/// One step log line of an operation.
#[derive(Debug, Clone, Queryable)]
pub struct LogLine {
    pub logged_at: DateTime<Utc>,
    pub level: String,
    pub message: String,
}

/// An operation's step log, oldest first.
pub async fn logs_of(pool: &DbPool, id: Uuid, limit: i64) -> AppResult<Vec<LogLine>> {
    let mut c = conn(pool).await?;
    Ok(deployment_logs::table
        .filter(deployment_logs::deployment_id.eq(id))
        .order((deployment_logs::logged_at.asc(), deployment_logs::id.asc()))
        .limit(limit)
        .select((
            deployment_logs::logged_at,
            deployment_logs::level,
            deployment_logs::message,
        ))
        .load(&mut c)
        .await?)
}

/// Deletes step logs past the 30-day retention; returns how many.
pub async fn purge_logs(pool: &DbPool) -> AppResult<usize> {
    let mut c = conn(pool).await?;
    Ok(diesel::delete(
        deployment_logs::table
            .filter(deployment_logs::logged_at.lt(Utc::now() - chrono::Duration::days(30))),
    )
    .execute(&mut c)
    .await?)
}
