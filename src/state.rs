//! Shared application state.

use std::sync::Arc;

use dataloaders::DbPool;

use crate::config::Config;
use crate::graphql::HivegraphSchema;
use crate::metrics::Metrics;
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

/// Everything the HTTP layer needs.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub schema: HivegraphSchema,
    pub metrics: Arc<Metrics>,
    /// Open websockets and the planned-shutdown switch (close code 1012).
    pub sockets: crate::http::ws::Sockets,
    /// Set on SIGTERM: `/readyz` turns unready at once.
    pub draining: crate::http::Draining,
    /// The per-user rate limiter (the schema's extension and the response cache charge it).
    pub limiter: Arc<crate::graphql::abuse::RateLimiter>,
    /// Documents registered by automatic persisted queries (APQ).
    pub persisted: crate::graphql::apq::PersistedQueries,
}

impl AppState {
    /// Builds the state: the schema gets its limits from the configuration.
    pub fn new(services: Services) -> Self {
        let limiter = Arc::new(crate::graphql::abuse::RateLimiter::from_limits(
            &services.config.serve.limits,
        ));
        let schema = crate::graphql::build_schema(
            Some(services.clone()),
            &services.config.serve.limits,
            services.config.serve.mode,
            Some(limiter.clone()),
        );
        let metrics = Metrics::new();
        metrics.register_caches(&services.caches);
        metrics.register_pool(&services.pool);
        let starts = services.config.database.pool_size / 2;
        AppState {
            services,
            schema,
            metrics: Arc::new(metrics),
            // Half the pool may serve subscription starts; the rest stays for queries.
            sockets: crate::http::ws::Sockets::new(starts),
            draining: crate::http::Draining::default(),
            limiter,
            persisted: Default::default(),
        }
    }
}
