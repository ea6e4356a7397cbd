//! Abuse resistance as async-graphql extensions: a per-user rate limit on query cost, and an
//! optional allow-list of persisted operations.
//!
//! **Rate limit** (GitHub's point model, shared/docs/hardening.md §1.2): every operation costs
//! points, charged after validation against two windows per principal subject (in memory, per
//! process): `HIVEGRAPH_RATE_LIMIT_PER_HOUR` (default 5000) and
//! `HIVEGRAPH_RATE_LIMIT_PER_MINUTE` (default 2000); 0 turns a window off. A query costs
//! `max(1, round(complexity / 100))`; a mutation at least 5 points per root field, `deployServer`
//! 50. Over budget, the operation is refused before it runs with `RATE_LIMITED`, carrying
//! `retryAfterSeconds` and `limit`. Every answer carries `extensions.rateLimit`
//! (`limit`, `cost`, `remaining`, `resetAt`) for the hourly window.
//!
//! **Persisted operations** (`HIVEGRAPH_PERSISTED_OPERATIONS`, a JSON file: an object mapping
//! sha256 hex digests to documents, or an array of documents): when set, only listed documents
//! run. A request sends either the document itself (its sha256 must be listed) or only
//! `extensions.persistedQuery.sha256Hash` (APQ style) naming a listed one. Anything else is
//! refused with `PERSISTED_QUERY_NOT_FOUND` or `OPERATION_NOT_ALLOWED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Variables};

use crate::error::Code;
use crate::graphql::context::RequestCtx;
use crate::persisted::{PersistedOperations, sha256_hex};

/// Points a mutation costs per root field.
pub const MUTATION_POINTS: u64 = 5;
/// Points a `deployServer` costs (it writes to a cluster).
pub const DEPLOY_POINTS: u64 = 50;

fn error(code: Code, message: String, extra: &[(&str, u64)]) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code.as_str());
    for (k, v) in extra {
        ext.set(*k, *v);
    }
    e.extensions = Some(ext);
    e
}

/// One fixed window of a budget.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u64,
}

impl Window {
    fn current(&mut self, now: Instant, length: Duration) {
        if now.duration_since(self.started) >= length {
            self.started = now;
            self.used = 0;
        }
    }
}

/// The state of one principal's budget.
#[derive(Debug, Clone, Copy)]
struct Budget {
    hour: Window,
    minute: Window,
}

/// What a charge left, for `extensions.rateLimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// Points per hour.
    pub limit: u64,
    /// Points this operation cost.
    pub cost: u64,
    /// Points left in this hour.
    pub remaining: u64,
    /// Seconds until the hourly window resets.
    pub reset_in_secs: u64,
}

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// The exceeded limit.
    pub limit: u64,
    /// Seconds until enough points are back.
    pub retry_after_secs: u64,
}

/// Per-principal point budgets (in memory, per process).
pub struct RateLimiter {
    per_hour: u64,
    per_minute: u64,
    budgets: Mutex<HashMap<String, Budget>>,
}

impl RateLimiter {
    /// A limiter with these budgets (0 turns a window off).
    pub fn new(per_hour: u64, per_minute: u64) -> Self {
        RateLimiter {
            per_hour,
            per_minute,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// A limiter with the configured budgets.
    pub fn from_limits(limits: &crate::config::Limits) -> Self {
        Self::new(limits.rate_limit_per_hour, limits.rate_limit_per_minute)
    }

    /// Whether any window is on.
    pub fn enabled(&self) -> bool {
        self.per_hour > 0 || self.per_minute > 0
    }

    /// Charges `cost` points to `key` at `now` (an injected clock, for tests), or refuses.
    pub fn charge(&self, key: &str, cost: u64, now: Instant) -> Result<Charged, OverBudget> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        // Forget idle principals now and then, so the map stays bounded by active users.
        if budgets.len() > 10_000 {
            budgets.retain(|_, b| now.duration_since(b.hour.started) < Duration::from_secs(3600));
        }
        let b = budgets.entry(key.to_string()).or_insert(Budget {
            hour: Window {
                started: now,
                used: 0,
            },
            minute: Window {
                started: now,
                used: 0,
            },
        });
        const HOUR: Duration = Duration::from_secs(3600);
        const MINUTE: Duration = Duration::from_secs(60);
        b.hour.current(now, HOUR);
        b.minute.current(now, MINUTE);
        let left = |w: &Window, len: Duration| {
            len.saturating_sub(now.duration_since(w.started))
                .as_secs()
                .max(1)
        };
        if self.per_minute > 0 && b.minute.used + cost > self.per_minute {
            return Err(OverBudget {
                limit: self.per_minute,
                retry_after_secs: left(&b.minute, MINUTE),
            });
        }
        if self.per_hour > 0 && b.hour.used + cost > self.per_hour {
            return Err(OverBudget {
                limit: self.per_hour,
                retry_after_secs: left(&b.hour, HOUR),
            });
        }
        b.hour.used += cost;
        b.minute.used += cost;
        let limit = if self.per_hour > 0 {
            self.per_hour
        } else {
            self.per_minute
        };
        Ok(Charged {
            limit,
            cost,
            remaining: limit.saturating_sub(if self.per_hour > 0 {
                b.hour.used
            } else {
                b.minute.used
            }),
            reset_in_secs: left(&b.hour, HOUR),
        })
    }
}

/// The point cost of an operation of `doc` (the one named `operation_name`, or the only one).
/// Mutation fields are priced wherever they sit at the root: directly, in inline fragments or
/// in fragment spreads. An operation that only asks introspection costs 1.
pub fn cost(doc: &ExecutableDocument, operation_name: Option<&str>, complexity: usize) -> u64 {
    let base = ((complexity as u64 + 50) / 100).max(1);
    let op = doc
        .operations
        .iter()
        .find(|(name, _)| match operation_name {
            Some(wanted) => name.map(|n| n.as_str()) == Some(wanted),
            None => true,
        });
    let Some((_, op)) = op else {
        return base;
    };
    let set = &op.node.selection_set.node;
    if op.node.ty != OperationType::Mutation {
        let pure_introspection = crate::graphql::shape::Measure::new(doc)
            .operation(set)
            .is_ok_and(|s| s.introspection_only());
        return if pure_introspection { 1 } else { base };
    }
    root_points(doc, set, 0).max(MUTATION_POINTS).max(base)
}

/// Mutation points of the root fields of `set`, fragments followed (the document was admitted
/// by the operation limits, so its expansion is bounded; `level` stops fragment cycles).
fn root_points(doc: &ExecutableDocument, set: &SelectionSet, level: usize) -> u64 {
    if level > crate::graphql::shape::MAX_NESTING {
        return 0;
    }
    let mut points: u64 = 0;
    for sel in &set.items {
        let p = match &sel.node {
            Selection::Field(f) if f.node.name.node == "deployServer" => DEPLOY_POINTS,
            Selection::Field(f) if f.node.name.node == "__typename" => 0,
            Selection::Field(_) => MUTATION_POINTS,
            Selection::InlineFragment(fr) => {
                root_points(doc, &fr.node.selection_set.node, level + 1)
            }
            Selection::FragmentSpread(sp) => doc
                .fragments
                .get(&sp.node.fragment_name.node)
                .map_or(0, |f| {
                    root_points(doc, &f.node.selection_set.node, level + 1)
                }),
        };
        points = points.saturating_add(p);
    }
    points
}

/// The rate-limit extension.
pub struct RateLimit(pub Arc<RateLimiter>);

impl ExtensionFactory for RateLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RateLimitExt {
            limiter: self.0.clone(),
            doc: Mutex::new(None),
            operation_name: Mutex::new(None),
            key: Mutex::new(None),
            charged: Mutex::new(None),
        })
    }
}

struct RateLimitExt {
    limiter: Arc<RateLimiter>,
    doc: Mutex<Option<ExecutableDocument>>,
    operation_name: Mutex<Option<String>>,
    key: Mutex<Option<String>>,
    charged: Mutex<Option<Charged>>,
}

/// The subject a request is charged to: its `RequestCtx` (request data over HTTP, session data
/// over websockets), else `anonymous`.
fn subject(ctx: &ExtensionContext<'_>, request: &Request) -> String {
    request
        .data
        .get(&std::any::TypeId::of::<Arc<RequestCtx>>())
        .and_then(|d| d.downcast_ref::<Arc<RequestCtx>>())
        .or_else(|| ctx.data_opt::<Arc<RequestCtx>>())
        .map(|rc| rc.principal.subject.clone())
        .unwrap_or_else(|| "anonymous".into())
}

/// Points charged when a request arrives, before anything parses or walks its document.
pub const FIRST_POINTS: u64 = 1;

#[async_trait::async_trait]
impl Extension for RateLimitExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Ok(mut n) = self.operation_name.lock() {
            n.clone_from(&request.operation_name);
        }
        let key = subject(ctx, &request);
        let c = charge(&self.limiter, &key, FIRST_POINTS)?;
        if let Ok(mut slot) = self.charged.lock() {
            *slot = Some(c);
        }
        if let Ok(mut k) = self.key.lock() {
            *k = Some(key);
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if let Ok(mut d) = self.doc.lock() {
            *d = Some(doc.clone());
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let Some(key) = self.key.lock().ok().and_then(|k| k.clone()) else {
            return Ok(result);
        };
        let name = self.operation_name.lock().ok().and_then(|n| n.clone());
        let points = match self.doc.lock().ok().as_deref() {
            Some(Some(doc)) => cost(doc, name.as_deref(), result.complexity),
            _ => ((result.complexity as u64 + 50) / 100).max(1),
        };
        // The first points were charged on arrival; the rest now that the cost is known.
        let rest = points.saturating_sub(FIRST_POINTS);
        if rest > 0 {
            let mut c = charge(&self.limiter, &key, rest).map_err(|e| vec![e])?;
            c.cost = points;
            if let Ok(mut slot) = self.charged.lock() {
                *slot = Some(c);
            }
        }
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut resp = next.run(ctx, operation_name).await;
        let charged = self.charged.lock().ok().and_then(|c| *c);
        if let Some(c) = charged {
            resp.extensions
                .insert(RATE_LIMIT_EXTENSION.into(), rate_limit_value(&c));
        }
        resp
    }
}

/// The key of the rate-limit report in a response's `extensions`.
pub const RATE_LIMIT_EXTENSION: &str = "rateLimit";

/// Charges `points` to the principal `key`, or the `RATE_LIMITED` error that refuses the
/// operation. Shared by the extension and by answers served from the response cache.
pub fn charge(limiter: &RateLimiter, key: &str, points: u64) -> Result<Charged, ServerError> {
    limiter.charge(key, points, Instant::now()).map_err(|over| {
        error(
            Code::RateLimited,
            format!(
                "rate limit of {} points exceeded; retry in {} s",
                over.limit, over.retry_after_secs
            ),
            &[
                ("retryAfterSeconds", over.retry_after_secs),
                ("limit", over.limit),
                ("cost", points),
            ],
        )
    })
}

/// `extensions.rateLimit` of an answer: `limit`, `cost`, `remaining` and `resetAt`.
pub fn rate_limit_value(c: &Charged) -> async_graphql::Value {
    let reset_at = chrono::Utc::now() + chrono::Duration::seconds(c.reset_in_secs as i64);
    let mut m = async_graphql::indexmap::IndexMap::new();
    m.insert(async_graphql::Name::new("limit"), c.limit.into());
    m.insert(async_graphql::Name::new("cost"), c.cost.into());
    m.insert(async_graphql::Name::new("remaining"), c.remaining.into());
    m.insert(
        async_graphql::Name::new("resetAt"),
        reset_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into(),
    );
    async_graphql::Value::Object(m)
}

/// The persisted-operations extension: only listed documents run.
pub struct PersistedOnly(pub Arc<PersistedOperations>);

impl ExtensionFactory for PersistedOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PersistedOnlyExt(self.0.clone()))
    }
}

struct PersistedOnlyExt(Arc<PersistedOperations>);

#[async_trait::async_trait]
impl Extension for PersistedOnlyExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let sent_hash = match request.extensions.get("persistedQuery") {
            Some(async_graphql::Value::Object(pq)) => match pq.get("sha256Hash") {
                Some(async_graphql::Value::String(h)) => Some(h.to_ascii_lowercase()),
                _ => None,
            },
            _ => None,
        };
        if request.query.trim().is_empty() {
            let doc = sent_hash
                .as_ref()
                .and_then(|h| self.0.get(h))
                .ok_or_else(|| {
                    error(
                        Code::PersistedQueryNotFound,
                        "PersistedQueryNotFound: this gateway runs only listed operations".into(),
                        &[],
                    )
                })?;
            request.query = doc.clone();
        } else {
            let hash = sha256_hex(&request.query);
            let matches_sent = sent_hash.as_ref().is_none_or(|h| *h == hash);
            if !matches_sent || !self.0.contains(&hash) {
                return Err(error(
                    Code::OperationNotAllowed,
                    "this gateway runs only persisted operations; this document is not listed"
                        .into(),
                    &[],
                ));
            }
        }
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_then_recover_with_the_clock() {
        let l = RateLimiter::new(100, 30);
        let t0 = Instant::now();
        let c = l.charge("alice", 20, t0).unwrap();
        assert_eq!((c.limit, c.cost, c.remaining), (100, 20, 80));
        // The minute window (30) refuses the next 20 points, with a retry time.
        let over = l
            .charge("alice", 20, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(over.limit, 30);
        assert_eq!(over.retry_after_secs, 50);
        // Another user has a budget of their own.
        assert!(l.charge("bob", 20, t0).is_ok());
        // A minute later the minute window has reset, the hour has not.
        for i in 0..4 {
            let at = t0 + Duration::from_secs(61 * (i + 1));
            l.charge("alice", 20, at).unwrap();
        }
        let over = l
            .charge("alice", 20, t0 + Duration::from_secs(400))
            .unwrap_err();
        assert_eq!(over.limit, 100);
        assert!(over.retry_after_secs > 3000);
        assert!(
            l.charge("alice", 20, t0 + Duration::from_secs(3601))
                .is_ok()
        );
        assert!(!RateLimiter::new(0, 0).enabled());
    }

    #[test]
    fn costs_follow_the_point_model() {
        let q = async_graphql::parser::parse_query("{ registries { totalCount } }").unwrap();
        assert_eq!(cost(&q, None, 3), 1);
        assert_eq!(cost(&q, None, 1000), 10);
        let m = async_graphql::parser::parse_query(
            "mutation { a: syncRegistry(id: 1) { id } b: deployServer(input: {}) { id } }",
        )
        .unwrap();
        assert_eq!(cost(&m, None, 2), MUTATION_POINTS + DEPLOY_POINTS);
    }

    #[test]
    fn mutation_costs_follow_fragments() {
        let deploys: String = (0..16)
            .map(|i| format!("d{i}: deployServer(input: {{}}) {{ id }} "))
            .collect();
        for doc in [
            format!("mutation {{ ... on MutationRoot {{ {deploys} }} }}"),
            format!("mutation {{ ...D }} fragment D on MutationRoot {{ ... {{ {deploys} }} }}"),
        ] {
            let m = async_graphql::parser::parse_query(&doc).unwrap();
            assert_eq!(cost(&m, None, 2), 16 * DEPLOY_POINTS, "{doc}");
        }
        let q =
            async_graphql::parser::parse_query("query { __schema { types { name } } __typename }")
                .unwrap();
        assert_eq!(cost(&q, None, 900), 1, "pure introspection costs 1");
    }

    #[test]
    fn manifests_are_checked() {
        let doc = "{ viewer { subject } }";
        let ok =
            PersistedOperations::parse(&serde_json::json!({ sha256_hex(doc): doc }).to_string())
                .unwrap();
        assert_eq!(ok.len(), 1);
        assert!(PersistedOperations::parse(r#"{"00": "{ viewer { subject } }"}"#).is_err());
        assert_eq!(
            PersistedOperations::parse(&serde_json::json!([doc]).to_string())
                .unwrap()
                .len(),
            1
        );
        assert!(PersistedOperations::parse("[1]").is_err());
    }
}
