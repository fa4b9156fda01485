//! What a client asks before inferring: health, server and model metadata,
//! and Triton's model configuration.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::state::{AppState, ModelPath};
use crate::engine::{Model, ModelFormat, TensorSpec};

pub(super) async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "tractor",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_configuration", "processing"],
    }))
    .into_response()
}

pub(super) async fn live(State(state): State<AppState>) -> Response {
    match state.liveness() {
        Ok(()) => axum::Json(json!({ "live": true })).into_response(),
        Err(cause) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "live": false, "error": cause.to_string() })),
        )
            .into_response(),
    }
}

pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "ready": ready }))).into_response()
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

pub(super) async fn model_metadata(
    State(state): State<AppState>,
    Path(at): Path<ModelPath>,
) -> Result<Response, ApiError> {
    let loaded = state.serving(&at)?;
    Ok(axum::Json(json!({
        "name": state.inner.name,
        "versions": [state.inner.version],
        "platform": platform(&loaded.model),
        "inputs": tensor_metadata(loaded.model.inputs()),
        "outputs": tensor_metadata(loaded.model.outputs()),
    }))
    .into_response())
}

pub(super) async fn model_ready(
    State(state): State<AppState>,
    Path(at): Path<ModelPath>,
) -> Result<Response, ApiError> {
    readiness(&state, &at.name, at.version.as_deref())
}

/// A model's readiness, for V2 and V1 alike.
pub(super) fn readiness(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Response, ApiError> {
    state.check_model(name, version)?;
    let ready = state.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, axum::Json(json!({ "name": name, "ready": ready }))).into_response())
}

/// Triton's model configuration, which `perf_analyzer` and Triton's clients
/// read to learn the batch limit. Shapes there leave the batch axis out when
/// `max_batch_size > 0`, as Triton does.
pub(super) async fn model_config(
    State(state): State<AppState>,
    Path(at): Path<ModelPath>,
) -> Result<Response, ApiError> {
    let loaded = state.serving(&at)?;
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

pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.inner.metrics.render(),
    )
        .into_response()
}
