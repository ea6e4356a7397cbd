//! The HTTP layer's state: the services, the schema built over them, metrics, open sockets and
//! the request policies that live outside the schema.

use std::sync::Arc;

use crate::graphql::HivegraphSchema;
use crate::metrics::Metrics;
use crate::state::Services;

/// Everything the HTTP layer needs, behind one `Arc`: axum clones the state for every extractor
/// and layer of every request, and a clone of the fields themselves (a dozen `Arc`s and moka
/// handles) took a fifth of the gateway's CPU on cached answers.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct AppStateInner {
    pub services: Services,
    pub schema: HivegraphSchema,
    pub metrics: Arc<Metrics>,
    /// Open websockets and the planned-shutdown switch (close code 1012).
    pub sockets: super::ws::Sockets,
    /// Set on SIGTERM: `/readyz` turns unready at once.
    pub draining: super::Draining,
    /// The per-user rate limiter (the schema's extension and the response cache charge it).
    pub limiter: Arc<crate::graphql::abuse::RateLimiter>,
    /// Documents registered by automatic persisted queries (APQ).
    pub persisted: crate::graphql::apq::PersistedQueries,
    /// Plans of the read-only documents the compiled path answers.
    pub plans: Arc<crate::graphql::compiled::Plans>,
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
        services.caches.register_metrics(&metrics);
        metrics.register_pool(&services.pool);
        let starts = services.config.database.pool_size / 2;
        AppState(Arc::new(AppStateInner {
            services,
            schema,
            metrics: Arc::new(metrics),
            // Half the pool may serve subscription starts; the rest stays for queries.
            sockets: super::ws::Sockets::new(starts),
            draining: super::Draining::default(),
            limiter,
            persisted: Default::default(),
            plans: Default::default(),
        }))
    }
}
