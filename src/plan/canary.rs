//! A canary through its steps: waiting for its pods, each analysis, the
//! next step or the promotion, and the ways it ends.

use super::*;

impl Planner<'_> {
    pub(super) fn canary(&mut self, stable: &VersionStatus, target: &str, artifact: Artifact) {
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
                    "canary {target} {} (step 1 of {})",
                    self.spec.rollout.steps[0].describe(),
                    self.spec.rollout.steps.len()
                ),
            );
        }
        self.progress(stable, canary, artifact);
    }

    /// A canary with ready pods, at some step: analyse, then advance.
    pub(super) fn progress(
        &mut self,
        stable: &VersionStatus,
        mut canary: CanaryStatus,
        artifact: Artifact,
    ) {
        let steps = self.spec.rollout.steps.clone();
        let analysis = self.spec.rollout.analysis.clone();
        // The steps were edited mid-canary. None left: the same rule as a
        // canary that starts without steps (promoted once ready); fewer
        // left: the canary stands at the last one.
        let Some(&step) = steps.get(canary.step as usize).or(steps.last()) else {
            let target = canary.version.clone();
            self.replace_stable(
                stable,
                &target,
                artifact,
                "rollout steps removed mid-canary: promoted once ready".into(),
            );
            self.event(EventKind::Normal, "Promoted", format!("version {target} serving 100%"));
            return;
        };
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
            let holding = format!(
                "canary {} failed {} analyses; autoRollback is off: holding at {}% until promoted or aborted",
                canary.version, canary.failures, canary.weight
            );
            self.route_canary(stable, &canary, holding);
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
                format!("waiting for a promote (tractor.dev/promote) {}", step.describe())
            }
            (_, Some(a))
                if a.verdict == Verdict::NoData && analysis.on_no_data == OnNoData::Pause =>
            {
                format!("paused at {}%: {}", canary.weight, a.reason)
            }
            _ => format!("{}, step {} of {}", step.describe(), canary.step + 1, steps.len()),
        };
        let waiting = format!("canary {}: {waiting}", canary.version);
        self.route_canary(stable, &canary, waiting);
    }

    /// The canary as it stands in the status, traffic split at its weight,
    /// and the phase Progressing with `message`.
    fn route_canary(&mut self, stable: &VersionStatus, canary: &CanaryStatus, message: String) {
        self.status().canary = Some(canary.clone());
        let steps = &self.spec.rollout.steps;
        let shadow_step =
            steps.get(canary.step as usize).or(steps.last()).is_some_and(|s| s.shadow);
        if shadow_step || self.spec.rollout.analysis.min_agreement.is_some() {
            self.plan.shadow = Some(canary.version.clone());
        }
        self.plan.weights = vec![
            (stable.version.clone(), 100 - canary.weight.min(100)),
            (canary.version.clone(), canary.weight.min(100)),
        ];
        if let Some(s) = self.plan.status.stable.as_mut() {
            s.weight = 100 - canary.weight.min(100);
        }
        self.set_phase(Phase::Progressing, message);
    }

    /// Moves to the next step, or promotes after the last.
    pub(super) fn advance(
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
                "canary {} {} (step {} of {}; {why})",
                canary.version,
                steps[next].describe(),
                next + 1,
                steps.len()
            ),
        );
        let at = format!(
            "canary {}: {}, step {} of {}",
            canary.version,
            steps[next].describe(),
            next + 1,
            steps.len()
        );
        self.route_canary(stable, &canary, at);
        if let Some(pause) = steps[next].pause {
            self.wake_in(pause.min(self.spec.rollout.analysis.interval));
        }
    }

    /// The canary leaves: the stable version takes everything back.
    pub(super) fn end_canary(&mut self, canary: &CanaryStatus, outcome: Outcome, reason: String) {
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
}

pub(super) fn artifact_of_canary(canary: &CanaryStatus) -> Option<Artifact> {
    canary.uri.as_ref().map(|uri| Artifact { uri: uri.clone(), sha256: canary.digest.clone() })
}
