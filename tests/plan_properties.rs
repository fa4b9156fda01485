//! Properties of the planner under random spec edits and observations.
//!
//! Each case is a sequence of edits (version, steps, analysis thresholds,
//! autoRollback, processing) and observations (pods ready or failing, router
//! statistics, the clock, promote/abort requests). After every one the
//! planner runs and its status is fed back as the next observation, as the
//! controller does, so the planner sees the states it itself produces.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use tractor::contract::routes::{StatsReport, VersionStats};
use tractor::crd::{ModelDeploymentSpec, ValidSpec, validate};
use tractor::plan::{CanaryFigures, Observed, Plan, plan};

const T0: i64 = 1_800_000_000;

/// Step lists a spec may be edited to, `[]` among them (no canary steps).
const STEPS: &[&str] = &[
    "[]",
    "[{weight: 10, pause: 1m}, {weight: 50, pause: 1m}]",
    "[{weight: 20}]",
    "[{weight: 5, pause: 30s}, {weight: 25, pause: 2m}, {weight: 75, pause: 10s}]",
    "[{weight: 100, pause: 1m}]",
];

const PROCESSING: &str = "serving: {processing: {outputs: [{name: y, softmax: true}]}}\n";

/// The spec's editable fields; rendered to YAML and validated like a user's.
#[derive(Debug, Clone)]
struct SpecState {
    version: u8,
    steps: usize,
    min_requests: u64,
    max_error_rate: f64,
    failure_limit: u32,
    auto_rollback: bool,
    processing: bool,
}

impl SpecState {
    fn valid(&self) -> ValidSpec {
        let v = self.version;
        let yaml = format!(
            "model: {{name: digits, version: '{v}', source: {{uri: 's3://models/digits-{v}.onnx', sha256: '{}'}}}}\n\
             {}rollout:\n  steps: {}\n  autoRollback: {}\n  \
             analysis: {{interval: 30s, minRequests: {}, maxErrorRate: {}, maxLatencyP99: 100ms, failureLimit: {}}}\n",
            "a".repeat(64),
            if self.processing { PROCESSING } else { "" },
            STEPS[self.steps],
            self.auto_rollback,
            self.min_requests,
            self.max_error_rate,
            self.failure_limit,
        );
        let spec: ModelDeploymentSpec =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        validate(&spec).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }
}

#[derive(Debug, Clone, Copy)]
enum Stats {
    Good,
    Bad,
    Missing,
}

#[derive(Debug, Clone)]
enum Op {
    Version(u8),
    Steps(usize),
    Thresholds {
        min_requests: u64,
        max_error_rate: f64,
        failure_limit: u32,
    },
    AutoRollback(bool),
    Processing(bool),
    /// Pods of a version (by number; `None`: the spec's) become ready or go away.
    Ready(Option<u8>, bool),
    /// Pods of a version keep failing, with the reason a bad processing spec gives.
    Failing(u8),
    Stats(Stats),
    Advance(i64),
    Promote,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u8..=4).prop_map(Op::Version),
        2 => (0..STEPS.len()).prop_map(Op::Steps),
        1 => (0u64..20, prop_oneof![Just(0.0), Just(0.05), Just(0.5), Just(1.0)], 1u32..4)
            .prop_map(|(min_requests, max_error_rate, failure_limit)| Op::Thresholds {
                min_requests,
                max_error_rate,
                failure_limit
            }),
        1 => any::<bool>().prop_map(Op::AutoRollback),
        1 => any::<bool>().prop_map(Op::Processing),
        // Mostly the spec's own version: the one whose pods the planner waits for.
        5 => (prop::option::weighted(0.3, 1u8..=4), prop::bool::weighted(0.8))
            .prop_map(|(v, ready)| Op::Ready(v, ready)),
        1 => (1u8..=4).prop_map(Op::Failing),
        3 => prop_oneof![Just(Stats::Good), Just(Stats::Bad), Just(Stats::Missing)].prop_map(Op::Stats),
        4 => prop_oneof![0i64..10, 10i64..120, 120i64..4000].prop_map(Op::Advance),
        1 => Just(Op::Promote),
        1 => Just(Op::Abort),
    ]
}

fn spec_state() -> impl Strategy<Value = SpecState> {
    (0..STEPS.len(), any::<bool>(), any::<bool>()).prop_map(|(steps, auto_rollback, processing)| {
        SpecState {
            version: 1,
            steps,
            min_requests: 10,
            max_error_rate: 0.05,
            failure_limit: 2,
            auto_rollback,
            processing,
        }
    })
}

/// The router's report for the canary, as `tractor route` would give it.
fn report(version: &str, stats: Stats) -> StatsReport {
    let figures = match stats {
        Stats::Good => VersionStats {
            requests: 100,
            errors: 0,
            latency_p99_ms: Some(20.0),
            ..VersionStats::default()
        },
        Stats::Bad => VersionStats {
            requests: 100,
            errors: 60,
            latency_p99_ms: Some(900.0),
            ..VersionStats::default()
        },
        Stats::Missing => return StatsReport::default(),
    };
    StatsReport { versions: BTreeMap::from([(version.to_string(), figures)]) }
}

/// The executor's side: keeps what the planner wrote and what it was told.
struct World {
    spec: SpecState,
    observed: Observed,
    now: i64,
    had_stable: bool,
}

impl World {
    fn apply(&mut self, op: &Op) {
        let canary = self.observed.status.canary.as_ref().map(|c| c.version.clone());
        match op {
            Op::Version(v) => self.spec.version = *v,
            Op::Steps(s) => self.spec.steps = *s,
            Op::Thresholds { min_requests, max_error_rate, failure_limit } => {
                self.spec.min_requests = *min_requests;
                self.spec.max_error_rate = *max_error_rate;
                self.spec.failure_limit = *failure_limit;
            }
            Op::AutoRollback(on) => self.spec.auto_rollback = *on,
            Op::Processing(on) => self.spec.processing = *on,
            Op::Ready(v, ready) => {
                let v = v.unwrap_or(self.spec.version).to_string();
                if *ready {
                    self.observed.failing.remove(&v);
                    self.observed.ready.insert(v, 1);
                } else {
                    self.observed.ready.remove(&v);
                }
            }
            Op::Failing(v) => {
                self.observed.ready.remove(&v.to_string());
                self.observed.failing.insert(
                    v.to_string(),
                    "processing spec outputs[0].name: y is not a model output".into(),
                );
            }
            Op::Stats(stats) => {
                self.observed.figures =
                    canary.and_then(|c| CanaryFigures::of(&report(&c, *stats), &c));
            }
            Op::Advance(seconds) => self.now += seconds,
            Op::Promote => self.observed.promote_requested = true,
            Op::Abort => self.observed.abort_requested = true,
        }
    }

    /// Plans, then does what the executor does with the plan.
    fn step(&mut self) -> Plan {
        let spec = self.spec.valid();
        let now = Timestamp::from_second(T0 + self.now).expect("a time in range");
        let plan = plan(&spec, &self.observed, now);
        self.observed.carry(&plan);
        plan
    }

    fn check(&mut self, plan: &Plan) -> Result<(), TestCaseError> {
        if !plan.weights.is_empty() {
            let total: u32 = plan.weights.iter().map(|(_, w)| w).sum();
            prop_assert_eq!(total, 100, "weights {:?}", plan.weights);
        }
        for (version, weight) in &plan.weights {
            let running = plan.versions.iter().any(|d| &d.version == version && d.replicas > 0);
            prop_assert!(
                *weight == 0 || running,
                "version {} serves {}% but is not kept running: {:?}",
                version,
                weight,
                plan.versions
            );
        }
        // A first deployment still waiting for its pods is named stable
        // but may be given up on; once a version has served, one always is.
        let serving = plan.status.stable.as_ref().is_some_and(|s| s.serving());
        self.had_stable |= serving;
        prop_assert!(
            !self.had_stable || serving,
            "the stable version was forgotten: {:?}",
            plan.status
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Shrunk failures are printed; no regression file is written into tests/.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_planner_keeps_its_invariants(
        spec in spec_state(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut world = World { spec, observed: Observed::default(), now: 0, had_stable: false };
        let first = world.step();
        world.check(&first)?;
        for op in &ops {
            world.apply(op);
            let plan = world.step();
            world.check(&plan)?;
        }
    }
}
