//! The data model's enumerations. Each is a GraphQL enum (SCREAMING_CASE values) and is stored in
//! PostgreSQL as lower-case text guarded by a CHECK constraint.

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// Declares a GraphQL + diesel enum stored as text.
macro_rules! db_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $db:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            async_graphql::Enum,
            diesel::AsExpression, diesel::FromSqlRow,
            serde::Serialize, serde::Deserialize,
        )]
        #[diesel(sql_type = Text)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as stored in the database.
            pub fn as_db_str(self) -> &'static str {
                match self { $($name::$variant => $db,)+ }
            }

            /// Parses the stored (lower-case) form.
            pub fn from_db_str(s: &str) -> Option<Self> {
                match s { $($db => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_db_str())
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(self.as_db_str(), out)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                let raw = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
                Self::from_db_str(&raw).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($name), " value {:?}"), raw).into()
                })
            }
        }
    };
}

db_enum! {
    /// Lifecycle state of a registry. Transitions: INACTIVE → SYNCING → ACTIVE or ERROR;
    /// ACTIVE → SYNCING (periodic refresh); ERROR → SYNCING (retry).
    pub enum RegistryStatus {
        /// The last sync succeeded; its servers are current.
        Active = "active",
        /// Registered but never synced.
        Inactive = "inactive",
        /// The last sync failed; servers from the last good sync are kept.
        Error = "error",
        /// A sync is running.
        Syncing = "syncing",
    }
}

impl RegistryStatus {
    /// Whether the data model's state machine allows moving from `self` to `next`.
    pub fn can_transition_to(self, next: RegistryStatus) -> bool {
        use RegistryStatus::*;
        matches!(
            (self, next),
            (Inactive, Syncing)
                | (Active, Syncing)
                | (Error, Syncing)
                | (Syncing, Active)
                | (Syncing, Error)
        )
    }
}

db_enum! {
    /// The document format a registry serves.
    pub enum RegistryFormat {
        /// Detect the format from the content.
        Auto = "auto",
        /// The legacy ToolHive `registry.json` (`servers` and `remote_servers`).
        Toolhive = "toolhive",
        /// The current ToolHive upstream format (`data.servers[]`).
        ToolhiveUpstream = "toolhive_upstream",
        /// The official MCP Registry API (`/v0` or `/v0.1` `GET /servers`).
        McpRegistry = "mcp_registry",
        /// The ToolHive Registry Server API (`/registry/{name}/v0.1/...`).
        ToolhiveRegistryServer = "toolhive_registry_server",
    }
}

db_enum! {
    /// How a registry authenticates the gateway.
    pub enum RegistryAuthKind {
        /// No credentials are sent.
        None = "none",
        /// An `Authorization: Bearer` token.
        Bearer = "bearer",
        /// HTTP basic authentication.
        Basic = "basic",
        /// A custom header name and value.
        Header = "header",
    }
}

db_enum! {
    /// How an MCP server talks to its clients.
    pub enum Transport {
        /// Standard input and output of the container.
        Stdio = "stdio",
        /// Streamable HTTP.
        Http = "http",
        /// Server-sent events.
        Sse = "sse",
    }
}

db_enum! {
    /// Who stands behind a server.
    pub enum ServerTier {
        /// Maintained by the tool's vendor.
        Official = "official",
        /// Maintained by the community.
        Community = "community",
    }
}

db_enum! {
    /// Whether a server is recommended for use.
    pub enum ServerStatus {
        /// Ready for use.
        Available = "available",
        /// Superseded or no longer maintained.
        Deprecated = "deprecated",
        /// Early, may change.
        Experimental = "experimental",
    }
}

db_enum! {
    /// The state of a deployed instance.
    pub enum InstanceStatus {
        /// Created with at least one replica wanted, not running yet.
        Pending = "pending",
        /// Running with at least its desired ready replicas.
        Running = "running",
        /// Failed to run (for example a crash loop or an image that cannot be pulled).
        Failed = "failed",
        /// Deleted from the cluster.
        Terminated = "terminated",
        /// Scaled to zero replicas on purpose: exists in the cluster, runs nothing, and is not
        /// waiting to (scale it up to run it again).
        Stopped = "stopped",
    }
}

db_enum! {
    /// What an instance is doing.
    pub enum InstancePhase {
        /// A rollout is in progress.
        Deploying = "deploying",
        /// Nothing is in progress: all desired replicas are ready (there are none once the
        /// instance is STOPPED or TERMINATED).
        Ready = "ready",
        /// The replica count is changing.
        Scaling = "scaling",
        /// The instance is being deleted (READY again once everything is gone).
        Terminating = "terminating",
    }
}

db_enum! {
    /// The health of an instance.
    pub enum HealthStatus {
        /// All checks pass.
        Healthy = "healthy",
        /// At least one check fails.
        Unhealthy = "unhealthy",
        /// Not known yet.
        Unknown = "unknown",
    }
}

db_enum! {
    /// The state of a deployment operation. Transitions: INITIATED → IN_PROGRESS → COMPLETED or
    /// FAILED; IN_PROGRESS → CANCELLED; and, beyond the data model's list, INITIATED → CANCELLED
    /// (cancelled before any driver took it up) and INITIATED → FAILED (its cluster or instance
    /// is gone when a driver takes it up). An ended operation never changes again; the database
    /// refuses any other move.
    pub enum DeploymentStatus {
        /// Recorded, not started.
        Initiated = "initiated",
        /// Running.
        InProgress = "in_progress",
        /// Finished successfully.
        Completed = "completed",
        /// Finished with errors.
        Failed = "failed",
        /// Stopped by a user.
        Cancelled = "cancelled",
    }
}

impl DeploymentStatus {
    /// Whether the operation has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The states an operation may move to `next` from (the migration
    /// `deployments_status_transition` trigger enforces the same table).
    pub fn sources_of(next: DeploymentStatus) -> Vec<DeploymentStatus> {
        use DeploymentStatus::*;
        [Initiated, InProgress, Completed, Failed, Cancelled]
            .into_iter()
            .filter(|s| s.can_transition_to(next))
            .collect()
    }

    /// Whether the data model's workflow allows moving from `self` to `next`.
    pub fn can_transition_to(self, next: DeploymentStatus) -> bool {
        use DeploymentStatus::*;
        matches!(
            (self, next),
            (Initiated, InProgress)
                | (InProgress, Completed)
                | (InProgress, Failed)
                | (Initiated, Failed)
                | (Initiated, Cancelled)
                | (InProgress, Cancelled)
        )
    }
}

db_enum! {
    /// What a deployment operation does to its instance.
    pub enum DeploymentOperation {
        /// First deployment of the instance.
        Deploy = "deploy",
        /// A change of replica count.
        Scale = "scale",
        /// A rolling restart.
        Restart = "restart",
        /// A return to the previous revision.
        Rollback = "rollback",
        /// Removal from the cluster.
        Delete = "delete",
        /// A move to the image, arguments and environment the catalog now offers.
        Upgrade = "upgrade",
    }
}

db_enum! {
    /// Whether the gateway can reach and use a cluster.
    pub enum ClusterStatus {
        /// The API server answers and accepts the credentials.
        Connected = "connected",
        /// The API server cannot be reached.
        Disconnected = "disconnected",
        /// The API server rejects the credentials.
        Unauthorized = "unauthorized",
    }
}

db_enum! {
    /// What the gateway may do in a cluster, as the cluster's own RBAC answers.
    pub enum AccessLevel {
        /// Read only.
        ReadOnly = "read_only",
        /// May create and change workloads.
        Deploy = "deploy",
        /// Full control.
        Admin = "admin",
    }
}

db_enum! {
    /// Severity of a deployment log line.
    pub enum LogLevel {
        /// Detail for debugging.
        Debug = "debug",
        /// Normal progress.
        Info = "info",
        /// Something unexpected that the operation survived.
        Warn = "warn",
        /// A failure.
        Error = "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_state_machine_follows_the_data_model() {
        use RegistryStatus::*;
        assert!(Inactive.can_transition_to(Syncing));
        assert!(Syncing.can_transition_to(Active));
        assert!(Syncing.can_transition_to(Error));
        assert!(Error.can_transition_to(Syncing));
        assert!(Active.can_transition_to(Syncing));
        assert!(!Inactive.can_transition_to(Active));
        assert!(!Error.can_transition_to(Active));
        assert!(!Active.can_transition_to(Inactive));
    }

    #[test]
    fn db_strings_round_trip() {
        for s in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::from_db_str(s.as_db_str()), Some(*s));
        }
        assert_eq!(AccessLevel::from_db_str("READ_ONLY"), None);
    }

    #[test]
    fn deployment_workflow() {
        use DeploymentStatus::*;
        assert!(InProgress.can_transition_to(Cancelled));
        assert!(!Completed.can_transition_to(Cancelled));
        assert!(!Failed.can_transition_to(InProgress));
    }
}
