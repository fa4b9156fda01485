//! Reads a `ModelDeploymentSpec` into the typed, defaulted form the planner
//! works on, naming the field when something is wrong. The controller turns
//! a [`SpecError`] into a Degraded condition; the planner never sees an
//! invalid spec.

use std::time::Duration;

use super::access::{DEFAULT_AUTH_KEY, DEFAULT_JWKS_KEY};
use super::processing::{ProcessingError, ValidProcessing};
use super::{
    ModelDeployment, ModelDeploymentSpec, OnNoData, OutputLimitsSpec, Recipe, SourceFormat,
};

/// Defaults, with where the numbers come from.
pub mod defaults {
    use std::time::Duration;

    /// Flagger's default analysis interval is 1m; canaries of model servers
    /// see many requests a second, so 30s already carries enough of them.
    pub const ANALYSIS_INTERVAL: Duration = Duration::from_secs(30);
    /// Below ~20 requests one failure is already a 5% error rate.
    pub const MIN_REQUESTS: u64 = 20;
    /// Two bad intervals in a row before rolling back, as Flagger's threshold.
    pub const FAILURE_LIMIT: u32 = 2;
    /// Kubernetes' own Deployment default for progressDeadlineSeconds is 600.
    pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
    pub const KEEP_WARM: Duration = Duration::from_secs(600);
    /// Deployment's revisionHistoryLimit defaults to 10; model artifacts are
    /// larger than ReplicaSets, so fewer are kept.
    pub const HISTORY_LIMIT: usize = 3;
    /// Two routers, so one can be drained or restarted while the other
    /// answers: the model's traffic goes through no single pod.
    pub const ROUTER_REPLICAS: i32 = 2;
}

/// A field of the spec that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// Path in the resource, as `kubectl explain` writes it (`spec.rollout.steps[1].pause`).
    pub field: String,
    pub reason: String,
}

fn check_autoscaling(a: &super::AutoscalingSpec) -> Result<Autoscaling, SpecError> {
    const FIELD: &str = "spec.serving.autoscaling";
    let range = |name: &str, value: i32, max: i32| {
        if (1..=max).contains(&value) {
            Ok(value)
        } else {
            Err(invalid(format!("{FIELD}.{name}"), format!("{value}: must be from 1 to {max}")))
        }
    };
    let min_replicas = range("minReplicas", a.min_replicas, 1000)?;
    let max_replicas = range("maxReplicas", a.max_replicas, 1000)?;
    if max_replicas < min_replicas {
        return Err(invalid(
            format!("{FIELD}.maxReplicas"),
            format!("{max_replicas} is below minReplicas {min_replicas}"),
        ));
    }
    let cpu = a
        .target_cpu_utilization_percentage
        .map(|v| range("targetCPUUtilizationPercentage", v, 1000))
        .transpose()?;
    let inflight = a.target_inflight.map(|v| range("targetInflight", v, 100_000)).transpose()?;
    Ok(Autoscaling {
        min_replicas,
        max_replicas,
        target_cpu_percent: match (cpu, inflight) {
            (None, None) => Some(DEFAULT_CPU_TARGET_PERCENT),
            (cpu, _) => cpu,
        },
        target_inflight: inflight,
    })
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError { field: field.into(), reason: reason.into() }
}

/// The spec as the planner uses it: parsed and defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec {
    pub model_name: String,
    pub version: String,
    pub source_uri: String,
    /// Lowercase hex, without a `sha256:` prefix.
    pub source_sha256: Option<String>,
    pub source_format: SourceFormat,
    pub optimize: Option<Recipe>,
    /// Pods of each serving version; with `autoscaling`, its minReplicas
    /// (what a version starts at before its autoscaler takes over).
    pub replicas: i32,
    pub autoscaling: Option<Autoscaling>,
    pub max_batch_size: u32,
    pub max_batch_delay: Duration,
    /// `spec.serving.processing`, checked as far as it can be without the
    /// model; it serializes as the document the user wrote.
    pub processing: Option<ValidProcessing>,
    /// `spec.serving.outputLimits`, in range.
    pub output_limits: OutputLimitsSpec,
    /// `spec.router.replicas`, in range.
    pub router_replicas: i32,
    pub rollout: Rollout,
}

/// `spec.serving.autoscaling`, checked, with at least one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaling {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_cpu_percent: Option<i32>,
    pub target_inflight: Option<i32>,
}

/// CPU target when `autoscaling` names none, as KServe's raw mode defaults.
const DEFAULT_CPU_TARGET_PERCENT: i32 = 80;

#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub steps: Vec<Step>,
    pub analysis: Analysis,
    pub auto_rollback: bool,
    pub keep_warm: Duration,
    pub progress_deadline: Duration,
    pub history_limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub weight: u32,
    /// Weight 0, every request mirrored to the canary and compared.
    pub shadow: bool,
    /// `None`: wait for a manual promote.
    pub pause: Option<Duration>,
}

impl Step {
    /// Where the step puts the canary, for messages: `at 10%`, or
    /// `shadowed (no live traffic)`.
    pub fn describe(&self) -> String {
        if self.shadow {
            "shadowed (no live traffic)".to_string()
        } else {
            format!("at {}%", self.weight)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub interval: Duration,
    pub min_requests: u64,
    pub max_error_rate: Option<f64>,
    pub max_latency_p99: Option<Duration>,
    pub min_agreement: Option<f64>,
    pub failure_limit: u32,
    pub on_no_data: OnNoData,
}

fn duration(field: &str, text: &str) -> Result<Duration, SpecError> {
    humantime::parse_duration(text.trim())
        .map_err(|e| invalid(field, format!("{text:?} is not a duration like 30s or 5m: {e}")))
}

fn optional_duration(field: &str, text: Option<&String>) -> Result<Option<Duration>, SpecError> {
    text.map(|t| duration(field, t)).transpose()
}

fn fraction(field: &str, value: Option<f64>) -> Result<Option<f64>, SpecError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => {
            Err(invalid(field, format!("{v} is not a fraction between 0 and 1")))
        }
        other => Ok(other),
    }
}

/// Checks an object name as Kubernetes does (a DNS-1123 subdomain: at most
/// 253 characters, dot-separated labels of lowercase letters, digits and
/// `-`, each starting and ending with a letter or digit). Such a name is
/// also one safe path component: no `/`, never `.` or `..`, which is why
/// `tractor up` checks it before it makes a state directory of it.
///
/// # Errors
/// The name's field (`field`) and what is wrong with it.
pub fn check_object_name(field: &str, name: &str) -> Result<(), SpecError> {
    const MAX: usize = 253;
    if name.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if name.len() > MAX {
        return Err(invalid(field, format!("{name:?} is longer than {MAX} characters")));
    }
    if !name.split('.').all(is_dns_label) {
        return Err(invalid(
            field,
            format!(
                "{name:?} is not a Kubernetes name: lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// One DNS-1123 label without its length limit: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`,
/// written out, as one character class is not worth a regex engine.
fn is_dns_label(label: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    label.starts_with(alphanumeric)
        && label.ends_with(alphanumeric)
        && label.chars().all(|c| alphanumeric(c) || c == '-')
}

/// The longest `spec.model.version` the schema allows: a version is part of
/// object names (`digits-v3`), which stay under 63 characters.
const MAX_VERSION: usize = 20;
const MAX_MODEL_NAME: usize = 63;

/// Checks `spec.model.version` against the schema's own rule (at most 20 of
/// `[a-z0-9]([-.a-z0-9]*[a-z0-9])?`), for the executor that has no API
/// server to check it: `tractor up` makes file names of versions.
///
/// # Errors
/// What is wrong, naming the field.
pub fn check_version(version: &str) -> Result<(), SpecError> {
    const FIELD: &str = "spec.model.version";
    if version.is_empty() || version.len() > MAX_VERSION {
        return Err(invalid(FIELD, format!("{version:?} is not 1 to {MAX_VERSION} characters")));
    }
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !(version.starts_with(alphanumeric)
        && version.ends_with(alphanumeric)
        && version.chars().all(|c| alphanumeric(c) || c == '-' || c == '.'))
    {
        return Err(invalid(
            FIELD,
            format!(
                "{version:?} is not a version: lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// Reads a whole `ModelDeployment` object, as the API server stores it,
/// into its types. The schema cannot say everything the types require, and
/// an object stored before a schema change may not fit either: this names
/// the field serde refused, so such an object gets a Degraded condition
/// instead of stopping whoever reads it.
///
/// # Errors
/// The path of the first field that does not fit (`spec.optimize.passes[0]`)
/// with serde's reason (``missing field `mode` ``).
pub fn parse_object(object: serde_json::Value) -> Result<ModelDeployment, SpecError> {
    serde_path_to_error::deserialize(object).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { "the object".to_string() } else { field };
        invalid(field, e.into_inner().to_string())
    })
}

/// A key of a Secret or ConfigMap: what Kubernetes accepts as one
/// (`[-._a-zA-Z0-9]+`, at most 253), which is also one safe file name in
/// the directory it is mounted at.
fn check_key(field: &str, key: &str) -> Result<(), SpecError> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || key.len() > 253 || !key.chars().all(fits) || key == "." || key == ".." {
        return Err(invalid(field, format!("{key:?} is not a Secret or ConfigMap key")));
    }
    Ok(())
}

/// `spec.serving.auth` and the serving pods' account: the names the
/// controller mounts, checked before they reach a pod template.
fn check_access(serving: &super::ServingSpec) -> Result<(), SpecError> {
    if let Some(account) = &serving.service_account_name {
        check_object_name("spec.serving.serviceAccountName", account)?;
    }
    let Some(auth) = &serving.auth else { return Ok(()) };
    if let Some(secret) = &auth.token_secret_ref {
        check_object_name("spec.serving.auth.tokenSecretRef.name", &secret.name)?;
        check_key("spec.serving.auth.tokenSecretRef.key", secret.key_or(DEFAULT_AUTH_KEY))?;
    }
    if let Some(jwks) = &auth.jwks {
        match (&jwks.config_map_ref, &jwks.url) {
            (Some(map), None) => {
                check_object_name("spec.serving.auth.jwks.configMapRef.name", &map.name)?;
                check_key("spec.serving.auth.jwks.configMapRef.key", map.key_or(DEFAULT_JWKS_KEY))?;
            }
            (None, Some(url)) => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| invalid("spec.serving.auth.jwks.url", e.to_string()))?;
                if parsed.scheme() != "https" || parsed.host().is_none() {
                    return Err(invalid(
                        "spec.serving.auth.jwks.url",
                        "must be an https:// URL with a host",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "spec.serving.auth.jwks",
                    "needs exactly one of configMapRef and url",
                ));
            }
        }
        let zero = [
            ("rps", jwks.rps.map(u64::from)),
            ("burst", jwks.burst.map(u64::from)),
            ("quota", jwks.quota),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0));
        if let Some((field, _)) = zero {
            return Err(invalid(format!("spec.serving.auth.jwks.{field}"), "must be at least 1"));
        }
        if jwks.burst.is_some() && jwks.rps.is_none() {
            return Err(invalid("spec.serving.auth.jwks.burst", "needs rps"));
        }
        for (field, value) in [("issuer", &jwks.issuer), ("audience", &jwks.audience)] {
            if value.trim().is_empty() {
                return Err(invalid(
                    format!("spec.serving.auth.jwks.{field}"),
                    "must not be empty",
                ));
            }
        }
    }
    if let Some(tls) = &auth.tls {
        check_object_name("spec.serving.auth.tls.secretRef.name", &tls.secret_ref.name)?;
    }
    Ok(())
}

/// Checks and defaults a spec.
///
/// # Errors
/// The first field that cannot be used, by its path.
pub fn validate(spec: &ModelDeploymentSpec) -> Result<ValidSpec, SpecError> {
    if spec.model.name.trim().is_empty() {
        return Err(invalid("spec.model.name", "must not be empty"));
    }
    if spec.model.name.len() > MAX_MODEL_NAME || !is_dns_label(&spec.model.name) {
        return Err(invalid(
            "spec.model.name",
            format!(
                "{:?} is not a DNS label: at most {MAX_MODEL_NAME} lowercase letters, digits and '-'",
                spec.model.name
            ),
        ));
    }
    check_version(&spec.model.version)?;
    if spec.model.source.uri.trim().is_empty() {
        return Err(invalid("spec.model.source.uri", "must not be empty"));
    }
    let source_sha256 = spec
        .model
        .source
        .sha256
        .as_deref()
        .map(super::normalize_digest)
        .transpose()
        .map_err(|e| invalid("spec.model.source.sha256", e.to_string()))?;
    // Declared in the API so manifests can be written against it, but not
    // carried out yet: refusing beats silently serving without protection.
    if spec.model.encryption.is_some() {
        return Err(invalid(
            "spec.model.encryption",
            "encrypted artifacts are not supported yet by tractor serve",
        ));
    }
    if spec.serving.token_secret.is_some() {
        return Err(invalid(
            "spec.serving.tokenSecret",
            "replaced by spec.serving.auth.tokenSecretRef (a Secret holding an auth file)",
        ));
    }
    check_access(&spec.serving)?;
    if let Some(recipe) = &spec.optimize {
        recipe.check().map_err(|e| invalid("spec.optimize", e.to_string()))?;
    }
    if spec.serving.replicas < 0 {
        return Err(invalid("spec.serving.replicas", "must not be negative"));
    }
    let autoscaling = spec.serving.autoscaling.as_ref().map(check_autoscaling).transpose()?;
    let (max_batch_size, max_batch_delay) = match &spec.serving.batching {
        None => (32, Duration::ZERO),
        Some(b) => {
            if b.max_batch_size == 0 {
                return Err(invalid("spec.serving.batching.maxBatchSize", "must be at least 1"));
            }
            let delay = optional_duration(
                "spec.serving.batching.maxBatchDelay",
                b.max_batch_delay.as_ref(),
            )?;
            (b.max_batch_size, delay.unwrap_or(Duration::ZERO))
        }
    };
    let processing =
        spec.serving.processing.as_ref().map(|p| p.check()).transpose().map_err(|e| match e {
            ProcessingError::Check { field, reason } => {
                invalid(format!("spec.serving.processing.{field}"), reason)
            }
            other => invalid("spec.serving.processing", other.to_string()),
        })?;
    let output_limits = spec.serving.output_limits.unwrap_or_default();
    if output_limits.top_k.is_some_and(|k| !(1..=1000).contains(&k)) {
        return Err(invalid("spec.serving.outputLimits.topK", "must be from 1 to 1000"));
    }
    if output_limits.digits.is_some_and(|d| d > 12) {
        return Err(invalid("spec.serving.outputLimits.digits", "must be from 0 to 12"));
    }
    let router_replicas =
        spec.router.as_ref().and_then(|r| r.replicas).unwrap_or(defaults::ROUTER_REPLICAS);
    if !(1..=100).contains(&router_replicas) {
        return Err(invalid("spec.router.replicas", "must be from 1 to 100"));
    }
    let rollout = &spec.rollout;
    if rollout.steps.len() > 32 {
        return Err(invalid(
            "spec.rollout.steps",
            format!("{} steps: at most 32", rollout.steps.len()),
        ));
    }
    let mut steps = Vec::with_capacity(rollout.steps.len());
    for (i, step) in rollout.steps.iter().enumerate() {
        let field = format!("spec.rollout.steps[{i}]");
        if step.weight > 100 {
            return Err(invalid(format!("{field}.weight"), format!("{} is over 100", step.weight)));
        }
        if let Some(prev) = steps.last().map(|s: &Step| s.weight)
            && step.weight <= prev
        {
            return Err(invalid(
                format!("{field}.weight"),
                format!("{} does not increase on the previous step's {prev}", step.weight),
            ));
        }
        let shadow = step.shadow.unwrap_or(false);
        if shadow && step.weight != 0 {
            return Err(invalid(
                format!("{field}.weight"),
                format!("{}: a shadow step takes no live traffic; its weight is 0", step.weight),
            ));
        }
        let pause = optional_duration(&format!("{field}.pause"), step.pause.as_ref())?;
        steps.push(Step { weight: step.weight, shadow, pause });
    }
    let a = &rollout.analysis;
    let analysis = Analysis {
        interval: optional_duration("spec.rollout.analysis.interval", a.interval.as_ref())?
            .unwrap_or(defaults::ANALYSIS_INTERVAL),
        min_requests: a.min_requests.unwrap_or(defaults::MIN_REQUESTS),
        max_error_rate: fraction("spec.rollout.analysis.maxErrorRate", a.max_error_rate)?,
        max_latency_p99: optional_duration(
            "spec.rollout.analysis.maxLatencyP99",
            a.max_latency_p99.as_ref(),
        )?,
        min_agreement: fraction("spec.rollout.analysis.minAgreement", a.min_agreement)?,
        failure_limit: a.failure_limit.unwrap_or(defaults::FAILURE_LIMIT).max(1),
        on_no_data: a.on_no_data.unwrap_or_default(),
    };
    if analysis.interval.is_zero() {
        return Err(invalid("spec.rollout.analysis.interval", "must be longer than zero"));
    }
    Ok(ValidSpec {
        model_name: spec.model.name.clone(),
        version: spec.model.version.clone(),
        source_uri: spec.model.source.uri.clone(),
        source_sha256,
        source_format: spec.model.source.format,
        optimize: spec.optimize.clone(),
        replicas: autoscaling.as_ref().map_or(spec.serving.replicas, |a| a.min_replicas),
        autoscaling,
        max_batch_size,
        max_batch_delay,
        processing,
        output_limits,
        router_replicas,
        rollout: Rollout {
            steps,
            analysis,
            auto_rollback: rollout.auto_rollback.unwrap_or(true),
            keep_warm: optional_duration("spec.rollout.keepWarm", rollout.keep_warm.as_ref())?
                .unwrap_or(defaults::KEEP_WARM),
            progress_deadline: optional_duration(
                "spec.rollout.progressDeadline",
                rollout.progress_deadline.as_ref(),
            )?
            .unwrap_or(defaults::PROGRESS_DEADLINE),
            history_limit: rollout
                .revision_history_limit
                .map(|n| n as usize)
                .unwrap_or(defaults::HISTORY_LIMIT),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ModelDeploymentSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const BASE: &str = "model: {name: digits, version: '2', source: {uri: 's3://m/d.onnx'}}\n";

    #[test]
    fn defaults_fill_an_empty_rollout() {
        let valid = validate(&spec(BASE)).unwrap();
        assert!(valid.rollout.steps.is_empty());
        assert!(valid.rollout.auto_rollback);
        assert_eq!(valid.rollout.analysis.interval, defaults::ANALYSIS_INTERVAL);
        assert_eq!(valid.rollout.analysis.on_no_data, OnNoData::Pause);
        assert_eq!(valid.replicas, 1);
        assert_eq!(valid.max_batch_size, 32);
    }

    #[test]
    fn durations_and_steps_parse() {
        let valid = validate(&spec(&format!(
            "{BASE}rollout:\n  steps: [{{weight: 10, pause: 30s}}, {{weight: 50}}]\n  analysis: {{interval: 1m, maxLatencyP99: 250ms, onNoData: fail}}\n"
        )))
        .unwrap();
        assert_eq!(
            valid.rollout.steps,
            vec![
                Step { weight: 10, shadow: false, pause: Some(Duration::from_secs(30)) },
                Step { weight: 50, shadow: false, pause: None }
            ]
        );
        assert_eq!(valid.rollout.analysis.max_latency_p99, Some(Duration::from_millis(250)));
        assert_eq!(valid.rollout.analysis.on_no_data, OnNoData::Fail);
    }

    #[test]
    fn autoscaling_starts_versions_at_min_replicas_and_defaults_to_cpu() {
        let text = format!(
            "{BASE}serving: {{replicas: 7, autoscaling: {{minReplicas: 3, maxReplicas: 9}}}}\n"
        );
        let valid = validate(&spec(&text)).unwrap();
        assert_eq!(valid.replicas, 3, "a version starts at minReplicas, not replicas");
        let scaling = valid.autoscaling.unwrap();
        assert_eq!((scaling.target_cpu_percent, scaling.target_inflight), (Some(80), None));
        let text =
            format!("{BASE}serving: {{autoscaling: {{maxReplicas: 4, targetInflight: 8}}}}\n");
        let scaling = validate(&spec(&text)).unwrap().autoscaling.unwrap();
        assert_eq!(
            (scaling.min_replicas, scaling.target_cpu_percent, scaling.target_inflight),
            (1, None, Some(8)),
            "a named target replaces the CPU default"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("rollout: {steps: [{weight: 50}, {weight: 20}]}", "spec.rollout.steps[1].weight"),
            ("rollout: {steps: [{weight: 10, pause: soon}]}", "spec.rollout.steps[0].pause"),
            ("rollout: {steps: [{shadow: true, weight: 5}]}", "spec.rollout.steps[0].weight"),
            // Weight 0 comes first, so a shadow step cannot follow a live one.
            ("rollout: {steps: [{weight: 5}, {shadow: true}]}", "spec.rollout.steps[1].weight"),
            ("rollout: {analysis: {maxErrorRate: 1.5}}", "spec.rollout.analysis.maxErrorRate"),
            (
                "serving: {autoscaling: {minReplicas: 4, maxReplicas: 2}}",
                "spec.serving.autoscaling.maxReplicas",
            ),
            (
                "serving: {autoscaling: {minReplicas: 0, maxReplicas: 2}}",
                "spec.serving.autoscaling.minReplicas",
            ),
            (
                "serving: {autoscaling: {maxReplicas: 2, targetInflight: 0}}",
                "spec.serving.autoscaling.targetInflight",
            ),
            ("rollout: {analysis: {interval: 0s}}", "spec.rollout.analysis.interval"),
            ("serving: {batching: {maxBatchSize: 0}}", "spec.serving.batching.maxBatchSize"),
            ("rollout: {keepWarm: forever}", "spec.rollout.keepWarm"),
            ("serving: {tokenSecret: {name: s, key: k}}", "spec.serving.tokenSecret"),
            (
                "serving: {auth: {tokenSecretRef: {name: Callers}}}",
                "spec.serving.auth.tokenSecretRef.name",
            ),
            (
                "serving: {auth: {tokenSecretRef: {name: c, key: ../x}}}",
                "spec.serving.auth.tokenSecretRef.key",
            ),
            (
                "serving: {auth: {jwks: {configMapRef: {name: j}, issuer: ' ', audience: a}}}",
                "spec.serving.auth.jwks.issuer",
            ),
            (
                "serving: {auth: {tls: {secretRef: {name: a/b}}}}",
                "spec.serving.auth.tls.secretRef.name",
            ),
            ("serving: {serviceAccountName: ..}", "spec.serving.serviceAccountName"),
            (
                "serving: {auth: {jwks: {configMapRef: {name: j}, issuer: i, audience: a, burst: 3}}}",
                "spec.serving.auth.jwks.burst",
            ),
            (
                "serving: {auth: {jwks: {configMapRef: {name: j}, issuer: i, audience: a, quota: 0}}}",
                "spec.serving.auth.jwks.quota",
            ),
            ("serving: {auth: {jwks: {issuer: i, audience: a}}}", "spec.serving.auth.jwks"),
            (
                "serving: {auth: {jwks: {configMapRef: {name: j}, url: 'https://idp/k', issuer: i, audience: a}}}",
                "spec.serving.auth.jwks",
            ),
            (
                "serving: {auth: {jwks: {url: 'http://idp/keys', issuer: i, audience: a}}}",
                "spec.serving.auth.jwks.url",
            ),
            ("serving: {outputLimits: {topK: 0}}", "spec.serving.outputLimits.topK"),
            ("serving: {outputLimits: {digits: 13}}", "spec.serving.outputLimits.digits"),
            (
                "serving: {processing: {inputs: [{name: x, image: {}, tensor: {}}]}}",
                "spec.serving.processing.inputs[0]",
            ),
            (
                "serving: {processing: {outputs: [{name: y, topK: {labels: [a], labelsFile: l}}]}}",
                "spec.serving.processing.outputs[0].topK",
            ),
        ];
        for (extra, field) in cases {
            let err = validate(&spec(&format!("{BASE}{extra}\n"))).unwrap_err();
            assert_eq!(err.field, field, "{extra}: {err}");
        }
        let mut bad_digest = spec(BASE);
        bad_digest.model.source.sha256 = Some("abc".into());
        assert_eq!(validate(&bad_digest).unwrap_err().field, "spec.model.source.sha256");
    }

    #[test]
    fn a_whole_auth_section_validates() {
        let full = "serving:\n  serviceAccountName: digits-serving\n  auth:\n    tokenSecretRef: {name: callers, key: tokens.yaml}\n    jwks: {configMapRef: {name: keys}, issuer: 'https://i', audience: tractor}\n    tls: {secretRef: {name: digits-tls}}\n";
        let md = spec(&format!("{BASE}{full}"));
        validate(&md).unwrap();
        let auth = md.serving.auth.unwrap();
        assert_eq!(auth.token_secret_ref.unwrap().key_or(DEFAULT_AUTH_KEY), "tokens.yaml");
        assert_eq!(
            auth.jwks.unwrap().config_map_ref.unwrap().key_or(DEFAULT_JWKS_KEY),
            "jwks.json",
            "the default key"
        );
        let by_url = "serving:\n  auth:\n    jwks: {url: 'https://idp.example.com/keys', issuer: 'https://i', audience: tractor}\n";
        validate(&spec(&format!("{BASE}{by_url}"))).unwrap();
    }

    #[test]
    fn an_object_the_types_cannot_read_names_the_field() {
        let object = |optimize: serde_json::Value| {
            serde_json::json!({
                "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": { "name": "digits", "namespace": "default" },
                "spec": { "model": { "name": "digits", "version": "1", "source": { "uri": "m.onnx" } },
                          "optimize": optimize }
            })
        };
        let err = parse_object(object(
            serde_json::json!({ "passes": [{ "type": "fold" }, { "type": "quantize" }] }),
        ))
        .unwrap_err();
        assert_eq!(err.field, "spec.optimize.passes[1]");
        assert!(err.reason.contains("missing field `mode`"), "{err}");
        let err = parse_object(object(serde_json::json!({ "passes": "fold" }))).unwrap_err();
        assert_eq!(err.field, "spec.optimize.passes", "{err}");
        let md =
            parse_object(object(serde_json::json!({ "passes": [{ "type": "fold" }] }))).unwrap();
        assert_eq!(md.spec.optimize.unwrap().passes.len(), 1);
    }

    /// Issue 11: `tractor up` made a directory of `metadata.name` and file
    /// names of versions: `../../escape-name` wrote outside --state-dir and a
    /// version with `/` stopped it. Both are checked as Kubernetes would.
    #[test]
    fn names_and_versions_are_checked_as_kubernetes_checks_them() {
        for good in ["digits", "a", "digits.v2", "my-model-1", &"a".repeat(253)] {
            assert_eq!(check_object_name("metadata.name", good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "../../escape-name",
            ".",
            "..",
            "a/b",
            "Digits",
            "-a",
            "a-",
            "a..b",
            &"a".repeat(254),
        ] {
            let err = check_object_name("metadata.name", bad).unwrap_err();
            assert_eq!(err.field, "metadata.name", "{bad}");
        }
        for good in ["1", "2", "v1.2", "1-rc.3", "20260101"] {
            assert_eq!(check_version(good), Ok(()), "{good}");
        }
        for bad in ["", "a/b", "../1", "1/", ".1", "1.", "V1", "1 2", &"1".repeat(21)] {
            assert_eq!(check_version(bad).unwrap_err().field, "spec.model.version", "{bad:?}");
        }
        let mut s = spec(BASE);
        s.model.version = "2/../../x".into();
        assert_eq!(validate(&s).unwrap_err().field, "spec.model.version");
        let mut s = spec(BASE);
        s.model.name = "Digits".into();
        assert_eq!(validate(&s).unwrap_err().field, "spec.model.name");
    }
}
