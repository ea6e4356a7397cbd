//! hivegraph: a GraphQL gateway for ToolHive registries of MCP servers.
//!
//! Modules are layered and import only downward (`scripts/lib/layers.py` checks it):
//! foundations (`error`, `ids`, `clock`, `validate`, `config`, `db`, `metrics`, `telemetry`,
//! `changes`, `persisted`, `log_gate`); identity and secrets (`auth`, `authz`, `audit`,
//! `secrets`, `keys`); `cache`; `pubsub`; the domains (`registries`, `sync`, `k8s`,
//! `monitoring`, `retention`); `state`; `graphql`; `http`; `server` and `cli`.

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
