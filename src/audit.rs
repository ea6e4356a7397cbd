//! The audit trail: who did what, when, to which object, with what outcome.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use dataloaders::schema::audit_log;

/// Who asked for a change, for the audit trail.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub request_id: String,
}

pub mod backlog;

/// One audit record, written in the same transaction as the change it describes.
#[derive(Clone)]
pub struct AuditEntry {
    /// When it happened (kept when the record waits in the [`backlog`]).
    at: chrono::DateTime<chrono::Utc>,
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
            at: chrono::Utc::now(),
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
            at: chrono::Utc::now(),
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

/// Refusals already recorded: one row per refused request (a request refused on every one of
/// its root fields writes one row), and at most [`ANONYMOUS_DENIALS_PER_MINUTE`] rows a minute
/// for anonymous callers, so that anonymous traffic cannot flood the trail.
struct DenialGate {
    requests: std::collections::HashMap<String, std::time::Instant>,
    anonymous: (std::time::Instant, u32),
}

/// Most audit rows of anonymous refusals written per minute (per process).
pub const ANONYMOUS_DENIALS_PER_MINUTE: u32 = 60;

impl DenialGate {
    fn admit(&mut self, e: &AuditEntry, now: std::time::Instant) -> bool {
        const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
        if e.outcome != "denied" {
            return true;
        }
        if self.requests.len() > 10_000 {
            self.requests
                .retain(|_, at| now.duration_since(*at) < MINUTE);
        }
        if !e.request_id.is_empty() && self.requests.insert(e.request_id.clone(), now).is_some() {
            return false;
        }
        if e.actor != "anonymous" {
            return true;
        }
        if now.duration_since(self.anonymous.0) >= MINUTE {
            self.anonymous = (now, 0);
        }
        self.anonymous.1 += 1;
        self.anonymous.1 <= ANONYMOUS_DENIALS_PER_MINUTE
    }
}

fn admit(e: &AuditEntry) -> bool {
    static GATE: std::sync::OnceLock<std::sync::Mutex<DenialGate>> = std::sync::OnceLock::new();
    let gate = GATE.get_or_init(|| {
        std::sync::Mutex::new(DenialGate {
            requests: Default::default(),
            anonymous: (std::time::Instant::now(), 0),
        })
    });
    gate.lock()
        .unwrap_or_else(|p| p.into_inner())
        .admit(e, std::time::Instant::now())
}

/// Writes an audit record on a connection of its own (for refusals and failures, whose change
/// transaction never committed). Refusals are recorded once per request, and anonymous ones at a
/// bounded rate ([`DenialGate`]). A record the database cannot take now (an outage, a full pool)
/// waits in the [`backlog`] and is written when it answers again.
pub async fn record_standalone(pool: &dataloaders::DbPool, e: AuditEntry) {
    if !admit(&e) {
        return;
    }
    let action = e.action;
    let written = match crate::db::conn(pool).await {
        Ok(mut conn) => record(&mut conn, e.clone())
            .await
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(error) = written {
        static KEPT_LOG: crate::log_gate::LogGate = crate::log_gate::LogGate::new();
        if let Some(count) = KEPT_LOG.admit() {
            tracing::warn!(
                %action, %error, count,
                "audit records kept in memory until the database answers"
            );
        }
        backlog::keep(pool, e);
    }
}

/// Writes an audit record.
pub async fn record(
    conn: &mut AsyncPgConnection,
    e: AuditEntry,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::at.eq(e.at),
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
