//! Live change fan-out across gateway processes.
//!
//! The database announces every committed change with `NOTIFY hivegraph_changes, '<topic>:<id>'`
//! (triggers in `migrations/*_change_notifications`). Each gateway process holds ONE listening
//! connection. For a topic with subscribers in this process, the hub loads the changed row once
//! and broadcasts it to every subscriber of that topic, so N subscribers of one instance cost one
//! query per change, not N. Each topic's broadcast buffer is bounded: a subscriber that falls
//! behind skips to the newest state instead of growing the gateway's memory.
//!
//! After the listening connection drops (a database restart, a network cut), the hub reconnects
//! with backoff and then re-sends the current state of every subscribed topic, so subscribers are
//! never left silent on stale data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::dataloader::Loader;
use dataloaders::models::{DeploymentRow, InstanceRow, MetricsRow, RegistryRow};
use dataloaders::{
    DbPool, DeploymentKey, InstanceKey, LatestMetricsOfInstance, Reader, RegistryKey,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::changes::Topic;

/// The NOTIFY channel.
pub const CHANNEL: &str = "hivegraph_changes";
/// Messages buffered per topic before a slow subscriber skips ahead.
pub const TOPIC_BUFFER: usize = 16;

/// The current state of a topic's row, shared by every subscriber.
#[derive(Debug, Clone)]
pub enum Snapshot {
    Registry(Arc<RegistryRow>),
    Instance(Arc<InstanceRow>),
    Deployment(Arc<DeploymentRow>),
    Metrics(Arc<MetricsRow>),
    /// The row no longer exists.
    Gone,
}

/// Loads the current state of a topic (one statement).
pub async fn load(pool: &DbPool, topic: Topic) -> Result<Snapshot, dataloaders::ReadError> {
    let reader = Reader::new(pool.clone());
    Ok(match topic {
        Topic::Registry(id) => reader
            .load(&[RegistryKey(id)])
            .await?
            .remove(&RegistryKey(id))
            .map(|r| Snapshot::Registry(Arc::new(r))),
        Topic::Instance(id) => reader
            .load(&[InstanceKey(id)])
            .await?
            .remove(&InstanceKey(id))
            .map(|r| Snapshot::Instance(Arc::new(r))),
        Topic::Deployment(id) => reader
            .load(&[DeploymentKey(id)])
            .await?
            .remove(&DeploymentKey(id))
            .map(|r| Snapshot::Deployment(Arc::new(r))),
        Topic::Metrics(id) => reader
            .load(&[LatestMetricsOfInstance(id)])
            .await?
            .remove(&LatestMetricsOfInstance(id))
            .map(|r| Snapshot::Metrics(Arc::new(r))),
    }
    .unwrap_or(Snapshot::Gone))
}

struct TopicState {
    sender: broadcast::Sender<Snapshot>,
    /// A load is running; `dirty` asks it to run once more when it ends.
    loading: bool,
    dirty: bool,
}

struct Inner {
    pool: DbPool,
    database_url: String,
    /// The read caches, told of every notification on the same listening connection.
    caches: crate::cache::Caches,
    topics: Mutex<HashMap<Topic, TopicState>>,
    connected: AtomicBool,
    reconnects: AtomicU64,
    notifications: AtomicU64,
    loads: AtomicU64,
    /// Told of `cluster:<id>` notifications (a cluster's credentials changed or it was removed).
    on_cluster: Mutex<Option<ClusterHook>>,
    /// Counts `grants` notifications (a namespace grant changed in any process) and
    /// reconnections (one may have been missed).
    grants: tokio::sync::watch::Sender<u64>,
}

/// What [`PubSub::on_cluster_change`] calls.
type ClusterHook = Arc<dyn Fn(Uuid) + Send + Sync>;

/// The process-wide hub.
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

impl PubSub {
    /// A hub; call [`PubSub::start`] to begin listening. Each notification also drops the
    /// entries of `caches` it names, and each (re)connection empties them, since changes may have
    /// been missed while disconnected.
    pub fn new(pool: DbPool, database_url: String, caches: crate::cache::Caches) -> Self {
        PubSub {
            inner: Arc::new(Inner {
                pool,
                database_url,
                caches,
                topics: Mutex::new(HashMap::new()),
                connected: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
                notifications: AtomicU64::new(0),
                loads: AtomicU64::new(0),
                on_cluster: Mutex::new(None),
                grants: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// Calls `hook` with the id of every cluster whose credentials change or that is removed, in
    /// any process (so that this process rebuilds its clients or stops its watchers).
    pub fn on_cluster_change(&self, hook: impl Fn(Uuid) + Send + Sync + 'static) {
        *self.inner.on_cluster.lock().expect("hook lock") = Some(Arc::new(hook));
    }

    /// A receiver that changes whenever a namespace grant may have changed, in any process.
    pub fn grant_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.grants.subscribe()
    }

    fn grants_may_have_changed(&self) {
        self.inner.grants.send_modify(|n| *n += 1);
    }

    fn cluster_changed(&self, payload: &str) -> bool {
        let Some(id) = payload
            .strip_prefix("cluster:")
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return false;
        };
        let hook = self.inner.on_cluster.lock().expect("hook lock").clone();
        if let Some(hook) = hook {
            hook(id);
        }
        true
    }

    /// Spawns the listener task. It runs until the process ends.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move { hub.listen_forever().await })
    }

    /// Whether the listening connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// How many times the listener has (re)connected.
    pub fn connections(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Notifications received, and row loads made for subscribers.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.inner.notifications.load(Ordering::Relaxed),
            self.inner.loads.load(Ordering::Relaxed),
        )
    }

    /// Subscribers currently attached, over all topics.
    pub fn subscriber_count(&self) -> usize {
        self.inner
            .topics
            .lock()
            .expect("topics lock")
            .values()
            .map(|t| t.sender.receiver_count())
            .sum()
    }

    /// Subscribes to a topic. Subscribe first, then load the current state, so that no change
    /// between the two is lost.
    pub fn subscribe(&self, topic: Topic) -> broadcast::Receiver<Snapshot> {
        let mut topics = self.inner.topics.lock().expect("topics lock");
        topics.retain(|_, t| t.sender.receiver_count() > 0 || t.loading);
        topics
            .entry(topic)
            .or_insert_with(|| TopicState {
                sender: broadcast::channel(TOPIC_BUFFER).0,
                loading: false,
                dirty: false,
            })
            .sender
            .subscribe()
    }

    /// Handles one change: when this process has subscribers of the topic, load the row once
    /// and broadcast it (coalescing changes that arrive while a load runs).
    pub fn changed(&self, topic: Topic) {
        {
            let mut topics = self.inner.topics.lock().expect("topics lock");
            let Some(state) = topics.get_mut(&topic) else {
                return;
            };
            if state.sender.receiver_count() == 0 {
                topics.remove(&topic);
                return;
            }
            if state.loading {
                state.dirty = true;
                return;
            }
            state.loading = true;
        }
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                hub.inner.loads.fetch_add(1, Ordering::Relaxed);
                let snapshot = load(&hub.inner.pool, topic).await;
                let mut topics = hub.inner.topics.lock().expect("topics lock");
                let Some(state) = topics.get_mut(&topic) else {
                    return;
                };
                match snapshot {
                    Ok(s) => {
                        let _ = state.sender.send(s);
                    }
                    Err(e) => tracing::warn!(?topic, error = %e, "could not load a changed row"),
                }
                if state.dirty {
                    state.dirty = false;
                    continue;
                }
                state.loading = false;
                return;
            }
        });
    }

    fn resync_all(&self) {
        let topics: Vec<Topic> = self
            .inner
            .topics
            .lock()
            .expect("topics lock")
            .keys()
            .copied()
            .collect();
        for t in topics {
            self.changed(t);
        }
    }

    async fn listen_forever(&self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.listen_once().await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "change listener disconnected");
                }
            }
            self.inner.connected.store(false, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen_once(&self) -> anyhow::Result<()> {
        let mut conn = AsyncPgConnection::establish(&self.inner.database_url).await?;
        conn.batch_execute(&format!(
            "SET application_name = 'hivegraph-listener'; LISTEN {CHANNEL}"
        ))
        .await?;
        self.inner.connected.store(true, Ordering::Relaxed);
        let n = self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
        if n > 0 {
            tracing::info!("change listener reconnected; re-sending current state to subscribers");
        }
        // Whatever happened while disconnected, subscribers get the current state again, and
        // cached reads are dropped.
        self.inner.caches.invalidate_all();
        self.resync_all();
        self.grants_may_have_changed();
        loop {
            {
                let stream = conn.notifications_stream();
                tokio::pin!(stream);
                let deadline = tokio::time::sleep(Duration::from_secs(5));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        next = stream.next() => match next {
                            Some(Ok(n)) => {
                                self.inner.notifications.fetch_add(1, Ordering::Relaxed);
                                if self.cluster_changed(&n.payload) {
                                    continue;
                                }
                                if n.payload == "grants" {
                                    self.grants_may_have_changed();
                                    continue;
                                }
                                if let Some(topic) = Topic::parse(&n.payload) {
                                    self.inner.caches.changed(topic);
                                    self.changed(topic);
                                }
                            }
                            Some(Err(e)) => return Err(e.into()),
                            None => anyhow::bail!("the listening connection closed"),
                        },
                        _ = &mut deadline => break,
                    }
                }
            }
            // A cheap round trip proves the connection is alive (a silent drop otherwise goes
            // unnoticed until the next notification that never comes).
            tokio::time::timeout(Duration::from_secs(3), conn.batch_execute("SELECT 1"))
                .await
                .map_err(|_| anyhow::anyhow!("the listening connection stopped answering"))??;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let id = Uuid::new_v4();
        assert_eq!(
            Topic::parse(&format!("instance:{id}")),
            Some(Topic::Instance(id))
        );
        assert_eq!(
            Topic::parse(&format!("metrics:{id}")),
            Some(Topic::Metrics(id))
        );
        assert_eq!(Topic::parse("instance:not-a-uuid"), None);
        assert_eq!(Topic::parse(&format!("unknown:{id}")), None);
    }
}
