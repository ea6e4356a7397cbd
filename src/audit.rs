//! The audit trail: who did what, when, to which object, with what outcome.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use dataloaders::schema::audit_log;

use crate::registries::store::Actor;

/// One audit record, written in the same transaction as the change it describes.
pub struct AuditEntry {
    actor: String,
    request_id: String,
    action: &'static str,
    target_type: &'static str,
    target_id: String,
    outcome: &'static str,
    details: serde_json::Value,
}

impl AuditEntry {
    /// A record with an explicit outcome (`success`, `denied` or `error`).
    pub fn new(
        actor: &Actor,
        action: &'static str,
        target_type: &'static str,
        target: Uuid,
        outcome: &'static str,
    ) -> Self {
        AuditEntry {
            actor: actor.name.clone(),
            request_id: actor.request_id.clone(),
            action,
            target_type,
            target_id: target.to_string(),
            outcome,
            details: serde_json::json!({}),
        }
    }

    /// A record whose target is not a row id (for example a grant, `subject/namespace`), or is
    /// not known (a create that failed).
    pub fn raw(
        actor: &Actor,
        action: &'static str,
        target_type: &'static str,
        target: Option<String>,
        outcome: &'static str,
    ) -> Self {
        AuditEntry {
            actor: actor.name.clone(),
            request_id: actor.request_id.clone(),
            action,
            target_type,
            target_id: target.unwrap_or_default(),
            outcome,
            details: serde_json::json!({}),
        }
    }

    /// A successful change.
    pub fn success(
        actor: &Actor,
        action: &'static str,
        target_type: &'static str,
        target: Uuid,
    ) -> Self {
        Self::new(actor, action, target_type, target, "success")
    }

    /// Attaches details (never secrets).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Writes an audit record on a connection of its own (for refusals and failures, whose change
/// transaction never committed). Failing to write it is logged, never hidden.
pub async fn record_standalone(pool: &dataloaders::DbPool, e: AuditEntry) {
    let action = e.action;
    match pool.get().await {
        Ok(mut conn) => {
            if let Err(err) = record(&mut conn, e).await {
                tracing::error!(%action, error = %err, "could not write an audit record");
            }
        }
        Err(err) => tracing::error!(%action, error = %err, "could not write an audit record"),
    }
}

/// Writes an audit record.
pub async fn record(
    conn: &mut AsyncPgConnection,
    e: AuditEntry,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::actor.eq(e.actor),
            audit_log::action.eq(e.action),
            audit_log::target_type.eq(Some(e.target_type)),
            audit_log::target_id.eq((!e.target_id.is_empty()).then_some(e.target_id)),
            audit_log::outcome.eq(e.outcome),
            audit_log::request_id.eq(Some(e.request_id)),
            audit_log::details.eq(e.details),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
