//! `tractor serve` as a hostile client and a hostile model see it: a seeded
//! mutation generator of V2 requests (JSON, the binary extension,
//! compression, headers) run in-process, models whose values break the
//! engine (an out-of-range `Gather`, data-dependent `Range` and `Tile`),
//! and a regression test for each serve defect of issue 11.
//!
//! What every case asserts: an answer (no panic), no 5xx other than 503
//! and 504, an `{"error": ...}` body on refusals, and a valid request still
//! answered 200 afterwards.

mod common;

#[path = "common/onnx_builder.rs"]
mod onnx_builder;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use common::{Answer, fixture, ready_state, send};
use onnx_builder::{D, FLOAT, INT64, f32_tensor, model, node, value_info};
use tractor::engine::{EngineOptions, Model, ModelFormat, Threads};
use tractor::serve::AppState;

async fn get(state: &AppState, uri: &str) -> Answer {
    send(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(state: &AppState, uri: &str, body: Value) -> Answer {
    send(state, Request::post(uri).body(Body::from(body.to_string())).unwrap()).await
}

fn mlp_state() -> AppState {
    ready_state(&fixture("mlp-batch.onnx"), "mlp", |_| {})
}

fn valid_request() -> Value {
    json!({ "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4] }] })
}

async fn assert_still_serves(state: &AppState, uri: &str, request: Value) {
    let answer = post(state, uri, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(get(state, "/v2/health/live").await.status, StatusCode::OK);
    assert_eq!(get(state, "/v2/health/ready").await.status, StatusCode::OK);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

// ---------------------------------------------------------------------------
// Regression tests for the serve bullets of issue 11.
// ---------------------------------------------------------------------------

/// Issue 11: `[1099511627776, 64]` with one data element aborted the process
/// (the decoder reserved 562949953421312 bytes from the shape).
#[tokio::test]
async fn a_shape_of_2_pow_40_rows_with_one_element_is_a_400() {
    // The issue's own request, to a 64-feature model with batching off.
    let digits = ready_state(&common::real_model("digits-mlp-v2.onnx"), "digits", |c| {
        c.max_batch_size = 1;
    });
    let request = json!({ "inputs": [{ "name": "input", "shape": [1099511627776u64, 64], "datatype": "FP32", "data": [1] }] });
    let answer = post(&digits, "/v2/models/digits/infer", request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("--max-request-elements"), "{}", answer.error());
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| c.max_batch_size = 1);
    for (shape, expected) in [
        (json!([1099511627776u64, 4]), "--max-request-elements"),
        (json!([4611686018427387904u64, 4]), "is too large"),
    ] {
        let request = json!({ "inputs": [{ "name": "input", "shape": shape, "datatype": "FP32", "data": [1] }] });
        let answer = post(&state, "/v2/models/mlp/infer", request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.error());
        assert!(answer.error().contains(expected), "{}", answer.error());
    }
    // Batching on: the batch limit refuses it first, before any data.
    let state = mlp_state();
    let request = json!({ "inputs": [{ "name": "input", "shape": [1099511627776u64, 4], "datatype": "FP32", "data": [1] }] });
    let answer = post(&state, "/v2/models/mlp/infer", request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("maximum batch size 16"), "{}", answer.error());
    // A product that overflows usize.
    let request = json!({ "inputs": [{ "name": "input", "shape": [u64::MAX / 2, 4], "datatype": "FP32", "data": [1] }] });
    let overflow = ready_state(&fixture("dtypes.onnx"), "d", |c| c.max_batch_size = 1);
    let _ = post(&overflow, "/v2/models/d/infer", request).await;
    assert_still_serves(&state, "/v2/models/mlp/infer", valid_request()).await;
}

#[tokio::test]
async fn the_element_limit_counts_every_input_and_binary_sizes_must_match_the_shape() {
    let state = ready_state(&fixture("two-in-two-out.onnx"), "pair", |c| {
        c.max_request_elements = Some(9);
    });
    let input = |name: &str, rows: usize| json!({ "name": name, "shape": [rows, 3], "datatype": "FP32", "data": vec![0.5; rows * 3] });
    let ok =
        post(&state, "/v2/models/pair/infer", json!({ "inputs": [input("a", 1), input("b", 1)] }))
            .await;
    assert_eq!(ok.status, StatusCode::OK);
    let over =
        post(&state, "/v2/models/pair/infer", json!({ "inputs": [input("a", 2), input("b", 2)] }))
            .await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert!(
        over.error().contains("12 elements") && over.error().contains("at most 9"),
        "{}",
        over.error()
    );

    let state = mlp_state();
    let header =
        json!({ "inputs": [{ "name": "input", "shape": [1099511627776u64, 4], "datatype": "FP32",
                                      "parameters": { "binary_data_size": 16 } }] })
        .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&[0u8; 16]);
    let request = Request::post("/v2/models/mlp/infer")
        .header("inference-header-content-length", header.len())
        .body(Body::from(body))
        .unwrap();
    let answer = send(&state, request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.error());
    let header = json!({ "inputs": [{ "name": "input", "shape": [2, 4], "datatype": "FP32",
                                      "parameters": { "binary_data_size": 16 } }] })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&[0u8; 16]);
    let request = Request::post("/v2/models/mlp/infer")
        .header("inference-header-content-length", header.len())
        .body(Body::from(body))
        .unwrap();
    let answer = send(&state, request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("needs 32"), "{}", answer.error());
}

/// Issue 11: parameters and ids are parsed into `Value` trees, so they are
/// bounded apart from tensors.
#[tokio::test]
async fn huge_parameters_are_refused_before_they_are_parsed() {
    let state = mlp_state();
    let mut request = valid_request();
    request["parameters"] = json!({ "x": vec![0; 40_000] });
    let answer = post(&state, "/v2/models/mlp/infer", request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("parameters is"), "{}", answer.error());
    let mut request = valid_request();
    request["parameters"] = json!({ "binary_data_output": false, "note": "small" });
    request["id"] = json!("req-1");
    let answer = post(&state, "/v2/models/mlp/infer", request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["id"], "req-1");
    assert_eq!(answer.json()["parameters"]["note"], "small");
}

/// Issue 11: a 60 KB gzip body inflating to 62 MB cost 1.45 GB. Inflating
/// now stops one byte past the limit, and a corrupt stream is a 400.
#[tokio::test]
async fn compressed_bodies_are_bounded_and_corrupt_ones_are_400() {
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| c.max_body_bytes = 100_000);
    let zeros = format!(
        "{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[{}0]}}]}}",
        "0,".repeat(2_000_000)
    );
    for (encoding, body) in
        [("gzip", gzip(zeros.as_bytes())), ("deflate", deflate(zeros.as_bytes()))]
    {
        assert!(body.len() < 100_000);
        let request = Request::post("/v2/models/mlp/infer")
            .header("content-encoding", encoding)
            .body(Body::from(body))
            .unwrap();
        assert_eq!(send(&state, request).await.status, StatusCode::PAYLOAD_TOO_LARGE, "{encoding}");
    }
    let mut corrupt = gzip(valid_request().to_string().as_bytes());
    let middle = corrupt.len() / 2;
    corrupt[middle..].iter_mut().for_each(|b| *b = !*b);
    let request = Request::post("/v2/models/mlp/infer")
        .header("content-encoding", "gzip")
        .body(Body::from(corrupt))
        .unwrap();
    let answer = send(&state, request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("cannot decompress"), "{}", answer.error());
    let request = Request::post("/v2/models/mlp/infer")
        .header("content-encoding", "br")
        .body(Body::from(valid_request().to_string()))
        .unwrap();
    assert_eq!(send(&state, request).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let request = Request::post("/v2/models/mlp/infer")
        .header("content-encoding", "deflate")
        .body(Body::from(deflate(valid_request().to_string().as_bytes())))
        .unwrap();
    assert_eq!(send(&state, request).await.status, StatusCode::OK);
}

/// A body whose first chunk arrives and then nothing more: it signals when
/// the server asks for the second chunk, i.e. is inside the body read.
fn stalling_body() -> (tokio::sync::oneshot::Receiver<()>, Body) {
    let (reading, read) = tokio::sync::oneshot::channel();
    let mut reading = Some(reading);
    let stream = futures::stream::unfold(0u32, move |polls| {
        let notify = if polls == 1 { reading.take() } else { None };
        async move {
            if let Some(tx) = notify {
                let _ = tx.send(());
                futures::future::pending::<()>().await;
            }
            Some((Ok::<_, std::io::Error>(Vec::from(&b"{\"inputs\":"[..])), polls + 1))
        }
    });
    (read, Body::from_stream(stream))
}

/// Issue 11: 256 slow-body clients took every in-flight slot. A request
/// takes its slot only once its body is read.
#[tokio::test]
async fn a_slow_body_holds_no_inflight_slot() {
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| {
        c.max_inflight = 1;
        c.request_timeout = Duration::from_secs(5);
    });
    let (reading, body) = stalling_body();
    let held = tokio::spawn({
        let state = state.clone();
        async move { send(&state, Request::post("/v2/models/mlp/infer").body(body).unwrap()).await }
    });
    reading.await.expect("the server reads the slow body");
    let answer = post(&state, "/v2/models/mlp/infer", valid_request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let timed_out = held.await.unwrap();
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
}

// ---------------------------------------------------------------------------
// Hostile models.
// ---------------------------------------------------------------------------

fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> tract_onnx::pb::TensorProto {
    tract_onnx::pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: INT64,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An embedding: `ids` INT64 [N, 4] gathers rows of a [10, 3] table.
fn embedding_model() -> Vec<u8> {
    model(
        "embedding",
        vec![value_info("ids", INT64, &[D::Named("N"), D::Fixed(4)])],
        vec![value_info("vectors", FLOAT, &[D::Named("N"), D::Fixed(4), D::Fixed(3)])],
        vec![node("Gather", &["table", "ids"], &["vectors"])],
        vec![f32_tensor("table", &[10, 3], (0..30).map(|x| x as f32).collect())],
    )
}

/// `Range(0, limit, 1)` with the limit from the request: the output size
/// is the request's value.
fn range_model() -> Vec<u8> {
    model(
        "range",
        vec![value_info("limit", INT64, &[])],
        vec![value_info("r", INT64, &[D::Named("len")])],
        vec![node("Range", &["start", "limit", "delta"], &["r"])],
        vec![i64_tensor("start", &[], &[0]), i64_tensor("delta", &[], &[1])],
    )
}

/// `Tile` of a [1, 4] constant, repeats from the request.
fn tile_model() -> Vec<u8> {
    model(
        "tile",
        vec![value_info("repeats", INT64, &[D::Fixed(2)])],
        vec![value_info("tiled", FLOAT, &[D::Named("a"), D::Named("b")])],
        vec![node("Tile", &["row", "repeats"], &["tiled"])],
        vec![f32_tensor("row", &[1, 4], vec![1.0, 2.0, 3.0, 4.0])],
    )
}

/// `Expand` of a scalar to a shape from the request's values.
fn expand_model() -> Vec<u8> {
    model(
        "expand",
        vec![value_info("shape", INT64, &[D::Fixed(2)])],
        vec![value_info("big", FLOAT, &[D::Named("a"), D::Named("b")])],
        vec![node("Expand", &["one", "shape"], &["big"])],
        vec![f32_tensor("one", &[1], vec![1.0])],
    )
}

/// `Expand` to a shape computed from the input's dimensions:
/// `[N, 4] * [1, 1024]`, so each row of the request costs 16 KiB.
fn expand_by_shape_model() -> Vec<u8> {
    model(
        "expand_by_shape",
        vec![value_info("x", FLOAT, &[D::Named("N"), D::Fixed(4)])],
        vec![value_info("big", FLOAT, &[D::Named("N"), D::Fixed(4096)])],
        vec![
            node("Shape", &["x"], &["dims"]),
            node("Mul", &["dims", "factor"], &["target"]),
            node("Expand", &["one", "target"], &["big"]),
        ],
        vec![f32_tensor("one", &[1], vec![1.0]), i64_tensor("factor", &[2], &[1, 1024])],
    )
}

fn write_model(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Issue 11: an out-of-range id killed the worker thread for good (503
/// forever while health said 200). Now a 400 naming the node, twice, and
/// the model still serves, in a batch too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_gather_index_is_a_400_and_the_worker_lives_on() {
    let (_dir, path) = write_model("embedding.onnx", &embedding_model());
    let state = ready_state(&path, "emb", |c| c.max_batch_delay = Duration::from_millis(20));
    let ids = |v: [i64; 4]| json!({ "inputs": [{ "name": "ids", "shape": [1, 4], "datatype": "INT64", "data": v }] });
    for bad in [[0, 1, 70_000, 2], [0, -11, 1, 2]] {
        let answer = post(&state, "/v2/models/emb/infer", ids(bad)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let error = answer.error();
        assert!(error.contains("Gather") && error.contains("out of range"), "{error}");
    }
    assert_still_serves(&state, "/v2/models/emb/infer", ids([0, 1, -1, 9])).await;
    // A bad request batched with good ones fails alone.
    let requests = (0..8).map(|i| {
        let state = state.clone();
        let v = if i == 3 { [0, 0, 99, 0] } else { [i, 1, 2, 3] };
        tokio::spawn(async move { post(&state, "/v2/models/emb/infer", ids(v)).await.status })
    });
    let statuses: Vec<StatusCode> =
        futures::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    let bad = statuses.iter().filter(|s| **s == StatusCode::BAD_REQUEST).count();
    let good = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!((bad, good), (1, 7), "{statuses:?}");
}

/// Issue 11: an `Expand` to a 16 TB shape from the input killed the
/// worker. Data-dependent sizes are refused before the node runs.
#[tokio::test]
async fn data_dependent_sizes_are_refused_before_they_are_allocated() {
    let (_range_dir, range) = write_model("range.onnx", &range_model());
    let state = ready_state(&range, "range", |c| c.max_tensor_bytes = Some(1 << 20));
    let limit = |n: i64| json!({ "inputs": [{ "name": "limit", "shape": [], "datatype": "INT64", "data": [n] }] });
    let answer = post(&state, "/v2/models/range/infer", limit(5)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["outputs"][0]["data"], json!([0, 1, 2, 3, 4]));
    for huge in [1 << 40, i64::MAX] {
        let answer = post(&state, "/v2/models/range/infer", limit(huge)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let error = answer.error();
        assert!(error.contains("Range"), "{error}");
        assert!(error.contains("limit of 1048576") || error.contains("cannot size"), "{error}");
    }
    assert_still_serves(&state, "/v2/models/range/infer", limit(3)).await;

    let (_expand_dir, expand) = write_model("expand.onnx", &expand_by_shape_model());
    let state = ready_state(&expand, "expand", |c| {
        c.max_tensor_bytes = Some(1 << 20);
        c.max_batch_size = 1024;
    });
    let rows = |n: usize| json!({ "inputs": [{ "name": "x", "shape": [n, 4], "datatype": "FP32", "data": vec![0.5; n * 4] }] });
    let answer = post(&state, "/v2/models/expand/infer", rows(1)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["outputs"][0]["shape"], json!([1, 4096]));
    let answer = post(&state, "/v2/models/expand/infer", rows(100)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&answer.body));
    assert!(answer.error().contains("[100, 4096]"), "{}", answer.error());
    assert_still_serves(&state, "/v2/models/expand/infer", rows(2)).await;
}

/// tract cannot type a `Tile` or an `Expand` to sizes only the request's
/// values give: such a model is refused at load with a reason (never a
/// panic), or, should a later tract type it, the guard refuses the sizes.
#[test]
fn shape_ops_fed_by_input_values_are_refused_at_load_or_guarded() {
    let options = EngineOptions { threads: Threads::Count(1) };
    for (name, bytes, input) in [
        ("expand", expand_model(), vec![1i64 << 22, 1 << 22]),
        ("tile", tile_model(), vec![1 << 22, 1 << 22]),
    ] {
        match Model::load(&bytes, ModelFormat::Onnx, &options) {
            Err(e) => assert!(e.to_string().contains("variable"), "{name}: {e}"),
            Ok(model) => {
                let model = model.with_max_tensor_bytes(1 << 20);
                let values =
                    tractor::engine::Tensor::new(vec![2], tractor::engine::TensorData::I64(input))
                        .unwrap();
                let err = model.run(&[values]).unwrap_err();
                assert!(err.is_input_error(), "{name}: {err}");
            }
        }
    }
}

/// Liveness turns false when the engine cannot recover, with the cause in
/// the termination message; readiness turns false with it.
#[tokio::test]
async fn a_failed_engine_fails_liveness_and_says_why() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| {
        c.termination_log = Some(log.path().to_path_buf());
    });
    assert_eq!(get(&state, "/v2/health/live").await.status, StatusCode::OK);
    state.fail_engine("every engine worker has stopped".into());
    let live = get(&state, "/v2/health/live").await;
    assert_eq!(live.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(live.json()["error"].as_str().unwrap().contains("every engine worker"));
    assert_eq!(get(&state, "/v2/health/ready").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let message = std::fs::read_to_string(log.path()).unwrap();
    assert!(message.contains("cannot recover: every engine worker has stopped"), "{message}");
    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    assert!(metrics.contains("tractor_engine_failed{model=\"mlp\",version=\"7\"} 1"), "{metrics}");
}

// ---------------------------------------------------------------------------
// The mutation generator.
// ---------------------------------------------------------------------------

/// Values a hostile client puts where a size or a number belongs.
fn hostile_number(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..14) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1u64 << 40),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1e308),
        6 => json!(-0.0),
        7 => json!("4"),
        8 => json!(null),
        9 => json!([1, [2]]),
        10 => json!({ "a": 1 }),
        11 => json!(true),
        12 => json!(rng.u32(0..100)),
        _ => json!(4611686018427387904u64),
    }
}

fn hostile_value(rng: &mut fastrand::Rng, depth: usize) -> Value {
    match rng.u8(0..8) {
        0 if depth < 4 => {
            Value::Array((0..rng.usize(0..4)).map(|_| hostile_value(rng, depth + 1)).collect())
        }
        1 if depth < 4 => json!({ "binary_data_size": hostile_value(rng, depth + 1) }),
        2 => json!("FP32"),
        3 => json!("x".repeat(rng.usize(0..100))),
        _ => hostile_number(rng),
    }
}

/// Mutates one field of a valid request.
fn mutate_json(rng: &mut fastrand::Rng, mut request: Value) -> Value {
    let input = &mut request["inputs"][0];
    match rng.u8(0..20) {
        0 => input["shape"][0] = hostile_number(rng),
        1 => input["shape"][1] = hostile_number(rng),
        2 => input["shape"] = json!([1099511627776u64, 64]),
        3 => {
            input["shape"] =
                Value::Array((0..rng.usize(0..9)).map(|_| hostile_number(rng)).collect())
        }
        4 => {
            input["datatype"] = json!(
                ["BOOL", "UINT8", "INT64", "FP16", "FP64", "BYTES", "UINT16", "", "fp32"]
                    [rng.usize(0..9)]
            )
        }
        5 => input["data"] = hostile_value(rng, 0),
        6 => input["data"] = json!(vec![0.5; rng.usize(0..40)]),
        7 => input["data"][rng.usize(0..4)] = hostile_value(rng, 0),
        8 => input["parameters"] = json!({ "binary_data_size": hostile_number(rng) }),
        9 => input["name"] = json!(["", "output", "input ", "INPUT"][rng.usize(0..4)]),
        10 => {
            request["inputs"] = json!([request["inputs"][0].clone(), request["inputs"][0].clone()])
        }
        11 => request["inputs"] = hostile_value(rng, 0),
        12 => {
            request["outputs"] = json!([{ "name": "output", "parameters": { "binary_data": hostile_value(rng, 0) } }])
        }
        13 => request["outputs"] = json!([{ "name": "output" }, { "name": "output" }]),
        14 => {
            request["parameters"] = json!({ "binary_data_output": hostile_value(rng, 0), "processing": hostile_value(rng, 0) })
        }
        15 => request["id"] = hostile_value(rng, 0),
        16 => input["data"] = json!(vec![vec![1.0; 4]; rng.usize(1..40)]),
        17 => {
            let rows = rng.usize(1..40);
            input["shape"] = json!([rows, 4]);
            input["data"] = json!(vec![0.25; rows * 4]);
        }
        18 => input
            .as_object_mut()
            .unwrap()
            .remove(["name", "shape", "datatype", "data"][rng.usize(0..4)])
            .map_or((), |_| ()),
        _ => {
            request = json!({ "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "FP32",
                                            "data": deep(rng.usize(60..200)) }] })
        }
    }
    request
}

fn deep(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!([inner]))
}

/// Mutates the bytes of a body.
fn mutate_bytes(rng: &mut fastrand::Rng, mut body: Vec<u8>) -> Vec<u8> {
    match rng.u8(0..5) {
        0 if !body.is_empty() => body.truncate(rng.usize(0..body.len())),
        1 if !body.is_empty() => {
            let at = rng.usize(0..body.len());
            body[at] = rng.u8(..);
        }
        2 => {
            let at = rng.usize(0..=body.len());
            const JUNK: &[u8] = b"[]{},:\"0-e9\\\x00\xff";
            let junk: Vec<u8> =
                (0..rng.usize(1..8)).map(|_| JUNK[rng.usize(0..JUNK.len())]).collect();
            body.splice(at..at, junk);
        }
        3 if body.len() > 2 => {
            let start = rng.usize(0..body.len() - 1);
            let end = rng.usize(start + 1..body.len());
            let copy = body[start..end].to_vec();
            body.splice(end..end, copy);
        }
        _ => {}
    }
    body
}

/// A binary-extension request: the JSON header, then the bytes, with the
/// header length and sizes mutated.
fn binary_request(rng: &mut fastrand::Rng) -> (Vec<u8>, Option<String>) {
    let rows = rng.usize(1..4);
    let declared = match rng.u8(0..4) {
        0 => json!(rng.usize(0..200)),
        1 => hostile_number(rng),
        _ => json!(rows * 16),
    };
    let header = json!({ "inputs": [{ "name": "input", "shape": [rows, 4], "datatype": "FP32",
                                      "parameters": { "binary_data_size": declared } }],
                          "outputs": [{ "name": "output", "parameters": { "binary_data": true } }] })
    .to_string();
    let mut body = header.clone().into_bytes();
    let tail = match rng.u8(0..4) {
        0 => rng.usize(0..100),
        _ => rows * 16,
    };
    body.extend((0..tail).map(|_| rng.u8(..)));
    let length = match rng.u8(0..8) {
        0 => Some("-1".to_string()),
        1 => Some((body.len() + rng.usize(1..100)).to_string()),
        2 => Some("18446744073709551616".to_string()),
        3 => Some("abc".to_string()),
        4 => Some(rng.usize(0..body.len()).to_string()),
        5 => None,
        _ => Some(header.len().to_string()),
    };
    (body, length)
}

/// One hostile request, deterministic for its seed.
fn hostile_request(rng: &mut fastrand::Rng) -> Request<Body> {
    let mut builder = Request::post(match rng.u8(0..12) {
        0 => "/v2/models/mlp/versions/7/infer",
        1 => "/v1/models/mlp:predict",
        2 => "/v2/models/other/infer",
        _ => "/v2/models/mlp/infer",
    });
    let (mut body, length) = match rng.u8(0..4) {
        0 => binary_request(rng),
        _ => (mutate_json(rng, valid_request()).to_string().into_bytes(), None),
    };
    if let Some(length) = length {
        builder = builder.header("inference-header-content-length", length);
    }
    if rng.u8(0..3) == 0 {
        body = mutate_bytes(rng, body);
    }
    match rng.u8(0..10) {
        0 => {
            body = mutate_bytes(rng, gzip(&body));
            builder = builder.header("content-encoding", "gzip");
        }
        1 => {
            body = deflate(&body);
            builder = builder.header("content-encoding", "deflate");
        }
        2 => {
            builder = builder.header(
                "content-encoding",
                ["br", "gzip, gzip", "GZIP", "identity"][rng.usize(0..4)],
            )
        }
        3 => {
            builder = builder.header(
                "content-type",
                [
                    "image/png",
                    "multipart/form-data; boundary=x",
                    "application/octet-stream",
                    "text/plain",
                ][rng.usize(0..4)],
            )
        }
        _ => {}
    }
    builder.body(Body::from(body)).unwrap()
}

const CASES: u64 = 3000;

/// Thousands of mutated requests (seeded, the same every run): every one is
/// answered, none is a 5xx other than 503 or 504, every refusal carries a
/// reason, and valid requests still succeed throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_break_the_server() {
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| {
        c.max_body_bytes = 1 << 20;
        c.max_tensor_bytes = Some(64 << 20);
    });
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for case in 0..CASES {
        let mut rng = fastrand::Rng::with_seed(case);
        let request = hostile_request(&mut rng);
        let shown = format!("case {case}: {} {:?}", request.uri(), request.headers());
        let answer = send(&state, request).await;
        *statuses.entry(answer.status.as_u16()).or_default() += 1;
        let status = answer.status;
        assert!(
            !status.is_server_error()
                || status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::GATEWAY_TIMEOUT,
            "{shown}: {status} {}",
            String::from_utf8_lossy(&answer.body)
        );
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&answer.body)
                .unwrap_or_else(|e| panic!("{shown}: {status} without a JSON body ({e})"));
            assert!(body["error"].is_string(), "{shown}: {body}");
        }
        if case % 250 == 0 {
            assert_still_serves(&state, "/v2/models/mlp/infer", valid_request()).await;
        }
    }
    assert_still_serves(&state, "/v2/models/mlp/infer", valid_request()).await;
    println!("{CASES} mutated requests: {statuses:?}");
    // The generator reaches both sides: successes and refusals.
    assert!(statuses.get(&200).copied().unwrap_or(0) > 100, "{statuses:?}");
    assert!(statuses.get(&400).copied().unwrap_or(0) > 1000, "{statuses:?}");
}
