//! Interoperability: Triton's own Python client (`tritonclient.http`) talks to
//! `tractor serve`, and every answer is held against ONNX Runtime's on the
//! same model and inputs. The checks live in `tests/interop/triton_client_check.py`.
//!
//! Python comes from `$TRACTOR_PYTHON`, else `$HOME/.cache/tractor/venv/bin/python`
//! (made with `python3 -m venv` and `pip install -r .ci/python-requirements.txt`).
//! Without it the test is skipped, except under `CI=true`, where it fails.

#[path = "common/python.rs"]
mod python;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Models served for the check: (name, ONNX file, npz with inputs `x`).
const CASES: &[(&str, &str, &str)] = &[
    ("digits-mlp-v2", "digits-mlp-v2.onnx", "digits-test.npz"),
    ("digits-sklearn-mlp", "digits-sklearn-mlp.onnx", "digits-test.npz"),
    ("digits-cnn", "digits-cnn.onnx", "digits-test-images.npz"),
];

/// A version other than the default "1", so the check proves it is echoed.
const VERSION: &str = "3";

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("models")
}

/// A running `tractor serve`, killed when dropped (also when the test panics).
struct Server {
    name: &'static str,
    port: u16,
    child: Child,
    stderr_path: PathBuf,
}

impl Server {
    fn start(name: &'static str, model: &Path, port: u16, logs: &Path) -> Server {
        let stderr_path = logs.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).expect("create the server's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tractor"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--name", name, "--model-version", VERSION, "--host", "127.0.0.1"])
            .args(["--http-port", &port.to_string()])
            // Plain log lines in the file that a failure prints.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tractor serve");
        Server { name, port, child, stderr_path }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Polls `GET /v2/health/ready` until it answers 200.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                panic!(
                    "server {} exited with {status} before it was ready; its stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            if http_status(self.port, "/v2/health/ready") == Some(200) {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "server {} not ready on port {} after {READY_TIMEOUT:?}; its stderr:\n{}",
                    self.name,
                    self.port,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain HTTP/1.1 GET, or None when nothing answers yet.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    // "HTTP/1.1 200 OK": the code is the second word.
    std::str::from_utf8(&head[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

/// Distinct free ports: all listeners are held until every port is picked.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

#[test]
fn triton_client_and_onnxruntime_agree() {
    let Some(python) = python::python_with("tritonclient.http, onnxruntime, numpy") else { return };

    let models = models_dir();
    let logs = tempfile::tempdir().expect("temporary directory");
    let ports = free_ports(CASES.len());
    // Start every server first so that they load their models in parallel.
    let mut servers: Vec<Server> = CASES
        .iter()
        .zip(&ports)
        .map(|((name, onnx, _), port)| Server::start(name, &models.join(onnx), *port, logs.path()))
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
        let logs: String = servers
            .iter()
            .map(|s| format!("--- server {} stderr:\n{}\n", s.name, s.stderr()))
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
        if let Some(status) = server.child.try_wait().expect("poll the server process") {
            panic!(
                "server {} exited with {status} during the check; its stderr:\n{}",
                server.name,
                server.stderr()
            );
        }
    }
}
