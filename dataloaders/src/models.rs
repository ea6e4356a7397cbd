//! Row types: one struct per table, selected with `Selectable` so that column order can never
//! drift from `schema.rs`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value as Json;
use uuid::Uuid;

use crate::enums::*;
use crate::schema::*;
use crate::width::OrDefault;

/// A registry row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = registries, check_for_backend(diesel::pg::Pg))]
pub struct RegistryRow {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    pub status: RegistryStatus,
    pub format: RegistryFormat,
    pub server_count: i32,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_sync_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub sync_interval_seconds: i32,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub metadata: Json,
    pub auth_config: Option<Json>,
    pub auth_kind: RegistryAuthKind,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the last sync attempt did (counts, skipped entries); written by the sync.
    pub last_sync_report: Option<Json>,
    /// Upstream sync state (detected format, incremental watermark); written by the sync.
    pub sync_state: Json,
    /// When the registry was deleted (archived: hidden from lists, kept for history).
    pub archived_at: Option<DateTime<Utc>>,
}

/// A server row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = servers, check_for_backend(diesel::pg::Pg))]
pub struct ServerRow {
    pub id: Uuid,
    pub registry_id: Uuid,
    pub name: String,
    #[diesel(deserialize_as = OrDefault<String>)]
    pub original_name: String,
    #[diesel(deserialize_as = OrDefault<String>)]
    pub description: String,
    pub version: Option<String>,
    pub image: Option<String>,
    pub url: Option<String>,
    pub transport: Transport,
    pub tier: ServerTier,
    pub status: ServerStatus,
    #[diesel(deserialize_as = OrDefault<Vec<String>>)]
    pub category: Vec<String>,
    #[diesel(deserialize_as = OrDefault<Vec<String>>)]
    pub capabilities: Vec<String>,
    pub repository_url: Option<String>,
    #[diesel(deserialize_as = OrDefault<Json>)]
    pub network_permissions: Json,
    pub pull_count: i64,
    pub stars: i64,
    pub last_updated: Option<DateTime<Utc>>,
    #[diesel(deserialize_as = OrDefault<Json>)]
    pub deployment_requirements: Json,
    pub removed_upstream_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Hash of the normalised upstream entry, so that a sync skips unchanged servers.
    pub sync_hash: Option<String>,
    /// When the server's registry was deleted (archived with it).
    pub archived_at: Option<DateTime<Utc>>,
}

/// A cluster row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = clusters, check_for_backend(diesel::pg::Pg))]
pub struct ClusterRow {
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    pub context: Option<String>,
    pub in_cluster: bool,
    pub simulated: bool,
    pub status: ClusterStatus,
    pub version: Option<String>,
    pub capabilities: Vec<String>,
    pub resource_quota: Json,
    pub access_level: AccessLevel,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub credentials: Option<Json>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the cluster was removed (`deleteCluster`); the row stays for its instances' history.
    pub removed_at: Option<DateTime<Utc>>,
}

/// An instance row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = instances, check_for_backend(diesel::pg::Pg))]
pub struct InstanceRow {
    pub id: Uuid,
    pub server_id: Uuid,
    pub cluster_id: Uuid,
    pub name: String,
    pub namespace: String,
    pub status: InstanceStatus,
    pub phase: InstancePhase,
    pub replicas_desired: i32,
    pub replicas_current: i32,
    pub replicas_ready: i32,
    pub deployed_at: Option<DateTime<Utc>>,
    #[diesel(deserialize_as = OrDefault<Json>)]
    pub configuration: Json,
    pub health_status: HealthStatus,
    pub health_reason: Option<String>,
    #[diesel(deserialize_as = OrDefault<Json>)]
    pub logs: Json,
    #[diesel(deserialize_as = OrDefault<Json>)]
    pub events: Json,
    pub last_warning: Option<Json>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The in-cluster URL, once known.
    pub endpoint: Option<String>,
}

/// A deployment operation row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = deployments, check_for_backend(diesel::pg::Pg))]
pub struct DeploymentRow {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub server_id: Uuid,
    pub operation: DeploymentOperation,
    pub initiated_by: String,
    pub status: DeploymentStatus,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub parameters: Json,
    pub steps: Json,
    pub errors: Json,
    pub rollback_info: Option<Json>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A log line of a deployment operation.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = deployment_logs, check_for_backend(diesel::pg::Pg))]
pub struct DeploymentLogRow {
    pub id: i64,
    pub deployment_id: Uuid,
    pub logged_at: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
}

/// A monitoring sample row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = monitoring_metrics, check_for_backend(diesel::pg::Pg))]
pub struct MetricsRow {
    pub id: i64,
    pub instance_id: Uuid,
    pub timestamp: DateTime<Utc>,
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<i64>,
    #[diesel(deserialize_as = OrDefault<Json>)]
    pub network_io: Json,
    pub request_count: Option<i64>,
    pub response_time: Option<f64>,
    pub error_rate: Option<f64>,
    #[diesel(deserialize_as = OrDefault<Json>)]
    pub health_checks: Json,
}

/// An hourly aggregate of an instance's monitoring samples.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = monitoring_metrics_hourly, check_for_backend(diesel::pg::Pg))]
pub struct HourlyMetricsRow {
    pub instance_id: Uuid,
    pub bucket: DateTime<Utc>,
    pub samples: i32,
    pub cpu_usage_avg: Option<f64>,
    pub cpu_usage_max: Option<f64>,
    pub memory_usage_avg: Option<f64>,
    pub memory_usage_max: Option<i64>,
    pub request_count_sum: Option<i64>,
    pub response_time_avg: Option<f64>,
    pub error_rate_avg: Option<f64>,
    pub healthy_ratio: Option<f64>,
}

/// An audit log row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub outcome: String,
    pub request_id: Option<String>,
    pub details: Json,
}

/// A namespace grant row.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = namespace_grants, check_for_backend(diesel::pg::Pg))]
pub struct GrantRow {
    pub id: Uuid,
    pub subject: String,
    pub namespace: String,
    pub granted_by: String,
    pub created_at: DateTime<Utc>,
}
