//! Mutation roots.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use dataloaders::enums::RegistryFormat;
use serde_json::Value;

use crate::audit::Actor;
use crate::audit::AuditEntry;
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::graphql::context::RequestCtx;
use crate::graphql::types::*;
use crate::ids::{self, Kind};
use crate::registries::store;
use crate::registries::{self as reg, AuthInput, NewRegistry, RegistryChanges};
use crate::state::Services;
use dataloaders::models::GrantRow;

/// Credentials for a private registry. Give exactly one method: `bearerToken`; `username` and
/// `password`; or `headerName` and `headerValue`. Write-only: they are encrypted at rest and can
/// never be read back.
#[derive(InputObject)]
pub struct RegistryAuthInput {
    /// A bearer token, sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Basic-auth user name.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// Name of a custom header.
    pub header_name: Option<String>,
    /// Value of the custom header.
    pub header_value: Option<String>,
}

impl From<RegistryAuthInput> for AuthInput {
    fn from(i: RegistryAuthInput) -> Self {
        AuthInput {
            bearer_token: i.bearer_token,
            username: i.username,
            password: i.password,
            header_name: i.header_name,
            header_value: i.header_value,
        }
    }
}

/// A new registry.
#[derive(InputObject)]
pub struct CreateRegistryInput {
    /// Display name: 1 to 64 letters, digits and hyphens, unique (case-insensitive).
    pub name: String,
    /// Where the registry is fetched from: http or https (file:// only when the gateway allows
    /// local files). Credentials do not belong in the URL; use `authConfig`.
    pub url: String,
    /// Optional description, up to 1024 characters.
    pub description: Option<String>,
    /// The document format; AUTO (the default) detects it from the content.
    pub format: Option<RegistryFormat>,
    /// How often to refresh, in seconds (60 to 604800; default 3600).
    pub sync_interval_seconds: Option<i32>,
    /// Credentials for a private registry.
    pub auth_config: Option<RegistryAuthInput>,
    /// Additional registry-specific data: a JSON object up to 64 KiB.
    pub metadata: Option<Json<Value>>,
}

/// Changes to a registry; absent fields stay as they are.
#[derive(InputObject, Default)]
pub struct UpdateRegistryInput {
    /// New display name.
    pub name: Option<String>,
    /// New source URL. Changing it schedules a sync at once.
    pub url: Option<String>,
    /// New description; an empty string removes it.
    pub description: Option<String>,
    /// New format.
    pub format: Option<RegistryFormat>,
    /// New refresh interval in seconds (60 to 604800).
    pub sync_interval_seconds: Option<i32>,
    /// New credentials, replacing any stored ones.
    pub auth_config: Option<RegistryAuthInput>,
    /// Remove stored credentials. Cannot be combined with `authConfig`.
    pub clear_auth_config: Option<bool>,
    /// New metadata object, replacing the old one.
    pub metadata: Option<Json<Value>>,
}

/// What `deleteRegistry` removed.
#[derive(SimpleObject)]
pub struct DeleteRegistryPayload {
    /// Id of the deleted registry.
    pub deleted_registry_id: ID,
    /// Number of server definitions archived with it (kept for the history of their
    /// instances, hidden from lists and search).
    pub deleted_servers: i64,
    /// Always 0: instance records and their operations are configuration history, never
    /// deleted.
    pub deleted_instances: i64,
}

/// Settings for registering a cluster. Give one of `context`, `inCluster` or `credentials`
/// (with `credentials.kubeconfig`, `context` picks one of its contexts).
#[derive(InputObject)]
pub struct RegisterClusterInput {
    /// Display name: 1 to 64 letters, digits and hyphens.
    pub name: String,
    /// A context of the gateway's kubeconfig; absent means its current context. With
    /// `credentials.kubeconfig`: a context of that kubeconfig.
    pub context: Option<String>,
    /// Use the gateway's in-cluster service account instead of a kubeconfig.
    pub in_cluster: Option<bool>,
    /// Credentials of the cluster, kept by the gateway (sealed at rest, never readable back).
    pub credentials: Option<ClusterCredentialsInput>,
}

/// Credentials of a cluster: either `kubeconfig` (one cluster, user and context, or name the
/// context), or `server` with its CA and one kind of credential (`bearerToken`, or
/// `clientCertificateData` with `clientKeyData`). Write-only: sealed at rest, checked against
/// the cluster before anything is stored, never returned. Refused with BAD_USER_INPUT naming the
/// field: exec and auth-provider plugins, file paths, and plain `http://` servers unless
/// `insecureSkipTlsVerify` is true.
#[derive(InputObject)]
pub struct ClusterCredentialsInput {
    /// A kubeconfig document (YAML or JSON) with everything inline.
    pub kubeconfig: Option<String>,
    /// URL of the Kubernetes API server, such as `https://10.0.0.1:6443`.
    pub server: Option<String>,
    /// CA bundle that signs the API server's certificate: base64 of PEM (or PEM).
    pub certificate_authority_data: Option<String>,
    /// A bearer token (for example a service account token).
    pub bearer_token: Option<String>,
    /// Client certificate: base64 of PEM (or PEM).
    pub client_certificate_data: Option<String>,
    /// Client key: base64 of PEM (or PEM).
    pub client_key_data: Option<String>,
    /// Skip verification of the server's certificate; needed for a plain `http://` server.
    pub insecure_skip_tls_verify: Option<bool>,
}

impl From<ClusterCredentialsInput> for crate::k8s::credentials::CredentialsInput {
    fn from(c: ClusterCredentialsInput) -> Self {
        crate::k8s::credentials::CredentialsInput {
            kubeconfig: c.kubeconfig,
            server: c.server,
            certificate_authority_data: c.certificate_authority_data,
            bearer_token: c.bearer_token,
            client_certificate_data: c.client_certificate_data,
            client_key_data: c.client_key_data,
            insecure_skip_tls_verify: c.insecure_skip_tls_verify,
        }
    }
}

/// Changes to a cluster; absent fields stay as they are.
#[derive(InputObject)]
pub struct UpdateClusterInput {
    /// New display name: 1 to 64 letters, digits and hyphens.
    pub name: Option<String>,
    /// Reach the cluster through this context of the gateway's kubeconfig (dropping stored
    /// credentials); with `credentials.kubeconfig`, a context of that kubeconfig.
    pub context: Option<String>,
    /// New credentials, checked like a registration before they replace the stored ones.
    pub credentials: Option<ClusterCredentialsInput>,
}

/// The result of `deleteCluster`.
#[derive(SimpleObject)]
pub struct DeleteClusterPayload {
    /// Id of the removed cluster.
    pub deleted_cluster_id: ID,
    /// Terminated instances of the cluster whose records (and deployment history) are kept.
    pub past_instances: i64,
}

/// An environment variable for a deployment.
#[derive(InputObject)]
pub struct EnvValueInput {
    /// Variable name.
    pub name: String,
    /// Value. Values of variables the server marks secret are stored in a Kubernetes Secret.
    pub value: String,
}

/// What to deploy, where.
#[derive(InputObject)]
pub struct DeployServerInput {
    /// The server to deploy.
    pub server_id: ID,
    /// The target cluster.
    pub cluster_id: ID,
    /// The target namespace; it must exist.
    pub namespace: String,
    /// Kubernetes name of the instance; defaults to the server's name.
    pub name: Option<String>,
    /// Replica count (default 1; not negative).
    pub replicas: Option<i32>,
    /// Environment variables.
    pub env: Option<Vec<EnvValueInput>>,
    /// Extra container arguments.
    pub args: Option<Vec<String>>,
    /// Container resources (requests and limits), as in a Kubernetes container spec.
    pub resources: Option<Json<Value>>,
}

/// A namespace grant: the user `subject` may see instances in `namespace` and, with the deployer
/// role, operate them.
#[derive(SimpleObject)]
pub struct NamespaceGrant {
    /// The user (token subject) the grant is for.
    pub subject: String,
    /// The Kubernetes namespace granted.
    pub namespace: String,
    /// The admin who granted it.
    pub granted_by: String,
    /// When it was granted.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<GrantRow> for NamespaceGrant {
    fn from(r: GrantRow) -> Self {
        NamespaceGrant {
            subject: r.subject,
            namespace: r.namespace,
            granted_by: r.granted_by,
            created_at: r.created_at,
        }
    }
}

/// Runs a mutation's `body` (which starts with its authorization check) and audits every
/// failure: refusals as `denied`, other failures as `error`, each with its code and the request
/// id. Successes are audited by the stores in the transaction of the change, except where
/// `record_success` asks for a record here (changes without a store transaction).
async fn audited<T>(
    ctx: &Context<'_>,
    action: &'static str,
    target_type: &'static str,
    target: Option<String>,
    record_success: bool,
    body: impl std::future::Future<Output = AppResult<T>>,
) -> AppResult<T> {
    let result = body.await;
    let outcome = match &result {
        Ok(_) if !record_success => return result,
        // The registry store audits this refusal itself, with the running instances it found.
        Err(AppError::Conflict(_)) if action == "deleteRegistry" || action == "deleteCluster" => {
            return result;
        }
        Ok(_) => "success",
        Err(e) if e.is_denial() => "denied",
        Err(_) => "error",
    };
    if let Some(services) = ctx.data_opt::<Services>() {
        let mut entry = AuditEntry::raw(&actor(ctx), action, target_type, target, outcome);
        if let Err(e) = &result {
            entry = entry.details(serde_json::json!({ "code": e.code() }));
            if e.is_denial() {
                tracing::info!(%action, actor = %actor(ctx).name, code = e.code().as_str(), "access denied");
            }
        }
        crate::audit::record_standalone(&services.pool, entry).await;
    }
    result
}

/// The namespace of an instance, without the caller's filter (None when it does not exist).
async fn namespace_of_instance(services: &Services, id: uuid::Uuid) -> AppResult<Option<String>> {
    use dataloaders::schema::instances;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = crate::db::conn(&services.pool).await?;
    Ok(instances::table
        .find(id)
        .select(instances::namespace)
        .first::<String>(&mut conn)
        .await
        .optional()?)
}

/// The namespace of an operation's instance, without the caller's filter.
async fn namespace_of_deployment(services: &Services, id: uuid::Uuid) -> AppResult<Option<String>> {
    use dataloaders::schema::{deployments, instances};
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = crate::db::conn(&services.pool).await?;
    Ok(deployments::table
        .inner_join(instances::table)
        .filter(deployments::id.eq(id))
        .select(instances::namespace)
        .first::<String>(&mut conn)
        .await
        .optional()?)
}

/// Deployer in the namespace of an existing object: a missing object and one in a namespace the
/// caller may not see answer the same NOT_FOUND (the latter audited as a denial).
fn require_object_namespace(
    rc: &RequestCtx,
    namespace: Option<String>,
    what: &'static str,
) -> AppResult<()> {
    match namespace {
        None => Err(AppError::NotFound(what)),
        Some(ns) if !rc.access.allows(&ns) => Err(AppError::Hidden(what)),
        Some(_) => Ok(()),
    }
}

fn actor(ctx: &Context<'_>) -> Actor {
    let rc = RequestCtx::of(ctx);
    Actor {
        name: rc.actor.clone(),
        request_id: rc.request_id.clone(),
    }
}

/// The mutation root.
pub struct MutationRoot;

/// The mutation root: registry management, sync, clusters, deployments and namespace grants.
///
/// Registries, clusters and grants need the admin role; deployment operations need the deployer
/// (or admin) role in a granted namespace. Every refusal and every failure is audited.
#[Object]
impl MutationRoot {
    /// Registers a registry in status INACTIVE (admin only). Invalid input is refused with
    /// BAD_USER_INPUT naming the field, and nothing is written.
    async fn create_registry(
        &self,
        ctx: &Context<'_>,
        input: CreateRegistryInput,
    ) -> AppResult<Registry> {
        audited(ctx, "createRegistry", "Registry", None, false, async {
            RequestCtx::of(ctx).require(Role::Admin)?;
            let services = ctx.data_unchecked::<Services>();
            reg::validate_name(&input.name)?;
            let new = NewRegistry {
                name: input.name,
                url: reg::validate_url(&input.url, &services.config.serve.registries)?,
                description: reg::validate_description(input.description)?,
                format: input.format.unwrap_or(RegistryFormat::Auto),
                sync_interval_seconds: reg::validate_interval(
                    input.sync_interval_seconds.unwrap_or(3600),
                )?,
                metadata: reg::validate_metadata(
                    input
                        .metadata
                        .map(|j| j.0)
                        .unwrap_or_else(|| serde_json::json!({})),
                )?,
                auth: input
                    .auth_config
                    .map(|a| reg::validate_auth(a.into()))
                    .transpose()?,
            };
            let row = store::create(&services.pool, &services.keys, &actor(ctx), new).await?;
            Ok(Registry(row))
        })
        .await
    }

    /// Changes a registry's settings (admin only). Its status is not set here: it follows the
    /// sync state machine.
    async fn update_registry(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The registry's id.")] id: ID,
        input: UpdateRegistryInput,
    ) -> AppResult<Registry> {
        audited(
            ctx,
            "updateRegistry",
            "Registry",
            Some(id.to_string()),
            false,
            async {
                RequestCtx::of(ctx).require(Role::Admin)?;
                let services = ctx.data_unchecked::<Services>();
                let id = ids::decode(Kind::Registry, &id, "id")?;
                if input.clear_auth_config == Some(true) && input.auth_config.is_some() {
                    return Err(AppError::bad_input(
                        "clearAuthConfig",
                        "clearAuthConfig cannot be combined with authConfig",
                    ));
                }
                let policy = &services.config.serve.registries;
                let changes = RegistryChanges {
                    name: input
                        .name
                        .map(|n| reg::validate_name(&n).map(|_| n))
                        .transpose()?,
                    url: input
                        .url
                        .map(|u| reg::validate_url(&u, policy))
                        .transpose()?,
                    description: input
                        .description
                        .map(|d| reg::validate_description(Some(d)))
                        .transpose()?,
                    format: input.format,
                    sync_interval_seconds: input
                        .sync_interval_seconds
                        .map(reg::validate_interval)
                        .transpose()?,
                    metadata: input
                        .metadata
                        .map(|m| reg::validate_metadata(m.0))
                        .transpose()?,
                    auth: match (input.auth_config, input.clear_auth_config) {
                        (Some(a), _) => Some(Some(reg::validate_auth(a.into())?)),
                        (None, Some(true)) => Some(None),
                        _ => None,
                    },
                };
                let row =
                    store::update(&services.pool, &services.keys, &actor(ctx), id, changes).await?;
                services.caches.invalidate_registry(id);
                Ok(Registry(row))
            },
        )
        .await
    }

    /// Deletes a registry (admin only): it and its servers are archived, hidden from lists,
    /// search and sync, and stay readable from the instances and deployments that reference
    /// them. Refused with CONFLICT, listing them, while any instance of its servers is not
    /// TERMINATED (delete those with `deleteInstance` first).
    async fn delete_registry(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The registry's id.")] id: ID,
        #[graphql(
            desc = "No longer has any effect: instances must be deleted first.",
            deprecation = "instance history is never deleted; delete the instances first"
        )]
        force: Option<bool>,
    ) -> AppResult<DeleteRegistryPayload> {
        audited(
            ctx,
            "deleteRegistry",
            "Registry",
            Some(id.to_string()),
            false,
            async {
                RequestCtx::of(ctx).require(Role::Admin)?;
                let services = ctx.data_unchecked::<Services>();
                let uuid = ids::decode(Kind::Registry, &id, "id")?;
                let _ = force;
                let deleted = store::delete(&services.pool, &actor(ctx), uuid).await?;
                services.caches.invalidate_registry(uuid);
                Ok(DeleteRegistryPayload {
                    deleted_registry_id: ids::encode(Kind::Registry, uuid),
                    deleted_servers: deleted.servers,
                    deleted_instances: deleted.instances,
                })
            },
        )
        .await
    }

    /// Fetches the registry now and stores its servers (admin only). Returns at once with the
    /// registry in SYNCING; follow it with the `registrySync` subscription.
    async fn sync_registry(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The registry's id.")] id: ID,
    ) -> AppResult<Registry> {
        audited(
            ctx,
            "syncRegistry",
            "Registry",
            Some(id.to_string()),
            false,
            async {
                RequestCtx::of(ctx).require(Role::Admin)?;
                let services = ctx.data_unchecked::<Services>();
                let id = ids::decode(Kind::Registry, &id, "id")?;
                let row = services.sync.trigger(id, &actor(ctx)).await?;
                Ok(Registry(row))
            },
        )
        .await
    }

    /// Registers a Kubernetes cluster (admin only, audited) from a context of the gateway's
    /// kubeconfig, the in-cluster config, or `credentials` given here (sealed at rest), and
    /// checks it: status, version, capabilities, resource quota and access level (from the
    /// cluster's own RBAC answers). Clusters older than `HIVEGRAPH_K8S_MIN_VERSION` (default
    /// 1.24) are refused with BAD_USER_INPUT. With `credentials`, a cluster that cannot be used
    /// with them is refused and nothing is stored: the message starts with UNAUTHORIZED, TLS,
    /// UNREACHABLE or TOO_OLD and `extensions.field` names the input to fix. Through the
    /// gateway's kubeconfig, an unreachable cluster is registered as DISCONNECTED and checked
    /// again periodically.
    async fn register_cluster(
        &self,
        ctx: &Context<'_>,
        input: RegisterClusterInput,
    ) -> AppResult<Cluster> {
        audited(ctx, "registerCluster", "cluster", None, false, async {
            RequestCtx::of(ctx).require(Role::Admin)?;
            let services = ctx.data_unchecked::<Services>();
            let row = services
                .k8s
                .register(
                    &actor(ctx),
                    crate::k8s::ClusterInput {
                        name: input.name,
                        context: input.context,
                        in_cluster: input.in_cluster.unwrap_or(false),
                        credentials: input.credentials.map(Into::into),
                    },
                )
                .await?;
            Ok(Cluster(row))
        })
        .await
    }

    /// Changes a cluster (admin only, audited): its name, and/or how it is reached (new
    /// credentials, or a context of the gateway's kubeconfig), checked like a registration
    /// before anything is stored. Every gateway process switches to the new credentials.
    async fn update_cluster(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The cluster's id.")] id: ID,
        input: UpdateClusterInput,
    ) -> AppResult<Cluster> {
        audited(
            ctx,
            "updateCluster",
            "cluster",
            Some(id.to_string()),
            false,
            async {
                RequestCtx::of(ctx).require(Role::Admin)?;
                let services = ctx.data_unchecked::<Services>();
                let id = ids::decode(Kind::Cluster, &id, "id")?;
                let update = crate::k8s::ClusterUpdate {
                    name: input.name,
                    context: input.context,
                    credentials: input.credentials.map(Into::into),
                };
                Ok(Cluster(
                    services.k8s.update_cluster(&actor(ctx), id, update).await?,
                ))
            },
        )
        .await
    }

    /// Removes a cluster and its stored credentials (admin only, audited). Refused with
    /// CONFLICT, listing them, while any instance on the cluster is not TERMINATED (delete them
    /// first with `deleteInstance`). The records of its terminated instances and their
    /// deployment history stay readable; every gateway process stops watching the cluster.
    async fn delete_cluster(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The cluster's id.")] id: ID,
    ) -> AppResult<DeleteClusterPayload> {
        let target = Some(id.to_string());
        audited(ctx, "deleteCluster", "cluster", target, false, async {
            RequestCtx::of(ctx).require(Role::Admin)?;
            let services = ctx.data_unchecked::<Services>();
            let uuid = ids::decode(Kind::Cluster, &id, "id")?;
            let past = services.k8s.delete_cluster(&actor(ctx), uuid).await?;
            Ok(DeleteClusterPayload {
                deleted_cluster_id: id.clone(),
                past_instances: past,
            })
        })
        .await
    }

    /// Checks a cluster again (admin only): status, version, capabilities, quota and access
    /// level.
    async fn refresh_cluster(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The cluster's id.")] id: ID,
    ) -> AppResult<Cluster> {
        audited(
            ctx,
            "refreshCluster",
            "cluster",
            Some(id.to_string()),
            true,
            async {
                RequestCtx::of(ctx).require(Role::Admin)?;
                let services = ctx.data_unchecked::<Services>();
                let id = ids::decode(Kind::Cluster, &id, "id")?;
                Ok(Cluster(services.k8s.refresh(id).await?))
            },
        )
        .await
    }

    /// Deploys a server to a cluster (deployer role, in a namespace granted to the caller).
    /// Everything is validated before the cluster is changed (server, cluster, namespace, DEPLOY
    /// access, name, required env vars, replicas). Returns the INITIATED operation at once; follow
    /// it with `deploymentProgress`. Values of env vars the server marks secret go into a
    /// Kubernetes Secret, never into the Deployment or the database.
    async fn deploy_server(
        &self,
        ctx: &Context<'_>,
        input: DeployServerInput,
    ) -> AppResult<Deployment> {
        let target = Some(format!("{}/{}", input.namespace, input.server_id.as_str()));
        audited(ctx, "deployServer", "instance", target, false, async {
            let rc = RequestCtx::of(ctx);
            rc.require(Role::Deployer)?;
            crate::authz::validate_namespace("namespace", &input.namespace)?;
            rc.require_in_namespace(Role::Deployer, &input.namespace)?;
            let services = ctx.data_unchecked::<Services>();
            let deploy = crate::k8s::DeployInput {
                server_id: ids::decode(Kind::Server, &input.server_id, "serverId")?,
                cluster_id: ids::decode(Kind::Cluster, &input.cluster_id, "clusterId")?,
                namespace: input.namespace,
                name: input.name,
                replicas: input.replicas,
                env: input
                    .env
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (e.name, e.value))
                    .collect(),
                args: input.args.unwrap_or_default(),
                resources: input.resources.map(|j| j.0),
            };
            Ok(Deployment(services.k8s.deploy(&actor(ctx), deploy).await?))
        })
        .await
    }

    /// Cancels an INITIATED or IN_PROGRESS operation and stops its rollout (deployer role, in the
    /// instance's namespace); the Deployment is paused and, for a deploy or scale, set back to its
    /// previous replica count. Any other state is refused with CONFLICT.
    async fn cancel_deployment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The operation's id.")] id: ID,
    ) -> AppResult<Deployment> {
        audited(
            ctx,
            "cancelDeployment",
            "deployment",
            Some(id.to_string()),
            false,
            async {
                let rc = RequestCtx::of(ctx);
                rc.require(Role::Deployer)?;
                let services = ctx.data_unchecked::<Services>();
                let id = ids::decode(Kind::Deployment, &id, "id")?;
                let ns = namespace_of_deployment(services, id).await?;
                require_object_namespace(rc, ns, "deployment")?;
                Ok(Deployment(services.k8s.cancel(&actor(ctx), id).await?))
            },
        )
        .await
    }

    /// Changes an instance's replica count, 0 to 100 (deployer role, in the instance's
    /// namespace). Recorded as a SCALE operation; refused with CONFLICT while another operation
    /// runs or when the instance is terminated.
    async fn scale_instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] id: ID,
        #[graphql(desc = "The new replica count.")] replicas: i32,
    ) -> AppResult<Deployment> {
        audited(
            ctx,
            "scaleInstance",
            "instance",
            Some(id.to_string()),
            false,
            async {
                let (services, id) = instance_operation(ctx, &id).await?;
                Ok(Deployment(
                    services.k8s.scale(&actor(ctx), id, replicas).await?,
                ))
            },
        )
        .await
    }

    /// Restarts an instance's pods with a rolling restart, as `kubectl rollout restart`
    /// (deployer role, in the instance's namespace). Recorded as a RESTART operation.
    async fn restart_instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] id: ID,
    ) -> AppResult<Deployment> {
        audited(
            ctx,
            "restartInstance",
            "instance",
            Some(id.to_string()),
            false,
            async {
                let (services, id) = instance_operation(ctx, &id).await?;
                Ok(Deployment(services.k8s.restart(&actor(ctx), id).await?))
            },
        )
        .await
    }

    /// Moves an instance to what its server's registry entry now offers (`Instance.upgrade`):
    /// the new image, version and registry arguments, with its own arguments and values kept
    /// (deployer role, in the instance's namespace). `env` gives values for variables that are
    /// new or newly required; a missing one is refused with BAD_USER_INPUT naming it, and
    /// nothing changes. Recorded as an UPGRADE operation; `rollbackInstance` returns to the
    /// previous image and configuration. CONFLICT when the instance is up to date.
    async fn upgrade_instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] id: ID,
        #[graphql(desc = "Values for new or changed environment variables.")] env: Option<
            Vec<EnvValueInput>,
        >,
    ) -> AppResult<Deployment> {
        audited(
            ctx,
            "upgradeInstance",
            "instance",
            Some(id.to_string()),
            false,
            async {
                let (services, id) = instance_operation(ctx, &id).await?;
                let env = env
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (e.name, e.value))
                    .collect();
                Ok(Deployment(
                    services.k8s.upgrade(&actor(ctx), id, env).await?,
                ))
            },
        )
        .await
    }

    /// Rolls an instance back to its previous revision, as `kubectl rollout undo` (deployer
    /// role, in the instance's namespace); CONFLICT when there is none. Recorded as a ROLLBACK
    /// operation whose `rollbackInfo` names both revisions.
    async fn rollback_instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] id: ID,
    ) -> AppResult<Deployment> {
        audited(
            ctx,
            "rollbackInstance",
            "instance",
            Some(id.to_string()),
            false,
            async {
                let (services, id) = instance_operation(ctx, &id).await?;
                Ok(Deployment(services.k8s.rollback(&actor(ctx), id).await?))
            },
        )
        .await
    }

    /// Deletes an instance from its cluster: Deployment, Service, NetworkPolicy, Secret
    /// (deployer role, in the instance's namespace); the instance ends TERMINATED. Recorded as a
    /// DELETE operation.
    async fn delete_instance(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The instance's id.")] id: ID,
    ) -> AppResult<Deployment> {
        audited(
            ctx,
            "deleteInstance",
            "instance",
            Some(id.to_string()),
            false,
            async {
                let (services, id) = instance_operation(ctx, &id).await?;
                Ok(Deployment(services.k8s.delete(&actor(ctx), id).await?))
            },
        )
        .await
    }

    /// Grants a user (token subject) a namespace (admin only): they may then see its instances
    /// and, with the deployer role, operate them. Granting an existing grant changes nothing.
    async fn grant_namespace(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's token subject (`sub`).")] subject: String,
        #[graphql(desc = "The Kubernetes namespace.")] namespace: String,
    ) -> AppResult<NamespaceGrant> {
        let target = Some(format!("{subject}/{namespace}"));
        audited(ctx, "grantNamespace", "grant", target, false, async {
            RequestCtx::of(ctx).require(Role::Admin)?;
            crate::authz::validate_subject(&subject)?;
            crate::authz::validate_namespace("namespace", &namespace)?;
            let services = ctx.data_unchecked::<Services>();
            let row = crate::authz::store::grant(&services.pool, &actor(ctx), &subject, &namespace)
                .await?;
            Ok(NamespaceGrant::from(row))
        })
        .await
    }

    /// Revokes a user's namespace grant (admin only). True when a grant was removed, false when
    /// there was none.
    async fn revoke_namespace(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's token subject (`sub`).")] subject: String,
        #[graphql(desc = "The Kubernetes namespace.")] namespace: String,
    ) -> AppResult<bool> {
        let target = Some(format!("{subject}/{namespace}"));
        audited(ctx, "revokeNamespace", "grant", target, false, async {
            RequestCtx::of(ctx).require(Role::Admin)?;
            crate::authz::validate_subject(&subject)?;
            crate::authz::validate_namespace("namespace", &namespace)?;
            let services = ctx.data_unchecked::<Services>();
            crate::authz::store::revoke(&services.pool, &actor(ctx), &subject, &namespace).await
        })
        .await
    }
}

/// The checks of an operation on an existing instance: the deployer role, a valid id, and the
/// instance's namespace granted (a hidden instance answers NOT_FOUND, like a missing one).
async fn instance_operation<'a>(
    ctx: &'a Context<'_>,
    id: &ID,
) -> AppResult<(&'a Services, uuid::Uuid)> {
    let rc = RequestCtx::of(ctx);
    rc.require(Role::Deployer)?;
    let services = ctx.data_unchecked::<Services>();
    let id = ids::decode(Kind::Instance, id, "id")?;
    let ns = namespace_of_instance(services, id).await?;
    require_object_namespace(rc, ns, "instance")?;
    Ok((services, id))
}
