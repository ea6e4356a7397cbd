//! hivegraph: a GraphQL gateway for ToolHive registries of MCP servers.
//!
//! The crate is organised by layer: `config` (typed settings), `db` (pool and migrations),
//! `graphql` (schema, resolvers, policies), `http` (router and endpoints), `registries`
//! (validation and writes), `sync` (registry fetching), `secrets` (encryption at rest).

pub mod audit;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod graphql;
pub mod http;
pub mod ids;
pub mod k8s;
pub mod keys;
pub mod log_gate;
pub mod metrics;
pub mod monitoring;
pub mod persisted;
pub mod pubsub;
pub mod registries;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod validate;

pub use http::AppState;
pub use http::router;
