//! The rollout state machine, pure: no I/O, no clocks.
//!
//! [`plan`] takes the validated spec, what was observed and the time, and
//! returns what should exist (versions and their replicas, an optimization
//! job, a registry entry), the router's weights, the status and events to
//! write, and when to look again. The controller and `tractor up` both carry
//! a [`Plan`] out; neither decides anything.
//!
//! # Expected flow
//! 1. First deployment: the version's artifact is resolved (optimized if the
//!    spec asks), its pods start, and once one is ready it takes 100% of the
//!    traffic and becomes stable. No canary.
//! 2. `spec.model.version` changes: the new version is resolved the same way,
//!    then runs as a canary through `spec.rollout.steps`. Each analysis
//!    interval judges the router's figures for the canary; enough failures
//!    roll it back, all steps passed promote it, and the old stable stays
//!    warm for `keepWarm`, then is kept scaled down for a fast rollback.
//! 3. The version set back to one in the history: a fast rollback, straight
//!    to 100% once the kept Deployment is ready again, no analysis.

mod canary;
mod judge;
mod planner;
mod status;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::contract::args::ServedArtifact;
use crate::contract::job::JobResult;
use crate::contract::routes::StatsReport;
use crate::crd::{
    CanaryStatus, HistoryEntry, ModelDeploymentStatus, ModelVersionSpec, OnNoData, Outcome, Phase,
    ValidSpec, Verdict, VersionMetrics, VersionStatus,
};
pub use judge::judge;
pub use status::invalid_spec_status;

/// Why a step moved when a person asked for it.
const PROMOTED_BY_ANNOTATION: &str = "promoted by the tractor.dev/promote annotation";

/// Re-check cadence while something is starting (pods, jobs): often enough
/// that a ready pod takes traffic within seconds, rarely enough to be cheap.
pub const WAIT_POLL: Duration = Duration::from_secs(5);
/// Re-check cadence in the steady state, to notice drift.
pub const STEADY_POLL: Duration = Duration::from_secs(300);

/// Where an artifact is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub uri: String,
    pub sha256: Option<String>,
}

/// A registry entry the executor found (a `ModelVersion`, or its local twin).
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub version: String,
    pub artifact: Artifact,
    /// The source digest it was built from.
    pub parent: Option<String>,
    pub recipe: Option<crate::crd::recipe::Recipe>,
}

impl From<&ModelVersionSpec> for Registered {
    /// A registry entry as the planner reads it: the controller's
    /// `ModelVersion` objects and `tractor up`'s `registry.json` alike.
    fn from(entry: &ModelVersionSpec) -> Self {
        Registered {
            version: entry.version.clone(),
            artifact: Artifact {
                uri: entry.artifact.uri.clone(),
                sha256: Some(entry.artifact.sha256.clone()),
            },
            parent: entry.parent.clone(),
            recipe: entry.recipe.clone(),
        }
    }
}

/// The optimization job for the target version, as observed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded {
        artifact: Artifact,
        size_bytes: Option<u64>,
        metrics: VersionMetrics,
    },
    /// The job failed, or its accuracy gate refused the result.
    Failed {
        reason: String,
    },
}

impl JobState {
    /// A finished job as the planner sees it, from whether it succeeded and
    /// the termination message it left (the controller reads it from the
    /// pod, `tractor up` from a file: one parser for both).
    pub fn from_termination_message(succeeded: bool, message: Option<&str>) -> JobState {
        let parsed = message.and_then(JobResult::from_message);
        match (succeeded, parsed) {
            (
                true,
                Some(JobResult { uri: Some(uri), sha256, size_bytes, metrics, error: None }),
            ) => JobState::Succeeded { artifact: Artifact { uri, sha256 }, size_bytes, metrics },
            (_, Some(JobResult { error: Some(error), .. })) => JobState::Failed { reason: error },
            (true, _) => JobState::Failed {
                reason: "the job succeeded but wrote no result to its termination message".into(),
            },
            (false, _) => JobState::Failed {
                reason: message
                    .map(|m| m.lines().last().unwrap_or(m).to_string())
                    .unwrap_or_else(|| "the optimization job failed without a message".into()),
            },
        }
    }
}

/// The router's figures for the canary since the last analysis.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CanaryFigures {
    pub requests: u64,
    pub errors: u64,
    pub latency_p99_ms: Option<f64>,
    /// Share of shadowed requests where canary and stable agreed.
    pub agreement: Option<f64>,
}

impl CanaryFigures {
    /// The router's figures for `version`, if it measured any.
    pub fn of(report: &StatsReport, version: &str) -> Option<Self> {
        report.versions.get(version).map(|s| CanaryFigures {
            requests: s.requests,
            errors: s.errors,
            latency_p99_ms: s.latency_p99_ms,
            agreement: s.agreement,
        })
    }
}

/// Everything the planner needs to know about the world.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub generation: Option<i64>,
    /// The status as last written: the planner's memory.
    pub status: ModelDeploymentStatus,
    pub registered: Vec<Registered>,
    /// The optimization job for the target version, if one exists.
    pub job: Option<JobState>,
    /// Ready replicas of each version's Deployment that exists.
    pub ready: BTreeMap<String, i32>,
    /// Why a version's pods keep stopping (their last termination message),
    /// for versions with none ready.
    pub failing: BTreeMap<String, String>,
    pub figures: Option<CanaryFigures>,
    pub promote_requested: bool,
    pub abort_requested: bool,
}

impl Observed {
    /// What the next observation shows of a plan an executor carried out:
    /// the status it wrote, the promote/abort requests it cleared, the
    /// router window it reset, and no pods for the versions it removed.
    /// The planner's tests and its property tests play the executor with it.
    pub fn carry(&mut self, plan: &Plan) {
        self.status = plan.status.clone();
        if plan.clear_requests {
            self.promote_requested = false;
            self.abort_requested = false;
        }
        if plan.reset_figures {
            self.figures = None;
        }
        self.ready.retain(|v, _| plan.versions.iter().any(|d| &d.version == v && d.replicas > 0));
    }
}

/// A version's pods that should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVersion {
    pub version: String,
    pub artifact: Artifact,
    /// 0 keeps the Deployment for a fast rollback but runs no pods.
    pub replicas: i32,
}

impl DesiredVersion {
    /// What its `serve` loads: the same for a pod and a local process.
    pub fn served(&self) -> ServedArtifact<'_> {
        ServedArtifact {
            version: &self.version,
            uri: &self.artifact.uri,
            sha256: self.artifact.sha256.as_deref(),
        }
    }
}

/// The job that should run `tractor optimize`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizeJob {
    pub version: String,
    pub source: Artifact,
    pub recipe: crate::crd::recipe::Recipe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// A Kubernetes Event (and a line for `tractor up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// CamelCase, as Kubernetes Event reasons are (`CanaryPromoted`).
    pub reason: &'static str,
    pub message: String,
}

/// What should be true once the executor is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub versions: Vec<DesiredVersion>,
    pub job: Option<OptimizeJob>,
    /// A registry entry to create (the optimization result).
    pub register: Option<ModelVersionSpec>,
    /// Router weights by version, summing to 100 (empty: nothing to route yet).
    pub weights: Vec<(String, u32)>,
    /// The canary that gets a copy of every request, so the router measures
    /// its agreement with the stable answers (when `minAgreement` is set).
    pub shadow: Option<String>,
    pub status: ModelDeploymentStatus,
    pub events: Vec<Event>,
    pub requeue_after: Duration,
    /// The promote/abort annotations were acted on and should be removed.
    pub clear_requests: bool,
    /// An analysis consumed the router's figures: start a new window.
    pub reset_figures: bool,
}

fn after(t: &Time, d: Duration) -> Timestamp {
    t.0.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// The builder of one plan: the inputs, plus the plan as it grows.
struct Planner<'a> {
    spec: &'a ValidSpec,
    observed: &'a Observed,
    now: Timestamp,
    plan: Plan,
    /// Earliest moment something is due.
    wake: Option<Timestamp>,
}

/// Decides what should exist, the router weights, the status and when to
/// look again.
///
/// # Invariants
/// - Pure: the same inputs give the same plan; `now` is the only clock.
/// - The stable version keeps serving through every failure of a canary.
/// - Weights sum to 100 whenever a version is ready to serve.
pub fn plan(spec: &ValidSpec, observed: &Observed, now: Timestamp) -> Plan {
    let mut status = observed.status.clone();
    status.observed_generation = observed.generation.or(status.observed_generation);
    let mut planner = Planner {
        spec,
        observed,
        now,
        plan: Plan {
            versions: Vec::new(),
            job: None,
            register: None,
            weights: Vec::new(),
            shadow: None,
            status,
            events: Vec::new(),
            requeue_after: STEADY_POLL,
            clear_requests: false,
            reset_figures: false,
        },
        wake: None,
    };
    planner.run();
    planner.finish()
}
