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

mod apply;
mod auth;
mod children;
mod drive;
mod launch;
mod report;
mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::contract::routes::RouteTable;
use crate::crd::{ModelDeployment, ModelDeploymentStatus, ModelVersionSpec, Phase};
use crate::plan::JobState;
use children::{Backoff, Server};
pub use drive::Stepper;
use launch::Child;
pub use launch::{Launched, Launcher};
pub use report::Line;
use state::resolve_source;
pub use state::{Request, read_documents, registry, request, status};

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
    /// Auth files for the router (docs/security.md); empty: no access control.
    pub auth_files: Vec<PathBuf>,
    /// The router's gRPC port; 0 turns it off.
    pub grpc_port: u16,
}

/// Everything `up` keeps between ticks, persisted under the state directory.
struct Runner {
    config: UpConfig,
    dir: PathBuf,
    http: reqwest::Client,
    /// Starts the children in place of `tractor` processes (`None`: processes).
    launcher: Option<Arc<dyn Launcher>>,
    auth: Option<auth::LocalAuth>,
    servers: BTreeMap<String, Server>,
    draining: Vec<(std::time::Instant, Server)>,
    backoff: BTreeMap<String, Backoff>,
    router: Option<(Child, u16)>,
    job: Option<(String, Child, PathBuf)>,
    job_result: Option<(String, JobState)>,
    /// The local twin of the cluster's `ModelVersion` objects: every
    /// optimized artifact with its digest, lineage and metrics, kept in the
    /// state directory so a restart neither forgets nor re-optimizes them.
    registry: Vec<ModelVersionSpec>,
    status: ModelDeploymentStatus,
    last_message: Option<String>,
    routes: Option<RouteTable>,
    router_backoff: Backoff,
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
    // Checked as a Kubernetes name by `read_documents`: one path component.
    let name = docs[0].metadata.name.clone().unwrap_or_default();
    let mut runner = Runner::open(config.clone(), &name, None)?;
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
    let stable = match &status.stable {
        Some(s) if s.serving() => s.version.as_str(),
        _ => "none",
    };
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
                // The state directory is the first name's: a renamed file is
                // another deployment, which this `up` does not run.
                Ok(new) if new[0].metadata.name != docs[0].metadata.name => runner.emit(
                    "Warning",
                    "InvalidSpec",
                    &format!(
                        "{}: metadata.name changed to {:?}; restart tractor up to run another deployment",
                        runner.config.file.display(),
                        new[0].metadata.name.as_deref().unwrap_or_default()
                    ),
                    &[],
                ),
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
                let plan = runner.tick(&spec, Timestamp::now()).await?;
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
    fn documents_split_as_yaml_does_not_on_every_dashes_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("md.yaml");
        let doc = |v: &str| {
            format!(
                "apiVersion: tractor.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: d}}\n\
                 spec: {{model: {{name: d, version: '{v}', source: {{uri: m.onnx}}}}}}\n"
            )
        };
        // A comment-only document, a separator with a comment after it, and
        // a trailing empty document are not ModelDeployments.
        let text = format!("# two versions\n---\n{}--- # next\n{}---\n", doc("1"), doc("2"));
        std::fs::write(&path, text).unwrap();
        let docs = super::read_documents(&path).unwrap();
        let versions: Vec<&str> = docs.iter().map(|d| d.spec.model.version.as_str()).collect();
        assert_eq!(versions, ["1", "2"]);
        std::fs::write(&path, "# nothing here\n---\n").unwrap();
        let err = super::read_documents(&path).unwrap_err().to_string();
        assert!(err.contains("no ModelDeployment"), "{err}");
    }

    #[test]
    fn a_fatal_error_is_the_reason_and_routine_logging_is_not() {
        let log = "2026-11-28T10:47:20Z  INFO tractor::serve: model ready\n\
                   error: cannot read model /m.onnx: No such file\n";
        assert_eq!(
            super::children::why_it_stopped(log),
            Some("error: cannot read model /m.onnx: No such file")
        );
        let killed = "2026-11-28T10:47:20Z  INFO tractor::serve: model ready\n\n";
        assert_eq!(super::children::why_it_stopped(killed), None);
        assert_eq!(super::children::why_it_stopped(""), None);
    }
}
