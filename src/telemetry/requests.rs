//! One span per request of `serve` and `route`, REST and gRPC, with the
//! OpenTelemetry HTTP (and RPC) semantic conventions' fields.
//!
//! The spans have the target [`REQUESTS`] at debug level, so the default
//! filter (`info`) disables them: what a request then pays is one cached
//! callsite check. At info they measured 3-21% of the router's CPU per
//! request (`benches/trace.sh`), which is too much to pay by default.
//! The operator enables them (`RUST_LOG=info,tractor::requests=debug`)
//! only where it also sets an OTLP endpoint.
//!
//! A request span is a root as far as `tracing` knows (`parent: None`):
//! the connection span around it would otherwise make every request of a
//! kept-alive connection one trace. Its parent is the caller's
//! `traceparent`, when valid, under the `otel` feature.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::{Instrument, Level, Span};

/// The target of request spans: `RUST_LOG=tractor::requests=debug`.
pub const REQUESTS: &str = "tractor::requests";

/// Longest model name copied from a request path into a span.
const MAX_MODEL_CHARS: usize = 128;
/// Longest path copied into a span (`url.path`): a caller's path is
/// bounded only by the URI limit, and a span is not a place for kilobytes.
const MAX_PATH_BYTES: usize = 1024;

/// The KServe V2 gRPC methods (`proto/grpc_service.proto`) and the health
/// service's: only these name a span, so a caller inventing paths cannot
/// inflate the number of span names a tracing backend has to index.
const GRPC_METHODS: [(&str, &[&str]); 2] = [
    (
        crate::contract::grpc::SERVICE,
        &[
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelConfig",
        ],
    ),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
];

/// Which server a span is of.
#[derive(Debug, Clone)]
pub struct Server {
    protocol: Protocol,
    /// `serve` knows its model and version; the router records the version
    /// it chose ([`record_version`]).
    model: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
}

impl Server {
    /// `tractor serve`, serving one model version.
    pub fn serve(protocol: Protocol, model: &str, version: &str) -> Server {
        Server { protocol, model: Some(model.into()), version: Some(version.into()) }
    }

    /// `tractor route`: the model is read from the path, the version chosen later.
    pub fn router(protocol: Protocol) -> Server {
        Server { protocol, model: None, version: None }
    }

    /// The span of one request, disabled (and free) unless the filter
    /// enables [`REQUESTS`] at debug.
    fn span(&self, request: &Request) -> Span {
        if !tracing::enabled!(target: REQUESTS, Level::DEBUG) {
            return Span::none();
        }
        let method = request.method().as_str();
        let path = request.uri().path();
        let (name, route, rpc) = match self.protocol {
            Protocol::Rest => {
                let route = rest_route(path);
                let name = route.map_or_else(|| method.to_string(), |r| format!("{method} {r}"));
                (name, route.map(str::to_string), None)
            }
            Protocol::Grpc => match grpc_method(path) {
                Some((service, rpc_method)) => {
                    (format!("{service}/{rpc_method}"), Some(path.to_string()), Some("grpc"))
                }
                None => (method.to_string(), None, Some("grpc")),
            },
        };
        let model = self.model.clone().or_else(|| model_of(path));
        let span = tracing::debug_span!(
            target: REQUESTS,
            parent: None,
            "request",
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            url.path = path.get(..MAX_PATH_BYTES).unwrap_or(path),
            http.route = route.as_deref(),
            http.response.status_code = Empty,
            rpc.system = rpc,
            rpc.grpc.status_code = Empty,
            tractor.model = model.as_deref(),
            tractor.version = self.version.as_deref(),
        );
        #[cfg(feature = "otel")]
        if let Some(caller) = super::trace_context::incoming(request.headers()) {
            super::otel::set_parent(&span, &caller);
        }
        span
    }
}

/// Records the version a router sent the request to, on its span.
pub fn record_version(span: &Span, version: &str) {
    span.record("tractor.version", version);
}

/// The span of the shadow copy of a request: a child of the request's
/// span (the current one where it is made), itself the parent of the
/// shadow version's server span.
pub fn shadow_span(version: &str) -> Span {
    tracing::debug_span!(
        target: REQUESTS,
        "shadow",
        otel.name = "shadow",
        otel.kind = "client",
        tractor.version = %version,
        http.response.status_code = Empty,
    )
}

/// The route template of a V2 or V1 path, as `serve` declares its routes
/// (`serve::app`), so that router and server spans name requests alike.
pub fn rest_route(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    Some(match segments.as_slice() {
        ["v2"] => "/v2",
        ["v2", "health", "live"] => "/v2/health/live",
        ["v2", "health", "ready"] => "/v2/health/ready",
        ["v2", "models", _] => "/v2/models/{name}",
        ["v2", "models", _, "ready"] => "/v2/models/{name}/ready",
        ["v2", "models", _, "config"] => "/v2/models/{name}/config",
        ["v2", "models", _, "infer"] => "/v2/models/{name}/infer",
        ["v2", "models", _, "versions", _] => "/v2/models/{name}/versions/{version}",
        ["v2", "models", _, "versions", _, "ready"] => "/v2/models/{name}/versions/{version}/ready",
        ["v2", "models", _, "versions", _, "config"] => {
            "/v2/models/{name}/versions/{version}/config"
        }
        ["v2", "models", _, "versions", _, "infer"] => "/v2/models/{name}/versions/{version}/infer",
        ["v1", "models", _] => "/v1/models/{target}",
        ["metrics"] => "/metrics",
        _ => return None,
    })
}

/// A known gRPC method's service and name, from its path.
fn grpc_method(path: &str) -> Option<(&'static str, &'static str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (service, methods) = GRPC_METHODS.iter().find(|(s, _)| *s == service)?;
    let method = methods.iter().find(|m| **m == method)?;
    Some((service, method))
}

/// The model a V2 or V1 REST path names (`/v1/models/{name}:predict`).
fn model_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/models/").or_else(|| path.strip_prefix("/v1/models/"))?;
    let name = rest.split('/').next()?;
    let name = name.split_once(':').map_or(name, |(n, _)| n);
    (!name.is_empty()).then(|| name.chars().take(MAX_MODEL_CHARS).collect())
}

/// gRPC codes that are the server's failure, not the caller's (the RPC
/// semantic conventions' list for server spans).
fn grpc_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The answer's status on its span. A gRPC answer's `grpc-status` is
/// read from its head, where a trailers-only answer (every error tonic
/// and our auth layer return) carries it; a streamed answer's trailers are
/// not waited for.
fn record_answer(span: &Span, status: StatusCode, headers: &HeaderMap) {
    span.record("http.response.status_code", status.as_u16());
    let grpc = headers.get("grpc-status").and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
    if let Some(code) = grpc {
        span.record("rpc.grpc.status_code", code);
    }
    if status.is_server_error() || grpc.is_some_and(grpc_server_error) {
        span.record("otel.status_code", "error");
    }
}

/// Records the shadow version's answer on the shadow span.
pub fn record_shadow_answer(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
}

/// The layer giving every request of a server its span
/// ([`traced`] applies it to a whole router).
#[derive(Debug, Clone)]
pub struct RequestSpans(Arc<Server>);

/// `router` with a span per request, outermost: refusals by the auth layer
/// and the server's own 404s get one too. Apply it last, after `protect`.
pub fn traced(router: axum::Router, server: Server) -> axum::Router {
    router.layer(RequestSpans(Arc::new(server)))
}

impl<S> Layer<S> for RequestSpans {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner, server: self.0.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    server: Arc<Server>,
}

impl<S> Service<Request> for Traced<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// The inner future as is when the span is disabled: the default
    /// build's requests pay no allocation for tracing.
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = self.server.span(&request);
        if span.is_disabled() {
            return Either::Left(self.inner.call(request));
        }
        let answer = span.in_scope(|| self.inner.call(request)).instrument(span.clone());
        Either::Right(Box::pin(async move {
            let Ok(response) = answer.await;
            record_answer(&span, response.status(), response.headers());
            Ok(response)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_paths_name_the_routes_serve_declares() {
        assert_eq!(rest_route("/v2/models/digits/infer"), Some("/v2/models/{name}/infer"));
        assert_eq!(
            rest_route("/v2/models/digits/versions/3/infer"),
            Some("/v2/models/{name}/versions/{version}/infer")
        );
        assert_eq!(rest_route("/v2/health/ready"), Some("/v2/health/ready"));
        assert_eq!(rest_route("/v1/models/digits:predict"), Some("/v1/models/{target}"));
        assert_eq!(rest_route("/nope"), None, "unknown paths name no route");
        assert_eq!(rest_route("/v2/models/a/b/c/d/e/f/g"), None);
        assert_eq!(rest_route("*"), None);
    }

    #[test]
    fn models_come_from_the_path_within_a_bound() {
        assert_eq!(model_of("/v2/models/digits/infer").as_deref(), Some("digits"));
        assert_eq!(model_of("/v1/models/digits:predict").as_deref(), Some("digits"));
        assert_eq!(model_of("/v2/health/live"), None);
        let long = format!("/v2/models/{}/infer", "m".repeat(10_000));
        assert_eq!(model_of(&long).map(|m| m.len()), Some(MAX_MODEL_CHARS));
    }

    #[test]
    fn only_known_grpc_methods_name_a_span() {
        assert_eq!(
            grpc_method("/inference.GRPCInferenceService/ModelInfer"),
            Some(("inference.GRPCInferenceService", "ModelInfer"))
        );
        assert_eq!(grpc_method("/grpc.health.v1.Health/Check").map(|m| m.1), Some("Check"));
        assert_eq!(grpc_method("/inference.GRPCInferenceService/Invented"), None);
        assert_eq!(grpc_method("/elsewhere/ModelInfer"), None);
    }
}
