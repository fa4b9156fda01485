//! The Kubernetes objects a `ModelDeployment` owns, rendered from a plan.
//! Pure functions: the reconciler applies what these return, and tests check
//! them against the Kubernetes types without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource,
    EnvVar, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

mod job;
mod scaling;
mod traces;

pub use job::{
    artifact_uri, optimize_job, optimize_job_defaults, optimize_resources, recipe_configmap,
};
pub use scaling::{
    AUTOSCALED_ANNOTATION, BUDGETED_ANNOTATION, INFLIGHT_METRIC, autoscaled, budgeted,
    router_disruption_budget, version_autoscaler, version_disruption_budget,
};
pub use traces::{
    PASSED_ON as TRACING_PASSED_ON, ROUTER_SERVICE, RUST_LOG_TRACING, SERVE_SERVICE, TracingConfig,
};

use super::access;
use crate::contract::args::{self, RoutesAt, ServePlacement};
use crate::crd::{ModelDeployment, ModelVersion, ModelVersionSpec, ValidSpec};
use crate::plan::DesiredVersion;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const DEPLOYMENT_LABEL: &str = "tractor.dev/deployment";
pub const VERSION_LABEL: &str = "tractor.dev/version";
/// The port `tractor serve` listens on in its pods.
pub const SERVE_PORT: i32 = 8000;
/// The serve pods' gRPC port: Triton's and KServe's 8001.
pub const SERVE_GRPC_PORT: i32 = 8001;
/// The router's traffic and admin ports.
pub const ROUTE_PORT: i32 = 8080;
pub const ROUTE_ADMIN_PORT: i32 = 9090;
/// The router's gRPC port, next to its HTTP one.
pub const ROUTE_GRPC_PORT: i32 = 8081;
/// UID of the image's unprivileged user (distroless `nonroot`).
const NON_ROOT_UID: i64 = 65532;

/// Settings of the operator itself, from its command line.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Image every role runs unless a spec overrides it.
    pub image: String,
    /// Where optimization jobs write artifacts (`s3://bucket/prefix`).
    pub artifact_store: String,
    /// A Secret whose keys become environment variables of jobs and serving
    /// pods (`AWS_ACCESS_KEY_ID`, ...), for the artifact store.
    pub store_credentials: Option<String>,
    pub log_format: String,
    /// The operator's `OTEL_*` settings, passed on to serving and router pods.
    pub tracing: TracingConfig,
    /// Prefixes `spec.serving.image` must start with (`--allowed-images`).
    pub allowed_images: Vec<String>,
    /// Prefixes `spec.serving.auth.jwks.url` must start with (`--allowed-jwks-urls`).
    pub allowed_jwks_urls: Vec<String>,
    /// The operator's own namespace, whose controller pods the
    /// NetworkPolicies let in.
    pub operator_namespace: String,
    /// The controller's token to the routers' admin ports.
    pub admin_token: super::access::AdminToken,
}

/// A Kubernetes object name from parts: lowercase, `[a-z0-9-]`, at most 63
/// characters, stable across reconciles (a digest suffix when it must be cut).
pub fn object_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let mut name: String = joined
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-').to_string();
    if name.len() <= 63 {
        return name;
    }
    let digest = &crate::store::sha256_hex(joined.as_bytes())[..8];
    format!("{}-{digest}", name[..54].trim_end_matches('-'))
}

pub fn version_object_name(md: &ModelDeployment, version: &str) -> String {
    object_name(&[&md.name_any(), &format!("v{version}")])
}

pub fn job_name(md: &ModelDeployment, version: &str) -> String {
    object_name(&[&md.name_any(), "optimize", &format!("v{version}")])
}

pub fn routes_configmap_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any(), "routes"])
}

/// The router's Service and Deployment carry the `ModelDeployment`'s name.
pub fn router_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any()])
}

fn owner(md: &ModelDeployment) -> OwnerReference {
    md.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        api_version: "tractor.dev/v1alpha1".into(),
        kind: "ModelDeployment".into(),
        name: md.name_any(),
        uid: md.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    })
}

pub fn labels(
    md: &ModelDeployment,
    component: &str,
    version: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_string(), "tractor".to_string()),
        ("app.kubernetes.io/name".to_string(), "tractor".to_string()),
        (COMPONENT.to_string(), component.to_string()),
        (DEPLOYMENT_LABEL.to_string(), object_name(&[&md.name_any()])),
    ]);
    if let Some(v) = version {
        labels.insert(VERSION_LABEL.to_string(), object_name(&[v]));
    }
    labels
}

pub(super) fn meta(
    md: &ModelDeployment,
    name: String,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: md.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner(md)]),
        ..ObjectMeta::default()
    }
}

fn env_var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..SecurityContext::default()
    }
}

fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_UID),
        run_as_group: Some(NON_ROOT_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

fn store_env_from(config: &OperatorConfig) -> Option<Vec<EnvFromSource>> {
    config.store_credentials.as_ref().map(|secret| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: secret.clone(), optional: Some(true) }),
            ..EnvFromSource::default()
        }]
    })
}

fn http_probe(path: &str, port: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

/// A probe of the serving port, over HTTPS when the versions serve TLS
/// (the kubelet does not verify the certificate, as Kubernetes documents).
fn serve_probe(md: &ModelDeployment, path: &str, period: i32) -> Probe {
    let mut probe = http_probe(path, SERVE_PORT, period);
    if let Some(get) = probe.http_get.as_mut() {
        get.scheme = (version_scheme(md) == "https").then(|| "HTTPS".to_string());
    }
    probe
}

/// A serving pod may take this long to load its model: 120 checks, 5 s apart.
const STARTUP_PROBE_PERIOD_SECONDS: i32 = 5;
const STARTUP_PROBE_FAILURES: i32 = 120;

/// Where a version's pods find the processing document.
const PROCESSING_MOUNT: &str = "/etc/tractor/processing";
const PROCESSING_KEY: &str = "processing.json";

/// The name of a version's processing ConfigMap: one function for creating
/// and deleting it, so a long name cut to 63 characters is the same both ways.
pub fn processing_configmap_name(md: &ModelDeployment, version: &str) -> String {
    object_name(&[&md.name_any(), &format!("v{version}"), "processing"])
}

/// The ConfigMap carrying `spec.serving.processing` for a version's pods.
pub fn processing_configmap(
    md: &ModelDeployment,
    spec: &ValidSpec,
    version: &str,
) -> Option<ConfigMap> {
    let json = args::processing_document(spec)?;
    Some(ConfigMap {
        metadata: meta(
            md,
            processing_configmap_name(md, version),
            labels(md, "serve", Some(version)),
        ),
        data: Some(BTreeMap::from([(PROCESSING_KEY.to_string(), json)])),
        ..ConfigMap::default()
    })
}

/// The Deployment running `tractor serve` for one version.
pub fn version_deployment(
    md: &ModelDeployment,
    spec: &ValidSpec,
    desired: &DesiredVersion,
    config: &OperatorConfig,
) -> Deployment {
    let labels = labels(md, "serve", Some(&desired.version));
    let mut child = args::serve(
        spec,
        &desired.served(),
        &ServePlacement {
            host: None,
            port: SERVE_PORT as u16,
            grpc_port: SERVE_GRPC_PORT as u16,
            processing_file: format!("{PROCESSING_MOUNT}/{PROCESSING_KEY}"),
        },
    );
    let mut access = access::Mounts::default();
    access::serve_access(md, &mut child, &mut access);
    let access::Mounts { mut volumes, mut mounts } = access;
    let mut env: Vec<EnvVar> =
        child.env().into_iter().map(|(name, value)| env_var(&name, value)).collect();
    env.push(env_var("TRACTOR_LOG_FORMAT", config.log_format.clone()));
    env.extend(config.tracing.pod_env(SERVE_SERVICE));
    if spec.processing.is_some() {
        volumes.push(Volume {
            name: "processing".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: processing_configmap_name(md, &desired.version),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "processing".into(),
            mount_path: PROCESSING_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let container = Container {
        name: "serve".into(),
        image: Some(md.spec.serving.image.clone().unwrap_or_else(|| config.image.clone())),
        args: Some(child.flags_without_env()),
        env: Some(env),
        env_from: store_env_from(config),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: SERVE_PORT,
                ..ContainerPort::default()
            },
            grpc_container_port(SERVE_GRPC_PORT),
        ]),
        readiness_probe: Some(serve_probe(md, "/v2/health/ready", 2)),
        // Fetching and optimizing a large model can take minutes before the
        // port opens: the startup probe holds the liveness probe off for up to
        // ten minutes instead of letting it restart a pod that is loading.
        startup_probe: Some(Probe {
            failure_threshold: Some(STARTUP_PROBE_FAILURES),
            ..serve_probe(md, "/v2/health/live", STARTUP_PROBE_PERIOD_SECONDS)
        }),
        liveness_probe: Some(serve_probe(md, "/v2/health/live", 10)),
        resources: md.spec.serving.resources.clone(),
        security_context: Some(restricted_container_security()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    };
    let mut metadata = meta(md, version_object_name(md, &desired.version), labels.clone());
    let autoscaled = autoscaled(spec, desired).is_some();
    // Read back by the observation: which HPAs and budgets exist, without
    // listing them.
    let marks =
        [(AUTOSCALED_ANNOTATION, autoscaled), (BUDGETED_ANNOTATION, budgeted(spec, desired))];
    let marks: BTreeMap<String, String> =
        marks.iter().filter(|(_, on)| *on).map(|(k, _)| (k.to_string(), "true".into())).collect();
    if !marks.is_empty() {
        metadata.annotations = Some(marks);
    }
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: (!autoscaled).then_some(desired.replicas),
            selector: LabelSelector { match_labels: Some(labels.clone()), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    node_selector: (!md.spec.serving.node_selector.is_empty())
                        .then(|| md.spec.serving.node_selector.clone()),
                    tolerations: (!md.spec.serving.tolerations.is_empty())
                        .then(|| md.spec.serving.tolerations.clone()),
                    security_context: Some(restricted_pod_security()),
                    service_account_name: md.spec.serving.service_account_name.clone(),
                    // `tractor serve` never calls the API: no token unless asked for.
                    automount_service_account_token: Some(
                        md.spec.serving.automount_service_account_token.unwrap_or(false),
                    ),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

pub(super) fn service(
    md: &ModelDeployment,
    name: String,
    labels: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: meta(md, name, labels.clone()),
        spec: Some(ServiceSpec {
            selector: Some(labels),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub(super) fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..ServicePort::default()
    }
}

pub fn version_service(md: &ModelDeployment, version: &str) -> Service {
    service(
        md,
        version_object_name(md, version),
        labels(md, "serve", Some(version)),
        vec![port("http", SERVE_PORT), grpc_port(SERVE_GRPC_PORT)],
    )
}

/// A Service port for gRPC: `appProtocol: grpc` tells meshes and gateways
/// to speak HTTP/2 to it.
fn grpc_port(number: i32) -> ServicePort {
    ServicePort { app_protocol: Some("grpc".into()), ..port("grpc", number) }
}

fn grpc_container_port(number: i32) -> ContainerPort {
    ContainerPort { name: Some("grpc".into()), container_port: number, ..ContainerPort::default() }
}

/// `https` when the versions serve TLS (`spec.serving.auth.backendTls`).
fn version_scheme(md: &ModelDeployment) -> &'static str {
    if crate::crd::access::backend_tls(md).is_some() { "https" } else { "http" }
}

/// In-cluster gRPC URL of a version's Service.
pub fn version_grpc_url(md: &ModelDeployment, version: &str) -> String {
    format!(
        "{}://{}.{}.svc:{SERVE_GRPC_PORT}",
        version_scheme(md),
        version_object_name(md, version),
        md.namespace().unwrap_or_else(|| "default".into())
    )
}

/// In-cluster URL of a version's Service.
pub fn version_url(md: &ModelDeployment, version: &str) -> String {
    format!(
        "{}://{}.{}.svc:{SERVE_PORT}",
        version_scheme(md),
        version_object_name(md, version),
        md.namespace().unwrap_or_else(|| "default".into())
    )
}

/// The routing table the router watches: versions, their URLs and weights.
pub fn routes_configmap(
    md: &ModelDeployment,
    weights: &[(String, u32)],
    shadow: Option<&str>,
) -> ConfigMap {
    let table = crate::contract::routes::RouteTable {
        backends: weights
            .iter()
            .map(|(version, weight)| crate::contract::routes::Backend {
                version: version.clone(),
                url: version_url(md, version),
                weight: *weight,
                grpc: Some(version_grpc_url(md, version)),
            })
            .collect(),
        shadow: shadow.map(str::to_string),
    };
    let json = serde_json::to_string_pretty(&table).unwrap_or_else(|_| "{}".into());
    ConfigMap {
        metadata: meta(md, routes_configmap_name(md), labels(md, "route", None)),
        data: Some(BTreeMap::from([("routes.json".to_string(), json)])),
        ..ConfigMap::default()
    }
}

/// The router Deployment: one per `ModelDeployment`, reading its routing
/// table from the routes ConfigMap through the API, so weight changes apply
/// at once and survive restarts without a rollout of the router.
pub fn router_deployment(
    md: &ModelDeployment,
    spec: &ValidSpec,
    config: &OperatorConfig,
) -> Deployment {
    let labels = labels(md, "route", None);
    let mut child = args::with_grpc_port(
        args::route(
            &format!("0.0.0.0:{ROUTE_PORT}"),
            &format!("0.0.0.0:{ROUTE_ADMIN_PORT}"),
            &RoutesAt::ConfigMap(routes_configmap_name(md)),
        ),
        ROUTE_GRPC_PORT as u16,
    );
    let mut access = access::Mounts::default();
    access::route_access(md, &mut child, &mut access);
    let container = Container {
        name: "route".into(),
        image: Some(config.image.clone()),
        args: Some(child.argv()),
        env: Some(
            [
                env_var("TRACTOR_LOG_FORMAT", config.log_format.clone()),
                EnvVar {
                    name: "POD_NAMESPACE".into(),
                    value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                        field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                            field_path: "metadata.namespace".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                    value: None,
                },
            ]
            .into_iter()
            .chain(config.tracing.pod_env(ROUTER_SERVICE))
            .collect(),
        ),
        ports: Some(router_ports()),
        readiness_probe: Some(http_probe("/healthz", ROUTE_ADMIN_PORT, 2)),
        liveness_probe: Some(http_probe("/healthz", ROUTE_ADMIN_PORT, 10)),
        resources: Some(router_resources(md)),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(access.mounts),
        ..Container::default()
    };
    Deployment {
        metadata: meta(md, router_name(md), labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.router_replicas),
            selector: LabelSelector { match_labels: Some(labels.clone()), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: Some(router_account_name(md)),
                    security_context: Some(restricted_pod_security()),
                    volumes: Some(access.volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The router container's ports: traffic (REST, gRPC) and admin.
pub fn router_ports() -> Vec<ContainerPort> {
    vec![
        ContainerPort {
            name: Some("http".into()),
            container_port: ROUTE_PORT,
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("admin".into()),
            container_port: ROUTE_ADMIN_PORT,
            ..ContainerPort::default()
        },
        grpc_container_port(ROUTE_GRPC_PORT),
    ]
}

/// What a router pod asks for unless `spec.router.resources` says: it
/// holds a request's body while it proxies it, so memory follows the
/// concurrency and the body limit; no CPU limit, so a burst is not
/// throttled in the path of every request.
pub mod router_defaults {
    pub const CPU_REQUEST: &str = "100m";
    pub const MEMORY_REQUEST: &str = "64Mi";
    pub const MEMORY_LIMIT: &str = "512Mi";
}

/// The router container's resources: `spec.router.resources` as given,
/// else [`router_defaults`].
pub fn router_resources(md: &ModelDeployment) -> ResourceRequirements {
    use router_defaults::*;
    if let Some(given) = md.spec.router.as_ref().and_then(|r| r.resources.clone()) {
        return given;
    }
    let quantity = |q: &str| Quantity(q.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity(CPU_REQUEST)),
            ("memory".to_string(), quantity(MEMORY_REQUEST)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), quantity(MEMORY_LIMIT))])),
        ..ResourceRequirements::default()
    }
}

pub fn router_account_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any(), "router"])
}

/// The router's identity: it may read and watch its routes ConfigMap, and
/// nothing else.
pub fn router_service_account(md: &ModelDeployment) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(md, router_account_name(md), labels(md, "route", None)),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    }
}

pub fn router_role(md: &ModelDeployment) -> Role {
    Role {
        metadata: meta(md, router_account_name(md), labels(md, "route", None)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![routes_configmap_name(md)]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    }
}

pub fn router_role_binding(md: &ModelDeployment) -> RoleBinding {
    RoleBinding {
        metadata: meta(md, router_account_name(md), labels(md, "route", None)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: router_account_name(md),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: router_account_name(md),
            namespace: md.namespace(),
            api_group: None,
        }]),
    }
}

pub fn router_service(md: &ModelDeployment) -> Service {
    service(
        md,
        router_name(md),
        labels(md, "route", None),
        // The admin port has a Service of its own: exposing this one
        // (Ingress, LoadBalancer) must not expose statistics and their reset.
        vec![port("http", ROUTE_PORT), grpc_port(ROUTE_GRPC_PORT)],
    )
}

/// The registry entry for an optimization result.
pub fn model_version(md: &ModelDeployment, spec: ModelVersionSpec) -> ModelVersion {
    let name = version_object_name(md, &spec.version);
    let mut mv = ModelVersion::new(&name, spec.clone());
    mv.metadata.namespace = md.namespace();
    mv.metadata.labels = Some(labels(md, "registry", Some(&spec.version)));
    mv.metadata.owner_references = Some(vec![owner(md)]);
    mv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::OptimizeJob;

    #[test]
    fn services_name_the_grpc_ports_with_app_protocol_grpc() {
        let (md, _) = optimized(serde_json::json!({}));
        for (service, number) in
            [(version_service(&md, "1"), SERVE_GRPC_PORT), (router_service(&md), ROUTE_GRPC_PORT)]
        {
            let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
            let grpc =
                ports.iter().find(|p| p.name.as_deref() == Some("grpc")).expect("a grpc port");
            assert_eq!(grpc.app_protocol.as_deref(), Some("grpc"));
            assert_eq!(grpc.port, number);
        }
        assert_eq!(version_grpc_url(&md, "1"), "http://digits-v1.default.svc:8001");
    }

    #[test]
    fn names_are_dns_labels_and_stable() {
        assert_eq!(object_name(&["digits", "v1.2"]), "digits-v1-2");
        let long = "a".repeat(80);
        let name = object_name(&[&long, "v", "3"]);
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, object_name(&[&long, "v", "3"]));
        assert_ne!(name, object_name(&[&long, "v", "4"]));
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    pub(super) fn optimized(extra: serde_json::Value) -> (ModelDeployment, OptimizeJob) {
        let mut spec = serde_json::json!({
            "model": { "name": "digits", "version": "1", "source": { "uri": "s3://m/d.onnx" } },
            "optimize": { "passes": [{ "type": "fold" }] }
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": { "name": "digits", "namespace": "default", "uid": "u" }, "spec": spec
        }))
        .unwrap();
        let valid = crate::crd::validate(&md.spec).unwrap();
        let now = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let job = crate::plan::plan(&valid, &Default::default(), now).job.expect("a job");
        (md, job)
    }
}
