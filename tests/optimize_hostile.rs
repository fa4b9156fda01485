//! Hostile ONNX files through `tractor optimize` (every pass) and through
//! the engine's load: each is refused with a message naming what is wrong,
//! no process aborts or panics, and memory stays bounded (the optimizer
//! runs under an address-space limit, so an allocation sized by a hostile
//! dimension would kill it instead of passing quietly).

#[path = "common/onnx_builder.rs"]
mod onnx_builder;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use onnx_builder::{D, FLOAT, INT64, model, node, value_info};
use tract_onnx::pb;
use tractor::engine::{EngineOptions, Model, ModelFormat};

/// Address space the optimizer child may reserve: tract, tokio and the
/// binary take well under this on these small files, while one buffer sized
/// by a hostile dimension (16 GiB in issue 11) does not fit.
const CHILD_ADDRESS_SPACE: u64 = 4 << 30;

fn tensor(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type,
        raw_data: raw,
        ..Default::default()
    }
}

/// `x` [batch, 4] -> MatMul `w` -> `y` [batch, 4], with `w` as given.
fn matmul_with(w: pb::TensorProto) -> Vec<u8> {
    model(
        "hostile",
        vec![value_info("x", FLOAT, &[D::Named("batch"), D::Fixed(4)])],
        vec![value_info("y", FLOAT, &[D::Named("batch"), D::Fixed(4)])],
        vec![node("MatMul", &["x", "w"], &["y"])],
        vec![w],
    )
}

fn i64s(name: &str, v: &[i64]) -> pb::TensorProto {
    tensor(name, INT64, &[v.len() as i64], v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Each hostile file, and a part of the message its refusal must carry.
fn hostile() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut external = tensor("w", FLOAT, &[4, 4], vec![]);
    external.data_location = Some(1);
    external.external_data.push(pb::StringStringEntryProto {
        key: "location".into(),
        value: "../../../etc/passwd".into(),
    });
    let cycle = model(
        "cycle",
        vec![value_info("x", FLOAT, &[D::Named("batch"), D::Fixed(4)])],
        vec![value_info("y", FLOAT, &[D::Named("batch"), D::Fixed(4)])],
        vec![
            node("Add", &["x", "b"], &["a"]),
            node("Relu", &["a"], &["b"]),
            node("MatMul", &["b", "w"], &["y"]),
        ],
        vec![onnx_builder::f32_tensor("w", &[4, 4], vec![0.5; 16])],
    );
    let fill = model(
        "fill",
        vec![value_info("x", FLOAT, &[D::Named("batch"), D::Fixed(4)])],
        vec![value_info("y", FLOAT, &[D::Named("batch"), D::Fixed(4)])],
        vec![node("ConstantOfShape", &["shape"], &["big"]), node("Add", &["x", "big"], &["y"])],
        vec![i64s("shape", &[1 << 20, 1 << 20])],
    );
    let mut declared_huge = tract_onnx::pb::ModelProto::default();
    {
        use prost::Message;
        declared_huge
            .merge(&matmul_with(onnx_builder::f32_tensor("w", &[4, 4], vec![1.0; 16]))[..])
            .unwrap();
        let g = declared_huge.graph.as_mut().unwrap();
        g.value_info.push(value_info("y", FLOAT, &[D::Fixed(1 << 40), D::Fixed(1 << 40)]));
    }
    let declared_huge = prost::Message::encode_to_vec(&declared_huge);
    vec![
        // Issue 11: 2^32 x 2^32 wraps to 0 in 64-bit arithmetic, which
        // matched the empty data, then sized two 16 GiB buffers.
        (
            "dims-wrap-to-zero",
            matmul_with(tensor("w", FLOAT, &[1 << 32, 1 << 32], vec![])),
            "4294967296",
        ),
        (
            "declared-terabytes",
            matmul_with(tensor("w", FLOAT, &[1 << 20, 1 << 20], vec![])),
            "over the budget",
        ),
        (
            "zero-frees-the-rest",
            matmul_with(tensor("w", FLOAT, &[0, 1 << 40], vec![])),
            "a dimension of 1099511627776",
        ),
        (
            "raw-data-short",
            matmul_with(tensor("w", FLOAT, &[4, 4], vec![0; 12])),
            "declares 64 bytes of raw_data for dims [4, 4] but holds 12",
        ),
        (
            "negative-dim",
            matmul_with(tensor("w", FLOAT, &[-4, 4], vec![])),
            "negative dimension -4",
        ),
        (
            "external-outside",
            matmul_with(external),
            "not a relative path inside the model's folder",
        ),
        ("cycle", cycle, "cycle through node"),
        ("constant-of-shape", fill, "ConstantOfShape"),
        ("declared-value", declared_huge, "value \"y\""),
    ]
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("models")
}

/// `tractor optimize` under the address-space limit; returns whether it
/// exited (not killed), its code and stderr.
fn optimize(input: &Path, out: &Path, flags: &[String]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tractor"));
    cmd.arg("optimize")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--no-measure"])
        .args(flags)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let limit =
                libc::rlimit { rlim_cur: CHILD_ADDRESS_SPACE, rlim_max: CHILD_ADDRESS_SPACE };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = cmd.output().expect("run tractor optimize");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn every_pass_refuses_each_hostile_file_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let calibration = models().join("digits-calibration.npz").to_string_lossy().to_string();
    let good = models().join("digits-mlp-v2.onnx");
    let mut passes: Vec<Vec<String>> = [
        "--fold",
        "--prune=magnitude:0.5",
        "--prune=structured:0.5",
        "--quantize=dynamic-int8",
        "--quantize=weight-int8",
        "--quantize=weight-int4",
        "--convert=nnef",
    ]
    .iter()
    .map(|f| vec![f.to_string()])
    .collect();
    passes.push(vec!["--quantize=static-int8".into(), "--calibration".into(), calibration]);
    let mut failures = Vec::new();
    for (name, bytes, expected) in hostile() {
        let input = dir.path().join(format!("{name}.onnx"));
        std::fs::write(&input, &bytes).unwrap();
        // A merge reads the hostile file as its second model.
        let merge = dir.path().join(format!("{name}-merge.yaml"));
        std::fs::write(
            &merge,
            format!("passes:\n  - type: merge\n    mode: average\n    models: [{:?}]\n", input),
        )
        .unwrap();
        let mut runs: Vec<(PathBuf, Vec<String>)> =
            passes.iter().map(|p| (input.clone(), p.clone())).collect();
        runs.push((good.clone(), vec!["--recipe".into(), merge.to_string_lossy().to_string()]));
        for (model, flags) in runs {
            let out = dir.path().join(format!("{name}-out.onnx"));
            let (code, stderr) = optimize(&model, &out, &flags);
            let ok = code == Some(1)
                && stderr.contains(expected)
                && !stderr.contains("panicked")
                && !out.exists();
            if !ok {
                failures.push(format!("{name} {flags:?}: exit {code:?}: {stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_engine_refuses_each_hostile_file_before_tract_builds_it() {
    for (name, bytes, expected) in hostile() {
        let loaded = std::panic::catch_unwind(|| {
            Model::load(&bytes, ModelFormat::Onnx, &EngineOptions::default()).map(|_| ())
        });
        let message = match loaded {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(())) => panic!("{name}: loaded"),
            Err(_) => panic!("{name}: the engine panicked"),
        };
        assert!(message.starts_with("the model file: "), "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[test]
fn the_dims_wrap_file_is_the_150_byte_kind_of_issue_11() {
    let (_, bytes, _) = hostile().into_iter().next().unwrap();
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
}

#[test]
fn a_memory_budget_too_small_for_the_weights_is_named_in_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    // digits-mlp-v2 declares about 200 KB of weights; 1 MiB / 8 is 128 KiB.
    let input = models().join("digits-mlp-v2.onnx");
    let (code, stderr) =
        optimize(&input, &out, &["--quantize=weight-int8".into(), "--memory-budget=1Mi".into()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("1/8 of its memory budget; set --memory-budget"), "{stderr}");
    assert!(stderr.contains("over the budget of 131072 bytes"), "{stderr}");
    let (code, stderr) =
        optimize(&input, &out, &["--quantize=weight-int8".into(), "--memory-budget=64Mi".into()]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = optimize(&input, &out, &["--memory-budget=lots".into()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown size suffix \"lots\""), "{stderr}");
}
