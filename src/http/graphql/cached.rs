//! The response cache as a request policy: a read-only request asked before, by a caller with
//! the same rights, whose data has not changed since, is answered from memory; an executed
//! answer that may be cached is stored, and a mutation drops what this process cached.

use super::*;

/// What the cache had for a request.
pub(super) enum Lookup {
    /// The stored answer.
    Hit(std::sync::Arc<Entry>),
    /// Not stored; the ticket stores the answer once executed (none: it may not be cached).
    Miss(Option<crate::cache::responses::Ticket>),
}

/// Looks a request up. Debug answers and batches are never cached.
pub(super) fn lookup(
    state: &AppState,
    batch: &BatchRequest,
    (principal, access): (&crate::auth::Principal, &NamespaceAccess),
    debug_sql: bool,
) -> Lookup {
    let responses = state.services.caches.responses();
    let BatchRequest::Single(req) = batch else {
        return Lookup::Miss(None);
    };
    if !responses.enabled() || debug_sql || !responses.may_cache(req) {
        return Lookup::Miss(None);
    }
    // The key first: a hit needs nothing else (not even the plan).
    let key = ResponseCache::key(&AuthScope::of(principal, access), req);
    if let Some(entry) = responses.get(&key) {
        return Lookup::Hit(entry);
    }
    let plan = responses.plan(&req.query, req.operation_name.as_deref());
    Lookup::Miss(
        plan.deps
            .map(|deps| responses.ticket(key, deps, &plan.operation)),
    )
}

/// After execution: drops this process's cached answers after a mutation (read-your-writes
/// before the change notifications arrive), and stores a cacheable answer. Returns the body
/// to send when it was serialized here (the cached `{"data":…}` plus its rate-limit report,
/// serialized once) and the cache header's value.
pub(super) fn store(
    state: &AppState,
    labels: &[(String, &'static str)],
    ticket: Option<crate::cache::responses::Ticket>,
    resp: &BatchResponse,
) -> (Option<Bytes>, Option<&'static str>) {
    let responses = state.services.caches.responses();
    if labels.iter().any(|(_, kind)| *kind == "mutation") {
        responses.changed_all();
    }
    let (Some(ticket), BatchResponse::Single(r)) = (ticket, resp) else {
        return (None, None);
    };
    let Some((body, cost)) = cacheable(r) else {
        return (None, Some("miss"));
    };
    let reply = with_rate_limit(&body, r.extensions.get(RATE_LIMIT_EXTENSION));
    responses.put(ticket, body, cost);
    (Some(reply), Some("miss"))
}
