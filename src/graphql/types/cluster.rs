//! Target Kubernetes clusters.

use super::*;

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
    /// Supported features: the API groups the gateway can use, plus
    /// `mcpservers.toolhive.stacklok.dev` / `mcpremoteproxies.toolhive.stacklok.dev` when the
    /// cluster serves the ToolHive operator's resources and the gateway may create them (then
    /// deploys go through the operator).
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
        let rows = RequestCtx::reads(ctx)?.instances_of_cluster(key).await?;
        Ok(build_page(
            &args,
            std::sync::Arc::unwrap_or_clone(rows),
            TotalCount::Children(CountOf::InstancesOfCluster(self.0.id)),
            |r| time_key(r.created_at, r.id),
            Instance,
        ))
    }
}
