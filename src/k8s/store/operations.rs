//! Deployment operations: recording, leases, steps, completion, cancellation and step logs.

use super::cluster_rows::lock_cluster;
use super::*;

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
        append_log(
            c,
            op.id,
            "info",
            &format!(
                "deploy of {}/{} initiated by {}",
                inst.namespace, inst.name, actor.name
            ),
        )
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
        append_log(
            c,
            op.id,
            "info",
            &format!("{operation} of {label} initiated by {}", actor.name),
        )
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

/// The configuration before the newest completed operation that changed it (operations
/// record what they replaced in `rollbackInfo.configuration`): what a rollback of an operator
/// instance re-applies.
pub async fn previous_configuration(
    pool: &DbPool,
    instance: Uuid,
    current: &Value,
) -> AppResult<Option<Value>> {
    let mut c = conn(pool).await?;
    let ops: Vec<DeploymentRow> = deployments::table
        .filter(deployments::instance_id.eq(instance))
        .filter(deployments::status.eq(DeploymentStatus::Completed))
        .order(deployments::started_at.desc())
        .limit(50)
        .select(DeploymentRow::as_select())
        .load(&mut c)
        .await?;
    Ok(ops
        .into_iter()
        .filter_map(|op| op.rollback_info?.get("configuration").cloned())
        .find(|cfg| cfg.is_object() && cfg != current))
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
        append_log(c, id, level, &line).await?;
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
        append_log(c, id, level, &line).await?;
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
        append_log(c, id, "warn", &format!("cancelled by {}", actor.name)).await?;
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
    append_log(&mut c, id, level, message).await
}

/// Appends a log line to an operation on `c` (inside the caller's transaction, if any).
async fn append_log(
    c: &mut AsyncPgConnection,
    id: Uuid,
    level: &str,
    message: &str,
) -> AppResult<()> {
    diesel::insert_into(deployment_logs::table)
        .values((
            deployment_logs::deployment_id.eq(id),
            deployment_logs::level.eq(level),
            deployment_logs::message.eq(message),
        ))
        .execute(c)
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
