//! Every transition of the planner, with the clock passed in. A small
//! `World` plays the executor: it keeps the status the planner wrote, starts
//! pods for the versions the plan asks for when told to, and feeds figures.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::*;
use crate::crd::{ModelDeploymentSpec, validate};

const T0: i64 = 1_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).unwrap()
}

fn spec(extra: &str, version: &str) -> ValidSpec {
    let yaml = format!(
        "model: {{name: digits, version: '{version}', source: {{uri: 's3://models/digits-{version}.onnx', sha256: '{}'}}}}\n{extra}",
        "a".repeat(64)
    );
    let spec: ModelDeploymentSpec = serde_saphyr::from_str(&yaml).unwrap();
    validate(&spec).unwrap()
}

const CANARY: &str = "rollout:
  steps: [{weight: 10, pause: 1m}, {weight: 50, pause: 1m}]
  analysis: {interval: 30s, minRequests: 10, maxErrorRate: 0.05, maxLatencyP99: 100ms, failureLimit: 2}
";

/// The executor's side, simulated.
struct World {
    observed: Observed,
    last: Option<Plan>,
}

impl World {
    fn new() -> World {
        World { observed: Observed::default(), last: None }
    }

    /// Version 1 of `extra` serving, then version 2 started at t=100, its
    /// pods ready, and at its first step since t=110: where most canary
    /// stories begin. Returns the world and both specs.
    fn canary_at_first_step(extra: &str) -> (World, ValidSpec, ValidSpec) {
        let (v1, v2) = (spec(extra, "1"), spec(extra, "2"));
        let mut world = World::with_stable(&v1);
        world.step(&v2, 100);
        world.pods_ready("2");
        world.step(&v2, 110);
        (world, v1, v2)
    }

    /// The router measures the same `figures` before each tick at `times`:
    /// steady traffic through several analyses. Returns the last plan.
    fn analyses(&mut self, spec: &ValidSpec, figures: (u64, u64, f64), times: &[i64]) -> Plan {
        let (requests, errors, p99) = figures;
        let mut last = None;
        for &t in times {
            self.figures(requests, errors, p99);
            last = Some(self.step(spec, t));
        }
        last.expect("at least one tick")
    }

    /// Plans, then applies what the executor would (status, requests cleared).
    fn step(&mut self, spec: &ValidSpec, now: i64) -> Plan {
        let plan = plan(spec, &self.observed, at(now));
        self.observed.carry(&plan);
        self.last = Some(plan.clone());
        plan
    }

    fn pods_ready(&mut self, version: &str) {
        self.observed.ready.insert(version.to_string(), 1);
    }

    fn figures(&mut self, requests: u64, errors: u64, p99: f64) {
        self.observed.figures =
            Some(CanaryFigures { requests, errors, latency_p99_ms: Some(p99), agreement: None });
    }

    /// Deploys version 1 and makes it stable.
    fn with_stable(spec: &ValidSpec) -> World {
        let mut world = World::new();
        world.step(spec, 0);
        world.pods_ready(&spec.version);
        let plan = world.step(spec, 5);
        assert_eq!(plan.status.phase, Phase::Succeeded);
        world
    }
}

fn history(plan: &Plan) -> Vec<(String, Outcome)> {
    plan.status.history.iter().map(|h| (h.version.clone(), h.outcome)).collect()
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|e| e.reason).collect()
}

fn condition<'a>(plan: &'a Plan, kind: &str) -> &'a Condition {
    plan.status.conditions.iter().find(|c| c.type_ == kind).unwrap()
}

#[test]
fn first_deployment_goes_straight_to_100_percent_once_ready() {
    let v1 = spec(CANARY, "1");
    let mut world = World::new();
    let plan = world.step(&v1, 0);
    assert_eq!(plan.status.phase, Phase::Progressing);
    assert_eq!(plan.versions.len(), 1);
    assert_eq!(plan.versions[0].artifact.uri, "s3://models/digits-1.onnx");
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert_eq!(plan.requeue_after, WAIT_POLL);
    assert_eq!(reasons(&plan), ["Deploying"]);
    assert_eq!(condition(&plan, "Ready").status, "False");
    // Nothing to compare it with: the stable version from the start,
    // pending until its pods are ready, and never a canary.
    let pending = plan.status.stable.as_ref().expect("named stable while it waits");
    assert_eq!((pending.version.as_str(), pending.weight), ("1", 100));
    assert!(!pending.serving() && pending.pending_since.is_some());
    assert!(plan.status.canary.is_none(), "a first deployment is not a canary");

    world.pods_ready("1");
    let plan = world.step(&v1, 5);
    assert_eq!(plan.status.phase, Phase::Succeeded);
    assert_eq!(plan.status.stable.as_ref().unwrap().version, "1");
    assert!(plan.status.stable.as_ref().unwrap().serving());
    assert!(plan.status.canary.is_none(), "no canary on a first deployment");
    assert_eq!(history(&plan), [("1".into(), Outcome::Promoted)]);
    assert_eq!(condition(&plan, "Ready").status, "True");
    assert_eq!(plan.requeue_after, STEADY_POLL);

    // Steady state: nothing changes, conditions keep their transition time.
    let again = world.step(&v1, 600);
    assert!(again.events.is_empty());
    assert_eq!(
        condition(&again, "Ready").last_transition_time,
        condition(&plan, "Ready").last_transition_time
    );
}

#[test]
fn pods_never_ready_hit_the_progress_deadline() {
    let v1 = spec("rollout: {progressDeadline: 2m}", "1");
    let mut world = World::new();
    let plan = world.step(&v1, 0);
    assert_eq!(plan.status.phase, Phase::Progressing);
    let plan = world.step(&v1, 121);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert!(plan.status.message.as_ref().unwrap().contains("not ready within progressDeadline 2m"));
    assert_eq!(reasons(&plan), ["ProgressDeadlineExceeded"]);
    assert_eq!(condition(&plan, "Degraded").status, "True");
    // It does not retry the same version on its own.
    let plan = world.step(&v1, 200);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert!(plan.versions.is_empty());
}

#[test]
fn a_first_deployment_told_as_a_canary_by_an_older_build_keeps_its_deadline() {
    let v1 = spec("rollout: {progressDeadline: 2m}", "1");
    let mut world = World::new();
    world.observed.status.canary = Some(CanaryStatus {
        version: "1".into(),
        weight: 100,
        started: Some(Time(at(0))),
        ..CanaryStatus::default()
    });
    let plan = world.step(&v1, 60);
    assert!(plan.events.is_empty(), "the same wait, not a new deployment: {:?}", reasons(&plan));
    assert!(plan.status.canary.is_none());
    assert_eq!(plan.status.stable.as_ref().unwrap().pending_since, Some(Time(at(0))));
    let plan = world.step(&v1, 121);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert!(plan.status.stable.is_none(), "a version that never served is not stable");
}

#[test]
fn a_canary_promotes_through_every_step_when_analysis_passes() {
    let v1 = spec(CANARY, "1");
    let mut world = World::with_stable(&v1);
    let v2 = spec(CANARY, "2");

    let plan = world.step(&v2, 100);
    assert_eq!(plan.status.phase, Phase::Progressing);
    assert_eq!(
        plan.weights,
        vec![("1".to_string(), 100)],
        "no weight before the canary's pods are ready"
    );
    assert_eq!(plan.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(reasons(&plan), ["CanaryStarted"]);

    world.pods_ready("2");
    let plan = world.step(&v2, 110);
    assert_eq!(plan.weights, vec![("1".to_string(), 90), ("2".to_string(), 10)]);
    assert_eq!(plan.status.canary.as_ref().unwrap().weight, 10);
    assert!(plan.reset_figures, "a new step starts a new measuring window");

    world.figures(200, 1, 20.0);
    let plan = world.step(&v2, 140);
    let analysis = plan.status.canary.as_ref().unwrap().analysis.clone().unwrap();
    assert_eq!(analysis.verdict, Verdict::Pass);
    assert!(analysis.reason.contains("error rate 0.50% <= 5.00%"), "{}", analysis.reason);
    assert!(analysis.reason.contains("p99 20.0 ms <= 100.0 ms"), "{}", analysis.reason);
    assert_eq!(plan.weights[1].1, 10, "the step's pause is not over");

    world.figures(200, 0, 20.0);
    let plan = world.step(&v2, 170);
    assert_eq!(plan.weights, vec![("1".to_string(), 50), ("2".to_string(), 50)]);
    assert!(reasons(&plan).contains(&"CanaryStep"));

    world.figures(300, 0, 25.0);
    world.step(&v2, 200);
    world.figures(300, 0, 25.0);
    let plan = world.step(&v2, 231);
    assert_eq!(plan.status.phase, Phase::Succeeded);
    assert_eq!(plan.weights, vec![("2".to_string(), 100)]);
    assert_eq!(plan.status.stable.as_ref().unwrap().version, "2");
    assert!(reasons(&plan).contains(&"Promoted"));
    assert_eq!(
        history(&plan),
        [
            ("1".into(), Outcome::Promoted),
            ("1".into(), Outcome::Replaced),
            ("2".into(), Outcome::Promoted)
        ]
    );
    // The old stable stays warm, then is kept scaled down.
    let old = plan.versions.iter().find(|v| v.version == "1").unwrap();
    assert_eq!(old.replicas, 1);
    let later = world.step(&v2, 231 + 601);
    assert_eq!(later.versions.iter().find(|v| v.version == "1").unwrap().replicas, 0);
}

#[test]
fn a_failing_canary_is_rolled_back_with_the_figures() {
    let (mut world, _, v2) = World::canary_at_first_step(CANARY);

    world.figures(100, 30, 20.0);
    let plan = world.step(&v2, 140);
    assert_eq!(plan.status.canary.as_ref().unwrap().failures, 1);
    assert_eq!(reasons(&plan), ["AnalysisFailed"]);
    assert_eq!(plan.weights[1].1, 10, "one failure is below failureLimit 2");

    world.figures(100, 40, 20.0);
    let plan = world.step(&v2, 170);
    assert_eq!(plan.status.phase, Phase::RolledBack);
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert!(plan.status.canary.is_none());
    assert!(!plan.versions.iter().any(|v| v.version == "2"), "the canary's pods go away");
    let last = plan.status.history.last().unwrap();
    assert_eq!((last.version.as_str(), last.outcome), ("2", Outcome::RolledBack));
    assert!(last.reason.contains("error rate 40.00% > 5.00%"), "{}", last.reason);
    assert!(reasons(&plan).contains(&"RolledBack"));
    assert_eq!(condition(&plan, "Degraded").status, "True");
    assert_eq!(condition(&plan, "Ready").status, "True", "the stable version still serves");

    // The same version is not retried until the spec changes.
    let plan = world.step(&v2, 300);
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert!(plan.status.canary.is_none());
}

#[test]
fn slow_canaries_fail_on_latency() {
    let (mut world, _, v2) = World::canary_at_first_step(CANARY);
    world.figures(100, 0, 450.0);
    let plan = world.step(&v2, 140);
    let analysis = plan.status.canary.unwrap().analysis.unwrap();
    assert_eq!(analysis.verdict, Verdict::Fail);
    assert!(analysis.reason.contains("p99 450.0 ms > 100.0 ms"), "{}", analysis.reason);
}

#[test]
fn no_traffic_pauses_by_default_and_says_so() {
    let (mut world, _, v2) = World::canary_at_first_step(CANARY);
    world.figures(3, 0, 10.0);
    let plan = world.step(&v2, 140);
    assert_eq!(
        plan.status.canary.as_ref().unwrap().analysis.as_ref().unwrap().verdict,
        Verdict::NoData
    );
    // Even past the pause, no pass means no next step.
    world.figures(2, 0, 10.0);
    let plan = world.step(&v2, 175);
    assert_eq!(plan.weights[1].1, 10);
    assert!(
        plan.status.message.as_ref().unwrap().contains("paused at 10%"),
        "{:?}",
        plan.status.message
    );
    assert_eq!(plan.status.canary.as_ref().unwrap().failures, 0);
}

#[test]
fn no_traffic_can_count_as_pass_or_fail() {
    for (policy, expect_promoted) in [("pass", true), ("fail", false)] {
        let extra = format!(
            "rollout:\n  steps: [{{weight: 20, pause: 30s}}]\n  analysis: {{interval: 30s, minRequests: 10, failureLimit: 1, onNoData: {policy}}}\n"
        );
        let (mut world, _, v2) = World::canary_at_first_step(&extra);
        let plan = world.analyses(&v2, (0, 0, 0.0), &[140]);
        if expect_promoted {
            assert_eq!(plan.status.stable.as_ref().unwrap().version, "2", "{policy}");
        } else {
            assert_eq!(plan.status.phase, Phase::RolledBack, "{policy}");
        }
    }
}

#[test]
fn auto_rollback_off_holds_the_canary_and_says_so() {
    let extra = format!("{CANARY}  autoRollback: false\n");
    let (mut world, _, v2) = World::canary_at_first_step(&extra);
    let plan = world.analyses(&v2, (100, 50, 20.0), &[140, 170]);
    assert_eq!(plan.status.phase, Phase::Progressing);
    assert_eq!(plan.weights[1], ("2".to_string(), 10), "held at its weight");
    assert!(plan.status.message.as_ref().unwrap().contains("autoRollback is off"));
    world.observed.abort_requested = true;
    let plan = world.step(&v2, 200);
    assert_eq!(plan.status.phase, Phase::RolledBack);
    assert!(plan.clear_requests);
    assert_eq!(plan.status.history.last().unwrap().outcome, Outcome::Aborted);
}

#[test]
fn steps_without_a_pause_wait_for_a_manual_promote() {
    let extra = "rollout:\n  steps: [{weight: 25}]\n  analysis: {interval: 30s, minRequests: 1}\n";
    let (mut world, _, v2) = World::canary_at_first_step(extra);
    let plan = world.analyses(&v2, (50, 0, 5.0), &[1000]);
    assert_eq!(plan.weights[1].1, 25, "no pause: it waits however long");
    assert!(plan.status.message.as_ref().unwrap().contains("waiting for a promote"));
    world.observed.promote_requested = true;
    let plan = world.step(&v2, 1001);
    assert!(plan.clear_requests);
    assert_eq!(plan.status.stable.as_ref().unwrap().version, "2");
    assert!(plan.status.history.last().unwrap().reason.contains("tractor.dev/promote"));
}

#[test]
fn a_new_version_mid_canary_supersedes_it() {
    let (mut world, _, _) = World::canary_at_first_step(CANARY);
    let v3 = spec(CANARY, "3");
    let plan = world.step(&v3, 120);
    assert!(reasons(&plan).contains(&"CanarySuperseded"));
    assert!(reasons(&plan).contains(&"CanaryStarted"));
    assert_eq!(plan.status.canary.as_ref().unwrap().version, "3");
    assert!(!plan.versions.iter().any(|v| v.version == "2"));
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert!(history(&plan).contains(&("2".into(), Outcome::Superseded)));
}

#[test]
fn setting_the_version_back_mid_canary_abandons_it() {
    let (mut world, v1, _) = World::canary_at_first_step(CANARY);
    let plan = world.step(&v1, 120);
    assert_eq!(plan.status.phase, Phase::Succeeded);
    assert!(plan.status.canary.is_none());
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert!(reasons(&plan).contains(&"CanaryAbandoned"));
}

#[test]
fn setting_the_version_back_to_a_kept_one_is_a_fast_rollback() {
    let extra = "rollout: {keepWarm: 1m}\n";
    let v1 = spec(extra, "1");
    let mut world = World::with_stable(&v1);
    let v2 = spec(extra, "2");
    world.step(&v2, 100);
    world.pods_ready("2");
    let plan = world.step(&v2, 105);
    assert_eq!(plan.status.stable.as_ref().unwrap().version, "2", "no steps: promoted once ready");
    // Long after keepWarm, version 1 is kept at zero replicas.
    let plan = world.step(&v2, 1000);
    assert_eq!(plan.versions.iter().find(|v| v.version == "1").unwrap().replicas, 0);

    let plan = world.step(&v1, 1010);
    assert_eq!(plan.status.phase, Phase::Progressing);
    assert_eq!(plan.weights, vec![("2".to_string(), 100)], "v2 serves until v1's pods are back");
    assert_eq!(plan.versions.iter().find(|v| v.version == "1").unwrap().replicas, 1);
    assert_eq!(
        plan.versions.iter().find(|v| v.version == "1").unwrap().artifact.uri,
        "s3://models/digits-1.onnx"
    );
    world.pods_ready("1");
    let plan = world.step(&v1, 1015);
    assert_eq!(plan.status.stable.as_ref().unwrap().version, "1");
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert!(plan.status.canary.is_none(), "no canary analysis on a rollback to a known version");
    assert!(reasons(&plan).contains(&"RolledBackToKept"));
}

#[test]
fn canary_pods_that_never_start_are_aborted_and_stable_keeps_serving() {
    let extra = format!("{CANARY}  progressDeadline: 1m\n");
    let v1 = spec(&extra, "1");
    let mut world = World::with_stable(&v1);
    let v2 = spec(&extra, "2");
    world.step(&v2, 100);
    let plan = world.step(&v2, 161);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert_eq!(plan.status.history.last().unwrap().outcome, Outcome::Failed);
    assert_eq!(condition(&plan, "Ready").status, "True");
}

#[test]
fn optimization_running_succeeded_and_registered() {
    let extra = "optimize: {passes: [{type: fold}]}\n";
    let v1 = spec(extra, "1");
    let mut world = World::new();
    let plan = world.step(&v1, 0);
    assert_eq!(plan.status.phase, Phase::Optimizing);
    let job = plan.job.clone().unwrap();
    assert_eq!(job.version, "1");
    assert_eq!(job.source.uri, "s3://models/digits-1.onnx");
    assert!(plan.versions.is_empty(), "nothing to serve before the artifact exists");

    world.observed.job = Some(JobState::Running);
    let plan = world.step(&v1, 10);
    assert_eq!(plan.status.phase, Phase::Optimizing);
    assert!(plan.job.is_some(), "the job keeps existing while it runs");

    let artifact =
        Artifact { uri: "s3://artifacts/digits-1-opt.onnx".into(), sha256: Some("b".repeat(64)) };
    world.observed.job = Some(JobState::Succeeded {
        artifact: artifact.clone(),
        size_bytes: Some(1234),
        metrics: VersionMetrics { accuracy: Some(0.97), ..VersionMetrics::default() },
    });
    let plan = world.step(&v1, 60);
    let registered = plan.register.clone().unwrap();
    assert_eq!(registered.version, "1");
    assert_eq!(
        registered.parent.as_deref(),
        Some("a".repeat(64).as_str()),
        "lineage: the source digest"
    );
    assert_eq!(registered.artifact.sha256, "b".repeat(64));
    assert_eq!(registered.metrics.accuracy, Some(0.97));
    assert_eq!(plan.versions[0].artifact, artifact);

    // Once registered, the job is no longer needed and the same recipe on
    // the same source is not built again, whatever the version is called.
    world.observed.job = None;
    world.observed.registered.push(Registered {
        version: "1".into(),
        artifact: artifact.clone(),
        parent: Some("a".repeat(64)),
        recipe: v1.optimize.clone(),
    });
    world.pods_ready("1");
    let plan = world.step(&v1, 70);
    assert!(plan.job.is_none());
    assert_eq!(plan.status.phase, Phase::Succeeded);
    let renamed = spec(extra, "1b");
    let mut renamed = renamed.clone();
    renamed.source_uri = v1.source_uri.clone();
    let plan = world.step(&renamed, 80);
    assert!(plan.job.is_none(), "same source digest and recipe: reused");
}

#[test]
fn optimization_failure_or_refusal_keeps_the_stable_version() {
    let extra = "optimize: {passes: [{type: fold}]}\n";
    let v1 = spec(extra, "1");
    let mut world = World::new();
    world.step(&v1, 0);
    let artifact = Artifact { uri: "s3://a/1.onnx".into(), sha256: Some("c".repeat(64)) };
    world.observed.job = Some(JobState::Succeeded {
        artifact,
        size_bytes: None,
        metrics: VersionMetrics::default(),
    });
    world.step(&v1, 10);
    world.pods_ready("1");
    world.step(&v1, 20);
    world.observed.job = None;

    let v2 = spec(extra, "2");
    world.step(&v2, 100);
    world.observed.job =
        Some(JobState::Failed { reason: "accuracy dropped 4.1 points, maxDrop is 1".into() });
    let plan = world.step(&v2, 150);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert!(plan.status.message.as_ref().unwrap().contains("accuracy dropped 4.1 points"));
    assert!(plan.status.message.as_ref().unwrap().contains("1 keeps serving"));
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
    assert_eq!(reasons(&plan), ["OptimizationFailed"]);
    let plan = world.step(&v2, 200);
    assert!(plan.events.is_empty(), "reported once");
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
}

#[test]
fn history_limit_bounds_the_kept_versions() {
    let extra = "rollout: {revisionHistoryLimit: 2, keepWarm: 0s}\n";
    let mut world = World::with_stable(&spec(extra, "1"));
    for (i, v) in ["2", "3", "4", "5"].iter().enumerate() {
        let s = spec(extra, v);
        world.step(&s, 100 * (i as i64 + 1));
        world.pods_ready(v);
        world.step(&s, 100 * (i as i64 + 1) + 5);
    }
    let plan = world.last.clone().unwrap();
    let kept: Vec<(&str, i32)> =
        plan.versions.iter().map(|v| (v.version.as_str(), v.replicas)).collect();
    assert_eq!(kept, [("5", 1), ("4", 0), ("3", 0)]);
}

#[test]
fn judge_reports_figures_and_thresholds() {
    let analysis = spec(CANARY, "1").rollout.analysis;
    let now = Time(at(0));
    let pass = judge(
        &analysis,
        &CanaryFigures { requests: 100, errors: 1, latency_p99_ms: Some(12.0), agreement: None },
        now.clone(),
    );
    assert_eq!(pass.verdict, Verdict::Pass);
    let fail = judge(
        &analysis,
        &CanaryFigures { requests: 100, errors: 10, latency_p99_ms: Some(120.0), agreement: None },
        now.clone(),
    );
    assert_eq!(fail.verdict, Verdict::Fail);
    assert!(
        fail.reason.contains("error rate 10.00% > 5.00%")
            && fail.reason.contains("p99 120.0 ms > 100.0 ms"),
        "{}",
        fail.reason
    );
    let mut with_agreement = analysis.clone();
    with_agreement.min_agreement = Some(0.99);
    let disagree = judge(
        &with_agreement,
        &CanaryFigures {
            requests: 100,
            errors: 0,
            latency_p99_ms: Some(1.0),
            agreement: Some(0.9),
        },
        now,
    );
    assert!(disagree.reason.contains("agreement 90.0% < 99.0%"), "{}", disagree.reason);
}

#[test]
fn requeue_follows_what_is_due() {
    let (mut world, _, v2) = World::canary_at_first_step(CANARY);
    let plan = world.last.clone().unwrap();
    assert_eq!(plan.requeue_after, Duration::from_secs(30), "next analysis in one interval");
    let plan = world.step(&v2, 125);
    assert_eq!(plan.requeue_after, Duration::from_secs(15));
}

#[test]
fn editing_the_spec_retries_a_rolled_back_version() {
    let (mut world, _, v2) = World::canary_at_first_step(CANARY);
    world.observed.generation = Some(3);
    let plan = world.analyses(&v2, (100, 50, 20.0), &[140, 170]);
    assert_eq!(plan.status.phase, Phase::RolledBack);
    let plan = world.step(&v2, 400);
    assert!(plan.status.canary.is_none(), "same generation: not retried");
    assert!(plan.status.message.as_ref().unwrap().contains("edit the spec to retry"));
    world.observed.generation = Some(4);
    let plan = world.step(&v2, 410);
    assert!(reasons(&plan).contains(&"CanaryStarted"), "{:?}", reasons(&plan));
}

#[test]
fn min_agreement_shadows_the_canary() {
    let extra = "rollout:\n  steps: [{weight: 10, pause: 1m}]\n  analysis: {minAgreement: 0.99}\n";
    let (world, _, _) = World::canary_at_first_step(extra);
    assert_eq!(world.last.unwrap().shadow.as_deref(), Some("2"));
    let without = World::with_stable(&spec(CANARY, "1")).step(&spec(CANARY, "1"), 10);
    assert_eq!(without.shadow, None);
}

/// Issue 14: a shadow step first, so no caller gets an answer from a
/// version before its answers were compared with the stable one's.
const SHADOW_FIRST: &str = "rollout:
  steps: [{shadow: true, pause: 1m}, {weight: 20, pause: 1m}]
  analysis: {interval: 30s, minRequests: 10, minAgreement: 0.9, failureLimit: 2}
";

#[test]
fn a_shadow_step_mirrors_every_request_and_routes_none_to_the_canary() {
    let (mut world, _, v2) = World::canary_at_first_step(SHADOW_FIRST);
    let plan = world.last.clone().unwrap();
    assert_eq!(plan.weights, vec![("1".to_string(), 100), ("2".to_string(), 0)]);
    assert_eq!(plan.shadow.as_deref(), Some("2"));
    assert!(plan.status.message.as_ref().unwrap().contains("shadowed"), "{:?}", plan.status);

    // Agreeing shadow answers: through the pause, then the first live step.
    for t in [140, 170] {
        world.observed.figures = Some(CanaryFigures {
            requests: 50,
            errors: 0,
            latency_p99_ms: Some(3.0),
            agreement: Some(0.99),
        });
        world.step(&v2, t);
    }
    let plan = world.last.clone().unwrap();
    assert_eq!(plan.weights, vec![("1".to_string(), 80), ("2".to_string(), 20)], "{:?}", plan);
    assert_eq!(plan.shadow.as_deref(), Some("2"), "minAgreement keeps comparing");
}

#[test]
fn a_canary_that_disagrees_in_its_shadow_step_is_rolled_back_before_any_live_traffic() {
    let (mut world, _, v2) = World::canary_at_first_step(SHADOW_FIRST);
    let mut weights_seen = vec![];
    for t in [140, 170, 200] {
        world.observed.figures = Some(CanaryFigures {
            requests: 50,
            errors: 0,
            latency_p99_ms: Some(3.0),
            agreement: Some(0.12),
        });
        let plan = world.step(&v2, t);
        weights_seen.extend(plan.weights.iter().filter(|(v, _)| v == "2").map(|(_, w)| *w));
    }
    let plan = world.last.clone().unwrap();
    assert_eq!(plan.status.phase, Phase::RolledBack, "{:?}", plan.status);
    assert!(weights_seen.iter().all(|w| *w == 0), "the canary took live traffic: {weights_seen:?}");
    assert_eq!(plan.weights, vec![("1".to_string(), 100)]);
}

#[test]
fn a_shadow_step_needs_no_min_agreement_to_shadow() {
    let extra = "rollout:\n  steps: [{shadow: true, pause: 1m}, {weight: 50, pause: 1m}]\n";
    let (world, _, _) = World::canary_at_first_step(extra);
    let plan = world.last.unwrap();
    assert_eq!(plan.shadow.as_deref(), Some("2"));
    assert_eq!(plan.weights, vec![("1".to_string(), 100), ("2".to_string(), 0)]);
}

#[test]
fn pods_that_keep_failing_say_why() {
    let v1 = spec("rollout: {progressDeadline: 2m}", "1");
    let mut world = World::new();
    world.step(&v1, 0);
    world.observed.failing.insert(
        "1".into(),
        "processing spec inputs[0].image.width: 28 cannot produce model input \"image\"".into(),
    );
    let plan = world.step(&v1, 30);
    assert!(
        plan.status.message.as_ref().unwrap().contains("inputs[0].image.width"),
        "{:?}",
        plan.status.message
    );
    let degraded = condition(&plan, "Degraded");
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "PodsFailing"));
    let plan = world.step(&v1, 121);
    assert_eq!(plan.status.phase, Phase::Failed);
    assert!(plan.status.history.last().unwrap().reason.contains("inputs[0].image.width"));
}

#[test]
fn termination_messages_become_job_states() {
    let ok = r#"{"uri":"s3://a/v2.onnx","sha256":"ab","sizeBytes":10,"metrics":{"accuracy":0.97}}"#;
    match JobState::from_termination_message(true, Some(ok)) {
        JobState::Succeeded { artifact, size_bytes, metrics } => {
            assert_eq!(artifact.uri, "s3://a/v2.onnx");
            assert_eq!(size_bytes, Some(10));
            assert_eq!(metrics.accuracy, Some(0.97));
        }
        other => panic!("{other:?}"),
    }
    let refused = r#"{"error":"accuracy dropped 3.0 points, more than maxDrop 1.0"}"#;
    assert_eq!(
        JobState::from_termination_message(false, Some(refused)),
        JobState::Failed { reason: "accuracy dropped 3.0 points, more than maxDrop 1.0".into() }
    );
    assert!(
        matches!(JobState::from_termination_message(false, Some("panic\nout of memory")), JobState::Failed { reason } if reason == "out of memory")
    );
    assert!(matches!(JobState::from_termination_message(true, None), JobState::Failed { .. }));
}

#[test]
fn steps_edited_to_none_mid_canary_promote_it_instead_of_panicking() {
    let (mut world, _, _) = World::canary_at_first_step(CANARY);
    assert_eq!(world.last.as_ref().unwrap().status.canary.as_ref().unwrap().weight, 10);
    let no_steps = spec("rollout: {steps: []}", "2");
    let plan = world.step(&no_steps, 120);
    assert_eq!(plan.status.stable.as_ref().unwrap().version, "2");
    assert_eq!(plan.weights, vec![("2".to_string(), 100)]);
    assert!(reasons(&plan).contains(&"Promoted"), "{:?}", reasons(&plan));
}

#[test]
fn steps_shortened_mid_canary_hold_the_canary_at_the_last_one() {
    let (mut world, _, v2) = World::canary_at_first_step(CANARY);
    let plan = world.analyses(&v2, (200, 0, 20.0), &[140, 170]);
    assert_eq!(plan.status.canary.as_ref().unwrap().step, 1);
    let one_step = spec("rollout: {steps: [{weight: 10, pause: 1m}]}", "2");
    let plan = world.step(&one_step, 175);
    assert_eq!(plan.weights, vec![("1".to_string(), 50), ("2".to_string(), 50)]);
    let plan = world.analyses(&one_step, (200, 0, 20.0), &[200, 231]);
    assert_eq!(plan.status.stable.as_ref().unwrap().version, "2", "{:?}", plan.status.message);
    assert!(reasons(&plan).contains(&"Promoted"));
}
