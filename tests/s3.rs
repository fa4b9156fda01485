//! `tractor serve --model s3://...` against a real S3 API: moto's server
//! (PyPI `moto[server]`, installed by `.ci/run`) on loopback.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::free_port;

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

/// Kills the child when dropped, even when an assertion fails first.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not ready within {deadline:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_model_from_s3_and_checks_its_digest() {
    let Some(python) = common::python::python_with("moto.server") else { return };
    let s3_port = free_port();
    let _moto = Killed(
        Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &s3_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto"),
    );
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let http = reqwest::Client::new();
    wait_for("moto", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", s3_port)).is_ok()
    });
    // moto accepts unsigned requests: create the bucket and upload directly.
    let bucket = http.put(format!("{endpoint}/models")).send().await.unwrap();
    assert!(bucket.status().is_success(), "create bucket: {}", bucket.status());
    let model = std::fs::read(common::real_model("digits-mlp-v2.onnx")).unwrap();
    let digest = tractor::store::sha256_hex(&model);
    let put =
        http.put(format!("{endpoint}/models/v2/digits.onnx")).body(model).send().await.unwrap();
    assert!(put.status().is_success(), "upload: {}", put.status());

    let serve = |sha256: &str| {
        let port = free_port();
        let child = Command::new(TRACTOR)
            .args(["serve", "--model", "s3://models/v2/digits.onnx", "--sha256", sha256])
            .args(["--host", "127.0.0.1", "--http-port", &port.to_string()])
            .env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (Killed(child), port)
    };

    let (mut bad, _) = serve(&"0".repeat(64));
    wait_for("exit on a digest mismatch", Duration::from_secs(30), || {
        bad.0.try_wait().unwrap().is_some()
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(bad.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");

    let (_good, port) = serve(&digest);
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/v2/health/ready")).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "server with an s3:// model never became ready");
    let meta: serde_json::Value =
        http.get(format!("{base}/v2/models/digits")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["inputs"][0]["name"], "input");
}
