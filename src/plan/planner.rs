//! The planner's core: the first deployment, the steady state, a version
//! change (resolved, optimized, kept or fast rolled back), the history kept
//! warm, and the conditions. The canary itself is in `canary`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::canary::artifact_of_canary;
use super::status::set_condition;
use super::*;

impl Planner<'_> {
    pub(super) fn now_time(&self) -> Time {
        Time(self.now)
    }

    pub(super) fn event(
        &mut self,
        kind: EventKind,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.plan.events.push(Event { kind, reason, message: message.into() });
    }

    pub(super) fn wake_at(&mut self, at: Timestamp) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    pub(super) fn wake_in(&mut self, d: Duration) {
        let at = after(&self.now_time(), d);
        self.wake_at(at);
    }

    pub(super) fn status(&mut self) -> &mut ModelDeploymentStatus {
        &mut self.plan.status
    }

    pub(super) fn set_phase(&mut self, phase: Phase, message: impl Into<String>) {
        let message = message.into();
        let status = self.status();
        status.phase = phase;
        status.message = Some(message);
    }

    pub(super) fn push_history(
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

    pub(super) fn ready(&self, version: &str) -> bool {
        self.observed.ready.get(version).copied().unwrap_or(0) > 0 || self.spec.replicas == 0
    }

    pub(super) fn run(&mut self) {
        let target = self.spec.version.clone();
        let stable = self.plan.status.stable.clone();
        if self.observed.promote_requested || self.observed.abort_requested {
            // Acted on below where they apply; without a canary they mean nothing.
            self.plan.clear_requests = true;
        }
        match stable {
            None => self.first_deployment(&target),
            Some(pending) if !pending.serving() => self.first_deployment(&target),
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
    pub(super) fn resolve(&mut self, version: &str) -> Option<Artifact> {
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

    pub(super) fn optimization_failed(&mut self, version: &str, reason: &str) {
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

    /// No version has served yet. The target is the stable version from the
    /// start, marked pending until its pods are ready: there is nothing to
    /// compare it with, so it is not a canary.
    pub(super) fn first_deployment(&mut self, target: &str) {
        if self.failed_already(target) {
            return;
        }
        let Some(artifact) = self.resolve(target) else { return };
        let started = match (&self.plan.status.stable, &self.plan.status.canary) {
            (Some(s), _) if s.version == target => s.pending_since.clone(),
            // A status written before first deployments were kept in
            // `stable`: the same wait, told as a canary at 100%.
            (None, Some(c)) if c.version == target => c.started.clone(),
            _ => None,
        };
        let started = started.unwrap_or_else(|| {
            self.event(EventKind::Normal, "Deploying", format!("deploying version {target}"));
            self.now_time()
        });
        self.status().canary = None;
        self.plan.versions.push(DesiredVersion {
            version: target.to_string(),
            artifact: artifact.clone(),
            replicas: self.spec.replicas,
        });
        self.plan.weights = vec![(target.to_string(), 100)];
        if self.ready(target) {
            self.status().stable = Some(self.stable_from_now(target, &artifact));
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
        let deadline = after(&started, self.spec.rollout.progress_deadline);
        if self.now >= deadline {
            self.status().stable = None;
            let reason = self.deadline_reason(target);
            self.push_history(target, Some(&artifact), Outcome::Failed, reason.clone());
            self.event(EventKind::Warning, "ProgressDeadlineExceeded", reason.clone());
            self.set_phase(Phase::Failed, reason);
            self.plan.versions.clear();
            self.plan.weights.clear();
            return;
        }
        self.status().stable = Some(VersionStatus {
            pending_since: Some(started),
            since: None,
            ..self.stable_from_now(target, &artifact)
        });
        let why = self.failing_note(target);
        self.set_phase(Phase::Progressing, format!("waiting for pods of {target}{why}"));
        self.wake_in(WAIT_POLL);
        self.wake_at(deadline);
    }

    /// True (and the status says so) when `version` failed, was rolled back
    /// or aborted, and the spec was not edited since: the planner does not
    /// retry a version on its own. Editing the spec (a new generation)
    /// retries it; so does asking for another version.
    pub(super) fn failed_already(&mut self, version: &str) -> bool {
        let waiting = self.plan.status.stable.as_ref().is_some_and(|s| !s.serving());
        if self.plan.status.canary.is_some() || waiting {
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
    pub(super) fn failing_note(&self, version: &str) -> String {
        self.observed
            .failing
            .get(version)
            .map(|m| format!("; they stop with: {m}"))
            .unwrap_or_default()
    }

    /// Why a version's pods were given up on, with what they said.
    pub(super) fn deadline_reason(&self, version: &str) -> String {
        format!(
            "pods of {version} not ready within progressDeadline {}{}",
            humantime::format_duration(self.spec.rollout.progress_deadline),
            self.failing_note(version)
        )
    }

    pub(super) fn deadline_passed(&self, canary: &CanaryStatus) -> bool {
        canary
            .started
            .as_ref()
            .is_some_and(|s| self.now >= after(s, self.spec.rollout.progress_deadline))
    }

    /// `version` as the stable one from now on, with all the traffic: the
    /// inverse of [`Self::stable_artifact`].
    pub(super) fn stable_from_now(&self, version: &str, artifact: &Artifact) -> VersionStatus {
        VersionStatus {
            version: version.to_string(),
            digest: artifact.sha256.clone(),
            uri: Some(artifact.uri.clone()),
            weight: 100,
            since: Some(self.now_time()),
            pending_since: None,
        }
    }

    pub(super) fn stable_artifact(stable: &VersionStatus) -> Artifact {
        Artifact { uri: stable.uri.clone().unwrap_or_default(), sha256: stable.digest.clone() }
    }

    /// Routes everything to the stable version.
    pub(super) fn serve_only(&mut self, stable: &VersionStatus) {
        self.push_version(&stable.version, Self::stable_artifact(stable), self.spec.replicas);
        self.plan.weights = vec![(stable.version.clone(), 100)];
    }

    pub(super) fn push_version(&mut self, version: &str, artifact: Artifact, replicas: i32) {
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

    pub(super) fn steady(&mut self, stable: &VersionStatus) {
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
    pub(super) fn change(&mut self, stable: &VersionStatus, target: &str) {
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
    pub(super) fn kept_artifact(&self, version: &str) -> Option<Artifact> {
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

    pub(super) fn fast_rollback(
        &mut self,
        stable: &VersionStatus,
        target: &str,
        artifact: Artifact,
    ) {
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
    pub(super) fn replace_stable(
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
        self.status().stable = Some(self.stable_from_now(target, &artifact));
        self.status().canary = None;
        self.plan.weights = vec![(target.to_string(), 100)];
        self.push_version(target, artifact, self.spec.replicas);
        self.set_phase(Phase::Succeeded, format!("serving {target}"));
    }

    /// Versions in the history keep their Deployment: warm for `keepWarm`
    /// after they were replaced, then scaled to zero, up to the history limit.
    pub(super) fn keep_history_versions(&mut self) {
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

    pub(super) fn conditions(&mut self) {
        let status = &self.plan.status;
        let ready = status.stable.as_ref().is_some_and(VersionStatus::serving);
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

    pub(super) fn finish(mut self) -> Plan {
        self.plan.requeue_after = match self.wake {
            Some(at) => until(self.now, at).clamp(Duration::from_secs(1), STEADY_POLL),
            None => STEADY_POLL,
        };
        self.plan
    }
}
