//! The real `kube::runtime::Controller` (`tractor::controller::run`: watch,
//! owns, requeue) and the Lease-based `LeaseLock` against a Kubernetes API
//! emulator: kmock (PyPI, 0.8) behind the small adapter in
//! `tests/kmock/adapter.py`, one emulator process per test on a loopback port.
//!
//! The test plays the kubelet and kube-controller-manager: it writes the
//! status of the Deployments and Jobs the controller creates (and the
//! optimization Job's pod with its termination message), and asserts whole
//! stories with deadlines, never with fixed sleeps.
//!
//! Python: `$TRACTOR_PYTHON`, else `$HOME/.cache/tractor/venv/bin/python`
//! (`pip install -r .ci/python-requirements.txt`). Without kmock the tests
//! print why and pass, except under `CI=true`, where they fail.
//!
//! These tests found a real controller bug: the status was written as a
//! JSON merge patch without `null` for fields that went away, so a finished
//! canary could never leave the status and the controller looped.
//! `controller::merge_patch` now sends the nulls.

#[path = "common/fake_router.rs"]
mod fake_router;
#[path = "common/python.rs"]
mod python;
#[path = "common/skip.rs"]
mod skip;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use tractor::controller::leader::LeaseLock;
use tractor::controller::{self, Context, ControllerMetrics, OperatorConfig};
use tractor::crd::{ModelDeployment, ModelVersion};

use fake_router::FakeRouter;

const NS: &str = "default";
/// How long any one step of a story may take.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- emulator

/// The emulator process; killed on drop, also when the test panics. It also
/// exits by itself when its stdin closes, should this process die harder.
struct Emulator {
    child: Child,
    _stdin: ChildStdin,
    url: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the emulator, or says why it cannot (a skip, or a failure on CI).
fn emulator() -> Option<Emulator> {
    let python = python::python_with("kmock")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kmock/adapter.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the emulator");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let emulator = Emulator { child, _stdin: stdin, url: format!("http://127.0.0.1:{port}") };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        let _ = tx.send(first.and_then(Result::ok));
        for _ in lines {} // keep the pipe drained
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(line)) if line.trim() == "ready" => Some(emulator),
        other => panic!("the emulator did not start: {other:?}"),
    }
}

fn client(emulator: &Emulator) -> Client {
    let config = kube::Config::new(emulator.url.parse().unwrap());
    Client::try_from(config).unwrap()
}

// ---------------------------------------------------------------- the controller

/// The running controller; aborted on drop.
struct Running(tokio::task::JoinHandle<Result<(), kube::Error>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_controller(client: &Client, router: Arc<FakeRouter>) -> Running {
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: OperatorConfig {
            image: "tractor:test".into(),
            artifact_store: "s3://artifacts/tractor".into(),
            store_credentials: None,
            log_format: "json".into(),
            tracing: Default::default(),
            allowed_images: vec!["registry.example.com/team/".into()],
            allowed_jwks_urls: vec!["https://idp.example.com/".into()],
            operator_namespace: "tractor-system".into(),
            admin_token: tractor::controller::access::AdminToken::from_token(
                "controller-token".into(),
            ),
        },
        metrics: ControllerMetrics::default(),
        router,
        reporter: Reporter { controller: "tractor".into(), instance: Some("kmock-test".into()) },
        now: Box::new(Timestamp::now),
    });
    Running(tokio::spawn(controller::run(ctx)))
}

// ---------------------------------------------------------------- the story helpers

fn source(version: &str) -> Value {
    json!({ "uri": format!("s3://models/digits-{version}.onnx"), "sha256": format!("{version:a>64}") })
}

/// A spec with 1 s pauses and analysis intervals, so a story takes seconds.
fn spec(version: &str, steps: Value, optimize: bool) -> Value {
    let mut spec = json!({
        "model": { "name": "digits", "version": version, "source": source(version) },
        "rollout": {
            "steps": steps,
            "analysis": { "interval": "1s", "minRequests": 10, "maxErrorRate": 0.05, "failureLimit": 2 },
            "progressDeadline": "10m"
        }
    });
    if optimize {
        spec["optimize"] = json!({ "passes": [{ "type": "fold" }] });
    }
    spec
}

fn two_paused_steps() -> Value {
    json!([{ "weight": 10, "pause": "1s" }, { "weight": 50, "pause": "1s" }])
}

async fn create_md(client: &Client, spec: Value) {
    let md: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": { "name": "digits", "namespace": NS }, "spec": spec,
    }))
    .unwrap();
    Api::<ModelDeployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &md)
        .await
        .unwrap();
}

async fn set_version(client: &Client, version: &str) {
    let patch = json!({ "spec": { "model": { "version": version, "source": source(version) } } });
    Api::<ModelDeployment>::namespaced(client.clone(), NS)
        .patch("digits", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The ModelDeployment as JSON (metadata and status), for assertions.
async fn md(client: &Client) -> Value {
    let md = Api::<ModelDeployment>::namespaced(client.clone(), NS).get("digits").await.unwrap();
    serde_json::to_value(&md).unwrap()
}

/// Polls `check` until it gives `Some`, or panics naming `what` and showing
/// the ModelDeployment as it last was.
async fn eventually<T>(
    client: &Client,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        if started.elapsed() > DEADLINE {
            let last = md(client).await;
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}; the ModelDeployment:\n{:#}",
                last
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the status to satisfy `check`; returns it.
async fn status_where(client: &Client, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(client, what, async || {
        let status = md(client).await["status"].clone();
        check(&status).then_some(status)
    })
    .await
}

/// Plays the kubelet: waits for the Deployment, then reports `ready` pods.
async fn pods_ready(client: &Client, name: &str, ready: i32) {
    let api = Api::<Deployment>::namespaced(client.clone(), NS);
    eventually(client, &format!("Deployment {name}"), async || api.get_opt(name).await.unwrap())
        .await;
    let status = json!({ "status": { "replicas": ready, "readyReplicas": ready, "availableReplicas": ready } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// Plays kube-controller-manager and the kubelet for an optimization Job:
/// its pod terminates with `result` as the termination message, then the
/// Job reports success.
async fn job_succeeds(client: &Client, job: &str, result: Value) {
    let jobs = Api::<Job>::namespaced(client.clone(), NS);
    eventually(client, &format!("Job {job}"), async || jobs.get_opt(job).await.unwrap()).await;
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": format!("{job}-x7k2p"), "labels": { "job-name": job } },
        "spec": { "restartPolicy": "Never", "containers": [{ "name": "optimize", "image": "tractor:test" }] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let terminated = json!({ "status": { "phase": "Succeeded", "containerStatuses": [{
        "name": "optimize", "image": "tractor:test", "imageID": "", "ready": false, "restartCount": 0,
        "state": { "terminated": { "exitCode": 0, "reason": "Completed", "message": result.to_string() } } }] } });
    pods.patch_status(&format!("{job}-x7k2p"), &PatchParams::default(), &Patch::Merge(&terminated))
        .await
        .unwrap();
    let done = json!({ "status": { "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] } });
    jobs.patch_status(job, &PatchParams::default(), &Patch::Merge(&done)).await.unwrap();
}

/// The routes ConfigMap's weights by version.
async fn weights(client: &Client) -> Option<BTreeMap<String, u64>> {
    let cm =
        Api::<ConfigMap>::namespaced(client.clone(), NS).get_opt("digits-routes").await.unwrap()?;
    let table: Value = serde_json::from_str(cm.data?.get("routes.json")?).ok()?;
    Some(
        table["backends"]
            .as_array()?
            .iter()
            .map(|b| {
                (
                    b["version"].as_str().unwrap_or_default().to_string(),
                    b["weight"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
    )
}

fn w(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect()
}

/// Reasons of the Events recorded about the ModelDeployment, oldest first.
async fn event_reasons(client: &Client) -> Vec<String> {
    events_about(client, "digits").await.into_iter().filter_map(|e| e.reason).collect()
}

/// The Events recorded about the ModelDeployment `name`, oldest first.
async fn events_about(client: &Client, name: &str) -> Vec<Event> {
    let events =
        Api::<Event>::namespaced(client.clone(), NS).list(&ListParams::default()).await.unwrap();
    let mut events: Vec<Event> = events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| {
        e.metadata.resource_version.as_deref().unwrap_or("0").parse::<u64>().unwrap_or(0)
    });
    events
}

/// ModelDeployments as the API server stores them, whatever their spec.
fn untyped(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &controller::model_deployment_resource())
}

fn history(status: &Value) -> Vec<(String, String)> {
    status["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    (
                        e["version"].as_str().unwrap_or_default().to_string(),
                        e["outcome"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// First deployment of `version` (no optimization) through to Succeeded.
async fn deploy_first(client: &Client, steps: Value) {
    create_md(client, spec("1", steps, false)).await;
    status_where(client, "phase Progressing while the pods start", |s| s["phase"] == "Progressing")
        .await;
    pods_ready(client, "digits-v1", 1).await;
    status_where(client, "v1 stable and Succeeded", |s| {
        s["phase"] == "Succeeded" && s["stable"]["version"] == "1"
    })
    .await;
}

// ---------------------------------------------------------------- stories

#[tokio::test]
async fn first_deploy_becomes_ready() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let _controller = start_controller(&client, Arc::default());
    create_md(&client, spec("1", two_paused_steps(), false)).await;

    let status =
        status_where(&client, "Progressing, waiting for pods", |s| s["phase"] == "Progressing")
            .await;
    // Reported as what it is: the stable version, its pods pending; no canary.
    assert_eq!(status["stable"]["version"], "1", "{status:#}");
    assert_eq!(status["stable"]["weight"], 100, "{status:#}");
    assert!(status["stable"]["pendingSince"].is_string(), "{status:#}");
    assert!(status["canary"].is_null(), "{status:#}");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    let deployment =
        Api::<Deployment>::namespaced(client.clone(), NS).get("digits-v1").await.unwrap();
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("ModelDeployment", Some(true)));
    assert_eq!(
        owner.uid,
        md(&client).await["metadata"]["uid"].as_str().unwrap(),
        "owned by the real object's uid"
    );

    pods_ready(&client, "digits-v1", 1).await;
    let status = status_where(&client, "Succeeded with v1 stable", |s| {
        s["phase"] == "Succeeded" && s["stable"]["version"] == "1"
    })
    .await;
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status:#}");
    assert!(status["stable"]["pendingSince"].is_null(), "serving now: {status:#}");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(weights(&client).await, Some(w(&[("1", 100)])));
    assert!(
        Api::<Deployment>::namespaced(client.clone(), NS)
            .get_opt("digits")
            .await
            .unwrap()
            .is_some(),
        "the router"
    );
    assert!(
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), NS)
            .get_opt("digits-v1")
            .await
            .unwrap()
            .is_some()
    );
}

/// Issue 14: with `spec.serving.autoscaling` each serving version gets an
/// HPA, and the controller stops writing `replicas`, which the HPA (played
/// here by the test) owns; turning autoscaling off hands them back. Versions
/// that may run several pods, and the two routers, get PodDisruptionBudgets
/// that go when they are down to one.
#[tokio::test]
async fn autoscaled_versions_get_an_hpa_and_keep_the_replicas_it_sets() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let router = Arc::new(FakeRouter::default());
    let _controller = start_controller(&client, router.clone());
    let mut v1 = spec("1", two_paused_steps(), false);
    v1["serving"] =
        json!({ "autoscaling": { "minReplicas": 2, "maxReplicas": 5, "targetInflight": 8 } });
    create_md(&client, v1).await;

    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), NS);
    let hpa = eventually(&client, "the HPA of digits-v1", async || {
        hpas.get_opt("digits-v1").await.unwrap()
    })
    .await;
    let hpa = serde_json::to_value(&hpa.spec).unwrap();
    assert_eq!(
        hpa["scaleTargetRef"],
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": "digits-v1" })
    );
    assert_eq!((hpa["minReplicas"].clone(), hpa["maxReplicas"].clone()), (json!(2), json!(5)));
    assert_eq!(hpa["metrics"][0]["pods"]["metric"]["name"], "tractor_inflight_requests");
    assert_eq!(hpa["metrics"][0]["pods"]["target"]["averageValue"], "8");
    // Up to 5 pods, and two routers: a budget for each.
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS);
    for name in ["digits-v1", "digits"] {
        let budget = eventually(&client, "a PodDisruptionBudget", async || {
            budgets.get_opt(name).await.unwrap()
        })
        .await;
        let spec = serde_json::to_value(&budget.spec).unwrap();
        assert_eq!(spec["maxUnavailable"], 1, "{name}: {spec}");
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    let v1_replicas = async || deployments.get("digits-v1").await.unwrap().spec.unwrap().replicas;
    assert_eq!(v1_replicas().await, None, "replicas left to the HPA");

    // The HPA scales version 1 to 4; the controller's later writes keep it.
    let scaled = json!({ "spec": { "replicas": 4 } });
    deployments.patch("digits-v1", &PatchParams::default(), &Patch::Merge(&scaled)).await.unwrap();
    pods_ready(&client, "digits-v1", 4).await;
    status_where(&client, "v1 stable", |s| s["phase"] == "Succeeded").await;
    router.serve(100, 0);
    set_version(&client, "2").await;
    eventually(&client, "the canary's own HPA", async || hpas.get_opt("digits-v2").await.unwrap())
        .await;
    pods_ready(&client, "digits-v2", 2).await;
    status_where(&client, "canary v2 at its first step", |s| s["canary"]["weight"] == 10).await;
    assert_eq!(v1_replicas().await, Some(4), "the controller never wrote replicas back");

    // Autoscaling off: the HPAs go, the controller sets replicas again.
    let off = json!({ "spec": { "serving": { "autoscaling": null } } });
    Api::<ModelDeployment>::namespaced(client.clone(), NS)
        .patch("digits", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    eventually(&client, "both HPAs deleted", async || {
        let left = hpas.list(&Default::default()).await.unwrap().items.len();
        (left == 0).then_some(())
    })
    .await;
    eventually(&client, "replicas back from the spec", async || {
        (v1_replicas().await == Some(1)).then_some(())
    })
    .await;
    // One pod each now: the versions' budgets go; the two routers keep theirs.
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), NS);
    eventually(&client, "the versions' budgets deleted", async || {
        let names: Vec<String> = budgets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|b| b.name_any())
            .collect();
        (names == ["digits"]).then_some(())
    })
    .await;

    // One router: its budget goes too.
    let one = json!({ "spec": { "router": { "replicas": 1 } } });
    Api::<ModelDeployment>::namespaced(client.clone(), NS)
        .patch("digits", &PatchParams::default(), &Patch::Merge(&one))
        .await
        .unwrap();
    eventually(&client, "the router's budget deleted", async || {
        budgets.list(&Default::default()).await.unwrap().items.is_empty().then_some(())
    })
    .await;
    // The same reconcile applies the router after its deletes.
    eventually(&client, "one router pod", async || {
        let router = deployments.get("digits").await.unwrap().spec.unwrap().replicas;
        (router == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_first_deploy_settles_with_no_canary_left() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let _controller = start_controller(&client, Arc::default());
    deploy_first(&client, two_paused_steps()).await;
    let status = status_where(&client, "v1 stable and the first-deploy canary gone", |s| {
        s["stable"]["version"] == "1" && s.get("canary").is_none()
    })
    .await;
    assert_eq!(history(&status), vec![("1".to_string(), "Promoted".to_string())], "{status:#}");
    let reasons = eventually(&client, "the Deployed event", async || {
        let reasons = event_reasons(&client).await;
        reasons.contains(&"Deployed".to_string()).then_some(reasons)
    })
    .await;
    assert_eq!(
        reasons,
        vec!["Deploying", "Deployed"],
        "one event per phase change, nothing repeated"
    );
}

#[tokio::test]
async fn an_optimized_version_change_goes_through_canary_steps_to_promotion() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let router = Arc::new(FakeRouter::default());
    let _controller = start_controller(&client, router.clone());
    create_md(&client, spec("1", two_paused_steps(), true)).await;

    // v1: the optimization Job, its result registered, then the pods.
    status_where(&client, "Optimizing v1", |s| s["phase"] == "Optimizing").await;
    let result = |v: &str| {
        json!({ "uri": format!("s3://artifacts/tractor/default/digits/v{v}.onnx"), "sha256": v.repeat(64),
                "sizeBytes": 1234, "metrics": { "accuracy": 0.97 } })
    };
    job_succeeds(&client, "digits-optimize-v1", result("1")).await;
    let mvs = Api::<ModelVersion>::namespaced(client.clone(), NS);
    let mv = eventually(&client, "ModelVersion digits-v1", async || {
        mvs.get_opt("digits-v1").await.unwrap()
    })
    .await;
    assert_eq!(
        mv.spec.parent.as_deref(),
        Some(source("1")["sha256"].as_str().unwrap()),
        "lineage: built from the source"
    );
    let jobs = Api::<Job>::namespaced(client.clone(), NS);
    eventually(&client, "the finished Job deleted", async || {
        jobs.get_opt("digits-optimize-v1").await.unwrap().is_none().then_some(())
    })
    .await;
    pods_ready(&client, "digits-v1", 1).await;
    status_where(&client, "v1 stable", |s| {
        s["phase"] == "Succeeded" && s["stable"]["version"] == "1"
    })
    .await;

    // v2: optimized, then canary at 10%, 50%, promoted.
    router.serve(100, 0);
    set_version(&client, "2").await;
    status_where(&client, "Optimizing v2", |s| s["phase"] == "Optimizing").await;
    job_succeeds(&client, "digits-optimize-v2", result("2")).await;
    eventually(&client, "ModelVersion digits-v2", async || mvs.get_opt("digits-v2").await.unwrap())
        .await;
    let status = status_where(&client, "canary v2 waiting for its pods", |s| {
        s["phase"] == "Progressing" && s["canary"]["version"] == "2"
    })
    .await;
    assert_eq!(status["stable"]["version"], "1");
    assert_eq!(
        weights(&client).await,
        Some(w(&[("1", 100)])),
        "no traffic before the canary is ready"
    );
    let deployment =
        Api::<Deployment>::namespaced(client.clone(), NS).get("digits-v2").await.unwrap();
    let env =
        serde_json::to_value(&deployment.spec.unwrap().template.spec.unwrap().containers[0].env)
            .unwrap();
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({ "name": "TRACTOR_SHA256", "value": "2".repeat(64) })),
        "{env}"
    );

    pods_ready(&client, "digits-v2", 1).await;
    let mut seen = Vec::new();
    eventually(&client, "promotion of v2, watching the weights", async || {
        if let Some(w) = weights(&client).await
            && seen.last() != Some(&w)
        {
            seen.push(w);
        }
        let status = md(&client).await["status"].clone();
        (status["phase"] == "Succeeded" && status["stable"]["version"] == "2").then_some(())
    })
    .await;
    assert!(seen.contains(&w(&[("1", 90), ("2", 10)])), "step 1 at 10%: {seen:?}");
    assert!(seen.contains(&w(&[("1", 50), ("2", 50)])), "step 2 at 50%: {seen:?}");
    let status =
        status_where(&client, "v2 promoted and the canary gone", |s| s.get("canary").is_none())
            .await;
    assert_eq!(weights(&client).await.unwrap()["2"], 100);
    let h = history(&status);
    assert!(
        h.ends_with(&[("1".into(), "Replaced".into()), ("2".into(), "Promoted".into())]),
        "{status:#}"
    );
    let reasons = event_reasons(&client).await;
    for reason in
        ["Optimizing", "Optimized", "CanaryStarted", "CanaryStep", "AnalysisPassed", "Promoted"]
    {
        assert!(reasons.contains(&reason.to_string()), "{reason} in {reasons:?}");
    }
    assert_eq!(reasons.iter().filter(|r| *r == "CanaryStep").count(), 2, "{reasons:?}");
    assert!(router.resets() >= 2, "each analysis starts a new window");
}

#[tokio::test]
async fn a_failed_analysis_is_rolled_back() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let router = Arc::new(FakeRouter::default());
    let _controller = start_controller(&client, router.clone());
    deploy_first(&client, two_paused_steps()).await;

    router.serve(100, 50);
    set_version(&client, "2").await;
    pods_ready(&client, "digits-v2", 1).await;
    status_where(&client, "canary v2 at 10%", |s| s["canary"]["weight"] == 10).await;
    let status = status_where(&client, "RolledBack", |s| s["phase"] == "RolledBack").await;
    assert_eq!(status["stable"]["version"], "1", "{status:#}");
    assert!(status.get("canary").is_none(), "the canary is gone: {status:#}");
    let last = status["history"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["version"].as_str(), last["outcome"].as_str()),
        (Some("2"), Some("RolledBack")),
        "{status:#}"
    );
    assert!(last["reason"].as_str().unwrap().contains("error rate 50.00% > 5.00%"), "{last}");
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    assert_eq!(condition(&status, "Ready")["status"], "True", "v1 keeps serving");
    assert_eq!(weights(&client).await, Some(w(&[("1", 100)])));
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    eventually(&client, "the canary's Deployment deleted", async || {
        deployments.get_opt("digits-v2").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(deployments.get_opt("digits-v1").await.unwrap().is_some());
    let reasons = event_reasons(&client).await;
    assert_eq!(reasons.iter().filter(|r| *r == "AnalysisFailed").count(), 2, "{reasons:?}");
    assert!(reasons.contains(&"RolledBack".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn a_restarted_controller_resumes_mid_rollout() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let router = Arc::new(FakeRouter::default());
    router.serve(100, 0);
    // The second step has no pause: the canary waits there for a person.
    let steps = json!([{ "weight": 10, "pause": "1s" }, { "weight": 50 }]);
    let controller = start_controller(&client, router.clone());
    deploy_first(&client, steps).await;
    set_version(&client, "2").await;
    pods_ready(&client, "digits-v2", 1).await;
    status_where(&client, "canary v2 held at 50% for a promote", |s| {
        s["canary"]["weight"] == 50
            && s["message"].as_str().is_some_and(|m| m.contains("waiting for a promote"))
    })
    .await;
    drop(controller);

    // While no controller runs, a person asks for the promotion.
    let annotate =
        json!({ "metadata": { "annotations": { (tractor::crd::PROMOTE_ANNOTATION): "true" } } });
    Api::<ModelDeployment>::namespaced(client.clone(), NS)
        .patch("digits", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();

    let _controller = start_controller(&client, router.clone());
    let status = status_where(&client, "v2 promoted by the new controller, the canary gone", |s| {
        s["phase"] == "Succeeded" && s["stable"]["version"] == "2" && s.get("canary").is_none()
    })
    .await;
    let last = status["history"].as_array().unwrap().last().unwrap();
    assert!(last["reason"].as_str().unwrap().contains("tractor.dev/promote"), "{last}");
    eventually(&client, "the promote annotation cleared", async || {
        let md = md(&client).await;
        md["metadata"]["annotations"].get(tractor::crd::PROMOTE_ANNOTATION).is_none().then_some(())
    })
    .await;
    let reasons = event_reasons(&client).await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "CanaryStarted").count(),
        1,
        "resumed, not restarted: {reasons:?}"
    );
    assert_eq!(reasons.iter().filter(|r| *r == "CanaryStep").count(), 2, "{reasons:?}");
}

#[tokio::test]
async fn only_one_lease_lock_leads() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let a = LeaseLock::new(client.clone(), NS, "tractor-controller", "replica-a");
    let b = LeaseLock::new(client.clone(), NS, "tractor-controller", "replica-b");

    // Both race for a Lease that does not exist yet: exactly one wins.
    let (got_a, got_b) = tokio::join!(a.try_acquire(), b.try_acquire());
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    assert!(got_a ^ got_b, "exactly one leader: a={got_a} b={got_b}");
    let (leader, follower, leader_id, follower_id) =
        if got_a { (&a, &b, "replica-a", "replica-b") } else { (&b, &a, "replica-b", "replica-a") };
    let leases = Api::<Lease>::namespaced(client.clone(), NS);
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert_eq!(holder(leases.get("tractor-controller").await.unwrap()), leader_id);

    // The leader renews; the follower is refused while the Lease is fresh.
    assert!(leader.try_acquire().await.unwrap());
    assert!(!follower.try_acquire().await.unwrap());

    // The leader stops renewing (its renewTime is set a minute back, as if a
    // minute passed): the follower takes over, and the old leader is refused.
    let stale =
        Timestamp::now().checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(60)).unwrap();
    let patch = json!({ "spec": { "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(stale) } });
    leases
        .patch("tractor-controller", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert!(follower.try_acquire().await.unwrap());
    assert!(!leader.try_acquire().await.unwrap());
    assert_eq!(holder(leases.get("tractor-controller").await.unwrap()), follower_id);

    // A write from a stale read is a conflict, not a second leader.
    let old = leases.get("tractor-controller").await.unwrap();
    leases
        .patch(
            "tractor-controller",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "leaseDurationSeconds": 20 } })),
        )
        .await
        .unwrap();
    let racing = json!({ "metadata": { "resourceVersion": old.metadata.resource_version }, "spec": { "holderIdentity": leader_id } });
    let err = leases
        .patch("tractor-controller", &PatchParams::default(), &Patch::Merge(&racing))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 409), "{err:?}");
}

/// Issue 10's third defect through the real controller: `spec.rollout.steps`
/// edited to `[]` while a canary stands at a step. The reconcile used to
/// panic on it; now the canary is promoted, as one that starts without steps.
#[tokio::test]
async fn steps_edited_to_none_mid_canary_promote_it() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let router = Arc::new(FakeRouter::default());
    router.serve(100, 0);
    let _controller = start_controller(&client, router.clone());
    let long = json!([{ "weight": 10, "pause": "1h" }, { "weight": 50, "pause": "1h" }]);
    deploy_first(&client, long).await;
    set_version(&client, "2").await;
    pods_ready(&client, "digits-v2", 1).await;
    status_where(&client, "canary v2 at 10%", |s| s["canary"]["weight"] == 10).await;

    let patch = json!({ "spec": { "rollout": { "steps": [] } } });
    Api::<ModelDeployment>::namespaced(client.clone(), NS)
        .patch("digits", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let status = status_where(&client, "v2 promoted after the steps were removed", |s| {
        s["stable"]["version"] == "2" && s.get("canary").is_none()
    })
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(weights(&client).await, Some(w(&[("2", 100)])));
    let reasons = event_reasons(&client).await;
    assert!(reasons.contains(&"Promoted".to_string()), "{reasons:?}");
}

/// Issue 11's bad object: the schema lets `passes: [{type: quantize}]`
/// through, the types cannot read it, and the controller used to exit at
/// start with `Error deserializing response: missing field 'mode'`,
/// stopping every ModelDeployment. Stored before the controller starts (the
/// restart the issue saw), it now gets a Degraded condition and an Event
/// naming the field while another ModelDeployment deploys; fixed, it
/// reconciles; and one broken while the controller runs is reported the
/// same way, its stable version kept in the status.
#[tokio::test]
async fn an_unreadable_object_is_degraded_and_the_others_keep_reconciling() {
    let Some(emulator) = emulator() else { return };
    let client = client(&emulator);
    let mut broken = spec("1", two_paused_steps(), false);
    broken["optimize"] = json!({ "passes": [{ "type": "quantize" }] });
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": { "name": "broken", "namespace": NS }, "spec": broken,
    }))
    .unwrap();
    untyped(&client).create(&PostParams::default(), &object).await.unwrap();

    let _controller = start_controller(&client, Arc::default());
    deploy_first(&client, two_paused_steps()).await;
    let degraded = |name: &'static str| {
        let client = client.clone();
        async move {
            eventually(&client, &format!("{name} Degraded"), async || {
                let status = untyped(&client).get(name).await.unwrap().data["status"].clone();
                let degraded = condition(&status, "Degraded").clone();
                (degraded["status"] == "True").then_some((status, degraded))
            })
            .await
        }
    };
    let (_, condition_of_broken) = degraded("broken").await;
    let message = condition_of_broken["message"].as_str().unwrap();
    assert!(message.contains("spec.optimize.passes[0]") && message.contains("`mode`"), "{message}");
    let events = eventually(&client, "the InvalidSpec event", async || {
        let events = events_about(&client, "broken").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "one event, not one per requeue: {events:?}");
    assert_eq!(events[0].reason.as_deref(), Some("InvalidSpec"));
    assert!(events[0].note.as_deref().unwrap_or_default().contains("missing field `mode`"));

    // Fixed, it reconciles like any other.
    let fix = json!({ "spec": { "optimize": { "passes": [{ "type": "quantize", "mode": "weight-int8" }] } } });
    untyped(&client).patch("broken", &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    eventually(&client, "broken, fixed, Optimizing", async || {
        let status = untyped(&client).get("broken").await.unwrap().data["status"].clone();
        (status["phase"] == "Optimizing").then_some(())
    })
    .await;

    // Broken while the controller runs: reported, its stable version kept.
    let breaking = json!({ "spec": { "rollout": { "steps": [{ "weight": "ten" }] } } });
    untyped(&client)
        .patch("digits", &PatchParams::default(), &Patch::Merge(&breaking))
        .await
        .unwrap();
    let (status, condition_of_digits) = degraded("digits").await;
    let message = condition_of_digits["message"].as_str().unwrap();
    assert!(message.contains("spec.rollout.steps[0].weight"), "{message}");
    assert_eq!(status["stable"]["version"], "1", "{status:#}");
    assert_eq!(weights(&client).await, Some(w(&[("1", 100)])), "v1 keeps its traffic");
}
