//! The classic Prometheus text format (`text/plain; version=0.0.4`), from OpenMetrics text.
//!
//! The two differ in little for what the gateway exports: a counter family is named without
//! `_total` in OpenMetrics (`# TYPE x counter`, samples `x_total`) and with it in the classic
//! format; `# UNIT` and `# EOF` lines do not exist there, nor do the `info` and `stateset`
//! types. Scrapers that do not ask for OpenMetrics (and `promtool check metrics`) get this.

use std::collections::HashMap;

/// The content type of the classic format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics at least as much as for the classic format.
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut openmetrics = 0.0f32;
    let mut classic = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" => classic = classic.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= classic
}

/// `text` (OpenMetrics, as prometheus-client encodes it) in the classic format.
pub fn from_openmetrics(text: &str) -> String {
    let mut renamed: HashMap<&str, String> = HashMap::new();
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, ty)) = rest.split_once(' ')
        {
            let (new_name, new_ty) = match ty {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "counter" | "gauge" | "histogram" | "summary" => (name.to_string(), ty),
                _ => (name.to_string(), "untyped"),
            };
            renamed.insert(name, new_name);
            types.insert(name, new_ty);
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("HELP", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let new_name = renamed.get(name).map(String::as_str).unwrap_or(name);
                let tail = if kind == "TYPE" {
                    types.get(name).copied().unwrap_or(tail)
                } else {
                    tail
                };
                out.push_str(&format!("# {kind} {new_name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        // Prometheus 2.42's scrape header.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("text/plain;version=0.0.4;q=1,*/*;q=0.1"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn counters_get_their_total_suffix_and_openmetrics_lines_go() {
        let om = "# HELP hg_requests Requests.\n# TYPE hg_requests counter\nhg_requests_total{a=\"b\"} 3\n\
                  # HELP hg_up Up.\n# TYPE hg_up gauge\n# UNIT hg_up seconds\nhg_up 1\n# EOF\n";
        let classic = from_openmetrics(om);
        assert_eq!(
            classic,
            "# HELP hg_requests_total Requests.\n# TYPE hg_requests_total counter\nhg_requests_total{a=\"b\"} 3\n\
             # HELP hg_up Up.\n# TYPE hg_up gauge\nhg_up 1\n"
        );
    }
}
