//! The GraphQL schema: types, roots, limits and error policy.

pub mod abuse;
pub mod apq;
pub mod compiled;
pub mod context;
pub mod limits;
pub mod mutation;
pub mod pagination;
pub mod query;
pub mod shape;
pub mod spec;
pub mod subscription;
pub mod types;

use async_graphql::Schema;

use crate::config::{Limits, Mode};
use crate::state::Services;

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;

/// The gateway's schema.
pub type HivegraphSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema with its limits and policies. `services` is `None` only for printing SDL.
///
/// `limiter` is the per-user rate limiter (shared with the response cache, which charges the
/// answers it serves); `None` builds one from `limits`.
pub fn build_schema(
    services: Option<Services>,
    limits: &Limits,
    mode: Mode,
    limiter: Option<std::sync::Arc<abuse::RateLimiter>>,
) -> HivegraphSchema {
    // Depth is bounded by `OperationLimits` (data fields only: introspection has bounds of its
    // own); the recursive-depth check and validation run only on documents it admitted.
    let mut builder = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(32)
        .limit_directives(5)
        .extension(limits::ErrorPolicy);
    if mode == Mode::Production {
        builder = builder.disable_suggestions();
    }
    if !limits.introspection(mode) {
        builder = builder.disable_introspection();
    }
    // Extensions' `prepare_request` run in this order: the rate limit charges its first point
    // before the document is even parsed, persisted operations swap in their document, then
    // the limits measure it.
    let limiter =
        limiter.unwrap_or_else(|| std::sync::Arc::new(abuse::RateLimiter::from_limits(limits)));
    if limiter.enabled() {
        builder = builder.extension(abuse::RateLimit(limiter));
    }
    if let Some(path) = &limits.persisted_operations {
        // Validated at start-up (`Config::validate`); if the file went bad since, nothing runs.
        let ops = crate::persisted::PersistedOperations::load(path).unwrap_or_else(|e| {
            tracing::error!(error = %e, "persisted operations unreadable: refusing every operation");
            crate::persisted::PersistedOperations::default()
        });
        builder = builder.extension(abuse::PersistedOnly(std::sync::Arc::new(ops)));
    }
    builder = builder.extension(limits::OperationLimits {
        max_aliases: limits.max_aliases,
        max_root_fields: limits.max_root_fields,
        max_depth: limits.max_depth,
        max_selections: limits.max_selections,
        introspection: limits.introspection(mode),
    });
    // Last: its request checks run after validation and before the rate limit charges.
    builder = builder.extension(spec::SpecConformance);
    if let Some(services) = services {
        builder = builder.data(services.pool.clone()).data(services);
    }
    builder.finish()
}

/// The SDL, exactly as `schema.graphql` holds it.
pub fn sdl() -> String {
    print_sdl(&build_schema(None, &Limits::default(), Mode::Dev, None))
}

/// The SDL of `schema` as introspection shows it: with `@specifiedBy` on scalars that have a
/// specification (tests/js/introspection.test.mjs round-trips it).
pub fn print_sdl(schema: &HivegraphSchema) -> String {
    schema.sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}
