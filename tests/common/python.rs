//! The Python that carries the outside tools the interop tests drive
//! (Triton's client, ONNX Runtime, moto, kmock): `$TRACTOR_PYTHON`, else
//! the venv `.ci/run` makes at `~/.cache/tractor/venv`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A Python that can `import` the given modules (comma-separated, as in
/// Python). Without one the test is skipped with the reason printed, except
/// under `CI=true`, where it fails: CI must run it.
pub fn python_with(imports: &str) -> Option<PathBuf> {
    let python = match std::env::var_os("TRACTOR_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/tractor/venv/bin/python"),
    };
    let probe = Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .stdin(Stdio::null())
        .output();
    let reason = match probe {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => format!(
            "{} cannot import {imports} ({})",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("no message")
        ),
        Err(e) => format!("cannot run {}: {e}", python.display()),
    };
    let hint = "python3 -m venv ~/.cache/tractor/venv && ~/.cache/tractor/venv/bin/pip install -r .ci/python-requirements.txt";
    super::skip::skip_outside_ci(&format!("{reason}; to run it: {hint}"));
    None
}
