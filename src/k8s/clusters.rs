//! Clusters: API clients built from the kubeconfig, the in-cluster identity or stored
//! credentials; access reviews; the cluster check; register and refresh.

use super::*;

impl ClusterManager {
    pub(super) async fn kube_config(
        &self,
        context: Option<&str>,
        in_cluster: bool,
    ) -> AppResult<kube::Config> {
        if in_cluster {
            return kube::Config::incluster().map_err(|e| {
                AppError::bad_input(
                    "inCluster",
                    format!("the gateway has no in-cluster configuration: {e}"),
                )
            });
        }
        let kc = match &self.inner.cfg.kubeconfig {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        }
        .map_err(|e| {
            // Every cluster check, watcher and collector asks again: say it once a minute, not
            // once per instance.
            static LAST_WARNED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let now = chrono::Utc::now().timestamp();
            let last = LAST_WARNED.load(std::sync::atomic::Ordering::Relaxed);
            if now - last >= 60
                && LAST_WARNED
                    .compare_exchange(
                        last,
                        now,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_ok()
            {
                tracing::warn!(error = %e, "the gateway's kubeconfig cannot be read");
            }
            AppError::Unavailable("the gateway's kubeconfig cannot be read".into())
        })?;
        match context {
            Some(ctx) if !kc.contexts.iter().any(|c| c.name == ctx) => {
                return Err(AppError::bad_input(
                    "context",
                    format!("the gateway's kubeconfig has no context {ctx:?}"),
                ));
            }
            None if kc.current_context.as_deref().unwrap_or("").is_empty() => {
                return Err(AppError::bad_input(
                    "context",
                    "the gateway's kubeconfig has no current context; name one",
                ));
            }
            _ => {}
        }
        let opts = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| {
                AppError::bad_input(
                    "context",
                    format!("the kubeconfig context cannot be used: {e}"),
                )
            })
    }

    /// Clients from a configuration; `source` says what it was built from.
    pub(super) fn clients_from(&self, base: kube::Config, source: String) -> AppResult<Clients> {
        let timeout = Duration::from_millis(self.inner.cfg.timeout_ms);
        let endpoint = base
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let default_namespace = base.default_namespace.clone();
        let mut api_cfg = base.clone();
        api_cfg.connect_timeout = Some(timeout);
        api_cfg.read_timeout = Some(timeout);
        api_cfg.write_timeout = Some(timeout);
        let mut watch_cfg = base;
        watch_cfg.connect_timeout = Some(timeout);
        let mk = |c: kube::Config| {
            api_metrics::client(c, &endpoint)
                .map_err(|e| AppError::Internal(Arc::new(anyhow::anyhow!("kube client: {e}"))))
        };
        Ok(Clients {
            api: mk(api_cfg)?,
            watch: mk(watch_cfg)?,
            endpoint,
            default_namespace,
            source,
        })
    }

    /// Clients of a kubeconfig context or the in-cluster identity.
    pub(super) async fn build_clients(
        &self,
        context: Option<&str>,
        in_cluster: bool,
    ) -> AppResult<Clients> {
        // The source first: a file rewritten while it is read then changes the source again.
        let kubeconfig = self.inner.cfg.kubeconfig.as_deref();
        let source = super::sources::source_of_config(context, in_cluster, kubeconfig);
        let base = self.kube_config(context, in_cluster).await?;
        self.clients_from(base, source)
    }

    /// The clients of a registered cluster: from its stored credentials when it has some, else
    /// from the gateway's kubeconfig or in-cluster identity. Built once, then cached while the
    /// row's credentials stay the same.
    pub async fn clients(&self, row: &ClusterRow) -> AppResult<Clients> {
        if row.removed_at.is_some() {
            return Err(AppError::NotFound("cluster"));
        }
        let (source, stored) = self.access_of(row)?;
        if let Some(c) = self.inner.clients.lock().unwrap().get(&row.id)
            && c.source == source
        {
            return Ok(c.clone());
        }
        let c = match stored {
            Some(creds) => self.clients_from(creds.kube_config().await?, source)?,
            None => {
                self.build_clients(row.context.as_deref(), row.in_cluster)
                    .await?
            }
        };
        self.inner.clients.lock().unwrap().insert(row.id, c.clone());
        Ok(c)
    }

    /// Timeout of one Kubernetes API request, in milliseconds.
    pub fn request_timeout_ms(&self) -> u64 {
        self.inner.cfg.timeout_ms
    }

    pub(crate) async fn clients_of(&self, cluster: Uuid) -> AppResult<Clients> {
        let row = store::cluster(&self.inner.pool, cluster)
            .await?
            .ok_or(AppError::NotFound("cluster"))?;
        self.clients(&row).await
    }

    /// Whether the cluster's RBAC lets the gateway `verb` `resource`.
    pub(super) async fn can(
        client: &kube::Client,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<bool, kube::Error> {
        super::capabilities::can(client, verb, group, resource, namespace).await
    }

    /// Checks a cluster: reachability, credentials, version, API groups, access level, nodes and
    /// quotas. Never fails: problems become the status and `error`.
    pub async fn check(&self, clients: &Clients) -> ClusterCheck {
        let c = &clients.api;
        let mut out = ClusterCheck {
            status: ClusterStatus::Connected,
            version: None,
            capabilities: Vec::new(),
            resource_quota: json!({}),
            access_level: AccessLevel::ReadOnly,
            simulated: false,
            error: None,
        };
        let info = match c.apiserver_version().await {
            Ok(i) => i,
            Err(e) => {
                (out.status, out.error) = unreachable(&e);
                return out;
            }
        };
        out.version = Some(info.git_version.clone());
        let marker = format!("{} {}", info.git_version, info.platform).to_ascii_lowercase();
        out.simulated = marker.contains("emulator") || marker.contains("kwok");

        match c.list_api_groups().await {
            Ok(groups) => {
                let wanted = [
                    "apps/v1",
                    "networking.k8s.io/v1",
                    "metrics.k8s.io/v1beta1",
                    "events.k8s.io/v1",
                    "authorization.k8s.io/v1",
                    "autoscaling/v2",
                    "toolhive.stacklok.dev/v1beta1",
                    "toolhive.stacklok.dev/v1alpha1",
                ];
                for g in &groups.groups {
                    for v in &g.versions {
                        if wanted.contains(&v.group_version.as_str()) {
                            out.capabilities.push(v.group_version.clone());
                        }
                    }
                }
                out.capabilities.sort();
            }
            Err(e) if reach::is_unauthorized(&e) => {
                (out.status, out.error) = unreachable(&e);
                return out;
            }
            Err(e) => out.error = Some(format!("API discovery failed: {}", reach::describe(&e))),
        }
        if out
            .capabilities
            .iter()
            .any(|c| c == super::operator::API_VERSION)
        {
            match super::capabilities::toolhive(c, &clients.default_namespace).await {
                Ok(found) => out.capabilities.extend(found),
                Err(e) => {
                    out.error = Some(format!(
                        "ToolHive operator discovery failed: {}",
                        kube_reason(&e).1
                    ))
                }
            }
            out.capabilities.sort();
        }

        out.access_level = match self.access_level(clients).await {
            Ok(a) => a,
            Err(e)
                if reach::is_unauthorized(&e) || (is_transient(&e) && api_code(&e).is_none()) =>
            {
                (out.status, out.error) = unreachable(&e);
                return out;
            }
            Err(e) => {
                out.error = Some(format!("access review failed: {}", reach::describe(&e)));
                AccessLevel::ReadOnly
            }
        };

        let (quota, fake_nodes) = Self::resources(c).await;
        out.resource_quota = quota;
        out.simulated |= fake_nodes;
        out
    }

    pub(super) async fn access_level(&self, clients: &Clients) -> Result<AccessLevel, kube::Error> {
        let c = &clients.api;
        if Self::can(c, "*", "*", "*", None).await? {
            return Ok(AccessLevel::Admin);
        }
        if Self::can(c, "create", "apps", "deployments", None).await? {
            return Ok(AccessLevel::Deploy);
        }
        // Namespaced rights: the namespaces we can list, else the context's default one.
        let mut candidates = vec![clients.default_namespace.clone()];
        if let Ok(list) = Api::<Namespace>::all(c.clone())
            .list(&ListParams::default().limit(100))
            .await
        {
            candidates.extend(list.items.into_iter().filter_map(|n| n.metadata.name));
        }
        candidates.dedup();
        for ns in candidates.iter().take(100) {
            if Self::can(c, "create", "apps", "deployments", Some(ns)).await? {
                return Ok(AccessLevel::Deploy);
            }
        }
        Ok(AccessLevel::ReadOnly)
    }

    /// Node allocatable resources and ResourceQuotas, and whether every node is a simulated
    /// (KWOK-style) node.
    pub(super) async fn resources(c: &kube::Client) -> (Value, bool) {
        let mut quota = serde_json::Map::new();
        let mut fake = false;
        match Api::<Node>::all(c.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(nodes) => {
                fake = !nodes.items.is_empty()
                    && nodes.items.iter().all(|n| {
                        n.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("kwok.x-k8s.io/node"))
                            .is_some_and(|v| v == "fake")
                    });
                let list: Vec<Value> = nodes
                    .items
                    .iter()
                    .map(|n| {
                        json!({
                            "name": n.metadata.name,
                            "allocatable": n.status.as_ref().and_then(|s| s.allocatable.as_ref())
                                .map(|a| a.iter().map(|(k, v)| (k.clone(), json!(v.0))).collect::<serde_json::Map<_, _>>()),
                        })
                    })
                    .collect();
                quota.insert("nodes".into(), json!(list));
            }
            Err(e) => {
                quota.insert(
                    "nodesError".into(),
                    json!(format!("nodes cannot be listed: {}", kube_reason(&e).1)),
                );
            }
        }
        match Api::<k8s_openapi::api::core::v1::ResourceQuota>::all(c.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(q) => {
                let list: Vec<Value> = q
                    .items
                    .iter()
                    .map(|q| {
                        json!({
                            "namespace": q.metadata.namespace, "name": q.metadata.name,
                            "hard": q.status.as_ref().and_then(|s| s.hard.as_ref()).map(|h| h.iter().map(|(k, v)| (k.clone(), json!(v.0))).collect::<serde_json::Map<_, _>>()),
                            "used": q.status.as_ref().and_then(|s| s.used.as_ref()).map(|h| h.iter().map(|(k, v)| (k.clone(), json!(v.0))).collect::<serde_json::Map<_, _>>()),
                        })
                    })
                    .collect();
                quota.insert("quotas".into(), json!(list));
            }
            Err(e) if api_code(&e) == Some(404) => {
                quota.insert("quotas".into(), json!([]));
            }
            Err(e) => {
                quota.insert(
                    "quotasError".into(),
                    json!(format!("quotas cannot be listed: {}", kube_reason(&e).1)),
                );
            }
        }
        (Value::Object(quota), fake)
    }

    pub(super) fn version_ok(&self, version: &str) -> bool {
        parse_version(version).is_some_and(|v| v >= self.inner.min_version)
    }

    pub(super) async fn check_and_store(&self, row: &ClusterRow) -> AppResult<ClusterRow> {
        let check = self.current_check(row).await;
        self.note_reachability(row.id, check.status, check.error.as_deref())
            .await;
        store::update_cluster_check(&self.inner.pool, row.id, &check)
            .await?
            .ok_or(AppError::NotFound("cluster"))
    }

    /// Checks `row`'s cluster with its current clients (or says why there are none).
    async fn current_check(&self, row: &ClusterRow) -> ClusterCheck {
        let clients = match self.clients(row).await {
            Ok(c) => c,
            Err(e) => {
                return ClusterCheck {
                    status: ClusterStatus::Disconnected,
                    version: None,
                    capabilities: vec![],
                    resource_quota: json!({}),
                    access_level: row.access_level,
                    simulated: row.simulated,
                    error: Some(e.public_message()),
                };
            }
        };
        let mut check = self.check(&clients).await;
        if check.status == ClusterStatus::Connected
            && let Some(v) = &check.version
            && !self.version_ok(v)
        {
            check.error = Some(format!(
                "the cluster now runs Kubernetes {v}, older than the oldest supported version {}.{}",
                self.inner.min_version.0, self.inner.min_version.1
            ));
        }
        check
    }

    /// `refreshCluster`: rebuilds the clients (the kubeconfig may have changed) and checks again.
    pub async fn refresh(&self, id: Uuid) -> AppResult<ClusterRow> {
        self.start_background();
        let row = store::cluster(&self.inner.pool, id)
            .await?
            .ok_or(AppError::NotFound("cluster"))?;
        // New clients for everyone: the check below, and watches restarted with them (watchers,
        // drivers and collectors ask for the clients again on their next attempt).
        self.forget_cluster(id).await;
        self.check_and_store(&row).await
    }
}

/// The status and `lastError` of a cluster whose API server failed a check with `e`: rejected
/// credentials (401/403) make it UNAUTHORIZED, anything else (an untrusted certificate, no
/// connection, a server error) DISCONNECTED; the message names the certificate or the code.
fn unreachable(e: &kube::Error) -> (ClusterStatus, Option<String>) {
    match reach::classify(e) {
        reach::Failure::Credentials => (ClusterStatus::Unauthorized, Some(reach::describe(e))),
        reach::Failure::Certificate => (ClusterStatus::Disconnected, Some(reach::describe(e))),
        reach::Failure::Transport => (
            ClusterStatus::Disconnected,
            Some(match api_code(e) {
                Some(code) => format!("the API server answered with HTTP {code}"),
                None => format!("the API server is unreachable: {}", reach::describe(e)),
            }),
        ),
    }
}
