//! The one inference path every protocol takes: the in-flight limit, the
//! timeout and the request metrics ([`counted`]), the body limit, input
//! processing off the async threads ([`prepare`]), and the scheduler
//! ([`run_rows`]); and the V2 infer handler on top of it.

use std::future::Future;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::batcher::BatchError;
use super::error::ApiError;
use super::metrics::Outcome;
use super::state::{AppState, Loaded, ModelPath};
use super::v2;
use crate::contract::v2::HEADER_LENGTH;
use crate::engine::Tensor;
use crate::process::{ProcessError, Processor};

/// Runs `work` (not started yet: futures are lazy) under the in-flight
/// limit and the timeout, and counts it under `protocol`.
pub(super) async fn counted(
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

/// Reads a whole body under `--max-body-bytes` (applied after decompression).
pub(super) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
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
pub(super) fn process_error(e: ProcessError) -> ApiError {
    if e.is_client_error() {
        ApiError::BadRequest(e.to_string())
    } else {
        ApiError::Internal(e.to_string())
    }
}

/// Runs inputs of `rows` rows through the scheduler: the same batches, the
/// same limit on rows and the same metrics for every protocol.
pub(super) async fn run_rows(
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
pub(super) async fn prepare<T: Send + 'static>(
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

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
pub(super) async fn infer(
    State(state): State<AppState>,
    Path(at): Path<ModelPath>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let work = infer_one(&state, &at, &headers, body);
    counted(&state, "v2", &at.name, work).await
}

async fn infer_one(
    state: &AppState,
    at: &ModelPath,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let loaded = state.serving(at)?;
    let body = read_body(state, body).await?;
    let header_length = headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str().map_err(|_| ApiError::BadRequest(format!("{HEADER_LENGTH} is not text")))
        })
        .transpose()?;
    let (json_part, binary_part) = v2::split_body(&body, header_length)?;
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
        return infer_processed(state, loaded, body.slice(range)).await;
    }
    let model = &loaded.model;
    let policy = loaded.scheduler.policy();
    let max_rows = policy.batching().then_some(policy.max_batch_rows);
    let mut request = v2::decode_request(
        json_part,
        binary_part,
        model.inputs(),
        model.outputs(),
        model.is_batchable(),
        max_rows,
    )?;
    // The tensors go to the engine; the rest of the request shapes the answer.
    let inputs = std::mem::take(&mut request.inputs);
    let outputs = run_rows(state, loaded, inputs, request.rows).await?;
    let encoded = v2::encode_response(
        &state.inner.name,
        &state.inner.version,
        &request,
        model.outputs(),
        &outputs,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = Response::new(Body::from(encoded.body));
    let headers = response.headers_mut();
    match encoded.header_length {
        Some(len) => {
            headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(HEADER_LENGTH, HeaderValue::from(len));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(response)
}

/// V2 with `"parameters": {"processing": true}`: each input's `data` holds
/// one application-level value per instance (a base64 image, an object of
/// features, a tensor row), and each processed output comes back as
/// `BYTES` whose `data` holds one JSON answer per instance.
async fn infer_processed(
    state: &AppState,
    loaded: &Loaded,
    json_part: Bytes,
) -> Result<Response, ApiError> {
    let (request, inputs, rows) = prepare(state, move |processor| {
        let request = v2::decode_processed(&json_part).map_err(request_error)?;
        let columns = v2::processed_columns(&request, processor).map_err(request_error)?;
        let (inputs, rows) = processor.build_inputs(&columns)?;
        Ok((v2::ProcessedHeader::from(request), inputs, rows))
    })
    .await?;
    let outputs = run_rows(state, loaded, inputs, rows).await?;
    let answers = loaded.processor.answers_by_output(&outputs, rows).map_err(process_error)?;
    let body =
        v2::encode_processed(&state.inner.name, &state.inner.version, &request, &answers, rows)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// A client's mistake found while preparing inputs, as processing reports it.
pub(super) fn request_error(e: impl std::fmt::Display) -> ProcessError {
    ProcessError::Request(e.to_string())
}
