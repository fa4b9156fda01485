//! Interoperability of `tractor optimize`: every ONNX model it writes loads
//! in ONNX Runtime and agrees with tract. The check is
//! `tests/optimize/ort_check.py`.
//!
//! Python comes from `$TRACTOR_PYTHON`, else `$HOME/.cache/tractor/venv/bin/python`.
//! Without it the test is skipped with the reason, except under `CI=true`,
//! where it fails.

#[path = "common/onnx_builder.rs"]
mod onnx_builder;
#[path = "common/python.rs"]
mod python;
#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tractor::engine::{EngineOptions, Model, Tensor, TensorData};

/// Rows of validation data compared.
const ROWS: usize = 64;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("models")
}

fn read_x(data: &Path, rows: usize) -> Tensor {
    let bytes = std::fs::read(data).unwrap();
    let d = tractor::optimize::Dataset::parse(&data.to_string_lossy(), &bytes).unwrap();
    d.get("x").unwrap().rows(0, rows).unwrap()
}

/// digits features [N, 64] -> MatMul 64x16 + Add -> BatchNormalization ->
/// Relu -> MatMul 16x10: the MatMul + BN fold on a model no exporter here
/// writes, and the result checked in ONNX Runtime.
fn matmul_bn_model() -> Vec<u8> {
    use onnx_builder::{D, FLOAT, f32_tensor, model, node, value_info, weights};
    let mut bn = node("BatchNormalization", &["h", "scale", "shift", "mean", "var"], &["n"]);
    bn.attribute.push(tract_onnx::pb::AttributeProto {
        name: "epsilon".into(),
        r#type: 1,
        f: 1e-3,
        ..Default::default()
    });
    let var: Vec<f32> = weights(16, 7, 1.0).iter().map(|v| v * v + 0.1).collect();
    model(
        "matmul_bn",
        vec![value_info("x", FLOAT, &[D::Named("batch"), D::Fixed(64)])],
        vec![value_info("y", FLOAT, &[D::Named("batch"), D::Fixed(10)])],
        vec![
            node("MatMul", &["x", "w1"], &["m"]),
            node("Add", &["m", "b1"], &["h"]),
            bn,
            node("Relu", &["n"], &["r"]),
            node("MatMul", &["r", "w2"], &["y"]),
        ],
        vec![
            f32_tensor("w1", &[64, 16], weights(64 * 16, 1, 0.1)),
            f32_tensor("b1", &[16], weights(16, 2, 0.5)),
            f32_tensor("scale", &[16], weights(16, 3, 2.0)),
            f32_tensor("shift", &[16], weights(16, 4, 1.0)),
            f32_tensor("mean", &[16], weights(16, 5, 1.0)),
            f32_tensor("var", &[16], var),
            f32_tensor("w2", &[16, 10], weights(160, 6, 0.5)),
        ],
    )
}

#[test]
fn every_optimized_model_agrees_with_onnx_runtime() {
    let Some(python) = python::python_with("onnxruntime, numpy") else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = models_dir();
    let calibration = m.join("digits-calibration.npz").to_string_lossy().to_string();
    let calibration_images = m.join("digits-calibration-images.npz").to_string_lossy().to_string();
    // MatMulNBits is only chosen when measured faster; force it here so its
    // ONNX Runtime compatibility is checked too.
    let nbits = dir.path().join("nbits.yaml");
    std::fs::write(&nbits, "passes:\n  - type: quantize\n    mode: weight-int4\n    blockSize: 32\n    fallback: false\n").unwrap();
    let nbits = nbits.to_string_lossy().to_string();
    let soup = dir.path().join("soup.yaml");
    let v1 = m.join("digits-mlp-v1.onnx");
    std::fs::write(
        &soup,
        format!(
            "passes:\n  - type: merge\n    mode: average\n    models: [{:?}]\n",
            v1.to_string_lossy()
        ),
    )
    .unwrap();
    let soup = soup.to_string_lossy().to_string();
    // Block-wise int8 weights (the standard-ops form), forced so it is written.
    let int8_block = dir.path().join("int8-block.yaml");
    std::fs::write(&int8_block, "passes:\n  - type: quantize\n    mode: weight-int8\n    blockSize: 16\n    fallback: false\n").unwrap();
    let int8_block = int8_block.to_string_lossy().to_string();
    let matmul_bn = dir.path().join("matmul-bn.onnx");
    std::fs::write(&matmul_bn, matmul_bn_model()).unwrap();
    let matmul_bn = matmul_bn.to_string_lossy().to_string();
    // (name, model, data, optimize flags, relative tolerance). The int8
    // forms that multiply integers keep weights within ±64, so no x86
    // kernel saturates (issue 17: ±127 weights moved ONNX Runtime's
    // outputs by 3.73 of 25.2 on an AVX2-only EPYC; see
    // tests/optimize/saturation.py). dynamic-int8 then agrees exactly
    // (measured 0.0), held to 1e-4 like the float forms; static-int8
    // measured 1.0e-3 (MLP) and 1.9e-3 (CNN) of the output scale: ONNX
    // Runtime fuses the QDQ pairs into an integer product and requantizes,
    // tract multiplies the dequantized floats, so the sums round apart;
    // 5e-3 holds that with margin, a quarter of the old 2e-2. MatMulNBits
    // differed by 2.4e-4 of the output scale while its scales were plain
    // floats: tract stores them as f16 (its Q4_0 format); they are written
    // f16-exact now, and the engines agree like the other float forms.
    let cases: Vec<(&str, &str, &str, Vec<String>, f64)> = vec![
        (
            "fold-cnn-bn",
            "digits-cnn-bn.onnx",
            "digits-test-images.npz",
            vec!["--fold".into()],
            1e-4,
        ),
        ("fold-matmul-bn", &matmul_bn, "digits-test.npz", vec!["--fold".into()], 1e-4),
        (
            "weight-int8-block-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--recipe".into(), int8_block],
            1e-4,
        ),
        (
            "dynamic-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--quantize".into(), "dynamic-int8".into()],
            1e-4,
        ),
        (
            "dynamic-cnn",
            "digits-cnn.onnx",
            "digits-test-images.npz",
            vec!["--quantize".into(), "dynamic-int8".into()],
            1e-4,
        ),
        (
            "weight-int8-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--quantize".into(), "weight-int8".into()],
            1e-4,
        ),
        (
            "static-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--quantize".into(), "static-int8".into(), "--calibration".into(), calibration],
            5e-3,
        ),
        (
            "static-cnn",
            "digits-cnn.onnx",
            "digits-test-images.npz",
            vec![
                "--quantize".into(),
                "static-int8".into(),
                "--calibration".into(),
                calibration_images,
            ],
            5e-3,
        ),
        (
            "int4-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--quantize".into(), "weight-int4".into()],
            1e-4,
        ),
        (
            "int4-cnn",
            "digits-cnn.onnx",
            "digits-test-images.npz",
            vec!["--quantize".into(), "weight-int4".into()],
            1e-4,
        ),
        (
            "int4-nbits-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--recipe".into(), nbits],
            1e-4,
        ),
        (
            "average-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--recipe".into(), soup],
            1e-4,
        ),
        (
            "int4-sklearn",
            "digits-sklearn-mlp.onnx",
            "digits-test.npz",
            vec!["--quantize".into(), "weight-int4".into()],
            1e-4,
        ),
        (
            "structured-mlp",
            "digits-mlp-v2.onnx",
            "digits-test.npz",
            vec!["--prune".into(), "structured:0.5".into()],
            1e-4,
        ),
        (
            "structured-cnn",
            "digits-cnn.onnx",
            "digits-test-images.npz",
            vec!["--prune".into(), "structured:0.5".into()],
            1e-4,
        ),
        (
            "magnitude-diabetes",
            "diabetes-mlp.onnx",
            "diabetes-test.npz",
            vec!["--prune".into(), "magnitude:0.8".into()],
            1e-4,
        ),
    ];
    let mut failures = Vec::new();
    for (name, model, data, flags, tolerance) in &cases {
        let out = dir.path().join(format!("{name}.onnx"));
        let status = Command::new(env!("CARGO_BIN_EXE_tractor"))
            .arg("optimize")
            .arg("--input")
            .arg(m.join(model))
            .arg("--output")
            .arg(&out)
            .args(flags)
            .args(["--no-measure", "--report"])
            .arg(dir.path().join(format!("{name}.json")))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{name}: tractor optimize failed");
        // tract's answer on the same rows.
        let x = read_x(&m.join(data), ROWS);
        let loaded = Model::load_path(&out, &EngineOptions::default()).unwrap();
        let outputs = loaded.run(&[x]).unwrap();
        let first = outputs.iter().find(|t| matches!(t.data, TensorData::F32(_))).unwrap();
        let TensorData::F32(values) = &first.data else { unreachable!() };
        let tract_path = dir.path().join(format!("{name}.f32"));
        std::fs::write(
            &tract_path,
            values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        let check = Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/optimize/ort_check.py"))
            .arg(&out)
            .arg(m.join(data))
            .arg(&tract_path)
            .arg(ROWS.to_string())
            .arg(tolerance.to_string())
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&check.stdout).trim().to_string();
        eprintln!("{name}: {line}{}", String::from_utf8_lossy(&check.stderr));
        if !check.status.success() {
            failures.push(format!("{name}: {line} {}", String::from_utf8_lossy(&check.stderr)));
        }
    }
    assert!(failures.is_empty(), "ONNX Runtime disagrees:\n{}", failures.join("\n"));
    // The MatMul + BN case really folded (the file agreeing proves nothing
    // if the BN was left in).
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("fold-matmul-bn.json")).unwrap())
            .unwrap();
    assert_eq!(report["passes"][0]["notes"]["foldedBatchNorms"], 1, "{report}");
    assert_eq!(report["passes"][0]["notes"]["fusedGemms"], 1, "{report}");
    // The CNN's Conv layers really are 4-bit (not skipped and left fp32).
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("int4-cnn.json")).unwrap()).unwrap();
    let layers = report["passes"][0]["notes"]["layers"].as_array().unwrap();
    let convs: Vec<&str> =
        layers.iter().filter(|l| l["op"] == "Conv").map(|l| l["form"].as_str().unwrap()).collect();
    assert!(!convs.is_empty() && convs.iter().all(|f| *f == "int4-unpacked"), "{report}");
}

/// Issue 17: dynamic int8 of an exported transformer (tiny-bert: MatMuls on
/// [batch, seq, hidden] activations, two Gemms) loads in ONNX Runtime and
/// keeps top-1 within 1 point of fp32 on its 400-sentence test set. The
/// pass runs through the library, unmeasured: tract's own loading of the
/// model is another change's (issue 17's first part), and the optimizer's
/// driver loads the model in tract before and after.
#[test]
fn dynamic_int8_of_tiny_bert_keeps_top1_in_onnx_runtime() {
    use tractor::crd::recipe::{Quantize, QuantizeMode};
    use tractor::optimize::{Context, graph, quantize};
    let Some(python) = python::python_with("onnxruntime, numpy") else { return };
    let dir = tempfile::tempdir().unwrap();
    let fp32 = models_dir().join("tiny-bert-sentiment.onnx");
    let model = graph::decode(&std::fs::read(&fp32).unwrap()).unwrap();
    let ctx = Context { measure: false, ..Context::default() };
    let (out, notes) =
        quantize::quantize(&model, &Quantize::new(QuantizeMode::DynamicInt8), &ctx).unwrap();
    // 12 MatMuls with a weight and the 2 Gemms; the attention products
    // (two activations) are not layers.
    assert_eq!(notes.layers.len(), 14, "{notes:?}");
    assert!(notes.layers.iter().all(|l| l.form == "dynamic-int8"), "{notes:?}");
    let quantized = dir.path().join("tiny-bert-dynamic.onnx");
    std::fs::write(&quantized, graph::encode(&out)).unwrap();
    let check = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/optimize/bert_check.py"))
        .arg(&fp32)
        .arg(&quantized)
        .arg(models_dir().join("tiny-bert-test.npz"))
        .arg("1")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&check.stdout).trim().to_string();
    eprintln!("tiny-bert dynamic-int8: {line}{}", String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{line} {}", String::from_utf8_lossy(&check.stderr));
}
