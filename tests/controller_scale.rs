//! The controller benchmark's harness (`benches/controller/`, issue #14)
//! at N=20, as an ordinary test: the same fake API, fleet, direct passes
//! and `controller::run` story as `cargo bench --bench controller`, with
//! the controller in this process. It checks that the harness measures
//! real work, every `ModelDeployment` ending with the objects the
//! controller owes it, so the benchmark cannot silently measure nothing.
//! No timing is asserted.

// What the benchmark's driver alone uses is dead code here.
#[allow(dead_code)]
#[path = "../benches/controller/fake_api.rs"]
mod fake_api;
#[allow(dead_code)]
#[path = "../benches/controller/fleet.rs"]
mod fleet;
#[path = "../benches/controller/story.rs"]
mod story;
#[path = "../benches/controller/worker.rs"]
mod worker;

use std::time::Duration;

use serde_json::Value;

use fake_api::FakeApi;
use fleet::{Shape, Stage};

const N: usize = 20;

/// `controller::run` in this process, as the story drives it.
struct InProcess(#[allow(dead_code)] worker::Running);

impl story::Controller for InProcess {
    async fn progress(&mut self) -> Result<story::Progress, String> {
        Ok(worker::Timings::global().progress())
    }
    async fn take(&mut self) -> Result<Value, String> {
        Ok(worker::Timings::global().take())
    }
}

#[test]
fn the_fleet_has_every_shape_and_valid_specs() {
    for shape in Shape::ALL {
        assert!((0..N).any(|i| fleet::shape(i) == shape), "{shape:?} missing at N={N}");
    }
    assert!((0..N).any(fleet::gets_canary), "no canary at N={N}");
    for i in 0..N {
        for version in ["1", "2"] {
            let spec: tractor::crd::ModelDeploymentSpec =
                serde_json::from_value(fleet::spec(i, version)).expect("a spec");
            tractor::crd::validate(&spec).unwrap_or_else(|e| panic!("{}: {e}", fleet::name(i)));
        }
    }
}

#[test]
fn the_check_refuses_a_fleet_nothing_reconciled() {
    let api = FakeApi::new(None);
    fleet::create(&api, N);
    for stage in [Stage::Deployed, Stage::Canary] {
        assert_eq!(fleet::phases_pending(&api, N, stage), N);
        let problems = fleet::check(&api, N, stage);
        // Each one: its status, and every object it should own.
        assert!(problems.len() >= 4 * N, "{problems:?}");
    }
}

/// One test for both ways, in turn: the span clock is the process's one
/// global subscriber, and must see only the controller it is timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ways_reconcile_every_model_deployment_to_its_objects() {
    direct_passes_reconcile_the_fleet_to_its_canaries().await;
    the_real_controller_runs_the_story_and_restarts().await;
}

async fn direct_passes_reconcile_the_fleet_to_its_canaries() {
    let (api, url) = fleet::serve(N).await.unwrap();
    let report = worker::direct(&worker::client(&url)).await.unwrap_or_else(|e| panic!("{e}"));
    let passes = report["passes"].as_array().unwrap();
    for pass in passes {
        assert_eq!(pass["latency"]["count"], N as u64, "every one reconciled in each pass: {pass}");
        assert!(pass["requests"].as_u64().unwrap() >= N as u64, "{pass}");
    }
    for stage in ["deployed", "canary"] {
        let of =
            |kind: &str| passes.iter().filter(|p| p["stage"] == stage && p["kind"] == kind).count();
        assert!(of("converging") >= 1, "{stage}: {passes:?}");
        assert_eq!(of("steady"), 1, "{stage}: {passes:?}");
    }
    let steady = passes.iter().filter(|p| p["kind"] == "steady");
    assert!(steady.clone().all(|p| p["errors"] == 0 && p["problems"] == 0), "{passes:?}");
    assert_eq!(fleet::check(&api, N, Stage::Canary), Vec::<String>::new());
    assert!(report["process"]["peak_rss_kib"].as_u64().unwrap() > 0);
}

async fn the_real_controller_runs_the_story_and_restarts() {
    let (api, url) = fleet::serve(N).await.unwrap();
    let start = || {
        Ok(InProcess(worker::start_run(
            worker::client(&url),
            tractor::controller::DEFAULT_CONCURRENT_RECONCILES,
        )))
    };
    let report = story::run(&api, N, start, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(names, ["deployed", "canary", "restart"]);
    for stage in stages {
        let reconciles = stage["reconciles"].as_u64().unwrap();
        assert!(reconciles > 0, "{stage}");
        assert_eq!(stage["latency"]["count"], reconciles, "each reconcile timed: {stage}");
        assert!(stage["requests"].as_u64().unwrap() > 0, "{stage}");
    }
    assert!(stages[0]["reconciles"].as_u64().unwrap() >= N as u64);
    assert!(stages[2]["reconciles"].as_u64().unwrap() >= N as u64, "a restart reconciles each one");
    assert_eq!(fleet::check(&api, N, Stage::Canary), Vec::<String>::new());
}
