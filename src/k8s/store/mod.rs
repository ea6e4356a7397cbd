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

mod cluster_rows;
mod operations;

pub use cluster_rows::*;
pub use operations::*;

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

/// The live instances of one namespace of one cluster; with `operator_only`, only those the
/// ToolHive operator runs.
pub async fn live_in(
    pool: &DbPool,
    cluster: Uuid,
    namespace: &str,
    operator_only: bool,
) -> AppResult<Vec<Uuid>> {
    let mut c = conn(pool).await?;
    let mut q = instances::table
        .filter(instances::cluster_id.eq(cluster))
        .filter(instances::namespace.eq(namespace))
        .filter(instances::status.ne(InstanceStatus::Terminated))
        .select(instances::id)
        .into_boxed();
    if operator_only {
        q = q.filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "configuration ->> 'backend' = 'operator'",
        ));
    }
    Ok(q.load(&mut c).await?)
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
    let endpoint = o.endpoint.clone().or_else(|| {
        serde_json::from_value::<super::manifests::InstanceSpec>(row.configuration.clone())
            .ok()
            .filter(|s| !s.is_operator())
            .and_then(|s| s.native_endpoint(&row.name, &row.namespace))
    });
    let unchanged = row.endpoint == endpoint
        && row.status == status
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
        instances::endpoint.eq(endpoint),
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
