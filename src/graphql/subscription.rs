//! Subscription roots. Each stream starts with the current state, then pushes every change.
//!
//! Changes are found by watching the rows' `updated_at` (or new rows) at a short interval; the
//! database is the single source of truth, so a change made by any gateway process reaches every
//! subscriber.

use std::time::Duration;

use async_graphql::{Context, ID, Subscription};
use dataloaders::models::*;
use dataloaders::{
    DbPool, DeploymentKey, InstanceKey, LatestMetricsOfInstance, Reader, RegistryKey,
};
use futures_util::Stream;

use crate::error::{AppError, AppResult};
use crate::graphql::types::*;
use crate::ids::{self, Kind};

/// How often subscriptions look for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

async fn load_once<K, V>(pool: &DbPool, key: K) -> AppResult<Option<V>>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    Reader: async_graphql::dataloader::Loader<K, Value = V, Error = dataloaders::ReadError>,
    V: Send + Sync + Clone + 'static,
{
    use async_graphql::dataloader::Loader;
    let reader = Reader::new(pool.clone());
    let mut map = reader.load(std::slice::from_ref(&key)).await?;
    Ok(map.remove(&key))
}

/// Emits `value` whenever `version` of the loaded row changes; ends when the row is gone or
/// `done` says so (after emitting that final state).
fn watch_row<K, V, T>(
    pool: DbPool,
    key: K,
    version: fn(&V) -> String,
    done: fn(&V) -> bool,
    wrap: fn(V) -> T,
) -> impl Stream<Item = async_graphql::Result<T>>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    Reader: async_graphql::dataloader::Loader<K, Value = V, Error = dataloaders::ReadError>,
    V: Send + Sync + Clone + 'static,
    T: Send + 'static,
{
    async_stream::stream! {
        let mut last: Option<String> = None;
        loop {
            match load_once(&pool, key.clone()).await {
                Ok(Some(row)) => {
                    let v = version(&row);
                    let finished = done(&row);
                    if last.as_deref() != Some(v.as_str()) {
                        last = Some(v);
                        yield Ok(wrap(row));
                    }
                    if finished {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    yield Err(e.into());
                    tokio::time::sleep(POLL_INTERVAL * 4).await;
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

async fn require<K, V>(pool: &DbPool, key: K, what: &'static str) -> AppResult<()>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    Reader: async_graphql::dataloader::Loader<K, Value = V, Error = dataloaders::ReadError>,
    V: Send + Sync + Clone + 'static,
{
    load_once(pool, key)
        .await?
        .map(|_| ())
        .ok_or(AppError::NotFound(what))
}

/// The subscription root.
pub struct SubscriptionRoot;

/// The subscription root: live instance status, events, metrics, deployment progress and registry sync.
#[Subscription]
impl SubscriptionRoot {
    /// The instance's status, phase, replicas and health: the current state first, then every
    /// change. Ends when the instance record is deleted.
    async fn instance_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] instance_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Instance>>> {
        let pool = ctx.data_unchecked::<DbPool>().clone();
        let id = ids::decode(Kind::Instance, &instance_id, "instanceId")?;
        require(&pool, InstanceKey(id), "instance").await?;
        Ok(watch_row(
            pool,
            InstanceKey(id),
            |r: &InstanceRow| r.updated_at.to_rfc3339(),
            |_| false,
            Instance,
        ))
    }

    /// Kubernetes events of the instance and its pods: the recent events first, then each new one.
    async fn instance_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] instance_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<InstanceEvent>>> {
        use futures_util::StreamExt;
        let pool = ctx.data_unchecked::<DbPool>().clone();
        let id = ids::decode(Kind::Instance, &instance_id, "instanceId")?;
        require(&pool, InstanceKey(id), "instance").await?;
        let rows = watch_row(
            pool,
            InstanceKey(id),
            |r: &InstanceRow| r.events.to_string(),
            |_| false,
            |r| r,
        );
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        Ok(rows.flat_map(move |row| {
            let fresh: Vec<async_graphql::Result<InstanceEvent>> = match row {
                Err(e) => vec![Err(e)],
                Ok(row) => {
                    let events: Vec<serde_json::Value> =
                        serde_json::from_value(row.events).unwrap_or_default();
                    events
                        .into_iter()
                        .filter(|e| seen.insert(e.to_string()))
                        .filter_map(|e| serde_json::from_value::<InstanceEvent>(e).ok())
                        .map(Ok)
                        .collect()
                }
            };
            futures_util::stream::iter(fresh)
        }))
    }

    /// Monitoring samples of the instance: the newest first, then each new sample.
    async fn instance_metrics(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] instance_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<MonitoringMetrics>>> {
        let pool = ctx.data_unchecked::<DbPool>().clone();
        let id = ids::decode(Kind::Instance, &instance_id, "instanceId")?;
        require(&pool, InstanceKey(id), "instance").await?;
        Ok(watch_row(
            pool,
            LatestMetricsOfInstance(id),
            |r: &MetricsRow| r.id.to_string(),
            |_| false,
            MonitoringMetrics,
        ))
    }

    /// Progress of a deployment operation: the current state first, then each step; completes
    /// when the operation ends.
    async fn deployment_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The operation's id.")] deployment_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Deployment>>> {
        let pool = ctx.data_unchecked::<DbPool>().clone();
        let id = ids::decode(Kind::Deployment, &deployment_id, "deploymentId")?;
        require(&pool, DeploymentKey(id), "deployment").await?;
        Ok(watch_row(
            pool,
            DeploymentKey(id),
            |r: &DeploymentRow| r.updated_at.to_rfc3339(),
            |r| r.status.is_terminal(),
            Deployment,
        ))
    }

    /// Sync progress of a registry: the current state first, then every change of status,
    /// server count or error. Ends when the registry is deleted.
    async fn registry_sync(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The registry's id.")] registry_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Registry>>> {
        let pool = ctx.data_unchecked::<DbPool>().clone();
        let id = ids::decode(Kind::Registry, &registry_id, "registryId")?;
        require(&pool, RegistryKey(id), "registry").await?;
        Ok(watch_row(
            pool,
            RegistryKey(id),
            |r: &RegistryRow| r.updated_at.to_rfc3339(),
            |_| false,
            Registry,
        ))
    }
}
