//! `tractor optimize` and `tractor merge` end to end on the real models in
//! `tests/models`: sizes, accuracy drops, the gate, merges. No timings here
//! (`--no-measure`); speed figures live in `benches/optimize.sh`.

#[path = "common/onnx_builder.rs"]
mod onnx_builder;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tractor::engine::{EngineOptions, Model, TensorData};
use tractor::optimize::Dataset;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("models")
}

fn tractor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tractor"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run tractor")
}

/// Runs `tractor optimize` on a model of `tests/models` with flags,
/// unmeasured; returns the report.
fn optimize(dir: &Path, model: &str, name: &str, flags: &[&str]) -> (Output, Value, PathBuf) {
    let unmeasured = [&["--no-measure"][..], flags].concat();
    optimize_file(dir, &models().join(model), name, &unmeasured)
}

/// Runs `tractor optimize` on `input` with exactly these flags, writing
/// `dir/NAME.onnx` and its report `dir/NAME.json`.
fn optimize_file(dir: &Path, input: &Path, name: &str, flags: &[&str]) -> (Output, Value, PathBuf) {
    let out = dir.join(format!("{name}.onnx"));
    let report = dir.join(format!("{name}.json"));
    let mut args =
        vec!["optimize", "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()];
    args.extend(["--report", report.to_str().unwrap()]);
    args.extend(flags);
    let output = tractor(&args);
    let json =
        std::fs::read(&report).map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or(Value::Null);
    (output, json, out)
}

fn data(name: &str) -> String {
    models().join(name).to_string_lossy().to_string()
}

fn size_ratio(report: &Value) -> f64 {
    report["optimized"]["fileBytes"].as_f64().unwrap()
        / report["original"]["fileBytes"].as_f64().unwrap()
}

#[test]
fn int8_modes_are_small_and_keep_digits_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let test = data("digits-test.npz");
    let calibration = data("digits-calibration.npz");
    for (model, mode) in [
        ("digits-mlp-v1.onnx", "dynamic-int8"),
        ("digits-mlp-v2.onnx", "dynamic-int8"),
        ("digits-mlp-v2.onnx", "static-int8"),
        ("digits-sklearn-mlp.onnx", "dynamic-int8"),
    ] {
        let name = format!("{model}-{mode}");
        let mut flags = vec![
            "--quantize",
            mode,
            "--validate",
            &test,
            "--metric",
            "accuracy",
            "--max-drop",
            "1",
        ];
        if mode == "static-int8" {
            flags.extend(["--calibration", &calibration]);
        }
        let (output, report, out) = optimize(dir.path(), model, &name, &flags);
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(out.exists());
        let gate = &report["validation"];
        assert!(gate["drop"].as_f64().unwrap() <= 1.0, "{name}: {gate}");
        assert!(gate["original"].as_f64().unwrap() > 85.0, "{name}: {gate}");
        let ratio = size_ratio(&report);
        // The sklearn MLP is small enough that its graph overhead shows.
        if model.starts_with("digits-mlp") {
            assert!(ratio <= 0.30, "{name}: size ratio {ratio}");
        }
    }
}

#[test]
fn static_int8_on_the_cnn_with_each_calibration_method() {
    let dir = tempfile::tempdir().unwrap();
    let test = data("digits-test-images.npz");
    let calibration = data("digits-calibration-images.npz");
    for method in ["minmax", "entropy", "percentile"] {
        let recipe = dir.path().join(format!("{method}.yaml"));
        let method_yaml = if method == "percentile" {
            "\n      method: percentile\n      percentile: 99.99".to_string()
        } else {
            format!("\n      method: {method}")
        };
        std::fs::write(&recipe, format!("passes:\n  - type: fold\n  - type: quantize\n    mode: static-int8\n    calibrationMethod:{method_yaml}\n")).unwrap();
        let (output, report, _) = optimize(
            dir.path(),
            "digits-cnn.onnx",
            method,
            &[
                "--recipe",
                recipe.to_str().unwrap(),
                "--calibration",
                &calibration,
                "--validate",
                &test,
                "--max-drop",
                "1",
            ],
        );
        assert!(output.status.success(), "{method}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(
            report["validation"]["drop"].as_f64().unwrap() <= 1.0,
            "{method}: {}",
            report["validation"]
        );
        let layers = report["passes"][1]["notes"]["layers"].as_array().unwrap();
        assert!(layers.iter().all(|l| l["form"] == "static-int8"), "{layers:?}");
    }
}

#[test]
fn weight_int4_is_a_fifth_of_the_mlp() {
    let dir = tempfile::tempdir().unwrap();
    let test = data("digits-test.npz");
    let (output, report, _) = optimize(
        dir.path(),
        "digits-mlp-v2.onnx",
        "int4",
        &["--quantize", "weight-int4", "--validate", &test, "--max-drop", "5"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(size_ratio(&report) <= 0.20, "{}", size_ratio(&report));
    eprintln!("weight-int4 accuracy drop: {}", report["validation"]["drop"]);
    // Issue 14: progress between the first line and the last, in order.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let at = |line: &str| stderr.find(line).unwrap_or_else(|| panic!("no {line:?} in {stderr}"));
    assert!(at("pass 1 of 1 (quantize) started") < at("pass applied"), "{stderr}");
    assert!(at("pass applied") < at("accuracy gate: both models"), "{stderr}");
}

/// Issue 14: per-layer work inside a pass says how far it is. The one
/// measured run of this file (timing each layer's forms is what takes long
/// on a large model); the figures are not checked, only the progress.
#[test]
fn per_layer_timing_reports_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let input = models().join("digits-mlp-v2.onnx");
    let (output, report, _) =
        optimize_file(dir.path(), &input, "timed", &["--quantize", "weight-int8"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let layers = report["passes"][0]["notes"]["layers"].as_array().unwrap();
    assert!(layers.len() > 1, "{layers:?}");
    let n = layers.len();
    let at = |line: &str| stderr.find(line).unwrap_or_else(|| panic!("no {line:?} in {stderr}"));
    // No terminal here: log lines, the first and the last always, each
    // naming its node.
    let first = at(&format!("timing layers: 1 of {n} ({})", layers[0]["node"].as_str().unwrap()));
    let last =
        at(&format!("timing layers: {n} of {n} ({})", layers[n - 1]["node"].as_str().unwrap()));
    assert!(at("pass 1 of 1 (quantize) started") < first, "{stderr}");
    assert!(first < last && last < at("pass applied"), "{stderr}");
}

/// Issue 17's size request: `weight-int4` of a 34 MB MLP wrote 0.58 of the
/// fp32 file, its big layers kept fp32. Layers over tract's folding budget
/// now take the split 4-bit form (which unpacks once at load); unmeasured
/// here, so the outcome is the form's, not this machine's timing (the
/// measured run is in docs/optimize.md).
#[test]
fn weight_int4_of_a_34_mb_mlp_is_under_a_fifth() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mlp-34mb.onnx");
    // 1024 -> 2048 -> 2048 -> 1024: 8.4 M weights, 33.6 MB, every layer
    // 8 MiB or more of fp32, past tract's 4 MiB folding budget.
    std::fs::write(&input, onnx_builder::mlp("mlp_34mb", &[1024, 2048, 2048, 1024])).unwrap();
    let fp32_bytes = std::fs::metadata(&input).unwrap().len();
    assert!((33_000_000..35_000_000).contains(&fp32_bytes), "{fp32_bytes}");
    let flags = ["--quantize", "weight-int4", "--no-measure"];
    let (output, report, out) = optimize_file(dir.path(), &input, "mlp-34mb-int4", &flags);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ratio = size_ratio(&report);
    assert!(ratio <= 0.20, "{ratio}");
    let notes = &report["passes"][0]["notes"];
    let forms: Vec<&str> =
        notes["layers"].as_array().unwrap().iter().map(|l| l["form"].as_str().unwrap()).collect();
    assert_eq!(forms, vec!["int4-unpacked-split"; 3], "{notes}");
    assert_eq!(notes["maxSlowdown"], 1.1, "{notes}");
    // And it computes what fp32 computes, within 4 bits: measured 0.204
    // of the largest output on these smooth synthetic weights (sums of
    // 2048 terms that mostly cancel); a wrong layout errs by the outputs'
    // own size.
    let rows = 4;
    let x: Vec<f32> = onnx_builder::weights(rows * 1024, 9, 1.0);
    let run = |path: &Path| {
        let m = Model::load_path(path, &EngineOptions::default()).unwrap();
        let t = tractor::engine::Tensor::new(vec![rows, 1024], TensorData::F32(x.clone())).unwrap();
        let TensorData::F32(y) = m.run(&[t]).unwrap().remove(0).data else { panic!() };
        y
    };
    let (exact, int4) = (run(&input), run(&out));
    let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = exact.iter().zip(&int4).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err < 0.3 * scale, "{err} of {scale}");
}

#[test]
fn weight_int4_covers_the_cnn_convs() {
    let dir = tempfile::tempdir().unwrap();
    let test = data("digits-test-images.npz");
    let (output, report, _) = optimize(
        dir.path(),
        "digits-cnn.onnx",
        "cnn-int4",
        &["--quantize", "weight-int4", "--validate", &test, "--max-drop", "1"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Every layer 4-bit, Conv included (0.197 of the file, drop 0.0 when written).
    let notes = &report["passes"][0]["notes"];
    assert_eq!(notes["skipped"].as_array().unwrap().len(), 0, "{notes}");
    let layers = notes["layers"].as_array().unwrap();
    assert_eq!(layers.iter().filter(|l| l["op"] == "Conv").count(), 2, "{notes}");
    assert!(layers.iter().all(|l| l["form"] == "int4-unpacked"), "{notes}");
    assert!(size_ratio(&report) <= 0.21, "{}", size_ratio(&report));
}

#[test]
fn structured_pruning_halves_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let test = data("digits-test.npz");
    let (output, report, out) = optimize(
        dir.path(),
        "digits-mlp-v2.onnx",
        "structured",
        &["--prune", "structured:0.5", "--validate", &test, "--max-drop", "100"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let before = report["original"]["parameters"].as_f64().unwrap();
    let after = report["optimized"]["parameters"].as_f64().unwrap();
    // Hidden units halve; the input and output widths stay, so the middle
    // layer shrinks to a quarter and the outer ones to a half.
    assert!(after / before < 0.55 && after / before > 0.3, "{before} -> {after}");
    let m = Model::load_path(&out, &EngineOptions::default()).unwrap();
    assert_eq!(m.outputs()[0].v2_shape(), vec![-1, 10]);
}

#[test]
fn magnitude_sparsity_matches_and_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut last_gzip = u64::MAX;
    for sparsity in ["0.5", "0.8", "0.9"] {
        let (output, report, _) = optimize(
            dir.path(),
            "digits-mlp-v2.onnx",
            &format!("magnitude-{sparsity}"),
            &["--prune", &format!("magnitude:{sparsity}")],
        );
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let measured = report["passes"][0]["notes"]["sparsity"].as_f64().unwrap();
        let target: f64 = sparsity.parse().unwrap();
        assert!((measured - target).abs() < 1e-3, "{measured} vs {target}");
        let gzip = report["optimized"]["gzipBytes"].as_u64().unwrap();
        assert!(gzip < last_gzip, "gzip {gzip} not below {last_gzip}");
        last_gzip = gzip;
    }
}

#[test]
fn the_gate_refuses_an_over_pruned_model_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let test = data("digits-test.npz");
    // A stale file where the output goes must not survive a refusal.
    std::fs::write(dir.path().join("over.onnx"), b"stale").unwrap();
    let (output, report, out) = optimize(
        dir.path(),
        "digits-mlp-v2.onnx",
        "over",
        &[
            "--prune",
            "magnitude:0.99",
            "--validate",
            &test,
            "--metric",
            "accuracy",
            "--max-drop",
            "1",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("accuracy gate refused"), "{stderr}");
    assert!(!out.exists(), "the refused model was left behind");
    assert_eq!(report["passed"], false);
    assert!(report["reason"].as_str().unwrap().contains("more than the allowed 1"), "{report}");
}

#[test]
fn fold_then_convert_writes_an_nnef_tar_the_engine_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (output, report, out) =
        optimize(dir.path(), "digits-cnn-bn.onnx", "bn", &["--fold", "--convert", "nnef"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(report["outputFormat"], "nnef");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.get(257..262), Some(&b"ustar"[..]), "an uncompressed tar");
    let nnef =
        Model::load(&bytes, tractor::engine::ModelFormat::Nnef, &EngineOptions::default()).unwrap();
    let onnx =
        Model::load_path(&models().join("digits-cnn-bn.onnx"), &EngineOptions::default()).unwrap();
    let d =
        Dataset::parse("x.npz", &std::fs::read(models().join("digits-test-images.npz")).unwrap())
            .unwrap();
    let x = d.get("x").unwrap().rows(0, 16).unwrap();
    let (a, b) = (&onnx.run(std::slice::from_ref(&x)).unwrap()[0], &nnef.run(&[x]).unwrap()[0]);
    let (TensorData::F32(a), TensorData::F32(b)) = (&a.data, &b.data) else { panic!() };
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * scale));
}

#[test]
fn merge_compose_and_average_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = models().join("digits-mlp-v1.onnx");
    let v2 = models().join("digits-mlp-v2.onnx");
    let soup = dir.path().join("soup.onnx");
    let out = tractor(&[
        "merge",
        "average",
        v1.to_str().unwrap(),
        v2.to_str().unwrap(),
        "--output",
        soup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d =
        Dataset::parse("x.npz", &std::fs::read(models().join("digits-test.npz")).unwrap()).unwrap();
    let m = Model::load_path(&soup, &EngineOptions::default()).unwrap();
    assert!(
        tractor::optimize::evaluate::evaluate(&m, &d, tractor::crd::recipe::Metric::Accuracy)
            .unwrap()
            > 50.0
    );
    // A CNN and an MLP are not one architecture.
    let cnn = models().join("digits-cnn.onnx");
    let refused = tractor(&[
        "merge",
        "average",
        v1.to_str().unwrap(),
        cnn.to_str().unwrap(),
        "--output",
        dir.path().join("no.onnx").to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("differs"));
    // Compose: the digits MLP's logits [b, 10] feed the diabetes MLP,
    // which takes [b, 10] features; a nonsense model, a real wiring check.
    let diabetes = models().join("diabetes-mlp.onnx");
    let chained = dir.path().join("chained.onnx");
    let out = tractor(&[
        "merge",
        "compose",
        v2.to_str().unwrap(),
        diabetes.to_str().unwrap(),
        "--map",
        "logits=features",
        "--output",
        chained.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = Model::load_path(&v2, &EngineOptions::default()).unwrap();
    let second = Model::load_path(&diabetes, &EngineOptions::default()).unwrap();
    let both = Model::load_path(&chained, &EngineOptions::default()).unwrap();
    let x = d.get("x").unwrap().rows(0, 8).unwrap();
    let expected = &second.run(&first.run(std::slice::from_ref(&x)).unwrap()).unwrap()[0];
    let got = &both.run(&[x]).unwrap()[0];
    let (TensorData::F32(e), TensorData::F32(g)) = (&expected.data, &got.data) else { panic!() };
    assert!(
        e.iter().zip(g).all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0)),
        "{e:?} vs {g:?}"
    );
}

#[test]
fn convert_can_fix_the_batch_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.yaml");
    std::fs::write(
        &recipe,
        "passes:\n  - type: convert\n    format: nnef\n    batch: 4\n    compress: true\n",
    )
    .unwrap();
    let (output, report, out) = optimize(
        dir.path(),
        "digits-mlp-v2.onnx",
        "fixed",
        &["--recipe", recipe.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(report["outputFormat"], "nnef");
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(&[0x1f, 0x8b]), "gzip");
    let m =
        Model::load(&bytes, tractor::engine::ModelFormat::Nnef, &EngineOptions::default()).unwrap();
    assert_eq!(m.inputs()[0].v2_shape(), vec![4, 64]);
}
