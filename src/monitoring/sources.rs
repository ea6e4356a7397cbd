//! The three sources of a sample, all through the cluster's API server:
//! metrics.k8s.io PodMetrics (CPU, memory), the server's Prometheus endpoint through the service
//! proxy (requests, latency, errors, network), and an MCP `initialize` + `ping` JSON-RPC
//! exchange through the same proxy (health).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::sample::{cpu_cores, memory_bytes};
use crate::k8s::manifests::{self, InstanceSpec};

/// CPU and memory of an instance's pods.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// Percentage of the pods' CPU limits (one core per container that has none; a request is
    /// no ceiling, so it is not a basis). May exceed 100 when a pod has no limit.
    pub cpu_percent: f64,
    /// What the percentage is of: `limits`, `cores` or `mixed`.
    pub cpu_basis: &'static str,
    /// Bytes.
    pub memory_bytes: i64,
    /// Pods with metrics.
    pub pods: usize,
}

/// Reads PodMetrics and the pods' resources; `None` while metrics-server has no data yet (or is
/// not installed).
pub async fn pod_usage(
    client: &kube::Client,
    namespace: &str,
    instance: uuid::Uuid,
) -> Result<Option<PodUsage>, String> {
    let selector = manifests::selector(instance);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("labelSelector", &selector)
        .finish();
    let req = axum::http::Request::get(format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?{query}"
    ))
    .body(Vec::new())
    .map_err(|e| e.to_string())?;
    let list: Value = match client.request(req).await {
        Ok(v) => v,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(format!("PodMetrics: {e}")),
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return Ok(None);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("pods: {e}"))?;
    // CPU limit cores per pod and container.
    let mut basis: HashMap<(String, String), Option<f64>> = HashMap::new();
    for p in &pods.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            let r = c.resources.as_ref();
            let get = |m: Option<
                &std::collections::BTreeMap<
                    String,
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                >,
            >| {
                m.and_then(|m| m.get("cpu"))
                    .and_then(|q| cpu_cores(&q.0))
                    .filter(|v| *v > 0.0)
            };
            basis.insert(
                (name.clone(), c.name.clone()),
                get(r.and_then(|r| r.limits.as_ref())),
            );
        }
    }
    let (mut used, mut of, mut memory) = (0.0f64, 0.0f64, 0.0f64);
    let mut kinds = std::collections::BTreeSet::new();
    for item in &items {
        let pod = item["metadata"]["name"].as_str().unwrap_or_default();
        for c in item["containers"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let cpu = c["usage"]["cpu"]
                .as_str()
                .and_then(cpu_cores)
                .unwrap_or(0.0);
            let mem = c["usage"]["memory"]
                .as_str()
                .and_then(memory_bytes)
                .unwrap_or(0.0);
            used += cpu;
            memory += mem;
            let limit = basis.get(&(pod.to_string(), name)).copied().flatten();
            let (cores, kind) = match limit {
                Some(l) => (l, "limits"),
                None => (1.0, "cores"),
            };
            of += cores;
            kinds.insert(kind);
        }
    }
    let cpu_basis = match kinds.len() {
        1 => *kinds.iter().next().unwrap_or(&"cores"),
        _ => "mixed",
    };
    Ok(Some(PodUsage {
        cpu_percent: if of > 0.0 { used / of * 100.0 } else { 0.0 },
        cpu_basis,
        memory_bytes: memory.round() as i64,
        pods: items.len(),
    }))
}

/// Counter values read from a Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub requests: Option<f64>,
    pub errors: Option<f64>,
    pub duration_sum: Option<f64>,
    pub duration_count: Option<f64>,
    pub receive_bytes: Option<f64>,
    pub transmit_bytes: Option<f64>,
}

/// Request metrics names the gateway understands, first match wins.
const REQUESTS: [&str; 3] = [
    "mcp_requests_total",
    "http_requests_total",
    "http_server_requests_total",
];
const ERRORS: [&str; 2] = ["mcp_request_errors_total", "http_request_errors_total"];
const DURATION: [&str; 2] = [
    "mcp_request_duration_seconds",
    "http_request_duration_seconds",
];

/// Parses the Prometheus text format (with the `prometheus-parse` crate) into the counters the
/// gateway uses, summed over label sets.
pub fn parse_counters(text: &str) -> Result<Counters, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
    let mut sums: HashMap<String, f64> = HashMap::new();
    for s in &scrape.samples {
        match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                *sums.entry(s.metric.clone()).or_default() += v;
            }
            // `_sum` and `_count` of histograms and summaries arrive as samples of their own.
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => {}
        }
    }
    let first = |names: &[&str], suffix: &str| {
        names
            .iter()
            .find_map(|n| sums.get(&format!("{n}{suffix}")).copied())
    };
    Ok(Counters {
        requests: first(&REQUESTS, ""),
        errors: first(&ERRORS, ""),
        duration_sum: first(&DURATION, "_sum"),
        duration_count: first(&DURATION, "_count"),
        receive_bytes: first(&["network_receive_bytes_total"], ""),
        transmit_bytes: first(&["network_transmit_bytes_total"], ""),
    })
}

/// The service proxy path of an instance's server: `/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/{path}`.
pub fn proxy_path(namespace: &str, service: &str, port: u16, path: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path}")
}

/// Scrapes `GET metrics` through the service proxy.
pub async fn scrape(
    client: &kube::Client,
    namespace: &str,
    service: &str,
    port: u16,
) -> Result<Counters, String> {
    let req = axum::http::Request::get(proxy_path(namespace, service, port, "metrics"))
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = client.send(req).await.map_err(|e| format!("scrape: {e}"))?;
    let status = resp.status();
    let body = read_capped(resp.into_body(), MAX_SCRAPE_BYTES)
        .await
        .map_err(|e| format!("scrape: {e}"))?;
    if !status.is_success() {
        return Err(format!("scrape: HTTP {status}"));
    }
    parse_counters(&String::from_utf8_lossy(&body))
}

/// Most bytes read from a server's `/metrics` or an MCP answer: a server cannot make the
/// monitor hold more.
pub const MAX_SCRAPE_BYTES: usize = 4 * 1024 * 1024;

/// A body, read up to `max` bytes; longer bodies are refused (and not read further).
pub async fn read_capped<B>(body: B, max: usize) -> Result<axum::body::Bytes, String>
where
    B: axum::body::HttpBody,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                format!("the answer is larger than {max} bytes")
            } else {
                e.to_string()
            }
        })
}

/// The outcome of an MCP health check.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCheck {
    pub ok: bool,
    pub latency_ms: f64,
    pub detail: Value,
}

/// The JSON-RPC message of a response body: plain JSON, or the first `data:` line of an SSE
/// stream (streamable HTTP servers may answer either way).
fn rpc_message(body: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Some(v);
    }
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str(d.trim()).ok())
}

async fn rpc(
    client: &kube::Client,
    path: &str,
    session: Option<&str>,
    message: Value,
) -> Result<(Value, Option<String>), String> {
    let mut req = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let req = req
        .body(kube::client::Body::from(message.to_string().into_bytes()))
        .map_err(|e| e.to_string())?;
    let resp = client.send(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_capped(resp.into_body(), MAX_SCRAPE_BYTES).await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(200).collect();
        return Err(format!("HTTP {status}: {text}"));
    }
    let msg = rpc_message(&body).ok_or("the answer is not JSON-RPC")?;
    if let Some(e) = msg.get("error") {
        return Err(format!("JSON-RPC error: {e}"));
    }
    if msg.get("result").is_none() {
        return Err("the answer has no result".into());
    }
    Ok((msg, session))
}

/// MCP `initialize` then `ping`, through the service proxy (`mcp` for HTTP servers, `messages`
/// for SSE servers).
pub async fn health_check(
    client: &kube::Client,
    namespace: &str,
    service: &str,
    spec: &InstanceSpec,
) -> Option<McpCheck> {
    let port = spec.port()?;
    let endpoint = if spec.transport == "sse" {
        "messages"
    } else {
        "mcp"
    };
    let path = proxy_path(namespace, service, port, endpoint);
    let started = Instant::now();
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-03-26",
            "capabilities": {},
            "clientInfo": { "name": "hivegraph", "version": env!("CARGO_PKG_VERSION") }
        }
    });
    let outcome = async {
        let (answer, session) = rpc(client, &path, None, init).await?;
        let ping = json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" });
        rpc(client, &path, session.as_deref(), ping).await?;
        Ok::<Value, String>(answer)
    }
    .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    Some(match outcome {
        Ok(answer) => McpCheck {
            ok: true,
            latency_ms,
            detail: json!({
                "ok": true,
                "latencyMs": latency_ms,
                "transport": spec.transport,
                "protocolVersion": answer.pointer("/result/protocolVersion"),
                "serverName": answer.pointer("/result/serverInfo/name"),
            }),
        },
        Err(e) => McpCheck {
            ok: false,
            latency_ms,
            detail: json!({ "ok": false, "latencyMs": latency_ms, "transport": spec.transport, "error": e }),
        },
    })
}

/// Runs `f` with a deadline; a timeout becomes an error.
pub async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_come_from_the_text_format() {
        let text = "# HELP mcp_requests_total Total.\n# TYPE mcp_requests_total counter\n\
mcp_requests_total{server=\"a\"} 10\nmcp_requests_total{server=\"b\"} 5\n\
# TYPE mcp_request_errors_total counter\nmcp_request_errors_total 3\n\
# TYPE mcp_request_duration_seconds histogram\n\
mcp_request_duration_seconds_bucket{le=\"0.01\"} 9\nmcp_request_duration_seconds_bucket{le=\"+Inf\"} 15\n\
mcp_request_duration_seconds_sum 0.3\nmcp_request_duration_seconds_count 15\n\
# TYPE network_receive_bytes_total counter\nnetwork_receive_bytes_total 512\n";
        let c = parse_counters(text).unwrap();
        assert_eq!(c.requests, Some(15.0));
        assert_eq!(c.errors, Some(3.0));
        assert_eq!(c.duration_count, Some(15.0));
        assert!((c.duration_sum.unwrap() - 0.3).abs() < 1e-9);
        assert_eq!(c.receive_bytes, Some(512.0));
        assert_eq!(c.transmit_bytes, None);
    }

    #[test]
    fn sse_framed_answers_are_read() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert_eq!(rpc_message(body).unwrap()["id"], 1);
    }

    #[tokio::test]
    async fn bodies_past_the_cap_are_refused() {
        let big = http_body_util::Full::new(axum::body::Bytes::from(vec![b'x'; 100]));
        let err = super::read_capped(big, 10).await.unwrap_err();
        assert!(err.contains("larger than 10 bytes"), "{err}");
        let small = http_body_util::Full::new(axum::body::Bytes::from_static(b"ok"));
        assert_eq!(&super::read_capped(small, 10).await.unwrap()[..], b"ok");
    }
}
