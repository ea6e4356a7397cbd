//! The HTTP surface: GraphQL over HTTP and websockets, GraphiQL, health, metrics and the SDL.

mod csrf;
mod feeds;
mod graphiql;
mod graphql;
mod negotiate;
mod ops;
mod origin;
mod state;
mod trace;
pub mod ws;

pub use ops::Draining;
pub use state::AppState;

use axum::Router;
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;

/// The gateway's router. Tests drive it directly, without a socket.
pub fn router(state: AppState) -> Router {
    let max_body = state.services.config.serve.limits.max_body_bytes;
    let graphql_routes = Router::new()
        .route(
            "/graphql",
            get(graphql::get_graphql).post(graphql::post_graphql),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::guard,
        ))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            graphql::refuse_large_bodies,
        ));
    Router::new()
        .merge(graphql_routes)
        .merge(graphiql::router())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/schema.graphql", get(ops::schema_sdl))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::guard,
        ))
        .layer(axum::middleware::from_fn(trace::traced))
        .with_state(state)
}

/// The GraphiQL page. Its assets are served by the gateway itself, so it works offline.
pub fn graphiql_page(endpoint: &str, subscription_endpoint: &str) -> axum::response::Response {
    graphiql::page(endpoint, subscription_endpoint)
}
