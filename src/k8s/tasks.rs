//! Work the manager runs in the background: the periodic cluster checks, the pick-up of
//! orphaned operations, operation drivers and their wake-ups, and namespace watchers.

use super::*;

impl ClusterManager {
    /// Starts the periodic work once: cluster checks, pick-up of orphaned operations (after a
    /// restart or another process's crash), watchers of namespaces with live instances, and the
    /// 30-day purge of step logs.
    pub fn start_background(&self) {
        let mut bg = self.inner.background.lock().unwrap();
        if !bg.is_empty() || *self.inner.stopping.borrow() {
            return;
        }
        let me = self.clone();
        bg.push(tokio::spawn(async move { me.check_loop().await }));
        let me = self.clone();
        bg.push(tokio::spawn(async move { me.recovery_loop().await }));
    }

    /// Stops drivers, watchers and the periodic work, then gives back the leases of the
    /// operations this process drove, so another process can take them over at once.
    ///
    /// Tasks are asked to stop and finish their current step: a task aborted in the middle of a
    /// database transaction would return its connection to the pool with the transaction (and
    /// its row locks) still open.
    pub async fn shutdown(&self) {
        let driven: Vec<Uuid> = self.inner.drivers.lock().unwrap().keys().copied().collect();
        self.stop_tasks(Duration::from_secs(10)).await;
        for id in driven {
            let _ = store::release(&self.inner.pool, id, &self.inner.owner).await;
        }
    }

    /// Stops everything without giving leases back, as a crash would (for tests of the
    /// take-over): leases expire after `HIVEGRAPH_K8S_LEASE_SECONDS`.
    pub async fn abort(&self) {
        self.stop_tasks(Duration::from_secs(10)).await;
    }

    pub(super) async fn stop_tasks(&self, grace: Duration) {
        self.inner.stopping.send_replace(true);
        let mut tasks: Vec<tokio::task::JoinHandle<()>> =
            self.inner.background.lock().unwrap().drain(..).collect();
        tasks.extend(self.inner.drivers.lock().unwrap().drain().map(|(_, t)| t));
        tasks.extend(
            self.inner
                .watches
                .lock()
                .unwrap()
                .drain()
                .map(|(_, w)| w.task),
        );
        let deadline = tokio::time::Instant::now() + grace;
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Sleeps `d`; false when the manager is stopping.
    pub(crate) async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.inner.stopping.subscribe();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = stop.changed() => false,
            _ = tokio::time::sleep(d) => !*self.inner.stopping.borrow(),
        }
    }

    /// Whether the manager is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    pub(super) async fn check_loop(&self) {
        let every = Duration::from_secs(self.inner.cfg.check_seconds.max(1));
        let mut last_purge = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            if let Ok(rows) = store::all_clusters(&self.inner.pool).await {
                for row in rows {
                    let _ = self.check_and_store(&row).await;
                }
            }
            if last_purge.elapsed() >= Duration::from_secs(3600) {
                last_purge = std::time::Instant::now();
                match store::purge_logs(&self.inner.pool).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(n, "purged deployment logs older than 30 days")
                    }
                    _ => {}
                }
            }
            if !self.pause(every).await {
                return;
            }
        }
    }

    pub(super) async fn recovery_loop(&self) {
        let every = Duration::from_secs(self.inner.cfg.lease_seconds.clamp(1, 10));
        loop {
            self.reconcile_watches().await;
            if let Ok(live) = store::live_instances(&self.inner.pool).await {
                for (_, cluster, ns, _) in live {
                    self.ensure_watch(cluster, &ns).await;
                }
            }
            if let Ok(ops) = store::orphaned_ops(&self.inner.pool).await {
                for id in ops {
                    self.spawn_driver(id);
                }
            }
            if !self.pause(every).await {
                return;
            }
        }
    }

    /// Starts driving an operation in this process (no-op when already driven here; the
    /// driver itself takes the lease, so another process's driver is never doubled).
    pub fn spawn_driver(&self, op: Uuid) {
        if *self.inner.stopping.borrow() {
            return;
        }
        let mut drivers = self.inner.drivers.lock().unwrap();
        if let Some(t) = drivers.get(&op)
            && !t.is_finished()
        {
            return;
        }
        let me = self.clone();
        drivers.insert(
            op,
            tokio::spawn(async move {
                driver::drive(me.clone(), op).await;
                me.inner.drivers.lock().unwrap().remove(&op);
            }),
        );
    }

    pub(crate) fn waker(&self, instance: Uuid) -> Arc<tokio::sync::Notify> {
        self.inner
            .wakers
            .lock()
            .unwrap()
            .entry(instance)
            .or_default()
            .clone()
    }

    pub(crate) fn wake(&self, instance: Uuid) {
        if let Some(n) = self.inner.wakers.lock().unwrap().get(&instance) {
            n.notify_one();
        }
    }

    /// Makes sure Deployments, Pods and Events of `namespace` in `cluster` are watched.
    pub async fn ensure_watch(&self, cluster: Uuid, namespace: &str) {
        if *self.inner.stopping.borrow() {
            return;
        }
        let key = (cluster, namespace.to_string());
        {
            let w = self.inner.watches.lock().unwrap();
            if w.get(&key).is_some_and(|h| !h.task.is_finished()) {
                return;
            }
        }
        let Ok(clients) = self.clients_of(cluster).await else {
            return;
        };
        // Check again under the lock: two callers may have got here at once.
        let mut w = self.inner.watches.lock().unwrap();
        if w.get(&key).is_some_and(|h| !h.task.is_finished()) {
            return;
        }
        let handle = watch::spawn(self.clone(), cluster, namespace.to_string(), clients);
        w.insert(key, handle);
    }

    /// Whether the watch of `(cluster, namespace)` is synced, so that cached statuses are fresh.
    pub(crate) fn watch_synced(&self, cluster: Uuid, namespace: &str) -> bool {
        self.inner
            .watches
            .lock()
            .unwrap()
            .get(&(cluster, namespace.to_string()))
            .is_some_and(|h| h.synced.load(std::sync::atomic::Ordering::SeqCst))
    }
}
