//! `tractor serve --processing` as a real process: the README's example
//! (a PNG in, a label out) and start-up refusals that name the field.

mod common;

use std::time::Duration;

use common::server::ServeProcess as Server;
use common::{real_model, repo_path};

#[tokio::test]
async fn the_readme_example_a_png_in_a_label_out() {
    // The committed PNG is digit 10 of the test set (a 7), intensities k * 15.
    let png = std::fs::read(repo_path("tests/processing/digit-7.png")).unwrap();
    let decoded = image::load_from_memory(&png).unwrap().to_luma8();
    let mut archive = npyz::npz::NpzArchive::open(real_model("digits-test-images.npz")).unwrap();
    let x: Vec<f32> = archive.by_name("x").unwrap().unwrap().into_vec().unwrap();
    let y: Vec<i64> = archive.by_name("y").unwrap().unwrap().into_vec().unwrap();
    assert_eq!(y[10], 7);
    let expected: Vec<u8> = x[640..704].iter().map(|v| (v * 16.0).round() as u8 * 15).collect();
    assert_eq!(decoded.into_raw(), expected);

    let mut server = Server::start(&[
        "--model",
        "tests/models/digits-cnn.onnx",
        "--processing",
        "tests/processing/digits-cnn.yaml",
    ]);
    let client = reqwest::Client::new();
    server.wait_ready();
    let ready = client.get(server.url("/v1/models/digits-cnn")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), r#"{"name":"digits-cnn","ready":true}"#);
    // curl -H 'Content-Type: image/png' --data-binary @tests/processing/digit-7.png
    let answer = client
        .post(server.url("/v1/models/digits-cnn:predict"))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    let prediction = &body["predictions"][0];
    assert_eq!(prediction["label"], "7", "{body}");
    assert!(prediction["score"].as_f64().unwrap() > 0.9, "{body}");
    assert_eq!(prediction["top_k"].as_array().unwrap().len(), 3);
    // The same through JSON with base64, as the README's second curl.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let answer = client
        .post(server.url("/v1/models/digits-cnn:predict"))
        .body(format!(r#"{{"instances": [{{"b64": "{b64}"}}]}}"#))
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(json, body);
}

#[test]
fn a_spec_that_does_not_fit_stops_serve_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(&spec, "inputs:\n  - name: image\n    image:\n      width: 28\n").unwrap();
    let server = Server::start(&[
        "--model",
        "tests/models/digits-cnn.onnx",
        "--processing",
        spec.to_str().unwrap(),
    ]);
    let (status, stderr) = server.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        stderr.contains("processing spec inputs[0].image.width: 28 cannot produce model input \"image\", whose axis 3 is 8"),
        "{stderr}"
    );
    // A file that is not a spec is refused before the model is even fetched.
    std::fs::write(&spec, "inputs:\n  - name: image\n    imag: {}\n").unwrap();
    let server = Server::start(&[
        "--model",
        "tests/models/digits-cnn.onnx",
        "--processing",
        spec.to_str().unwrap(),
    ]);
    let (status, stderr) = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("unknown field inputs[0].imag"), "{stderr}");
}
