//! Who may reach what a `ModelDeployment` runs, as Kubernetes objects:
//! the router's per-deployment token to its versions, the controller's
//! token to the router's admin port, the mounts of `spec.serving.auth`,
//! the NetworkPolicies, and the image allow-list. Pure functions, like
//! [`super::objects`], which calls the mount helpers from its pod builders.
//!
//! # Invariants
//! - The serving pods accept only the router's token; they never hold the
//!   token itself, only its sha256 (the `auth.yaml` key of the Secret).
//! - The operator creates that Secret and never reads Secrets: it needs
//!   `create` on them and nothing else.
//! - The router's admin port is in no Service but `<name>-admin`, and its
//!   NetworkPolicy lets only the controller's pods reach it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, KeyToPath, Secret, SecretVolumeSource, Service, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::objects::{
    self, COMPONENT, DEPLOYMENT_LABEL, MANAGED_BY, OperatorConfig, ROUTE_ADMIN_PORT, object_name,
};
use crate::contract::args::{self, ChildArgs, JwtFiles, RouteAccess, ServeAccess};
use crate::crd::access::{
    DEFAULT_AUTH_KEY, DEFAULT_JWKS_KEY, TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY,
};
use crate::crd::{self, ModelDeployment, SpecError};

/// Keys of the per-deployment token Secret.
pub const TOKEN_KEY: &str = "token";
pub const SERVE_AUTH_KEY: &str = "auth.yaml";
/// Key of the router's admin auth file (a ConfigMap: it holds a digest only).
pub const ADMIN_AUTH_KEY: &str = "admin.yaml";

const SERVE_AUTH_MOUNT: &str = "/etc/tractor/auth/serve";
const CALLERS_MOUNT: &str = "/etc/tractor/auth/callers";
const ADMIN_MOUNT: &str = "/etc/tractor/auth/admin";
const BACKEND_TOKEN_MOUNT: &str = "/etc/tractor/auth/backend";
const JWKS_MOUNT: &str = "/etc/tractor/auth/jwks";
const TLS_MOUNT: &str = "/etc/tractor/tls";
const BACKEND_TLS_MOUNT: &str = "/etc/tractor/backend-tls";

/// Scopes of the router's token at its versions: what it forwards, and
/// the metrics a person may read through it; `raw` because the router
/// itself says which of its callers get limited answers
/// (`x-tractor-limited-output`).
const ROUTER_SCOPES: &str = "[infer, metadata, metrics, raw]";
/// Scopes of the controller's token at a router: statistics and metrics.
const CONTROLLER_SCOPES: &str = "[admin, metrics]";

/// The controller's token to the routers' admin ports. Made at start-up,
/// never stored: the routers hold only its digest (in `<name>-router-auth`),
/// rewritten by the first reconcile after a restart.
#[derive(Clone)]
pub struct AdminToken {
    token: String,
    sha256: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken").field("sha256", &self.sha256).finish_non_exhaustive()
    }
}

impl AdminToken {
    /// A fresh random token.
    ///
    /// # Errors
    /// The operating system has no randomness to give.
    pub fn generate() -> Result<AdminToken, NoRandomness> {
        new_token().map(AdminToken::from_token)
    }

    /// A given token (tests, and a person debugging a router by hand).
    pub fn from_token(token: String) -> AdminToken {
        let sha256 = crate::store::sha256_hex(token.as_bytes());
        AdminToken { token, sha256 }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// The operating system gave no random bytes (getrandom's error, as text:
/// it implements no `std::error::Error` without a feature we do not build).
#[derive(Debug, thiserror::Error)]
#[error("the operating system gave no random bytes: {0}")]
pub struct NoRandomness(String);

/// 32 random bytes as hex: 256 bits, as `tractor up` makes its tokens.
///
/// # Errors
/// The operating system has no randomness to give.
pub fn new_token() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// An auth file of one token, by its digest.
fn auth_file(name: &str, sha256: &str, scopes: &str) -> String {
    format!("tokens:\n  - name: {name}\n    sha256: {sha256}\n    scopes: {scopes}\n")
}

pub fn token_secret_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any(), "backend-token"])
}

/// The router's token to its versions, created once (the controller
/// creates it, and a second create is refused as existing): `token` for
/// the router, `auth.yaml` accepting only that token for the versions.
pub fn token_secret(md: &ModelDeployment, token: &str) -> Secret {
    let digest = crate::store::sha256_hex(token.as_bytes());
    Secret {
        metadata: objects::meta(md, token_secret_name(md), objects::labels(md, "route", None)),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (TOKEN_KEY.to_string(), token.to_string()),
            (SERVE_AUTH_KEY.to_string(), auth_file("tractor-router", &digest, ROUTER_SCOPES)),
        ])),
        ..Secret::default()
    }
}

pub fn router_auth_configmap_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any(), "router-auth"])
}

/// Whether the router checks callers, and so needs the controller's token
/// for its admin port too (one set of auth files serves both listeners).
pub fn router_checks_callers(md: &ModelDeployment) -> bool {
    md.spec.serving.auth.as_ref().is_some_and(|a| a.checks_callers())
}

/// The auth file that lets the controller read and reset the router's
/// statistics; `None` when the router checks no callers.
pub fn router_auth_configmap(md: &ModelDeployment, config: &OperatorConfig) -> Option<ConfigMap> {
    router_checks_callers(md).then(|| ConfigMap {
        metadata: objects::meta(
            md,
            router_auth_configmap_name(md),
            objects::labels(md, "route", None),
        ),
        data: Some(BTreeMap::from([(
            ADMIN_AUTH_KEY.to_string(),
            auth_file("tractor-controller", config.admin_token.sha256(), CONTROLLER_SCOPES),
        )])),
        ..ConfigMap::default()
    })
}

fn secret_volume(name: &str, secret: &str, keys: &[&str]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: (!keys.is_empty()).then(|| key_paths(keys)),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn configmap_volume(name: &str, configmap: &str, keys: &[&str]) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: configmap.into(),
            items: Some(key_paths(keys)),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Only the named keys, each under its own name: a Secret holding more
/// than the file does not put the rest in the pod.
fn key_paths(keys: &[&str]) -> Vec<KeyToPath> {
    keys.iter().map(|k| KeyToPath { key: k.to_string(), path: k.to_string(), mode: None }).collect()
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Volumes of a pod and mounts of its one container, gathered by the
/// helpers below.
#[derive(Debug, Default)]
pub struct Mounts {
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}

impl Mounts {
    fn add(&mut self, volume: Volume, path: &str) {
        self.mounts.push(mount(&volume.name, path));
        self.volumes.push(volume);
    }
}

/// A serving pod accepts only its router's token: the `auth.yaml` key of
/// the token Secret, mounted alone; and serves TLS with the certificate
/// and key of `backendTls` (not its CA: that is the router's).
pub fn serve_access(md: &ModelDeployment, child: &mut ChildArgs, mounts: &mut Mounts) {
    mounts.add(
        secret_volume("serve-auth", &token_secret_name(md), &[SERVE_AUTH_KEY]),
        SERVE_AUTH_MOUNT,
    );
    let tls = crd::access::backend_tls(md).map(|tls| {
        mounts.add(
            secret_volume("backend-tls", &tls.secret_ref.name, &[TLS_CERT_KEY, TLS_KEY_KEY]),
            BACKEND_TLS_MOUNT,
        );
        (
            format!("{BACKEND_TLS_MOUNT}/{TLS_CERT_KEY}"),
            format!("{BACKEND_TLS_MOUNT}/{TLS_KEY_KEY}"),
        )
    });
    args::serve_access(
        child,
        &ServeAccess { auth_files: vec![format!("{SERVE_AUTH_MOUNT}/{SERVE_AUTH_KEY}")], tls },
    );
}

/// The router gets its token to the versions, and what
/// `spec.serving.auth` names: callers' tokens, the JWKS, the certificate.
pub fn route_access(md: &ModelDeployment, child: &mut ChildArgs, mounts: &mut Mounts) {
    let mut access = RouteAccess {
        backend_token_file: Some(format!("{BACKEND_TOKEN_MOUNT}/{TOKEN_KEY}")),
        ..RouteAccess::default()
    };
    mounts.add(
        secret_volume("backend-token", &token_secret_name(md), &[TOKEN_KEY]),
        BACKEND_TOKEN_MOUNT,
    );
    if let Some(auth) = &md.spec.serving.auth {
        if let Some(callers) = &auth.token_secret_ref {
            let key = callers.key_or(DEFAULT_AUTH_KEY);
            mounts.add(secret_volume("callers", &callers.name, &[key]), CALLERS_MOUNT);
            access.auth_files.push(format!("{CALLERS_MOUNT}/{key}"));
        }
        if let Some(jwks) = &auth.jwks {
            let source = match (&jwks.config_map_ref, &jwks.url) {
                (Some(map), _) => {
                    let key = map.key_or(DEFAULT_JWKS_KEY);
                    mounts.add(configmap_volume("jwks", &map.name, &[key]), JWKS_MOUNT);
                    format!("{JWKS_MOUNT}/{key}")
                }
                // Checked against --allowed-jwks-urls before any object is made.
                (None, Some(url)) => url.clone(),
                (None, None) => String::new(),
            };
            access.jwt = Some(JwtFiles {
                jwks: source,
                issuer: jwks.issuer.clone(),
                audience: jwks.audience.clone(),
                rps: jwks.rps,
                burst: jwks.burst,
                quota: jwks.quota,
            });
        }
        if let Some(tls) = &auth.tls {
            mounts.add(
                secret_volume("tls", &tls.secret_ref.name, &[TLS_CERT_KEY, TLS_KEY_KEY]),
                TLS_MOUNT,
            );
            access.tls =
                Some((format!("{TLS_MOUNT}/{TLS_CERT_KEY}"), format!("{TLS_MOUNT}/{TLS_KEY_KEY}")));
        }
        if let Some(tls) = &auth.backend_tls {
            mounts.add(
                secret_volume("backend-ca", &tls.secret_ref.name, &[TLS_CA_KEY]),
                BACKEND_TLS_MOUNT,
            );
            access.backend_ca = Some(format!("{BACKEND_TLS_MOUNT}/{TLS_CA_KEY}"));
        }
    }
    if router_checks_callers(md) {
        mounts.add(
            configmap_volume("admin-auth", &router_auth_configmap_name(md), &[ADMIN_AUTH_KEY]),
            ADMIN_MOUNT,
        );
        access.auth_files.push(format!("{ADMIN_MOUNT}/{ADMIN_AUTH_KEY}"));
    }
    args::route_access(child, &access);
}

pub fn router_admin_service_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any(), "admin"])
}

/// The router's admin port, for the controller: apart from the traffic
/// Service, so exposing that one (an Ingress, a LoadBalancer) never
/// exposes statistics and their reset.
pub fn router_admin_service(md: &ModelDeployment) -> Service {
    let mut service = objects::service(
        md,
        router_admin_service_name(md),
        objects::labels(md, "route", None),
        vec![objects::port("admin", ROUTE_ADMIN_PORT)],
    );
    // The selector stays the router's pods; the labels say what this is.
    service.metadata.labels.get_or_insert_default().insert(COMPONENT.into(), "route-admin".into());
    service
}

/// Labels that select one deployment's pods of one component.
fn pods_of(md: &ModelDeployment, component: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (MANAGED_BY.to_string(), "tractor".to_string()),
            (DEPLOYMENT_LABEL.to_string(), object_name(&[&md.name_any()])),
            (COMPONENT.to_string(), component.to_string()),
        ])),
        match_expressions: None,
    }
}

/// The operator's own pods, as the chart labels them, in its namespace.
fn controller_peer(config: &OperatorConfig) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                config.operator_namespace.clone(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "tractor".to_string()),
                (COMPONENT.to_string(), "controller".to_string()),
            ])),
            match_expressions: None,
        }),
        ip_block: None,
    }
}

fn network_policy(
    md: &ModelDeployment,
    name: String,
    component: &str,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: objects::meta(md, name, objects::labels(md, component, None)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods_of(md, component)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

pub fn serve_network_policy_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any(), "serve"])
}

/// Serving pods take traffic from their own router and the operator only,
/// on any of their ports.
pub fn serve_network_policy(md: &ModelDeployment, config: &OperatorConfig) -> NetworkPolicy {
    let router =
        NetworkPolicyPeer { pod_selector: Some(pods_of(md, "route")), ..Default::default() };
    network_policy(
        md,
        serve_network_policy_name(md),
        "serve",
        vec![NetworkPolicyIngressRule {
            from: Some(vec![router, controller_peer(config)]),
            ports: None,
        }],
    )
}

pub fn router_network_policy_name(md: &ModelDeployment) -> String {
    object_name(&[&md.name_any(), "router"])
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// The router's traffic ports take anyone (its auth decides); its admin
/// port takes the operator only. The traffic ports are read off the
/// router's container, so a port added there is open here too.
pub fn router_network_policy(md: &ModelDeployment, config: &OperatorConfig) -> NetworkPolicy {
    let traffic: Vec<NetworkPolicyPort> = objects::router_ports()
        .into_iter()
        .filter(|p| p.container_port != ROUTE_ADMIN_PORT)
        .map(|p| tcp(p.container_port))
        .collect();
    network_policy(
        md,
        router_network_policy_name(md),
        "route",
        vec![
            NetworkPolicyIngressRule { from: None, ports: Some(traffic) },
            NetworkPolicyIngressRule {
                from: Some(vec![controller_peer(config)]),
                ports: Some(vec![tcp(ROUTE_ADMIN_PORT)]),
            },
        ],
    )
}

/// `spec.serving.image` must start with one of the operator's allowed
/// prefixes: the serving pods receive the store credentials, so the image
/// is who gets them. The operator's own image is always allowed.
///
/// # Errors
/// The image is not under any allowed prefix (or none is configured).
pub fn check_image(md: &ModelDeployment, config: &OperatorConfig) -> Result<(), SpecError> {
    let Some(image) = md.spec.serving.image.as_deref() else { return Ok(()) };
    if image == config.image || config.allowed_images.iter().any(|p| image.starts_with(p.as_str()))
    {
        return Ok(());
    }
    let allowed = if config.allowed_images.is_empty() {
        "the operator allows no other image than its own (--allowed-images is empty)".to_string()
    } else {
        format!("allowed prefixes are {}", config.allowed_images.join(", "))
    };
    Err(SpecError {
        field: "spec.serving.image".into(),
        reason: format!("{image:?} is not an allowed image: {allowed}"),
    })
}

/// `spec.serving.auth.jwks.url` must start with one of the operator's
/// allowed prefixes: the router fetches it from inside the cluster, so
/// without the operator's leave a spec could point it anywhere.
///
/// # Errors
/// The URL is not under any allowed prefix (or none is configured).
pub fn check_jwks_url(md: &ModelDeployment, config: &OperatorConfig) -> Result<(), SpecError> {
    let url =
        md.spec.serving.auth.as_ref().and_then(|a| a.jwks.as_ref()).and_then(|j| j.url.as_deref());
    let Some(url) = url else { return Ok(()) };
    if config.allowed_jwks_urls.iter().any(|p| url.starts_with(p.as_str())) {
        return Ok(());
    }
    let allowed = if config.allowed_jwks_urls.is_empty() {
        "the operator allows no JWKS URL (--allowed-jwks-urls is empty); use configMapRef"
            .to_string()
    } else {
        format!("allowed prefixes are {}", config.allowed_jwks_urls.join(", "))
    };
    Err(SpecError {
        field: "spec.serving.auth.jwks.url".into(),
        reason: format!("{url:?} is not an allowed JWKS URL: {allowed}"),
    })
}

/// A prefix of the operator's `--allowed-jwks-urls` or `--allowed-images`
/// that would allow more than it says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "JWKS URL prefix {0:?} must be https://HOST/ and a path (e.g. https://idp.example.com/)"
    )]
    Jwks(String),
    #[error("image prefix {0:?} must end with '/', ':' or '@' (e.g. {0}/)")]
    Image(String),
}

/// Checks a list of JWKS URL prefixes as the operator's flag gives it:
/// https://, with a host and a path that starts at `/`, so that
/// `https://idp.example.com` cannot also allow `https://idp.example.com.evil/`.
///
/// # Errors
/// The first prefix that is not of that form.
pub fn check_jwks_prefixes(prefixes: &[String]) -> Result<(), PrefixError> {
    for prefix in prefixes {
        let rest = prefix.strip_prefix("https://").unwrap_or_default();
        if !rest.contains('/') || rest.starts_with('/') {
            return Err(PrefixError::Jwks(prefix.clone()));
        }
    }
    Ok(())
}

/// Checks a list of image prefixes as the operator's flag gives it: a
/// prefix must end at a boundary (`/`, `:` or `@`), or `registry.io/team`
/// would also allow `registry.io/team-evil/...`.
///
/// # Errors
/// The first prefix that does not end at a boundary.
pub fn check_image_prefixes(prefixes: &[String]) -> Result<(), PrefixError> {
    for prefix in prefixes {
        if !prefix.ends_with(['/', ':', '@']) {
            return Err(PrefixError::Image(prefix.clone()));
        }
    }
    Ok(())
}
