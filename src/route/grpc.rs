//! `route --grpc-port`: the router in front of the versions' gRPC ports.
//!
//! gRPC requests take the REST proxy's path (`proxy`): the same choice of
//! version (weights, `x-tractor-version` pins under the `pin` scope, the
//! sticky header), the same in-flight limit, body limit, retry on stable,
//! and per-version figures. Only the transport differs: an HTTP/2 client to
//! each version's `grpc` endpoint of the routing table, and errors read
//! from `grpc-status` (gRPC answers HTTP 200 whatever happened). The
//! messages are relayed as bytes; with a shadow version, a copy of the
//! caller's answer is decoded after it has been relayed, to compare with
//! the shadow's (`agreement.rs`).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use super::RouterState;
use super::backend::HttpClient;
use crate::contract::routes::Backend;
use crate::listen::{self, ConnectionLimits};
use crate::telemetry::requests;

/// Marks a request that came in on the gRPC port.
#[derive(Debug, Clone, Copy)]
pub(super) struct GrpcTraffic;

/// Where the gRPC port listens, and its TLS side.
#[derive(Debug, Clone)]
pub struct GrpcListen {
    pub addr: SocketAddr,
    pub tls: Option<crate::tls::TlsServer>,
}

/// An HTTP/2-only client (prior knowledge on http://, ALPN h2 on https://).
pub(super) fn client(connector: HttpConnector, tls: &crate::tls::BackendTls) -> HttpClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.client_config())
        .https_or_http()
        .enable_http2()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new()).http2_only(true).build(connector)
}

/// The backend a gRPC request goes to: the version's gRPC endpoint.
///
/// # Errors
/// A version the table gives no gRPC endpoint.
pub(super) fn backend(b: &Backend) -> Result<Backend, String> {
    match &b.grpc {
        Some(url) => Ok(Backend { url: url.clone(), ..b.clone() }),
        None => Err(format!("version {} has no gRPC endpoint in the routing table", b.version)),
    }
}

/// Whether a gRPC answer's head says it failed: a trailers-only answer
/// carries `grpc-status` there. Client mistakes are not the version's
/// failures, as REST 4xx are not.
pub(super) fn failed(headers: &HeaderMap) -> bool {
    use tonic::Code;
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let code = Code::from_bytes(code.as_bytes());
    matches!(
        code,
        Code::Internal
            | Code::Unavailable
            | Code::Unknown
            | Code::DataLoss
            | Code::Unimplemented
            | Code::DeadlineExceeded
    )
}

fn mark(mut request: Request) -> Request {
    request.extensions_mut().insert(GrpcTraffic);
    request
}

/// The gRPC traffic side: every path proxied, as on the REST port.
pub fn app(state: RouterState) -> Router {
    super::app(state).layer(tower::util::MapRequestLayer::new(mark))
}

/// Serves the gRPC port until `shutdown` resolves.
pub(super) async fn serve(
    listener: TcpListener,
    state: RouterState,
    auth: Option<crate::auth::Auth>,
    limits: ConnectionLimits,
    tls: Option<crate::tls::TlsServer>,
    shutdown: impl Future<Output = ()>,
) {
    let routes =
        crate::auth::grpc::protect(app(state), auth.as_ref(), crate::auth::Surface::RouterTraffic);
    let routes = requests::traced(routes, requests::Server::router(requests::Protocol::Grpc));
    listen::serve_h2(listener, routes, limits, tls, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_grpc_statuses_are_the_versions_failures() {
        let head = |code: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", axum::http::HeaderValue::from_static(code));
            h
        };
        assert!(!failed(&HeaderMap::new()), "no status in the head: streaming an answer");
        assert!(!failed(&head("0")));
        assert!(!failed(&head("3")), "INVALID_ARGUMENT is the caller's");
        assert!(!failed(&head("5")), "NOT_FOUND is the caller's");
        assert!(failed(&head("13")), "INTERNAL");
        assert!(failed(&head("14")), "UNAVAILABLE");
        assert!(failed(&head("4")), "DEADLINE_EXCEEDED");
    }
}
