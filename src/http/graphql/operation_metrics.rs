//! Operation metrics: every operation of a batch counted with its name, kind and outcome, and
//! its duration observed.

use super::*;

/// (operation name, kind) of each operation of the batch.
pub(super) fn labels(batch: &BatchRequest) -> Vec<(String, &'static str)> {
    batch
        .iter()
        .map(|r| {
            let op = operation_of(&r.query, r.operation_name.as_deref());
            let name = op
                .as_ref()
                .and_then(|(_, n)| n.clone())
                .unwrap_or_else(|| "anonymous".into());
            (name, kind_label(op.map(|(ty, _)| ty)))
        })
        .collect()
}

fn observe_one(
    state: &AppState,
    (operation, kind): (String, &'static str),
    outcome: &str,
    seconds: f64,
) {
    state.metrics.observe(
        OperationLabels {
            operation,
            kind: kind.into(),
            outcome: outcome.into(),
        },
        seconds,
    );
}

/// Every operation of an executed batch: `ok` or `error`.
pub(super) fn observe(
    state: &AppState,
    labels: Vec<(String, &'static str)>,
    resp: &BatchResponse,
    seconds: f64,
) {
    let outcomes: Vec<bool> = match resp {
        BatchResponse::Single(r) => vec![r.errors.is_empty()],
        BatchResponse::Batch(rs) => rs.iter().map(|r| r.errors.is_empty()).collect(),
    };
    for (label, ok) in labels.into_iter().zip(outcomes) {
        observe_one(state, label, if ok { "ok" } else { "error" }, seconds);
    }
}

/// Every operation of a batch that ran out of time.
pub(super) fn timed_out(state: &AppState, labels: Vec<(String, &'static str)>, seconds: f64) {
    state.metrics.reject("timeout");
    for label in labels {
        observe_one(state, label, "timeout", seconds);
    }
}
