//! Deployment operations, their steps and step logs.

use super::*;

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
        RequestCtx::of(ctx)?
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
        let rows = RequestCtx::reads(ctx)?
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
