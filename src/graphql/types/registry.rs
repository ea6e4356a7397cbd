//! Registries and the servers they list.

use super::*;

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

impl Registry {
    /// The fields answered from the row alone (the compiled read path, `crate::graphql::compiled`).
    pub(crate) const LEAVES: &'static [Leaf<Registry>] = &[
        ("id", Whole, |r| leaf(ids::encode(Kind::Registry, r.0.id))),
        ("name", Whole, |r| leaf(r.0.name.as_str())),
        ("url", Whole, |r| leaf(r.0.url.as_str())),
        ("description", Whole, |r| leaf(r.0.description.as_deref())),
        ("status", Whole, |r| leaf(r.0.status)),
        ("format", Whole, |r| leaf(r.0.format)),
        ("serverCount", Whole, |r| leaf(r.0.server_count)),
        ("lastSyncAt", Whole, |r| leaf(r.0.last_sync_at)),
        ("lastSyncAttemptAt", Whole, |r| {
            leaf(r.0.last_sync_attempt_at)
        }),
        ("lastError", Whole, |r| leaf(r.0.last_error.as_deref())),
        ("syncIntervalSeconds", Whole, |r| {
            leaf(r.0.sync_interval_seconds)
        }),
        ("nextSyncAt", Whole, |r| leaf(r.0.next_sync_at)),
        ("archivedAt", Whole, |r| leaf(r.0.archived_at)),
        ("createdAt", Whole, |r| leaf(r.0.created_at)),
        ("updatedAt", Whole, |r| leaf(r.0.updated_at)),
        ("metadata", Whole, |r| leaf(&r.0.metadata)),
    ];

    /// A page of the registries that match `filter`, ordered by name (`Query.registries`).
    pub(crate) async fn list(
        rc: &RequestCtx,
        filter: dataloaders::reads::RegistryFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<Page<Registry>> {
        rc.require_authenticated()?;
        let args = PageArgs::parse("registries", first, after)?;
        let rows = rc
            .reader
            .registries_page(&filter, args.after.as_ref(), args.fetch_limit())
            .await?;
        Ok(build_page(
            &args,
            rows,
            TotalCount::Registries(filter),
            |r| name_key(&r.name, r.id),
            Registry,
        ))
    }

    /// A page of the registry's servers, ordered by name (the `servers` field).
    pub(crate) async fn servers_page(
        &self,
        reads: &CachedReads<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<Page<Server>> {
        let args = PageArgs::parse("servers", first, after)?;
        let rows = reads
            .registry_servers(self.0.id, self.0.last_sync_at, args.child_page())
            .await?;
        Ok(self.servers_built(&args, rows))
    }

    /// Pages of many registries' servers with one read of rows as wide as `width` (the compiled
    /// read path, which knows the fields it will read).
    pub(crate) async fn servers_pages(
        registries: &[&Registry],
        reads: &CachedReads<'_>,
        first: Option<i32>,
        after: Option<String>,
        width: Width,
    ) -> AppResult<Vec<Page<Server>>> {
        let args = PageArgs::parse("servers", first, after)?;
        let keys = registries
            .iter()
            .map(|r| (r.0.id, r.0.last_sync_at, args.child_page()))
            .collect();
        let rows = reads.registry_servers_many(keys, width).await?;
        Ok(registries
            .iter()
            .zip(rows)
            .map(|(r, rows)| r.servers_built(&args, rows))
            .collect())
    }

    fn servers_built(&self, args: &PageArgs, rows: Rows<ServerRow>) -> Page<Server> {
        build_page(
            args,
            std::sync::Arc::unwrap_or_clone(rows),
            TotalCount::RegistryServers {
                registry_id: self.0.id,
                synced_at: self.0.last_sync_at,
            },
            |r| name_key(&r.name, r.id),
            Server,
        )
    }
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
        self.servers_page(&RequestCtx::reads(ctx)?, first, after)
            .await
    }
}

/// An MCP server definition listed by a registry.
pub struct Server(pub ServerRow);

impl Server {
    /// The fields answered from the row alone (the compiled read path, `crate::graphql::compiled`).
    pub(crate) const LEAVES: &'static [Leaf<Server>] = &[
        ("id", Narrow, |r| leaf(ids::encode(Kind::Server, r.0.id))),
        ("registryId", Narrow, |r| {
            leaf(ids::encode(Kind::Registry, r.0.registry_id))
        }),
        ("name", Narrow, |r| leaf(r.0.name.as_str())),
        ("originalName", Whole, |r| leaf(r.0.original_name.as_str())),
        ("description", Whole, |r| leaf(r.0.description.as_str())),
        ("version", Whole, |r| leaf(r.0.version.as_deref())),
        ("image", Whole, |r| leaf(r.0.image.as_deref())),
        ("url", Whole, |r| leaf(r.0.url.as_deref())),
        ("transport", Narrow, |r| leaf(r.0.transport)),
        ("tier", Narrow, |r| leaf(r.0.tier)),
        ("status", Narrow, |r| leaf(r.0.status)),
        ("category", Whole, |r| leaf(r.0.category.as_slice())),
        ("capabilities", Whole, |r| leaf(r.0.capabilities.as_slice())),
        ("repositoryUrl", Whole, |r| {
            leaf(r.0.repository_url.as_deref())
        }),
        ("networkPermissions", Whole, |r| {
            leaf(&r.0.network_permissions)
        }),
        ("pullCount", Narrow, |r| leaf(r.0.pull_count)),
        ("stars", Narrow, |r| leaf(r.0.stars)),
        ("lastUpdated", Narrow, |r| leaf(r.0.last_updated)),
        ("deploymentRequirements", Whole, |r| {
            leaf(&r.0.deployment_requirements)
        }),
        ("removedUpstreamAt", Narrow, |r| {
            leaf(r.0.removed_upstream_at)
        }),
        ("archivedAt", Narrow, |r| leaf(r.0.archived_at)),
    ];

    /// A page of the server's instances, oldest first (the `instances` field).
    pub(crate) async fn instances_page(
        &self,
        reads: &CachedReads<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<Page<Instance>> {
        let args = PageArgs::parse("instances", first, after)?.expect_time_cursor()?;
        let rows = reads.instances_of_server(self.instances_key(&args)).await?;
        Ok(self.instances_built(&args, rows))
    }

    /// Pages of many servers' instances with one read of rows as wide as `width` (the compiled
    /// read path).
    pub(crate) async fn instances_pages(
        servers: &[&Server],
        reads: &CachedReads<'_>,
        first: Option<i32>,
        after: Option<String>,
        width: Width,
    ) -> AppResult<Vec<Page<Instance>>> {
        let args = PageArgs::parse("instances", first, after)?.expect_time_cursor()?;
        let keys = servers.iter().map(|s| s.instances_key(&args)).collect();
        let rows = reads.instances_of_servers(keys, width).await?;
        Ok(servers
            .iter()
            .zip(rows)
            .map(|(s, rows)| s.instances_built(&args, rows))
            .collect())
    }

    fn instances_key(&self, args: &PageArgs) -> InstancesOfServer {
        InstancesOfServer {
            server_id: self.0.id,
            page: args.child_page(),
        }
    }

    fn instances_built(&self, args: &PageArgs, rows: Rows<InstanceRow>) -> Page<Instance> {
        build_page(
            args,
            std::sync::Arc::unwrap_or_clone(rows),
            TotalCount::Children(CountOf::InstancesOfServer(self.0.id)),
            |r| time_key(r.created_at, r.id),
            Instance,
        )
    }
}

/// An MCP server definition listed by a registry.
#[Object]
impl Server {
    /// Global identifier. Stable across syncs of the same registry entry.
    pub async fn id(&self) -> ID {
        ids::encode(Kind::Server, self.0.id)
    }
    /// The registry that lists this server.
    async fn registry(&self, ctx: &Context<'_>) -> AppResult<Registry> {
        RequestCtx::of(ctx)?
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
        self.instances_page(&RequestCtx::reads(ctx)?, first, after)
            .await
    }
}
