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
pub mod metrics;
pub mod v1;
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
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

pub use batcher::BatchPolicy;
use batcher::{BatchError, Scheduler};
pub use error::ApiError;
use metrics::{Metrics, Outcome};

use crate::crd::ProcessingSpec;
use crate::engine::{EngineOptions, Model, ModelFormat, Tensor, TensorSpec, Threads};
use crate::process::{ProcessError, ProcessingConfig, Processor};
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
    /// Input and output processing, checked against the model once loaded.
    pub processing: Option<ProcessingConfig>,
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
    /// The processing spec does not fit the model; the message names the field.
    #[error(transparent)]
    Processing(#[from] ProcessError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// The model once loaded, with its scheduler and processing.
pub struct Loaded {
    pub model: Arc<Model>,
    scheduler: Scheduler,
    /// The configured processing, or pass-through tensors and raw rows
    /// (what V1 requests get without a spec).
    processor: Processor,
    /// Whether a spec was configured (V2 `"processing": true` needs one).
    processing_configured: bool,
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
    /// Input processing running at once. Each decoded image may hold up to
    /// 4096 x 4096 x 3 bytes (48 MiB), so the in-flight limit alone (256)
    /// would let a burst of large images take gigabytes; one per core keeps
    /// the cores busy and the memory bounded.
    preparing: Arc<Semaphore>,
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
                preparing: Arc::new(Semaphore::new(
                    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                )),
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
        self.install_processed(model, None)
    }

    /// As [`AppState::install`], with input and output processing checked
    /// against the model first.
    ///
    /// # Errors
    /// A spec that does not fit the model (the message names the field),
    /// or the operating system refusing to start the worker threads.
    pub fn install_processed(
        &self,
        model: Model,
        processing: Option<&ProcessingConfig>,
    ) -> Result<(), ServeError> {
        if self.inner.loaded.get().is_some() {
            return Ok(());
        }
        let processor = match processing {
            Some(config) => config.processor(model.inputs(), model.outputs())?,
            None => {
                Processor::new(&ProcessingSpec::default(), model.inputs(), model.outputs(), None)?
            }
        };
        let processing_configured = processing.is_some();
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
            batch_one_plan = model.has_single_plan(),
            slots = scheduler.policy().slots,
            processing = ?processor.input_steps().map(|(n, s)| (n, s.name())).collect::<Vec<_>>(),
            "model ready"
        );
        let loaded = Loaded { model, scheduler, processor, processing_configured };
        if self.inner.loaded.set(loaded).is_ok() {
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
        // KServe V1: `{name}:predict` is one path segment, split by the handler.
        .route("/v1/models/{target}", get(v1_model_ready).post(v1_predict))
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
        "extensions": ["binary_tensor_data", "model_configuration", "processing"],
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

/// Wraps one V2 inference in the in-flight limit, the timeout and the metrics.
async fn infer_counted(
    state: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let work = infer_one(&state, &name, version.as_deref(), &headers, body);
    counted(&state, "v2", &name, work).await
}

/// Runs `work` (not started yet: futures are lazy) under the in-flight
/// limit and the timeout, and counts it under `protocol`.
async fn counted(
    state: &AppState,
    protocol: &'static str,
    name: &str,
    work: impl Future<Output = Result<Response, ApiError>>,
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
    metrics.count_request(protocol, outcome);
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
    let body = read_body(state, body).await?;
    let header_length = headers
        .get(v2::HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest(format!("{} is not text", v2::HEADER_LENGTH)))
        })
        .transpose()?;
    let (json_part, binary_part) =
        v2::split_body(&body, header_length).map_err(ApiError::BadRequest)?;
    // A byte search first, so plain V2 traffic does not pay for a second
    // parse of the JSON.
    if v2::mentions_processing(json_part) && v2::wants_processing(json_part)? {
        if !loaded.processing_configured {
            return Err(ApiError::BadRequest(
                "\"processing\" was asked for, but this server has no processing spec \
                 (tractor serve --processing FILE)"
                    .into(),
            ));
        }
        if !binary_part.is_empty() {
            return Err(ApiError::BadRequest(
                "processed requests carry their data in JSON (base64 for images), not binary"
                    .into(),
            ));
        }
        let range = 0..json_part.len();
        return v2_processed(state, loaded, body.slice(range)).await;
    }
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

/// Reads a whole body under `--max-body-bytes` (applied after decompression).
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.inner.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })
}

/// A processing error as the client sees it: its own mistakes are 400s
/// with the reason, the server's are logged 500s.
fn process_error(e: ProcessError) -> ApiError {
    if e.is_client_error() {
        ApiError::BadRequest(e.to_string())
    } else {
        ApiError::Internal(e.to_string())
    }
}

/// Runs prepared inputs through the scheduler, as V2 requests are: the
/// same batches, the same limit on rows, the same metrics.
async fn run_rows(
    state: &AppState,
    loaded: &Loaded,
    inputs: Vec<Tensor>,
    rows: usize,
) -> Result<Vec<Tensor>, ApiError> {
    let policy = loaded.scheduler.policy();
    if policy.batching() && rows > policy.max_batch_rows {
        return Err(ApiError::BadRequest(format!(
            "{rows} instances exceed the server's maximum batch size {}",
            policy.max_batch_rows
        )));
    }
    let completed = loaded.scheduler.submit(inputs, rows).await.map_err(|e| match e {
        BatchError::Closed => ApiError::NotReady,
        other => ApiError::Internal(other.to_string()),
    })?;
    let metrics = &state.inner.metrics;
    metrics.queue_seconds.observe(completed.queued.as_secs_f64());
    metrics.compute_seconds.observe(completed.compute.as_secs_f64());
    Ok(completed.outputs)
}

/// Builds the inputs off the async threads: decoding a large image takes
/// milliseconds that would otherwise stall every other connection.
async fn prepare<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Processor) -> Result<T, ProcessError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit =
        state.inner.preparing.clone().acquire_owned().await.map_err(|_| ApiError::NotReady)?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let loaded = state.loaded()?;
        work(&loaded.processor).map_err(process_error)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("input processing panicked: {e}")))?
}

async fn v1_model_ready(
    State(state): State<AppState>,
    Path(target): Path<String>,
) -> Result<Response, ApiError> {
    readiness(&state, &target, None)
}

async fn v1_predict(
    State(state): State<AppState>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(name) = target.strip_suffix(":predict") else {
        return ApiError::NotFound(format!(
            "no such endpoint; V1 inference is POST /v1/models/{target}:predict"
        ))
        .into_response();
    };
    let work = v1_predict_one(&state, name, &headers, body);
    counted(&state, "v1", name, work).await
}

/// KServe V1: `{"instances": [...]}` in, `{"predictions": [...]}` out, one
/// prediction per instance; or one image as the raw body (`Content-Type:
/// image/png`, `image/jpeg` or `application/octet-stream`) for a model with
/// one image input; or `multipart/form-data`, one part per instance and
/// input (see [`multipart_columns`]).
async fn v1_predict_one(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.check_model(name, None)?;
    let loaded = state.loaded()?;
    let body = read_body(state, body).await?;
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let raw =
        content_type.starts_with("image/") || content_type.starts_with("application/octet-stream");
    let boundary = v1::multipart_boundary(content_type).map(str::to_string);
    if raw && loaded.processor.single_image_input().is_none() {
        return Err(ApiError::BadRequest(
            "a raw request body is taken as one image, and this model does not have exactly one \
             image input; send JSON {\"instances\": [...]}"
                .into(),
        ));
    }
    let (inputs, rows) = prepare(state, move |processor| {
        if raw {
            return processor.build_inputs(&[vec![crate::process::InputValue::Bytes(&body)]]);
        }
        if let Some(boundary) = boundary {
            let parts = v1::multipart_parts(&boundary, &body).map_err(ProcessError::Request)?;
            return multipart_columns(processor, &parts);
        }
        let request = v1::decode_request(&body).map_err(ProcessError::Request)?;
        let columns = processor.split_instances(&request.instances)?;
        processor.build_inputs(&columns)
    })
    .await?;
    let outputs = run_rows(state, loaded, inputs, rows).await?;
    let predictions = loaded.processor.answers(&outputs, rows).map_err(process_error)?;
    Ok(axum::Json(json!({ "predictions": predictions })).into_response())
}

/// Inputs from `multipart/form-data` parts: each part is one instance of the
/// input its name gives (any name when the model has one input); image
/// parts are the file's bytes, others JSON text.
fn multipart_columns(
    processor: &Processor,
    parts: &[v1::Part<'_>],
) -> Result<(Vec<Tensor>, usize), ProcessError> {
    use crate::process::{InputStep, InputValue};
    let inputs: Vec<(&str, bool)> =
        processor.input_steps().map(|(n, s)| (n, matches!(s, InputStep::Image(_)))).collect();
    if parts.is_empty() {
        return Err(ProcessError::Request("the multipart body has no parts".into()));
    }
    let mut parsed: Vec<(usize, Option<Value>, &[u8])> = Vec::with_capacity(parts.len());
    for part in parts {
        let index = if inputs.len() == 1 {
            0
        } else {
            inputs.iter().position(|(n, _)| *n == part.name).ok_or_else(|| {
                ProcessError::Request(format!(
                    "multipart part {:?} names no input of the model",
                    part.name
                ))
            })?
        };
        let json = if inputs[index].1 {
            None
        } else {
            Some(serde_json::from_slice(part.body).map_err(|e| ProcessError::Input {
                input: inputs[index].0.to_string(),
                reason: format!("multipart part {:?} is not JSON: {e}", part.name),
            })?)
        };
        parsed.push((index, json, part.body));
    }
    let mut columns: Vec<Vec<InputValue<'_>>> = vec![Vec::new(); inputs.len()];
    for (index, json, bytes) in &parsed {
        columns[*index].push(match json {
            Some(value) => InputValue::Json(value),
            None => InputValue::Bytes(bytes),
        });
    }
    processor.build_inputs(&columns)
}

/// V2 with `"parameters": {"processing": true}`: each input's `data` holds
/// one application-level value per instance (a base64 image, an object of
/// features, a tensor row), and each processed output comes back as
/// `BYTES` whose `data` holds one JSON answer per instance.
async fn v2_processed(
    state: &AppState,
    loaded: &Loaded,
    json_part: Bytes,
) -> Result<Response, ApiError> {
    let (request, inputs, rows) = prepare(state, move |processor| {
        let request = v2::decode_processed(&json_part).map_err(ProcessError::Request)?;
        let columns = request.columns(processor).map_err(ProcessError::Request)?;
        let (inputs, rows) = processor.build_inputs(&columns)?;
        Ok((request.header(), inputs, rows))
    })
    .await?;
    let outputs = run_rows(state, loaded, inputs, rows).await?;
    let answers = loaded.processor.answers_by_output(&outputs, rows).map_err(process_error)?;
    let body =
        v2::encode_processed(&state.inner.name, &state.inner.version, &request, answers, rows);
    Ok(axum::Json(body).into_response())
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
    let draining = async move {
        shutdown.await;
        tracing::info!("shutdown signal received; draining in-flight requests");
    };
    let server =
        axum::serve(listener, app(state.clone())).with_graceful_shutdown(draining).into_future();
    tokio::pin!(server);
    let started = Instant::now();
    let loading = load_model(&config);
    tokio::select! {
        loaded = loading => {
            let model = loaded?;
            state.metrics().model_load_seconds.set(started.elapsed().as_secs_f64());
            state.install_processed(model, config.processing.as_ref())?;
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
