//! The long-lived services a request may use: the domains, caches and change fan-out, as one
//! value registered as schema data (the HTTP layer's state is `crate::http::AppState`).

use std::sync::Arc;

use dataloaders::DbPool;

use crate::config::Config;
use crate::secrets::Keyring;
use crate::sync::SyncService;

/// Long-lived services that resolvers use (registered as schema data).
#[derive(Clone)]
pub struct Services {
    pub pool: DbPool,
    pub config: Arc<Config>,
    pub keys: Arc<Keyring>,
    pub sync: SyncService,
    /// Clusters, deployments and instance watchers.
    pub k8s: crate::k8s::ClusterManager,
    /// Validates callers' credentials.
    pub auth: crate::auth::Authenticator,
    /// Live change fan-out (one database listener per process).
    pub pubsub: crate::pubsub::PubSub,
    /// Cross-request read caches (see `crate::cache`).
    pub caches: crate::cache::Caches,
    /// Metrics collection, rollups and retention (see `crate::monitoring`).
    pub monitor: crate::monitoring::Monitor,
}
