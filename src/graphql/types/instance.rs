//! Instances: deployed servers, their replicas, events, logs and available upgrades.

use super::metrics::resource_usage;
use super::*;

/// Desired, current and ready replica counts of an instance.
#[derive(SimpleObject)]
pub struct Replicas {
    /// Replicas asked for.
    pub desired: i32,
    /// Replicas that exist.
    pub current: i32,
    /// Replicas that pass their readiness checks.
    pub ready: i32,
}

/// A Kubernetes event about an instance or one of its pods.
#[derive(SimpleObject, serde::Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct InstanceEvent {
    /// `Normal` or `Warning`.
    #[serde(default)]
    pub r#type: String,
    /// Short machine-readable reason, for example `BackOff`.
    #[serde(default)]
    pub reason: String,
    /// Human-readable description.
    #[serde(default)]
    pub message: String,
    /// How many times the event occurred.
    #[serde(default)]
    pub count: i32,
    /// First occurrence.
    pub first_seen: Option<DateTime<Utc>>,
    /// Latest occurrence.
    pub last_seen: Option<DateTime<Utc>>,
    /// Kind of the object the event is about (Deployment, ReplicaSet, Pod).
    #[serde(default)]
    pub object_kind: String,
    /// Name of the object the event is about.
    #[serde(default)]
    pub object_name: String,
    /// Opaque position of the event in `Instance.events`, for `after`.
    #[serde(skip)]
    pub cursor: String,
}

impl InstanceEvent {
    /// The stored events of an instance, newest first by last occurrence (then first
    /// occurrence, object and reason, so that the order is stable), each with its cursor.
    pub fn newest_first(stored: &Value) -> Vec<InstanceEvent> {
        let mut events: Vec<InstanceEvent> =
            serde_json::from_value(stored.clone()).unwrap_or_default();
        events.sort_by(|a, b| {
            (b.last_seen, b.first_seen)
                .cmp(&(a.last_seen, a.first_seen))
                .then_with(|| {
                    (&a.object_kind, &a.object_name, &a.reason).cmp(&(
                        &b.object_kind,
                        &b.object_name,
                        &b.reason,
                    ))
                })
        });
        for e in &mut events {
            let key = format!(
                "{}|{}|{}|{}|{}",
                e.first_seen
                    .map(|t| t.timestamp_micros())
                    .unwrap_or_default(),
                e.object_kind,
                e.object_name,
                e.reason,
                e.message
            );
            use sha2::Digest;
            e.cursor = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..12]);
        }
        events
    }
}

/// Log lines read from an instance's pods.
#[derive(SimpleObject)]
pub struct InstanceLogs {
    /// Whether logs could be read.
    pub available: bool,
    /// Why logs are not available, when they are not.
    pub reason: Option<String>,
    /// The pod the lines come from.
    pub pod: Option<String>,
    /// The container the lines come from.
    pub container: Option<String>,
    /// The log lines, oldest first.
    pub lines: Vec<String>,
}

/// A deployed server running in a Kubernetes cluster.
pub struct Instance(pub InstanceRow);

impl Instance {
    /// An instance by id, through the instance-status cache and the request's loader. Every
    /// path to an instance by id (`instance`, `node`, `Deployment.instance`, ...) uses this.
    pub async fn load(ctx: &Context<'_>, id: uuid::Uuid) -> AppResult<Option<Instance>> {
        Ok(RequestCtx::reads(ctx)?
            .instance(id)
            .await?
            .map(|row| Instance(std::sync::Arc::unwrap_or_clone(row))))
    }
}

impl Instance {
    /// The fields answered from the row alone (the compiled read path, `crate::graphql::compiled`).
    pub(crate) const LEAVES: &'static [Leaf<Instance>] = &[
        ("id", Narrow, |r| leaf(ids::encode(Kind::Instance, r.0.id))),
        ("serverId", Narrow, |r| {
            leaf(ids::encode(Kind::Server, r.0.server_id))
        }),
        ("name", Narrow, |r| leaf(r.0.name.as_str())),
        ("namespace", Narrow, |r| leaf(r.0.namespace.as_str())),
        ("status", Narrow, |r| leaf(r.0.status)),
        ("phase", Narrow, |r| leaf(r.0.phase)),
        ("deployedAt", Narrow, |r| leaf(r.0.deployed_at)),
        ("endpoint", Whole, |r| leaf(r.endpoint_url())),
        ("healthStatus", Narrow, |r| leaf(r.0.health_status)),
        ("healthReason", Whole, |r| {
            leaf(r.0.health_reason.as_deref())
        }),
    ];

    /// `endpoint`: `null` until known, and once the instance is terminated.
    fn endpoint_url(&self) -> Option<&str> {
        (self.0.status != InstanceStatus::Terminated)
            .then_some(self.0.endpoint.as_deref())
            .flatten()
    }

    /// The newest monitoring sample (the `latestMetrics` field).
    pub(crate) async fn latest(
        &self,
        reads: &CachedReads<'_>,
    ) -> AppResult<Option<MonitoringMetrics>> {
        Ok(reads
            .latest_metrics(self.0.id)
            .await?
            .map(MonitoringMetrics::raw))
    }

    /// The newest sample of many instances with one read of rows as wide as `width` (the compiled
    /// read path).
    pub(crate) async fn latest_many(
        instances: &[&Instance],
        reads: &CachedReads<'_>,
        width: Width,
    ) -> AppResult<Vec<Option<MonitoringMetrics>>> {
        let ids = instances.iter().map(|i| i.0.id).collect();
        let rows = reads.latest_metrics_many(ids, width).await?;
        Ok(rows
            .into_iter()
            .map(|r| r.map(MonitoringMetrics::raw))
            .collect())
    }
}

/// A deployed server running in a Kubernetes cluster.
#[Object]
impl Instance {
    /// Global identifier.
    pub async fn id(&self) -> ID {
        ids::encode(Kind::Instance, self.0.id)
    }
    /// The server this instance runs.
    async fn server(&self, ctx: &Context<'_>) -> AppResult<Server> {
        RequestCtx::of(ctx)?
            .loader
            .load_one(ServerKey(self.0.server_id))
            .await?
            .map(Server)
            .ok_or(AppError::NotFound("server"))
    }
    /// Id of the server this instance runs (without loading it).
    async fn server_id(&self) -> ID {
        ids::encode(Kind::Server, self.0.server_id)
    }
    /// The cluster the instance runs in.
    async fn cluster(&self, ctx: &Context<'_>) -> AppResult<Cluster> {
        RequestCtx::of(ctx)?
            .loader
            .load_one(ClusterKey(self.0.cluster_id))
            .await?
            .map(Cluster)
            .ok_or(AppError::NotFound("cluster"))
    }
    /// Kubernetes Deployment name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Kubernetes namespace.
    async fn namespace(&self) -> &str {
        &self.0.namespace
    }
    /// Overall state.
    async fn status(&self) -> InstanceStatus {
        self.0.status
    }
    /// What the instance is doing.
    async fn phase(&self) -> InstancePhase {
        self.0.phase
    }
    /// Replica counts as Kubernetes reports them.
    async fn replicas(&self) -> Replicas {
        Replicas {
            desired: self.0.replicas_desired,
            current: self.0.replicas_current,
            ready: self.0.replicas_ready,
        }
    }
    /// When the instance was first deployed.
    async fn deployed_at(&self) -> Option<DateTime<Utc>> {
        self.0.deployed_at
    }
    /// The URL clients inside the cluster reach the MCP server at: the ToolHive operator's
    /// `status.url` (its proxy's Service), or the gateway's own Service's DNS name. `null`
    /// until it is known, and once the instance is terminated.
    async fn endpoint(&self) -> Option<&str> {
        self.endpoint_url()
    }
    /// Deployment parameters (secret values are never included). Environment values are shown
    /// to deployers and admins; viewers see each variable's name with `redacted: true`.
    async fn configuration(&self, ctx: &Context<'_>) -> Json<Value> {
        Json(parameters_for(ctx, &self.0.configuration))
    }
    /// Latest resource usage, from the newest monitoring sample: `cpuPercent` (share of the CPU
    /// limit), `cpuBasis`, `memoryBytes`, `storageBytes` (where known) and `measuredAt`. `null`
    /// before the first sample.
    async fn resource_usage(&self, ctx: &Context<'_>) -> AppResult<Option<Json<Value>>> {
        let latest = RequestCtx::reads(ctx)?.latest_metrics(self.0.id).await?;
        Ok(latest.map(|m| Json(resource_usage(&m))))
    }
    /// What the instance's server now offers beyond what it runs: a newer image or version,
    /// and how the declared environment changed. `null` when it is up to date (or terminated).
    async fn upgrade(&self, ctx: &Context<'_>) -> AppResult<Option<InstanceUpgrade>> {
        if self.0.status == InstanceStatus::Terminated {
            return Ok(None);
        }
        let Ok(spec) = serde_json::from_value::<crate::k8s::manifests::InstanceSpec>(
            self.0.configuration.clone(),
        ) else {
            return Ok(None);
        };
        let server = RequestCtx::of(ctx)?
            .loader
            .load_one(ServerKey(self.0.server_id))
            .await?;
        Ok(server
            .and_then(|s| crate::k8s::drift::upgrade_of(&spec, &s))
            .map(InstanceUpgrade::from))
    }
    /// Health.
    async fn health_status(&self) -> HealthStatus {
        self.0.health_status
    }
    /// Why the instance has its health status, in words.
    async fn health_reason(&self) -> Option<&str> {
        self.0.health_reason.as_deref()
    }
    /// Recent Kubernetes events of the instance and its pods, newest first (by last
    /// occurrence). Pages with `first` (1 to 100, default all) and `after` (an event's
    /// `cursor`).
    async fn events(
        &self,
        #[graphql(desc = "Most events to return, 1 to 100.")] first: Option<i32>,
        #[graphql(desc = "The `cursor` of the last event of the previous page.")] after: Option<
            String,
        >,
    ) -> AppResult<Vec<InstanceEvent>> {
        let first = match first {
            None => usize::MAX,
            Some(n) if (1..=100).contains(&n) => n as usize,
            Some(_) => return Err(AppError::bad_input("first", "first must be 1 to 100")),
        };
        let events = InstanceEvent::newest_first(&self.0.events);
        let start = match after {
            None => 0,
            Some(c) => {
                let i = events.iter().position(|e| e.cursor == c).ok_or_else(|| {
                    AppError::bad_input("after", "no event of this instance has this cursor")
                })?;
                i + 1
            }
        };
        Ok(events.into_iter().skip(start).take(first).collect())
    }
    /// The latest Warning event, if any.
    async fn last_warning(&self) -> Option<InstanceEvent> {
        self.0
            .last_warning
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
    }
    /// Pod logs of the instance (its newest ready pod), read through the Kubernetes API and
    /// cached for 2 minutes. At most 10,000 lines and 1 MiB are returned.
    #[graphql(complexity = "100 + tail_lines.unwrap_or(1000).clamp(0, 10_000) as usize / 10")]
    async fn logs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Lines from the end of the log.")] tail_lines: Option<i32>,
        #[graphql(desc = "Only lines newer than this many seconds.")] since_seconds: Option<i32>,
        #[graphql(
            desc = "Container name, when the pod has several. For an instance the ToolHive operator runs, `proxy` reads its proxy runner instead of the MCP server."
        )]
        container: Option<String>,
    ) -> AppResult<InstanceLogs> {
        if tail_lines.is_some_and(|n| n < 0) {
            return Err(AppError::bad_input(
                "tailLines",
                "tailLines must not be negative",
            ));
        }
        if tail_lines.is_some_and(|n| n > crate::k8s::MAX_LOG_LINES) {
            return Err(AppError::bad_input(
                "tailLines",
                format!("tailLines must be at most {}", crate::k8s::MAX_LOG_LINES),
            ));
        }
        if container.as_ref().is_some_and(|c| c.len() > 63) {
            return Err(AppError::bad_input(
                "container",
                "a container name has at most 63 characters",
            ));
        }
        if since_seconds.is_some_and(|n| n <= 0) {
            return Err(AppError::bad_input(
                "sinceSeconds",
                "sinceSeconds must be positive",
            ));
        }
        let Some(services) = ctx.data_opt::<crate::state::Services>() else {
            return Ok(InstanceLogs {
                available: false,
                reason: Some("this gateway has no connection to the instance's cluster".into()),
                pod: None,
                container,
                lines: Vec::new(),
            });
        };
        let cluster = RequestCtx::of(ctx)?
            .loader
            .load_one(ClusterKey(self.0.cluster_id))
            .await?
            .ok_or(AppError::NotFound("cluster"))?;
        let l = services
            .k8s
            .logs(&self.0, &cluster, tail_lines, since_seconds, container)
            .await;
        Ok(InstanceLogs {
            available: l.available,
            reason: l.reason,
            pod: l.pod,
            container: l.container,
            lines: l.lines,
        })
    }
    /// The operation that deployed this instance.
    async fn deployment(&self, ctx: &Context<'_>) -> AppResult<Option<Deployment>> {
        Ok(RequestCtx::of(ctx)?
            .loader
            .load_one(DeployOperationOfInstance(self.0.id))
            .await?
            .map(Deployment))
    }
    /// Every operation on this instance (deploy, scale, restart, rollback, delete), newest first.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn operations(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Deployment>> {
        let args = PageArgs::parse("operations", first, after)?.expect_time_cursor()?;
        let key = DeploymentsOfInstance {
            instance_id: self.0.id,
            page: args.child_page(),
        };
        let rows = RequestCtx::of(ctx)?
            .loader
            .load_one(key)
            .await?
            .unwrap_or_default();
        Ok(build_page(
            &args,
            rows,
            TotalCount::Children(CountOf::DeploymentsOfInstance(self.0.id)),
            |r| time_key(r.started_at, r.id),
            Deployment,
        ))
    }
    /// The newest monitoring sample.
    async fn latest_metrics(&self, ctx: &Context<'_>) -> AppResult<Option<MonitoringMetrics>> {
        self.latest(&RequestCtx::reads(ctx)?).await
    }
    /// Monitoring samples, newest first, optionally within a time range: the detailed samples
    /// (`RAW`, kept 7 days) or hourly aggregates (`HOURLY`, kept 90 days).
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn metrics(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Detailed samples or hourly aggregates (default RAW).",
            default_with = "MetricsResolution::Raw"
        )]
        resolution: MetricsResolution,
        #[graphql(
            desc = "Only samples at or after this time (hourly: the hours that end after it)."
        )]
        since: Option<DateTime<Utc>>,
        #[graphql(desc = "Only samples before this time.")] until: Option<DateTime<Utc>>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<MonitoringMetrics>> {
        if let (Some(a), Some(b)) = (since, until)
            && a >= b
        {
            return Err(AppError::bad_input(
                "until",
                "`until` must be later than `since`",
            ));
        }
        let args = PageArgs::parse("metrics", first, after)?.expect_time_cursor()?;
        match resolution {
            MetricsResolution::Raw => {
                let key = MetricsOfInstance {
                    instance_id: self.0.id,
                    since,
                    until,
                    page: args.child_page(),
                };
                let rows = RequestCtx::reads(ctx)?.metrics(key).await?;
                Ok(build_page(
                    &args,
                    std::sync::Arc::unwrap_or_clone(rows),
                    TotalCount::Children(CountOf::MetricsOfInstance(self.0.id)),
                    |r| time_key(r.timestamp, uuid::Uuid::nil()),
                    MonitoringMetrics::raw,
                ))
            }
            MetricsResolution::Hourly => {
                let key = HourlyMetricsOfInstance {
                    instance_id: self.0.id,
                    since,
                    until,
                    page: args.child_page(),
                };
                let rows = RequestCtx::of(ctx)?
                    .loader
                    .load_one(key)
                    .await?
                    .unwrap_or_default();
                Ok(build_page(
                    &args,
                    rows,
                    TotalCount::Children(CountOf::HourlyMetricsOfInstance(self.0.id)),
                    |r| time_key(r.bucket, uuid::Uuid::nil()),
                    MonitoringMetrics::hourly,
                ))
            }
        }
    }
    /// When the record was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the record last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// An upgrade available to an instance (`Instance.upgrade`), applied by `upgradeInstance`.
#[derive(SimpleObject)]
pub struct InstanceUpgrade {
    /// The image the instance runs.
    pub current_image: String,
    /// The image its server's registry entry now gives.
    pub available_image: String,
    /// The server's version when the instance was deployed (unknown for older instances).
    pub current_version: Option<String>,
    /// The server's version now.
    pub available_version: Option<String>,
    /// How the server's declared environment changed since the instance was deployed.
    pub env_changes: EnvChanges,
}

/// Changes in the environment variables a server declares.
#[derive(SimpleObject)]
pub struct EnvChanges {
    /// Variables now required (with no default) that were not before: `upgradeInstance` needs
    /// their values unless the instance already has them.
    pub newly_required: Vec<String>,
    /// Variables no longer declared.
    pub removed: Vec<String>,
    /// Variables whose secret flag changed (a variable that became secret moves into the
    /// instance's Secret on upgrade).
    pub secret_changed: Vec<String>,
}

impl From<crate::k8s::drift::Upgrade> for InstanceUpgrade {
    fn from(u: crate::k8s::drift::Upgrade) -> Self {
        InstanceUpgrade {
            current_image: u.current_image,
            available_image: u.available_image,
            current_version: u.current_version,
            available_version: u.available_version,
            env_changes: EnvChanges {
                newly_required: u.env_changes.newly_required,
                removed: u.env_changes.removed,
                secret_changed: u.env_changes.secret_changed,
            },
        }
    }
}
