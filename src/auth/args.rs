//! The access-control flags `serve` and `route` share, flattened into each.

use std::path::PathBuf;

use clap::Args;

use super::{AuthConfig, JwksSource, JwtConfig};

#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// Bearer tokens with their scopes, rates and quotas (YAML; see
    /// docs/security.md), re-read when it changes. Repeat (or separate by
    /// commas) for several files; their tokens add up.
    #[arg(long = "auth-file", env = "TRACTOR_AUTH_FILE", value_delimiter = ',')]
    pub auth_files: Vec<PathBuf>,
    /// The RS256/ES256 keys that sign accepted JWTs: a JWKS file, re-read
    /// when it changes, or an identity provider's https:// `jwks_uri`,
    /// fetched at start and every 5 minutes (sooner for an unknown key id).
    #[arg(long, env = "TRACTOR_JWKS", requires_all = ["jwt_issuer", "jwt_audience"])]
    pub jwks: Option<JwksSource>,
    /// CA bundle (PEM) trusted for an https:// --jwks besides the system's roots.
    #[arg(long, env = "TRACTOR_JWKS_CA", requires = "jwks")]
    pub jwks_ca: Option<PathBuf>,
    /// How often an https:// --jwks is fetched again ("5m", "1h"); a token
    /// naming an unknown key asks sooner, at most every 30 s.
    #[arg(long, env = "TRACTOR_JWKS_REFRESH", requires = "jwks", value_parser = humantime::parse_duration)]
    pub jwks_refresh: Option<std::time::Duration>,
    /// The `iss` a JWT must carry.
    #[arg(long, env = "TRACTOR_JWT_ISSUER", requires = "jwks")]
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry.
    #[arg(long, env = "TRACTOR_JWT_AUDIENCE", requires = "jwks")]
    pub jwt_audience: Option<String>,
    /// Requests a second each JWT subject may send (`rps` of an auth file).
    #[arg(long, env = "TRACTOR_JWT_RPS", requires = "jwks",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub jwt_rps: Option<u32>,
    /// Requests a JWT subject may send at once (default: --jwt-rps).
    #[arg(long, env = "TRACTOR_JWT_BURST", requires = "jwt_rps",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub jwt_burst: Option<u32>,
    /// Requests each JWT subject may send per UTC day.
    #[arg(long, env = "TRACTOR_JWT_QUOTA", requires = "jwks",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub jwt_quota: Option<u64>,
    /// Serve /metrics without a token even when access control is on.
    #[arg(long, env = "TRACTOR_METRICS_OPEN")]
    pub metrics_open: bool,
}

impl AuthArgs {
    /// The flags as a server's configuration; the router adds its backend token.
    pub fn config(&self) -> AuthConfig {
        let jwt = match (&self.jwks, &self.jwt_issuer, &self.jwt_audience) {
            (Some(jwks), Some(issuer), Some(audience)) => Some(JwtConfig {
                jwks: jwks.clone(),
                issuer: issuer.clone(),
                audience: audience.clone(),
            }),
            _ => None,
        };
        let rate = self.jwt_rps.map(|per_second| super::Rate {
            per_second,
            burst: self.jwt_burst.unwrap_or(per_second),
        });
        AuthConfig {
            auth_files: self.auth_files.clone(),
            jwt,
            metrics_open: self.metrics_open,
            backend_token_file: None,
            jwt_limits: super::JwtLimits { rate, quota: self.jwt_quota },
            jwks_ca: self.jwks_ca.clone(),
            jwks_refresh: self.jwks_refresh,
        }
    }
}
