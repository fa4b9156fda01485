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

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{
    AnalysisResult, CanaryStatus, HistoryEntry, ModelDeploymentStatus, ModelVersionSpec, OnNoData,
    Outcome, Phase, ValidSpec, Verdict, VersionMetrics, VersionStatus,
};

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
    pub recipe: Option<crate::optimize::Recipe>,
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

/// The compact result `tractor optimize --termination-message` writes: the
/// contract between the optimization Job (or `up`'s optimize child) and
/// whoever carries the plan out.
#[derive(Debug, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct JobResult {
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    metrics: crate::crd::VersionMetrics,
    #[serde(default)]
    error: Option<String>,
}

impl JobState {
    /// A finished job as the planner sees it, from whether it succeeded and
    /// the termination message it left (the controller reads it from the
    /// pod, `tractor up` from a file: one parser for both).
    pub fn from_termination_message(succeeded: bool, message: Option<&str>) -> JobState {
        let parsed = message.and_then(|m| serde_json::from_str::<JobResult>(m).ok());
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

/// A version's pods that should exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVersion {
    pub version: String,
    pub artifact: Artifact,
    /// 0 keeps the Deployment for a fast rollback but runs no pods.
    pub replicas: i32,
}

/// The job that should run `tractor optimize`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizeJob {
    pub version: String,
    pub source: Artifact,
    pub recipe: crate::optimize::Recipe,
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

impl<'a> Planner<'a> {
    fn now_time(&self) -> Time {
        Time(self.now)
    }

    fn event(&mut self, kind: EventKind, reason: &'static str, message: impl Into<String>) {
        self.plan.events.push(Event { kind, reason, message: message.into() });
    }

    fn wake_at(&mut self, at: Timestamp) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    fn wake_in(&mut self, d: Duration) {
        let at = after(&self.now_time(), d);
        self.wake_at(at);
    }

    fn status(&mut self) -> &mut ModelDeploymentStatus {
        &mut self.plan.status
    }

    fn set_phase(&mut self, phase: Phase, message: impl Into<String>) {
        let message = message.into();
        let status = self.status();
        status.phase = phase;
        status.message = Some(message);
    }

    fn push_history(
        &mut self,
        version: &str,
        artifact: Option<&Artifact>,
        outcome: Outcome,
        reason: String,
    ) {
        let entry = HistoryEntry {
            version: version.to_string(),
            outcome,
            time: Time(self.now),
            generation: self.observed.generation,
            digest: artifact.and_then(|a| a.sha256.clone()),
            uri: artifact.map(|a| a.uri.clone()),
            reason,
        };
        self.status().history.push(entry);
    }

    fn ready(&self, version: &str) -> bool {
        self.observed.ready.get(version).copied().unwrap_or(0) > 0 || self.spec.replicas == 0
    }

    fn run(&mut self) {
        let target = self.spec.version.clone();
        let stable = self.plan.status.stable.clone();
        if self.observed.promote_requested || self.observed.abort_requested {
            // Acted on below where they apply; without a canary they mean nothing.
            self.plan.clear_requests = true;
        }
        match stable {
            None => self.first_deployment(&target),
            Some(stable) if stable.version == target => {
                if let Some(canary) = self.plan.status.canary.clone() {
                    // Set back to the stable version mid-canary: drop the canary.
                    let artifact = artifact_of_canary(&canary);
                    self.push_history(
                        &canary.version,
                        artifact.as_ref(),
                        Outcome::Superseded,
                        format!("spec.model.version set back to the stable {target}"),
                    );
                    self.event(
                        EventKind::Normal,
                        "CanaryAbandoned",
                        format!(
                            "canary {} abandoned: version set back to {target}",
                            canary.version
                        ),
                    );
                    self.status().canary = None;
                    self.set_phase(Phase::Succeeded, format!("serving {target}"));
                }
                self.steady(&stable);
            }
            Some(stable) => self.change(&stable, &target),
        }
        self.keep_history_versions();
        self.conditions();
    }

    /// Where to get the target version's artifact: the registry, a finished
    /// job, a job to run, or the source itself when there is no recipe.
    /// `None` while optimization runs or after it failed (status set).
    fn resolve(&mut self, version: &str) -> Option<Artifact> {
        let source =
            Artifact { uri: self.spec.source_uri.clone(), sha256: self.spec.source_sha256.clone() };
        let Some(recipe) = self.spec.optimize.clone() else { return Some(source) };
        if let Some(found) = self.observed.registered.iter().find(|r| {
            r.version == version
                || (r.parent.is_some()
                    && r.parent == source.sha256
                    && r.recipe.as_ref() == Some(&recipe))
        }) {
            return Some(found.artifact.clone());
        }
        match self.observed.job.clone() {
            None | Some(JobState::Running) => {
                if self.observed.job.is_none() {
                    self.event(
                        EventKind::Normal,
                        "Optimizing",
                        format!("optimizing version {version}"),
                    );
                }
                self.plan.job = Some(OptimizeJob { version: version.to_string(), source, recipe });
                self.set_phase(Phase::Optimizing, format!("optimizing version {version}"));
                self.wake_in(WAIT_POLL);
                None
            }
            Some(JobState::Succeeded { artifact, size_bytes, metrics }) => {
                // What a person wants to see of the result: its size and the
                // metric the gate checked.
                let figures: Vec<String> = size_bytes
                    .map(|b| format!("{:.1} KiB", b as f64 / 1024.0))
                    .into_iter()
                    .chain(metrics.summary.clone())
                    .collect();
                let figures = if figures.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", figures.join(", "))
                };
                self.plan.register = Some(ModelVersionSpec {
                    model: self.spec.model_name.clone(),
                    version: version.to_string(),
                    artifact: crate::crd::ArtifactRef {
                        uri: artifact.uri.clone(),
                        sha256: artifact.sha256.clone().unwrap_or_default(),
                        format: crate::crd::SourceFormat::Onnx,
                        size_bytes,
                    },
                    parent: source.sha256.clone().or(Some(source.uri.clone())),
                    recipe: Some(recipe),
                    metrics,
                });
                self.event(
                    EventKind::Normal,
                    "Optimized",
                    format!("version {version} optimized: {}{figures}", artifact.uri),
                );
                Some(artifact)
            }
            Some(JobState::Failed { reason }) => {
                self.optimization_failed(version, &reason);
                None
            }
        }
    }

    fn optimization_failed(&mut self, version: &str, reason: &str) {
        let already = self
            .plan
            .status
            .history
            .last()
            .is_some_and(|h| h.version == version && h.outcome == Outcome::Failed);
        if !already {
            self.push_history(
                version,
                None,
                Outcome::Failed,
                format!("optimization failed: {reason}"),
            );
            self.event(
                EventKind::Warning,
                "OptimizationFailed",
                format!("version {version} not deployed: {reason}"),
            );
        }
        let keeps = match &self.plan.status.stable {
            Some(s) => format!("; {} keeps serving", s.version),
            None => String::new(),
        };
        self.status().canary = None;
        self.set_phase(Phase::Failed, format!("optimization of {version} failed: {reason}{keeps}"));
    }

    fn first_deployment(&mut self, target: &str) {
        if self.failed_already(target) {
            return;
        }
        let Some(artifact) = self.resolve(target) else { return };
        let mut canary = match self.plan.status.canary.clone() {
            Some(c) if c.version == target => c,
            _ => {
                self.event(EventKind::Normal, "Deploying", format!("deploying version {target}"));
                CanaryStatus {
                    version: target.to_string(),
                    digest: artifact.sha256.clone(),
                    uri: Some(artifact.uri.clone()),
                    weight: 100,
                    step: 0,
                    started: Some(self.now_time()),
                    ..CanaryStatus::default()
                }
            }
        };
        canary.digest = artifact.sha256.clone();
        canary.uri = Some(artifact.uri.clone());
        self.plan.versions.push(DesiredVersion {
            version: target.to_string(),
            artifact: artifact.clone(),
            replicas: self.spec.replicas,
        });
        self.plan.weights = vec![(target.to_string(), 100)];
        if self.ready(target) {
            self.status().canary = None;
            self.status().stable = Some(VersionStatus {
                version: target.to_string(),
                digest: artifact.sha256.clone(),
                uri: Some(artifact.uri.clone()),
                weight: 100,
                since: Some(self.now_time()),
            });
            self.push_history(
                target,
                Some(&artifact),
                Outcome::Promoted,
                "first deployment".into(),
            );
            self.event(EventKind::Normal, "Deployed", format!("version {target} serving 100%"));
            self.set_phase(Phase::Succeeded, format!("serving {target}"));
            return;
        }
        if self.deadline_passed(&canary) {
            self.status().canary = None;
            let reason = self.deadline_reason(target);
            self.push_history(target, Some(&artifact), Outcome::Failed, reason.clone());
            self.event(EventKind::Warning, "ProgressDeadlineExceeded", reason.clone());
            self.set_phase(Phase::Failed, reason);
            self.plan.versions.clear();
            self.plan.weights.clear();
            return;
        }
        self.status().canary = Some(canary.clone());
        let why = self.failing_note(target);
        self.set_phase(Phase::Progressing, format!("waiting for pods of {target}{why}"));
        self.wake_in(WAIT_POLL);
        if let Some(started) = &canary.started {
            let deadline = after(started, self.spec.rollout.progress_deadline);
            self.wake_at(deadline);
        }
    }

    /// True (and the status says so) when `version` failed, was rolled back
    /// or aborted, and the spec was not edited since: the planner does not
    /// retry a version on its own. Editing the spec (a new generation)
    /// retries it; so does asking for another version.
    fn failed_already(&mut self, version: &str) -> bool {
        if self.plan.status.canary.is_some() {
            return false;
        }
        let Some(last) =
            self.plan.status.history.iter().rev().find(|h| h.version == version).cloned()
        else {
            return false;
        };
        let ended =
            matches!(last.outcome, Outcome::Failed | Outcome::RolledBack | Outcome::Aborted);
        let same_spec = last.generation.is_none() || last.generation == self.observed.generation;
        if !(ended && same_spec) {
            return false;
        }
        let phase = if last.outcome == Outcome::Failed { Phase::Failed } else { Phase::RolledBack };
        let keeps = match self.plan.status.stable.clone() {
            Some(stable) => {
                self.serve_only(&stable);
                format!("; {} serving; edit the spec to retry", stable.version)
            }
            None => "; edit the spec to retry".to_string(),
        };
        self.set_phase(
            phase,
            format!("version {version} {:?}: {}{keeps}", last.outcome, last.reason),
        );
        true
    }

    /// `"; they stop with: ..."` when the version's pods keep failing.
    fn failing_note(&self, version: &str) -> String {
        self.observed
            .failing
            .get(version)
            .map(|m| format!("; they stop with: {m}"))
            .unwrap_or_default()
    }

    /// Why a version's pods were given up on, with what they said.
    fn deadline_reason(&self, version: &str) -> String {
        format!(
            "pods of {version} not ready within progressDeadline {}{}",
            humantime::format_duration(self.spec.rollout.progress_deadline),
            self.failing_note(version)
        )
    }

    fn deadline_passed(&self, canary: &CanaryStatus) -> bool {
        canary
            .started
            .as_ref()
            .is_some_and(|s| self.now >= after(s, self.spec.rollout.progress_deadline))
    }

    fn stable_artifact(stable: &VersionStatus) -> Artifact {
        Artifact { uri: stable.uri.clone().unwrap_or_default(), sha256: stable.digest.clone() }
    }

    /// Routes everything to the stable version.
    fn serve_only(&mut self, stable: &VersionStatus) {
        self.push_version(&stable.version, Self::stable_artifact(stable), self.spec.replicas);
        self.plan.weights = vec![(stable.version.clone(), 100)];
    }

    fn push_version(&mut self, version: &str, artifact: Artifact, replicas: i32) {
        if let Some(existing) = self.plan.versions.iter_mut().find(|v| v.version == version) {
            existing.replicas = existing.replicas.max(replicas);
            return;
        }
        self.plan.versions.push(DesiredVersion {
            version: version.to_string(),
            artifact,
            replicas,
        });
    }

    fn steady(&mut self, stable: &VersionStatus) {
        self.serve_only(stable);
        if matches!(self.plan.status.phase, Phase::Pending | Phase::Optimizing | Phase::Progressing)
        {
            self.set_phase(Phase::Succeeded, format!("serving {}", stable.version));
        }
        if self.plan.status.message.is_none() {
            self.status().message = Some(format!("serving {}", stable.version));
        }
    }

    /// `spec.model.version` differs from the stable version.
    fn change(&mut self, stable: &VersionStatus, target: &str) {
        let current = self.plan.status.canary.clone();
        if let Some(canary) = &current
            && canary.version != target
        {
            self.push_history(
                &canary.version,
                artifact_of_canary(canary).as_ref(),
                Outcome::Superseded,
                format!("version {target} was asked for before it finished"),
            );
            self.event(
                EventKind::Normal,
                "CanarySuperseded",
                format!("canary {} abandoned for {target}", canary.version),
            );
            self.status().canary = None;
        }
        if self.failed_already(target) {
            return;
        }
        let kept = self.kept_artifact(target);
        if let Some(kept) = kept {
            self.fast_rollback(stable, target, kept);
            return;
        }
        let Some(artifact) = self.resolve(target) else {
            self.serve_only(stable);
            return;
        };
        self.canary(stable, target, artifact);
    }

    /// The artifact of `version` when it was stable before and is still kept.
    fn kept_artifact(&self, version: &str) -> Option<Artifact> {
        let history = &self.plan.status.history;
        let promoted_before =
            history.iter().any(|h| h.version == version && h.outcome == Outcome::Promoted);
        if !promoted_before {
            return None;
        }
        history
            .iter()
            .rev()
            .find(|h| h.version == version && h.uri.is_some())
            .map(|h| Artifact { uri: h.uri.clone().unwrap_or_default(), sha256: h.digest.clone() })
    }

    fn fast_rollback(&mut self, stable: &VersionStatus, target: &str, artifact: Artifact) {
        self.push_version(target, artifact.clone(), self.spec.replicas);
        if !self.ready(target) {
            self.serve_only(stable);
            self.set_phase(
                Phase::Progressing,
                format!("rolling back to {target}: waiting for its pods"),
            );
            self.wake_in(WAIT_POLL);
            return;
        }
        self.replace_stable(
            stable,
            target,
            artifact,
            format!("rollback from {} to a kept version", stable.version),
        );
        self.event(
            EventKind::Normal,
            "RolledBackToKept",
            format!("version {target} serving 100% again (was {})", stable.version),
        );
    }

    /// Makes `target` the stable version and keeps the old one warm.
    fn replace_stable(
        &mut self,
        old: &VersionStatus,
        target: &str,
        artifact: Artifact,
        reason: String,
    ) {
        let old_artifact = Self::stable_artifact(old);
        // The old stable's pods are now the history's business (keepWarm).
        self.plan.versions.retain(|v| v.version != old.version);
        self.push_history(
            &old.version,
            Some(&old_artifact),
            Outcome::Replaced,
            format!("replaced by {target}"),
        );
        self.push_history(target, Some(&artifact), Outcome::Promoted, reason);
        self.status().stable = Some(VersionStatus {
            version: target.to_string(),
            digest: artifact.sha256.clone(),
            uri: Some(artifact.uri.clone()),
            weight: 100,
            since: Some(self.now_time()),
        });
        self.status().canary = None;
        self.plan.weights = vec![(target.to_string(), 100)];
        self.push_version(target, artifact, self.spec.replicas);
        self.set_phase(Phase::Succeeded, format!("serving {target}"));
    }

    fn canary(&mut self, stable: &VersionStatus, target: &str, artifact: Artifact) {
        let mut canary = match self.plan.status.canary.clone() {
            Some(c) if c.version == target => c,
            _ => {
                self.event(
                    EventKind::Normal,
                    "CanaryStarted",
                    format!("canary {target} starting next to stable {}", stable.version),
                );
                CanaryStatus {
                    version: target.to_string(),
                    started: Some(self.now_time()),
                    ..CanaryStatus::default()
                }
            }
        };
        canary.digest = artifact.sha256.clone();
        canary.uri = Some(artifact.uri.clone());
        self.serve_only(stable);
        self.push_version(target, artifact.clone(), self.spec.replicas);

        if self.observed.abort_requested {
            self.end_canary(
                &canary,
                Outcome::Aborted,
                "aborted by the tractor.dev/abort annotation".into(),
            );
            return;
        }
        if canary.step_started.is_none() {
            if !self.ready(target) {
                if self.deadline_passed(&canary) {
                    let reason = self.deadline_reason(target);
                    self.end_canary(&canary, Outcome::Failed, reason);
                    return;
                }
                self.status().canary = Some(canary.clone());
                self.set_phase(
                    Phase::Progressing,
                    format!("canary {target}: waiting for its pods"),
                );
                self.wake_in(WAIT_POLL);
                if let Some(started) = &canary.started {
                    let deadline = after(started, self.spec.rollout.progress_deadline);
                    self.wake_at(deadline);
                }
                return;
            }
            if self.spec.rollout.steps.is_empty() {
                self.replace_stable(
                    stable,
                    target,
                    artifact,
                    "no rollout steps: promoted once ready".into(),
                );
                self.event(EventKind::Normal, "Promoted", format!("version {target} serving 100%"));
                return;
            }
            canary.step = 0;
            canary.step_started = Some(self.now_time());
            canary.weight = self.spec.rollout.steps[0].weight;
            self.plan.reset_figures = true;
            self.event(
                EventKind::Normal,
                "CanaryStep",
                format!(
                    "canary {target} at {}% (step 1 of {})",
                    canary.weight,
                    self.spec.rollout.steps.len()
                ),
            );
        }
        self.progress(stable, canary, artifact);
    }

    /// A canary with ready pods, at some step: analyse, then advance.
    fn progress(&mut self, stable: &VersionStatus, mut canary: CanaryStatus, artifact: Artifact) {
        let steps = self.spec.rollout.steps.clone();
        let analysis = self.spec.rollout.analysis.clone();
        let step = steps[(canary.step as usize).min(steps.len() - 1)];
        let interval_start = canary
            .analysis
            .as_ref()
            .map(|a| a.time.clone())
            .or(canary.step_started.clone())
            .unwrap_or(self.now_time());
        let due = after(&interval_start, analysis.interval);
        if self.now >= due {
            let figures = self.observed.figures.unwrap_or_default();
            let result = judge(&analysis, &figures, self.now_time());
            self.plan.reset_figures = true;
            let message = format!("canary {} analysis: {}", canary.version, result.reason);
            match result.verdict {
                Verdict::Pass => self.event(EventKind::Normal, "AnalysisPassed", message),
                Verdict::Fail => {
                    canary.failures += 1;
                    self.event(EventKind::Warning, "AnalysisFailed", message);
                }
                Verdict::NoData if analysis.on_no_data == OnNoData::Fail => {
                    canary.failures += 1;
                    self.event(EventKind::Warning, "AnalysisNoData", message);
                }
                Verdict::NoData => self.event(EventKind::Normal, "AnalysisNoData", message),
            }
            canary.analysis = Some(result);
            self.wake_in(analysis.interval);
        } else {
            self.wake_at(due);
        }

        if canary.failures >= analysis.failure_limit {
            if self.spec.rollout.auto_rollback {
                let reason = canary
                    .analysis
                    .as_ref()
                    .map(|a| a.reason.clone())
                    .unwrap_or_else(|| "analysis failed".into());
                self.end_canary(
                    &canary,
                    Outcome::RolledBack,
                    format!("{} failed analyses: {reason}", canary.failures),
                );
                return;
            }
            self.status().canary = Some(canary.clone());
            self.route_canary(stable, &canary);
            self.set_phase(
                Phase::Progressing,
                format!(
                    "canary {} failed {} analyses; autoRollback is off: holding at {}% until promoted or aborted",
                    canary.version, canary.failures, canary.weight
                ),
            );
            if self.observed.promote_requested {
                self.advance(stable, canary, artifact, &steps, PROMOTED_BY_ANNOTATION);
            }
            return;
        }

        let passed_this_step = canary.analysis.as_ref().is_some_and(|a| {
            canary.step_started.as_ref().is_some_and(|s| a.time.0 >= s.0)
                && (a.verdict == Verdict::Pass
                    || (a.verdict == Verdict::NoData && analysis.on_no_data == OnNoData::Pass))
        });
        if self.observed.promote_requested {
            self.advance(stable, canary, artifact, &steps, PROMOTED_BY_ANNOTATION);
            return;
        }
        let pause_over = match (step.pause, &canary.step_started) {
            (Some(pause), Some(started)) => {
                let end = after(started, pause);
                if self.now < end {
                    self.wake_at(end);
                }
                self.now >= end
            }
            _ => false,
        };
        if pause_over && passed_this_step {
            self.advance(stable, canary, artifact, &steps, "analysis passed");
            return;
        }
        let waiting = match (step.pause, &canary.analysis) {
            (None, _) => {
                format!("waiting for a promote (tractor.dev/promote) at {}%", canary.weight)
            }
            (_, Some(a))
                if a.verdict == Verdict::NoData && analysis.on_no_data == OnNoData::Pause =>
            {
                format!("paused at {}%: {}", canary.weight, a.reason)
            }
            _ => format!("at {}%, step {} of {}", canary.weight, canary.step + 1, steps.len()),
        };
        self.status().canary = Some(canary.clone());
        self.route_canary(stable, &canary);
        self.set_phase(Phase::Progressing, format!("canary {}: {waiting}", canary.version));
    }

    fn route_canary(&mut self, stable: &VersionStatus, canary: &CanaryStatus) {
        if self.spec.rollout.analysis.min_agreement.is_some() {
            self.plan.shadow = Some(canary.version.clone());
        }
        self.plan.weights = vec![
            (stable.version.clone(), 100 - canary.weight.min(100)),
            (canary.version.clone(), canary.weight.min(100)),
        ];
        if let Some(s) = self.plan.status.stable.as_mut() {
            s.weight = 100 - canary.weight.min(100);
        }
    }

    /// Moves to the next step, or promotes after the last.
    fn advance(
        &mut self,
        stable: &VersionStatus,
        mut canary: CanaryStatus,
        artifact: Artifact,
        steps: &[crate::crd::Step],
        why: &str,
    ) {
        let next = canary.step as usize + 1;
        if next >= steps.len() {
            let target = canary.version.clone();
            self.replace_stable(
                stable,
                &target,
                artifact,
                format!("all {} steps passed ({why})", steps.len()),
            );
            self.event(
                EventKind::Normal,
                "Promoted",
                format!("canary {target} promoted to stable ({why})"),
            );
            return;
        }
        canary.step = next as u32;
        canary.weight = steps[next].weight;
        canary.step_started = Some(self.now_time());
        canary.failures = 0;
        self.plan.reset_figures = true;
        self.event(
            EventKind::Normal,
            "CanaryStep",
            format!(
                "canary {} at {}% (step {} of {}; {why})",
                canary.version,
                canary.weight,
                next + 1,
                steps.len()
            ),
        );
        self.status().canary = Some(canary.clone());
        self.route_canary(stable, &canary);
        self.set_phase(
            Phase::Progressing,
            format!(
                "canary {}: at {}%, step {} of {}",
                canary.version,
                canary.weight,
                next + 1,
                steps.len()
            ),
        );
        if let Some(pause) = steps[next].pause {
            self.wake_in(pause.min(self.spec.rollout.analysis.interval));
        }
    }

    /// The canary leaves: the stable version takes everything back.
    fn end_canary(&mut self, canary: &CanaryStatus, outcome: Outcome, reason: String) {
        let artifact = artifact_of_canary(canary);
        self.push_history(&canary.version, artifact.as_ref(), outcome, reason.clone());
        let (phase, event_reason) = match outcome {
            Outcome::Aborted => (Phase::RolledBack, "CanaryAborted"),
            Outcome::Failed => (Phase::Failed, "ProgressDeadlineExceeded"),
            _ => (Phase::RolledBack, "RolledBack"),
        };
        self.event(
            EventKind::Warning,
            event_reason,
            format!("canary {}: {reason}", canary.version),
        );
        self.status().canary = None;
        if let Some(stable) = self.plan.status.stable.clone() {
            self.plan.weights = vec![(stable.version.clone(), 100)];
            if let Some(s) = self.status().stable.as_mut() {
                s.weight = 100;
            }
            self.plan.versions.retain(|v| v.version != canary.version);
            self.set_phase(
                phase,
                format!(
                    "canary {} {}: {reason}; {} serving",
                    canary.version,
                    phase.as_str(),
                    stable.version
                ),
            );
        }
    }

    /// Versions in the history keep their Deployment: warm for `keepWarm`
    /// after they were replaced, then scaled to zero, up to the history limit.
    fn keep_history_versions(&mut self) {
        let limit = self.spec.rollout.history_limit;
        let mut kept: Vec<(String, Artifact, Time)> = Vec::new();
        for entry in self.plan.status.history.iter().rev() {
            if entry.outcome != Outcome::Replaced
                || kept.iter().any(|(v, _, _)| *v == entry.version)
            {
                continue;
            }
            if kept.len() >= limit {
                break;
            }
            if let Some(uri) = &entry.uri {
                kept.push((
                    entry.version.clone(),
                    Artifact { uri: uri.clone(), sha256: entry.digest.clone() },
                    entry.time.clone(),
                ));
            }
        }
        for (version, artifact, replaced_at) in kept {
            if self.plan.versions.iter().any(|v| v.version == version) {
                continue;
            }
            let warm_until = after(&replaced_at, self.spec.rollout.keep_warm);
            let replicas = if self.now < warm_until {
                self.wake_at(warm_until);
                self.spec.replicas
            } else {
                0
            };
            self.plan.versions.push(DesiredVersion { version, artifact, replicas });
        }
        let history = &mut self.plan.status.history;
        // The history itself is bounded too: the status must stay small.
        let max_entries = 20 + 2 * limit;
        if history.len() > max_entries {
            let excess = history.len() - max_entries;
            history.drain(0..excess);
        }
    }

    fn conditions(&mut self) {
        let status = &self.plan.status;
        let ready = status.stable.is_some();
        let progressing = matches!(status.phase, Phase::Optimizing | Phase::Progressing);
        let pods_failing = self.observed.failing.contains_key(&self.spec.version);
        let degraded = matches!(status.phase, Phase::Failed | Phase::RolledBack) || pods_failing;
        let message = status.message.clone().unwrap_or_default();
        let generation = status.observed_generation;
        let now = self.now_time();
        let conditions = &mut self.plan.status.conditions;
        set_condition(
            conditions,
            "Ready",
            ready,
            if ready { "Serving" } else { "NotServing" },
            &message,
            generation,
            &now,
        );
        set_condition(
            conditions,
            "Progressing",
            progressing,
            self.plan.status.phase.as_str(),
            &message,
            generation,
            &now,
        );
        set_condition(
            &mut self.plan.status.conditions,
            "Degraded",
            degraded,
            match (degraded, pods_failing) {
                (false, _) => "AsExpected",
                (true, true)
                    if !matches!(self.plan.status.phase, Phase::Failed | Phase::RolledBack) =>
                {
                    "PodsFailing"
                }
                (true, _) => self.plan.status.phase.as_str(),
            },
            &message,
            generation,
            &now,
        );
    }

    fn finish(mut self) -> Plan {
        self.plan.requeue_after = match self.wake {
            Some(at) => until(self.now, at).clamp(Duration::from_secs(1), STEADY_POLL),
            None => STEADY_POLL,
        };
        self.plan
    }
}

fn artifact_of_canary(canary: &CanaryStatus) -> Option<Artifact> {
    canary.uri.as_ref().map(|uri| Artifact { uri: uri.clone(), sha256: canary.digest.clone() })
}

/// Judges one interval's figures against the thresholds.
pub fn judge(
    analysis: &crate::crd::Analysis,
    figures: &CanaryFigures,
    now: Time,
) -> AnalysisResult {
    let mut result = AnalysisResult {
        time: now,
        verdict: Verdict::Pass,
        requests: figures.requests,
        errors: figures.errors,
        latency_p99_ms: figures.latency_p99_ms,
        agreement: figures.agreement,
        reason: String::new(),
    };
    if figures.requests < analysis.min_requests {
        result.verdict = Verdict::NoData;
        result.reason = format!(
            "{} requests, fewer than minRequests {} (onNoData: {:?})",
            figures.requests, analysis.min_requests, analysis.on_no_data
        );
        return result;
    }
    let error_rate = figures.errors as f64 / figures.requests as f64;
    let mut findings = vec![format!("{} requests", figures.requests)];
    let mut failed = Vec::new();
    match analysis.max_error_rate {
        Some(max) if error_rate > max => {
            failed.push(format!("error rate {:.2}% > {:.2}%", error_rate * 100.0, max * 100.0))
        }
        Some(max) => {
            findings.push(format!("error rate {:.2}% <= {:.2}%", error_rate * 100.0, max * 100.0))
        }
        None => findings.push(format!("error rate {:.2}%", error_rate * 100.0)),
    }
    if let Some(max) = analysis.max_latency_p99 {
        let max_ms = max.as_secs_f64() * 1e3;
        match figures.latency_p99_ms {
            Some(p99) if p99 > max_ms => failed.push(format!("p99 {p99:.1} ms > {max_ms:.1} ms")),
            Some(p99) => findings.push(format!("p99 {p99:.1} ms <= {max_ms:.1} ms")),
            None => findings.push("p99 not measured".into()),
        }
    }
    if let Some(min) = analysis.min_agreement {
        match figures.agreement {
            Some(a) if a < min => {
                failed.push(format!("agreement {:.1}% < {:.1}%", a * 100.0, min * 100.0))
            }
            Some(a) => findings.push(format!("agreement {:.1}% >= {:.1}%", a * 100.0, min * 100.0)),
            None => findings.push("agreement not measured (no shadow traffic)".into()),
        }
    }
    if failed.is_empty() {
        result.reason = format!("passed: {}", findings.join(", "));
    } else {
        result.verdict = Verdict::Fail;
        result.reason = format!("failed: {} ({})", failed.join(", "), findings.join(", "));
    }
    result
}

/// Sets a condition, keeping `lastTransitionTime` when its status did not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if value { "True" } else { "False" }.to_string();
    let reason = reason.to_string();
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
            }
            existing.status = status;
            existing.reason = reason;
            existing.message = message.to_string();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: kind.to_string(),
            status,
            reason,
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Just the status condition for a spec that cannot be used.
pub fn invalid_spec_status(
    previous: &ModelDeploymentStatus,
    error: &crate::crd::SpecError,
    generation: Option<i64>,
    now: Timestamp,
) -> ModelDeploymentStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let message = format!("invalid spec: {error}");
    status.message = Some(message.clone());
    let now = Time(now);
    set_condition(
        &mut status.conditions,
        "Degraded",
        true,
        "InvalidSpec",
        &message,
        generation,
        &now,
    );
    set_condition(
        &mut status.conditions,
        "Ready",
        status.stable.is_some(),
        if status.stable.is_some() { "Serving" } else { "NotServing" },
        &message,
        generation,
        &now,
    );
    status
}

/// The routing table the router reads (a ConfigMap in a cluster, a file for
/// `tractor up`): each version's URL and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RouteTable {
    pub backends: Vec<Backend>,
    /// A version that also receives a copy of every request, whose answers
    /// are compared with the chosen version's and discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    pub version: String,
    pub url: String,
    /// Percent of the traffic.
    pub weight: u32,
}

/// Figures of one version over the current window.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct VersionStats {
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
    /// Share of shadowed requests whose answer agreed with the stable one.
    #[serde(default)]
    pub agreement: Option<f64>,
}

/// The body of `GET /admin/stats`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StatsReport {
    pub versions: BTreeMap<String, VersionStats>,
}

impl StatsReport {
    pub fn figures(&self, version: &str) -> Option<CanaryFigures> {
        self.versions.get(version).map(|s| CanaryFigures {
            requests: s.requests,
            errors: s.errors,
            latency_p99_ms: s.latency_p99_ms,
            agreement: s.agreement,
        })
    }
}

/// The weights as a map, for executors.
pub fn weight_map(plan: &Plan) -> BTreeMap<String, u32> {
    plan.weights.iter().cloned().collect()
}
