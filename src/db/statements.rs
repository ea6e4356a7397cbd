//! Every SQL statement the gateway runs: a latency observation by kind (read or write) on
//! `/metrics`, and a `sql` span (a child of the request's, exported when tracing is on) with the
//! statement's text up to its bind values, never the values themselves.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::Instant;

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// How much of a statement's text a span keeps.
const SPAN_STATEMENT_CHARS: usize = 300;

/// The default instrumentation of the process's connections (installed by [`install`]).
#[derive(Default)]
pub struct Statements {
    /// Statements started and not finished yet (a pipelined connection runs several).
    running: VecDeque<(Instant, &'static str, tracing::Span)>,
}

/// Makes [`Statements`] the instrumentation of every connection established from now on (and
/// of the ones `crate::db::pool` recycles or lends to a request).
pub fn install() {
    let _ =
        diesel::connection::set_default_instrumentation(|| Some(Box::new(Statements::default())));
}

impl Instrumentation for Statements {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let text = statement_text(query);
                let kind = kind_of(&text);
                // Statements of background loops (no span of their own) are not traced.
                let span = if tracing::Span::current().is_none() {
                    tracing::Span::none()
                } else {
                    tracing::debug_span!(
                    target: "hivegraph::sql",
                    "sql",
                    otel.name = %format!("SQL {}", verb_of(&text)),
                    otel.kind = "client",
                    db.system = "postgresql",
                    db.operation = verb_of(&text),
                    db.statement = %text,
                    )
                };
                // A statement whose future was dropped never finishes: keep few.
                if self.running.len() >= 16 {
                    self.running.pop_front();
                }
                self.running.push_back((Instant::now(), kind, span));
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                if let Some((started, kind, span)) = self.running.pop_front() {
                    crate::metrics::statement(kind, started.elapsed());
                    if error.is_some() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
            }
            _ => {}
        }
    }
}

/// A `fmt::Write` that keeps the first [`SPAN_STATEMENT_CHARS`] bytes and then stops the
/// formatting (a statement's bind values may be long).
struct Capped(String);

impl Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = SPAN_STATEMENT_CHARS.saturating_sub(self.0.len());
        if s.len() > room {
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.0.push_str(&s[..end]);
            return Err(std::fmt::Error);
        }
        self.0.push_str(s);
        Ok(())
    }
}

/// The statement's SQL on one line, without bind values, at most [`SPAN_STATEMENT_CHARS`].
fn statement_text(query: &dyn std::fmt::Display) -> String {
    let mut out = Capped(String::new());
    let _ = write!(out, "{query}");
    let sql = out.0.split(" -- binds:").next().unwrap_or_default();
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The statement's first keyword, upper case (`SELECT`, `INSERT`, ...).
fn verb_of(sql: &str) -> &'static str {
    let word = sql
        .trim_start_matches('(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    const VERBS: [&str; 14] = [
        "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "SET", "BEGIN", "COMMIT", "ROLLBACK",
        "LISTEN", "NOTIFY", "SHOW", "VALUES", "TRUNCATE",
    ];
    VERBS.into_iter().find(|v| *v == word).unwrap_or("OTHER")
}

/// `read` for statements that only read (`SELECT`, `SHOW`, `VALUES`, and `WITH` queries that do
/// not write), `write` for the others.
fn kind_of(sql: &str) -> &'static str {
    match verb_of(sql) {
        "SELECT" | "SHOW" | "VALUES" => "read",
        "WITH" => {
            let upper = sql.to_ascii_uppercase();
            let writes = ["INSERT ", "UPDATE ", "DELETE "]
                .iter()
                .any(|w| upper.contains(w));
            if writes { "write" } else { "read" }
        }
        _ => "write",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_and_lose_their_binds() {
        assert_eq!(kind_of("SELECT 1"), "read");
        assert_eq!(kind_of("select * from x"), "read");
        assert_eq!(kind_of("WITH a AS (SELECT 1) SELECT * FROM a"), "read");
        assert_eq!(
            kind_of("WITH a AS (DELETE FROM x RETURNING id) SELECT 1"),
            "write"
        );
        assert_eq!(kind_of("INSERT INTO x VALUES ($1)"), "write");
        assert_eq!(verb_of("(SELECT 1) UNION (SELECT 2)"), "SELECT");
        let long = format!("SELECT $1 -- binds: [\"{}\"]", "secret".repeat(1000));
        assert_eq!(statement_text(&long), "SELECT $1");
        let text = statement_text(&format!("SELECT {}", "é".repeat(400)));
        assert!(text.len() <= SPAN_STATEMENT_CHARS);
    }
}
