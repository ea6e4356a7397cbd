//! The compiled read path: read-only documents answered without the executor.
//!
//! The executor pays for every field (a future, a path node, the schema extensions' hooks) and
//! for every key of a batched load; a nested page of 2,500 objects spends most of its time
//! there. A document the executor answered without an error is planned once ([`plan`]):
//! afterwards its answers are built level by level, one batched read per level, straight into
//! the answer's value tree.
//!
//! What it shares with the executor, so that the answers are the same:
//! - the reads: `Registry::list`, `Registry::servers_page`, `Server::instances_page` and
//!   `Instance::latest` are the resolvers' own code (authentication, page arguments, the
//!   reader's namespace filter, the caches);
//! - the field values: each entity's `LEAVES` (`crate::graphql::types::leaf`) read the row as
//!   the resolvers do, converted as async-graphql converts them;
//! - the limits: complexity over `max_complexity` and refused rate-limit charges go back to the
//!   executor, which answers with its error; the cost charged is the executor's formula.
//!
//! Anything else (an argument the executor would refuse or coerce, a resolver error, a field
//! it does not know) is [`run::Declined`]: the executor answers. `HIVEGRAPH_COMPILED_READS=check`
//! runs both and fails the request when they differ (every integration test runs that way).

pub mod plan;
pub mod run;

use std::sync::Arc;

use async_graphql::{Request, Response};

use crate::cache::{CachedReads, Caches};
use crate::graphql::abuse::{RATE_LIMIT_EXTENSION, RateLimiter, cost, rate_limit_value};
use crate::graphql::context::RequestCtx;
pub use plan::Plan;

/// Known documents: their plan, or `None` for the executor's. Bounded by the documents' bytes.
pub struct Plans {
    known: moka::sync::Cache<Arc<str>, Option<Arc<Plan>>>,
}

/// Bytes of documents the plan cache holds at most.
const PLAN_CACHE_BYTES: u64 = crate::cache::responses::MAX_PLAN_BYTES;

impl Default for Plans {
    fn default() -> Self {
        Plans {
            known: moka::sync::Cache::builder()
                .weigher(|k: &Arc<str>, _| u32::try_from(k.len()).unwrap_or(u32::MAX))
                .max_capacity(PLAN_CACHE_BYTES)
                .build(),
        }
    }
}

fn key(query: &str, operation_name: Option<&str>) -> Arc<str> {
    format!("{}\u{0}{query}", operation_name.unwrap_or("")).into()
}

/// What the plans know of a document.
pub enum Known {
    /// Never seen (or evicted): the executor answers, then [`Plans::learn`] hears of it.
    Unseen,
    /// Seen and not plannable: the executor's.
    Executor,
    /// Its plan.
    Planned(Arc<Plan>),
}

impl Plans {
    /// What is known of the request's document (one key built per request).
    pub fn lookup(&self, request: &Request) -> Known {
        match self
            .known
            .get(&key(&request.query, request.operation_name.as_deref()))
        {
            None => Known::Unseen,
            Some(None) => Known::Executor,
            Some(Some(plan)) => Known::Planned(plan),
        }
    }

    /// Learns a document the executor answered: planned when the answer had no error (the
    /// document passed validation and the limits), remembered as the executor's otherwise only
    /// when it cannot be planned at all.
    pub fn learn(&self, query: &str, operation_name: Option<&str>, answer: &Response) {
        // Large documents are not kept, as in the response cache: unique large requests must
        // not hold memory until eviction.
        let large = query.len() > crate::cache::responses::MAX_KEYED_REQUEST_BYTES;
        if large || !answer.errors.is_empty() {
            return;
        }
        let plan = plan::plan(query, operation_name).map(Arc::new);
        self.known.insert(key(query, operation_name), plan);
    }
}

/// A compiled answer and the rate-limit points it cost.
pub struct Answer {
    /// The response, as the executor would give it.
    pub response: Response,
    /// Points of the operation (charged when a limiter was given).
    pub cost: u64,
}

/// Answers `request` with `plan`, charging `limiter` when given; `None` when the executor must.
pub async fn answer(
    plan: &Plan,
    request: &Request,
    rc: &RequestCtx,
    caches: Option<&Caches>,
    max_complexity: usize,
    limiter: Option<&RateLimiter>,
) -> Option<Answer> {
    let run = run::Run {
        reads: CachedReads::new(caches, &rc.scope, &rc.loader),
        rc,
        variables: &request.variables,
        definitions: &plan.variables,
    };
    let complexity = run.complexity(plan).ok()?;
    if complexity > max_complexity {
        return None;
    }
    let points = cost(&plan.doc, plan.operation_name.as_deref(), complexity);
    let mut response = Response::new(run.data(plan).await.ok()?);
    if let Some(limiter) = limiter.filter(|l| l.enabled()) {
        // A refused charge is the executor's to report (it charges and refuses the same way).
        let charged = limiter
            .charge(&rc.principal.subject, points, std::time::Instant::now())
            .ok()?;
        response
            .extensions
            .insert(RATE_LIMIT_EXTENSION.into(), rate_limit_value(&charged));
    }
    Some(Answer {
        response,
        cost: points,
    })
}
