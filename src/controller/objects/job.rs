//! The optimization Job: the `tractor optimize` pod, its recipe ConfigMap,
//! its resources and where it writes the artifact.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PodSpec, PodTemplateSpec, ResourceRequirements,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::{
    OperatorConfig, env_var, job_name, labels, meta, object_name, restricted_container_security,
    restricted_pod_security, store_env_from,
};
use crate::contract::args::{self, OptimizeFiles};
use crate::crd::ModelDeployment;
use crate::plan::OptimizeJob;

/// Where an optimization job writes its artifact.
pub fn artifact_uri(md: &ModelDeployment, config: &OperatorConfig, version: &str) -> String {
    format!(
        "{}/{}/{}/{}.onnx",
        config.artifact_store.trim_end_matches('/'),
        md.namespace().unwrap_or_else(|| "default".into()),
        md.name_any(),
        object_name(&[&format!("v{version}")])
    )
}

/// Resources of the optimization Job's container when the spec gives none.
///
/// The limit is why this exists: `tractor optimize` sizes its buffers from
/// the model file, and a 150-byte file declaring overflowing dimensions once
/// made it allocate 16 GiB per buffer (issue 11); without a limit that is
/// the node's memory, not the Job's. 4Gi: the optimizer peaked at 803 MB on
/// a 117 MB MLP without per-layer timing and 1.5 GB with it
/// (docs/performance.md section 7), about 13 times the model, so 4Gi covers
/// models to about 300 MB with timing. The requests (1Gi, 500m) fit that
/// same model without timing and let the Job schedule on small nodes; 2
/// CPUs cap the calibration and timing runs, which compare layers measured
/// under the same limit, so a limit slows them without biasing the choice.
pub mod optimize_job_defaults {
    pub const CPU_REQUEST: &str = "500m";
    pub const MEMORY_REQUEST: &str = "1Gi";
    pub const CPU_LIMIT: &str = "2";
    pub const MEMORY_LIMIT: &str = "4Gi";
}

/// The optimization Job's container resources: `spec.optimizeJob.resources`
/// as given, else [`optimize_job_defaults`].
pub fn optimize_resources(md: &ModelDeployment) -> ResourceRequirements {
    use optimize_job_defaults::*;
    if let Some(given) = md.spec.optimize_job.as_ref().and_then(|j| j.resources.clone()) {
        return given;
    }
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities(CPU_REQUEST, MEMORY_REQUEST)),
        limits: Some(quantities(CPU_LIMIT, MEMORY_LIMIT)),
        ..ResourceRequirements::default()
    }
}

/// The Job running `tractor optimize`. It reports its result through the
/// termination message (`/dev/termination-log`), which the controller reads
/// from the Job's pod.
pub fn optimize_job(md: &ModelDeployment, job: &OptimizeJob, config: &OperatorConfig) -> Job {
    let labels = labels(md, "optimize", Some(&job.version));
    let args = args::optimize(&OptimizeFiles {
        input: job.source.uri.clone(),
        output: artifact_uri(md, config, &job.version),
        recipe: "/etc/tractor/recipe/recipe.json".into(),
        report: None,
        termination_message: "/dev/termination-log".into(),
    })
    .argv();
    Job {
        metadata: meta(md, job_name(md, &job.version), labels.clone()),
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            ttl_seconds_after_finished: None,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "optimize".into(),
                        image: Some(config.image.clone()),
                        args: Some(args),
                        env: Some(vec![env_var("TRACTOR_LOG_FORMAT", config.log_format.clone())]),
                        env_from: store_env_from(config),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        resources: Some(optimize_resources(md)),
                        volume_mounts: Some(vec![
                            VolumeMount {
                                name: "recipe".into(),
                                mount_path: "/etc/tractor/recipe".into(),
                                read_only: Some(true),
                                ..VolumeMount::default()
                            },
                            VolumeMount {
                                name: "scratch".into(),
                                mount_path: "/tmp".into(),
                                ..VolumeMount::default()
                            },
                        ]),
                        // The optimizer writes scratch files under /tmp, an
                        // emptyDir, so the root filesystem stays read-only.
                        security_context: Some(restricted_container_security()),
                        ..Container::default()
                    }],
                    security_context: Some(restricted_pod_security()),
                    automount_service_account_token: Some(false),
                    volumes: Some(vec![
                        Volume {
                            name: "recipe".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: job_name(md, &job.version),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "scratch".into(),
                            empty_dir: Some(
                                k8s_openapi::api::core::v1::EmptyDirVolumeSource::default(),
                            ),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The recipe an optimization Job reads, named like the Job.
pub fn recipe_configmap(md: &ModelDeployment, job: &OptimizeJob) -> ConfigMap {
    let json = serde_json::to_string_pretty(&job.recipe).unwrap_or_else(|_| "{}".into());
    ConfigMap {
        metadata: meta(md, job_name(md, &job.version), labels(md, "optimize", Some(&job.version))),
        data: Some(BTreeMap::from([("recipe.json".to_string(), json)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::access;
    use crate::controller::objects::tests::optimized;

    fn container_resources(md: &ModelDeployment, job: &OptimizeJob) -> serde_json::Value {
        let config = OperatorConfig {
            image: "tractor:test".into(),
            artifact_store: "s3://a".into(),
            store_credentials: None,
            log_format: "json".into(),
            tracing: Default::default(),
            allowed_images: Vec::new(),
            allowed_jwks_urls: Vec::new(),
            operator_namespace: "tractor-system".into(),
            admin_token: access::AdminToken::from_token("t".into()),
        };
        let job = serde_json::to_value(optimize_job(md, job, &config)).unwrap();
        job["spec"]["template"]["spec"]["containers"][0]["resources"].clone()
    }

    /// Issue 11: the optimization Job had no limits, and one bad model file
    /// could take a node's memory.
    #[test]
    fn the_optimize_job_has_limits_by_default_and_the_specs_when_given() {
        let (md, job) = optimized(serde_json::json!({}));
        assert_eq!(
            container_resources(&md, &job),
            serde_json::json!({ "requests": { "cpu": "500m", "memory": "1Gi" },
                                "limits": { "cpu": "2", "memory": "4Gi" } })
        );
        let given = serde_json::json!({ "limits": { "memory": "12Gi" } });
        let (md, job) = optimized(serde_json::json!({ "optimizeJob": { "resources": given } }));
        assert_eq!(container_resources(&md, &job), given, "used as given, not mixed with defaults");
    }
}
