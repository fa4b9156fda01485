//! One tick of a local `up`: observe the children and the router, then
//! carry the plan out.

use std::collections::BTreeMap;

use super::children::{Backoff, DRAIN, Server, free_port, why_it_stopped};
use super::state::{ABORT, PROMOTE, REGISTRY_FILE, REQUEST_FILE, write_whole};
use super::{HEALTH_TIMEOUT, LocalError, Runner};
use crate::contract::args::{self, OptimizeFiles, ServePlacement};
use crate::contract::routes::{Backend, RouteTable, StatsReport};
use crate::crd::ValidSpec;
use crate::plan::{CanaryFigures, EventKind, JobState, Observed, Plan, Registered};

impl Runner {
    pub(super) async fn observe(&mut self, spec: &ValidSpec) -> Observed {
        self.supervise_router().await;
        let mut ready = BTreeMap::new();
        let mut failing = BTreeMap::new();
        let mut exited = Vec::new();
        for (version, server) in self.servers.iter_mut() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                let reason = match why_it_stopped(&log) {
                    Some(line) => format!("{status}: {line}"),
                    None => format!("{status}; log {}", server.log.display()),
                };
                failing.insert(version.clone(), reason);
                exited.push(version.clone());
                continue;
            }
            let url = format!("http://127.0.0.1:{}/v2/health/ready", server.port);
            let ok = self
                .http
                .get(&url)
                .timeout(HEALTH_TIMEOUT)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ready.insert(version.clone(), i32::from(ok));
        }
        for version in exited {
            self.servers.remove(&version);
            let reason = failing.get(&version).cloned().unwrap_or_default();
            let delay = self
                .backoff
                .entry(version.clone())
                .or_insert_with(Backoff::new)
                .failed(reason.clone());
            let message =
                format!("serve {version} exited ({reason}); restarting in {}s", delay.as_secs());
            self.emit("Warning", "ServeExited", &message, &[]);
        }
        for (version, b) in &self.backoff {
            if !self.servers.contains_key(version) {
                failing.entry(version.clone()).or_insert_with(|| b.reason.clone());
            }
        }
        for (version, up) in &ready {
            if *up > 0 {
                self.backoff.remove(version);
            }
        }
        let figures = match (&self.status.canary, &self.router) {
            (Some(canary), Some((_, admin))) if canary.step_started.is_some() => {
                let url = format!("http://127.0.0.1:{admin}/admin/stats");
                match self.http.get(&url).timeout(HEALTH_TIMEOUT).send().await {
                    Ok(r) => r
                        .json::<StatsReport>()
                        .await
                        .ok()
                        .and_then(|s| CanaryFigures::of(&s, &canary.version)),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let job = self.job_state(spec).await;
        let request =
            std::fs::read_to_string(self.dir.join(REQUEST_FILE)).ok().map(|r| r.trim().to_string());
        Observed {
            generation: None,
            status: self.status.clone(),
            registered: self.registry.iter().map(Registered::from).collect(),
            job,
            ready,
            failing,
            figures,
            promote_requested: request.as_deref() == Some(PROMOTE),
            abort_requested: request.as_deref() == Some(ABORT),
        }
    }

    pub(super) async fn job_state(&mut self, spec: &ValidSpec) -> Option<JobState> {
        if let Some((version, state)) = &self.job_result
            && *version == spec.version
        {
            return Some(state.clone());
        }
        let (version, child, output) = self.job.as_mut()?;
        if *version != spec.version {
            return None;
        }
        match child.try_wait() {
            Ok(None) => Some(JobState::Running),
            Ok(Some(status)) => {
                // The same result the controller reads from a Job's
                // termination message: artifact, digest, metrics, or why
                // the gate refused it.
                let message = std::fs::read_to_string(output.with_extension("result.json")).ok();
                let state = match (&message, status.success()) {
                    (Some(message), success) => {
                        JobState::from_termination_message(success, Some(message))
                    }
                    (None, _) => {
                        let log = std::fs::read_to_string(output.with_extension("log"))
                            .unwrap_or_default();
                        let reason = why_it_stopped(&log).map_or_else(
                            || format!("tractor optimize stopped ({status}) without a result"),
                            str::to_string,
                        );
                        JobState::Failed { reason }
                    }
                };
                self.job_result = Some((version.clone(), state.clone()));
                self.job = None;
                Some(state)
            }
            Err(e) => Some(JobState::Failed { reason: e.to_string() }),
        }
    }

    pub(super) async fn apply(&mut self, spec: &ValidSpec, plan: &Plan) -> Result<(), LocalError> {
        if plan.clear_requests {
            // Acted on (or meaningless without a canary): asked once, done once.
            let _ = std::fs::remove_file(self.dir.join(REQUEST_FILE));
        }
        for desired in plan.versions.iter().filter(|d| d.replicas > 0) {
            let waiting = self
                .backoff
                .get(&desired.version)
                .is_some_and(|b| std::time::Instant::now() < b.next);
            if self.servers.contains_key(&desired.version) || waiting {
                continue;
            }
            let port = free_port()?;
            let grpc_port = free_port()?;
            let log = self.dir.join(format!("serve-{}.log", desired.version));
            let processing_file = self.dir.join(format!("processing-{}.json", desired.version));
            if let Some(document) = args::processing_document(spec) {
                write_whole(&processing_file, document.as_bytes())?;
            }
            let mut args = args::serve(
                spec,
                &desired.served(),
                &ServePlacement {
                    host: Some("127.0.0.1".into()),
                    port,
                    grpc_port,
                    processing_file: processing_file.display().to_string(),
                },
            )
            .argv();
            args.extend(self.auth.iter().flat_map(super::auth::LocalAuth::serve_argv));
            let child = self.spawn(&format!("serve {}", desired.version), &args, &log)?;
            self.servers.insert(desired.version.clone(), Server { child, port, grpc_port, log });
        }
        let keep: Vec<&str> =
            plan.versions.iter().filter(|d| d.replicas > 0).map(|d| d.version.as_str()).collect();
        let gone: Vec<String> =
            self.servers.keys().filter(|v| !keep.contains(&v.as_str())).cloned().collect();
        for version in gone {
            if let Some(server) = self.servers.remove(&version) {
                self.draining.push((std::time::Instant::now() + DRAIN, server));
            }
        }
        let now = std::time::Instant::now();
        let (done, still): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.draining).into_iter().partition(|(t, _)| *t <= now);
        self.draining = still;
        for (_, mut server) in done {
            let _ = server.child.kill().await;
        }
        if let Some(job) = &plan.job
            && self.job.is_none()
            && self.job_result.as_ref().is_none_or(|(v, _)| *v != job.version)
        {
            let artifacts = self.dir.join("artifacts");
            std::fs::create_dir_all(&artifacts).map_err(|source| LocalError::State {
                path: artifacts.display().to_string(),
                source,
            })?;
            let recipe = artifacts.join(format!("v{}.recipe.json", job.version));
            std::fs::write(&recipe, serde_json::to_vec_pretty(&job.recipe).unwrap_or_default())
                .map_err(|source| LocalError::State {
                    path: recipe.display().to_string(),
                    source,
                })?;
            let output = artifacts.join(format!("v{}.onnx", job.version));
            let args = args::optimize(&OptimizeFiles {
                input: job.source.uri.clone(),
                output: output.display().to_string(),
                recipe: recipe.display().to_string(),
                report: Some(
                    artifacts.join(format!("v{}.report.json", job.version)).display().to_string(),
                ),
                termination_message: output.with_extension("result.json").display().to_string(),
            })
            .argv();
            // A result left by an earlier run of this version must not be
            // taken for this one's.
            let _ = std::fs::remove_file(output.with_extension("result.json"));
            let child = self.spawn(
                &format!("optimize {}", job.version),
                &args,
                &output.with_extension("log"),
            )?;
            self.job = Some((job.version.clone(), child, output));
        }
        if let Some(entry) = &plan.register {
            self.registry.retain(|e| e.version != entry.version);
            self.registry.push(entry.clone());
            write_whole(
                &self.dir.join(REGISTRY_FILE),
                &serde_json::to_vec_pretty(&self.registry).unwrap_or_default(),
            )?;
            self.job_result = None;
        }
        let table = RouteTable {
            backends: plan
                .weights
                .iter()
                .filter_map(|(v, w)| {
                    self.servers.get(v).map(|s| Backend {
                        version: v.clone(),
                        url: format!("http://127.0.0.1:{}", s.port),
                        weight: *w,
                        grpc: Some(format!("http://127.0.0.1:{}", s.grpc_port)),
                    })
                })
                .collect(),
            shadow: plan.shadow.clone(),
        };
        if self.routes.as_ref() != Some(&table) {
            write_whole(
                &self.dir.join("routes.json"),
                &serde_json::to_vec_pretty(&table).unwrap_or_default(),
            )?;
            self.routes = Some(table);
        }
        if plan.reset_figures
            && let Some((_, admin)) = &self.router
        {
            let _ =
                self.http.post(format!("http://127.0.0.1:{admin}/admin/stats/reset")).send().await;
        }
        for event in &plan.events {
            let kind = if event.kind == EventKind::Warning { "Warning" } else { "Normal" };
            self.emit(kind, event.reason, &event.message, &plan.weights);
        }
        if plan.status.message != self.last_message {
            // An event of this tick may already have said the same words.
            if let Some(message) = &plan.status.message
                && !plan.events.iter().any(|e| &e.message == message)
            {
                self.emit("Normal", plan.status.phase.as_str(), message, &plan.weights);
            }
            self.last_message = plan.status.message.clone();
        }
        if self.status != plan.status || !self.dir.join("status.json").exists() {
            self.status = plan.status.clone();
            write_whole(
                &self.dir.join("status.json"),
                &serde_json::to_vec_pretty(&self.status).unwrap_or_default(),
            )?;
        }
        Ok(())
    }
}
