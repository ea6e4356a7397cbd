//! Stale truth is marked: while a cluster cannot be reached, what the gateway last derived
//! about its instances ages. Once a cluster has been unreachable for longer than the instance
//! status TTL (30 s, the data model's cache lifetime of instance status), the health of its live
//! instances becomes UNKNOWN, with a reason saying since when and why. When the cluster answers
//! again its watches are restarted, and their relist derives every instance afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dataloaders::enums::{ClusterStatus, HealthStatus, InstanceStatus};
use dataloaders::schema::instances;
use diesel::PgExpressionMethods;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::ClusterManager;
use crate::error::AppResult;

/// How long a cluster may be unreachable before its instances' health is UNKNOWN.
pub const STATUS_TTL: Duration = Duration::from_secs(30);

/// Clusters this process found unreachable: since when, and whether their instances are marked.
#[derive(Default)]
pub(crate) struct Outages(Mutex<HashMap<Uuid, Outage>>);

#[derive(Clone, Copy)]
struct Outage {
    since: DateTime<Utc>,
    marked: bool,
}

/// The `healthReason` of an instance of a cluster unreachable since `since`.
pub fn stale_reason(since: DateTime<Utc>, error: Option<&str>) -> String {
    let at = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match error {
        Some(e) => format!("the cluster has been unreachable since {at} ({e}); health unknown"),
        None => format!("the cluster has been unreachable since {at}; health unknown"),
    }
}

impl ClusterManager {
    /// Takes note of a cluster check's outcome: starts or ends an outage, marks the instances
    /// of a cluster unreachable past [`STATUS_TTL`], and re-derives them once it answers again.
    pub(super) async fn note_reachability(
        &self,
        cluster: Uuid,
        status: ClusterStatus,
        error: Option<&str>,
    ) {
        let outages = &self.inner().outages.0;
        if status == ClusterStatus::Connected {
            let ended = outages.lock().unwrap().remove(&cluster);
            if ended.is_some_and(|o| o.marked) {
                tracing::info!(%cluster, "cluster reachable again; deriving its instances afresh");
                self.forget_cluster(cluster).await;
            }
            return;
        }
        let now = Utc::now();
        let outage = *outages.lock().unwrap().entry(cluster).or_insert(Outage {
            since: now,
            marked: false,
        });
        let age = (now - outage.since).to_std().unwrap_or_default();
        if outage.marked || age < STATUS_TTL {
            return;
        }
        let reason = stale_reason(outage.since, error);
        match mark_unknown(&self.inner().pool, cluster, &reason).await {
            Ok(n) => {
                tracing::warn!(%cluster, instances = n, since = %outage.since,
                    "cluster unreachable past the status TTL: instance health is UNKNOWN");
                if let Some(o) = outages.lock().unwrap().get_mut(&cluster) {
                    o.marked = true;
                }
            }
            Err(e) => tracing::warn!(%cluster, error = ?e, "could not mark stale instances"),
        }
    }
}

/// Sets health UNKNOWN with `reason` on every live instance of `cluster`; how many changed.
async fn mark_unknown(pool: &dataloaders::DbPool, cluster: Uuid, reason: &str) -> AppResult<usize> {
    let mut c = crate::db::conn(pool).await?;
    Ok(diesel::update(
        instances::table
            .filter(instances::cluster_id.eq(cluster))
            .filter(instances::status.ne(InstanceStatus::Terminated))
            .filter(instances::health_reason.is_distinct_from(Some(reason))),
    )
    .set((
        instances::health_status.eq(HealthStatus::Unknown),
        instances::health_reason.eq(Some(reason)),
        instances::updated_at.eq(Utc::now()),
    ))
    .execute(&mut c)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_says_since_when_and_why() {
        let since = DateTime::parse_from_rfc3339("2026-12-02T14:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            stale_reason(since, Some("connection refused")),
            "the cluster has been unreachable since 2026-12-02T14:00:00Z (connection refused); \
             health unknown"
        );
    }
}
