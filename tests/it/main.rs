//! The integration tests, one binary (linking the crate once instead of once per suite): one
//! module per area, shared helpers in `common`. Run one area with
//! `cargo nextest run --test it -E 'test(/^k8s::/)'` or `cargo test --test it k8s::`.

mod common;

mod authz;
mod canary;
mod client_conformance;
mod clusters;
mod compiled;
mod faults;
mod graphql_cop;
mod hardening;
mod introspection;
mod k8s;
mod k8s_faults;
mod monitoring;
mod observability;
mod operator;
mod rbac;
mod read_graph;
mod registries;
mod schema;
mod search;
mod security;
mod security_round2;
mod subscriptions;
mod sync;
mod sync_bad_upstreams;
mod sync_scheduler;
mod ws_protocol;
mod ws_revocation;
