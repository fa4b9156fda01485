//! `tractor up`: a `ModelDeployment` run on one machine, with the same
//! planner as the controller. Versions are `tractor serve` child processes
//! on loopback ports, the router is a `tractor route` child reading a routes
//! file, optimization is a `tractor optimize` child; state lives in a
//! directory so a restart resumes.
//!
//! A file with several YAML documents plays them in order, each once the
//! previous one has settled (Succeeded, RolledBack or Failed), as successive
//! commits would: that is how the examples show a whole rollout unattended.
//! Editing the file while it runs starts a rollout too.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::contract::args::{self, OptimizeFiles, RoutesAt, ServePlacement, ServedArtifact};
use crate::contract::routes::{Backend, RouteTable, StatsReport};
use crate::crd::recipe::Pass;
use crate::crd::{ModelDeployment, ModelDeploymentStatus, ModelVersionSpec, Phase, ValidSpec};
use crate::plan::{Artifact, CanaryFigures, EventKind, JobState, Observed, Plan, Registered};

/// How often the world is looked at: a step or a weight change shows within this.
const TICK: Duration = Duration::from_millis(250);
/// How long a starting router may take to answer its health check.
const ROUTER_START: Duration = Duration::from_secs(10);
/// A child's health check must answer within this to count as ready.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("reading {path}: {reason}")]
    ReadSpec { path: String, reason: String },
    #[error("{path}: {reason}")]
    InvalidSpec { path: String, reason: String },
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the router stopped: {0}")]
    Router(String),
    #[error("state directory {path}: {source}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct UpConfig {
    pub file: PathBuf,
    pub port: u16,
    pub state_dir: PathBuf,
    pub json: bool,
    /// The `tractor` binary the children run (this one).
    pub tractor: PathBuf,
}

/// One line of what happened, for people (or JSON for tools).
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub time: String,
    pub kind: &'static str,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
}

fn read_documents(path: &Path) -> Result<Vec<ModelDeployment>, LocalError> {
    let text = std::fs::read_to_string(path).map_err(|e| LocalError::ReadSpec {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let docs: Vec<ModelDeployment> = text
        .split("\n---")
        .map(|d| d.trim_start_matches("---").trim())
        .filter(|d| {
            !d.is_empty()
                && d.lines().any(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        })
        .map(serde_saphyr::from_str::<ModelDeployment>)
        .collect::<Result<_, _>>()
        .map_err(|e| LocalError::InvalidSpec {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if docs.is_empty() {
        return Err(LocalError::InvalidSpec {
            path: path.display().to_string(),
            reason: "no ModelDeployment in the file".into(),
        });
    }
    Ok(docs)
}

/// Relative paths (the source, and the recipe's validation, calibration and
/// merge files) are relative to the file, as a person reads them.
fn resolve_source(spec: &mut ValidSpec, base: &Path) {
    let resolve = |location: &mut String| {
        if !location.contains("://") && Path::new(location.as_str()).is_relative() {
            let joined = base.join(&*location);
            *location = std::fs::canonicalize(&joined).unwrap_or(joined).display().to_string();
        }
    };
    resolve(&mut spec.source_uri);
    if let Some(recipe) = spec.optimize.as_mut() {
        if let Some(validation) = recipe.validation.as_mut() {
            resolve(&mut validation.data);
        }
        for pass in &mut recipe.passes {
            match pass {
                Pass::Quantize(q) => q.calibration.iter_mut().for_each(resolve),
                Pass::Merge(m) => m.models.iter_mut().for_each(resolve),
                _ => {}
            }
        }
    }
}

/// The line of a child's log that says why it stopped: its last line that is
/// not routine (INFO and below) logging. A process killed from outside has
/// none, and then its exit status says enough.
fn why_it_stopped(log: &str) -> Option<&str> {
    log.lines().rev().map(str::trim).find(|&line| {
        let head = line.char_indices().nth(40).map_or(line, |(end, _)| &line[..end]);
        !line.is_empty() && ![" INFO ", " DEBUG ", " TRACE "].iter().any(|l| head.contains(l))
    })
}

fn free_port() -> Result<u16, LocalError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| LocalError::Spawn { what: "a free port".into(), source })
}

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// A version whose process keeps stopping is restarted after 1, 2, 4... s
/// (at most 30 s), as the kubelet backs off a crashing container.
struct Backoff {
    restarts: u32,
    next: std::time::Instant,
    reason: String,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A version taken out of the routes keeps running this long, so the router
/// (which re-reads its routes file every 250 ms) has moved its traffic away
/// before the process stops: no request lands on a closed port.
const DRAIN: Duration = Duration::from_secs(1);

/// A person's request to a running `up` (`tractor rollout promote|abort
/// --state-dir`), the local counterpart of the controller's annotations: a
/// file in the deployment's state directory, removed once acted on.
const REQUEST_FILE: &str = "request";
/// Registered versions (`ModelVersionSpec`s as JSON) in the state directory.
const REGISTRY_FILE: &str = "registry.json";

fn registered_of(entry: &ModelVersionSpec) -> Registered {
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
const PROMOTE: &str = "promote";
const ABORT: &str = "abort";

/// What `tractor rollout promote|abort --state-dir DIR NAME` asks of a local
/// `tractor up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Promote,
    Abort,
}

/// The directory where `up` keeps a deployment's state, if it has run there.
fn deployment_dir(state_dir: &Path, name: &str) -> Result<PathBuf, LocalError> {
    let dir = state_dir.join(name);
    if dir.join("status.json").exists() {
        Ok(dir)
    } else {
        Err(LocalError::State {
            path: dir.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no `tractor up` has run {name} with this state directory"),
            ),
        })
    }
}

/// Leaves a promote or abort request for the `up` running `name`; it acts
/// on it within a tick, as the controller does on its annotations.
///
/// # Errors
/// No state for `name` under `state_dir`, or a directory that cannot be written.
pub fn request(state_dir: &Path, name: &str, request: Request) -> Result<(), LocalError> {
    let path = deployment_dir(state_dir, name)?.join(REQUEST_FILE);
    let word = match request {
        Request::Promote => PROMOTE,
        Request::Abort => ABORT,
    };
    write_whole(&path, word.as_bytes())
}

/// Writes a file whole, then renames it into place: a reader (the router,
/// `tractor rollout status`, `up` itself) never sees half of it.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), LocalError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| LocalError::State { path: path.display().to_string(), source })
}

/// The last status a local `up` wrote for `name`.
///
/// # Errors
/// No state for `name` under `state_dir`, or a status file that cannot be read.
pub fn status(state_dir: &Path, name: &str) -> Result<ModelDeploymentStatus, LocalError> {
    let path = deployment_dir(state_dir, name)?.join("status.json");
    let bytes = std::fs::read(&path)
        .map_err(|source| LocalError::State { path: path.display().to_string(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| LocalError::ReadSpec {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The versions a local `up` registered for `name` (optimized artifacts with
/// digest, lineage and metrics), oldest first; none before any optimization.
///
/// # Errors
/// No state for `name` under `state_dir`, or a registry that cannot be read.
pub fn registry(state_dir: &Path, name: &str) -> Result<Vec<ModelVersionSpec>, LocalError> {
    let path = deployment_dir(state_dir, name)?.join(REGISTRY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LocalError::ReadSpec {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LocalError::State { path: path.display().to_string(), source }),
    }
}

/// Everything `up` keeps between ticks, persisted under the state directory.
struct Runner {
    config: UpConfig,
    dir: PathBuf,
    http: reqwest::Client,
    servers: BTreeMap<String, Server>,
    draining: Vec<(std::time::Instant, Server)>,
    backoff: BTreeMap<String, Backoff>,
    router: Option<(Child, u16)>,
    job: Option<(String, Child, PathBuf)>,
    job_result: Option<(String, JobState)>,
    registered: Vec<Registered>,
    /// The local twin of the cluster's `ModelVersion` objects: every
    /// optimized artifact with its digest, lineage and metrics, kept in the
    /// state directory so a restart neither forgets nor re-optimizes them.
    registry: Vec<ModelVersionSpec>,
    status: ModelDeploymentStatus,
    last_message: Option<String>,
    routes: Option<RouteTable>,
    router_backoff: Backoff,
}

impl Runner {
    fn emit(&self, kind: &'static str, reason: &str, message: &str, weights: &[(String, u32)]) {
        let line = Line {
            time: Timestamp::now().strftime("%H:%M:%S").to_string(),
            kind,
            reason: reason.to_string(),
            message: message.to_string(),
            weights: weights.iter().cloned().collect(),
        };
        if self.config.json {
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
        } else {
            let weights = if line.weights.is_empty() {
                String::new()
            } else {
                let w: Vec<String> =
                    line.weights.iter().map(|(v, w)| format!("{v}={w}%")).collect();
                format!("  [{}]", w.join(" "))
            };
            println!("{} {:<22} {}{weights}", line.time, line.reason, line.message);
        }
    }

    fn spawn(&self, what: &str, args: &[String], log: &Path) -> Result<Child, LocalError> {
        let log_file = std::fs::File::create(log)
            .map_err(|source| LocalError::State { path: log.display().to_string(), source })?;
        let mut command = Command::new(&self.config.tractor);
        command.args(args).stdout(Stdio::null()).stderr(log_file).kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches only the child.
        // kill_on_drop needs `up` to unwind; if `up` itself is killed, the
        // kernel still stops the children.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        command.spawn().map_err(|source| LocalError::Spawn { what: what.to_string(), source })
    }

    async fn observe(&mut self, spec: &ValidSpec) -> Observed {
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
            let entry = self.backoff.entry(version.clone()).or_insert(Backoff {
                restarts: 0,
                next: std::time::Instant::now(),
                reason: String::new(),
            });
            let delay = Duration::from_secs(1u64 << entry.restarts.min(5)).min(MAX_BACKOFF);
            entry.restarts += 1;
            entry.next = std::time::Instant::now() + delay;
            entry.reason = reason.clone();
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
            registered: self.registered.clone(),
            job,
            ready,
            failing,
            figures,
            promote_requested: request.as_deref() == Some(PROMOTE),
            abort_requested: request.as_deref() == Some(ABORT),
        }
    }

    async fn job_state(&mut self, spec: &ValidSpec) -> Option<JobState> {
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

    async fn apply(&mut self, spec: &ValidSpec, plan: &Plan) -> Result<(), LocalError> {
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
            let log = self.dir.join(format!("serve-{}.log", desired.version));
            let processing_file = self.dir.join(format!("processing-{}.json", desired.version));
            if let Some(document) = args::processing_document(spec) {
                write_whole(&processing_file, document.as_bytes())?;
            }
            let args = args::serve(
                spec,
                &ServedArtifact {
                    version: &desired.version,
                    uri: &desired.artifact.uri,
                    sha256: desired.artifact.sha256.as_deref(),
                },
                &ServePlacement {
                    host: Some("127.0.0.1".into()),
                    port,
                    processing_file: processing_file.display().to_string(),
                },
            )
            .argv();
            let child = self.spawn(&format!("serve {}", desired.version), &args, &log)?;
            self.servers.insert(desired.version.clone(), Server { child, port, log });
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
            self.registered.push(registered_of(entry));
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

    /// Starts the router and waits until it answers, so that a port already
    /// in use is an error at once rather than a router that never was.
    async fn start_router(&mut self) -> Result<(), LocalError> {
        let routes = self.dir.join("routes.json");
        // A table left by an earlier run names ports that are gone, or are
        // now someone else's: start empty; the next tick writes the real one.
        write_whole(&routes, b"{\"backends\": []}")?;
        self.routes = None;
        let admin = free_port()?;
        let args = args::route(
            &format!("127.0.0.1:{}", self.config.port),
            &format!("127.0.0.1:{admin}"),
            &RoutesAt::File(routes.display().to_string()),
        )
        .argv();
        let log = self.dir.join("route.log");
        let mut child = self.spawn("route", &args, &log)?;
        let deadline = std::time::Instant::now() + ROUTER_START;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let reason = why_it_stopped(&text).unwrap_or("nothing in its log").to_string();
                return Err(LocalError::Router(format!("{status}: {reason}")));
            }
            let health = format!("http://127.0.0.1:{admin}/healthz");
            if self.http.get(&health).timeout(HEALTH_TIMEOUT).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.router = Some((child, admin));
        Ok(())
    }

    /// A router that stopped is started again (after 1, 2, 4... s while it
    /// keeps failing), and the event is shown, as for a version's server.
    async fn supervise_router(&mut self) {
        if let Some((child, _)) = &mut self.router
            && let Ok(Some(status)) = child.try_wait()
        {
            let text = std::fs::read_to_string(self.dir.join("route.log")).unwrap_or_default();
            let reason =
                why_it_stopped(&text).map_or(status.to_string(), |l| format!("{status}: {l}"));
            self.emit(
                "Warning",
                "RouterExited",
                &format!("router exited ({reason}); restarting"),
                &[],
            );
            self.router = None;
        }
        if self.router.is_some() || std::time::Instant::now() < self.router_backoff.next {
            return;
        }
        match self.start_router().await {
            Ok(()) => {
                self.router_backoff.restarts = 0;
                self.emit(
                    "Normal",
                    "RouterStarted",
                    &format!("router on http://127.0.0.1:{}", self.config.port),
                    &[],
                );
            }
            Err(e) => {
                let delay = Duration::from_secs(1u64 << self.router_backoff.restarts.min(5))
                    .min(MAX_BACKOFF);
                self.router_backoff.restarts += 1;
                self.router_backoff.next = std::time::Instant::now() + delay;
                self.emit(
                    "Warning",
                    "RouterFailed",
                    &format!("{e}; trying again in {}s", delay.as_secs()),
                    &[],
                );
            }
        }
    }

    async fn stop(&mut self) {
        for (_, mut server) in std::mem::take(&mut self.servers) {
            let _ = server.child.kill().await;
        }
        for (_, mut server) in std::mem::take(&mut self.draining) {
            let _ = server.child.kill().await;
        }
        if let Some((mut child, _)) = self.router.take() {
            let _ = child.kill().await;
        }
        if let Some((_, mut child, _)) = self.job.take() {
            let _ = child.kill().await;
        }
    }
}

/// Where a restarted `up` picks a multi-document file up again: at the
/// document of the canary it was rolling out, else of the stable version,
/// else at the start. Replaying from the first document would set the
/// version back to 1 and roll everything out again.
fn resume_at(docs: &[ModelDeployment], status: &ModelDeploymentStatus) -> usize {
    let current =
        status.canary.as_ref().map(|c| &c.version).or(status.stable.as_ref().map(|s| &s.version));
    current.and_then(|v| docs.iter().rposition(|d| d.spec.model.version == *v)).unwrap_or(0)
}

fn settled(phase: Phase) -> bool {
    matches!(phase, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
}

/// Runs the file until `shutdown` resolves; every child is stopped before
/// it returns. Returns the final status.
///
/// # Errors
/// A file that cannot be read or parsed at start, a state directory that
/// cannot be written, a child that cannot be started.
pub async fn up(
    config: UpConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ModelDeploymentStatus, LocalError> {
    let docs = read_documents(&config.file)?;
    let name = docs[0].metadata.name.clone().unwrap_or_else(|| "model".into());
    let dir = config.state_dir.join(&name);
    std::fs::create_dir_all(&dir)
        .map_err(|source| LocalError::State { path: dir.display().to_string(), source })?;
    let registry: Vec<ModelVersionSpec> = std::fs::read(dir.join(REGISTRY_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let status: ModelDeploymentStatus = std::fs::read(dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut runner = Runner {
        config: config.clone(),
        dir,
        http: reqwest::Client::new(),
        servers: BTreeMap::new(),
        draining: Vec::new(),
        backoff: BTreeMap::new(),
        router: None,
        job: None,
        job_result: None,
        registered: registry.iter().map(registered_of).collect(),
        registry,
        status,
        last_message: None,
        routes: None,
        router_backoff: Backoff {
            restarts: 0,
            next: std::time::Instant::now(),
            reason: String::new(),
        },
    };
    runner.start_router().await?;
    runner.emit(
        "Normal",
        "Started",
        &format!("{name}: router on http://127.0.0.1:{}", config.port),
        &[],
    );
    let result = run_loop(&mut runner, docs, shutdown).await;
    runner.stop().await;
    let status = runner.status.clone();
    let stable = status.stable.as_ref().map(|s| s.version.as_str()).unwrap_or("none");
    runner.emit(
        "Normal",
        "Stopped",
        &format!("{} with {stable} stable; every child stopped", status.phase.as_str()),
        &[],
    );
    result.map(|()| status)
}

async fn run_loop(
    runner: &mut Runner,
    mut docs: Vec<ModelDeployment>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LocalError> {
    let base = runner.config.file.parent().map(Path::to_path_buf).unwrap_or_default();
    // Compared by content, not modification time: two saves within one
    // timestamp tick (editors, scripts, tests) must not be missed.
    let mut contents = std::fs::read(&runner.config.file).ok();
    let mut index = resume_at(&docs, &runner.status);
    if index > 0 {
        runner.emit(
            "Normal",
            "Resumed",
            &format!(
                "document {} of {}: version {}, as the state directory left it",
                index + 1,
                docs.len(),
                docs[index].spec.model.version
            ),
            &[],
        );
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let now_contents = std::fs::read(&runner.config.file).ok();
        if now_contents.is_some() && now_contents != contents {
            contents = now_contents;
            match read_documents(&runner.config.file) {
                Ok(new) => {
                    runner.emit(
                        "Normal",
                        "FileChanged",
                        &format!("{} reloaded", runner.config.file.display()),
                        &[],
                    );
                    index = 0;
                    docs = new;
                }
                Err(e) => runner.emit("Warning", "InvalidSpec", &e.to_string(), &[]),
            }
        }
        let doc = &docs[index.min(docs.len() - 1)];
        match crate::crd::validate(&doc.spec) {
            Ok(mut spec) => {
                resolve_source(&mut spec, &base);
                let observed = runner.observe(&spec).await;
                let plan = crate::plan::plan(&spec, &observed, Timestamp::now());
                runner.apply(&spec, &plan).await?;
                let at_target =
                    plan.status.stable.as_ref().is_some_and(|s| s.version == spec.version)
                        || plan.status.history.last().is_some_and(|h| h.version == spec.version);
                if index + 1 < docs.len()
                    && settled(plan.status.phase)
                    && at_target
                    && plan.status.canary.is_none()
                {
                    index += 1;
                    runner.emit(
                        "Normal",
                        "NextDocument",
                        &format!(
                            "document {} of {}: version {}",
                            index + 1,
                            docs.len(),
                            docs[index].spec.model.version
                        ),
                        &[],
                    );
                }
            }
            Err(e) => {
                let message = format!("invalid spec: {e}");
                if runner.last_message.as_deref() != Some(message.as_str()) {
                    runner.emit("Warning", "InvalidSpec", &message, &[]);
                    runner.last_message = Some(message);
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restart_resumes_at_the_document_of_the_current_version() {
        let doc = |v: &str| -> crate::crd::ModelDeployment {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": "d"},
                "spec": {"model": {"name": "d", "version": v, "source": {"uri": "m.onnx"}}}
            }))
            .unwrap()
        };
        let docs = [doc("1"), doc("2"), doc("3")];
        let status = |stable: Option<&str>, canary: Option<&str>| {
            serde_json::from_value::<crate::crd::ModelDeploymentStatus>(serde_json::json!({
                "stable": stable.map(|v| serde_json::json!({"version": v, "weight": 100})),
                "canary": canary.map(|v| serde_json::json!({"version": v, "weight": 20, "step": 0, "failures": 0})),
            }))
            .unwrap()
        };
        assert_eq!(super::resume_at(&docs, &status(None, None)), 0);
        assert_eq!(super::resume_at(&docs, &status(Some("2"), None)), 1);
        assert_eq!(super::resume_at(&docs, &status(Some("2"), Some("3"))), 2);
        assert_eq!(super::resume_at(&docs, &status(Some("9"), None)), 0);
    }

    #[test]
    fn a_fatal_error_is_the_reason_and_routine_logging_is_not() {
        let log = "2026-11-28T10:47:20Z  INFO tractor::serve: model ready\n\
                   error: cannot read model /m.onnx: No such file\n";
        assert_eq!(
            super::why_it_stopped(log),
            Some("error: cannot read model /m.onnx: No such file")
        );
        let killed = "2026-11-28T10:47:20Z  INFO tractor::serve: model ready\n\n";
        assert_eq!(super::why_it_stopped(killed), None);
        assert_eq!(super::why_it_stopped(""), None);
    }
}
