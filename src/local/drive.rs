//! The runner opened on a state directory, one tick of it (observe, plan,
//! carry out), and [`Stepper`]: the same tick with the clock in the
//! caller's hand, for the conformance suite that runs one scenario table
//! through both executors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use super::children::Backoff;
use super::launch::Launcher;
use super::state::{REGISTRY_FILE, resolve_source};
use super::{LocalError, Runner, UpConfig};
use crate::crd::{ModelDeploymentSpec, ModelDeploymentStatus, ModelVersionSpec, ValidSpec};
use crate::plan::Plan;

impl Runner {
    /// A runner for deployment `name`, resuming what the state directory
    /// holds (status, registry); nothing is started yet.
    ///
    /// # Errors
    /// The deployment's state directory cannot be made.
    pub(super) fn open(
        config: UpConfig,
        name: &str,
        launcher: Option<Arc<dyn Launcher>>,
    ) -> Result<Runner, LocalError> {
        let dir = config.state_dir.join(name);
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
        let local_auth = super::auth::LocalAuth::create(&dir, &config.auth_files)?;
        Ok(Runner {
            config,
            dir,
            http: super::auth::LocalAuth::client(local_auth.as_ref()),
            auth: local_auth,
            launcher,
            servers: BTreeMap::new(),
            draining: Vec::new(),
            backoff: BTreeMap::new(),
            router: None,
            job: None,
            job_result: None,
            registry,
            status,
            last_message: None,
            routes: None,
            router_backoff: Backoff::new(),
        })
    }

    /// One look at the world: observe, plan at `now`, carry the plan out.
    ///
    /// # Errors
    /// A child that cannot be started, a state file that cannot be written.
    pub(super) async fn tick(
        &mut self,
        spec: &ValidSpec,
        now: Timestamp,
    ) -> Result<Plan, LocalError> {
        let observed = self.observe(spec).await;
        let plan = crate::plan::plan(spec, &observed, now);
        self.apply(spec, &plan).await?;
        Ok(plan)
    }
}

/// `tractor up`'s runner, one tick at a time at the times the caller gives,
/// its children started by a [`Launcher`]. The conformance suite drives it
/// through the same scenarios as the controller; `up` itself ticks on the
/// wall clock ([`super::up`]).
pub struct Stepper {
    runner: Runner,
}

impl Stepper {
    /// Opens the state directory for `name` and starts the router.
    ///
    /// # Errors
    /// The state directory cannot be made, or the router does not start.
    pub async fn start(
        config: UpConfig,
        name: &str,
        launcher: Arc<dyn Launcher>,
    ) -> Result<Stepper, LocalError> {
        let mut runner = Runner::open(config, name, Some(launcher))?;
        if let Err(e) = runner.start_router().await {
            runner.stop().await;
            return Err(e);
        }
        Ok(Stepper { runner })
    }

    /// One tick of `up` for this spec at `now`. Relative paths in the spec
    /// are read against the directory of the config's file, as `up` does.
    ///
    /// # Errors
    /// An invalid spec (the reason names the field), or what a tick of `up`
    /// fails on.
    pub async fn tick(
        &mut self,
        spec: &ModelDeploymentSpec,
        now: Timestamp,
    ) -> Result<Plan, LocalError> {
        let file = &self.runner.config.file;
        let mut valid = crate::crd::validate(spec).map_err(|e| LocalError::InvalidSpec {
            path: file.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        resolve_source(&mut valid, &base);
        self.runner.tick(&valid, now).await
    }

    /// The status as `up` last wrote it.
    pub fn status(&self) -> &ModelDeploymentStatus {
        &self.runner.status
    }

    /// The versions whose `serve` child `up` keeps running (not those
    /// draining after they left the routes).
    pub fn serving(&self) -> Vec<String> {
        self.runner.servers.keys().cloned().collect()
    }

    /// The deployment's state directory (routes, status, registry).
    pub fn dir(&self) -> PathBuf {
        self.runner.dir.clone()
    }

    /// Stops every child, as `up` does on its way out.
    pub async fn stop(mut self) {
        self.runner.stop().await;
    }
}
