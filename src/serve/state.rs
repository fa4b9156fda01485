//! What `tractor serve` is told, the state its handlers share, and the
//! loading of its one model.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;

use super::batcher::{BatchPolicy, EngineHealth, HealthHooks, Scheduler};
use super::error::ApiError;
use super::metrics::Metrics;
use super::v2::DecodeLimits;
use crate::crd::ProcessingSpec;
use crate::engine::{EngineOptions, Model, ModelFormat, PlanEvent, PlanLimits, Threads};
use crate::listen::BindError;
use crate::process::{ProcessError, ProcessingConfig, Processor};
use crate::store;

/// Everything `tractor serve` is told on its command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub model_location: String,
    pub name: String,
    pub version: String,
    pub sha256: Option<String>,
    pub listen: SocketAddr,
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub max_inflight: usize,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub threads: Threads,
    /// Batches the engine runs at once; 0 means one per core the model's
    /// threads leave free.
    pub workers: usize,
    /// Input and output processing, checked against the model once loaded.
    pub processing: Option<ProcessingConfig>,
    /// Tokens, JWT and scopes (issue 12); the default checks no one.
    pub auth: crate::auth::AuthConfig,
    /// Where the model may come from, and how large it may be.
    pub sources: store::SourcePolicy,
    /// The age identity file that opens an encrypted model (in memory);
    /// `None` refuses an encrypted one.
    pub decryption_identity: Option<PathBuf>,
    /// Elements of all a request's input tensors together; `None` is
    /// [`default_max_request_elements`] of `max_body_bytes`.
    pub max_request_elements: Option<usize>,
    /// Bytes of any one tensor the engine computes; `None` is
    /// [`crate::engine::default_max_tensor_bytes`].
    pub max_tensor_bytes: Option<usize>,
    /// What callers without the `raw` scope may see of the outputs
    /// (`--limit-top-k`, `--limit-digits`).
    pub output_limits: super::output_limits::OutputLimits,
    /// Plans kept per input shape (`--max-plans`) and the longest variable
    /// dimension served or padded to (`--max-sequence`).
    pub plans: PlanLimits,
    /// Where the reason goes when the engine cannot recover (the
    /// kubelet's termination message); `None` writes nowhere.
    pub termination_log: Option<PathBuf>,
}

/// The default element limit: as many elements as a body of FP32 binary
/// data under `--max-body-bytes` carries (16 Mi for the 64 MiB default).
/// A JSON body under the limit holds at most twice that (`0,` per
/// element), decoded at most 8 bytes each: memory stays within a few
/// times the body.
pub fn default_max_request_elements(max_body_bytes: usize) -> usize {
    (max_body_bytes / 4).max(1)
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    FetchArtifact(#[from] store::StoreError),
    /// An encrypted model without the identity that opens it, or one that
    /// was modified.
    #[error(transparent)]
    Decrypt(#[from] store::encryption::EncryptionError),
    #[error("loading model {location}: {source}")]
    LoadModel {
        location: String,
        #[source]
        source: crate::engine::EngineError,
    },
    #[error("cannot start the engine workers: {0}")]
    StartWorkers(#[source] std::io::Error),
    /// The processing spec does not fit the model; the message names the field.
    #[error(transparent)]
    Processing(#[from] ProcessError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// The engine cannot recover (every worker stopped, or batches kept
/// panicking): liveness fails with this cause until the process restarts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EngineFailed(String);

/// The model once loaded, with its scheduler and processing.
pub struct Loaded {
    pub model: Arc<Model>,
    pub(super) scheduler: Scheduler,
    /// The configured processing, or pass-through tensors and raw rows
    /// (what V1 requests get without a spec).
    pub(super) processor: Processor,
    /// Whether a spec was configured (V2 `"processing": true` needs one).
    pub(super) processing_configured: bool,
}

/// Shared state of the HTTP handlers. It never holds anything of the
/// controller's: the server only knows its one model.
#[derive(Clone)]
pub struct AppState {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) version: String,
    loaded: OnceLock<Loaded>,
    pub(super) metrics: Metrics,
    pub(super) inflight: Arc<Semaphore>,
    /// Input processing running at once. Each decoded image may hold up to
    /// 4096 x 4096 x 3 bytes (48 MiB), so the in-flight limit alone (256)
    /// would let a burst of large images take gigabytes; one per core keeps
    /// the cores busy and the memory bounded.
    pub(super) preparing: Arc<Semaphore>,
    pub(super) max_body_bytes: usize,
    pub(super) max_request_elements: usize,
    max_tensor_bytes: Option<usize>,
    plans: PlanLimits,
    pub(super) output_limits: super::output_limits::OutputLimits,
    pub(super) request_timeout: Duration,
    policy: BatchPolicy,
    pub(super) health: Arc<EngineHealth>,
}

/// The model a URL names: `/v2/models/{name}[/versions/{version}]/...`.
#[derive(Debug, Deserialize)]
pub(super) struct ModelPath {
    pub(super) name: String,
    pub(super) version: Option<String>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl AppState {
    pub fn new(config: &ServeConfig) -> AppState {
        let metrics = Metrics::new(&config.name, &config.version);
        let health = Arc::new(EngineHealth::new(health_hooks(&metrics, config)));
        AppState {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                version: config.version.clone(),
                loaded: OnceLock::new(),
                metrics,
                inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
                preparing: Arc::new(Semaphore::new(cores())),
                max_body_bytes: config.max_body_bytes,
                max_request_elements: config
                    .max_request_elements
                    .unwrap_or_else(|| default_max_request_elements(config.max_body_bytes)),
                max_tensor_bytes: config.max_tensor_bytes,
                plans: config.plans,
                output_limits: config.output_limits,
                request_timeout: config.request_timeout,
                policy: BatchPolicy {
                    max_batch_rows: config.max_batch_size,
                    max_delay: config.max_batch_delay,
                    slots: config.workers,
                },
                health,
            }),
        }
    }

    /// Installs a loaded model, starts its engine workers and turns
    /// readiness on. A second call is ignored.
    ///
    /// # Errors
    /// The operating system refusing to start the worker threads.
    pub fn install(&self, model: Model) -> Result<(), ServeError> {
        self.install_processed(model, None)
    }

    /// As [`AppState::install`], with input and output processing checked
    /// against the model first.
    ///
    /// # Errors
    /// A spec that does not fit the model (the message names the field),
    /// or the operating system refusing to start the worker threads.
    pub fn install_processed(
        &self,
        model: Model,
        processing: Option<&ProcessingConfig>,
    ) -> Result<(), ServeError> {
        if self.inner.loaded.get().is_some() {
            return Ok(());
        }
        let processor = match processing {
            Some(config) => config.processor(model.inputs(), model.outputs())?,
            None => {
                Processor::new(&ProcessingSpec::default(), model.inputs(), model.outputs(), None)?
            }
        };
        let processing_configured = processing.is_some();
        let model = match self.inner.max_tensor_bytes {
            Some(bytes) => model.with_max_tensor_bytes(bytes),
            None => model,
        };
        let metrics = &self.inner.metrics;
        let (builds, hits, evictions, seconds) = (
            metrics.plan_builds.clone(),
            metrics.plan_hits.clone(),
            metrics.plan_evictions.clone(),
            metrics.plan_build_seconds.clone(),
        );
        if let Some(loaded) = model.plan_stats() {
            builds.inc_by(loaded.builds);
        }
        let observer: crate::engine::PlanObserver = Arc::new(move |event: PlanEvent| match event {
            PlanEvent::Hit => hits.inc(),
            PlanEvent::Built(took) => {
                builds.inc();
                seconds.observe(took.as_secs_f64());
            }
            PlanEvent::Evicted => evictions.inc(),
        });
        let model = model.with_plan_limits(self.inner.plans, Some(observer));
        let model = Arc::new(model);
        let mut policy = self.inner.policy;
        if policy.slots == 0 {
            policy.slots = (cores() / model.threads().max(1)).max(1);
        }
        let batch_size = self.inner.metrics.batch_size.clone();
        let scheduler = Scheduler::start(
            model.clone(),
            policy,
            Arc::new(move |rows| batch_size.observe(rows as f64)),
            self.inner.health.clone(),
        )
        .map_err(ServeError::StartWorkers)?;
        tracing::info!(
            inputs = ?model.inputs().iter().map(|s| (&s.name, s.datatype.v2_name(), s.v2_shape())).collect::<Vec<_>>(),
            outputs = ?model.outputs().iter().map(|s| (&s.name, s.datatype.v2_name(), s.v2_shape())).collect::<Vec<_>>(),
            batching = scheduler.policy().batching(),
            engine_threads = model.threads(),
            max_tensor_bytes = model.max_tensor_bytes(),
            max_request_elements = self.inner.max_request_elements,
            batch_one_plan = model.has_single_plan(),
            plans_per_shape = model.has_plans_per_shape(),
            max_plans = model.plan_limits().max_plans,
            max_sequence = model.plan_limits().max_sequence,
            separate_requests_batched = model.rows_independent(),
            slots = scheduler.policy().slots,
            processing = ?processor.input_steps().map(|(n, s)| (n, s.name())).collect::<Vec<_>>(),
            "model ready"
        );
        let loaded = Loaded { model, scheduler, processor, processing_configured };
        if self.inner.loaded.set(loaded).is_ok() {
            self.inner.metrics.model_ready.set(1);
        }
        Ok(())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(super) fn loaded(&self) -> Result<&Loaded, ApiError> {
        self.inner.loaded.get().ok_or(ApiError::NotReady)
    }

    /// Whether a request sent now can be served: the model is loaded and
    /// an engine worker is alive to run it.
    pub fn is_ready(&self) -> bool {
        self.loaded().is_ok() && self.inner.health.can_serve()
    }

    /// `Err(cause)` once the engine cannot recover: the process should be
    /// restarted, and liveness says so.
    pub fn liveness(&self) -> Result<(), EngineFailed> {
        match self.inner.health.failure() {
            Some(cause) => Err(EngineFailed(cause.to_string())),
            None => Ok(()),
        }
    }

    /// Declares the engine failed: liveness fails from now on, with `cause`.
    pub fn fail_engine(&self, cause: String) {
        self.inner.health.fail(cause);
    }

    /// What a request to `loaded` may declare.
    pub(super) fn decode_limits(&self, loaded: &Loaded) -> DecodeLimits {
        let policy = loaded.scheduler.policy();
        DecodeLimits {
            max_rows: policy.batching().then_some(policy.max_batch_rows),
            max_elements: self.inner.max_request_elements,
        }
    }

    /// Checks a name (and version) from the URL against the served model.
    pub(super) fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        if name != self.inner.name {
            return Err(ApiError::NotFound(format!(
                "unknown model {name:?}; this server serves {:?}",
                self.inner.name
            )));
        }
        if let Some(v) = version
            && v != self.inner.version
        {
            return Err(ApiError::NotFound(format!(
                "unknown version {v:?} of model {name:?}; this server serves version {:?}",
                self.inner.version
            )));
        }
        Ok(())
    }

    /// The loaded model, once the model a URL names is checked to be ours.
    pub(super) fn serving(&self, at: &ModelPath) -> Result<&Loaded, ApiError> {
        self.check_model(&at.name, at.version.as_deref())?;
        self.loaded()
    }
}

/// Worker events into the metrics, and the engine's failure into the
/// termination message too.
fn health_hooks(metrics: &Metrics, config: &ServeConfig) -> HealthHooks {
    let workers = metrics.engine_workers.clone();
    let restarts = metrics.engine_restarts.clone();
    let failed = metrics.engine_failed.clone();
    let ready = metrics.model_ready.clone();
    let termination_log = config.termination_log.clone();
    HealthHooks {
        workers: Arc::new(move |n| workers.set(i64::try_from(n).unwrap_or(i64::MAX))),
        restarted: Arc::new(move || restarts.inc()),
        failed: Arc::new(move |cause| {
            failed.set(1);
            ready.set(0);
            if let Some(path) = &termination_log {
                write_termination_log(path, cause);
            }
        }),
    }
}

/// Writes why the engine failed where the kubelet reads the container's
/// termination message, cut to what it keeps; a path that cannot be
/// written (outside a container) is skipped with a log line.
fn write_termination_log(path: &std::path::Path, cause: &str) {
    let message = format!("the engine cannot recover: {cause}");
    let cut: String = message.chars().take(crate::contract::job::MAX_TERMINATION_MESSAGE).collect();
    if let Err(e) = std::fs::write(path, cut) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
}

/// The model name a location implies: its file name without the model extensions.
pub fn default_model_name(location: &str) -> String {
    let file = location.trim_end_matches('/').rsplit('/').next().unwrap_or(location);
    let mut stem = file;
    for ext in [".onnx", ".tgz", ".tar.gz", ".tar", ".nnef"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    if stem.is_empty() { "model".to_string() } else { stem.to_string() }
}

/// Fetches, verifies and loads the model; the slow part of start-up.
///
/// # Errors
/// An artifact that cannot be fetched or verified, or a model the engine
/// cannot load.
pub async fn load_model(config: &ServeConfig) -> Result<Model, ServeError> {
    let artifact =
        store::fetch_with(&config.model_location, config.sha256.as_deref(), &config.sources)
            .await?;
    tracing::info!(uri = %artifact.uri, sha256 = %artifact.sha256, bytes = artifact.bytes.len(), "artifact fetched");
    let options = EngineOptions { threads: config.threads };
    let location = config.model_location.clone();
    let identity = config.decryption_identity.clone();
    tokio::task::spawn_blocking(move || {
        // An age file is opened here, in memory, off the async threads.
        let artifact = store::encryption::unseal(artifact, identity.as_deref())?;
        let format = ModelFormat::detect(&artifact.file_name, &artifact.bytes);
        Model::load(&artifact.bytes, format, &options)
            .map_err(|source| ServeError::LoadModel { location, source })
    })
    .await
    .map_err(|e| ServeError::LoadModel {
        location: config.model_location.clone(),
        source: crate::engine::EngineError::Prepare(e.to_string()),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_come_from_file_stems() {
        assert_eq!(default_model_name("/a/b/digits-mlp-v1.onnx"), "digits-mlp-v1");
        assert_eq!(default_model_name("s3://bucket/m.nnef.tgz"), "m");
        assert_eq!(default_model_name("https://h/x/model"), "model");
        assert_eq!(default_model_name(".onnx"), "model");
    }
}
