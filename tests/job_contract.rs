//! The optimization Job's contract end to end: `tractor optimize
//! --termination-message` writes what the controller reads back into a
//! `ModelVersion` (or into the refusal it reports).

mod common;

use std::process::Command;

use common::real_model_uri;
use tractor::plan::JobState;

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

fn optimize(extra: &[&str], dir: &std::path::Path) -> (bool, String) {
    let message = dir.join("termination-log");
    let status = Command::new(TRACTOR)
        .args(["optimize", "--input", &real_model_uri("digits-mlp-v2.onnx")])
        .args(["--output", dir.join("out.onnx").to_str().unwrap()])
        .args([
            "--validate",
            &real_model_uri("digits-test.npz"),
            "--metric",
            "accuracy",
            "--no-measure",
        ])
        .args(["--report", dir.join("report.json").to_str().unwrap()])
        .args(["--termination-message", message.to_str().unwrap()])
        .args(extra)
        .status()
        .unwrap();
    (status.success(), std::fs::read_to_string(message).unwrap_or_default())
}

#[test]
fn a_passing_optimization_becomes_a_registered_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, message) =
        optimize(&["--fold", "--quantize", "weight-int8", "--max-drop", "1"], dir.path());
    assert!(ok, "{message}");
    match tractor::plan::JobState::from_termination_message(true, Some(&message)) {
        JobState::Succeeded { artifact, size_bytes, metrics } => {
            let bytes = std::fs::read(dir.path().join("out.onnx")).unwrap();
            assert_eq!(
                artifact.sha256.as_deref(),
                Some(tractor::store::sha256_hex(&bytes).as_str())
            );
            assert_eq!(size_bytes, Some(bytes.len() as u64));
            assert!(metrics.accuracy.unwrap() > 90.0, "{metrics:?}");
            assert!(metrics.summary.unwrap().starts_with("accuracy="));
        }
        other => panic!("{other:?} from {message}"),
    }
}

#[test]
fn a_refused_optimization_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, message) = optimize(&["--prune", "magnitude:0.99", "--max-drop", "1"], dir.path());
    assert!(!ok);
    match tractor::plan::JobState::from_termination_message(false, Some(&message)) {
        JobState::Failed { reason } => {
            assert!(reason.to_lowercase().contains("accuracy dropped"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("out.onnx").exists(), "nothing left for the controller to pick up");
}
