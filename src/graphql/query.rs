//! Query roots.

use async_graphql::{Context, ID, InputObject, Interface, Json, Object, SimpleObject};
use dataloaders::enums::*;
use dataloaders::reads::{DeploymentFilter, InstanceFilter, RegistryFilter, ServerFilter};
use dataloaders::*;

use crate::error::{AppError, AppResult};
use crate::graphql::context::RequestCtx;
use crate::graphql::pagination::{Page, PageArgs, TotalCount, build_page};
use crate::graphql::types::*;
use crate::ids::{self, Kind};

/// An object with a global id.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "Global identifier."))]
pub enum Node {
    Registry(Registry),
    Server(Server),
    Instance(Instance),
    Deployment(Deployment),
    Cluster(Cluster),
}

/// Filter for `registries`.
#[derive(InputObject, Default)]
pub struct RegistryFilterInput {
    /// Only registries in one of these states.
    pub status: Option<Vec<RegistryStatus>>,
}

/// Filter for `servers`. Conditions combine with AND.
#[derive(InputObject, Default)]
pub struct ServerFilterInput {
    /// Only servers of these registries.
    pub registry_ids: Option<Vec<ID>>,
    /// Only servers with one of these transports.
    pub transport: Option<Vec<Transport>>,
    /// Only servers of these tiers.
    pub tier: Option<Vec<ServerTier>>,
    /// Only servers with one of these statuses.
    pub status: Option<Vec<ServerStatus>>,
    /// Only servers carrying all of these categories.
    pub category: Option<Vec<String>>,
    /// Only servers offering all of these capabilities (tool names).
    pub capabilities: Option<Vec<String>>,
}

/// Filter for `instances`. Conditions combine with AND.
#[derive(InputObject, Default)]
pub struct InstanceFilterInput {
    /// Only instances of this server.
    pub server_id: Option<ID>,
    /// Only instances in this cluster.
    pub cluster_id: Option<ID>,
    /// Only instances in this namespace.
    pub namespace: Option<String>,
    /// Only instances in one of these states.
    pub status: Option<Vec<InstanceStatus>>,
    /// Only instances whose server's registry entry offers a newer image or version (`true`),
    /// or only those up to date (`false`); see `Instance.upgrade`.
    pub upgrade_available: Option<bool>,
}

/// Filter for `deployments`. Conditions combine with AND.
#[derive(InputObject, Default)]
pub struct DeploymentFilterInput {
    /// Only operations on this instance.
    pub instance_id: Option<ID>,
    /// Only operations deploying this server.
    pub server_id: Option<ID>,
    /// Only operations in one of these states.
    pub status: Option<Vec<DeploymentStatus>>,
}

/// The `servers` filter and search as the read side takes them.
fn server_filter(
    input: Option<ServerFilterInput>,
    search: Option<String>,
) -> AppResult<ServerFilter> {
    let f = input.unwrap_or_default();
    let registry_ids = f
        .registry_ids
        .map(|ids| {
            ids.iter()
                .map(|id| ids::decode(Kind::Registry, id, "filter.registryIds"))
                .collect::<AppResult<Vec<_>>>()
        })
        .transpose()?;
    let search = dataloaders::search::normalize_search(search.as_deref())
        .map_err(|m| AppError::bad_input("search", m))?;
    Ok(ServerFilter {
        registry_ids,
        transport: f.transport,
        tier: f.tier,
        status: f.status,
        category: f.category,
        capabilities: f.capabilities,
        search,
    })
}

/// How many servers carry one value of a facet.
#[derive(SimpleObject)]
pub struct FacetCount {
    /// The category or capability.
    pub value: String,
    /// How many matching servers carry it.
    pub count: i64,
}

/// Facet counts of the servers matching a filter and search.
#[derive(SimpleObject)]
pub struct ServerFacets {
    /// How many servers match.
    pub total_count: i64,
    /// Categories, most frequent first (ties by name).
    pub category: Vec<FacetCount>,
    /// Capabilities (tool names), most frequent first (ties by name).
    pub capabilities: Vec<FacetCount>,
}

impl From<dataloaders::search::ServerFacetCounts> for ServerFacets {
    fn from(c: dataloaders::search::ServerFacetCounts) -> Self {
        let conv = |v: Vec<dataloaders::search::FacetCount>| {
            v.into_iter()
                .map(|f| FacetCount {
                    value: f.value,
                    count: f.count,
                })
                .collect()
        };
        ServerFacets {
            total_count: c.total,
            category: conv(c.category),
            capabilities: conv(c.capabilities),
        }
    }
}

/// The query root.
pub struct QueryRoot;

/// Refuses callers without the admin role, and audits the refusal (reads of the audit trail and
/// of grants are sensitive; plain reads refused for missing credentials are not audited, so that
/// anonymous traffic cannot flood the trail).
async fn admin_only(ctx: &Context<'_>, action: &'static str) -> AppResult<()> {
    let rc = RequestCtx::of(ctx)?;
    let result = rc.require(crate::auth::Role::Admin);
    if let (Err(e), Some(services)) = (&result, ctx.data_opt::<crate::state::Services>()) {
        let actor = crate::audit::Actor {
            name: rc.actor.clone(),
            request_id: rc.request_id.clone(),
        };
        crate::audit::record_standalone(
            &services.pool,
            crate::audit::AuditEntry::raw(&actor, action, "query", None, "denied")
                .details(serde_json::json!({ "code": e.code() })),
        )
        .await;
    }
    result
}

/// The caller, as the gateway sees them.
#[derive(async_graphql::SimpleObject)]
pub struct Viewer {
    /// The token subject (`local` when authentication is off, `anonymous` without credentials).
    pub subject: String,
    /// Whether valid credentials were presented (always true when authentication is off).
    pub authenticated: bool,
    /// Roles from the token.
    pub roles: Vec<crate::auth::Role>,
    /// May read registries and servers.
    pub can_read: bool,
    /// May deploy and manage instances (in granted namespaces).
    pub can_deploy: bool,
    /// May manage registries, clusters and grants.
    pub can_administer: bool,
    /// When the credentials expire.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The namespaces whose instances the caller may see; null means every namespace.
    pub namespaces: Option<Vec<String>>,
}

/// Filter for `auditLog`. Conditions combine with AND.
#[derive(InputObject, Default)]
pub struct AuditLogFilter {
    /// Only records of this actor (token subject).
    pub actor: Option<String>,
    /// Only records of this action (a mutation name, such as `deployServer`).
    pub action: Option<String>,
    /// Only records with this outcome.
    pub outcome: Option<AuditOutcome>,
    /// Only records about this kind of target (such as `Registry`, `instance`, `grant`).
    pub target_type: Option<String>,
    /// Only records about this target id.
    pub target_id: Option<String>,
    /// Only records at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only records before this time.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl AuditLogFilter {
    fn into_read(self) -> AppResult<dataloaders::reads::AuditFilter> {
        for (field, v) in [
            ("filter.actor", &self.actor),
            ("filter.action", &self.action),
            ("filter.targetType", &self.target_type),
            ("filter.targetId", &self.target_id),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > 256) {
                return Err(AppError::bad_input(field, "at most 256 characters"));
            }
        }
        Ok(dataloaders::reads::AuditFilter {
            actor: self.actor,
            action: self.action,
            outcome: self.outcome.map(|o| o.as_db_str().to_string()),
            target_type: self.target_type,
            target_id: self.target_id,
            since: self.since,
            until: self.until,
        })
    }
}

/// The outcome of an audited action.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// The change was made.
    Success,
    /// The caller was not allowed to do it.
    Denied,
    /// It failed (invalid input, conflict, unavailable dependency, ...).
    Error,
}

impl AuditOutcome {
    fn as_db_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Error => "error",
        }
    }

    fn from_db(s: &str) -> Self {
        match s {
            "success" => AuditOutcome::Success,
            "denied" => AuditOutcome::Denied,
            _ => AuditOutcome::Error,
        }
    }
}

/// One audit record.
pub struct AuditRecord(pub dataloaders::models::AuditRow);

/// One audit record: who did what, when, to which target, with what outcome.
#[Object]
impl AuditRecord {
    /// When it happened.
    async fn at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.at
    }
    /// Who did it: the token subject (`local` when authentication is off, `anonymous` without
    /// credentials).
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// What was done (a mutation name, such as `deployServer`).
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// The kind of target.
    async fn target_type(&self) -> Option<&str> {
        self.0.target_type.as_deref()
    }
    /// The target's id (a global id, a row id, or `subject/namespace` for grants).
    async fn target_id(&self) -> Option<&str> {
        self.0.target_id.as_deref()
    }
    /// The outcome.
    async fn outcome(&self) -> AuditOutcome {
        AuditOutcome::from_db(&self.0.outcome)
    }
    /// The request's correlation id (`x-request-id`).
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
    /// Details: for failures the error code; for changes their parameters (never secrets).
    async fn details(&self) -> Json<serde_json::Value> {
        Json(self.0.details.clone())
    }
}

/// The query root: registries, servers, instances, deployments and clusters.
#[Object]
impl QueryRoot {
    /// Registries, ordered by name.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn registries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Conditions the registries must meet.")] filter: Option<
            RegistryFilterInput,
        >,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Registry>> {
        let filter = RegistryFilter {
            status: filter.unwrap_or_default().status,
        };
        Registry::list(RequestCtx::of(ctx)?, filter, first, after).await
    }

    /// One registry by id.
    async fn registry(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The registry's id.")] id: ID,
    ) -> AppResult<Option<Registry>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let id = ids::decode(Kind::Registry, &id, "id")?;
        Ok(RequestCtx::of(ctx)?
            .loader
            .load_one(RegistryKey(id))
            .await?
            .map(Registry))
    }

    /// Servers of every registry: discovery and search. Filters combine with AND; `search` matches
    /// names, descriptions, categories and tool names (with typo-tolerant name matching), and
    /// sorts best matches first unless `orderBy` says otherwise.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn servers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Conditions the servers must meet.")] filter: Option<ServerFilterInput>,
        #[graphql(
            desc = "Free text, in web-search syntax (\"a phrase\", -excluded, or). Blank means no search; at most 200 characters."
        )]
        search: Option<String>,
        #[graphql(
            desc = "Sort order: RELEVANCE (the default with `search`, which it needs), NAME (the default without), STARS, PULLS or LAST_UPDATED. A cursor is valid only with the order and search it came from."
        )]
        order_by: Option<ServerOrder>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Server>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let args = PageArgs::parse("servers", first, after)?;
        let filter = server_filter(filter, search)?;
        let search = filter.search.clone();
        let order = match order_by {
            Some(ServerOrder::Relevance) if search.is_none() => {
                return Err(AppError::bad_input(
                    "orderBy",
                    "orderBy RELEVANCE needs a non-blank search",
                ));
            }
            Some(o) => o,
            None => ServerOrder::default_for(search.as_deref()),
        };
        let after = args
            .after
            .as_ref()
            .map(|a| order.position(a, search.as_deref()))
            .transpose()
            .map_err(|m| AppError::bad_input("after", m))?;
        let rows = RequestCtx::of(ctx)?
            .reader
            .servers_page(&filter, order, after.as_ref(), args.fetch_limit())
            .await?;
        let ranks: std::collections::HashMap<uuid::Uuid, f64> =
            rows.iter().map(|r| (r.server.id, r.rank)).collect();
        Ok(build_page(
            &args,
            rows.into_iter().map(|r| r.server).collect(),
            TotalCount::Servers(filter),
            |r| {
                order.cursor(
                    r,
                    ranks.get(&r.id).copied().unwrap_or(0.0),
                    search.as_deref(),
                )
            },
            Server,
        ))
    }

    /// How many servers carry each category and each capability (tool name), among the servers
    /// that `servers` would list for the same filter and search: counts for filter chips.
    async fn server_facets(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Conditions the servers must meet, as for `servers`.")] filter: Option<
            ServerFilterInput,
        >,
        #[graphql(desc = "Free text, as for `servers`.")] search: Option<String>,
        #[graphql(desc = "Most values listed per facet, 1 to 500 (default 50).")] limit: Option<
            i32,
        >,
    ) -> AppResult<ServerFacets> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let limit = limit.unwrap_or(50);
        if !(1..=dataloaders::search::MAX_FACET_VALUES as i32).contains(&limit) {
            return Err(AppError::bad_input(
                "limit",
                "limit must be between 1 and 500",
            ));
        }
        let filter = server_filter(filter, search)?;
        let counts = RequestCtx::of(ctx)?
            .reader
            .server_facets(&filter, limit as i64)
            .await?;
        Ok(ServerFacets::from(counts))
    }

    /// One server by id.
    async fn server(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The server's id.")] id: ID,
    ) -> AppResult<Option<Server>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let id = ids::decode(Kind::Server, &id, "id")?;
        Ok(RequestCtx::of(ctx)?
            .loader
            .load_one(ServerKey(id))
            .await?
            .map(Server))
    }

    /// Deployed instances, oldest first.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn instances(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Conditions the instances must meet.")] filter: Option<
            InstanceFilterInput,
        >,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Instance>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let args = PageArgs::parse("instances", first, after)?.expect_time_cursor()?;
        let f = filter.unwrap_or_default();
        let filter = InstanceFilter {
            server_id: f
                .server_id
                .map(|id| ids::decode(Kind::Server, &id, "filter.serverId"))
                .transpose()?,
            cluster_id: f
                .cluster_id
                .map(|id| ids::decode(Kind::Cluster, &id, "filter.clusterId"))
                .transpose()?,
            namespace: f.namespace,
            status: f.status,
            upgrade_available: f.upgrade_available,
        };
        let rows = RequestCtx::of(ctx)?
            .reader
            .instances_page(&filter, args.after.as_ref(), args.fetch_limit())
            .await?;
        Ok(build_page(
            &args,
            rows,
            TotalCount::Instances(filter),
            |r| SortKey {
                value: r
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                id: r.id,
            },
            Instance,
        ))
    }

    /// One instance by id.
    async fn instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] id: ID,
    ) -> AppResult<Option<Instance>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let id = ids::decode(Kind::Instance, &id, "id")?;
        Instance::load(ctx, id).await
    }

    /// Deployment operations, newest first.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Conditions the operations must meet.")] filter: Option<
            DeploymentFilterInput,
        >,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Deployment>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let args = PageArgs::parse("deployments", first, after)?.expect_time_cursor()?;
        let f = filter.unwrap_or_default();
        let filter = DeploymentFilter {
            instance_id: f
                .instance_id
                .map(|id| ids::decode(Kind::Instance, &id, "filter.instanceId"))
                .transpose()?,
            server_id: f
                .server_id
                .map(|id| ids::decode(Kind::Server, &id, "filter.serverId"))
                .transpose()?,
            status: f.status,
        };
        let rows = RequestCtx::of(ctx)?
            .reader
            .deployments_page(&filter, args.after.as_ref(), args.fetch_limit())
            .await?;
        Ok(build_page(
            &args,
            rows,
            TotalCount::Deployments(filter),
            |r| SortKey {
                value: r
                    .started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                id: r.id,
            },
            Deployment,
        ))
    }

    /// One deployment operation by id.
    async fn deployment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The operation's id.")] id: ID,
    ) -> AppResult<Option<Deployment>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let id = ids::decode(Kind::Deployment, &id, "id")?;
        Ok(RequestCtx::of(ctx)?
            .loader
            .load_one(DeploymentKey(id))
            .await?
            .map(Deployment))
    }

    /// Registered clusters, ordered by name.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn clusters(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<Cluster>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let args = PageArgs::parse("clusters", first, after)?;
        let rows = RequestCtx::of(ctx)?
            .reader
            .clusters_page(args.after.as_ref(), args.fetch_limit())
            .await?;
        Ok(build_page(
            &args,
            rows,
            TotalCount::Clusters,
            |r| SortKey {
                value: r.name.clone(),
                id: r.id,
            },
            Cluster,
        ))
    }

    /// One cluster by id.
    async fn cluster(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The cluster's id.")] id: ID,
    ) -> AppResult<Option<Cluster>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let id = ids::decode(Kind::Cluster, &id, "id")?;
        Ok(RequestCtx::of(ctx)?
            .loader
            .load_one(ClusterKey(id))
            .await?
            .map(Cluster))
    }

    /// Who the caller is and what they may do.
    async fn viewer(&self, ctx: &Context<'_>) -> AppResult<Viewer> {
        let rc = RequestCtx::of(ctx)?;
        let p = &rc.principal;
        Ok(Viewer {
            subject: p.subject.clone(),
            authenticated: p.authenticated,
            roles: p.roles.iter().copied().collect(),
            can_read: p.authenticated && p.has(crate::auth::Role::Viewer),
            can_deploy: p.authenticated && p.has(crate::auth::Role::Deployer),
            can_administer: p.authenticated && p.has(crate::auth::Role::Admin),
            expires_at: p.expires_at,
            namespaces: rc.access.as_filter(),
        })
    }

    /// Namespace grants (admin only), by subject then namespace; at most 1000.
    async fn namespace_grants(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the grants of this user (token subject).")] subject: Option<String>,
        #[graphql(desc = "Only the grants of this namespace.")] namespace: Option<String>,
    ) -> AppResult<Vec<crate::graphql::mutation::NamespaceGrant>> {
        let rc = RequestCtx::of(ctx)?;
        admin_only(ctx, "namespaceGrants").await?;
        if let Some(s) = &subject {
            crate::authz::validate_subject(s)?;
        }
        if let Some(n) = &namespace {
            crate::authz::validate_namespace("namespace", n)?;
        }
        let rows = rc
            .reader
            .grants(subject.as_deref(), namespace.as_deref(), 1000)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The audit trail (admin only), newest first: every mutation and every refused attempt,
    /// with who, what, when, the target, the outcome and the request id. Kept for one year.
    #[graphql(
        complexity = "first.unwrap_or(20).clamp(0, crate::graphql::pagination::MAX_PAGE) as usize * child_complexity + 1"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Conditions the records must meet.")] filter: Option<AuditLogFilter>,
        #[graphql(desc = "Page size, 1 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor of the last item of the previous page.")] after: Option<String>,
    ) -> AppResult<Page<AuditRecord>> {
        let rc = RequestCtx::of(ctx)?;
        admin_only(ctx, "auditLog").await?;
        let args = PageArgs::parse("auditLog", first, after)?;
        let after_id = args
            .after
            .as_ref()
            .map(|a| a.value.parse::<i64>())
            .transpose()
            .map_err(|_| AppError::bad_input("after", "malformed cursor"))?;
        let filter = filter.unwrap_or_default().into_read()?;
        let rows = rc
            .reader
            .audit_page(&filter, after_id, args.fetch_limit())
            .await?;
        Ok(build_page(
            &args,
            rows,
            TotalCount::Audit(filter),
            |r| SortKey {
                value: r.id.to_string(),
                id: uuid::Uuid::nil(),
            },
            AuditRecord,
        ))
    }

    /// Any object by its global id.
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A global id.")] id: ID,
    ) -> AppResult<Option<Node>> {
        RequestCtx::of(ctx)?.require_authenticated()?;
        let Some((kind, id)) = ids::decode_any(&id) else {
            return Err(AppError::bad_input("id", "malformed id"));
        };
        let loader = &RequestCtx::of(ctx)?.loader;
        Ok(match kind {
            Kind::Registry => loader
                .load_one(RegistryKey(id))
                .await?
                .map(|r| Node::Registry(Registry(r))),
            Kind::Server => loader
                .load_one(ServerKey(id))
                .await?
                .map(|r| Node::Server(Server(r))),
            Kind::Instance => Instance::load(ctx, id).await?.map(Node::Instance),
            Kind::Deployment => loader
                .load_one(DeploymentKey(id))
                .await?
                .map(|r| Node::Deployment(Deployment(r))),
            Kind::Cluster => loader
                .load_one(ClusterKey(id))
                .await?
                .map(|r| Node::Cluster(Cluster(r))),
        })
    }
}
