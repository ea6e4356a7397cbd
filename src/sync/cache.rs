//! A process-local cache of registry server lists: entries live 5 minutes (DATA-MODEL.md, caching
//! strategy) and are dropped when a sync of the registry commits.
//!
//! Two fences keep readers from seeing a list older than the last committed sync:
//! - every entry remembers the registry's `last_sync_at` it was loaded under; a reader passes the
//!   current value (it has the registry row at hand), so a sync committed by *another* gateway
//!   process is noticed at once;
//! - `invalidate` bumps an epoch, so a load that raced with a commit in this process is never
//!   served afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dataloaders::models::ServerRow;
use moka::future::Cache;
use uuid::Uuid;

/// How long a server list is cached.
pub const SERVER_LIST_TTL: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct CachedList {
    epoch: u64,
    synced_at: Option<DateTime<Utc>>,
    servers: Arc<Vec<ServerRow>>,
}

/// The cache of server lists, keyed by registry id.
#[derive(Clone)]
pub struct ServerListCache {
    lists: Cache<Uuid, CachedList>,
    epoch: Arc<AtomicU64>,
}

impl Default for ServerListCache {
    fn default() -> Self {
        Self::new(SERVER_LIST_TTL, 1_000)
    }
}

impl ServerListCache {
    /// A cache whose entries live `ttl`, holding at most `max_registries` lists.
    pub fn new(ttl: Duration, max_registries: u64) -> Self {
        ServerListCache {
            lists: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_registries)
                .build(),
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The cached list of a registry, if it is current for `synced_at` (the registry's
    /// `last_sync_at` as the reader sees it).
    pub async fn get(
        &self,
        registry_id: Uuid,
        synced_at: Option<DateTime<Utc>>,
    ) -> Option<Arc<Vec<ServerRow>>> {
        let hit = self.lists.get(&registry_id).await?;
        (hit.epoch == self.epoch.load(Ordering::Acquire) && hit.synced_at == synced_at)
            .then_some(hit.servers)
    }

    /// The cached list, or `load()`'s result, which is cached. `synced_at` is the registry's
    /// `last_sync_at` as the reader sees it.
    pub async fn get_or_load<E, F, Fut>(
        &self,
        registry_id: Uuid,
        synced_at: Option<DateTime<Utc>>,
        load: F,
    ) -> Result<Arc<Vec<ServerRow>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<ServerRow>, E>>,
    {
        if let Some(hit) = self.get(registry_id, synced_at).await {
            return Ok(hit);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let servers = Arc::new(load().await?);
        // A commit during the load bumped the epoch: serve the result once, do not cache it.
        if epoch == self.epoch.load(Ordering::Acquire) {
            self.lists
                .insert(
                    registry_id,
                    CachedList {
                        epoch,
                        synced_at,
                        servers: servers.clone(),
                    },
                )
                .await;
        }
        Ok(servers)
    }

    /// Drops a registry's list; called when a sync of it commits (or the registry is deleted).
    pub async fn invalidate(&self, registry_id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.lists.invalidate(&registry_id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> ServerRow {
        ServerRow {
            id: Uuid::new_v4(),
            registry_id: Uuid::nil(),
            name: name.into(),
            original_name: name.into(),
            description: String::new(),
            version: None,
            image: Some("a/b:1".into()),
            url: None,
            transport: dataloaders::enums::Transport::Stdio,
            tier: dataloaders::enums::ServerTier::Community,
            status: dataloaders::enums::ServerStatus::Available,
            category: vec![],
            capabilities: vec![],
            repository_url: None,
            network_permissions: serde_json::json!({}),
            pull_count: 0,
            stars: 0,
            last_updated: None,
            deployment_requirements: serde_json::json!({}),
            removed_upstream_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            sync_hash: None,
        }
    }

    #[tokio::test]
    async fn caches_until_invalidated_or_resynced() {
        let cache = ServerListCache::default();
        let id = Uuid::new_v4();
        let t1 = Some(Utc::now());
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(vec![row("a")])
        };
        assert_eq!(cache.get_or_load(id, t1, load).await.unwrap().len(), 1);
        assert_eq!(cache.get_or_load(id, t1, load).await.unwrap().len(), 1);
        assert_eq!(loads.load(Ordering::SeqCst), 1, "second read is a hit");
        // Another process committed a sync: the reader sees a newer last_sync_at.
        let t2 = Some(Utc::now() + chrono::Duration::seconds(1));
        assert!(cache.get(id, t2).await.is_none());
        cache.get_or_load(id, t2, load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        cache.invalidate(id).await;
        assert!(cache.get(id, t2).await.is_none());
    }

    #[tokio::test]
    async fn entries_expire() {
        let cache = ServerListCache::new(Duration::from_millis(50), 10);
        let id = Uuid::new_v4();
        cache
            .get_or_load(id, None, || async { Ok::<_, ()>(vec![row("a")]) })
            .await
            .unwrap();
        assert!(cache.get(id, None).await.is_some());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(cache.get(id, None).await.is_none());
    }
}
