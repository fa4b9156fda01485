//! The API: `ModelDeployment` and `ModelVersion`, group `tractor.dev`,
//! version `v1alpha1`. The only place where the API is defined.
//!
//! Kubernetes checks what a schema can say (required fields, enums, ranges,
//! CEL rules); [`validate`] checks the rest and is the one parse path both the
//! controller's status conditions and the planner read the spec through.

pub mod access;
pub mod processing;
pub mod recipe;
pub mod strict;
mod structural;
mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use access::{OutputLimitsSpec, ServingAuthSpec};
pub use processing::ProcessingSpec;
pub use recipe::Recipe;
pub use validate::{
    Analysis, Autoscaling, Rollout, SpecError, Step, ValidSpec, check_object_name, check_version,
    parse_object, validate,
};

/// The API group of every tractor resource.
pub const GROUP: &str = "tractor.dev";

/// Annotation that promotes the current canary to the next step (or to stable).
pub const PROMOTE_ANNOTATION: &str = "tractor.dev/promote";
/// Annotation that aborts the current canary and keeps the stable version.
pub const ABORT_ANNOTATION: &str = "tractor.dev/abort";

/// A model served from versioned pods, with its optimization recipe and the
/// rules for rolling a new version out.
// Every `printcolumn(...)` repeats `type_ = ...`, which clippy takes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tractor.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    shortname = "md",
    status = "ModelDeploymentStatus",
    doc = "A model served by tractor: optimized, registered, served and rolled out as a canary",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Stable", type_ = "string", json_path = ".status.stable.version"),
    printcolumn(name = "Canary", type_ = "string", json_path = ".status.canary.version"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".status.canary.weight"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    pub model: ModelSpec,
    /// Passes `tractor optimize` applies before serving; absent: serve the source as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = structural::merge_tagged_variants)]
    pub optimize: Option<Recipe>,
    /// The pod of the Job that runs `spec.optimize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimize_job: Option<OptimizeJobSpec>,
    #[serde(default)]
    pub serving: ServingSpec,
    /// The router's pods: how many, and their resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterSpec>,
    #[serde(default)]
    pub rollout: RolloutSpec,
}

/// The router Deployment's pods. Two by default, under a
/// PodDisruptionBudget, so a node drain never leaves the model without a
/// router; the controller reads and resets the statistics of every ready
/// one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterSpec {
    /// Router pods (default 2). More than one gets a PodDisruptionBudget
    /// of one pod unavailable at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: Option<i32>,
    /// Requests and limits of the `tractor route` container, used as given.
    /// Absent: requests 100m CPU and 64Mi, limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The optimization Job's pod, apart from the recipe it runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptimizeJobSpec {
    /// Requests and limits of the `tractor optimize` container, used as
    /// given. Absent: requests 500m CPU and 1Gi, limits 2 CPUs and 4Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// The model's name in the V2 API paths.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The version to serve. Changing it starts a rollout.
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"))]
    pub version: String,
    pub source: SourceSpec,
    /// A Secret key holding the key that decrypts the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Where the artifact is: `s3://`, `http(s)://`, `file://` or a path in the image.
    #[schemars(length(min = 1))]
    pub uri: String,
    /// Expected sha256 of the artifact (hex); serving refuses anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(sha256:)?[0-9a-fA-F]{64}$"))]
    pub sha256: Option<String>,
    #[serde(default)]
    pub format: SourceFormat,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    #[default]
    Onnx,
    Nnef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingSpec {
    /// Pods per version. With `autoscaling`, a HorizontalPodAutoscaler
    /// sets them instead, from `autoscaling.minReplicas` up.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Scale each version's pods with its load: one `autoscaling/v2`
    /// HorizontalPodAutoscaler per serving version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = structural::merge_tagged_variants)]
    pub processing: Option<ProcessingSpec>,
    /// Replaced by `auth.tokenSecretRef`; refused with a pointer to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyRef>,
    /// Who may call the router: tokens, JWTs, TLS (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ServingAuthSpec>,
    /// Top-k classes and rounded scores for callers without the `raw` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limits: Option<OutputLimitsSpec>,
    /// The ServiceAccount of the serving pods (the namespace's `default`
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Mount the ServiceAccount's API token into the serving pods (default
    /// false: `tractor serve` never calls the Kubernetes API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Image for the serving pods; the operator's own image by default.
    /// Only images under a prefix of the operator's `--allowed-images` are
    /// run; any other is refused with a Degraded condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A HorizontalPodAutoscaler per version, as KServe's raw deployment mode
/// makes. Without a target, CPU at 80% of the pods' requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.minReplicas) || self.maxReplicas >= self.minReplicas",
     "message": "maxReplicas must be at least minReplicas"}
]))]
pub struct AutoscalingSpec {
    /// Fewest pods of a serving version (default 1); a canary starts here.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU use to hold, in percent of the pods' CPU request (needs
    /// `resources.requests.cpu` and the metrics server).
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average requests in flight per pod to hold: the Pods metric
    /// `tractor_inflight_requests`, which needs a custom-metrics adapter
    /// (prometheus-adapter) serving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_inflight: Option<i32>,
}

fn default_replicas() -> i32 {
    1
}

impl Default for ServingSpec {
    fn default() -> Self {
        ServingSpec {
            replicas: default_replicas(),
            autoscaling: None,
            resources: None,
            batching: None,
            processing: None,
            token_secret: None,
            auth: None,
            output_limits: None,
            service_account_name: None,
            automount_service_account_token: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            image: None,
        }
    }
}

/// What the schema lets through as a duration: numbers (a fraction
/// allowed) each with a unit humantime knows, as `validate` parses them
/// (`30s`, `1m 30s`, `1h30m`, `500us`, `1.5s`), so `kubectl apply` refuses
/// `pause: banana` at once instead of a Degraded condition later.
/// `tests/crds.rs` checks it against the parser.
pub const DURATION_PATTERN: &str = concat!(
    r"^\s*(?:[0-9]+(?:\.[0-9]+)?\s*(?:",
    "nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|",
    "minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|",
    "weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y",
    r")\s*)+$"
);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// Most rows in one batch; 1 turns batching off.
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: u32,
    /// Longest wait for a batch to fill, as a duration (`500us`, `2ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_batch_delay: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Strictly increasing is checked by `validate`; CEL's list library has
// `isSorted` for the non-decreasing part the API server can refuse at once.
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.steps) || self.steps.map(s, has(s.weight) ? s.weight : 0).isSorted()",
     "message": "rollout step weights must increase"},
    {"rule": "!has(self.steps) || self.steps.all(s, !has(s.shadow) || !s.shadow || !has(s.weight) || s.weight == 0)",
     "message": "a shadow step takes no live traffic: its weight is 0"}
]))]
pub struct RolloutSpec {
    /// Canary weights in percent, increasing, each with a pause; a step
    /// without a pause waits for a manual promote. A first step may be
    /// `shadow: true`: no live traffic, a copy of every request. Empty: the
    /// new version takes all traffic once ready. At most 32 (bounded, so the
    /// API server can cost the rules above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Roll back on its own when the analysis fails (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    /// How long the previous stable version keeps running at weight 0 after a
    /// promotion, so a rollback in that window is a route flip (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub keep_warm: Option<String>,
    /// A canary whose pods are not ready by then is aborted (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub progress_deadline: Option<String>,
    /// Old versions kept (scaled down) for fast rollback (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepSpec {
    /// Percent of traffic on the canary during this step (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub weight: u32,
    /// No caller gets the canary's answers in this step: the router sends it
    /// a copy of every request and compares its answers with the stable
    /// version's (`analysis.minAgreement`). Only at weight 0, so only first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
    /// How long the step lasts before the next (`30s`, `5m`); absent: wait for a promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub pause: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// How often the canary's figures are judged (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Fewer canary requests in an interval than this is "no data" (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// Highest acceptable share of failed canary requests, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: Option<f64>,
    /// Highest acceptable canary p99 latency (`250ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_latency_p99: Option<String>,
    /// Lowest acceptable agreement with the stable version on shadowed requests, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_agreement: Option<f64>,
    /// Failed intervals before the canary is rolled back (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: Option<u32>,
    /// What an interval without enough requests counts as (default pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_no_data: Option<OnNoData>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnNoData {
    /// Hold the step and say so in the status.
    #[default]
    Pause,
    /// Count the interval as passed.
    Pass,
    /// Count the interval as failed.
    Fail,
}

/// Where a `ModelDeployment` stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Optimizing,
    Progressing,
    Succeeded,
    RolledBack,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Optimizing => "Optimizing",
            Phase::Progressing => "Progressing",
            Phase::Succeeded => "Succeeded",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<VersionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One line on what is happening now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A version the router sends traffic to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub version: String,
    /// sha256 of the artifact being served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Percent of traffic.
    pub weight: u32,
    /// When this version became stable (or started as a canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Set while a first deployment waits for its pods: the version has
    /// the route but does not serve yet. When that began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<Time>,
}

impl VersionStatus {
    /// True once the version's pods have served, false while a first
    /// deployment waits for them.
    pub fn serving(&self) -> bool {
        self.pending_since.is_none()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub weight: u32,
    /// Index into `spec.rollout.steps` of the current step.
    pub step: u32,
    /// When the canary was first asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// When the current step began (its pods ready and its weight set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started: Option<Time>,
    /// Failed analysis intervals so far.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisResult>,
}

/// One analysis verdict, with the figures and the thresholds it was judged by.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisResult {
    pub time: Time,
    pub verdict: Verdict,
    pub requests: u64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Human-readable: what was measured against what threshold.
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Verdict {
    #[default]
    Pass,
    Fail,
    NoData,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub version: String,
    pub outcome: Outcome,
    pub time: Time,
    /// The spec generation this happened under: a version that failed is
    /// retried once the spec is edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub reason: String,
}

/// How a version left the rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Outcome {
    /// It became stable.
    Promoted,
    /// It was stable and another version replaced it (kept for rollback).
    Replaced,
    /// Its canary failed analysis and was rolled back.
    RolledBack,
    /// Its canary was aborted by a person.
    Aborted,
    /// A newer version was asked for before it finished.
    Superseded,
    /// It could not be built or started.
    Failed,
}

/// One immutable registry entry: an artifact, where it came from, how it scores.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tractor.dev",
    version = "v1alpha1",
    kind = "ModelVersion",
    namespaced,
    shortname = "mv",
    doc = "An immutable model version: artifact, digest, lineage and metrics",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Parent", type_ = "string", json_path = ".spec.parent"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.artifact.sizeBytes"),
    printcolumn(name = "Metric", type_ = "string", json_path = ".spec.metrics.summary"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "a ModelVersion is immutable"}]))]
pub struct ModelVersionSpec {
    pub model: String,
    pub version: String,
    pub artifact: ArtifactRef,
    /// The version (or source digest) this one was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = structural::merge_tagged_variants)]
    pub recipe: Option<Recipe>,
    #[serde(default)]
    pub metrics: VersionMetrics,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    pub uri: String,
    pub sha256: String,
    #[serde(default)]
    pub format: SourceFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_entropy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    /// The headline figure as `kubectl get mv` shows it (`accuracy=0.978`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// A digest that is not 64 hexadecimal characters (the text as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 {0:?}: expected 64 hexadecimal characters")]
pub struct InvalidDigest(pub String);

/// A user-given sha256 as lowercase hex, with an optional `sha256:` prefix
/// accepted: the one rule for specs, `serve --sha256` and the store.
///
/// # Errors
/// Anything but 64 hexadecimal characters.
pub fn normalize_digest(digest: &str) -> Result<String, InvalidDigest> {
    let trimmed = digest.trim();
    let hex_part = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
    if hex_part.len() == 64 && hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex_part.to_ascii_lowercase())
    } else {
        Err(InvalidDigest(digest.to_string()))
    }
}

/// Both CRDs as one multi-document YAML, as `tractor crd` prints and `crds/` holds.
///
/// # Errors
/// Only serialization failures, which these static types cannot produce.
pub fn crds_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    let md = serde_saphyr::to_string(&ModelDeployment::crd())?;
    let mv = serde_saphyr::to_string(&ModelVersion::crd())?;
    Ok(format!("---\n{md}---\n{mv}"))
}
