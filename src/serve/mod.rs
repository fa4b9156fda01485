//! `tractor serve`: one model version over the Open Inference Protocol
//! (KServe V2) REST API and the KServe V1 protocol, with input and output
//! processing, dynamic batching, limits and metrics.
//!
//! # Expected flow
//! [`run`] binds the port first (liveness answers at once), fetches and
//! verifies the artifact, loads it, then flips readiness. A model that fails
//! to fetch, verify or load stops the process with the reason.

mod batcher;
mod error;
pub mod grpc;
mod grpc_convert;
mod infer;
mod metadata;
pub mod metrics;
pub mod output_limits;
mod state;
mod tensor_json;
pub mod v1;
pub mod v2;

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;

pub use batcher::BatchPolicy;
pub use error::ApiError;
pub use grpc::GrpcListen;
pub use state::{
    AppState, Loaded, ServeConfig, ServeError, default_max_request_elements, default_model_name,
    load_model,
};

use crate::listen::{self, ConnectionLimits, bind};
use crate::telemetry::requests::{self, Protocol, Server};

/// The HTTP routes, without a port: tests drive it with `oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v2", get(metadata::server_metadata))
        .route("/v2/health/live", get(metadata::live))
        .route("/v2/health/ready", get(metadata::ready))
        .route("/v2/models/{name}", get(metadata::model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(metadata::model_metadata))
        .route("/v2/models/{name}/ready", get(metadata::model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(metadata::model_ready))
        .route("/v2/models/{name}/config", get(metadata::model_config))
        .route("/v2/models/{name}/versions/{version}/config", get(metadata::model_config))
        .route("/v2/models/{name}/infer", post(infer::infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer::infer))
        // KServe V1: `{name}:predict` is one path segment, split by the handler.
        .route("/v1/models/{target}", get(v1::model_ready).post(v1::predict))
        .route("/metrics", get(metadata::metrics_text))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        // Triton's clients can gzip or deflate requests and ask for
        // compressed answers. Requests are inflated by the handlers
        // (`infer::RawBody::inflate`), off the async threads and under
        // --max-body-bytes, so a small compressed body can neither expand
        // past the limit nor stall the health checks while it inflates.
        .layer(CompressionLayer::new())
        .with_state(state)
}

/// Runs the server until `shutdown` resolves, then drains in-flight
/// requests, with the default connection limits.
///
/// # Errors
/// As [`run_with_limits`].
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with_limits(config, ConnectionLimits::default(), shutdown).await
}

/// Runs the server until `shutdown` resolves, then drains in-flight
/// requests for at most the drain timeout of `connections`.
///
/// # Errors
/// A port that cannot be bound, or a model that cannot be fetched, verified
/// or loaded: the process should exit with the reason.
pub async fn run_with_limits(
    config: ServeConfig,
    connections: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with_tls(config, connections, None, shutdown).await
}

/// As [`run_with_limits`], serving HTTPS when `tls` is given (`tls.rs`).
///
/// # Errors
/// As [`run_with_limits`].
pub async fn run_with_tls(
    config: ServeConfig,
    connections: ConnectionLimits,
    tls: Option<crate::tls::TlsServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with_grpc(config, connections, tls, None, shutdown).await
}

/// As [`run_with_tls`], serving the gRPC API too when `grpc` is given
/// (`serve --grpc-port`), on the same state, limits and auth.
///
/// # Errors
/// As [`run_with_limits`].
pub async fn run_with_grpc(
    config: ServeConfig,
    connections: ConnectionLimits,
    tls: Option<crate::tls::TlsServer>,
    grpc: Option<GrpcListen>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = AppState::new(&config);
    let auth = crate::auth::Auth::start(&config.auth).await?;
    let listener = bind(config.listen).await?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(addr = %local, model = %config.name, version = %config.version, "listening");
    let (draining, stopped) = listen::drain_together(shutdown);
    let grpc_server = match grpc {
        Some(grpc) => {
            let listener = bind(grpc.addr).await?;
            let addr = listener.local_addr().map_err(ServeError::Http)?;
            tracing::info!(%addr, "gRPC listening");
            Some(tokio::spawn(grpc::serve(
                listener,
                state.clone(),
                auth.clone(),
                connections,
                grpc.tls,
                stopped,
            )))
        }
        None => None,
    };
    let routes =
        crate::auth::protect(app(state.clone()), auth.as_ref(), crate::auth::Surface::Serve);
    let spans = Server::serve(Protocol::Rest, &config.name, &config.version);
    let routes = requests::traced(routes, spans);
    let server = listen::serve_tls(listener, routes, connections, tls, draining);
    tokio::pin!(server);
    let started = Instant::now();
    let loading = load_model(&config);
    tokio::select! {
        loaded = loading => {
            let model = loaded?;
            state.metrics().model_load_seconds.set(started.elapsed().as_secs_f64());
            state.install_processed(model, config.processing.as_ref())?;
        }
        () = &mut server => {
            // Shut down before the model finished loading.
            if let Some(grpc) = grpc_server {
                let _ = grpc.await;
            }
            return Ok(());
        }
    }
    server.await;
    if let Some(grpc) = grpc_server {
        let _ = grpc.await;
    }
    tracing::info!("server stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
