//! One rollout scenario table, run by both executors: the controller's real
//! `reconcile` against an in-memory API (`tests/conformance_controller.rs`)
//! and `tractor up`'s runner with in-process children
//! (`tests/conformance_up.rs`). A scenario is a sequence of ticks, each with
//! the spec as it stands, the router's canary figures and the clock; after
//! each tick both executors must show the same [`Seen`]: the status phase,
//! the stable and canary versions, the router's weights, and which versions
//! run with which `serve` arguments. The planner decides; this suite checks
//! that the two executors carry its decisions out alike.
//!
//! Adding a scenario: write a function returning a [`Scenario`] below and
//! name it in [`scenario_tests!`]; both driver files then run it.

#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tractor::crd::{ModelDeploymentSpec, Phase};
use tractor::plan::CanaryFigures;

/// The scenarios' clock starts here; steps say seconds after it.
pub const T0: i64 = 1_800_000_000;

pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).expect("a time in range")
}

/// What an executor shows once a tick is carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub phase: Phase,
    pub stable: Option<String>,
    /// The canary's version and weight, as the status says.
    pub canary: Option<(String, u32)>,
    /// The router's table: each version's weight.
    pub weights: Vec<(String, u32)>,
    /// The versions whose `serve` runs, and what it was given.
    pub serving: BTreeMap<String, Serve>,
}

/// A `serve`'s arguments, without those that only say where it runs
/// (`--host`, `--http-port`, `--grpc-port`, the processing file's path), and the
/// processing document read from where the executor put it.
#[derive(Debug, Clone, PartialEq)]
pub struct Serve {
    pub flags: BTreeMap<String, String>,
    pub processing: Option<Value>,
}

impl Serve {
    /// From `--flag value` pairs; `read` finds the document `--processing` names.
    pub fn from_flags(
        pairs: impl IntoIterator<Item = (String, String)>,
        read: impl Fn(&str) -> Option<Value>,
    ) -> Serve {
        let mut flags = BTreeMap::new();
        let mut processing = None;
        for (flag, value) in pairs {
            match flag.as_str() {
                "--host" | "--http-port" | "--grpc-port" => {}
                "--processing" => {
                    let document = read(&value)
                        .unwrap_or_else(|| panic!("--processing {value}: nothing readable there"));
                    processing = Some(document);
                }
                _ => {
                    flags.insert(flag, value);
                }
            }
        }
        Serve { flags, processing }
    }
}

/// One executor under test.
#[allow(async_fn_in_trait)]
pub trait Executor {
    /// One look at the world at `now`, with the spec as it now stands and
    /// the router measuring `figures` for the canary; then what it shows.
    async fn tick(
        &mut self,
        spec: &ModelDeploymentSpec,
        figures: Option<CanaryFigures>,
        now: Timestamp,
    ) -> Seen;
    /// Stops what it started.
    async fn stop(self);
}

pub struct Step {
    pub at: i64,
    /// What happens at this tick, for the failure message.
    pub what: &'static str,
    pub spec: ModelDeploymentSpec,
    pub figures: Option<CanaryFigures>,
    pub expect: Expect,
}

pub struct Scenario {
    pub name: &'static str,
    pub steps: Vec<Step>,
    /// What every running version's `serve` is given, by version.
    pub serve: fn(&str) -> Serve,
    /// The figures the router reports from the next step on.
    figures: Option<CanaryFigures>,
}

impl Scenario {
    fn new(name: &'static str, serve: fn(&str) -> Serve) -> Scenario {
        Scenario { name, steps: Vec::new(), serve, figures: None }
    }

    /// A tick at `at` seconds with `spec`, and what it must show.
    fn tick(
        mut self,
        at: i64,
        spec: &ModelDeploymentSpec,
        what: &'static str,
        expect: Expect,
    ) -> Self {
        let figures = self.figures;
        self.steps.push(Step { at, what, spec: spec.clone(), figures, expect });
        self
    }

    /// From the next tick on, the router measures this for the canary.
    fn traffic(mut self, figures: CanaryFigures) -> Self {
        self.figures = Some(figures);
        self
    }
}

/// What a step must show, written as a person reads a status.
pub struct Expect {
    phase: Phase,
    stable: Option<&'static str>,
    canary: Option<(&'static str, u32)>,
    weights: Vec<(&'static str, u32)>,
    serving: Vec<&'static str>,
}

fn expect(phase: Phase) -> Expect {
    Expect { phase, stable: None, canary: None, weights: Vec::new(), serving: Vec::new() }
}

impl Expect {
    fn stable(mut self, version: &'static str) -> Self {
        self.stable = Some(version);
        self
    }
    fn canary(mut self, version: &'static str, weight: u32) -> Self {
        self.canary = Some((version, weight));
        self
    }
    fn weights(mut self, weights: &[(&'static str, u32)]) -> Self {
        self.weights = weights.to_vec();
        self
    }
    fn serving(mut self, versions: &[&'static str]) -> Self {
        self.serving = versions.to_vec();
        self
    }

    fn seen(&self, serve: fn(&str) -> Serve) -> Seen {
        Seen {
            phase: self.phase,
            stable: self.stable.map(str::to_string),
            canary: self.canary.map(|(v, w)| (v.to_string(), w)),
            weights: self.weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            serving: self.serving.iter().map(|v| (v.to_string(), serve(v))).collect(),
        }
    }
}

/// Runs `scenario` through `executor`, checking every step, then stops it.
pub async fn run(scenario: Scenario, mut executor: impl Executor) {
    for (i, step) in scenario.steps.iter().enumerate() {
        let seen = executor.tick(&step.spec, step.figures, at(step.at)).await;
        let expected = step.expect.seen(scenario.serve);
        if seen != expected {
            executor.stop().await;
            panic!(
                "scenario {:?}, step {} (t={}s: {}):\n  expected {expected:?}\n  seen     {seen:?}",
                scenario.name,
                i + 1,
                step.at,
                step.what
            );
        }
    }
    executor.stop().await;
}

/// The spec of `version`, with `extra` lines under `spec:` (rollout, serving).
pub fn spec(version: &str, extra: &str) -> ModelDeploymentSpec {
    let yaml = format!(
        "model: {{name: digits, version: '{version}', source: {{uri: '{}'}}}}\n{extra}",
        source(version)
    );
    serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn source(version: &str) -> String {
    format!("s3://models/digits-{version}.onnx")
}

/// Two steps, an analysis every 30 s that fails on more than 5% errors,
/// twice: the planner tests' canary.
const CANARY: &str = "rollout:
  steps: [{weight: 10, pause: 1m}, {weight: 50, pause: 1m}]
  analysis: {interval: 30s, minRequests: 10, maxErrorRate: 0.05, maxLatencyP99: 100ms, failureLimit: 2}
";

const GOOD: CanaryFigures =
    CanaryFigures { requests: 200, errors: 0, latency_p99_ms: Some(20.0), agreement: None };
const BAD: CanaryFigures =
    CanaryFigures { requests: 100, errors: 40, latency_p99_ms: Some(20.0), agreement: None };

fn flags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect()
}

/// `serve` with the spec's defaults: batches of 32, no delay, no processing.
fn default_serve(version: &str) -> Serve {
    Serve {
        flags: flags(&[
            ("--model", &source(version)),
            ("--name", "digits"),
            ("--model-version", version),
            ("--max-batch-size", "32"),
            ("--max-batch-delay-us", "0"),
        ]),
        processing: None,
    }
}

/// `stable` serving all the traffic, the versions in `serving` running.
fn serving_only(phase: Phase, stable: &'static str, serving: &[&'static str]) -> Expect {
    expect(phase).stable(stable).weights(&[(stable, 100)]).serving(serving)
}

/// A canary at `weight` next to `stable`, both running; the canary takes
/// no traffic before its pods are ready (weight 0).
fn canary(stable: &'static str, version: &'static str, weight: u32) -> Expect {
    let weights: &[(&'static str, u32)] =
        if weight == 0 { &[(stable, 100)] } else { &[(stable, 100 - weight), (version, weight)] };
    expect(Phase::Progressing)
        .stable(stable)
        .canary(version, weight)
        .weights(weights)
        .serving(&[stable, version])
}

/// Version 1 deployed and stable: where most scenarios begin.
fn stable_v1(name: &'static str, serve: fn(&str) -> Serve, v1: &ModelDeploymentSpec) -> Scenario {
    // Stable at once, Progressing until its pods are ready.
    let first = serving_only(Phase::Progressing, "1", &["1"]);
    Scenario::new(name, serve).tick(0, v1, "first deploy", first).tick(
        5,
        v1,
        "its pods ready",
        serving_only(Phase::Succeeded, "1", &["1"]),
    )
}

/// Version 1 stable, version 2 asked for at t=100 and at its first step
/// (10%) at t=110. Returns the scenario so far and version 2's spec.
fn canary_at_first_step(
    name: &'static str,
    serve: fn(&str) -> Serve,
    extra: &str,
) -> (Scenario, ModelDeploymentSpec) {
    let (v1, v2) = (spec("1", extra), spec("2", extra));
    let scenario = stable_v1(name, serve, &v1)
        .tick(100, &v2, "version 2 asked for", canary("1", "2", 0))
        .tick(110, &v2, "its pods ready: first step", canary("1", "2", 10));
    (scenario, v2)
}

pub fn first_deploy() -> Scenario {
    let v1 = spec("1", CANARY);
    stable_v1("first deploy", default_serve, &v1).tick(
        600,
        &v1,
        "steady state",
        serving_only(Phase::Succeeded, "1", &["1"]),
    )
}

pub fn steps_and_promotion() -> Scenario {
    let (scenario, v2) = canary_at_first_step("steps and promotion", default_serve, CANARY);
    scenario
        .traffic(GOOD)
        .tick(140, &v2, "analysis passes, the pause is not over", canary("1", "2", 10))
        .tick(170, &v2, "second step", canary("1", "2", 50))
        .tick(200, &v2, "analysis passes", canary("1", "2", 50))
        .tick(231, &v2, "promoted; 1 kept warm", serving_only(Phase::Succeeded, "2", &["1", "2"]))
        .tick(
            832,
            &v2,
            "keepWarm (10m) over: 1 scaled down",
            serving_only(Phase::Succeeded, "2", &["2"]),
        )
}

pub fn failed_analysis_rolls_back() -> Scenario {
    let (scenario, v2) = canary_at_first_step("failed analysis rolls back", default_serve, CANARY);
    scenario
        .traffic(BAD)
        .tick(140, &v2, "one failure, below failureLimit", canary("1", "2", 10))
        .tick(170, &v2, "second failure: rolled back", serving_only(Phase::RolledBack, "1", &["1"]))
        .tick(
            300,
            &v2,
            "not retried until the spec changes",
            serving_only(Phase::RolledBack, "1", &["1"]),
        )
}

pub fn version_set_back_mid_canary() -> Scenario {
    let (scenario, _) = canary_at_first_step("version set back mid-canary", default_serve, CANARY);
    let v1 = spec("1", CANARY);
    scenario.tick(120, &v1, "version set back to 1", serving_only(Phase::Succeeded, "1", &["1"]))
}

pub fn keep_warm_rollback() -> Scenario {
    let extra = "rollout: {keepWarm: 1m}\n";
    let (v1, v2) = (spec("1", extra), spec("2", extra));
    let back_to_1 =
        expect(Phase::Progressing).stable("2").weights(&[("2", 100)]).serving(&["1", "2"]);
    stable_v1("keepWarm rollback", default_serve, &v1)
        .tick(100, &v2, "version 2 asked for", canary("1", "2", 0))
        .tick(
            105,
            &v2,
            "no steps: promoted once ready",
            serving_only(Phase::Succeeded, "2", &["1", "2"]),
        )
        .tick(
            1000,
            &v2,
            "keepWarm over: 1 kept at zero replicas",
            serving_only(Phase::Succeeded, "2", &["2"]),
        )
        .tick(1010, &v1, "set back to 1: its pods start again", back_to_1)
        .tick(
            1015,
            &v1,
            "ready: 100% at once, no analysis",
            serving_only(Phase::Succeeded, "1", &["1", "2"]),
        )
}

pub fn steps_edited_to_none_mid_canary() -> Scenario {
    let (scenario, _) =
        canary_at_first_step("steps edited to [] mid-canary", default_serve, CANARY);
    let no_steps = spec("2", "rollout: {steps: []}\n");
    scenario.tick(
        120,
        &no_steps,
        "steps edited to []: promoted",
        serving_only(Phase::Succeeded, "2", &["1", "2"]),
    )
}

pub const PROCESSING: &str = "serving:
  batching: {maxBatchSize: 8, maxBatchDelay: 2ms}
  processing:
    inputs: [{name: features, features: {fields: [{name: age, mean: 48.5, std: 13.1}, {name: bmi, mean: 26.4, std: 4.4}]}}]
    outputs: [{name: target, affine: {scale: 77.0, offset: 152.1}}]
";

/// `serve` with [`PROCESSING`]'s batching and its processing document.
fn processing_serve(version: &str) -> Serve {
    let document = serde_json::json!({
        "inputs": [{ "name": "features", "features": { "fields": [
            { "name": "age", "mean": 48.5, "std": 13.1 },
            { "name": "bmi", "mean": 26.4, "std": 4.4 } ] } }],
        "outputs": [{ "name": "target", "affine": { "scale": 77.0, "offset": 152.1 } }]
    });
    Serve {
        flags: flags(&[
            ("--model", &source(version)),
            ("--name", "digits"),
            ("--model-version", version),
            ("--max-batch-size", "8"),
            ("--max-batch-delay-us", "2000"),
        ]),
        processing: Some(document),
    }
}

pub fn processing_and_batching() -> Scenario {
    let extra = format!("{CANARY}{PROCESSING}");
    let (scenario, v2) = canary_at_first_step("processing and batching", processing_serve, &extra);
    scenario.traffic(GOOD).tick(170, &v2, "second step", canary("1", "2", 50))
}

/// One test per scenario for a driver: `$run` is an `async fn(Scenario)`.
macro_rules! scenario_tests {
    ($run:ident) => {
        #[tokio::test]
        async fn first_deploy() {
            $run(conformance::first_deploy()).await
        }
        #[tokio::test]
        async fn steps_and_promotion() {
            $run(conformance::steps_and_promotion()).await
        }
        #[tokio::test]
        async fn failed_analysis_rolls_back() {
            $run(conformance::failed_analysis_rolls_back()).await
        }
        #[tokio::test]
        async fn version_set_back_mid_canary() {
            $run(conformance::version_set_back_mid_canary()).await
        }
        #[tokio::test]
        async fn keep_warm_rollback() {
            $run(conformance::keep_warm_rollback()).await
        }
        #[tokio::test]
        async fn steps_edited_to_none_mid_canary() {
            $run(conformance::steps_edited_to_none_mid_canary()).await
        }
        #[tokio::test]
        async fn processing_and_batching() {
            $run(conformance::processing_and_batching()).await
        }
    };
}
