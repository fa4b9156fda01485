//! `tractor serve`, `infer` and `bench` as real processes on loopback:
//! start-up refusals, graceful shutdown, and the clients against the server.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use common::server::ServeProcess as Server;
use common::{fixture, real_model};

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

fn tractor(args: &[&str]) -> Output {
    Command::new(TRACTOR).args(args).output().expect("run tractor")
}

#[test]
fn refuses_to_start_on_a_sha256_mismatch() {
    let model = real_model("digits-mlp-v2.onnx");
    let server = Server::start(&["--model", model.to_str().unwrap(), "--sha256", &"0".repeat(64)]);
    let (status, stderr) = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
}

#[test]
fn starts_when_the_sha256_matches() {
    let model = real_model("digits-mlp-v2.onnx");
    let digest = tractor::store::sha256_hex(&std::fs::read(&model).unwrap());
    let mut server =
        Server::start(&["--model", model.to_str().unwrap(), "--sha256", &digest.to_uppercase()]);
    server.wait_ready();
}

#[test]
fn a_bad_model_file_is_an_error_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.onnx");
    std::fs::write(&bad, b"this is not a protobuf").unwrap();
    let (status, stderr) =
        Server::start(&["--model", bad.to_str().unwrap()]).wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("cannot parse the model as ONNX"), "{stderr}");

    let unsupported = fixture("uint16-input.onnx");
    let (status, stderr) = Server::start(&["--model", unsupported.to_str().unwrap()])
        .wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("tractor serves BOOL"), "{stderr}");

    let missing = dir.path().join("missing.onnx");
    let (status, stderr) =
        Server::start(&["--model", missing.to_str().unwrap()]).wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("fetching"), "{stderr}");
}

/// SIGTERM while a request is half sent: the request still completes, then
/// the process exits 0.
#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let model = fixture("mlp-batch.onnx");
    let mut server = Server::start(&["--model", model.to_str().unwrap(), "--name", "mlp"]);
    server.wait_ready();
    let body = r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.sigterm();
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON closes; the connection stays open for keep-alive
    // until the server shuts it down.
    while !String::from_utf8_lossy(&response).contains("\"outputs\"") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(stream);
    let (status, _) = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn infer_and_bench_talk_to_a_running_server() {
    let model = real_model("digits-mlp-v2.onnx");
    let mut server = Server::start(&["--model", model.to_str().unwrap(), "--model-version", "2"]);
    server.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("request.json");
    let pixels: Vec<f32> = (0..64).map(|i| (i % 16) as f32 / 16.0).collect();
    let request = serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": pixels }] });
    std::fs::write(&input, request.to_string()).unwrap();

    let out = tractor(&[
        "infer",
        "--url",
        &server.url(""),
        "--model",
        "digits-mlp-v2",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["model_version"], "2");
    assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([1, 10]));

    // The README's example request is a handwritten 3.
    let example = common::repo_path("examples/requests/digits-mlp.json");
    let out = tractor(&[
        "infer",
        "--url",
        &server.url(""),
        "--model",
        "digits-mlp-v2",
        "--input",
        example.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["id"], "digit-3");
    let logits: Vec<f64> = answer["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let best = (0..logits.len()).max_by(|a, b| logits[*a].total_cmp(&logits[*b])).unwrap();
    assert_eq!(best, 3, "{logits:?}");

    let wrong = tractor(&[
        "infer",
        "--url",
        &server.url(""),
        "--model",
        "nope",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("404"));

    let out = tractor(&[
        "bench",
        "--url",
        &server.url(""),
        "--model",
        "digits-mlp-v2",
        "--concurrency",
        "1,4",
        "--requests",
        "40",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["requests"], 40);
        assert_eq!(r["errors"], 0);
        assert!(
            r["latency_ms"]["p99"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap()
        );
    }

    let out = tractor(&["bench", "--in-process", model.to_str().unwrap(), "--requests", "20"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("concurrency   1"));
}
