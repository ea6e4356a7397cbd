//! Root-level list queries: filtered, keyset-paginated pages plus their total counts. The server
//! list, with search, sort orders and facets, is in [`crate::search`].

use chrono::{DateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::enums::*;
use crate::loaders::SortKey;
use crate::models::*;
use crate::schema::*;
use crate::{ReadError, Reader};

/// Filter of the root `registries` list.
#[derive(Debug, Clone, Default)]
pub struct RegistryFilter {
    pub status: Option<Vec<RegistryStatus>>,
}

/// Filter of the root `servers` list.
#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    pub registry_ids: Option<Vec<Uuid>>,
    pub transport: Option<Vec<Transport>>,
    pub tier: Option<Vec<ServerTier>>,
    pub status: Option<Vec<ServerStatus>>,
    /// Servers carrying all of these categories.
    pub category: Option<Vec<String>>,
    /// Servers offering all of these capabilities.
    pub capabilities: Option<Vec<String>>,
    /// Free-text search (normalised with [`crate::search::normalize_search`]); see
    /// [`crate::search`].
    pub search: Option<String>,
}

/// Filter of the root `instances` list.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub server_id: Option<Uuid>,
    pub cluster_id: Option<Uuid>,
    pub namespace: Option<String>,
    pub status: Option<Vec<InstanceStatus>>,
    /// `Some(true)`: only instances that match [`InstanceFilter::UPGRADE_AVAILABLE_SQL`];
    /// `Some(false)`: only those that do not.
    pub upgrade_available: Option<bool>,
}

impl InstanceFilter {
    /// Whether an instance's server offers another image or version than the one it runs:
    /// the rule of `hivegraph::k8s::drift::upgrade_of`, in SQL over `instances`.
    pub const UPGRADE_AVAILABLE_SQL: &str = "(instances.status <> 'terminated' AND EXISTS (\
        SELECT 1 FROM servers s WHERE s.id = instances.server_id AND s.image IS NOT NULL \
        AND s.image NOT LIKE '%://%' \
        AND ((instances.configuration->>'image') IS DISTINCT FROM s.image \
          OR (instances.configuration ? 'serverVersion' \
              AND (instances.configuration->>'serverVersion') IS DISTINCT FROM s.version))))";
}

/// Filter of the root `deployments` list.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub instance_id: Option<Uuid>,
    pub server_id: Option<Uuid>,
    pub status: Option<Vec<DeploymentStatus>>,
}

fn parse_ts(v: &str) -> Result<DateTime<Utc>, ReadError> {
    DateTime::parse_from_rfc3339(v)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| ReadError::Query("malformed cursor".into()))
}

macro_rules! registry_filtered {
    ($f:expr) => {{
        // Deleted registries are archived: kept for history, never listed.
        let mut q = registries::table
            .filter(registries::archived_at.is_null())
            .into_boxed();
        if let Some(s) = &$f.status {
            q = q.filter(registries::status.eq_any(s.clone()));
        }
        q
    }};
}

macro_rules! instance_filtered {
    ($f:expr) => {{
        let mut q = instances::table.into_boxed();
        if let Some(id) = $f.server_id {
            q = q.filter(instances::server_id.eq(id));
        }
        if let Some(id) = $f.cluster_id {
            q = q.filter(instances::cluster_id.eq(id));
        }
        if let Some(ns) = &$f.namespace {
            q = q.filter(instances::namespace.eq(ns.clone()));
        }
        if let Some(s) = &$f.status {
            q = q.filter(instances::status.eq_any(s.clone()));
        }
        if let Some(wanted) = $f.upgrade_available {
            let cond = if wanted {
                InstanceFilter::UPGRADE_AVAILABLE_SQL.to_string()
            } else {
                format!("NOT {}", InstanceFilter::UPGRADE_AVAILABLE_SQL)
            };
            q = q.filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&cond));
        }
        q
    }};
}

macro_rules! deployment_filtered {
    ($f:expr) => {{
        let mut q = deployments::table.into_boxed();
        if let Some(id) = $f.instance_id {
            q = q.filter(deployments::instance_id.eq(id));
        }
        if let Some(id) = $f.server_id {
            q = q.filter(deployments::server_id.eq(id));
        }
        if let Some(s) = &$f.status {
            q = q.filter(deployments::status.eq_any(s.clone()));
        }
        q
    }};
}

impl Reader {
    /// A page of registries ordered by name.
    pub async fn registries_page(
        &self,
        filter: &RegistryFilter,
        after: Option<&SortKey>,
        limit: i64,
    ) -> Result<Vec<RegistryRow>, ReadError> {
        let mut q = registry_filtered!(filter);
        if let Some(a) = after {
            q = q.filter(
                registries::name.gt(a.value.clone()).or(registries::name
                    .eq(a.value.clone())
                    .and(registries::id.gt(a.id))),
            );
        }
        let mut conn = self.conn().await?;
        Ok(q.order((registries::name, registries::id))
            .limit(limit)
            .select(RegistryRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// How many registries match the filter.
    pub async fn registries_count(&self, filter: &RegistryFilter) -> Result<i64, ReadError> {
        let mut conn = self.conn().await?;
        Ok(registry_filtered!(filter)
            .select(count_star())
            .first(&mut conn)
            .await?)
    }

    /// A page of instances (in the reader's namespaces), oldest first.
    pub async fn instances_page(
        &self,
        filter: &InstanceFilter,
        after: Option<&SortKey>,
        limit: i64,
    ) -> Result<Vec<InstanceRow>, ReadError> {
        let mut q = instance_filtered!(filter);
        if let Some(ns) = self.namespaces() {
            q = q.filter(instances::namespace.eq_any(ns));
        }
        if let Some(a) = after {
            let ts = parse_ts(&a.value)?;
            q = q.filter(
                instances::created_at
                    .gt(ts)
                    .or(instances::created_at.eq(ts).and(instances::id.gt(a.id))),
            );
        }
        let mut conn = self.conn().await?;
        Ok(q.order((instances::created_at, instances::id))
            .limit(limit)
            .select(InstanceRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// How many instances (in the reader's namespaces) match the filter.
    pub async fn instances_count(&self, filter: &InstanceFilter) -> Result<i64, ReadError> {
        let mut q = instance_filtered!(filter);
        if let Some(ns) = self.namespaces() {
            q = q.filter(instances::namespace.eq_any(ns));
        }
        let mut conn = self.conn().await?;
        Ok(q.select(count_star()).first(&mut conn).await?)
    }

    /// A page of deployment operations (on instances in the reader's namespaces), newest first.
    pub async fn deployments_page(
        &self,
        filter: &DeploymentFilter,
        after: Option<&SortKey>,
        limit: i64,
    ) -> Result<Vec<DeploymentRow>, ReadError> {
        let mut q = deployment_filtered!(filter);
        if let Some(ns) = self.namespaces() {
            q = q.filter(
                deployments::instance_id.eq_any(
                    instances::table
                        .filter(instances::namespace.eq_any(ns))
                        .select(instances::id),
                ),
            );
        }
        if let Some(a) = after {
            let ts = parse_ts(&a.value)?;
            q = q.filter(
                deployments::started_at
                    .lt(ts)
                    .or(deployments::started_at.eq(ts).and(deployments::id.lt(a.id))),
            );
        }
        let mut conn = self.conn().await?;
        Ok(
            q.order((deployments::started_at.desc(), deployments::id.desc()))
                .limit(limit)
                .select(DeploymentRow::as_select())
                .load(&mut conn)
                .await?,
        )
    }

    /// How many deployment operations (on instances in the reader's namespaces) match the
    /// filter.
    pub async fn deployments_count(&self, filter: &DeploymentFilter) -> Result<i64, ReadError> {
        let mut q = deployment_filtered!(filter);
        if let Some(ns) = self.namespaces() {
            q = q.filter(
                deployments::instance_id.eq_any(
                    instances::table
                        .filter(instances::namespace.eq_any(ns))
                        .select(instances::id),
                ),
            );
        }
        let mut conn = self.conn().await?;
        Ok(q.select(count_star()).first(&mut conn).await?)
    }

    /// A page of registered clusters (not removed ones) ordered by name.
    pub async fn clusters_page(
        &self,
        after: Option<&SortKey>,
        limit: i64,
    ) -> Result<Vec<ClusterRow>, ReadError> {
        let mut q = clusters::table
            .filter(clusters::removed_at.is_null())
            .into_boxed();
        if let Some(a) = after {
            q = q.filter(
                clusters::name.gt(a.value.clone()).or(clusters::name
                    .eq(a.value.clone())
                    .and(clusters::id.gt(a.id))),
            );
        }
        let mut conn = self.conn().await?;
        Ok(q.order((clusters::name, clusters::id))
            .limit(limit)
            .select(ClusterRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// How many clusters are registered (removed ones are not).
    pub async fn clusters_count(&self) -> Result<i64, ReadError> {
        let mut conn = self.conn().await?;
        Ok(clusters::table
            .filter(clusters::removed_at.is_null())
            .select(count_star())
            .first(&mut conn)
            .await?)
    }
}

/// Filter of the audit log. Conditions combine with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

macro_rules! audit_filtered {
    ($f:expr) => {{
        let mut q = audit_log::table.into_boxed();
        if let Some(v) = &$f.actor {
            q = q.filter(audit_log::actor.eq(v.clone()));
        }
        if let Some(v) = &$f.action {
            q = q.filter(audit_log::action.eq(v.clone()));
        }
        if let Some(v) = &$f.outcome {
            q = q.filter(audit_log::outcome.eq(v.clone()));
        }
        if let Some(v) = &$f.target_type {
            q = q.filter(audit_log::target_type.eq(v.clone()));
        }
        if let Some(v) = &$f.target_id {
            q = q.filter(audit_log::target_id.eq(v.clone()));
        }
        if let Some(v) = $f.since {
            q = q.filter(audit_log::at.ge(v));
        }
        if let Some(v) = $f.until {
            q = q.filter(audit_log::at.lt(v));
        }
        q
    }};
}

impl Reader {
    /// A page of audit records, newest first (by id, which grows with insertion). `after_id` is
    /// the id of the last record already seen.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, ReadError> {
        let mut q = audit_filtered!(filter);
        if let Some(a) = after_id {
            q = q.filter(audit_log::id.lt(a));
        }
        let mut conn = self.conn().await?;
        Ok(q.order(audit_log::id.desc())
            .limit(limit)
            .select(AuditRow::as_select())
            .load(&mut conn)
            .await?)
    }

    /// How many audit records match the filter.
    pub async fn audit_count(&self, filter: &AuditFilter) -> Result<i64, ReadError> {
        let mut conn = self.conn().await?;
        Ok(audit_filtered!(filter)
            .select(count_star())
            .first(&mut conn)
            .await?)
    }

    /// Namespace grants, by subject then namespace, optionally of one subject or namespace.
    pub async fn grants(
        &self,
        subject: Option<&str>,
        namespace: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GrantRow>, ReadError> {
        let mut q = namespace_grants::table.into_boxed();
        if let Some(s) = subject {
            q = q.filter(namespace_grants::subject.eq(s.to_string()));
        }
        if let Some(n) = namespace {
            q = q.filter(namespace_grants::namespace.eq(n.to_string()));
        }
        let mut conn = self.conn().await?;
        Ok(
            q.order((namespace_grants::subject, namespace_grants::namespace))
                .limit(limit)
                .select(GrantRow::as_select())
                .load(&mut conn)
                .await?,
        )
    }
}
