//! Every V2 endpoint and error case, driven through `serve::app` without a port.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use common::{Answer, fixture, load, ready_state, real_model, send};
use tractor::engine::{Tensor, TensorData};
use tractor::serve::AppState;

async fn get(state: &AppState, uri: &str) -> Answer {
    send(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// POSTs JSON without a Content-Type, as Triton's Python client does.
async fn post(state: &AppState, uri: &str, body: Value) -> Answer {
    send(state, Request::post(uri).body(Body::from(body.to_string())).unwrap()).await
}

fn mlp_state() -> AppState {
    ready_state(&fixture("mlp-batch.onnx"), "mlp", |_| {})
}

fn mlp_request(rows: &[[f32; 4]]) -> Value {
    json!({ "inputs": [{ "name": "input", "shape": [rows.len(), 4], "datatype": "FP32", "data": rows }] })
}

fn expected_mlp(rows: &[[f32; 4]]) -> Vec<f32> {
    let model = load(&fixture("mlp-batch.onnx"));
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let input = Tensor::new(vec![rows.len(), 4], TensorData::F32(flat)).unwrap();
    match &model.run(&[input]).unwrap()[0].data {
        TensorData::F32(v) => v.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

fn as_f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[tokio::test]
async fn health_and_server_metadata() {
    let cfg = common::config(&fixture("mlp-batch.onnx"), "mlp");
    let state = AppState::new(&cfg);
    assert_eq!(get(&state, "/v2/health/live").await.status, StatusCode::OK);
    let not_ready = get(&state, "/v2/health/ready").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&state, "/v2/models/mlp/ready").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let early = post(&state, "/v2/models/mlp/infer", mlp_request(&[[0.0; 4]])).await;
    assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(early.headers["retry-after"], "1");

    state.install(load(&fixture("mlp-batch.onnx"))).unwrap();
    assert_eq!(get(&state, "/v2/health/ready").await.json(), json!({ "ready": true }));
    let server = get(&state, "/v2").await.json();
    assert_eq!(server["name"], "tractor");
    assert!(server["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    assert_eq!(get(&state, "/v2/models/mlp/ready").await.status, StatusCode::OK);
    assert_eq!(get(&state, "/v2/models/mlp/versions/7/ready").await.status, StatusCode::OK);
    assert_eq!(get(&state, "/v2/models/mlp/versions/8/ready").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&state, "/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn model_metadata_and_config() {
    let state = mlp_state();
    let expected = json!({
        "name": "mlp",
        "versions": ["7"],
        "platform": "tract_onnx",
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [-1, 4] }],
        "outputs": [{ "name": "output", "datatype": "FP32", "shape": [-1, 3] }],
    });
    assert_eq!(get(&state, "/v2/models/mlp").await.json(), expected);
    assert_eq!(get(&state, "/v2/models/mlp/versions/7").await.json(), expected);
    let wrong_version = get(&state, "/v2/models/mlp/versions/3").await;
    assert_eq!(wrong_version.status, StatusCode::NOT_FOUND);
    assert!(wrong_version.error().contains("version \"3\""));
    let wrong_name = get(&state, "/v2/models/other").await;
    assert_eq!(wrong_name.status, StatusCode::NOT_FOUND);
    assert!(wrong_name.error().contains("unknown model \"other\""));

    let config = get(&state, "/v2/models/mlp/config").await.json();
    assert_eq!(config["max_batch_size"], 16);
    assert_eq!(config["input"][0]["dims"], json!([4]));
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(config["dynamic_batching"]["max_queue_delay_microseconds"], 2000);
}

#[tokio::test]
async fn json_inference_matches_the_engine() {
    let state = mlp_state();
    let rows = [[0.1, 0.2, 0.3, 0.4], [-1.0, 0.5, 2.0, 0.0]];
    let mut request = mlp_request(&rows);
    request["id"] = json!("req-1");
    request["parameters"] = json!({ "trace": "abc" });
    let answer = post(&state, "/v2/models/mlp/infer", request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = answer.json();
    assert_eq!(body["model_name"], "mlp");
    assert_eq!(body["model_version"], "7");
    assert_eq!(body["id"], "req-1");
    assert_eq!(body["parameters"]["trace"], "abc");
    assert_eq!(body["outputs"][0]["name"], "output");
    assert_eq!(body["outputs"][0]["datatype"], "FP32");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 3]));
    assert_eq!(as_f32s(&body["outputs"][0]["data"]), expected_mlp(&rows));

    let versioned = post(&state, "/v2/models/mlp/versions/7/infer", mlp_request(&rows)).await;
    assert_eq!(versioned.status, StatusCode::OK);
    let unknown = post(&state, "/v2/models/mlp/versions/9/infer", mlp_request(&rows)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn binary_tensor_data_both_ways() {
    let state = mlp_state();
    let rows = [[0.5f32, -0.5, 1.5, 2.5]];
    let header = json!({
        "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": { "binary_data_size": 16 } }],
        "parameters": { "binary_data_output": true },
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(rows[0].iter().flat_map(|x| x.to_le_bytes()));
    let request = Request::post("/v2/models/mlp/infer")
        .header("Inference-Header-Content-Length", header.len())
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    let answer = send(&state, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let json_len: usize =
        answer.headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let head: Value = serde_json::from_slice(&answer.body[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 12);
    assert!(head["outputs"][0].get("data").is_none());
    let values: Vec<f32> = answer.body[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, expected_mlp(&rows));
}

#[tokio::test]
async fn bad_requests_are_400_with_a_reason() {
    let state = mlp_state();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "inputs": [{ "name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4] }] }),
            "unknown input \"x\"",
        ),
        (
            json!({ "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4] }] }),
            "model expects FP32",
        ),
        (
            json!({ "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3] }] }),
            "needs 4 elements",
        ),
        (
            json!({ "inputs": [{ "name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5] }] }),
            "axis 1 must be 4",
        ),
        (
            json!({ "inputs": [{ "name": "input", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4] }] }),
            "rank 2",
        ),
        (
            json!({ "inputs": [{ "name": "input", "shape": [17, 4], "datatype": "FP32", "data": vec![0.0; 68] }] }),
            "maximum batch size 16",
        ),
        (json!({ "inputs": [] }), "missing input"),
        (json!({ "nothing": true }), "malformed request JSON"),
        (
            json!({ "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4] }], "outputs": [{ "name": "nope" }] }),
            "unknown output",
        ),
    ];
    for (request, expected) in cases {
        let answer = post(&state, "/v2/models/mlp/infer", request.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{request}");
        assert!(answer.error().contains(expected), "{request}: {}", answer.error());
    }
    let garbage =
        send(&state, Request::post("/v2/models/mlp/infer").body(Body::from("{not json")).unwrap())
            .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(garbage.error().contains("malformed request JSON"));
    let gzip = send(
        &state,
        Request::post("/v2/models/mlp/infer")
            .header("content-encoding", "gzip")
            .body(Body::from("x"))
            .unwrap(),
    )
    .await;
    assert_eq!(gzip.status, StatusCode::BAD_REQUEST, "a corrupt gzip body");
    assert!(gzip.error().contains("cannot read the request body"), "{}", gzip.error());
    let bad_header = send(
        &state,
        Request::post("/v2/models/mlp/infer")
            .header("Inference-Header-Content-Length", "999")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(bad_header.status, StatusCode::BAD_REQUEST);
    assert!(bad_header.error().contains("only 2 bytes"));
    // The server still answers after all of that.
    let ok = post(&state, "/v2/models/mlp/infer", mlp_request(&[[0.0; 4]])).await;
    assert_eq!(ok.status, StatusCode::OK);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn compressed_requests_and_answers() {
    let state = mlp_state();
    let rows = [[0.1, 0.2, 0.3, 0.4]];
    let request = Request::post("/v2/models/mlp/infer")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(Body::from(gzip(mlp_request(&rows).to_string().as_bytes())))
        .unwrap();
    let answer = send(&state, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.headers["content-encoding"], "gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&answer.body[..]), &mut plain)
        .unwrap();
    let body: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(as_f32s(&body["outputs"][0]["data"]), expected_mlp(&rows));
}

/// The body limit applies after decompression: a tiny gzip bomb is refused.
#[tokio::test]
async fn oversized_bodies_are_413_even_compressed() {
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| c.max_body_bytes = 10_000);
    let bomb = gzip(&vec![b' '; 1_000_000]);
    assert!(bomb.len() < 10_000);
    let request = Request::post("/v2/models/mlp/infer")
        .header("content-encoding", "gzip")
        .body(Body::from(bomb))
        .unwrap();
    let answer = send(&state, request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| c.max_body_bytes = 100);
    let answer = post(&state, "/v2/models/mlp/infer", mlp_request(&[[0.0; 4]; 8])).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.error().contains("100 bytes"));
}

/// A body that never finishes keeps its request in flight.
fn stalled_body() -> (futures::channel::mpsc::Sender<Result<Vec<u8>, std::io::Error>>, Body) {
    let (tx, rx) = futures::channel::mpsc::channel(1);
    (tx, Body::from_stream(rx))
}

/// A stalled body holds no in-flight slot (issue 11: slow senders took
/// them all): the next request is served, the stalled one times out.
/// Shedding itself is `infer::tests::a_second_slot_is_refused_with_retry_after`.
#[tokio::test]
async fn stalled_bodies_hold_no_slot_and_timeouts_are_504() {
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| {
        c.max_inflight = 1;
        c.request_timeout = Duration::from_millis(300);
    });
    let (_keep_open, body) = stalled_body();
    let held = tokio::spawn({
        let state = state.clone();
        async move { send(&state, Request::post("/v2/models/mlp/infer").body(body).unwrap()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let served = post(&state, "/v2/models/mlp/infer", mlp_request(&[[0.0; 4]])).await;
    assert_eq!(served.status, StatusCode::OK);
    let timed_out = held.await.unwrap();
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(timed_out.error().contains("300 ms"));
    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    assert!(metrics.contains("outcome=\"timeout\""), "{metrics}");
}

#[tokio::test]
async fn two_inputs_two_outputs_and_output_selection() {
    let state = ready_state(&fixture("two-in-two-out.onnx"), "pair", |_| {});
    let request = json!({
        "inputs": [
            { "name": "b", "shape": [1, 3], "datatype": "FP32", "data": [4, 5, 6] },
            { "name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3] },
        ],
        "outputs": [{ "name": "product" }],
    });
    let body = post(&state, "/v2/models/pair/infer", request).await.json();
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["name"], "product");
    assert_eq!(as_f32s(&body["outputs"][0]["data"]), vec![4.0, 10.0, 18.0]);
    let mismatch = json!({ "inputs": [
        { "name": "a", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6] },
        { "name": "b", "shape": [1, 3], "datatype": "FP32", "data": [4, 5, 6] },
    ] });
    let answer = post(&state, "/v2/models/pair/infer", mismatch).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("disagree on the batch size"));
}

#[tokio::test]
async fn int64_inputs_and_unnamed_batch_axes() {
    let state = ready_state(&fixture("int64-input.onnx"), "ids", |_| {});
    let meta = get(&state, "/v2/models/ids").await.json();
    assert_eq!(meta["inputs"][0], json!({ "name": "ids", "datatype": "INT64", "shape": [-1, 4] }));
    let request = json!({ "inputs": [{ "name": "ids", "shape": [2, 4], "datatype": "INT64",
        "data": [[1, 2, 3, 9007199254740993i64], [-5, 0, 7, 8]] }] });
    let body = post(&state, "/v2/models/ids/infer", request).await.json();
    assert_eq!(body["outputs"][0]["datatype"], "INT64");
    assert_eq!(body["outputs"][0]["data"], json!([2, 4, 6, 18014398509481986i64, -10, 0, 14, 16]));
    assert_eq!(body["outputs"][1]["datatype"], "FP32");
    let float = json!({ "inputs": [{ "name": "ids", "shape": [1, 4], "datatype": "INT64", "data": [1.5, 2, 3, 4] }] });
    let answer = post(&state, "/v2/models/ids/infer", float).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("64-bit integer"));
}

#[tokio::test]
async fn every_served_datatype_round_trips_in_json_and_binary() {
    let state = ready_state(&fixture("dtypes.onnx"), "dtypes", |_| {});
    let samples: Vec<(&str, &str, Value)> = vec![
        ("bool", "BOOL", json!([true, false, false, true])),
        ("uint8", "UINT8", json!([0, 1, 254, 255])),
        ("int8", "INT8", json!([-128, -1, 0, 127])),
        ("int32", "INT32", json!([-2147483648i64, 0, 1, 2147483647])),
        ("int64", "INT64", json!([i64::MIN, -1, 0, i64::MAX])),
        ("fp16", "FP16", json!([0.5, -2.0, 1024.0, 0.0])),
        ("fp32", "FP32", json!([0.25, -1.5, 3.0e10, 0.0])),
        ("fp64", "FP64", json!([0.1, -1e300, 2.5, 0.0])),
    ];
    let inputs: Vec<Value> = samples
        .iter()
        .map(|(n, dt, data)| json!({ "name": format!("in_{n}"), "shape": [2, 2], "datatype": dt, "data": data }))
        .collect();
    let answer = post(&state, "/v2/models/dtypes/infer", json!({ "inputs": inputs })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let body = answer.json();
    for (i, (n, dt, data)) in samples.iter().enumerate() {
        let out = &body["outputs"][i];
        assert_eq!(out["name"], format!("out_{n}"));
        assert_eq!(out["datatype"], *dt);
        assert_eq!(&out["data"], data, "{n}");
    }

    // The same through the binary extension, every output binary.
    let model = load(&fixture("dtypes.onnx"));
    let tensors = tractor::client::synthetic_inputs(model.inputs(), 3, 9);
    let mut binary = Vec::new();
    let mut header_inputs = Vec::new();
    for (spec, t) in model.inputs().iter().zip(&tensors) {
        let bytes = t.data.to_le_bytes();
        header_inputs.push(
            json!({ "name": spec.name, "shape": t.shape, "datatype": spec.datatype.v2_name(),
            "parameters": { "binary_data_size": bytes.len() } }),
        );
        binary.extend(bytes);
    }
    let header = json!({ "inputs": header_inputs, "parameters": { "binary_data_output": true } })
        .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&binary);
    let request = Request::post("/v2/models/dtypes/infer")
        .header("inference-header-content-length", header.len())
        .body(Body::from(body))
        .unwrap();
    let answer = send(&state, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let json_len: usize =
        answer.headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    assert_eq!(&answer.body[json_len..], &binary[..], "outputs are the inputs, byte for byte");
}

#[tokio::test]
async fn fixed_batch_models_serve_one_row() {
    let state = ready_state(&fixture("fixed-batch1.onnx"), "fixed", |_| {});
    let config = get(&state, "/v2/models/fixed/config").await.json();
    assert_eq!(config["max_batch_size"], 0);
    let ok = post(&state, "/v2/models/fixed/infer", json!({ "inputs": [{ "name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0, 1, 2] }] })).await;
    assert_eq!(as_f32s(&ok.json()["outputs"][0]["data"]), vec![1.0, 3.0, 5.0]);
    let two = post(&state, "/v2/models/fixed/infer", json!({ "inputs": [{ "name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0, 1, 2, 3, 4, 5] }] })).await;
    assert_eq!(two.status, StatusCode::BAD_REQUEST);
    assert!(two.error().contains("axis 0 must be 1"), "{}", two.error());
}

#[tokio::test]
async fn nan_and_infinity_in_binary_data_pass_through() {
    let state = ready_state(&fixture("two-in-two-out.onnx"), "pair", |_| {});
    let a = [f32::NAN, f32::INFINITY, 1.0];
    let b = [1.0f32, 1.0, f32::NEG_INFINITY];
    let header = json!({ "inputs": [
        { "name": "a", "shape": [1, 3], "datatype": "FP32", "parameters": { "binary_data_size": 12 } },
        { "name": "b", "shape": [1, 3], "datatype": "FP32", "parameters": { "binary_data_size": 12 } },
    ], "outputs": [{ "name": "sum", "parameters": { "binary_data": true } }] })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(a.iter().chain(&b).flat_map(|x| x.to_le_bytes()));
    let answer = send(
        &state,
        Request::post("/v2/models/pair/infer")
            .header("inference-header-content-length", header.len())
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let json_len: usize =
        answer.headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let sum: Vec<f32> = answer.body[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(sum[0].is_nan());
    assert_eq!(sum[1], f32::INFINITY);
    assert_eq!(sum[2], f32::NEG_INFINITY);
}

#[tokio::test]
async fn real_exported_models_serve() {
    // PyTorch's exporter (named `batch` axis) and skl2onnx (unnamed axis, int64 label).
    for (file, input, width) in [
        ("digits-mlp-v2.onnx", "input", 64),
        ("digits-sklearn-mlp.onnx", "X", 64),
        ("diabetes-mlp.onnx", "features", 10),
    ] {
        let state = ready_state(&real_model(file), "m", |_| {});
        let request = json!({ "inputs": [{ "name": input, "shape": [3, width], "datatype": "FP32", "data": vec![0.5; 3 * width] }] });
        let answer = post(&state, "/v2/models/m/infer", request).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{file}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["outputs"][0]["shape"][0], 3, "{file}");
    }
    let cnn = ready_state(&real_model("digits-cnn-bn.onnx"), "cnn", |_| {});
    let meta = get(&cnn, "/v2/models/cnn").await.json();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1, 8, 8]));
}

/// Concurrent callers with different row counts each get exactly their rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_under_concurrency_returns_each_caller_its_rows() {
    let state = ready_state(&fixture("mlp-batch.onnx"), "mlp", |c| {
        c.max_batch_size = 8;
        c.max_batch_delay = Duration::from_millis(5);
    });
    let mut tasks = Vec::new();
    for caller in 0..48usize {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let rows: Vec<[f32; 4]> = (0..(caller % 3 + 1))
                .map(|r| {
                    let base = (caller * 10 + r) as f32 * 0.01;
                    [base, -base, base * 2.0, 1.0 - base]
                })
                .collect();
            let answer = post(&state, "/v2/models/mlp/infer", mlp_request(&rows)).await;
            assert_eq!(answer.status, StatusCode::OK);
            (rows, as_f32s(&answer.json()["outputs"][0]["data"]))
        }));
    }
    for task in tasks {
        let (rows, got) = task.await.unwrap();
        let want = expected_mlp(&rows);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{rows:?}: {got:?} vs {want:?}");
        }
    }
    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    let batches = metric_value(&metrics, "tractor_batch_size_count");
    let rows = metric_value(&metrics, "tractor_batch_size_sum");
    assert_eq!(rows, 96.0, "48 callers sent 1..3 rows each");
    assert!(batches < 48.0, "requests were batched: {batches} batches for 48 requests");
    assert!(metrics.contains("tractor_requests_total{model=\"mlp\",outcome=\"success\",protocol=\"v2\",version=\"7\"} 48"), "{metrics}");
    for name in [
        "tractor_queue_duration_seconds",
        "tractor_compute_duration_seconds",
        "tractor_request_duration_seconds",
        "tractor_inflight_requests",
        "tractor_model_ready",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics"))
}
