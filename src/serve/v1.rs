//! The KServe V1 protocol: `POST /v1/models/{name}:predict` with
//! `{"instances": [...]}`, one raw image, or `multipart/form-data`; what
//! each instance holds is up to the processing (see `crate::process`).

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::infer::{
    check_json_values, check_rows, counted, prepare, process_error, read_body, request_error,
    run_rows, take_slot,
};
use super::metadata::readiness;
use super::output_limits::OutputLimits;
use super::state::AppState;
use crate::auth::Caller;
use crate::engine::Tensor;
use crate::process::{Cancel, InputStep, InputValue, ProcessError, Processor};

/// A V1 request the client got wrong; every variant answers 400 with its message.
#[derive(Debug, thiserror::Error)]
pub enum V1Error {
    #[error("malformed V1 request (expected {{\"instances\": [...]}}): {0}")]
    ParseRequest(#[source] serde_json::Error),
    #[error("malformed multipart body: {0}")]
    ReadMultipart(#[source] multer::Error),
    #[error("a multipart part has no Content-Disposition name")]
    NamePart,
}

#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    pub instances: Vec<Value>,
}

/// Parses a V1 predict body.
///
/// # Errors
/// Malformed JSON or no `instances` array.
pub fn decode_request(body: &[u8]) -> Result<PredictRequest, V1Error> {
    serde_json::from_slice(body).map_err(V1Error::ParseRequest)
}

/// One part of a `multipart/form-data` body: its form field name and bytes.
#[derive(Debug, PartialEq)]
pub struct Part {
    pub name: String,
    pub body: Bytes,
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// Splits a `multipart/form-data` body (RFC 7578) into its named parts,
/// as `curl -F image=@digit.png` sends them.
///
/// # Errors
/// A body that does not follow the format, or a part without a name.
pub async fn multipart_parts(boundary: &str, body: Bytes) -> Result<Vec<Part>, V1Error> {
    let whole = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(whole, boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(V1Error::ReadMultipart)? {
        let name = field.name().ok_or(V1Error::NamePart)?.to_string();
        let body = field.bytes().await.map_err(V1Error::ReadMultipart)?;
        parts.push(Part { name, body });
    }
    Ok(parts)
}

/// `GET /v1/models/{name}`.
pub(super) async fn model_ready(
    State(state): State<AppState>,
    Path(target): Path<String>,
) -> Result<Response, ApiError> {
    readiness(&state, &target, None)
}

/// `POST /v1/models/{name}:predict`; `{name}:predict` is one path segment.
pub(super) async fn predict(
    State(state): State<AppState>,
    Path(target): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limits = state.inner.output_limits.for_request(caller.as_deref(), &headers);
    let Some(name) = target.strip_suffix(":predict") else {
        return ApiError::NotFound(format!(
            "no such endpoint; V1 inference is POST /v1/models/{target}:predict"
        ))
        .into_response();
    };
    let work = predict_one(&state, name, &headers, body, limits);
    counted(&state, "v1", name, work).await
}

/// `{"instances": [...]}` in, `{"predictions": [...]}` out, one prediction
/// per instance; or one image as the raw body (`Content-Type: image/png`,
/// `image/jpeg` or `application/octet-stream`) for a model with one image
/// input; or `multipart/form-data`, one part per instance and input (see
/// [`multipart_columns`]).
async fn predict_one(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
    output_limits: Option<OutputLimits>,
) -> Result<Response, ApiError> {
    state.check_model(name, None)?;
    let loaded = state.loaded()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let raw =
        content_type.starts_with("image/") || content_type.starts_with("application/octet-stream");
    if raw && loaded.processor.single_image_input().is_none() {
        return Err(ApiError::BadRequest(
            "a raw request body is taken as one image, and this model does not have exactly one \
             image input; send JSON {\"instances\": [...]}"
                .into(),
        ));
    }
    let body = read_body(state, headers, body).await?;
    let _slot = take_slot(state)?;
    let limits = state.decode_limits(loaded);
    let max_body = state.inner.max_body_bytes;
    // Inflating, splitting, parsing and processing all run off the async
    // threads: images are what a V1 request mostly carries.
    let (inputs, rows) = prepare(state, move |loaded, cancel| {
        let body = body.inflate(max_body)?;
        let processor = &loaded.processor;
        if raw {
            return processor
                .build_inputs_until(&[vec![InputValue::Bytes(&body)]], cancel)
                .map_err(process_error);
        }
        if let Some(boundary) = multipart_boundary(&content_type) {
            let parts = futures::executor::block_on(multipart_parts(&boundary, body))?;
            let instances = parts.len().div_ceil(processor.input_steps().count().max(1));
            check_rows(instances, &limits)?;
            return multipart_columns(processor, &parts, cancel).map_err(process_error);
        }
        check_json_values(loaded, &body, &limits)?;
        let request = decode_request(&body).map_err(request_error).map_err(process_error)?;
        check_rows(request.instances.len(), &limits)?;
        let columns = processor.split_instances(&request.instances).map_err(process_error)?;
        processor.build_inputs_until(&columns, cancel).map_err(process_error)
    })
    .await?;
    let outputs = run_rows(state, loaded, inputs, rows).await?;
    let mut columns = loaded.processor.answers_by_output(&outputs, rows).map_err(process_error)?;
    if let Some(limits) = output_limits {
        limits.limit_columns(&mut columns);
    }
    let predictions = crate::process::merge_columns(columns, rows);
    Ok(axum::Json(json!({ "predictions": predictions })).into_response())
}

/// Inputs from `multipart/form-data` parts: each part is one instance of the
/// input its name gives (any name when the model has one input); image
/// parts are the file's bytes, others JSON text.
fn multipart_columns(
    processor: &Processor,
    parts: &[Part],
    cancel: &Cancel,
) -> Result<(Vec<Tensor>, usize), ProcessError> {
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
            Some(serde_json::from_slice(&part.body).map_err(|e| ProcessError::Input {
                input: inputs[index].0.to_string(),
                reason: format!("multipart part {:?} is not JSON: {e}", part.name),
            })?)
        };
        parsed.push((index, json, &part.body));
    }
    cancel.check_now()?;
    let mut columns: Vec<Vec<InputValue<'_>>> = vec![Vec::new(); inputs.len()];
    for (index, json, bytes) in &parsed {
        columns[*index].push(match json {
            Some(value) => InputValue::Json(value),
            None => InputValue::Bytes(bytes),
        });
    }
    processor.build_inputs_until(&columns, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn multipart_bodies_split_into_named_parts() {
        let ct = "multipart/form-data; boundary=\"XyZ\"";
        let boundary = multipart_boundary(ct).unwrap();
        assert_eq!(boundary, "XyZ");
        assert_eq!(multipart_boundary("application/json"), None);
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
Content-Type: image/png\r\n\r\n\x89PNG\r\n--X\r\n--XyZ\r\ncontent-disposition: form-data; name=meta\r\n\r\n{}\r\n--XyZ--\r\n";
        let parts = multipart_parts(&boundary, Bytes::from_static(body)).await.unwrap();
        assert_eq!(
            parts,
            vec![
                Part { name: "image".into(), body: Bytes::from_static(b"\x89PNG\r\n--X") },
                Part { name: "meta".into(), body: Bytes::from_static(b"{}") },
            ]
        );
        for bad in [
            &b"--XyZ\r\nContent-Type: x\r\n\r\nabc\r\n--XyZ--"[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated",
        ] {
            assert!(multipart_parts(&boundary, Bytes::from_static(bad)).await.is_err());
        }
    }

    #[test]
    fn instances_are_required() {
        let ok = decode_request(br#"{"instances": [[1, 2], {"a": 1}]}"#).unwrap();
        assert_eq!(ok.instances.len(), 2);
        for bad in [&br#"{"inputs": []}"#[..], b"[1]", b"{", br#"{"instances": 3}"#] {
            let err = decode_request(bad).unwrap_err().to_string();
            assert!(err.contains("malformed V1 request"), "{err}");
        }
    }
}
