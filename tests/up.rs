//! `tractor up` with real processes and real models on loopback: a good
//! version promoted under traffic, a broken one failed while the stable
//! keeps serving, a killed `serve` child recovered, and no child left behind.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::real_model_uri;
use common::server::free_port;

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

fn document(version: &str, source: &str, extra: &str) -> String {
    format!(
        "apiVersion: tractor.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: digits}}\nspec:\n  model: {{name: digits, version: '{version}', source: {{uri: '{source}'}}}}\n  rollout:\n    steps: [{{weight: 30, pause: 2s}}, {{weight: 60, pause: 2s}}]\n    analysis: {{interval: 1s, minRequests: 5, maxErrorRate: 0.05, failureLimit: 2}}\n{extra}"
    )
}

/// A running `tractor up`, its JSON event lines, killed when dropped.
struct Up {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
    port: u16,
}

impl Drop for Up {
    /// Ctrl-C first, so `up` stops its children itself (a failed assertion
    /// must not leave servers behind), then a kill if it does not stop.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Up {
    fn start(file: &Path, state: &Path) -> Up {
        let port = free_port();
        let mut child = Command::new(TRACTOR)
            .args(["up", "-f", file.to_str().unwrap(), "--json", "--port", &port.to_string()])
            .args(["--state-dir", state.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Up { child, lines, seen: Vec::new(), port }
    }

    /// Waits for an event with this reason, sending traffic meanwhile.
    fn wait_for(&mut self, reason: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        let http =
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let body = r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[0,0,0.5,1,1,0.5,0,0,0,0.5,1,0.5,0.5,1,0.25,0,0,0.25,0.25,0,0.5,1,0.25,0,0,0,0,0.25,1,0.75,0,0,0,0,0,0.5,1,0.75,0,0,0,0,0,0,0.25,1,0.5,0,0,0.25,0.5,0,0.25,1,0.5,0,0,0,0.5,1,1,0.5,0,0]}]}"#;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line.clone());
                if line["reason"] == reason {
                    return line;
                }
            }
            let reasons: Vec<String> =
                self.seen.iter().map(|l| format!("{} {}", l["reason"], l["message"])).collect();
            assert!(
                Instant::now() < deadline,
                "no {reason} within {within:?}; events: {reasons:#?}"
            );
            for _ in 0..20 {
                let _ = http
                    .post(format!("http://127.0.0.1:{}/v2/models/digits/infer", self.port))
                    .body(body)
                    .send();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The version that answered one request (the router's header), or "" on failure.
    fn served_by(&self) -> String {
        Self::version_answering(self.port).unwrap_or_default()
    }

    /// The `x-tractor-version` of one answer from the router on `port`.
    fn version_answering(port: u16) -> Option<String> {
        let http = reqwest::blocking::Client::new();
        let body = serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64] }] });
        http.post(format!("http://127.0.0.1:{port}/v2/models/digits/infer"))
            .json(&body)
            .send()
            .map_err(|e| eprintln!("served_by: {e}"))
            .ok()
            .filter(|r| {
                let ok = r.status().is_success();
                if !ok {
                    eprintln!("served_by: {} {:?}", r.status(), r.headers());
                }
                ok
            })
            .and_then(|r| r.headers().get("x-tractor-version")?.to_str().ok().map(str::to_string))
    }

    /// Waits until the router sends traffic to `version` (it re-reads its
    /// routes file every quarter second).
    fn wait_served_by(&self, version: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.served_by() != version {
            assert!(Instant::now() < deadline, "the router never moved to version {version}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn infer_status(&self) -> u16 {
        let http = reqwest::blocking::Client::new();
        let body = serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5; 64] }] });
        http.post(format!("http://127.0.0.1:{}/v2/models/digits/infer", self.port))
            .json(&body)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Ctrl-C: every child stops, and so does `up`, with status 0.
    fn interrupt(mut self) {
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(Instant::now() < deadline, "tractor up did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the router is still up"
        );
    }
}

/// The child `tractor serve` of `up` whose command line names this model file.
fn serve_child_of(pid: u32, model_file: &str) -> Option<u32> {
    let out = Command::new("pgrep").args(["-a", "-P", &pid.to_string()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(" serve ") && l.contains(model_file))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-P", &pid.to_string()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn a_good_version_is_promoted_under_traffic_and_nothing_is_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    let docs = format!(
        "{}---\n{}",
        document("1", &real_model_uri("digits-mlp-v1.onnx"), ""),
        document("2", &real_model_uri("digits-mlp-v2.onnx"), "")
    );
    std::fs::write(&file, docs).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    up.wait_for("CanaryStep", Duration::from_secs(30));
    let passed = up.wait_for("AnalysisPassed", Duration::from_secs(30));
    assert!(passed["message"].as_str().unwrap().contains("error rate 0.00%"), "{passed}");
    let promoted = up.wait_for("Promoted", Duration::from_secs(60));
    assert_eq!(promoted["weights"], serde_json::json!({ "2": 100 }));
    assert_eq!(up.infer_status(), 200);
    let pid = up.child.id();
    assert!(!children_of(pid).is_empty(), "serve and route run as children");
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("state/digits/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["stable"]["version"], "2");
    up.interrupt();
    assert!(children_of(pid).is_empty());
}

#[test]
fn a_broken_version_fails_and_the_stable_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    let docs = format!(
        "{}---\n{}",
        document("1", &real_model_uri("digits-mlp-v1.onnx"), ""),
        document(
            "2",
            &dir.path().join("missing.onnx").display().to_string(),
            "    progressDeadline: 3s\n"
        )
    );
    std::fs::write(&file, docs).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    let exited = up.wait_for("ServeExited", Duration::from_secs(30));
    assert!(exited["message"].as_str().unwrap().contains("missing.onnx"), "{exited}");
    let failed = up.wait_for("ProgressDeadlineExceeded", Duration::from_secs(30));
    assert!(failed["message"].as_str().unwrap().contains("they stop with"), "{failed}");
    assert_eq!(up.infer_status(), 200, "version 1 still serves");
    up.interrupt();
}

#[test]
fn a_killed_serve_child_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    std::fs::write(&file, document("1", &real_model_uri("digits-mlp-v1.onnx"), "")).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    let serve = Command::new("pgrep")
        .args(["-P", &up.child.id().to_string(), "-f", "tractor serve|/tractor serve| serve "])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&serve.stdout)
        .lines()
        .next()
        .expect("a serve child")
        .trim()
        .to_string();
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    up.wait_for("ServeExited", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.infer_status() != 200 {
        assert!(Instant::now() < deadline, "version 1 never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    up.interrupt();
}

/// Issue 14: the README runs the three examples one after another in the
/// default state directory, where state is kept per `metadata.name`; with
/// one name, the second example "resumed" the first's rollout and never
/// did its own.
#[test]
fn the_shipped_examples_keep_their_state_apart() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits");
    let mut owner: std::collections::BTreeMap<String, String> = Default::default();
    for file in ["rollout.yaml", "rollback.yaml", "optimized.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.iter().filter(|d| !d.is_null()) {
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            let first = owner.entry(name.clone()).or_insert_with(|| file.to_string());
            assert_eq!(first, file, "{file} and {first} both name {name}: one state directory");
        }
    }
    assert_eq!(owner.len(), 3, "{owner:?}");
}

/// The shipped rollback example: an untrained version 3 is shadowed, its
/// answers disagree with version 2's, and it is rolled back on the measured
/// agreement while callers see no error. Its first step is a shadow step
/// (issue 14): not one caller gets an answer from version 3.
#[test]
fn the_rollback_example_rolls_back_on_measured_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits/rollback.yaml");
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    // The router picks its routes up within a quarter second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.infer_status() != 200 {
        assert!(Instant::now() < deadline, "the router never routed to version 2");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Varied inputs, as `tractor bench` generates them, for a real agreement figure.
    let bench = Command::new(TRACTOR)
        .args(["bench", "--url", &format!("http://127.0.0.1:{}", up.port), "--model", "digits"])
        .args(["--concurrency", "2", "--duration", "20s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A caller beside the load, noting which version answered each request.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let (stop, port) = (stop.clone(), up.port);
        std::thread::spawn(move || {
            let mut answered_by = std::collections::BTreeMap::<String, u32>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let version = Up::version_answering(port).unwrap_or_else(|| "failed".into());
                *answered_by.entry(version).or_default() += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            answered_by
        })
    };
    let rolled_back = up.wait_for("RolledBack", Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered_by = caller.join().unwrap();
    let message = rolled_back["message"].as_str().unwrap().to_string();
    assert!(message.contains("agreement") && message.contains("< 90.0%"), "{message}");
    assert_eq!(rolled_back["weights"], serde_json::json!({ "2": 100 }));
    assert!(answered_by.get("2").is_some_and(|n| *n > 20), "{answered_by:?}");
    assert_eq!(answered_by.len(), 1, "callers got answers from other versions: {answered_by:?}");
    let report = bench.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap_or_else(|e| {
        panic!("tractor bench printed no report ({e}): {}", String::from_utf8_lossy(&report.stderr))
    });
    assert_eq!(report["results"][0]["errors"], 0, "callers never saw the canary leave");
    up.interrupt();
}

/// Even a `tractor up` killed outright (no Ctrl-C, no cleanup) leaves no
/// server behind: its children are tied to it by the kernel.
#[test]
#[cfg(target_os = "linux")]
fn a_killed_up_takes_its_children_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    std::fs::write(&file, document("1", &real_model_uri("digits-mlp-v1.onnx"), "")).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    let children = children_of(up.child.id());
    assert!(!children.is_empty());
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
        assert!(Instant::now() < deadline, "children {children:?} outlived tractor up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 5's third story: the file edited back to an earlier version. Mid-
/// canary the canary is abandoned; after a promotion the kept version takes
/// all the traffic back at once (it was kept warm, nothing restarts).
#[test]
fn setting_the_version_back_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    let v1 = document("1", &real_model_uri("digits-mlp-v1.onnx"), "");
    let v2 = document("2", &real_model_uri("digits-mlp-v2.onnx"), "");
    std::fs::write(&file, &v1).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));

    std::fs::write(&file, &v2).unwrap();
    up.wait_for("CanaryStep", Duration::from_secs(30));
    std::fs::write(&file, &v1).unwrap();
    let abandoned = up.wait_for("CanaryAbandoned", Duration::from_secs(10));
    assert_eq!(abandoned["weights"], serde_json::json!({ "1": 100 }), "{abandoned}");

    std::fs::write(&file, &v2).unwrap();
    up.wait_for("Promoted", Duration::from_secs(60));
    up.wait_served_by("2");
    std::fs::write(&file, &v1).unwrap();
    let back = up.wait_for("RolledBackToKept", Duration::from_secs(10));
    assert_eq!(back["weights"], serde_json::json!({ "1": 100 }), "{back}");
    up.wait_served_by("1");
    for _ in 0..20 {
        assert_eq!(up.served_by(), "1");
    }
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("state/digits/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["stable"]["version"], "1", "{status}");
    up.interrupt();
}

/// Issue 5's fourth story: the canary's `serve` process killed while it
/// takes traffic. `up` says so, restarts it, and the rollout still ends in
/// a promotion (the analysis tolerates a few failed checks, as Flagger's
/// failureLimit does); the stable version answers throughout.
#[test]
fn a_canary_killed_mid_rollout_is_restarted_and_the_rollout_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    let tolerant = |d: String| d.replace("failureLimit: 2", "failureLimit: 6");
    let docs = format!(
        "{}---\n{}",
        tolerant(document("1", &real_model_uri("digits-mlp-v1.onnx"), "")),
        tolerant(document("2", &real_model_uri("digits-mlp-v2.onnx"), ""))
    );
    std::fs::write(&file, docs).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    up.wait_for("CanaryStep", Duration::from_secs(30));
    let canary = serve_child_of(up.child.id(), "digits-mlp-v2.onnx").expect("a serve child for 2");
    Command::new("kill").args(["-KILL", &canary.to_string()]).status().unwrap();
    let exited = up.wait_for("ServeExited", Duration::from_secs(10));
    assert!(exited["message"].as_str().unwrap().contains("serve 2"), "{exited}");
    let promoted = up.wait_for("Promoted", Duration::from_secs(90));
    assert_eq!(promoted["weights"], serde_json::json!({ "2": 100 }));
    let restarted = serve_child_of(up.child.id(), "digits-mlp-v2.onnx").expect("serve 2 again");
    assert_ne!(restarted, canary);
    up.wait_served_by("2");
    up.interrupt();
}

/// `tractor rollout promote|abort|status --state-dir` drive a local `up` as
/// they drive the controller: a canary held by a long pause is stepped and
/// promoted by hand, the next one aborted by hand.
#[test]
fn promote_and_abort_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = dir.path().join("digits.yaml");
    let held = |d: String| d.replace("pause: 2s", "pause: 1h");
    std::fs::write(&file, held(document("1", &real_model_uri("digits-mlp-v1.onnx"), ""))).unwrap();
    let mut up = Up::start(&file, &state);
    up.wait_for("Deployed", Duration::from_secs(60));
    let rollout = |action: &str| {
        let out = Command::new(TRACTOR)
            .args(["rollout", action, "digits", "--state-dir", state.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    std::fs::write(&file, held(document("2", &real_model_uri("digits-mlp-v2.onnx"), ""))).unwrap();
    let first = up.wait_for("CanaryStep", Duration::from_secs(30));
    assert_eq!(first["weights"], serde_json::json!({ "1": 70, "2": 30 }));
    assert!(rollout("status").contains("canary: 2 (30%, step 1"));
    rollout("promote");
    let second = up.wait_for("CanaryStep", Duration::from_secs(10));
    assert_eq!(second["weights"], serde_json::json!({ "1": 40, "2": 60 }));
    rollout("promote");
    let promoted = up.wait_for("Promoted", Duration::from_secs(10));
    assert_eq!(promoted["weights"], serde_json::json!({ "2": 100 }));

    std::fs::write(&file, held(document("3", &real_model_uri("digits-mlp-v1.onnx"), ""))).unwrap();
    up.wait_for("CanaryStep", Duration::from_secs(30));
    rollout("abort");
    let aborted = up.wait_for("CanaryAborted", Duration::from_secs(10));
    assert_eq!(aborted["weights"], serde_json::json!({ "2": 100 }), "{aborted}");
    up.wait_served_by("2");
    assert!(rollout("status").contains("stable: 2 (100%)"));
    assert!(!state.join("digits/request").exists(), "a request is acted on once");
    up.interrupt();

    let missing = Command::new(TRACTOR)
        .args(["rollout", "promote", "nothing", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no `tractor up` has run nothing"));
}

/// The optimization example: version 2 is optimized by a `tractor optimize`
/// child (the controller's Job), registered with its digest and metrics,
/// shadowed against the fp32 version 1 for agreement, and promoted.
#[test]
fn the_optimized_example_optimizes_then_rolls_out() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits/optimized.yaml");
    let mut up = Up::start(&file, &state);
    up.wait_for("Deployed", Duration::from_secs(60));
    let optimized = up.wait_for("Optimized", Duration::from_secs(120));
    let message = optimized["message"].as_str().unwrap().to_string();
    assert!(message.contains("v2.onnx") && message.contains("accuracy=97.7"), "{message}");
    let bench = Command::new(TRACTOR)
        .args(["bench", "--url", &format!("http://127.0.0.1:{}", up.port), "--model", "digits"])
        .args(["--concurrency", "2", "--duration", "40s", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bench = KillOnDrop(bench);
    let promoted = up.wait_for("Promoted", Duration::from_secs(90));
    assert_eq!(promoted["weights"], serde_json::json!({ "2": 100 }));
    let passed: Vec<&serde_json::Value> =
        up.seen.iter().filter(|l| l["reason"] == "AnalysisPassed").collect();
    assert!(
        passed.iter().any(|l| l["message"].as_str().unwrap().contains("agreement")),
        "the shadowed int8 version was judged on agreement: {passed:?}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("digits-optimized/status.json")).unwrap())
            .unwrap();
    let artifact = state.join("digits-optimized/artifacts/v2.onnx");
    assert_eq!(status["stable"]["version"], "2", "{status}");
    assert!(status.to_string().contains(&artifact.display().to_string()), "{status}");
    let optimized_size = std::fs::metadata(&artifact).unwrap().len();
    let source_size = std::fs::metadata(real_model_uri("digits-mlp-v2.onnx")).unwrap().len();
    assert!(optimized_size * 10 < source_size * 4, "{optimized_size} vs {source_size} bytes");
    drop(bench);
    up.interrupt();

    // Started again on the same state: it resumes at version 2 and serves the
    // registered artifact; nothing is optimized or rolled out again.
    let mut again = Up::start(&file, &state);
    again.wait_for("Resumed", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while again.served_by() != "2" {
        assert!(Instant::now() < deadline, "version 2 never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    again.seen.extend(again.lines.try_iter());
    let reasons: Vec<&str> = again.seen.iter().filter_map(|l| l["reason"].as_str()).collect();
    assert!(
        !reasons.iter().any(|r| ["Optimizing", "CanaryStarted", "Deploying"].contains(r)),
        "{reasons:?}"
    );
    let out = Command::new(TRACTOR)
        .args(["rollout", "status", "digits-optimized", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("registered: 2 file://") && printed.contains("accuracy=97.7"),
        "{printed}"
    );
    again.interrupt();
}

/// An optimization the accuracy gate refuses never reaches traffic: the
/// version fails with the gate's figures and version 1 keeps serving.
#[test]
fn an_optimization_the_gate_refuses_is_not_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    let over_pruned = format!(
        "  optimize:\n    passes: [{{type: prune, method: magnitude, sparsity: 0.99}}]\n    validation: {{data: '{}', metric: accuracy, maxDrop: 1.0}}\n",
        real_model_uri("digits-test.npz")
    );
    let docs = format!(
        "{}---\n{}",
        document("1", &real_model_uri("digits-mlp-v2.onnx"), ""),
        document("2", &real_model_uri("digits-mlp-v2.onnx"), &over_pruned)
    );
    std::fs::write(&file, docs).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    let failed = up.wait_for("OptimizationFailed", Duration::from_secs(120));
    let reason = failed["message"].as_str().unwrap();
    assert!(
        reason.contains("version 2 not deployed") && reason.contains("ccuracy dropped"),
        "{reason}"
    );
    assert!(!dir.path().join("state/digits/artifacts/v2.onnx").exists(), "no refused model left");
    up.wait_served_by("1");
    up.interrupt();
}

/// Kills a child process when dropped (a failed assertion must not leave
/// the load generator running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The router is a child like the others: killed, it is started again and
/// traffic flows; a port already taken is an error at start, not a router
/// that silently never was.
#[test]
fn the_router_is_supervised_and_a_taken_port_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    std::fs::write(&file, document("1", &real_model_uri("digits-mlp-v1.onnx"), "")).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    let out =
        Command::new("pgrep").args(["-a", "-P", &up.child.id().to_string()]).output().unwrap();
    let router = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(" route "))
        .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .expect("a route child");
    Command::new("kill").args(["-KILL", &router.to_string()]).status().unwrap();
    up.wait_for("RouterExited", Duration::from_secs(10));
    up.wait_for("RouterStarted", Duration::from_secs(20));
    up.wait_served_by("1");
    up.interrupt();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let state = dir.path().join("state2");
    let refused = Command::new(TRACTOR)
        .args(["up", "-f", file.to_str().unwrap(), "--port", &port])
        .args(["--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("the router stopped") && stderr.contains("cannot listen"), "{stderr}");
}

/// Issue 10's defects through this executor: `spec.rollout.steps` edited to
/// `[]` while a canary stands at a step promotes it (it used to panic the
/// planner and stop `up`), and the spec's batching reaches every `serve`
/// child (it used to reach only the controller's pods).
#[test]
fn steps_edited_to_none_mid_canary_promote_it_and_batching_reaches_serve() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits.yaml");
    let batching = "  serving:\n    batching: {maxBatchSize: 8, maxBatchDelay: 500us}\n";
    let long_steps = |doc: String| doc.replace("pause: 2s", "pause: 1h");
    let v1 = long_steps(document("1", &real_model_uri("digits-mlp-v1.onnx"), batching));
    let v2 = long_steps(document("2", &real_model_uri("digits-mlp-v2.onnx"), batching));
    std::fs::write(&file, &v1).unwrap();
    let mut up = Up::start(&file, &dir.path().join("state"));
    up.wait_for("Deployed", Duration::from_secs(60));
    let serve = serve_child_of(up.child.id(), "digits-mlp-v1.onnx").expect("serve child of v1");
    let cmdline = std::fs::read(format!("/proc/{serve}/cmdline")).unwrap();
    let argv: Vec<String> =
        cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let after = |flag: &str| argv.iter().position(|a| a == flag).map(|i| argv[i + 1].as_str());
    assert_eq!(after("--max-batch-delay-us"), Some("500"), "{argv:?}");
    assert_eq!(after("--max-batch-size"), Some("8"), "{argv:?}");

    std::fs::write(&file, &v2).unwrap();
    let step = up.wait_for("CanaryStep", Duration::from_secs(30));
    assert_eq!(step["weights"], serde_json::json!({ "1": 70, "2": 30 }), "{step}");
    let no_steps =
        v2.replace("steps: [{weight: 30, pause: 1h}, {weight: 60, pause: 1h}]", "steps: []");
    assert_ne!(no_steps, v2, "the test's document changed shape");
    std::fs::write(&file, &no_steps).unwrap();
    let promoted = up.wait_for("Promoted", Duration::from_secs(20));
    assert_eq!(promoted["weights"], serde_json::json!({ "2": 100 }), "{promoted}");
    up.wait_served_by("2");
    up.interrupt();
}

/// Runs `tractor up` on `text` expecting it to refuse the file at once;
/// returns what it printed on stderr.
fn refused(text: &str, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("md.yaml");
    std::fs::write(&file, text).unwrap();
    let state = dir.join("state");
    let output = Command::new(TRACTOR)
        .args(["up", "-f", file.to_str().unwrap(), "--port", &free_port().to_string()])
        .args(["--state-dir", state.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "up accepted:\n{text}");
    assert!(!state.exists(), "the state directory was made before the file was checked");
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Issue 11: `replica: 3` and `intervall: 5s` ran without a word. Now up
/// is strict like `kubectl apply --validate=strict`: an unknown field is an
/// error naming its path, with the nearest name when one is near.
#[test]
fn unknown_fields_are_refused_by_path_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let source = real_model_uri("digits-mlp-v1.onnx");
    let text = document("1", &source, "  serving: {replica: 3}\n");
    let said = refused(&text, dir.path());
    assert!(
        said.contains("unknown field \"spec.serving.replica\" (did you mean `replicas`?)"),
        "{said}"
    );
    let second = format!(
        "{}---\n{}",
        document("1", &source, ""),
        document("2", &source, "").replace("interval: 1s", "intervall: 1s")
    );
    let said = refused(&second, dir.path());
    assert!(
        said.contains("document 2: unknown field \"spec.rollout.analysis.intervall\" (did you mean `interval`?)"),
        "{said}"
    );
    let kind = document("1", &source, "").replace("kind: ModelDeployment", "kind: Deployment");
    assert!(
        refused(&kind, dir.path()).contains("expected tractor.dev/v1alpha1 and ModelDeployment")
    );
}

/// Issue 11: a `metadata.name` of `../../escape-name` wrote state outside
/// --state-dir, and a version with `/` stopped up half-way. Both are
/// checked as Kubernetes names before anything is written.
#[test]
fn names_and_versions_are_kubernetes_names_before_the_file_system_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let source = real_model_uri("digits-mlp-v1.onnx");
    let escape = document("1", &source, "").replace("name: digits}", "name: ../../escape-name}");
    let said = refused(&escape, &dir.path().join("a").join("b"));
    assert!(said.contains("metadata.name") && said.contains("not a Kubernetes name"), "{said}");
    assert!(!dir.path().join("a").join("escape-name").exists(), "written outside --state-dir");
    let slash = document("1/../../x", &source, "");
    let said = refused(&slash, dir.path());
    assert!(said.contains("spec.model.version") && said.contains("1/../../x"), "{said}");
    let renamed = format!(
        "{}---\n{}",
        document("1", &source, ""),
        document("2", &source, "").replace("name: digits}", "name: other}")
    );
    assert!(refused(&renamed, dir.path()).contains("document 2: metadata.name"));
}
