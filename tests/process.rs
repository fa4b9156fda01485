//! Input and output processing end to end, through `serve::app` without a
//! port: the real models in `tests/models/` behind the specs in
//! `tests/processing/`, over KServe V1 and V2, and the bad inputs.

mod common;

use std::io::Cursor;
use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use image::{DynamicImage, GrayImage, ImageFormat};
use serde_json::{Value, json};

use common::{Answer, config, load, real_model, repo_path, send};
use tractor::engine::{Tensor, TensorData};
use tractor::process::ProcessingConfig;
use tractor::serve::{AppState, ServeError};

async fn post_json(state: &AppState, uri: &str, body: &Value) -> Answer {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(state, request).await
}

async fn post_bytes(state: &AppState, uri: &str, content_type: &str, bytes: Vec<u8>) -> Answer {
    let request =
        Request::post(uri).header("content-type", content_type).body(Body::from(bytes)).unwrap();
    send(state, request).await
}

fn spec_path(name: &str) -> std::path::PathBuf {
    repo_path("tests/processing").join(name)
}

/// A ready server for a real model with the processing spec `spec`.
fn processed_state(model: &str, name: &str, spec: &str) -> AppState {
    let path = real_model(model);
    let mut cfg = config(&path, name);
    cfg.max_batch_size = 64;
    let processing = ProcessingConfig::from_file(&spec_path(spec)).unwrap();
    let state = AppState::new(&cfg);
    state.install_processed(load(&path), Some(&processing)).unwrap();
    state
}

/// An npz array as f32 (or i64 cast to f32) with its shape.
fn npz(file: &str, array: &str) -> (Vec<usize>, Vec<f64>) {
    let mut archive = npyz::npz::NpzArchive::open(real_model(file)).unwrap();
    let npy = archive.by_name(array).unwrap().unwrap();
    let shape = npy.shape().iter().map(|d| *d as usize).collect();
    let values = match npy.dtype().descr().trim_matches('\'') {
        "<f4" => npy.into_vec::<f32>().unwrap().into_iter().map(f64::from).collect(),
        "<i8" => npy.into_vec::<i64>().unwrap().into_iter().map(|v| v as f64).collect(),
        other => panic!("{file}:{array} has dtype {other}"),
    };
    (shape, values)
}

/// The 8x8 digit `i` of the test set as a grayscale image: intensity k
/// (0..16) stored as k * 15, which `digits-cnn.yaml` scales back by 1/240.
fn digit_image(images: &[f64], i: usize) -> GrayImage {
    let pixels = images[i * 64..(i + 1) * 64]
        .iter()
        .map(|x| {
            let k = (x * 16.0).round();
            assert!((0.0..=16.0).contains(&k) && (x * 16.0 - k).abs() < 1e-6, "{x}");
            (k as u8) * 15
        })
        .collect();
    GrayImage::from_raw(8, 8, pixels).unwrap()
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

#[tokio::test]
async fn digits_cnn_behind_image_processing_matches_the_tensors() {
    let state = processed_state("digits-cnn.onnx", "digits-cnn", "digits-cnn.yaml");
    let (shape, images) = npz("digits-test-images.npz", "x");
    let (_, labels) = npz("digits-test-images.npz", "y");
    assert_eq!(shape, vec![540, 1, 8, 8]);
    // What the model says on the tensors themselves.
    let model = load(&real_model("digits-cnn.onnx"));
    let tensor =
        Tensor::new(shape, TensorData::F32(images.iter().map(|x| *x as f32).collect())).unwrap();
    let direct = match &model.run(&[tensor]).unwrap()[0].data {
        TensorData::F32(v) => v.chunks(10).map(argmax).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let pngs: Vec<Vec<u8>> = (0..540)
        .map(|i| encode(&DynamicImage::ImageLuma8(digit_image(&images, i)), ImageFormat::Png))
        .collect();
    // V1, 60 instances per request (batched through the scheduler), the
    // two encodings of base64 KServe clients use.
    let mut predicted = Vec::with_capacity(540);
    for (chunk_index, chunk) in pngs.chunks(60).enumerate() {
        let instances: Vec<Value> = chunk
            .iter()
            .map(|png| {
                if chunk_index % 2 == 0 {
                    json!({ "b64": b64.encode(png) })
                } else {
                    json!(b64.encode(png))
                }
            })
            .collect();
        let answer =
            post_json(&state, "/v1/models/digits-cnn:predict", &json!({ "instances": instances }))
                .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
        let body = answer.json();
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), chunk.len());
        for p in predictions {
            let label: usize = p["label"].as_str().unwrap().parse().unwrap();
            assert_eq!(p["index"], label);
            let top = p["top_k"].as_array().unwrap();
            assert_eq!(top.len(), 3);
            assert_eq!(top[0]["label"], p["label"]);
            let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
            assert!(scores[0] > 0.0 && scores.iter().sum::<f64>() <= 1.0 + 1e-6, "{scores:?}");
            predicted.push(label);
        }
    }
    assert_eq!(predicted, direct, "PNG processing changed predictions");
    let correct =
        predicted.iter().zip(&labels).filter(|(p, y)| **p as f64 == **y).count() as f64 / 540.0;
    assert!(correct >= 0.95, "V1 accuracy {correct}");
    // The raw body: one PNG, as `curl --data-binary @digit.png` sends it.
    let answer =
        post_bytes(&state, "/v1/models/digits-cnn:predict", "image/png", pngs[0].clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.error());
    assert_eq!(answer.json()["predictions"][0]["label"], direct[0].to_string());
}

#[tokio::test]
async fn resized_and_jpeg_digits_still_read_right() {
    // 32x32 (nearest-upscaled) JPEGs: decoding, colour conversion from
    // RGB and the bilinear resize to 8x8 all on the path.
    let state = processed_state("digits-cnn.onnx", "digits-cnn", "digits-cnn.yaml");
    let (_, images) = npz("digits-test-images.npz", "x");
    let (_, labels) = npz("digits-test-images.npz", "y");
    let b64 = base64::engine::general_purpose::STANDARD;
    let n = 60;
    let instances: Vec<Value> = (0..n)
        .map(|i| {
            let big = DynamicImage::ImageLuma8(digit_image(&images, i))
                .resize_exact(32, 32, image::imageops::FilterType::Nearest)
                .to_rgb8();
            json!({ "b64": b64.encode(encode(&DynamicImage::ImageRgb8(big), ImageFormat::Jpeg)) })
        })
        .collect();
    let answer =
        post_json(&state, "/v1/models/digits-cnn:predict", &json!({ "instances": instances }))
            .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let body = answer.json();
    let correct = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&labels)
        .filter(|(p, y)| p["label"].as_str().unwrap().parse::<f64>().unwrap() == **y)
        .count();
    assert!(correct >= 54, "{correct} of {n} resized JPEGs read right");
}

#[tokio::test]
async fn multipart_form_data_carries_image_files() {
    // What `curl -F image=@a.png -F image=@b.png` sends: two instances.
    let state = processed_state("digits-cnn.onnx", "digits-cnn", "digits-cnn.yaml");
    let (_, images) = npz("digits-test-images.npz", "x");
    let (_, labels) = npz("digits-test-images.npz", "y");
    let mut body = Vec::new();
    for i in [10, 11] {
        let png = encode(&DynamicImage::ImageLuma8(digit_image(&images, i)), ImageFormat::Png);
        body.extend_from_slice(
            format!(
                "--b0undary\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{i}.png\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&png);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--b0undary--\r\n");
    let content_type = "multipart/form-data; boundary=b0undary";
    let answer =
        post_bytes(&state, "/v1/models/digits-cnn:predict", content_type, body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let json = answer.json();
    let got: Vec<&str> = json["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![labels[10].to_string(), labels[11].to_string()]);
    // A part cut short is a 400, not a crash.
    let cut = body[..body.len() - 20].to_vec();
    let answer = post_bytes(&state, "/v1/models/digits-cnn:predict", content_type, cut).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("malformed multipart body"), "{}", answer.error());
}

#[tokio::test]
async fn malformed_multipart_bodies_are_400() {
    let state = processed_state("digits-cnn.onnx", "digits-cnn", "digits-cnn.yaml");
    let content_type = "multipart/form-data; boundary=b0undary";
    let cases: [(&[u8], &str); 3] = [
        // Headers that never end.
        (
            b"--b0undary\r\nContent-Disposition: form-data; name=\"image\"",
            "malformed multipart body",
        ),
        // A part without a name.
        (
            b"--b0undary\r\nContent-Type: image/png\r\n\r\nabc\r\n--b0undary--\r\n",
            "no Content-Disposition name",
        ),
        // Only the closing boundary.
        (b"--b0undary--\r\n", "no parts"),
    ];
    for (body, expected) in cases {
        let answer =
            post_bytes(&state, "/v1/models/digits-cnn:predict", content_type, body.to_vec()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        assert!(answer.error().contains(expected), "{}: {}", expected, answer.error());
    }
}

#[tokio::test]
async fn v2_takes_the_processing_flag() {
    let state = processed_state("digits-cnn.onnx", "digits-cnn", "digits-cnn.yaml");
    let (_, images) = npz("digits-test-images.npz", "x");
    let b64 = base64::engine::general_purpose::STANDARD;
    let pngs: Vec<String> = (0..3)
        .map(|i| {
            b64.encode(encode(&DynamicImage::ImageLuma8(digit_image(&images, i)), ImageFormat::Png))
        })
        .collect();
    let request = json!({
        "id": "r1",
        "parameters": { "processing": true },
        "inputs": [{ "name": "image", "shape": [3], "datatype": "BYTES", "data": pngs }],
    });
    let answer = post_json(&state, "/v2/models/digits-cnn/infer", &request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let v2 = answer.json();
    assert_eq!(v2["id"], "r1");
    assert_eq!(v2["model_name"], "digits-cnn");
    assert_eq!(v2["outputs"][0]["name"], "logits");
    assert_eq!(v2["outputs"][0]["datatype"], "BYTES");
    assert_eq!(v2["outputs"][0]["shape"], json!([3]));
    // The same answers as V1.
    let instances: Vec<Value> = pngs.iter().map(|p| json!({ "b64": p })).collect();
    let v1 = post_json(&state, "/v1/models/digits-cnn:predict", &json!({ "instances": instances }))
        .await
        .json();
    assert_eq!(v2["outputs"][0]["data"], v1["predictions"]);
    // Without the flag, V2 is the plain tensor protocol on the same server.
    let (_, rows) = (0, &images[..64]);
    let raw = json!({ "inputs": [{ "name": "image", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": rows }] });
    let answer = post_json(&state, "/v2/models/digits-cnn/infer", &raw).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["outputs"][0]["shape"], json!([1, 10]));
    let bad = json!({ "parameters": { "processing": "yes" }, "inputs": [] });
    let answer = post_json(&state, "/v2/models/digits-cnn/infer", &bad).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("processing must be true or false"), "{}", answer.error());
}

#[tokio::test]
async fn sklearn_mlp_with_tensor_input_and_labelled_top_k() {
    let state =
        processed_state("digits-sklearn-mlp.onnx", "digits-sklearn", "digits-sklearn-mlp.yaml");
    let (shape, x) = npz("digits-test.npz", "x");
    let (_, y) = npz("digits-test.npz", "y");
    assert_eq!(shape, vec![540, 64]);
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let model = load(&real_model("digits-sklearn-mlp.onnx"));
    let n = 50;
    let rows: Vec<Value> = x[..n * 64].chunks(64).map(|r| json!(r)).collect();
    let answer =
        post_json(&state, "/v1/models/digits-sklearn:predict", &json!({ "instances": rows })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let body = answer.json();
    let predictions = body["predictions"].as_array().unwrap();
    let tensor =
        Tensor::new(vec![n, 64], TensorData::F32(x[..n * 64].iter().map(|v| *v as f32).collect()))
            .unwrap();
    let outputs = model.run(&[tensor]).unwrap();
    let (TensorData::I64(labels), TensorData::F32(probabilities)) =
        (&outputs[0].data, &outputs[1].data)
    else {
        panic!("unexpected outputs {outputs:?}")
    };
    let mut correct = 0;
    for (i, p) in predictions.iter().enumerate() {
        let row = &probabilities[i * 10..(i + 1) * 10];
        let best = argmax(row);
        // The labels file names the class; the score is the model's probability.
        assert_eq!(p["label"], names[best]);
        assert_eq!(best as i64, labels[i], "top_k disagrees with the model's own label");
        assert!((p["score"].as_f64().unwrap() - f64::from(row[best])).abs() < 1e-6);
        assert_eq!(p["top_k"].as_array().unwrap().len(), 2);
        correct += usize::from(best as f64 == y[i]);
    }
    assert!(correct >= 47, "{correct} of {n}");
    // A row of the wrong length is a 400 naming the input.
    let answer = post_json(
        &state,
        "/v1/models/digits-sklearn:predict",
        &json!({ "instances": [[0.5, 0.25]] }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.error().contains("input \"X\"") && answer.error().contains("64"),
        "{}",
        answer.error()
    );
}

/// The diabetes constants: the model reads scikit-learn's scaled features
/// (`(raw - mean) / (std * sqrt(442))`), so the spec's `std` is that
/// divisor; `affine` undoes the target's standardization. The means and
/// divisors were computed from scikit-learn's `load_diabetes(scaled=False)`
/// (all 442 patients, as scikit-learn scales them).
fn diabetes_fields() -> Vec<(&'static str, f64, f64)> {
    let spec = ProcessingConfig::from_file(&spec_path("diabetes-mlp.json")).unwrap().spec;
    let names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"];
    let fields = &spec.inputs[0].features.as_ref().unwrap().fields;
    names
        .iter()
        .zip(fields)
        .map(|(n, f)| {
            assert_eq!(*n, f.name);
            (*n, f.mean.unwrap(), f.std.unwrap())
        })
        .collect()
}

#[tokio::test]
async fn diabetes_mlp_with_named_features_and_affine_output() {
    let state = processed_state("diabetes-mlp.onnx", "diabetes", "diabetes-mlp.json");
    let (shape, x) = npz("diabetes-test.npz", "x");
    let (_, y) = npz("diabetes-test.npz", "y");
    assert_eq!(shape, vec![133, 10]);
    let fields = diabetes_fields();
    // Patients as an application holds them: named fields in their units
    // (age in years, sex 1 or 2, ...), in no particular key order.
    let patients: Vec<Value> = x
        .chunks(10)
        .map(|row| {
            let mut object = serde_json::Map::new();
            for (v, (name, mean, std)) in row.iter().zip(&fields).rev() {
                object.insert(name.to_string(), json!(v * std + mean));
            }
            Value::Object(object)
        })
        .collect();
    assert!(patients.iter().all(|p| {
        let sex = p["sex"].as_f64().unwrap();
        (sex - 1.0).abs() < 1e-4 || (sex - 2.0).abs() < 1e-4
    }));
    let answer =
        post_json(&state, "/v1/models/diabetes:predict", &json!({ "instances": patients[..64] }))
            .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let body = answer.json();
    let predictions = body["predictions"].as_array().unwrap();
    let model = load(&real_model("diabetes-mlp.onnx"));
    let tensor =
        Tensor::new(vec![64, 10], TensorData::F32(x[..640].iter().map(|v| *v as f32).collect()))
            .unwrap();
    let TensorData::F32(standardized) = &model.run(&[tensor]).unwrap()[0].data else { panic!() };
    let (scale, offset) = (77.005746, 152.133484);
    let mut squared = 0.0;
    for (i, p) in predictions.iter().enumerate() {
        let value = p["value"].as_f64().unwrap();
        let expected = f64::from(standardized[i]) * scale + offset;
        assert!((value - expected).abs() < 1e-2, "row {i}: {value} vs {expected}");
        squared += (value - (y[i] * scale + offset)).powi(2);
    }
    // In the target's units (disease progression, 25..346): the model's
    // test MSE of 0.52 standardized is an RMSE of about 56.
    let rmse = (squared / 64.0).sqrt();
    assert!(rmse < 65.0, "RMSE {rmse}");
    // s6 has a default: leaving it out gives the mean patient's s6.
    let mut partial = patients[0].clone();
    partial.as_object_mut().unwrap().remove("s6");
    let answer =
        post_json(&state, "/v1/models/diabetes:predict", &json!({ "instances": [partial] })).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.error());
}

/// A PNG whose header claims `width` x `height` pixels: a real 1x1 PNG
/// with its IHDR patched and its checksum recomputed. The pixel data is
/// far too short, which only a decoder that goes past the header finds.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode(&DynamicImage::ImageLuma8(GrayImage::new(1, 1)), ImageFormat::Png);
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, 5 more bytes, CRC.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

#[tokio::test]
async fn bad_inputs_are_400_with_a_reason_and_the_server_stays_up() {
    let digits = processed_state("digits-cnn.onnx", "digits-cnn", "digits-cnn.yaml");
    let diabetes = processed_state("diabetes-mlp.onnx", "diabetes", "diabetes-mlp.json");
    let (_, images) = npz("digits-test-images.npz", "x");
    let good_png = encode(&DynamicImage::ImageLuma8(digit_image(&images, 0)), ImageFormat::Png);
    let mut corrupt = good_png.clone();
    let len = corrupt.len();
    corrupt[len / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
    let b64 = base64::engine::general_purpose::STANDARD;
    let predict = "/v1/models/digits-cnn:predict";
    let cases: Vec<(&AppState, Value, &str)> = vec![
        (
            &digits,
            json!({ "instances": [{ "b64": b64.encode(&corrupt) }] }),
            "cannot decode the image",
        ),
        (
            &digits,
            json!({ "instances": [{ "b64": b64.encode(b"GIF89a....") }] }),
            "Gif images are not accepted",
        ),
        (&digits, json!({ "instances": ["not base64!"] }), "not valid base64"),
        (&digits, json!({ "instances": [42] }), "got a number (42)"),
        (
            &digits,
            json!({ "instances": [{ "b64": b64.encode(png_claiming(10_000, 10_000)) }] }),
            "the image is 10000x10000 pixels; this model accepts at most 4096 on a side",
        ),
        (&digits, json!({ "instances": [] }), "\"instances\" is empty"),
        (&digits, json!({ "inputs": [] }), "malformed V1 request"),
        (
            &digits,
            json!({ "instances": vec![json!(b64.encode(&good_png)); 65] }),
            "maximum batch size 64",
        ),
        (
            &diabetes,
            json!({ "instances": [{ "age": 50, "sex": 1, "bmi": 25, "bp": 90, "s1": 180, "s2": 110, "s3": 50, "s4": 4, "s5": 4.6 , "s6": 90}, { "age": 50 }] }),
            "instance 1: missing required field \"sex\"",
        ),
        (
            &diabetes,
            json!({ "instances": [{ "age": "52", "sex": 1, "bmi": 25, "bp": 90, "s1": 180, "s2": 110, "s3": 50, "s4": 4, "s5": 4.6 }] }),
            "field \"age\" must be a number, got a string (\"52\")",
        ),
        (&diabetes, json!({ "instances": [[1, 2, 3]] }), "features come as an object"),
    ];
    for (state, body, expected) in cases {
        let uri =
            if std::ptr::eq(state, &diabetes) { "/v1/models/diabetes:predict" } else { predict };
        let answer = post_json(state, uri, &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(answer.error().contains(expected), "{expected:?} not in {:?}", answer.error());
    }
    // Raw bodies: corrupt, huge, and a raw body for a model without an image input.
    let answer = post_bytes(&digits, predict, "image/png", corrupt.clone()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("input \"image\": cannot decode"), "{}", answer.error());
    let answer = post_bytes(&digits, predict, "image/png", png_claiming(10_000, 10_000)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("10000x10000"), "{}", answer.error());
    let answer =
        post_bytes(&diabetes, "/v1/models/diabetes:predict", "image/png", good_png.clone()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("raw request body"), "{}", answer.error());
    // Unknown model and endpoint.
    let answer = post_json(&digits, "/v1/models/other:predict", &json!({ "instances": [] })).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let answer = post_json(&digits, "/v1/models/digits-cnn:explain", &json!({})).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    // Alive and right after all that.
    let answer = post_bytes(&digits, predict, "image/png", good_png).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.error());
    let metrics = send(&digits, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains(r#"tractor_requests_total{model="digits-cnn",outcome="bad_request",protocol="v1",version="7"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn v1_readiness_and_raw_rows_without_a_spec() {
    // No spec: V1 still serves, tensors in and raw rows out.
    let path = real_model("digits-mlp-v2.onnx");
    let state = AppState::new(&config(&path, "mlp"));
    let answer = send(&state, Request::get("/v1/models/mlp").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    state.install(load(&path)).unwrap();
    let answer = send(&state, Request::get("/v1/models/mlp").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({ "name": "mlp", "ready": true }));
    let answer = send(&state, Request::get("/v1/models/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let (_, x) = npz("digits-test.npz", "x");
    let answer = post_json(
        &state,
        "/v1/models/mlp:predict",
        &json!({ "instances": [&x[..64], &x[64..128]] }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.error());
    let predictions = answer.json()["predictions"].as_array().unwrap().clone();
    assert_eq!(predictions.len(), 2);
    assert_eq!(predictions[0].as_array().unwrap().len(), 10);
    // V2's processing flag needs a spec.
    let request = json!({ "parameters": { "processing": true }, "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": &x[..64] }] });
    let answer = post_json(&state, "/v2/models/mlp/infer", &request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("no processing spec"), "{}", answer.error());
}

#[test]
fn specs_that_do_not_fit_the_model_stop_the_server_naming_the_field() {
    let cases = [
        ("inputs:\n  - name: picture\n    image: {}\n", "inputs[0].name", "no input \"picture\""),
        (
            "inputs:\n  - name: image\n    image: {width: 28}\n",
            "inputs[0].image.width",
            "axis 3 is 8",
        ),
        (
            "outputs:\n  - name: logits\n    topK: {labels: [a, b, c]}\n",
            "outputs[0].topK.labels",
            "3 labels, but output \"logits\" has 10 values per row",
        ),
        (
            "outputs:\n  - name: logits\n    topK: {labelsFile: missing.txt}\n",
            "outputs[0].topK.labelsFile",
            "missing.txt",
        ),
    ];
    for (yaml, field, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spec.yaml");
        std::fs::write(&file, yaml).unwrap();
        let processing = ProcessingConfig::from_file(&file).unwrap();
        let cfg = config(Path::new("digits-cnn.onnx"), "m");
        let state = AppState::new(&cfg);
        let err = state
            .install_processed(load(&real_model("digits-cnn.onnx")), Some(&processing))
            .unwrap_err();
        assert!(matches!(err, ServeError::Processing(_)), "{err}");
        let message = err.to_string();
        assert!(message.contains(field) && message.contains(reason), "{yaml}: {message}");
    }
}
