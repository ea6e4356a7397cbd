//! The entity types of the schema. Each wraps its row; relationships resolve through the
//! request's batching loader, so resolvers here contain no SQL.

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use dataloaders::Width::{Narrow, Whole};
use dataloaders::enums::*;
use dataloaders::models::*;
use dataloaders::*;
use serde_json::Value;

use crate::cache::{CachedReads, Rows};
use crate::error::{AppError, AppResult};
use crate::graphql::context::RequestCtx;
use crate::graphql::pagination::{Page, PageArgs, TotalCount, build_page};
use crate::ids::{self, Kind};

fn name_key(name: &str, id: uuid::Uuid) -> SortKey {
    SortKey {
        value: name.to_string(),
        id,
    }
}

fn time_key(at: DateTime<Utc>, id: uuid::Uuid) -> SortKey {
    SortKey {
        value: at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        id,
    }
}

mod cluster;
mod deployment;
mod instance;
pub mod leaf;
mod metrics;
mod registry;

pub use cluster::Cluster;
pub use deployment::*;
pub use instance::*;
pub use leaf::Leaf;
use leaf::leaf;
pub use metrics::*;
pub use registry::*;

/// Deployment parameters as the caller may see them: env values only for deployers and admins
/// (the row is visible only in a namespace granted to the caller, so a deployer who sees it
/// may deploy there); viewers get each variable's name and `redacted: true`.
/// Without a request context (a wiring bug) nothing is shown.
fn parameters_for(ctx: &Context<'_>, params: &Value) -> Value {
    match RequestCtx::of(ctx) {
        Ok(rc) if rc.principal.has(crate::auth::Role::Deployer) => params.clone(),
        _ => redact_env(params),
    }
}

/// `params` with every `env[].value` removed and marked `redacted: true`, at any depth (an
/// upgrade's parameters hold the new configuration, a rollback's the one it restores).
pub fn redact_env(params: &Value) -> Value {
    let mut out = params.clone();
    redact_in_place(&mut out);
    out
}

fn redact_in_place(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "env"
                    && let Some(env) = child.as_array_mut()
                {
                    for e in env.iter_mut().filter_map(Value::as_object_mut) {
                        if e.remove("value").is_some() {
                            e.insert("redacted".into(), Value::Bool(true));
                        }
                    }
                } else {
                    redact_in_place(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_in_place),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_redacted_at_any_depth() {
        let params = serde_json::json!({
            "env": [{"name": "A", "value": "1"}],
            "spec": {"env": [{"name": "B", "value": "2"}], "image": "x"},
            "restoreConfiguration": {"env": [{"name": "C", "value": "3"}]},
        });
        let out = redact_env(&params);
        assert!(!out.to_string().contains("\"value\""), "{out}");
        assert_eq!(
            out["spec"]["env"][0],
            serde_json::json!({"name": "B", "redacted": true})
        );
        assert_eq!(out["spec"]["image"], "x");
        assert_eq!(out["restoreConfiguration"]["env"][0]["redacted"], true);
    }
}
