//! The entity types of the schema. Each wraps its row; relationships resolve through the
//! request's batching loader, so resolvers here contain no SQL.

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use dataloaders::enums::*;
use dataloaders::models::*;
use dataloaders::*;
use serde_json::Value;

use crate::error::{AppError, AppResult};
use crate::graphql::context::RequestCtx;
use crate::graphql::pagination::{Page, PageArgs, TotalCount, build_page};
use crate::ids::{self, Kind};

fn name_key(name: &str, id: uuid::Uuid) -> SortKey {
    SortKey {
        value: name.to_string(),
        id,
    }
}

fn time_key(at: DateTime<Utc>, id: uuid::Uuid) -> SortKey {
    SortKey {
        value: at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        id,
    }
}

/// A ToolHive registry: a source of MCP server definitions that the gateway syncs.
pub struct Registry(pub RegistryRow);

/// A summary of a registry's authentication settings. Secrets themselves are write-only.
#[derive(SimpleObject)]
pub struct RegistryAuthSummary {
    /// How the gateway authenticates to the registry.
    pub kind: RegistryAuthKind,
    /// Whether a secret is stored.
    pub configured: bool,
}

/// A ToolHive registry: a source of MCP server definitions that the gateway syncs.
#[Object]
impl Registry {
    /// Global identifier.
    pub async fn id(&self) -> ID {
        ids::encode(Kind::Registry, self.0.id)
    }
    /// Display name: 1 to 64 letters, digits and hyphens, unique.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Where the registry is fetched from (http, https, or file when allowed).
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// Optional description.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// Lifecycle state.
    async fn status(&self) -> RegistryStatus {
        self.0.status
    }
    /// The document format, or AUTO to detect it from the content.
    async fn format(&self) -> RegistryFormat {
        self.0.format
    }
    /// Number of servers stored from the last successful sync.
    async fn server_count(&self) -> i32 {
        self.0.server_count
    }
    /// When the last successful sync committed.
    async fn last_sync_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_sync_at
    }
    /// When the last sync attempt started, successful or not.
    async fn last_sync_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_sync_attempt_at
    }
    /// Why the last sync failed, while the registry is in ERROR.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// How often the registry is refreshed, in seconds.
    async fn sync_interval_seconds(&self) -> i32 {
        self.0.sync_interval_seconds
    }
    /// When the next periodic sync is due.
    async fn next_sync_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_sync_at
    }
    /// When the registry was deleted: it is then archived, hidden from lists and never synced,
    /// and kept for the history of the instances that ran its servers.
    async fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.0.archived_at
    }
    /// When the registry was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the registry was last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Additional registry-specific data.
    async fn metadata(&self) -> Json<Value> {
        Json(self.0.metadata.clone())
    }
    /// What the last sync attempt did: mode, format, counts, and the malformed entries it skipped
    /// with their reasons. Absent before the first sync.
    async fn last_sync_report(&self) -> Option<crate::sync::SyncReport> {
        self.0
            .last_sync_report
            .as_ref()
            .and_then(crate::sync::SyncReport::from_json)
    }
    /// Authentication settings, redacted: the secret itself can never be read back.
    async fn auth_config(&self) -> RegistryAuthSummary {
        RegistryAuthSummary {
            kind: self.0.auth_kind,
            configured: self.0.auth_config.is_some(),
        }
    }
    /// The registry's servers, ordered by name.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn servers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Server>> {
        let args = PageArgs::parse("servers", first, after)?;
        let rows = RequestCtx::reads(ctx)
            .registry_servers(self.0.id, self.0.last_sync_at, args.child_page())
            .await?;
        Ok(build_page(
            &args,
            std::sync::Arc::unwrap_or_clone(rows),
            TotalCount::RegistryServers {
                registry_id: self.0.id,
                synced_at: self.0.last_sync_at,
            },
            |r| name_key(&r.name, r.id),
            Server,
        ))
    }
}

/// An MCP server definition listed by a registry.
pub struct Server(pub ServerRow);

/// An MCP server definition listed by a registry.
#[Object]
impl Server {
    /// Global identifier. Stable across syncs of the same registry entry.
    pub async fn id(&self) -> ID {
        ids::encode(Kind::Server, self.0.id)
    }
    /// The registry that lists this server.
    async fn registry(&self, ctx: &Context<'_>) -> AppResult<Registry> {
        RequestCtx::of(ctx)
            .loader
            .load_one(RegistryKey(self.0.registry_id))
            .await?
            .map(Registry)
            .ok_or(AppError::NotFound("registry"))
    }
    /// Id of the registry that lists this server.
    async fn registry_id(&self) -> ID {
        ids::encode(Kind::Registry, self.0.registry_id)
    }
    /// Name in DNS-label form, unique within the registry.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The name exactly as the registry spells it (for example `io.github.stacklok/fetch`).
    async fn original_name(&self) -> &str {
        &self.0.original_name
    }
    /// What the server does.
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// Semantic version or tag.
    async fn version(&self) -> Option<&str> {
        self.0.version.as_deref()
    }
    /// Container image reference; absent for remote servers. For npm, PyPI and NuGet packages it
    /// is a ToolHive protocol scheme (`npx://`, `uvx://`, `dnx://`) whose image is built at deploy
    /// time (see `deploymentRequirements.package`).
    async fn image(&self) -> Option<&str> {
        self.0.image.as_deref()
    }
    /// Endpoint of a remote server; absent for container servers.
    async fn url(&self) -> Option<&str> {
        self.0.url.as_deref()
    }
    /// How clients talk to the server.
    async fn transport(&self) -> Transport {
        self.0.transport
    }
    /// Who maintains the server.
    async fn tier(&self) -> ServerTier {
        self.0.tier
    }
    /// Whether the server is recommended for use.
    async fn status(&self) -> ServerStatus {
        self.0.status
    }
    /// Categorisation tags.
    async fn category(&self) -> &[String] {
        &self.0.category
    }
    /// Names of the tools the server offers.
    async fn capabilities(&self) -> &[String] {
        &self.0.capabilities
    }
    /// Source code repository.
    async fn repository_url(&self) -> Option<&str> {
        self.0.repository_url.as_deref()
    }
    /// Network access the server needs (outbound hosts and ports).
    async fn network_permissions(&self) -> Json<Value> {
        Json(self.0.network_permissions.clone())
    }
    /// Number of image pulls reported by the registry.
    async fn pull_count(&self) -> i64 {
        self.0.pull_count
    }
    /// Popularity reported by the registry.
    async fn stars(&self) -> i64 {
        self.0.stars
    }
    /// When the registry last updated this entry.
    async fn last_updated(&self) -> Option<DateTime<Utc>> {
        self.0.last_updated
    }
    /// What a deployment needs: environment variables (with required and secret flags), args,
    /// target port, resources.
    async fn deployment_requirements(&self) -> Json<Value> {
        Json(self.0.deployment_requirements.clone())
    }
    /// When the server vanished from its registry; it is kept while instances of it exist.
    async fn removed_upstream_at(&self) -> Option<DateTime<Utc>> {
        self.0.removed_upstream_at
    }
    /// When the server's registry was deleted (the server is archived with it: hidden from
    /// lists and search, kept for the history of its instances).
    async fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.0.archived_at
    }
    /// Deployed instances of this server.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn instances(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Instance>> {
        let args = PageArgs::parse("instances", first, after)?.expect_time_cursor()?;
        let key = InstancesOfServer {
            server_id: self.0.id,
            page: args.child_page(),
        };
        let rows = RequestCtx::reads(ctx).instances_of_server(key).await?;
        Ok(build_page(
            &args,
            std::sync::Arc::unwrap_or_clone(rows),
            TotalCount::Children(CountOf::InstancesOfServer(self.0.id)),
            |r| time_key(r.created_at, r.id),
            Instance,
        ))
    }
}

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
        Ok(RequestCtx::reads(ctx)
            .instance(id)
            .await?
            .map(|row| Instance(std::sync::Arc::unwrap_or_clone(row))))
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
        RequestCtx::of(ctx)
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
        RequestCtx::of(ctx)
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
    /// Deployment parameters (secret values are never included). Environment values are shown
    /// to deployers and admins; viewers see each variable's name with `redacted: true`.
    async fn configuration(&self, ctx: &Context<'_>) -> Json<Value> {
        Json(parameters_for(ctx, &self.0.configuration))
    }
    /// Latest resource usage, from the newest monitoring sample: `cpuPercent` (share of the CPU
    /// limit), `cpuBasis`, `memoryBytes`, `storageBytes` (where known) and `measuredAt`. `null`
    /// before the first sample.
    async fn resource_usage(&self, ctx: &Context<'_>) -> AppResult<Option<Json<Value>>> {
        let latest = RequestCtx::reads(ctx).latest_metrics(self.0.id).await?;
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
        let server = RequestCtx::of(ctx)
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
        #[graphql(desc = "Container name, when the pod has several.")] container: Option<String>,
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
        let cluster = RequestCtx::of(ctx)
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
        Ok(RequestCtx::of(ctx)
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
        let rows = RequestCtx::of(ctx)
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
        Ok(RequestCtx::reads(ctx)
            .latest_metrics(self.0.id)
            .await?
            .map(MonitoringMetrics::raw))
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
                let rows = RequestCtx::reads(ctx).metrics(key).await?;
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
                let rows = RequestCtx::of(ctx)
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

/// One step of a deployment operation.
#[derive(SimpleObject, serde::Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStep {
    /// What the step does, for example `apply-deployment`.
    pub name: String,
    /// `started`, `succeeded`, `failed` or `skipped`.
    pub status: String,
    /// When the step reached this status.
    pub at: DateTime<Utc>,
    /// Detail, if any.
    pub message: Option<String>,
}

/// Why a deployment operation failed.
#[derive(SimpleObject, serde::Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentErrorDetail {
    /// Machine-readable reason, for example a Kubernetes reason such as `ImagePullBackOff`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// One line of a deployment operation's step log.
#[derive(SimpleObject, Clone)]
pub struct DeploymentLogLine {
    /// When the line was written.
    pub at: DateTime<Utc>,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// What happened.
    pub message: String,
}

/// A deployment operation: one deploy, scale, restart, rollback or delete of an instance.
pub struct Deployment(pub DeploymentRow);

/// A deployment operation: one deploy, scale, restart, rollback or delete of an instance.
#[Object]
impl Deployment {
    /// Global identifier.
    pub async fn id(&self) -> ID {
        ids::encode(Kind::Deployment, self.0.id)
    }
    /// The instance the operation acts on.
    async fn instance(&self, ctx: &Context<'_>) -> AppResult<Instance> {
        Instance::load(ctx, self.0.instance_id)
            .await?
            .ok_or(AppError::NotFound("instance"))
    }
    /// Id of the instance the operation acts on.
    async fn instance_id(&self) -> ID {
        ids::encode(Kind::Instance, self.0.instance_id)
    }
    /// The server being deployed.
    async fn server(&self, ctx: &Context<'_>) -> AppResult<Server> {
        RequestCtx::of(ctx)
            .loader
            .load_one(ServerKey(self.0.server_id))
            .await?
            .map(Server)
            .ok_or(AppError::NotFound("server"))
    }
    /// Id of the server being deployed.
    async fn server_id(&self) -> ID {
        ids::encode(Kind::Server, self.0.server_id)
    }
    /// What the operation does.
    async fn operation(&self) -> DeploymentOperation {
        self.0.operation
    }
    /// Who started the operation.
    async fn initiated_by(&self) -> &str {
        &self.0.initiated_by
    }
    /// Where the operation stands.
    async fn status(&self) -> DeploymentStatus {
        self.0.status
    }
    /// When the operation started.
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    /// When the operation ended; set for every COMPLETED, FAILED or CANCELLED operation.
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }
    /// The operation's parameters (secret values are never included). Environment values are
    /// shown to deployers and admins; viewers see each variable's name with `redacted: true`.
    async fn parameters(&self, ctx: &Context<'_>) -> Json<Value> {
        Json(parameters_for(ctx, &self.0.parameters))
    }
    /// Step history, oldest first.
    async fn steps(&self) -> Vec<DeploymentStep> {
        serde_json::from_value(self.0.steps.clone()).unwrap_or_default()
    }
    /// Error details; never empty for a FAILED operation.
    async fn errors(&self) -> Vec<DeploymentErrorDetail> {
        serde_json::from_value(self.0.errors.clone()).unwrap_or_default()
    }
    /// What a rollback to the state before this operation needs (the previous revision and,
    /// for an upgrade, the configuration it replaced; env values only for deployers).
    async fn rollback_info(&self, ctx: &Context<'_>) -> Option<Json<Value>> {
        self.0
            .rollback_info
            .as_ref()
            .map(|r| Json(parameters_for(ctx, r)))
    }
    /// The operation's step log (kept 30 days), oldest first. Batched across operations, and
    /// cached for 2 minutes once the operation has finished.
    async fn logs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Most lines to return, 1 to 1000 (default 200).")] first: Option<i32>,
    ) -> AppResult<Vec<DeploymentLogLine>> {
        let n = first.unwrap_or(200);
        if !(1..=1000).contains(&n) {
            return Err(AppError::bad_input(
                "first",
                "first must be between 1 and 1000",
            ));
        }
        let finished = !matches!(
            self.0.status,
            DeploymentStatus::Initiated | DeploymentStatus::InProgress
        );
        let key = LogsOfDeployment {
            deployment_id: self.0.id,
            page: ChildPage {
                limit: i64::from(n),
                after: None,
            },
        };
        let rows = RequestCtx::reads(ctx)
            .deployment_logs(key, finished)
            .await?;
        Ok(rows
            .iter()
            .map(|l| DeploymentLogLine {
                at: l.logged_at,
                level: l.level.as_db_str().to_string(),
                message: l.message.clone(),
            })
            .collect())
    }
}

/// A target Kubernetes cluster.
pub struct Cluster(pub ClusterRow);

/// A target Kubernetes cluster.
#[Object]
impl Cluster {
    /// Global identifier.
    pub async fn id(&self) -> ID {
        ids::encode(Kind::Cluster, self.0.id)
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// URL of the Kubernetes API server.
    async fn endpoint(&self) -> &str {
        &self.0.endpoint
    }
    /// The kubeconfig context used to reach it, if any.
    async fn context(&self) -> Option<&str> {
        self.0.context.as_deref()
    }
    /// Whether the gateway reaches the cluster through its in-cluster service account.
    async fn in_cluster(&self) -> bool {
        self.0.in_cluster
    }
    /// True when this is the bundled Kubernetes API emulator with simulated workloads, not a real
    /// cluster.
    async fn simulated(&self) -> bool {
        self.0.simulated
    }
    /// Whether the gateway can reach and use the cluster.
    async fn status(&self) -> ClusterStatus {
        self.0.status
    }
    /// Kubernetes version reported by the API server.
    async fn version(&self) -> Option<&str> {
        self.0.version.as_deref()
    }
    /// Supported features (API groups the gateway can use).
    async fn capabilities(&self) -> &[String] {
        &self.0.capabilities
    }
    /// Available resources.
    async fn resource_quota(&self) -> Json<Value> {
        Json(self.0.resource_quota.clone())
    }
    /// What the gateway may do, as the cluster's RBAC answers.
    async fn access_level(&self) -> AccessLevel {
        self.0.access_level
    }
    /// When the cluster was last checked.
    async fn last_checked_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_checked_at
    }
    /// Why the last check failed, if it did.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// Whether credentials are stored for this cluster (they can never be read back).
    async fn has_stored_credentials(&self) -> bool {
        self.0.credentials.is_some()
    }
    /// When the cluster was removed with `deleteCluster` (null while registered). A removed
    /// cluster stays readable through the instances it ran, for their history.
    async fn removed_at(&self) -> Option<DateTime<Utc>> {
        self.0.removed_at
    }
    /// Instances running in this cluster.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn instances(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Instance>> {
        let args = PageArgs::parse("instances", first, after)?.expect_time_cursor()?;
        let key = InstancesOfCluster {
            cluster_id: self.0.id,
            page: args.child_page(),
        };
        let rows = RequestCtx::reads(ctx).instances_of_cluster(key).await?;
        Ok(build_page(
            &args,
            std::sync::Arc::unwrap_or_clone(rows),
            TotalCount::Children(CountOf::InstancesOfCluster(self.0.id)),
            |r| time_key(r.created_at, r.id),
            Instance,
        ))
    }
}

/// Which samples a metrics query reads.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsResolution {
    /// The detailed samples, one per collection interval (kept 7 days).
    Raw,
    /// Hourly aggregates (kept 90 days): averages, maxima and sums over the hour's samples.
    Hourly,
}

/// One monitoring sample of an instance, or the aggregate of one hour of samples.
pub struct MonitoringMetrics {
    row: MetricsRow,
    hourly: Option<HourlyMetricsRow>,
}

impl MonitoringMetrics {
    /// A detailed sample.
    pub fn raw(row: MetricsRow) -> Self {
        MonitoringMetrics { row, hourly: None }
    }

    /// An hourly aggregate, read through the sample fields (averages; the request count is the
    /// hour's sum).
    pub fn hourly(h: HourlyMetricsRow) -> Self {
        let row = MetricsRow {
            id: 0,
            instance_id: h.instance_id,
            timestamp: h.bucket,
            cpu_usage: h.cpu_usage_avg,
            memory_usage: h.memory_usage_avg.map(|m| m.round() as i64),
            network_io: serde_json::json!({}),
            request_count: h.request_count_sum,
            response_time: h.response_time_avg,
            error_rate: h.error_rate_avg,
            health_checks: serde_json::json!({ "healthyRatio": h.healthy_ratio }),
        };
        MonitoringMetrics {
            row,
            hourly: Some(h),
        }
    }
}

/// One monitoring sample of an instance, or the aggregate of one hour of samples.
#[Object]
impl MonitoringMetrics {
    /// The instance measured.
    async fn instance_id(&self) -> ID {
        ids::encode(Kind::Instance, self.row.instance_id)
    }
    /// The instance measured.
    async fn instance(&self, ctx: &Context<'_>) -> AppResult<Instance> {
        Instance::load(ctx, self.row.instance_id)
            .await?
            .ok_or(AppError::NotFound("instance"))
    }
    /// When the sample was taken.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.row.timestamp
    }
    /// CPU use as a percentage (0 to 100) of the pods' requests or limits.
    async fn cpu_usage(&self) -> Option<f64> {
        self.row.cpu_usage
    }
    /// Memory use in bytes.
    async fn memory_usage(&self) -> Option<f64> {
        self.row.memory_usage.map(|b| b as f64)
    }
    /// Network traffic: ingress and egress bytes.
    #[graphql(name = "networkIO")]
    async fn network_io(&self) -> Json<Value> {
        Json(self.row.network_io.clone())
    }
    /// Requests served since the previous sample.
    async fn request_count(&self) -> Option<i64> {
        self.row.request_count
    }
    /// Average response time in milliseconds.
    async fn response_time(&self) -> Option<f64> {
        self.row.response_time
    }
    /// Percentage (0 to 100) of requests that failed.
    async fn error_rate(&self) -> Option<f64> {
        self.row.error_rate
    }
    /// Results of the health checks.
    async fn health_checks(&self) -> Json<Value> {
        Json(self.row.health_checks.clone())
    }
    /// `RAW` for a detailed sample, `HOURLY` for an hourly aggregate.
    async fn resolution(&self) -> MetricsResolution {
        if self.hourly.is_some() {
            MetricsResolution::Hourly
        } else {
            MetricsResolution::Raw
        }
    }
    /// Samples aggregated (1 for a detailed sample).
    async fn samples(&self) -> i32 {
        self.hourly.as_ref().map_or(1, |h| h.samples)
    }
    /// Highest CPU use of the hour, as a percentage (hourly aggregates; the sample's value
    /// otherwise).
    async fn cpu_usage_max(&self) -> Option<f64> {
        match &self.hourly {
            Some(h) => h.cpu_usage_max,
            None => self.row.cpu_usage,
        }
    }
    /// Highest memory use of the hour, in bytes (hourly aggregates; the sample's value
    /// otherwise).
    async fn memory_usage_max(&self) -> Option<f64> {
        match &self.hourly {
            Some(h) => h.memory_usage_max.map(|b| b as f64),
            None => self.row.memory_usage.map(|b| b as f64),
        }
    }
    /// Share (0 to 1) of the samples whose MCP health check passed; null when none was checked.
    async fn healthy_ratio(&self) -> Option<f64> {
        match &self.hourly {
            Some(h) => h.healthy_ratio,
            None => self
                .row
                .health_checks
                .get("mcp")
                .and_then(|m| m.get("ok"))
                .and_then(Value::as_bool)
                .map(|ok| if ok { 1.0 } else { 0.0 }),
        }
    }
}

/// `Instance.resourceUsage` from a monitoring sample.
fn resource_usage(m: &MetricsRow) -> Value {
    let basis = m.health_checks.pointer("/podMetrics/cpuBasis").cloned();
    serde_json::json!({
        "cpuPercent": m.cpu_usage,
        "cpuBasis": basis,
        "memoryBytes": m.memory_usage,
        "storageBytes": m.health_checks.pointer("/podMetrics/storageBytes").cloned(),
        "measuredAt": m.timestamp,
    })
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

/// Deployment parameters as the caller may see them: env values only for deployers and admins
/// (the row is visible only in a namespace granted to the caller, so a deployer who sees it
/// may deploy there); viewers get each variable's name and `redacted: true`.
fn parameters_for(ctx: &Context<'_>, params: &Value) -> Value {
    let rc = RequestCtx::of(ctx);
    if rc.principal.has(crate::auth::Role::Deployer) {
        return params.clone();
    }
    redact_env(params)
}

/// `params` with every `env[].value` removed and marked `redacted: true`, at any depth (an
/// upgrade's parameters hold the new configuration, a rollback's the one it restores).
pub fn redact_env(params: &Value) -> Value {
    let mut out = params.clone();
    redact_in_place(&mut out);
    out
}

fn redact_in_place(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "env"
                    && let Some(env) = child.as_array_mut()
                {
                    for e in env.iter_mut().filter_map(Value::as_object_mut) {
                        if e.remove("value").is_some() {
                            e.insert("redacted".into(), Value::Bool(true));
                        }
                    }
                } else {
                    redact_in_place(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_in_place),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_redacted_at_any_depth() {
        let params = serde_json::json!({
            "env": [{"name": "A", "value": "1"}],
            "spec": {"env": [{"name": "B", "value": "2"}], "image": "x"},
            "restoreConfiguration": {"env": [{"name": "C", "value": "3"}]},
        });
        let out = redact_env(&params);
        assert!(!out.to_string().contains("\"value\""), "{out}");
        assert_eq!(
            out["spec"]["env"][0],
            serde_json::json!({"name": "B", "redacted": true})
        );
        assert_eq!(out["spec"]["image"], "x");
        assert_eq!(out["restoreConfiguration"]["env"][0]["redacted"], true);
    }
}
