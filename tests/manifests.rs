//! The packaging, checked without a cluster:
//! - every `deploy/examples/*.yaml` is a valid `ModelDeployment`, and every
//!   object the controller would create for it (driven through the real
//!   planner: first deployment, optimization result, pods ready, a canary)
//!   round-trips through its `k8s-openapi` type and keeps the invariants of
//!   DESIGN.md (owner reference, labels, names, restricted security context),
//!   and of issue 12 (NetworkPolicies, no token in serving pods, the admin
//!   port in no traffic Service);
//! - the operator's ClusterRole covers what the controller does (and the
//!   Role it grants each router) and nothing more, and its pod is
//!   restricted, running as the image's user.
//!
//! `tests/chart.rs` renders the chart and `deploy/` with the real tools.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use tractor::controller::access;
use tractor::controller::desired::{self, Object};
use tractor::controller::objects::{self, OperatorConfig};
use tractor::crd::{ModelDeployment, ValidSpec};
use tractor::plan::{Artifact, JobState, Observed, Plan};

const NAMESPACE: &str = "models";
const UID: &str = "5b1c0f7e-2d4a-4e4b-9a57-1f0e3c2b7a10";
const NON_ROOT_UID: i64 = 65532;

#[path = "common/packaging.rs"]
mod packaging;
use packaging::{allows, operator_rules, read, root};

fn examples() -> Vec<(String, String)> {
    let dir = root().join("deploy/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Every field written in `written` is in `parsed` with the same value:
/// the spec types accept unknown fields, so a typo would otherwise vanish.
fn assert_subset(path: &str, written: &Value, parsed: &Value) {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => {
            for (key, value) in w {
                let child = format!("{path}.{key}");
                let Some(other) = p.get(key) else {
                    panic!("{child} is not a field of the type (typo?)")
                };
                assert_subset(&child, value, other);
            }
        }
        (Value::Array(w), Value::Array(p)) => {
            assert_eq!(w.len(), p.len(), "{path}");
            for (i, (a, b)) in w.iter().zip(p).enumerate() {
                assert_subset(&format!("{path}[{i}]"), a, b);
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{path}");
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

fn load(file: &str, text: &str) -> ModelDeployment {
    let written: Value =
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
    assert_eq!(written["apiVersion"], "tractor.dev/v1alpha1", "{file}");
    assert_eq!(written["kind"], "ModelDeployment", "{file}");
    assert!(
        written["metadata"]["namespace"].is_null(),
        "{file}: examples apply to the current namespace"
    );
    let mut md: ModelDeployment = serde_saphyr::from_str(text)
        .unwrap_or_else(|e| panic!("{file}: not a ModelDeployment: {e}"));
    let parsed = serde_json::to_value(&md).unwrap();
    assert_subset(file, &written, &parsed);
    // As the API server hands it to the controller.
    md.metadata.namespace = Some(NAMESPACE.into());
    md.metadata.uid = Some(UID.into());
    md.metadata.generation = Some(1);
    md
}

fn operator_config() -> OperatorConfig {
    OperatorConfig {
        image: "ghcr.io/tractor-dev/tractor:0.1.0".into(),
        artifact_store: "s3://artifacts/tractor".into(),
        store_credentials: Some("tractor-store".into()),
        log_format: "json".into(),
        tracing: Default::default(),
        allowed_images: vec!["registry.example.com/team/".into()],
        allowed_jwks_urls: vec!["https://idp.example.com/".into()],
        operator_namespace: "tractor-system".into(),
        admin_token: tractor::controller::access::AdminToken::from_token("controller-token".into()),
    }
}

/// One rendered object: its kind, the version it belongs to, its JSON.
struct Rendered {
    kind: &'static str,
    version: Option<String>,
    json: Value,
}

/// Serializes, deserializes back into the same `k8s-openapi` type, and
/// checks nothing was lost: the object is what the type can carry.
fn roundtrip<K>(kind: &'static str, object: &K) -> Rendered
where
    K: Serialize + DeserializeOwned,
{
    let json = serde_json::to_value(object).unwrap();
    let text = serde_json::to_string(&json).unwrap();
    let back: K = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
    assert_eq!(serde_json::to_value(&back).unwrap(), json, "{kind} changed in a JSON round trip");
    assert_eq!(json["kind"], kind, "{text}");
    Rendered { kind, version: None, json }
}

/// Everything the controller applies for one plan: the list its `apply`
/// walks (`controller::desired`), each object through a JSON round trip of
/// its own type.
fn render(
    md: &ModelDeployment,
    spec: &ValidSpec,
    plan: &Plan,
    config: &OperatorConfig,
) -> Vec<Rendered> {
    desired::desired(md, spec, plan, config, "t0ken")
        .iter()
        .map(|d| {
            let mut r = match &d.object {
                Object::Deployment(o) => roundtrip("Deployment", o.as_ref()),
                Object::HorizontalPodAutoscaler(o) => {
                    roundtrip("HorizontalPodAutoscaler", o.as_ref())
                }
                Object::PodDisruptionBudget(o) => roundtrip("PodDisruptionBudget", o.as_ref()),
                Object::Service(o) => roundtrip("Service", o.as_ref()),
                Object::ConfigMap(o) => roundtrip("ConfigMap", o.as_ref()),
                Object::Secret(o) => roundtrip("Secret", o.as_ref()),
                Object::Job(o) => roundtrip("Job", o.as_ref()),
                Object::NetworkPolicy(o) => roundtrip("NetworkPolicy", o.as_ref()),
                Object::ServiceAccount(o) => roundtrip("ServiceAccount", o.as_ref()),
                Object::Role(o) => roundtrip("Role", o.as_ref()),
                Object::RoleBinding(o) => roundtrip("RoleBinding", o.as_ref()),
                Object::ModelVersion(o) => roundtrip("ModelVersion", o.as_ref()),
            };
            // The version an object belongs to, as the plan names it (the
            // label holds its sanitized form).
            let label = r.json["metadata"]["labels"][objects::VERSION_LABEL].as_str();
            r.version = label.map(|l| {
                plan.versions
                    .iter()
                    .map(|v| v.version.clone())
                    .chain(plan.job.iter().map(|j| j.version.clone()))
                    .chain(plan.register.iter().map(|m| m.version.clone()))
                    .find(|v| objects::object_name(&[v]) == l)
                    .unwrap_or_else(|| l.to_string())
            });
            r
        })
        .collect()
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && value.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

fn check_metadata(md: &ModelDeployment, r: &Rendered) -> ObjectMeta {
    let meta: ObjectMeta = serde_json::from_value(r.json["metadata"].clone()).unwrap();
    let name = meta.name.clone().expect("a name");
    let what = format!("{} {name}", r.kind);
    assert!(is_dns_label(&name), "{what}: not a DNS label of at most 63 characters");
    assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{what}");

    let owners = meta.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{what}: one owner reference");
    let owner = &owners[0];
    assert_eq!(owner.api_version, "tractor.dev/v1alpha1", "{what}");
    assert_eq!(owner.kind, "ModelDeployment", "{what}");
    assert_eq!(Some(owner.name.as_str()), md.metadata.name.as_deref(), "{what}");
    assert_eq!(owner.uid, UID, "{what}");
    assert_eq!(owner.controller, Some(true), "{what}");
    if owner.block_owner_deletion == Some(true) {
        // The OwnerReferencesPermissionEnforcement admission plugin then asks
        // for update on the owner's finalizers.
        let rules = operator_rules();
        assert!(
            allows(&rules, "tractor.dev", "modeldeployments/finalizers", "update"),
            "{what}: blockOwnerDeletion needs update on modeldeployments/finalizers"
        );
    }

    let labels = meta.labels.clone().unwrap_or_default();
    for (key, value) in &labels {
        assert!(is_label_value(value), "{what}: label {key}={value:?} is not a valid label value");
    }
    assert_eq!(labels.get(objects::MANAGED_BY).map(String::as_str), Some("tractor"), "{what}");
    assert_eq!(labels.get(objects::DEPLOYMENT_LABEL), md.metadata.name.as_ref(), "{what}");
    match &r.version {
        Some(v) => assert_eq!(
            labels.get(objects::VERSION_LABEL),
            Some(&objects::object_name(&[v])),
            "{what}"
        ),
        None => {
            assert!(!labels.contains_key(objects::VERSION_LABEL), "{what}: shared by every version")
        }
    }
    meta
}

fn check_container(what: &str, c: &Container, read_only_root: bool) {
    let what = format!("{what} container {}", c.name);
    assert!(c.image.as_deref().is_some_and(|i| !i.is_empty()), "{what}: an image");
    let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{what}: a security context"));
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
    assert_eq!(sc.run_as_non_root, Some(true), "{what}");
    assert_ne!(sc.privileged, Some(true), "{what}");
    let drop = sc.capabilities.as_ref().and_then(|caps| caps.drop.clone()).unwrap_or_default();
    assert!(drop.iter().any(|d| d == "ALL"), "{what}: drops ALL capabilities");
    assert!(
        sc.capabilities.as_ref().and_then(|caps| caps.add.as_ref()).is_none_or(Vec::is_empty),
        "{what}"
    );
    if read_only_root {
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
    }
    // Probes point at a declared port, by number or by name.
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe].into_iter().flatten() {
        let get = probe.http_get.as_ref().expect("HTTP probes");
        let declared = c.ports.iter().flatten().any(|p| match &get.port {
            IntOrString::Int(port) => p.container_port == *port,
            IntOrString::String(name) => p.name.as_ref() == Some(name),
        });
        assert!(declared, "{what}: probe on undeclared port {:?}", get.port);
    }
}

/// The pod runs under the restricted Pod Security Standard, and every
/// volume it mounts exists and names a ConfigMap rendered alongside.
fn check_pod(what: &str, pod: &PodSpec, read_only_root: bool, configmaps: &[String]) {
    let sc =
        pod.security_context.as_ref().unwrap_or_else(|| panic!("{what}: a pod security context"));
    assert_eq!(sc.run_as_non_root, Some(true), "{what}");
    assert_eq!(sc.run_as_user, Some(NON_ROOT_UID), "{what}: the image's nonroot user");
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{what}"
    );
    assert!(pod.host_network.is_none_or(|h| !h) && pod.host_pid.is_none_or(|h| !h), "{what}");
    assert!(!pod.containers.is_empty(), "{what}");
    let volumes = pod.volumes.clone().unwrap_or_default();
    for c in &pod.containers {
        check_container(what, c, read_only_root);
        for mount in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.iter().any(|v| v.name == mount.name),
                "{what}: mount of missing volume {}",
                mount.name
            );
        }
    }
    for v in &volumes {
        if let Some(cm) = &v.config_map {
            assert!(
                configmaps.contains(&cm.name),
                "{what}: volume {} names ConfigMap {} not rendered",
                v.name,
                cm.name
            );
        }
    }
}

/// Checks one plan's objects, each alone and against the others.
fn check_rendered(file: &str, md: &ModelDeployment, rendered: &[Rendered]) {
    let metas: Vec<ObjectMeta> = rendered.iter().map(|r| check_metadata(md, r)).collect();
    let names_of = |kind: &str| -> Vec<String> {
        rendered
            .iter()
            .zip(&metas)
            .filter(|(r, _)| r.kind == kind)
            .map(|(_, m)| m.name.clone().unwrap())
            .collect()
    };
    let mut configmaps = names_of("ConfigMap");
    // The JWKS ConfigMap is the user's, named by the spec.
    let jwks = md.spec.serving.auth.as_ref().and_then(|a| a.jwks.as_ref());
    configmaps.extend(jwks.and_then(|j| j.config_map_ref.as_ref()).map(|m| m.name.clone()));
    for kind in KINDS {
        let mut names = names_of(kind);
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "{file}: two {kind}s with one name");
    }
    let mut pod_labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut policies: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for (r, meta) in rendered.iter().zip(&metas) {
        let name = meta.name.clone().unwrap();
        let what = format!("{file}: {} {name}", r.kind);
        match r.kind {
            "Deployment" => {
                assert_eq!(r.json["apiVersion"], "apps/v1");
                let d: Deployment = serde_json::from_value(r.json.clone()).unwrap();
                let spec = d.spec.expect("a spec");
                let template_labels =
                    spec.template.metadata.and_then(|m| m.labels).unwrap_or_default();
                let selector = spec.selector.match_labels.unwrap_or_default();
                assert!(!selector.is_empty(), "{what}: a selector");
                for (k, v) in &selector {
                    assert_eq!(
                        template_labels.get(k),
                        Some(v),
                        "{what}: the selector must match the template"
                    );
                }
                check_pod(
                    &what,
                    spec.template.spec.as_ref().expect("a pod spec"),
                    true,
                    &configmaps,
                );
                if r.version.is_none() {
                    // The router reads the routes ConfigMap by name, as its own ServiceAccount.
                    let pod = spec.template.spec.as_ref().unwrap();
                    let account = pod.service_account_name.clone().unwrap_or_default();
                    assert!(
                        names_of("ServiceAccount").contains(&account),
                        "{what}: runs as ServiceAccount {account:?}, not rendered"
                    );
                    assert_ne!(
                        pod.automount_service_account_token,
                        Some(false),
                        "{what}: the router needs its token"
                    );
                    let args = pod.containers[0].args.clone().unwrap_or_default();
                    let routes = objects::routes_configmap_name(md);
                    assert!(args.contains(&routes), "{what}: --routes-configmap {routes}");
                    assert!(
                        configmaps.contains(&routes),
                        "{what}: the routes ConfigMap is rendered"
                    );
                }
                if r.version.is_some() {
                    check_serving_pod(&what, md, spec.template.spec.as_ref().unwrap());
                }
                pod_labels.insert(name, template_labels);
            }
            "Secret" => {
                assert_eq!(r.json["apiVersion"], "v1");
                let secret: Secret = serde_json::from_value(r.json.clone()).unwrap();
                let data = secret.string_data.unwrap_or_default();
                assert_eq!(data.get("token").map(String::as_str), Some("t0ken"), "{what}");
                let file = data.get("auth.yaml").expect("the serving pods' auth file");
                tractor::auth::parse_auth_file_text(file)
                    .unwrap_or_else(|e| panic!("{what}: auth.yaml: {e}"));
                assert!(!file.contains("t0ken"), "{what}: the auth file holds the digest only");
            }
            "NetworkPolicy" => {
                assert_eq!(r.json["apiVersion"], "networking.k8s.io/v1");
                let policy: NetworkPolicy = serde_json::from_value(r.json.clone()).unwrap();
                let spec = policy.spec.expect("a spec");
                assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]));
                let selected = spec.pod_selector.and_then(|s| s.match_labels).unwrap_or_default();
                assert!(
                    !selected.is_empty(),
                    "{what}: selects some pods, not all of the namespace"
                );
                assert!(spec.ingress.is_some_and(|rules| !rules.is_empty()), "{what}");
                policies.push((name.clone(), selected));
            }
            "PodDisruptionBudget" => {
                assert_eq!(r.json["apiVersion"], "policy/v1");
                let budget: PodDisruptionBudget = serde_json::from_value(r.json.clone()).unwrap();
                let spec = budget.spec.expect("a spec");
                assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)), "{what}");
                assert_eq!(spec.min_available, None, "{what}: maxUnavailable alone");
                let selected = spec.selector.and_then(|s| s.match_labels).unwrap_or_default();
                assert!(!selected.is_empty(), "{what}: selects some pods");
                policies.push((name.clone(), selected));
            }
            "HorizontalPodAutoscaler" => {
                assert_eq!(r.json["apiVersion"], "autoscaling/v2");
                let target = &r.json["spec"]["scaleTargetRef"];
                assert_eq!(target["kind"], "Deployment", "{what}");
                let scaled = target["name"].as_str().unwrap_or_default().to_string();
                assert!(names_of("Deployment").contains(&scaled), "{what}: scales {scaled:?}");
            }
            "Job" => {
                assert_eq!(r.json["apiVersion"], "batch/v1");
                let job: Job = serde_json::from_value(r.json.clone()).unwrap();
                let pod = job.spec.expect("a spec").template.spec.expect("a pod spec");
                assert!(
                    matches!(pod.restart_policy.as_deref(), Some("Never" | "OnFailure")),
                    "{what}: Jobs need restartPolicy Never or OnFailure"
                );
                // The optimizer writes scratch files, so its root stays writable.
                check_pod(&what, &pod, false, &configmaps);
                assert_eq!(
                    pod.containers[0].termination_message_policy.as_deref(),
                    Some("FallbackToLogsOnError"),
                    "{what}"
                );
            }
            "Service" => {
                assert_eq!(r.json["apiVersion"], "v1");
                let _: Service = serde_json::from_value(r.json.clone()).unwrap();
            }
            "ConfigMap" => {
                assert_eq!(r.json["apiVersion"], "v1");
                let cm: ConfigMap = serde_json::from_value(r.json.clone()).unwrap();
                for (key, value) in cm.data.unwrap_or_default() {
                    if key == access::ADMIN_AUTH_KEY {
                        tractor::auth::parse_auth_file_text(&value)
                            .unwrap_or_else(|e| panic!("{what}: {key} is not an auth file: {e}"));
                        continue;
                    }
                    let _: Value = serde_json::from_str(&value)
                        .unwrap_or_else(|e| panic!("{what}: {key} is not JSON: {e}"));
                }
            }
            "ModelVersion" => {
                assert_eq!(r.json["apiVersion"], "tractor.dev/v1alpha1");
            }
            "ServiceAccount" => {
                assert_eq!(r.json["apiVersion"], "v1");
            }
            "Role" => {
                assert_eq!(r.json["apiVersion"], "rbac.authorization.k8s.io/v1");
                let role: Role = serde_json::from_value(r.json.clone()).unwrap();
                let routes = objects::routes_configmap_name(md);
                let rules = role.rules.unwrap_or_default();
                assert!(
                    rules.iter().any(|rule| rule
                        .resources
                        .iter()
                        .flatten()
                        .any(|r| r == "configmaps")
                        && rule.verbs.iter().any(|v| v == "watch")
                        && rule
                            .resource_names
                            .as_ref()
                            .is_none_or(|names| names.contains(&routes))),
                    "{what}: the router may watch {routes}"
                );
                // Kubernetes refuses to create a Role granting more than its creator holds.
                let operator = operator_rules();
                for rule in &rules {
                    for group in rule.api_groups.iter().flatten() {
                        for resource in rule.resources.iter().flatten() {
                            for verb in &rule.verbs {
                                assert!(
                                    allows(&operator, group, resource, verb),
                                    "{what}: grants {verb} {resource}, which the operator lacks"
                                );
                            }
                        }
                    }
                }
            }
            "RoleBinding" => {
                assert_eq!(r.json["apiVersion"], "rbac.authorization.k8s.io/v1");
                let binding: RoleBinding = serde_json::from_value(r.json.clone()).unwrap();
                assert_eq!(binding.role_ref.kind, "Role", "{what}");
                assert!(
                    names_of("Role").contains(&binding.role_ref.name),
                    "{what}: binds a Role not rendered"
                );
                let subjects = binding.subjects.unwrap_or_default();
                assert!(
                    subjects.iter().all(|s| s.kind == "ServiceAccount"
                        && s.namespace.as_deref() == Some(NAMESPACE)
                        && names_of("ServiceAccount").contains(&s.name)),
                    "{what}: binds the rendered ServiceAccount in its namespace"
                );
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    for (name, selected) in &policies {
        let selects =
            |labels: &BTreeMap<_, _>| selected.iter().all(|(k, v)| labels.get(k) == Some(v));
        assert!(pod_labels.values().any(selects), "{file}: {name} selects no pods");
    }
    // Every Service reaches the pods of the Deployment of the same name.
    for (r, meta) in rendered.iter().zip(&metas) {
        if r.kind != "Service" {
            continue;
        }
        let name = meta.name.clone().unwrap();
        let svc: Service = serde_json::from_value(r.json.clone()).unwrap();
        let ports: Vec<i32> =
            svc.spec.iter().flat_map(|s| s.ports.iter().flatten()).map(|p| p.port).collect();
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        // The router's admin Service reaches the router's pods.
        let deployment = if name == access::router_admin_service_name(md) {
            assert_eq!(
                ports,
                vec![objects::ROUTE_ADMIN_PORT],
                "{file}: {name}: the admin port only"
            );
            objects::router_name(md)
        } else {
            assert!(
                !ports.contains(&objects::ROUTE_ADMIN_PORT),
                "{file}: Service {name}: the admin port is in no traffic Service"
            );
            name.clone()
        };
        let labels = pod_labels
            .get(&deployment)
            .unwrap_or_else(|| panic!("{file}: Service {name} has no Deployment"));
        assert!(!selector.is_empty(), "{file}: Service {name} selects nothing");
        for (k, v) in &selector {
            assert_eq!(labels.get(k), Some(v), "{file}: Service {name} does not select its pods");
        }
    }
}

/// Serving pods mount no ServiceAccount token unless the spec asks, and no
/// Secret but the `auth.yaml` key of their router's token Secret and, with
/// `backendTls`, that Secret's certificate and key (never its CA).
fn check_serving_pod(what: &str, md: &ModelDeployment, pod: &PodSpec) {
    let asked = md.spec.serving.automount_service_account_token.unwrap_or(false);
    assert_eq!(pod.automount_service_account_token, Some(asked), "{what}: automounted token");
    let backend_tls = tractor::crd::access::backend_tls(md).map(|t| t.secret_ref.name.clone());
    for volume in pod.volumes.iter().flatten() {
        let Some(secret) = &volume.secret else { continue };
        let keys: Vec<&str> = secret.items.iter().flatten().map(|i| i.key.as_str()).collect();
        if secret.secret_name.is_some() && secret.secret_name == backend_tls {
            assert_eq!(keys, vec!["tls.crt", "tls.key"], "{what}: the pair, never the CA");
            continue;
        }
        assert_eq!(secret.secret_name, Some(access::token_secret_name(md)), "{what}");
        assert_eq!(keys, vec![access::SERVE_AUTH_KEY], "{what}: the digest, never the token");
    }
    let env = pod.containers[0].env.iter().flatten();
    assert!(env.map(|e| &e.name).any(|n| n == "TRACTOR_AUTH_FILE"), "{what}: checks tokens");
}

/// Every kind the controller may render, with the API group and resource
/// the operator's ClusterRole must cover, and the verbs it uses on them.
const KINDS: [&str; 12] = [
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Service",
    "Job",
    "ModelVersion",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Secret",
    "NetworkPolicy",
];

fn resource_of(kind: &str) -> (&'static str, &'static str, &'static [&'static str]) {
    // Server-side apply is a patch, which needs create when the object is
    // absent; owned kinds are watched (list, watch), removed versions deleted.
    const OWNED: &[&str] = &["list", "watch", "create", "patch", "delete"];
    // Applied, never read or deleted: they go with their owner.
    const APPLIED: &[&str] = &["create", "patch"];
    match kind {
        // get: the router's Role grants it, and a Role grants only what its creator holds.
        "ConfigMap" => ("", "configmaps", &["get", "list", "watch", "create", "patch", "delete"]),
        "Deployment" => ("apps", "deployments", OWNED),
        "Service" => ("", "services", OWNED),
        // get: observe reads the Job of the version being optimized.
        "Job" => ("batch", "jobs", &["get", "list", "watch", "create", "patch", "delete"]),
        "ModelVersion" => ("tractor.dev", "modelversions", &["list", "create"]),
        "ServiceAccount" => ("", "serviceaccounts", APPLIED),
        "Role" => ("rbac.authorization.k8s.io", "roles", APPLIED),
        "RoleBinding" => ("rbac.authorization.k8s.io", "rolebindings", APPLIED),
        // Created once and never read: the operator cannot read Secrets.
        "Secret" => ("", "secrets", &["create"]),
        "NetworkPolicy" => ("networking.k8s.io", "networkpolicies", APPLIED),
        // Deleted when its version stops serving; found through an
        // annotation on the Deployment, so never listed.
        "HorizontalPodAutoscaler" => {
            ("autoscaling", "horizontalpodautoscalers", &["create", "patch", "delete"])
        }
        // The same for a version's budget; the router's is deleted when
        // `spec.router.replicas` goes to 1.
        "PodDisruptionBudget" => ("policy", "poddisruptionbudgets", &["create", "patch", "delete"]),
        other => panic!("no RBAC mapping for {other}"),
    }
}

#[test]
fn the_operator_may_do_what_the_controller_does() {
    let rules = operator_rules();
    let mut needed: Vec<(&str, &str, &str)> = Vec::new();
    for kind in KINDS {
        let (group, resource, verbs) = resource_of(kind);
        needed.extend(verbs.iter().map(|v| (group, resource, *v)));
    }
    needed.extend([
        ("tractor.dev", "modeldeployments", "list"),
        ("tractor.dev", "modeldeployments", "watch"),
        // Removes the promote/abort annotations it acted on.
        ("tractor.dev", "modeldeployments", "patch"),
        ("tractor.dev", "modeldeployments/status", "patch"),
        // The optimization Job's pod carries its result in the termination message.
        ("", "pods", "list"),
        ("events.k8s.io", "events", "create"),
        // kube's Recorder counts a repeated Event in a series, by a patch.
        ("events.k8s.io", "events", "patch"),
    ]);
    for &(group, resource, verb) in &needed {
        assert!(
            allows(&rules, group, resource, verb),
            "the operator's ClusterRole lacks {verb} on {group}/{resource}"
        );
    }
    // And nothing it does not need: every verb of every rule is one the
    // controller uses; no wildcards, no escalate/bind.
    for rule in &rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(
                        needed.contains(&(group.as_str(), resource.as_str(), verb.as_str())),
                        "the operator's ClusterRole grants {verb} on {group}/{resource}, which the controller never uses"
                    );
                }
            }
        }
        for resource in rule.resources.iter().flatten() {
            assert!(resource != "*", "the operator needs no {resource}");
        }
        for verb in &rule.verbs {
            assert!(
                !matches!(verb.as_str(), "*" | "escalate" | "bind" | "impersonate"),
                "the operator needs no {verb}"
            );
        }
    }
}

fn now(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// Drives the planner the way the controller would until the target
/// version serves (optimization job, then its result, then ready pods),
/// checking every plan's objects on the way. Returns the kinds it rendered.
fn drive(file: &str, md: &ModelDeployment, observed: &mut Observed, t0: i64) -> Vec<&'static str> {
    let spec = tractor::crd::validate(&md.spec).unwrap_or_else(|e| panic!("{file}: {e}"));
    let config = operator_config();
    let mut kinds = Vec::new();
    for round in 0..12 {
        let plan = tractor::plan::plan(&spec, observed, now(t0 + round * 5));
        let rendered = render(md, &spec, &plan, &config);
        check_rendered(file, md, &rendered);
        kinds.extend(rendered.iter().map(|r| r.kind));
        observed.status = plan.status.clone();
        observed.generation = md.metadata.generation;
        if let Some(job) = &plan.job {
            observed.job = Some(JobState::Succeeded {
                artifact: Artifact {
                    uri: objects::artifact_uri(md, &config, &job.version),
                    sha256: Some("b".repeat(64)),
                },
                size_bytes: Some(1024),
                metrics: Default::default(),
            });
        } else {
            observed.job = None;
        }
        if let Some(registered) = &plan.register {
            observed.registered.push(tractor::plan::Registered {
                version: registered.version.clone(),
                artifact: Artifact {
                    uri: registered.artifact.uri.clone(),
                    sha256: Some(registered.artifact.sha256.clone()),
                },
                parent: registered.parent.clone(),
                recipe: registered.recipe.clone(),
            });
        }
        for desired in &plan.versions {
            observed.ready.insert(desired.version.clone(), desired.replicas);
        }
        let serving =
            plan.status.stable.as_ref().is_some_and(|s| s.version == spec.version && s.serving());
        if serving && plan.status.canary.is_none() && !plan.weights.is_empty() {
            return kinds;
        }
        let canary_serving =
            plan.status.canary.as_ref().is_some_and(|c| c.version == spec.version && c.weight > 0);
        if canary_serving && plan.status.stable.as_ref().is_some_and(|s| s.version != spec.version)
        {
            return kinds;
        }
    }
    panic!("{file}: version {} never took traffic: {:?}", spec.version, observed.status)
}

#[test]
fn examples_are_valid_and_render_valid_objects() {
    let examples = examples();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in ["plain.yaml", "optimized.yaml", "canary.yaml", "secured.yaml"] {
        assert!(names.contains(&wanted), "deploy/examples/{wanted} is missing: {names:?}");
    }
    for (file, text) in &examples {
        let md = load(file, text);
        let spec = tractor::crd::validate(&md.spec).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Some(recipe) = &spec.optimize {
            // What `tractor optimize` checks before it starts.
            recipe.check().unwrap_or_else(|e| panic!("{file}: spec.optimize: {e}"));
        }
        let mut observed = Observed::default();
        let kinds = drive(file, &md, &mut observed, 0);
        for kind in ["Deployment", "Service", "ConfigMap", "NetworkPolicy", "Secret"] {
            assert!(kinds.contains(&kind), "{file}: no {kind} rendered");
        }
        if spec.optimize.is_some() {
            assert!(
                kinds.contains(&"Job") && kinds.contains(&"ModelVersion"),
                "{file}: optimized through a Job"
            );
        }
        if !spec.rollout.steps.is_empty() {
            // A new version on top of the stable one: the canary's objects too.
            let mut next = md.clone();
            let version: u64 =
                md.spec.model.version.parse().expect("a numeric version in the canary example");
            next.spec.model.version = (version + 1).to_string();
            next.spec.model.source.uri = md
                .spec
                .model
                .source
                .uri
                .replace(&format!("v{version}"), &format!("v{}", version + 1));
            next.spec.model.source.sha256 = None;
            next.metadata.generation = Some(2);
            drive(file, &next, &mut observed, 10_000);
            let canary = observed.status.canary.clone().expect("a canary");
            assert_eq!(
                canary.weight, spec.rollout.steps[0].weight,
                "{file}: the first step's weight"
            );
        }
        println!("{file}: valid; rendered {} objects", kinds.len());
    }
}

#[test]
fn the_operator_pod_is_restricted_and_runs_as_the_image_user() {
    let text = read(&root().join("deploy/deployment.yaml"));
    let deployment: Deployment =
        serde_saphyr::from_str(&text).expect("deploy/deployment.yaml is a Deployment");
    let pod = deployment.spec.expect("a spec").template.spec.expect("a pod spec");
    check_pod("deploy/deployment.yaml", &pod, true, &[]);
    let container = &pod.containers[0];
    assert_eq!(container.args.as_deref(), Some(&["controller".to_string()][..]));
    let env: BTreeMap<String, _> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), (e.value.clone(), e.value_from.clone())))
        .collect();
    for name in ["TRACTOR_ARTIFACT_STORE", "TRACTOR_LEADER_ELECTION", "TRACTOR_LOG_FORMAT"] {
        assert!(env.get(name).is_some_and(|(v, _)| v.is_some()), "{name} is set");
    }
    // The image of the pods it creates is read from this pod, container
    // `controller`: a second copy here is one an image override misses.
    assert!(!env.contains_key("TRACTOR_IMAGE"), "TRACTOR_IMAGE would shadow the pod's own image");
    assert_eq!(container.name, "controller");
    let own_pod = read(&root().join("deploy/rbac.yaml"))
        .split("\n---\n")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|doc| doc["kind"] == "Role")
        .filter_map(|doc| serde_json::from_value::<Role>(doc).ok())
        .flat_map(|role| role.rules.unwrap_or_default())
        .collect::<Vec<_>>();
    assert!(allows(&own_pod, "", "pods", "get"), "get on pods in the operator's namespace");
    for (name, field) in [("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name")] {
        let from = env.get(name).and_then(|(_, from)| from.clone()).and_then(|f| f.field_ref);
        assert_eq!(
            from.map(|f| f.field_path).as_deref(),
            Some(field),
            "{name} from the downward API"
        );
    }
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|g| g.path.clone())
    };
    assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"));
    // The image's user is the one every pod runs as.
    let dockerfile = read(&root().join("Dockerfile"));
    assert!(
        dockerfile.contains(&format!("USER {NON_ROOT_UID}:{NON_ROOT_UID}")),
        "Dockerfile runs as {NON_ROOT_UID}"
    );
    assert!(
        dockerfile.contains("cargo build --release --locked"),
        "Dockerfile builds from Cargo.lock"
    );
}
