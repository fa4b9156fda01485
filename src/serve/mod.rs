//! `tractor serve`: one model version over the Open Inference Protocol
//! (KServe V2) REST API, with dynamic batching, limits and metrics.
//!
//! # Expected flow
//! [`run`] binds the port first (liveness answers at once), fetches and
//! verifies the artifact, loads it, then flips readiness. A model that fails
//! to fetch, verify or load stops the process with the reason.

mod batcher;
mod error;
pub mod metrics;
pub mod v2;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

pub use batcher::BatchPolicy;
use batcher::{BatchError, Scheduler};
pub use error::ApiError;
use metrics::{Metrics, Outcome};

use crate::engine::{EngineOptions, Model, ModelFormat, TensorSpec, Threads};
use crate::store;

/// Everything `tractor serve` is told on its command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub model_location: String,
    pub name: String,
    pub version: String,
    pub sha256: Option<String>,
    pub listen: SocketAddr,
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub max_inflight: usize,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub threads: Threads,
    /// Batches the engine runs at once; 0 means one per core the model's
    /// threads leave free.
    pub workers: usize,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    FetchArtifact(#[from] store::StoreError),
    #[error("loading model {location}: {source}")]
    LoadModel {
        location: String,
        #[source]
        source: crate::engine::EngineError,
    },
    #[error("cannot start the engine workers: {0}")]
    StartWorkers(#[source] std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// The model once loaded, with its scheduler.
pub struct Loaded {
    pub model: Arc<Model>,
    scheduler: Scheduler,
}

/// Shared state of the HTTP handlers. It never holds anything of the
/// controller's: the server only knows its one model.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    version: String,
    loaded: OnceLock<Loaded>,
    metrics: Metrics,
    inflight: Arc<Semaphore>,
    max_body_bytes: usize,
    request_timeout: Duration,
    policy: BatchPolicy,
}

impl AppState {
    pub fn new(config: &ServeConfig) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                version: config.version.clone(),
                loaded: OnceLock::new(),
                metrics: Metrics::new(&config.name, &config.version),
                inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
                max_body_bytes: config.max_body_bytes,
                request_timeout: config.request_timeout,
                policy: BatchPolicy {
                    max_batch_rows: config.max_batch_size,
                    max_delay: config.max_batch_delay,
                    slots: config.workers,
                },
            }),
        }
    }

    /// Installs a loaded model, starts its engine workers and turns
    /// readiness on. A second call is ignored.
    ///
    /// # Errors
    /// The operating system refusing to start the worker threads.
    pub fn install(&self, model: Model) -> Result<(), ServeError> {
        if self.inner.loaded.get().is_some() {
            return Ok(());
        }
        let model = Arc::new(model);
        let mut policy = self.inner.policy;
        if policy.slots == 0 {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            policy.slots = (cores / model.threads().max(1)).max(1);
        }
        let batch_size = self.inner.metrics.batch_size.clone();
        let scheduler = Scheduler::start(
            model.clone(),
            policy,
            Arc::new(move |rows| batch_size.observe(rows as f64)),
        )
        .map_err(ServeError::StartWorkers)?;
        tracing::info!(
            inputs = ?model.inputs().iter().map(|s| (&s.name, s.datatype.v2_name(), s.v2_shape())).collect::<Vec<_>>(),
            outputs = ?model.outputs().iter().map(|s| (&s.name, s.datatype.v2_name(), s.v2_shape())).collect::<Vec<_>>(),
            batching = scheduler.policy().batching(),
            engine_threads = model.threads(),
            slots = scheduler.policy().slots,
            "model ready"
        );
        if self.inner.loaded.set(Loaded { model, scheduler }).is_ok() {
            self.inner.metrics.model_ready.set(1);
        }
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn loaded(&self) -> Result<&Loaded, ApiError> {
        self.inner.loaded.get().ok_or(ApiError::NotReady)
    }

    /// Checks a name (and version) from the URL against the served model.
    fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        if name != self.inner.name {
            return Err(ApiError::NotFound(format!(
                "unknown model {name:?}; this server serves {:?}",
                self.inner.name
            )));
        }
        if let Some(v) = version
            && v != self.inner.version
        {
            return Err(ApiError::NotFound(format!(
                "unknown version {v:?} of model {name:?}; this server serves version {:?}",
                self.inner.version
            )));
        }
        Ok(())
    }
}

/// The HTTP routes, without a port: tests drive it with `oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_versioned))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_versioned))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/versions/{version}/config", get(model_config_versioned))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_versioned))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        // Triton's clients can gzip or deflate requests and ask for
        // compressed answers. The infer handler reads bodies with its own
        // limit, applied after decompression, so a small compressed body
        // cannot expand past --max-body-bytes.
        .layer(RequestDecompressionLayer::new())
        .layer(CompressionLayer::new())
        .with_state(state)
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "tractor",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_configuration"],
    }))
    .into_response()
}

async fn live() -> Response {
    axum::Json(json!({ "live": true })).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.loaded().is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "ready": ready }))).into_response()
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    metadata(&state, &name, None)
}

async fn model_metadata_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    metadata(&state, &name, Some(&version))
}

fn tensor_metadata(specs: &[TensorSpec]) -> serde_json::Value {
    specs
        .iter()
        .map(|s| json!({ "name": s.name, "datatype": s.datatype.v2_name(), "shape": s.v2_shape() }))
        .collect()
}

fn platform(model: &Model) -> &'static str {
    match model.format() {
        ModelFormat::Onnx => "tract_onnx",
        ModelFormat::Nnef => "tract_nnef",
    }
}

fn metadata(state: &AppState, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    state.check_model(name, version)?;
    let loaded = state.loaded()?;
    Ok(axum::Json(json!({
        "name": state.inner.name,
        "versions": [state.inner.version],
        "platform": platform(&loaded.model),
        "inputs": tensor_metadata(loaded.model.inputs()),
        "outputs": tensor_metadata(loaded.model.outputs()),
    }))
    .into_response())
}

async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    readiness(&state, &name, None)
}

async fn model_ready_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    readiness(&state, &name, Some(&version))
}

fn readiness(state: &AppState, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    state.check_model(name, version)?;
    let ready = state.loaded().is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, axum::Json(json!({ "name": name, "ready": ready }))).into_response())
}

async fn model_config(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    config(&state, &name, None)
}

async fn model_config_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    config(&state, &name, Some(&version))
}

/// Triton's model configuration, which `perf_analyzer` and Triton's clients
/// read to learn the batch limit. Shapes there leave the batch axis out when
/// `max_batch_size > 0`, as Triton does.
fn config(state: &AppState, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    state.check_model(name, version)?;
    let loaded = state.loaded()?;
    let policy = loaded.scheduler.policy();
    let batched = loaded.model.is_batchable();
    let dims = |s: &TensorSpec| -> Vec<i64> {
        let shape = s.v2_shape();
        if batched { shape[1..].to_vec() } else { shape }
    };
    let io = |specs: &[TensorSpec]| -> serde_json::Value {
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "data_type": format!("TYPE_{}", s.datatype.v2_name()), "dims": dims(s) }))
            .collect()
    };
    let mut config = json!({
        "name": state.inner.name,
        "platform": platform(&loaded.model),
        "backend": "tract",
        "max_batch_size": if batched { policy.max_batch_rows.max(1) } else { 0 },
        "input": io(loaded.model.inputs()),
        "output": io(loaded.model.outputs()),
    });
    if policy.batching() {
        config["dynamic_batching"] = json!({
            "max_queue_delay_microseconds": policy.max_delay.as_micros() as u64,
        });
    }
    Ok(axum::Json(config).into_response())
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.inner.metrics.render(),
    )
        .into_response()
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_counted(state, name, None, headers, body).await
}

async fn infer_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_counted(state, name, Some(version), headers, body).await
}

/// Wraps one inference in the in-flight limit, the timeout and the metrics.
async fn infer_counted(
    state: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let metrics = &state.inner.metrics;
    let result = match state.inner.inflight.clone().try_acquire_owned() {
        Err(_) => Err(ApiError::Overloaded),
        Ok(_permit) => {
            // A guard, so that a client hanging up (which drops this future)
            // still decrements the gauge.
            let _inflight = GaugeGuard::inc(&metrics.inflight);
            let timeout = state.inner.request_timeout;
            let work = infer_one(&state, &name, version.as_deref(), &headers, body);
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(ApiError::Timeout(timeout)),
            }
        }
    };
    let outcome = match &result {
        Ok(_) => Outcome::Success,
        Err(e) => e.outcome(),
    };
    metrics.count_request("v2", outcome);
    if outcome == Outcome::Success {
        metrics.request_seconds.observe(started.elapsed().as_secs_f64());
    }
    if let Err(ApiError::Internal(reason)) = &result {
        tracing::error!(model = %name, %reason, "inference failed");
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn inc(gauge: &prometheus::IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn infer_one(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.check_model(name, version)?;
    let loaded = state.loaded()?;
    let limit = state.inner.max_body_bytes;
    let body: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    let header_length = headers
        .get(v2::HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest(format!("{} is not text", v2::HEADER_LENGTH)))
        })
        .transpose()?;
    let (json_part, binary_part) =
        v2::split_body(&body, header_length).map_err(ApiError::BadRequest)?;
    let model = &loaded.model;
    let policy = loaded.scheduler.policy();
    let max_rows = policy.batching().then_some(policy.max_batch_rows);
    let request = v2::decode_request(
        json_part,
        binary_part,
        model.inputs(),
        model.outputs(),
        model.is_batchable(),
        max_rows,
    )
    .map_err(ApiError::BadRequest)?;
    let completed = loaded.scheduler.submit(request.inputs.clone(), request.rows).await.map_err(
        |e| match e {
            BatchError::Closed => ApiError::NotReady,
            other => ApiError::Internal(other.to_string()),
        },
    )?;
    let metrics = &state.inner.metrics;
    metrics.queue_seconds.observe(completed.queued.as_secs_f64());
    metrics.compute_seconds.observe(completed.compute.as_secs_f64());
    let encoded = v2::encode_response(
        &state.inner.name,
        &state.inner.version,
        &request,
        model.outputs(),
        &completed.outputs,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = Response::new(Body::from(encoded.body));
    let headers = response.headers_mut();
    match encoded.header_length {
        Some(len) => {
            headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(v2::HEADER_LENGTH, HeaderValue::from(len));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(response)
}

/// The model name a location implies: its file name without the model extensions.
pub fn default_model_name(location: &str) -> String {
    let file = location.trim_end_matches('/').rsplit('/').next().unwrap_or(location);
    let mut stem = file;
    for ext in [".onnx", ".tgz", ".tar.gz", ".tar", ".nnef"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    if stem.is_empty() { "model".to_string() } else { stem.to_string() }
}

/// Fetches, verifies and loads the model; the slow part of start-up.
pub async fn load_model(config: &ServeConfig) -> Result<Model, ServeError> {
    let artifact = store::fetch(&config.model_location, config.sha256.as_deref()).await?;
    tracing::info!(uri = %artifact.uri, sha256 = %artifact.sha256, bytes = artifact.bytes.len(), "artifact fetched");
    let options = EngineOptions { threads: config.threads };
    let location = config.model_location.clone();
    tokio::task::spawn_blocking(move || {
        let format = ModelFormat::detect(&artifact.file_name, &artifact.bytes);
        Model::load(&artifact.bytes, format, &options)
    })
    .await
    .map_err(|e| ServeError::LoadModel {
        location: location.clone(),
        source: crate::engine::EngineError::Prepare(e.to_string()),
    })?
    .map_err(|source| ServeError::LoadModel { location, source })
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests.
///
/// # Errors
/// A port that cannot be bound, or a model that cannot be fetched, verified
/// or loaded: the process should exit with the reason.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = AppState::new(&config);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(addr = %local, model = %config.name, version = %config.version, "listening");
    let server =
        axum::serve(listener, app(state.clone())).with_graceful_shutdown(shutdown).into_future();
    tokio::pin!(server);
    let started = Instant::now();
    let loading = load_model(&config);
    tokio::select! {
        loaded = loading => {
            let model = loaded?;
            state.metrics().model_load_seconds.set(started.elapsed().as_secs_f64());
            state.install(model)?;
        }
        served = &mut server => {
            // Shut down before the model finished loading.
            return served.map_err(ServeError::Http);
        }
    }
    server.await.map_err(ServeError::Http)?;
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
    tracing::info!("shutdown signal received; draining in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_come_from_file_stems() {
        assert_eq!(default_model_name("/a/b/digits-mlp-v1.onnx"), "digits-mlp-v1");
        assert_eq!(default_model_name("s3://bucket/m.nnef.tgz"), "m");
        assert_eq!(default_model_name("https://h/x/model"), "model");
        assert_eq!(default_model_name(".onnx"), "model");
    }
}
