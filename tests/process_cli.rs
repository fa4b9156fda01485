//! `tractor serve --processing` as a real process: the README's example
//! (a PNG in, a label out) and start-up refusals that name the field.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{real_model, repo_path};

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

/// A `tractor serve` child, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts in the repository root, as the README's commands run.
    fn start(args: &[&str]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(TRACTOR)
            .current_dir(repo_path(""))
            .args(["serve", "--host", "127.0.0.1", "--http-port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tractor serve");
        Server { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("server exited early ({status}): {err}");
            }
            let ready = client.get(self.url("/v2/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server not ready within 60 s");
    }

    fn wait_exit(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (status, err);
            }
            assert!(Instant::now() < deadline, "server still running after {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

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
    server.wait_ready(&client).await;
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
