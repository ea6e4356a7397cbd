//! `x-hivegraph-debug: sql` (dev mode only: statements describe the schema and the data
//! model): the number of statements a request issued, and their text, in its `extensions`.

use super::*;

/// Whether the request asks for its statements, and may have them.
pub(super) fn wanted(state: &AppState, headers: &HeaderMap) -> bool {
    state.services.config.serve.mode == crate::config::Mode::Dev
        && headers
            .get(DEBUG_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "sql"))
}

/// Adds `sqlStatements` and `sqlLog` to every answer of the batch.
pub(super) fn attach(resp: &mut BatchResponse, stats: &dataloaders::QueryStats) {
    let count = async_graphql::Value::from(stats.statements());
    let log = async_graphql::Value::List(
        stats
            .statement_log()
            .into_iter()
            .map(async_graphql::Value::from)
            .collect(),
    );
    let answers: Vec<&mut async_graphql::Response> = match resp {
        BatchResponse::Single(r) => vec![r],
        BatchResponse::Batch(rs) => rs.iter_mut().collect(),
    };
    for r in answers {
        r.extensions.insert("sqlStatements".into(), count.clone());
        r.extensions.insert("sqlLog".into(), log.clone());
    }
}
