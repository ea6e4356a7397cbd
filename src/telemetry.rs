//! Structured logging (JSON when stderr is not a terminal, human-readable otherwise) and,
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, traces
//! exported over OTLP/HTTP with protobuf bodies.
//!
//! A trace per request: the `HTTP` server span ([`request_span`], continuing an incoming W3C
//! `traceparent`), the `graphql` operation span (name and kind), and client spans for each SQL
//! statement (`crate::db::statements`) and Kubernetes API call (kube-rs's `HTTP` spans).
//! Operation drivers run in a span of their own ([`driver_span`]) inside the trace of the
//! request that started them, linked to it. Spans carry names, kinds, statement texts without
//! bind values and URL paths: never variables, headers or secrets.
//!
//! The standard variables apply: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*` (batching),
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off.

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber (once; later calls do nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Boxed = if std::io::stderr().is_terminal() {
        fmt.with_filter(filter).boxed()
    } else {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed()
    };
    let layers: Vec<Boxed> = std::iter::once(logs).chain(otlp_layer()).collect();
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

/// Whether the environment asks for trace export.
#[expect(
    clippy::disallowed_methods,
    reason = "OpenTelemetry's standard OTEL_* variables, which its exporter reads itself too"
)]
fn export_wanted() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let off = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !off && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The OpenTelemetry layer, when trace export is configured. It sees the spans of the gateway,
/// kube-rs's API calls included, and warnings and errors as span events.
#[expect(
    clippy::disallowed_methods,
    reason = "OTEL_SERVICE_NAME is OpenTelemetry's standard variable"
)]
fn otlp_layer() -> Option<Boxed> {
    if !export_wanted() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("hivegraph: traces are not exported: {e}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "hivegraph".into()),
        )
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("hivegraph");
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let _ = PROVIDER.set(provider);
    let filter = tracing_subscriber::filter::filter_fn(|meta| {
        let target = meta.target();
        let ours = target.starts_with("hivegraph") || target.starts_with("kube_client");
        if meta.is_span() {
            ours && *meta.level() <= tracing::Level::DEBUG
        } else {
            ours && *meta.level() <= tracing::Level::WARN
        }
    });
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter)
            .boxed(),
    )
}

/// Exports the spans still buffered (call once, before the process exits).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown()
    {
        eprintln!("hivegraph: flushing traces failed: {e}");
    }
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The server span of one HTTP request, continuing the caller's trace when the request carries
/// a W3C `traceparent`. `route` is the matched route (not the raw path).
pub fn request_span(method: &str, route: &str, headers: &axum::http::HeaderMap) -> tracing::Span {
    let span = tracing::debug_span!(
        "HTTP",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if PROVIDER.get().is_some() {
        let parent =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
        let _ = span.set_parent(parent);
    }
    span
}

/// The span an operation driver runs in: inside the current trace (the request that started
/// the operation, when there is one) and linked to the current span.
pub fn driver_span(operation: uuid::Uuid) -> tracing::Span {
    let started_by = tracing::Span::current();
    let span = tracing::debug_span!(
        "operation driver",
        otel.name = "operation driver",
        operation.id = %operation,
    );
    // A link to the starting span (tracing-opentelemetry turns `follows_from` into one).
    span.follows_from(&started_by);
    span
}
