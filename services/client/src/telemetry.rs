//! Logs and traces for every Reinado process: `tracing` to stderr (filtered by `RUST_LOG`), and OpenTelemetry
//! spans exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, with the W3C trace context carried in gRPC metadata from process to process.
//!
//! A process calls [`init`] once, inside its tokio runtime, and [`Telemetry::shutdown`] before it exits so
//! that the spans still buffered are sent. Servers create one span per request with [`server_span`] (tonic's
//! `Server::trace_fn`), which continues the caller's trace; clients inject the current span's context into
//! each outgoing request with [`TracePropagation`].

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The installed telemetry; flush it with [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Whether the standard OTLP variables ask for trace export.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs logging (`RUST_LOG`, default `default_filter`) and, if OTLP is configured, trace export under the
/// service name `OTEL_SERVICE_NAME` or else `service_name`. Must run inside a tokio runtime (the OTLP exporter
/// is a tonic client). Fails if the OTLP configuration is invalid or a subscriber is already installed.
pub fn init(service_name: &str, default_filter: &str) -> anyhow::Result<Telemetry> {
    init_with(service_name, default_filter, None)
}

/// [`init`], exporting to `endpoint` if given (whatever the environment says), else as the environment says.
pub fn init_with(
    service_name: &str,
    default_filter: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let provider = if endpoint.is_some() || otlp_configured() {
        use opentelemetry_otlp::WithExportConfig as _;
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder.build()?;
        let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_string());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(name)
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    } else {
        None
    };
    // Spans reach the exporter only at INFO and above, whatever RUST_LOG says for the console.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("reinado"))
            .with_filter(EnvFilter::new("info,h2=off,tower=off,hyper=off"))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// True if spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still buffered and stops the exporter. Blocks up to a few seconds; call it from a
    /// blocking context (`spawn_blocking`) or after the runtime stopped serving.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
        {
            eprintln!("trace export did not flush: {e}");
        }
    }
}

/// Reads W3C trace context from HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes W3C trace context into gRPC metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The span for one inbound gRPC request (for tonic's `Server::trace_fn`): named after the method, a server
/// span in OpenTelemetry terms, child of the caller's span when the request carries W3C trace context. A proxy
/// records its routing in `route.node` (the node that answered) and `route.attempts`.
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    request_span(req.uri().path(), &HeaderExtractor(req.headers()))
}

/// The span for one request that arrived on a pipeline stream: like [`server_span`], with the caller's trace
/// context given as a `traceparent` value.
pub fn pipelined_span(path: &str, traceparent: &str) -> tracing::Span {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    request_span(path, &carrier)
}

fn request_span(path: &str, carrier: &dyn Extractor) -> tracing::Span {
    let method = path.rsplit('/').next().unwrap_or(path);
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
        route.node = tracing::field::Empty,
        route.attempts = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    // Fails only when no OpenTelemetry layer is installed, in which case there is nothing to link.
    let _ = span.set_parent(parent);
    span
}

/// The current span's trace context as a `traceparent` value (empty when there is none).
pub fn current_traceparent() -> String {
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// Puts the current span's trace context into outgoing request metadata.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// A tonic client interceptor that carries the current span's trace context to the server.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracePropagation;

impl tonic::service::Interceptor for TracePropagation {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current(req.metadata_mut());
        Ok(req)
    }
}
