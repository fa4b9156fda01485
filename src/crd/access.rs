//! `spec.serving.auth`: who may call a `ModelDeployment`'s router, with
//! what, over what. The controller mounts what these name into the router
//! (docs/security.md, "In the cluster"); the serving pods never see them,
//! they accept only the router's own per-deployment token.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Access control of the router's traffic port. Absent: open, as before;
/// the serving pods still take requests from their router only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingAuthSpec {
    /// A Secret holding an auth file (tokens, scopes, limits), passed to
    /// the router as `--auth-file` and re-read there when it changes; its
    /// key `auth.yaml` unless `key` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<KeyRef>,
    /// JWTs signed by the keys of a JWKS held in a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksSpec>,
    /// HTTPS on the router's traffic port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// HTTPS (and gRPC over TLS) from the router to its versions: the
    /// versions serve this Secret's `tls.crt` and `tls.key`, and the router
    /// verifies them against its `ca.crt`, as cert-manager writes them.
    /// The certificate must name every version's Service,
    /// `<name>-v<version>.<namespace>.svc`; `*.<namespace>.svc` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<TlsSpec>,
}

/// What callers without the `raw` scope may see of the model's outputs,
/// against extraction by querying (docs/security.md#output-limits).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputLimitsSpec {
    /// Classes answered of each floating output wider than this, as
    /// "score:index" strings (the classification extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub top_k: Option<u32>,
    /// Decimals kept of every score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 12))]
    pub digits: Option<u32>,
}

/// A key of a Secret or ConfigMap in the `ModelDeployment`'s namespace.
/// Each field that takes one names the key used when `key` is absent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the document (`tokenSecretRef`: default
    /// `auth.yaml`; `jwks.configMapRef`: default `jwks.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// Where the JWKS is and what a JWT must claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksSpec {
    /// A ConfigMap in the `ModelDeployment`'s namespace holding the JWKS
    /// (JSON), passed to the router as `--jwks` and re-read when it changes;
    /// its key `jwks.json` unless `key` says otherwise. One of
    /// `configMapRef` and `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// An identity provider's `jwks_uri` (https://), fetched by the router
    /// and refreshed every 5 minutes; only under a prefix of the
    /// operator's `--allowed-jwks-urls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 2048))]
    pub url: Option<String>,
    /// The `iss` every accepted JWT carries.
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// The `aud` every accepted JWT carries.
    #[schemars(length(min = 1))]
    pub audience: String,
    /// Requests a second each subject (`sub`) may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rps: Option<u32>,
    /// Requests a subject may send at once (default: `rps`); needs `rps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
    /// Requests each subject may send per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub quota: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`), as cert-manager
    /// writes it; rotated certificates are picked up without a restart.
    pub secret_ref: SecretRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Keys of a `kubernetes.io/tls` Secret, as cert-manager writes them.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
pub const TLS_CA_KEY: &str = "ca.crt";

/// The key of `tokenSecretRef` when none is given.
pub const DEFAULT_AUTH_KEY: &str = "auth.yaml";
/// The key of `jwks.configMapRef` when none is given.
pub const DEFAULT_JWKS_KEY: &str = "jwks.json";

impl KeyRef {
    /// The key given, or `default`, the one the referring field names.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

impl ServingAuthSpec {
    /// Whether the router checks callers: the only case in which its admin
    /// port needs the controller's token too.
    pub fn checks_callers(&self) -> bool {
        self.token_secret_ref.is_some() || self.jwks.is_some()
    }
}

/// The Secret the versions serve TLS with, when `spec.serving.auth.backendTls` asks.
pub fn backend_tls(md: &super::ModelDeployment) -> Option<&TlsSpec> {
    md.spec.serving.auth.as_ref().and_then(|a| a.backend_tls.as_ref())
}
