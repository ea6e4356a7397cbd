//! `/metrics`: the format follows the scraper's `Accept`, the classic format follows the
//! conventions `promtool check metrics` enforces, and the new families are there after traffic.
//! (Prometheus itself, promtool and traces are tested by scripts/lib/prometheus-test.sh.)

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::TestApp;
use serde_json::json;

async fn metrics(app: &TestApp, accept: Option<&str>) -> common::Reply {
    let mut req = Request::get("/metrics");
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    app.send(req.body(Body::empty()).unwrap()).await
}

/// What `promtool check metrics` would complain about in classic text: samples of a family
/// without HELP or TYPE, counters without `_total`, OpenMetrics-only lines.
fn lint(text: &str) -> Vec<String> {
    use std::collections::HashMap;
    let mut problems = Vec::new();
    let mut help = std::collections::HashSet::new();
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.insert(rest.split(' ').next().unwrap());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            if ty == "counter" && !name.ends_with("_total") {
                problems.push(format!("counter {name} does not end in _total"));
            }
            types.insert(name, ty);
        } else if line.starts_with('#') {
            problems.push(format!("not a classic line: {line}"));
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(f) == Some(&"histogram"))
                })
                .unwrap_or(name);
            if !help.contains(family) || !types.contains_key(family) {
                problems.push(format!("no help text or type for {name}"));
            }
        }
    }
    problems
}

#[tokio::test]
async fn metrics_follow_the_accept_header_and_the_classic_conventions() {
    let app = TestApp::spawn().await;
    common::assert_ok(
        &app.graphql("query Listing { registries { totalCount } }", json!({}))
            .await,
    );
    let _ = app.graphql("query Broken { nope }", json!({})).await;

    let classic = metrics(&app, None).await;
    assert_eq!(
        classic.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        lint(&classic.text),
        Vec::<String>::new(),
        "{}",
        classic.text
    );
    let scrape = prometheus_parse::Scrape::parse(classic.text.lines().map(|l| Ok(l.to_string())))
        .expect("classic text parses");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "hivegraph_graphql_requests_total",
            Some(("operation", "Listing"))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "hivegraph_build_info",
            Some(("version", env!("CARGO_PKG_VERSION")))
        ),
        Some(1.0)
    );
    assert!(value("hivegraph_db_pool_size", None).unwrap() > 0.0);
    assert!(value("process_resident_memory_bytes", None).unwrap() > 1e6);
    assert!(value("process_open_fds", None).unwrap() > 0.0);
    assert_eq!(
        value(
            "hivegraph_websockets",
            Some(("protocol", "graphql-transport-ws"))
        ),
        Some(0.0)
    );
    assert!(
        classic
            .text
            .contains("hivegraph_db_statement_duration_seconds_count{kind=\"read\"}"),
        "{}",
        classic.text
    );

    // Prometheus's own Accept header gets OpenMetrics.
    let om = metrics(
        &app,
        Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    )
    .await;
    assert!(
        om.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text.ends_with("# EOF\n"));
    assert!(
        om.text
            .contains("# TYPE hivegraph_graphql_requests counter")
    );
    // Refused (q=0) or preferred less than text/plain: the classic format.
    for accept in [
        "application/openmetrics-text;q=0",
        "application/openmetrics-text;q=0.2, text/plain",
    ] {
        let r = metrics(&app, Some(accept)).await;
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{accept}"
        );
        assert!(!r.text.contains("# EOF"));
    }
}

#[tokio::test]
async fn readiness_is_exported() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/readyz").await.status, 200);
    let text = metrics(&app, None).await.text;
    assert!(text.contains("\nhivegraph_ready 1\n"), "{text}");
    app.state.draining.begin();
    assert_eq!(app.get("/readyz").await.status, 503);
    let text = metrics(&app, None).await.text;
    assert!(text.contains("\nhivegraph_ready 0\n"), "{text}");
}
