//! The one inference path every protocol takes: the timeout and the
//! request metrics ([`counted`]), the body read under its limit before any
//! slot is taken ([`read_body`]), the in-flight limit ([`take_slot`]),
//! decoding and processing off the async threads ([`prepare`]), and the
//! scheduler ([`run_rows`]); and the V2 infer handler on top of it.
//!
//! # Invariants
//! - A request holds an in-flight slot only once its whole body is in
//!   memory: a slow sender holds a connection, never a slot.
//! - Work that grows with the body (inflating, parsing, processing,
//!   encoding) runs on the blocking pool, at most one per core at once, so
//!   the async threads always answer `/v2/health/*` and `/metrics`; bodies
//!   and answers under [`INLINE_MAX_BYTES`] are handled in place, where a
//!   hop to the pool would cost more than the work.

use std::future::Future;
use std::io::Read;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::batcher::BatchError;
use super::error::ApiError;
use super::metrics::Outcome;
use super::output_limits::OutputLimits;
use super::state::{AppState, Loaded, ModelPath};
use super::v2;
use crate::auth::Caller;
use crate::contract::v2::HEADER_LENGTH;
use crate::engine::{EngineError, Tensor};
use crate::process::{Cancel, ProcessError, json_values_upper_bound};

/// Bodies (and answers) up to this size are decoded (encoded) on the async
/// thread: a few tens of microseconds of parsing, less than the hop to the
/// blocking pool costs. Larger ones go to the pool.
pub(super) const INLINE_MAX_BYTES: usize = 16 << 10;

/// Runs `work` (not started yet: futures are lazy) under the timeout, and
/// counts it under `protocol`.
pub(super) async fn counted(
    state: &AppState,
    protocol: &'static str,
    name: &str,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    let started = Instant::now();
    let metrics = &state.inner.metrics;
    let timeout = state.inner.request_timeout;
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Timeout(timeout)),
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

/// One slot of `--max-inflight`, held from the end of the body read to the
/// answer.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    _gauge: GaugeGuard,
}

/// Takes an in-flight slot, or refuses at once (503 with `Retry-After`).
///
/// # Errors
/// [`ApiError::Overloaded`] when every slot is taken.
pub(super) fn take_slot(state: &AppState) -> Result<Slot, ApiError> {
    let permit =
        state.inner.inflight.clone().try_acquire_owned().map_err(|_| ApiError::Overloaded)?;
    // A guard, so that a client hanging up (which drops the future holding
    // it) still decrements the gauge.
    Ok(Slot { _permit: permit, _gauge: GaugeGuard::inc(&state.inner.metrics.inflight) })
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

/// How a request body is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Identity,
    Gzip,
    /// HTTP's `deflate` is the zlib format (RFC 9110 8.4.1.2).
    Deflate,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(Encoding::Identity);
        };
        let text = value.to_str().unwrap_or_default().trim().to_ascii_lowercase();
        match text.as_str() {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            _ => {
                Err(ApiError::UnsupportedEncoding(String::from_utf8_lossy(value.as_bytes()).into()))
            }
        }
    }
}

/// A body as it arrived, still compressed if it was.
pub(super) struct RawBody {
    bytes: Bytes,
    encoding: Encoding,
}

impl RawBody {
    /// The decompressed body, under `limit` bytes: inflating stops one byte
    /// past the limit, so a small compressed body cannot cost more than
    /// the limit (and the buffer's growth, at most as much again).
    ///
    /// # Errors
    /// A body that inflates past the limit (413) or is not valid gzip or
    /// zlib data (400).
    pub(super) fn inflate(self, limit: usize) -> Result<Bytes, ApiError> {
        fn read_all(reader: impl Read, limit: usize, name: &str) -> Result<Bytes, ApiError> {
            let mut out = Vec::new();
            let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
            reader.take(cap).read_to_end(&mut out).map_err(|e| {
                ApiError::BadRequest(format!(
                    "cannot read the request body: cannot decompress {name}: {e}"
                ))
            })?;
            if out.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            Ok(Bytes::from(out))
        }
        match self.encoding {
            Encoding::Identity => Ok(self.bytes),
            Encoding::Gzip => {
                read_all(flate2::read::MultiGzDecoder::new(&self.bytes[..]), limit, "gzip")
            }
            Encoding::Deflate => {
                read_all(flate2::read::ZlibDecoder::new(&self.bytes[..]), limit, "deflate")
            }
        }
    }

    /// Whether decoding it is cheap enough for the async thread.
    pub(super) fn is_small(&self) -> bool {
        self.encoding == Encoding::Identity && self.bytes.len() <= INLINE_MAX_BYTES
    }
}

/// Reads a whole body under `--max-body-bytes`; compressed bodies are
/// inflated later, off the async threads, under the same limit.
///
/// # Errors
/// An unsupported `Content-Encoding` (415, before reading), a body over
/// the limit (413), a body that cannot be read (400).
pub(super) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<RawBody, ApiError> {
    let encoding = Encoding::of(headers)?;
    let limit = state.inner.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    Ok(RawBody { bytes, encoding })
}

/// A processing error as the client sees it: its own mistakes are 400s
/// with the reason, the server's are logged 500s.
pub(super) fn process_error(e: ProcessError) -> ApiError {
    match e {
        ProcessError::Cancelled => ApiError::Cancelled,
        e if e.is_client_error() => ApiError::BadRequest(e.to_string()),
        e => ApiError::Internal(e.to_string()),
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
    let metrics = &state.inner.metrics;
    let completed = loaded.scheduler.submit(inputs, rows).await.map_err(|e| match e {
        BatchError::Closed => ApiError::NotReady,
        BatchError::Engine(EngineError::Refused(failure)) => {
            if failure.is_panic() {
                metrics.engine_panics.inc();
                tracing::warn!(%failure, "the engine panicked on a request's values");
            }
            ApiError::BadRequest(EngineError::Refused(failure).to_string())
        }
        // A shape over --max-sequence, or one no plan can be built for.
        BatchError::Engine(e) if e.is_input_error() => ApiError::BadRequest(e.to_string()),
        BatchError::Engine(e @ EngineError::Panicked(_)) => {
            metrics.engine_panics.inc();
            ApiError::Internal(e.to_string())
        }
        other => ApiError::Internal(other.to_string()),
    })?;
    metrics.queue_seconds.observe(completed.queued.as_secs_f64());
    metrics.compute_seconds.observe(completed.compute.as_secs_f64());
    Ok(completed.outputs)
}

/// Sets its [`Cancel`] when dropped: when the request's future is dropped
/// (its timeout passed, its client left), the work it started on the
/// blocking pool learns it at its next check.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs CPU-bound request work (inflating, parsing, processing, encoding)
/// on the blocking pool, at most one per core at once (decoded images and
/// parsed bodies are what takes memory). `work` gets the loaded model and
/// a [`Cancel`] to check between instances.
///
/// # Errors
/// What `work` returns; a panic in it is an internal error, not a crash.
pub(super) async fn prepare<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Loaded, &Cancel) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit =
        state.inner.preparing.clone().acquire_owned().await.map_err(|_| ApiError::NotReady)?;
    let cancel = CancelOnDrop(Cancel::default());
    let flag = cancel.0.clone();
    let state = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let loaded = state.loaded()?;
        work(loaded, &flag)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("request processing panicked: {e}")));
    drop(cancel);
    result?
}

/// Runs `work` in place when `small`, else through [`prepare`].
async fn decode_where_cheap<T: Send + 'static>(
    state: &AppState,
    small: bool,
    work: impl FnOnce(&Loaded, &Cancel) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if small { work(state.loaded()?, &Cancel::default()) } else { prepare(state, work).await }
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
pub(super) async fn infer(
    State(state): State<AppState>,
    Path(at): Path<ModelPath>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limits = state.inner.output_limits.for_request(caller.as_deref(), &headers);
    infer_as(&state, &at, &headers, body, limits, "v2").await
}

/// A V2 infer request (JSON, or with the binary extension) counted under
/// `protocol`, answered under `limits` (`None`: whole answers): the entry
/// the gRPC service translates its requests into.
pub(super) async fn infer_as(
    state: &AppState,
    at: &ModelPath,
    headers: &HeaderMap,
    body: Body,
    limits: Option<OutputLimits>,
    protocol: &'static str,
) -> Response {
    counted(state, protocol, &at.name, infer_one(state, at, headers, body, limits)).await
}

/// A V2 request once decoded.
enum V2Work {
    Tensors(v2::DecodedRequest),
    Processed { header: v2::ProcessedHeader, inputs: Vec<Tensor>, rows: usize },
}

async fn infer_one(
    state: &AppState,
    at: &ModelPath,
    headers: &HeaderMap,
    body: Body,
    output_limits: Option<OutputLimits>,
) -> Result<Response, ApiError> {
    let loaded = state.serving(at)?;
    let header_length = headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::BadRequest(format!("{HEADER_LENGTH} is not text")))
        })
        .transpose()?;
    let raw = read_body(state, headers, body).await?;
    let _slot = take_slot(state)?;
    let limits = state.decode_limits(loaded);
    let max_body = state.inner.max_body_bytes;
    let small = raw.is_small();
    let work = decode_where_cheap(state, small, move |loaded, cancel| {
        let body = raw.inflate(max_body)?;
        let (json, binary) = v2::split_body(&body, header_length.as_deref())?;
        // A byte search first, so plain V2 traffic does not pay for a
        // second parse of the JSON.
        if v2::mentions_processing(json) && v2::wants_processing(json)? {
            return decode_processed(loaded, json, binary, &limits, cancel);
        }
        let model = &loaded.model;
        let request = v2::decode_request(
            json,
            binary,
            model.inputs(),
            model.outputs(),
            model.is_batchable(),
            &limits,
        )?;
        Ok(V2Work::Tensors(request))
    })
    .await?;
    match work {
        V2Work::Tensors(request) => answer_tensors(state, loaded, request, output_limits).await,
        V2Work::Processed { header, inputs, rows } => {
            let outputs = run_rows(state, loaded, inputs, rows).await?;
            let mut answers =
                loaded.processor.answers_by_output(&outputs, rows).map_err(process_error)?;
            if let Some(limits) = output_limits {
                limits.limit_columns(&mut answers);
            }
            let body = v2::encode_processed(
                &state.inner.name,
                &state.inner.version,
                &header,
                &answers,
                rows,
            )
            .map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut response = Response::new(Body::from(body));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
    }
}

/// Runs a decoded tensor request and encodes its answer (off the async
/// thread when the outputs are large).
async fn answer_tensors(
    state: &AppState,
    loaded: &Loaded,
    mut request: v2::DecodedRequest,
    limits: Option<OutputLimits>,
) -> Result<Response, ApiError> {
    // The tensors go to the engine; the rest of the request shapes the answer.
    let inputs = std::mem::take(&mut request.inputs);
    let mut outputs = run_rows(state, loaded, inputs, request.rows).await?;
    if let Some(limits) = &limits {
        outputs.iter_mut().for_each(|t| limits.round_tensor(t));
    }
    let output_bytes: usize = outputs
        .iter()
        .map(|t| t.data.len().saturating_mul(t.datatype().size_of()))
        .fold(0, usize::saturating_add);
    let (name, version) = (state.inner.name.clone(), state.inner.version.clone());
    let encoded = decode_where_cheap(state, output_bytes <= INLINE_MAX_BYTES, move |loaded, _| {
        v2::encode_response(
            &name,
            &version,
            &request,
            loaded.model.outputs(),
            &outputs,
            limits.as_ref(),
        )
        .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await?;
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
fn decode_processed(
    loaded: &Loaded,
    json: &[u8],
    binary: &[u8],
    limits: &v2::DecodeLimits,
    cancel: &Cancel,
) -> Result<V2Work, ApiError> {
    if !loaded.processing_configured {
        return Err(ApiError::BadRequest(
            "\"processing\" was asked for, but this server has no processing spec \
             (tractor serve --processing FILE)"
                .into(),
        ));
    }
    if !binary.is_empty() {
        return Err(ApiError::BadRequest(
            "processed requests carry their data in JSON (base64 for images), not binary".into(),
        ));
    }
    check_json_values(loaded, json, limits)?;
    let request = v2::decode_processed(json)?;
    let processor = &loaded.processor;
    let columns = v2::processed_columns(&request, processor)?;
    let rows = columns.first().map_or(0, Vec::len);
    check_rows(rows, limits)?;
    let (inputs, rows) = processor.build_inputs_until(&columns, cancel).map_err(process_error)?;
    Ok(V2Work::Processed { header: v2::ProcessedHeader::from(request), inputs, rows })
}

/// Refuses a JSON body holding more values than any well-formed request
/// for this model can (rows times [`crate::process::Processor::json_values_per_instance`],
/// or the request's element limit where sizes vary), before it is parsed
/// into a `Value` tree.
///
/// # Errors
/// A 400 saying how many values were found and how many are accepted.
pub(super) fn check_json_values(
    loaded: &Loaded,
    json: &[u8],
    limits: &v2::DecodeLimits,
) -> Result<(), ApiError> {
    /// The request's envelope: `instances`, `parameters`, `id`.
    const ENVELOPE: usize = 64;
    let per_instance = loaded.processor.json_values_per_instance();
    let bound = match (per_instance, limits.max_rows) {
        (Some(each), Some(rows)) => each.saturating_mul(rows).saturating_add(ENVELOPE),
        _ => limits.max_elements.saturating_add(ENVELOPE),
    };
    let found = json_values_upper_bound(json);
    if found > bound {
        return Err(ApiError::BadRequest(format!(
            "the request holds up to {found} JSON values; a request to this model holds at most \
             {bound} (its batch limit times what one instance takes, or --max-request-elements)"
        )));
    }
    Ok(())
}

/// Refuses more instances than a batch takes, before any is processed.
///
/// # Errors
/// A 400 naming both counts.
pub(super) fn check_rows(rows: usize, limits: &v2::DecodeLimits) -> Result<(), ApiError> {
    match limits.max_rows {
        Some(max) if rows > max => Err(ApiError::BadRequest(format!(
            "{rows} instances exceed the server's maximum batch size {max}"
        ))),
        _ => Ok(()),
    }
}

/// A client's mistake found while preparing inputs, as processing reports it.
pub(super) fn request_error(e: impl std::fmt::Display) -> ProcessError {
    ProcessError::Request(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::ServeConfig;

    fn state(max_inflight: usize) -> AppState {
        AppState::new(&ServeConfig {
            model_location: "m.onnx".into(),
            name: "m".into(),
            version: "1".into(),
            sha256: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            max_batch_size: 1,
            max_batch_delay: std::time::Duration::ZERO,
            max_inflight,
            max_body_bytes: 1 << 10,
            request_timeout: std::time::Duration::from_secs(1),
            threads: crate::engine::Threads::Count(1),
            workers: 1,
            processing: None,
            max_request_elements: None,
            max_tensor_bytes: None,
            plans: Default::default(),
            output_limits: Default::default(),
            termination_log: None,
            auth: Default::default(),
            sources: Default::default(),
            decryption_identity: None,
        })
    }

    #[test]
    fn a_second_slot_is_refused_with_retry_after() {
        let state = state(1);
        let first = take_slot(&state).unwrap();
        let refused = take_slot(&state).err().unwrap();
        assert!(matches!(refused, ApiError::Overloaded));
        assert_eq!(refused.into_response().headers()["retry-after"], "1");
        assert_eq!(state.inner.metrics.inflight.get(), 1);
        drop(first);
        assert_eq!(state.inner.metrics.inflight.get(), 0);
        assert!(take_slot(&state).is_ok());
    }

    #[test]
    fn inflating_stops_one_byte_past_the_limit() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b'0'; 1 << 20]).unwrap();
        let bomb = RawBody { bytes: Bytes::from(gz.finish().unwrap()), encoding: Encoding::Gzip };
        assert!(matches!(bomb.inflate(1000), Err(ApiError::PayloadTooLarge(1000))));
        let plain = RawBody { bytes: Bytes::from_static(b"{}"), encoding: Encoding::Identity };
        assert!(plain.is_small());
        assert_eq!(&plain.inflate(10).unwrap()[..], b"{}");
    }
}
