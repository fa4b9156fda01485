//! `tractor registry` as a person runs it, against a local folder and
//! against an S3 API (moto's server, PyPI `moto[server]`, on loopback):
//! push, list, show, pull with its digest check, immutability, aliases,
//! diff, `manifest` output read back as a `ModelVersion`, hostile names,
//! and concurrent pushes of one version.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tractor::crd::ModelVersion;
use tractor::registry::{DiffRow, VersionManifest};

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

/// The registry command line with one `--store` and environment.
struct Registry {
    store: String,
    env: Vec<(&'static str, String)>,
}

impl Registry {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(TRACTOR);
        command.args(["registry", "--store", &self.store]).args(args);
        command.env("TRACTOR_PUSHED_BY", "ci@test").stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run tractor registry")
    }

    /// Stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "tractor registry {args:?} failed: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "tractor registry {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn show(&self, reference: &str) -> VersionManifest {
        serde_json::from_str(&self.ok(&["show", reference, "--json"])).unwrap()
    }
}

fn model(name: &str) -> String {
    common::real_model_uri(name)
}

/// Everything a person does with a registry, in one story.
fn story(registry: &Registry, scratch: &Path) {
    let (v1, v2) = (model("digits-mlp-v1.onnx"), model("digits-mlp-v2.onnx"));
    let (v1, v2) = (v1.as_str(), v2.as_str());
    let v1_bytes = std::fs::read(v1).unwrap();
    let v1_digest = tractor::store::sha256_hex(&v1_bytes);

    let pushed = registry.ok(&["push", v1, "--name", "digits", "--version", "1"]);
    assert!(pushed.contains(&format!("pushed digits@1 sha256:{v1_digest}")), "{pushed}");
    let again = registry.ok(&["push", v1, "--name", "digits", "--version", "1"]);
    assert!(again.contains("nothing written"), "{again}");
    let refused = registry.fails(&["push", v2, "--name", "digits", "--version", "1"]);
    assert!(
        refused.contains("already in the registry") && refused.contains("new version"),
        "{refused}"
    );
    registry.ok(&[
        "push",
        v2,
        "--name",
        "digits",
        "--version",
        "2",
        "--parent",
        "digits@1",
        "--metrics",
        r#"{"accuracy": 0.978, "latencyMs": 0.4}"#,
    ]);

    let listed = registry.ok(&["list"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(lines[1].starts_with("digits") && lines[1].contains(&v1_digest[..12]), "{listed}");
    assert!(lines[2].contains("accuracy=0.978"), "{listed}");
    assert_eq!(registry.ok(&["list", "digits", "--json"]).lines().count(), 2);

    let m1 = registry.show("digits@1");
    assert_eq!((m1.digest.as_str(), m1.size_bytes), (v1_digest.as_str(), v1_bytes.len() as u64));
    assert_eq!(m1.inputs[0].to_string(), "input FP32 [-1,64]");
    assert_eq!(m1.outputs[0].to_string(), "logits FP32 [-1,10]");
    assert_eq!(m1.pushed_by, "ci@test");
    let m2 = registry.show("digits@2");
    assert_eq!(m2.parent.as_ref().map(|p| p.digest.as_str()), Some(v1_digest.as_str()));
    assert_eq!(m2.metrics["accuracy"], 0.978);
    let text = registry.ok(&["show", "digits@2"]);
    assert!(text.contains("parent       digits@1 sha256:"), "{text}");

    let out = scratch.join("pulled.onnx");
    let pulled = registry.ok(&["pull", "digits@1", "-o", out.to_str().unwrap()]);
    assert!(pulled.contains("verified"), "{pulled}");
    assert_eq!(std::fs::read(&out).unwrap(), v1_bytes);

    assert_eq!(registry.ok(&["tag", "digits@1", "champion"]).trim(), "digits@champion -> 1");
    assert_eq!(registry.show("digits@champion").version, "1");
    assert_eq!(
        registry.ok(&["tag", "digits@2", "champion"]).trim(),
        "digits@champion -> 2 (was 1)"
    );
    registry.ok(&["pull", "digits@champion", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(v2).unwrap());
    assert!(registry.ok(&["list"]).lines().nth(2).unwrap().contains("champion"));
    let taken = registry.fails(&["tag", "digits@1", "2"]);
    assert!(taken.contains("is a version"), "{taken}");
    let taken = registry.fails(&["push", v1, "--name", "digits", "--version", "champion"]);
    assert!(taken.contains("is an alias"), "{taken}");

    let rows: Vec<DiffRow> =
        serde_json::from_str(&registry.ok(&["diff", "digits@1", "digits@champion", "--json"]))
            .unwrap();
    let row = |field: &str| rows.iter().find(|r| r.field == field).unwrap().clone();
    assert_eq!(row("accuracy").b, "0.978");
    assert!(row("inputs").same() && !row("digest").same());
    assert!(row("parent").b.starts_with("digits@1"), "{:?}", row("parent"));
    let table = registry.ok(&["diff", "digits@1", "digits@2"]);
    assert!(table.lines().any(|l| l.starts_with("* accuracy")), "{table}");

    let yaml = registry.ok(&["manifest", "digits@champion", "-n", "ml", "--deployment", "digits"]);
    let object: ModelVersion = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(object.metadata.name.as_deref(), Some("digits-v2"));
    assert_eq!(object.metadata.namespace.as_deref(), Some("ml"));
    assert_eq!(object.spec.version, "2");
    assert_eq!(object.spec.artifact.sha256, m2.stored.sha256);
    assert!(object.spec.artifact.uri.ends_with(&format!("/blobs/sha256/{}", m2.stored.sha256)));
    assert_eq!(object.spec.parent, Some(format!("sha256:{v1_digest}")));
    assert_eq!(object.spec.metrics.accuracy, Some(0.978));
    let labels = object.metadata.labels.unwrap();
    assert_eq!(labels["tractor.dev/deployment"], "digits");
    assert_eq!(labels["app.kubernetes.io/component"], "registry");
    assert!(
        yaml.contains("kind: ModelVersion") && yaml.contains("apiVersion: tractor.dev/v1alpha1")
    );

    // Hostile input: refused with a short message, nothing written.
    for (args, says) in [
        (vec!["push", v1, "--name", "../etc", "--version", "1"], "invalid model name"),
        (vec!["push", v1, "--name", "x", "--version", "a/b"], "invalid version"),
        (vec!["push", v1, "--name", "x", "--version", ".."], "invalid version"),
        (vec!["show", "digits@../../x"], "invalid version or alias"),
        (vec!["show", "digits"], "expected NAME@VERSION"),
        (vec!["tag", "digits@1", "Bad/Alias"], "invalid alias"),
        (vec!["show", "digits@3"], "not in the registry"),
        (
            vec!["push", v1, "--name", "x", "--version", "1", "--metrics", "{\"a\": \"b\"}"],
            "not a number",
        ),
        (
            vec!["push", v1, "--name", "x", "--version", "1", "--parent", "nope@1"],
            "not in the registry",
        ),
    ] {
        let err = registry.fails(&args);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.len() < 600, "{err}");
    }
    let long = format!("digits@{}", "9".repeat(5000));
    // clap repeats the argument as typed; tractor's own reason is cut.
    let err = registry.fails(&["show", &long]);
    assert!(err.contains("invalid version or alias \"9999") && err.contains("…:"), "{err}");
    assert_eq!(registry.ok(&["list"]).lines().count(), 3, "nothing else was registered");
}

/// Four pushes of four different models as one version, at once: exactly
/// one wins, the others are told the version exists.
fn race(registry: &Registry) {
    let files =
        ["digits-mlp-v1.onnx", "digits-mlp-v2.onnx", "diabetes-mlp.onnx", "digits-cnn.onnx"];
    let children: Vec<Child> = files
        .iter()
        .map(|f| {
            registry
                .command(&["push", &model(f), "--name", "race", "--version", "1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> =
        children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let won = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        won,
        1,
        "{:?}",
        outputs.iter().map(|o| String::from_utf8_lossy(&o.stderr)).collect::<Vec<_>>()
    );
    for lost in outputs.iter().filter(|o| !o.status.success()) {
        let stderr = String::from_utf8_lossy(&lost.stderr);
        assert!(stderr.contains("already in the registry"), "{stderr}");
    }
}

#[test]
fn registry_in_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("registry");
    let registry = Registry { store: store.display().to_string(), env: Vec::new() };
    story(&registry, dir.path());
    race(&registry);

    // A damaged blob is refused on pull, and nothing is written.
    let m = registry.show("digits@1");
    let blob = store.join("blobs/sha256").join(&m.stored.sha256);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out = dir.path().join("damaged.onnx");
    let err = registry.fails(&["pull", "digits@1", "-o", out.to_str().unwrap()]);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(!out.exists());
}

/// Kills the child when dropped, even when an assertion fails first.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn registry_in_s3() {
    let Some(python) = common::python::python_with("moto.server") else { return };
    let port = common::server::free_port();
    let _moto = Killed(
        Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "moto not listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    // moto accepts unsigned requests: the bucket is made directly.
    let made = reqwest::blocking::Client::new().put(format!("{endpoint}/models")).send().unwrap();
    assert!(made.status().is_success(), "create bucket: {}", made.status());
    let registry = Registry {
        store: "s3://models/team/registry".into(),
        env: vec![
            ("AWS_ENDPOINT", endpoint),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    story(&registry, dir.path());
    race(&registry);
    let m = registry.show("digits@2");
    let object: ModelVersion =
        serde_saphyr::from_str(&registry.ok(&["manifest", "digits@2"])).unwrap();
    let blob = format!("s3://models/team/registry/blobs/sha256/{}", m.stored.sha256);
    assert_eq!(object.spec.artifact.uri, blob);
}
