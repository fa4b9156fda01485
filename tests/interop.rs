//! Interoperability: Triton's own Python client (`tritonclient.http`) talks to
//! `tractor serve`, and every answer is held against ONNX Runtime's on the
//! same model and inputs. The checks live in `tests/interop/triton_client_check.py`.
//!
//! Python comes from `$TRACTOR_PYTHON`, else `$HOME/.cache/tractor/venv/bin/python`
//! (made with `python3 -m venv` and `pip install -r .ci/python-requirements.txt`).
//! Without it the test is skipped, except under `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::python;
use common::server::{ServeProcess, free_ports};

/// Models served for the check: (name, ONNX file, npz with inputs `x`).
const CASES: &[(&str, &str, &str)] = &[
    ("digits-mlp-v2", "digits-mlp-v2.onnx", "digits-test.npz"),
    ("digits-sklearn-mlp", "digits-sklearn-mlp.onnx", "digits-test.npz"),
    ("digits-cnn", "digits-cnn.onnx", "digits-test-images.npz"),
];

/// A version other than the default "1", so the check proves it is echoed.
const VERSION: &str = "3";

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("models")
}

#[test]
fn triton_client_and_onnxruntime_agree() {
    let Some(python) = python::python_with("tritonclient.http, onnxruntime, numpy") else { return };

    let models = models_dir();
    let ports = free_ports(CASES.len());
    // Start every server first so that they load their models in parallel.
    let mut servers: Vec<ServeProcess> = CASES
        .iter()
        .zip(&ports)
        .map(|((name, onnx, _), port)| {
            let model = models.join(onnx);
            let args = ["--model", model.to_str().unwrap(), "--name", name];
            ServeProcess::start_on(*port, &[&args[..], &["--model-version", VERSION]].concat())
        })
        .collect();
    for server in &mut servers {
        server.wait_ready();
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/triton_client_check.py");
    let mut check = Command::new(&python);
    check.arg(&script).args(["--version", VERSION]);
    for ((name, onnx, npz), port) in CASES.iter().zip(&ports) {
        check.arg("--case").arg(format!(
            "{name}@127.0.0.1:{port}={}={}",
            models.join(onnx).display(),
            models.join(npz).display()
        ));
    }
    let output = check.stdin(Stdio::null()).output().expect("run the Python check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let logs: String = CASES
            .iter()
            .zip(&servers)
            .map(|((name, ..), s)| format!("--- server {name} stderr:\n{}\n", s.log()))
            .collect();
        panic!(
            "{} {} exited with {}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}\n{logs}",
            python.display(),
            script.display(),
            output.status
        );
    }
    // One line per check; the harness shows it with --nocapture.
    println!("{stdout}");
    // Still alive after the whole check: no server crashed along the way.
    for server in &mut servers {
        server.assert_running();
    }
}
