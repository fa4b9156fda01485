//! The `otel` feature: request spans exported over OTLP/HTTP (protobuf),
//! configured by the standard `OTEL_*` variables.
//!
//! - No endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`), `OTEL_SDK_DISABLED=true`
//!   or `OTEL_TRACES_EXPORTER=none`: no exporter, no layer, nothing sent.
//! - The SDK reads the rest itself: `OTEL_SERVICE_NAME`,
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
//!   `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` and `_TIMEOUT`, `OTEL_BSP_*`.
//! - Spans queue in the SDK's batch processor (its own thread) and are
//!   flushed by [`Exporting::shutdown`], which `main` calls once the
//!   subcommand has returned: after `serve`'s and `route`'s drain on
//!   SIGTERM or Ctrl-C.
//!
//! # Why our own HTTP client for the exporter
//! The batch processor exports from its own thread, outside any tokio
//! runtime, and the OTLP crate's hyper client needs one (its reqwest
//! clients are of another reqwest than ours, a second HTTP stack). So the
//! exporter's requests are handed to the process's runtime ([`Runtime`]),
//! on the hyper client the router already builds.

use std::fmt;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::trace_context::{Incoming, TraceParent};

/// Largest answer read from a collector: OTLP answers are a few bytes
/// (a partial-success message at most).
const MAX_COLLECTOR_ANSWER_BYTES: usize = 64 << 10;
/// How long one export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` says
/// nothing: the specification's default.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why tracing could not start (the process runs on, without it).
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("trust roots for an https collector: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The tracer provider while spans are exported.
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Exporting {
    /// Sends the queued spans and stops the exporter; waits at most the
    /// export timeout. Call it from outside the runtime's workers (the
    /// export runs on them).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing the traces: {e}");
        }
    }
}

/// Whether the environment asks for traces: an endpoint, and no switch off.
pub fn endpoint_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let off = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !off && (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The exporter and the tracer the `tracing` layer writes to, or `None`
/// when the environment names no endpoint.
///
/// # Errors
/// An exporter that cannot be built (a malformed endpoint), or no trust
/// roots for an https one.
pub fn start(
    runtime: tokio::runtime::Handle,
    default_service: &str,
) -> Result<Option<(Exporting, opentelemetry_sdk::trace::Tracer)>, OtelError> {
    if !endpoint_configured() {
        return Ok(None);
    }
    let client = Runtime::new(runtime)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let named = |name: &str| std::env::var(name).is_ok_and(|v| v.contains("service.name"));
    let mut resource = Resource::builder();
    // The SDK's default is `unknown_service`; ours says which role it is.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() && !named("OTEL_RESOURCE_ATTRIBUTES") {
        resource = resource.with_service_name(default_service.to_string());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("tractor");
    Ok(Some((Exporting { provider }, tracer)))
}

/// Makes the caller's span (from a valid `traceparent`) the parent of `span`.
pub fn set_parent(span: &tracing::Span, caller: &Incoming) {
    let state =
        caller.state.as_deref().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    let parent = SpanContext::new(
        TraceId::from_bytes(caller.parent.trace_id),
        SpanId::from_bytes(caller.parent.parent_id),
        TraceFlags::new(caller.parent.flags),
        true,
        state,
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
}

/// `span`'s own trace context, when it has one (an exporter is running
/// and the span is enabled): what its children's `traceparent` carries.
pub fn span_context(span: &tracing::Span) -> Option<(TraceParent, Option<String>)> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let ours = context.span().span_context().clone();
    if !ours.is_valid() {
        return None;
    }
    let parent = TraceParent {
        trace_id: ours.trace_id().to_bytes(),
        parent_id: ours.span_id().to_bytes(),
        flags: ours.trace_flags().to_u8(),
    };
    let state = ours.trace_state().header();
    Some((parent, (!state.is_empty()).then_some(state)))
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The exporter's HTTP client: each request runs on the process's tokio
/// runtime, whichever thread asks.
#[derive(Clone)]
struct Runtime {
    handle: tokio::runtime::Handle,
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Runtime {
    fn new(handle: tokio::runtime::Handle) -> Result<Runtime, OtelError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_default();
        // The system's roots only for an https collector: a distroless
        // image has none, and a plain-http collector needs none.
        let roots = if endpoint.trim_start().starts_with("https://") {
            crate::tls::system_roots_and(None)?
        } else {
            tokio_rustls::rustls::RootCertStore::empty()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config_with(roots))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let timeout = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
            .iter()
            .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
            .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis);
        Ok(Runtime {
            handle,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Runtime {
    async fn send_bytes(
        &self,
        request: axum::http::Request<Bytes>,
    ) -> Result<axum::http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let exchange = async move {
            let answer = tokio::time::timeout(timeout, client.request(request.map(Full::new)))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))??;
            let (head, body) = answer.into_parts();
            let body = Limited::new(body, MAX_COLLECTOR_ANSWER_BYTES).collect().await?.to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(axum::http::Response::from_parts(head, body))
        };
        self.handle.spawn(exchange).await?
    }
}
