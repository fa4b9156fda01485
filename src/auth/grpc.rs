//! Access control of the gRPC ports (`serve` and `route`): the same tokens,
//! JWT, scopes, limits and pins as REST, through the same layer.
//!
//! Each gRPC method is checked as the REST request that does the same
//! thing (`ModelInfer` as `POST /v2/models/_/infer`, `ModelMetadata` as a
//! metadata read, `ServerLive` and the health service as the open health
//! paths), so the scopes cannot drift apart. The request is shown to
//! [`protect`](super::protect) under that REST form and handed on under
//! its own path; an answer that is not gRPC (a refusal, the router's own
//! errors) becomes a gRPC status with the same message.

use std::convert::Infallible;
use std::future::Future;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use tower::util::{MapFutureLayer, MapRequestLayer};

use super::{Auth, Surface};

/// The gRPC path a request arrived on, while its REST form is checked.
#[derive(Clone)]
struct GrpcTarget(Uri);

/// The REST request a gRPC method is checked as.
pub fn rest_equivalent(path: &str) -> (Method, &'static str) {
    if path.starts_with("/grpc.health.v1.Health/") {
        return (Method::GET, "/v2/health/ready");
    }
    let Some(rest) = path.strip_prefix("/inference.GRPCInferenceService/") else {
        return (Method::POST, "/grpc");
    };
    match rest {
        "ServerLive" => (Method::GET, "/v2/health/live"),
        "ServerReady" => (Method::GET, "/v2/health/ready"),
        "ServerMetadata" | "ModelMetadata" | "ModelReady" | "ModelConfig" => {
            (Method::GET, "/v2/models/_")
        }
        // ModelInfer and whatever else: inference, never less.
        _ => (Method::POST, "/v2/models/_/infer"),
    }
}

/// Wraps a gRPC server's routes in the access check of `surface`; with
/// `auth` `None` only the answers are made gRPC.
///
/// Plain tower layers, not axum's `from_fn`, which boxes a future and
/// clones the inner service per request: every gRPC request passes here,
/// with access control or without.
pub fn protect(router: Router, auth: Option<&Auth>, surface: Surface) -> Router {
    let restored = router.layer(MapRequestLayer::new(restore));
    super::protect(restored, auth, surface)
        .layer(MapFutureLayer::new(answer_as_grpc::<RouteFuture<Infallible>>))
        .layer(MapRequestLayer::new(as_rest))
}

/// The request under its REST form, for the check.
fn as_rest(mut request: Request) -> Request {
    let (method, path) = rest_equivalent(request.uri().path());
    let original = std::mem::replace(request.uri_mut(), Uri::from_static(path));
    *request.method_mut() = method;
    request.extensions_mut().insert(GrpcTarget(original));
    request
}

/// Its own path again, past the check.
fn restore(mut request: Request) -> Request {
    if let Some(GrpcTarget(uri)) = request.extensions_mut().remove::<GrpcTarget>() {
        *request.uri_mut() = uri;
        *request.method_mut() = Method::POST;
    }
    request
}

/// The answer, made a gRPC status when it is not one already.
async fn answer_as_grpc<F>(answer: F) -> Result<Response, Infallible>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    Ok(as_grpc(answer.await?).await)
}

fn is_grpc(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The gRPC code of an HTTP status, as the V2 protocol pairs them.
pub fn code_of(status: StatusCode) -> tonic::Code {
    use tonic::Code;
    match status.as_u16() {
        400 | 415 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        413 | 429 => Code::ResourceExhausted,
        502 | 503 => Code::Unavailable,
        s if (200..300).contains(&s) => Code::Ok,
        _ => Code::Internal,
    }
}

/// The `{"error": ...}` of a V2 answer, or its status's reason.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string())
}

/// tonic refuses a message over its decoding limit (the body limit) as
/// OUT_OF_RANGE; the protocol, grpc-core and REST's 413 say
/// RESOURCE_EXHAUSTED.
fn too_large_is_exhausted(response: &mut Response) {
    let headers = response.headers();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        // Percent-encoded on the wire (tonic encodes spaces).
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if out_of_range && too_large {
        response.headers_mut().insert("grpc-status", HeaderValue::from_static("8"));
    }
}

/// Largest non-gRPC answer read for its message: refusals are a line.
const MAX_ERROR_BYTES: usize = 64 << 10;

async fn as_grpc(mut response: Response) -> Response {
    if is_grpc(&response) {
        too_large_is_exhausted(&mut response);
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES).await.unwrap_or_default();
    let message = error_message(parts.status, &bytes);
    let code = match code_of(parts.status) {
        tonic::Code::Ok => tonic::Code::Internal,
        code => code,
    };
    let mut answer = tonic::Status::new(code, message).into_http::<Body>();
    if let Some(wait) = parts.headers.get(header::RETRY_AFTER) {
        answer.headers_mut().insert(header::RETRY_AFTER, wait.clone());
    }
    answer
        .headers_mut()
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/grpc"));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;
    use crate::auth::{Access, access};

    #[test]
    fn grpc_methods_need_the_scopes_of_their_rest_twins() {
        let need = |path: &str| {
            let (method, rest) = rest_equivalent(path);
            access(Surface::Serve, false, &method, rest)
        };
        let s = "/inference.GRPCInferenceService/";
        assert_eq!(need(&format!("{s}ServerLive")), Access::Open);
        assert_eq!(need(&format!("{s}ServerReady")), Access::Open);
        assert_eq!(need("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(need(&format!("{s}ModelMetadata")), Access::Needs(Scope::Metadata));
        assert_eq!(need(&format!("{s}ModelConfig")), Access::Needs(Scope::Metadata));
        assert_eq!(need(&format!("{s}ModelInfer")), Access::Needs(Scope::Infer));
        assert_eq!(need(&format!("{s}ModelStreamInfer")), Access::Needs(Scope::Infer));
        assert_eq!(need("/other.Service/Anything"), Access::Needs(Scope::Infer));
    }

    #[test]
    fn http_statuses_become_the_protocol_codes() {
        assert_eq!(code_of(StatusCode::BAD_REQUEST), tonic::Code::InvalidArgument);
        assert_eq!(code_of(StatusCode::UNAUTHORIZED), tonic::Code::Unauthenticated);
        assert_eq!(code_of(StatusCode::FORBIDDEN), tonic::Code::PermissionDenied);
        assert_eq!(code_of(StatusCode::SERVICE_UNAVAILABLE), tonic::Code::Unavailable);
        assert_eq!(code_of(StatusCode::PAYLOAD_TOO_LARGE), tonic::Code::ResourceExhausted);
        assert_eq!(code_of(StatusCode::GATEWAY_TIMEOUT), tonic::Code::DeadlineExceeded);
        assert_eq!(error_message(StatusCode::BAD_REQUEST, br#"{"error":"no"}"#), "no");
    }
}
