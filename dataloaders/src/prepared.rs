//! Statements the connection prepares once and reuses.
//!
//! diesel's `sql_query` marks its text as unsafe to cache, so diesel-async prepares it again
//! on every execution: a Parse/Describe round trip and a new plan each time. The read
//! statements here are fixed texts whose binds have fixed types, so caching them is safe;
//! [`Prepared`] says so, and the connection keeps one prepared statement per text.

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;

/// A `sql_query` with its binds, prepared once per connection (see the module docs).
#[derive(Debug, Clone)]
pub struct Prepared<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    // Keyed by its text and bind types in the connection's statement cache.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Prepared<Q> {
    type SqlType = Untyped;
}
