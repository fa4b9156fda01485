//! Issue 17: an exported transformer (tiny-bert, HuggingFace's exporter:
//! `input_ids`, `attention_mask`, `token_type_ids` as i64 `[batch, seq]`)
//! loads, serves, and batches requests of different lengths together.
//!
//! - The engine: plans per sequence length, bounded and counted; padded and
//!   unpadded sentences agree; the guard and `--max-sequence` hold.
//! - Ragged batching in-process: 64 overlapping requests of mixed lengths,
//!   each answer equal to its unbatched one, in batches larger than 1.
//! - Interop (`tritonclient[http]` and ONNX Runtime from `$TRACTOR_PYTHON`,
//!   skipped without them unless `CI=true`): the real server, fp32 and the
//!   dynamic int8 form `tractor optimize` writes, unpadded and padded.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use common::server::ServeProcess;
use common::{load, python, ready_state, real_model, send};
use tractor::engine::{EngineError, Model, PlanLimits, Tensor, TensorData};
use tractor::optimize::data::Dataset;

const MODEL: &str = "tiny-bert-sentiment.onnx";

/// The test set's sentences: ids, mask and type ids of [n, 32], zero-padded.
fn sentences() -> Dataset {
    let path = real_model("tiny-bert-test.npz");
    Dataset::parse("tiny-bert-test.npz", &std::fs::read(path).unwrap()).unwrap()
}

fn i64s(t: &Tensor) -> &[i64] {
    match &t.data {
        TensorData::I64(v) => v,
        other => panic!("expected i64, got {:?}", other.datatype()),
    }
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v.clone(),
        other => panic!("expected f32, got {:?}", other.datatype()),
    }
}

/// Sentence `i` of the test set cut to `len` tokens (its own length when
/// `len` is its mask's sum, padded when longer): ids, mask, type ids.
fn sentence(data: &Dataset, i: usize, len: usize) -> Vec<Tensor> {
    ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|name| {
            let all = i64s(data.get(name).unwrap());
            let row = &all[i * 32..(i + 1) * 32];
            let values: Vec<i64> = (0..len).map(|k| row.get(k).copied().unwrap_or(0)).collect();
            Tensor::new(vec![1, len], TensorData::I64(values)).unwrap()
        })
        .collect()
}

fn own_length(data: &Dataset, i: usize) -> usize {
    let mask = i64s(data.get("attention_mask").unwrap());
    mask[i * 32..(i + 1) * 32].iter().sum::<i64>() as usize
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tiny_bert_loads_with_a_plan_per_length_and_padding_changes_nothing() {
    let model = load(&real_model(MODEL));
    assert!(model.has_plans_per_shape(), "the symbolic graph does not type in tract 0.23");
    let shapes: Vec<Vec<i64>> = model.inputs().iter().map(|s| s.v2_shape()).collect();
    assert_eq!(shapes, vec![vec![-1, -1]; 3]);
    assert_eq!(model.outputs()[0].v2_shape(), vec![-1, 2]);
    assert!(model.is_batchable() && model.rows_independent());
    // The plan built at load (every variable dimension 1).
    assert_eq!(model.plan_stats().unwrap().builds, 1);

    let data = sentences();
    for i in 0..6 {
        let len = own_length(&data, i);
        let unpadded = f32s(&model.run(&sentence(&data, i, len)).unwrap()[0]);
        let padded = f32s(&model.run(&sentence(&data, i, 32)).unwrap()[0]);
        assert!(max_diff(&unpadded, &padded) <= 1e-5, "{i}: {unpadded:?} vs {padded:?}");
    }
    let stats = model.plan_stats().unwrap();
    assert!(stats.builds >= 2 && stats.hits >= 5, "{stats:?}");
    // One plan serves every batch size of its length.
    let builds = stats.builds;
    let two: Vec<Tensor> = (0..3)
        .map(|k| {
            let (a, b) = (&sentence(&data, 0, 32)[k], &sentence(&data, 1, 32)[k]);
            Tensor::concat_rows(&[a, b]).unwrap()
        })
        .collect();
    let both = f32s(&model.run(&two).unwrap()[0]);
    let first = f32s(&model.run(&sentence(&data, 0, 32)).unwrap()[0]);
    assert!(max_diff(&both[..2], &first) <= 1e-5);
    assert_eq!(model.plan_stats().unwrap().builds, builds);
}

#[test]
fn lengths_over_the_limit_and_disagreeing_inputs_are_the_callers_errors() {
    let limits = PlanLimits { max_plans: 2, max_sequence: 16 };
    let model = load(&real_model(MODEL)).with_plan_limits(limits, None);
    let data = sentences();
    let long = model.run(&sentence(&data, 0, 17)).unwrap_err();
    assert!(matches!(long, EngineError::Shape(_)) && long.is_input_error(), "{long}");
    assert!(long.to_string().contains("17, over this server's limit of 16"), "{long}");
    let mut mixed = sentence(&data, 0, 12);
    mixed[1] = sentence(&data, 0, 10).swap_remove(1);
    let e = model.run(&mixed).unwrap_err();
    assert!(e.is_input_error(), "{e}");
    assert!(e.to_string().contains("\"input_ids\" and \"attention_mask\""), "{e}");
    // Three lengths through a cache of two: the oldest goes.
    for len in [8, 9, 10] {
        model.run(&sentence(&data, 0, len)).unwrap();
    }
    let stats = model.plan_stats().unwrap();
    assert_eq!(stats.kept, 2, "{stats:?}");
    assert!(stats.evictions >= 2, "the load's plan and length 8: {stats:?}");
}

#[test]
fn the_guard_runs_on_every_plan_built_per_length() {
    // Budget for a tensor: the attention scores of batch 4 at length 32
    // ([4, 2 heads, 32, 32] f32 = 32 KiB) do not fit; batch 1 at 8 does.
    let model = load(&real_model(MODEL)).with_max_tensor_bytes(16 << 10);
    let data = sentences();
    model.run(&sentence(&data, 0, 8)).unwrap();
    let four: Vec<Tensor> = (0..3)
        .map(|k| {
            let one = sentence(&data, 0, 32).swap_remove(k);
            Tensor::concat_rows(&[&one, &one, &one, &one]).unwrap()
        })
        .collect();
    let refused = model.run(&four).unwrap_err();
    assert!(matches!(refused, EngineError::Refused(_)), "{refused}");
    assert!(refused.to_string().contains("over the engine's limit of 16384 bytes"), "{refused}");
}

fn request(inputs: &[Tensor]) -> Value {
    let names = ["input_ids", "attention_mask", "token_type_ids"];
    json!({ "inputs": inputs.iter().zip(names).map(|(t, name)| json!({
        "name": name, "datatype": "INT64", "shape": t.shape, "data": i64s(t),
    })).collect::<Vec<_>>() })
}

async fn post(state: &tractor::serve::AppState, body: &Value) -> common::Answer {
    let request = Request::post("/v2/models/bert/infer")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(state, request).await
}

fn logits(answer: &common::Answer) -> Vec<f32> {
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let data = answer.json()["outputs"][0]["data"].as_array().unwrap().clone();
    data.iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

/// 64 overlapping requests of lengths 8..32 (unpadded, 1 or 2 rows each):
/// every caller gets exactly its own answer, equal to the model's answer
/// on that request alone, while the batcher padded them into shared batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ragged_requests_share_batches_and_each_gets_its_own_answer() {
    let path = real_model(MODEL);
    let state = ready_state(&path, "bert", |c| {
        c.max_batch_size = 32;
        c.max_batch_delay = Duration::from_millis(20);
        c.max_inflight = 128;
    });
    let alone: Model = load(&path);
    let data = sentences();
    let cases: Vec<Vec<Tensor>> = (0..64)
        .map(|i| {
            let len = own_length(&data, i);
            let one = sentence(&data, i, len);
            if i % 5 == 0 {
                // Two rows of one length: the caller's own sentence twice.
                one.iter().map(|t| Tensor::concat_rows(&[t, t]).unwrap()).collect()
            } else {
                one
            }
        })
        .collect();
    let want: Vec<Vec<f32>> = cases.iter().map(|c| f32s(&alone.run(c).unwrap()[0])).collect();
    let lengths: std::collections::BTreeSet<usize> = cases.iter().map(|c| c[0].shape[1]).collect();
    assert!(lengths.len() >= 8, "mixed lengths: {lengths:?}");

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(cases.len()));
    let tasks: Vec<_> = cases
        .iter()
        .map(|case| {
            let (state, body, barrier) = (state.clone(), request(case), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                logits(&post(&state, &body).await)
            })
        })
        .collect();
    for (i, (task, want)) in tasks.into_iter().zip(&want).enumerate() {
        let got = task.await.unwrap();
        assert_eq!(got.len(), want.len(), "caller {i}");
        assert!(max_diff(&got, want) <= 1e-5, "caller {i}: {got:?} vs alone {want:?}");
    }
    // Which padded lengths the batches got depends on how the requests
    // arrived; one length asked for twice in a row is a cache hit whatever.
    let again = request(&cases[0]);
    for _ in 0..2 {
        assert!(max_diff(&logits(&post(&state, &again).await), &want[0]) <= 1e-5);
    }
    let get = Request::get("/metrics").body(Body::empty()).unwrap();
    let text = String::from_utf8(send(&state, get).await.body).unwrap();
    let batches = metric(&text, "tractor_batch_size_count") - 2.0;
    let rows = metric(&text, "tractor_batch_size_sum") - 2.0 * cases[0][0].shape[0] as f64;
    let repeated_singles = if cases[0][0].shape[0] == 1 { 2.0 } else { 0.0 };
    let single = metric(&text, "tractor_batch_size_bucket{model=\"bert\",version=\"7\",le=\"1\"}")
        - repeated_singles;
    assert_eq!(rows, 77.0, "64 callers, 13 of them with two rows");
    assert!(batches < 64.0 && single < batches, "batches of more than one: {text}");
    assert!(metric(&text, "tractor_engine_plan_builds_total") >= 2.0, "{text}");
    assert!(metric(&text, "tractor_engine_plan_cache_hits_total") >= 1.0, "{text}");
    eprintln!("64 requests in {batches} batches ({single} of one row)");

    // Over --max-sequence (512 by default): a 400 with the reason.
    let long = request(&sentence(&data, 0, 513));
    let answer = post(&state, &long).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("over this server's limit of 512 (--max-sequence)"));
    // Metadata: -1 for every variable dimension.
    let meta = send(&state, Request::get("/v2/models/bert").body(Body::empty()).unwrap()).await;
    assert_eq!(meta.json()["inputs"][0]["shape"], json!([-1, -1]));
    assert_eq!(meta.json()["outputs"][0]["shape"], json!([-1, 2]));
}

/// The real server, fp32 and dynamic int8 (`tractor optimize`), over
/// Triton's HTTP client (and, for fp32, its gRPC client too), against ONNX
/// Runtime on the same inputs.
#[test]
fn triton_client_and_onnxruntime_agree_on_tiny_bert() {
    let Some(python) =
        python::python_with("tritonclient.http, tritonclient.grpc, onnxruntime, numpy")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fp32 = real_model(MODEL);
    let int8 = dir.path().join("tiny-bert-dynamic.onnx");
    let optimized = Command::new(env!("CARGO_BIN_EXE_tractor"))
        .args(["optimize", "--input"])
        .arg(&fp32)
        .arg("--output")
        .arg(&int8)
        .args(["--quantize", "dynamic-int8", "--no-measure"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(optimized.status.success(), "{}", String::from_utf8_lossy(&optimized.stderr));

    let grpc_port = common::server::free_ports(1)[0].to_string();
    let mut servers: Vec<ServeProcess> = [&fp32, &int8]
        .iter()
        .enumerate()
        .map(|(i, model)| {
            let model = model.to_str().unwrap();
            let args = ["--model", model, "--name", "bert", "--max-batch-size", "32"];
            let grpc: &[&str] = if i == 0 { &["--grpc-port", &grpc_port] } else { &[] };
            ServeProcess::start(&[&args[..], &["--max-batch-delay-us", "2000"], grpc].concat())
        })
        .collect();
    for server in &mut servers {
        server.wait_ready();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/bert_triton_check.py");
    let data = real_model("tiny-bert-test.npz");
    let checks = [
        (0, &fp32, "fp32", "http", servers[0].port.to_string()),
        (0, &fp32, "fp32", "grpc", grpc_port.clone()),
        (1, &int8, "int8", "http", servers[1].port.to_string()),
    ];
    for (index, onnx, form, protocol, port) in checks {
        let server = &mut servers[index];
        let output = Command::new(&python)
            .arg(&script)
            .args(["--url", &format!("127.0.0.1:{port}"), "--model", "bert"])
            .args(["--protocol", protocol])
            .arg("--onnx")
            .arg(onnx)
            .arg("--data")
            .arg(&data)
            .args(["--atol", "1e-4", "--batched", if form == "fp32" { "yes" } else { "no" }])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{form} over {protocol}:\n{stdout}\n{}\n--- server:\n{}",
            String::from_utf8_lossy(&output.stderr),
            server.log()
        );
        println!("{form} over {protocol}:\n{stdout}");
        server.assert_running();
    }
}
