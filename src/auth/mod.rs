//! Access control of `tractor serve` and `tractor route`: bearer tokens from
//! watched auth files, JWTs verified against a watched JWKS, scopes per
//! endpoint, per-token rate limits and daily quotas, as one axum layer.
//!
//! # Expected flow
//! [`Auth::start`] reads every file once (a bad one stops the process with
//! the reason) and watches them; a later bad version is logged and the
//! last good one kept. [`protect`] wraps a server's routes: each request is
//! classed by [`access`] (open, or needing a [`Scope`]), its token checked,
//! its limits taken, and the [`Caller`] put in the request's extensions.
//! Without any auth file or JWKS, every request passes, as before this
//! module existed, and [`Auth::start`] says so once.

mod args;
mod file;
pub mod grpc;
mod jwks_url;
mod jwt;
mod layer;
mod limit;
mod metrics;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

pub use args::AuthArgs;
pub use file::{
    BadToken, EntryProblem, FileError, MAX_TOKEN_BYTES, Rate, TokenError, TokenSpec, digest,
    parse as parse_auth_file_text,
};
pub use jwks_url::JwksUrlError;
pub use jwt::{JwksError, JwksSource, JwksSourceError, JwtConfig, JwtRefusal};
pub use layer::{Access, Refusal, Surface, access, protect};
pub use limit::Exceeded;
pub use metrics::metrics_text;

use limit::TokenLimits;

/// What a caller may do. `raw` lifts the output limits of processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST` inference (V2 infer, V1 predict).
    Infer,
    /// `GET` server and model metadata, readiness of one model.
    Metadata,
    /// `/metrics`.
    Metrics,
    /// The router's `x-tractor-version` header.
    Pin,
    /// The router's admin API.
    Admin,
    /// Answers without the output limits (`--limit-top-k`, `--limit-digits`).
    Raw,
}

impl Scope {
    pub const ALL: [Scope; 6] =
        [Scope::Infer, Scope::Metadata, Scope::Metrics, Scope::Pin, Scope::Admin, Scope::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Infer => "infer",
            Scope::Metadata => "metadata",
            Scope::Metrics => "metrics",
            Scope::Pin => "pin",
            Scope::Admin => "admin",
            Scope::Raw => "raw",
        }
    }

    pub fn parse(word: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == word)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(Scope::ALL.iter().filter(|s| self.contains(**s)).map(|s| s.name()))
            .finish()
    }
}

/// Who made a request, once authenticated: in the request's extensions
/// for handlers that adapt to it ([`crate::serve::output_limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or `jwt:SUBJECT`; never the token.
    pub name: Arc<str>,
    pub scopes: Scopes,
}

/// What a server is told about access control.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Token files; their tokens add up (names unique across them).
    pub auth_files: Vec<PathBuf>,
    pub jwt: Option<JwtConfig>,
    /// `/metrics` without a token even when auth is on.
    pub metrics_open: bool,
    /// The router's own token to its backends, replacing the caller's.
    pub backend_token_file: Option<PathBuf>,
    /// Limits of each JWT caller (by `sub`), as an auth file's `rps`,
    /// `burst` and `quota` limit a token.
    pub jwt_limits: JwtLimits,
    /// CA bundle trusted for a JWKS URL besides the system's roots.
    pub jwks_ca: Option<PathBuf>,
    /// How often a JWKS URL is fetched again (`None`: [`jwks_url::REFRESH`]).
    pub jwks_refresh: Option<std::time::Duration>,
}

/// The `rps`/`burst` and daily `quota` every JWT subject gets on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwtLimits {
    pub rate: Option<Rate>,
    pub quota: Option<u64>,
}

/// Most JWT subjects whose limits are kept; past it the state is emptied,
/// like [`JWT_CACHE_ENTRIES`]: only the issuer can mint subjects, and one
/// that mints this many is trusted with more than a rate anyway.
const JWT_SUBJECTS: usize = 10_000;

impl AuthConfig {
    /// Whether callers are checked at all.
    pub fn checks_callers(&self) -> bool {
        !self.auth_files.is_empty() || self.jwt.is_some()
    }
}

/// Why access control could not start; the process stops with it.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("auth file {path}: {source}")]
    AuthFile {
        path: String,
        #[source]
        source: FileError,
    },
    #[error("the token name {name:?} is in both {first} and {second}; names must be unique")]
    DuplicateName { name: String, first: String, second: String },
    #[error("JWKS {path}: {source}")]
    Jwks {
        path: String,
        #[source]
        source: JwksError,
    },
    #[error("JWKS: {0}")]
    JwksFetch(#[source] JwksUrlError),
    #[error("backend token file {path}: the token {problem}")]
    BackendToken {
        path: String,
        #[source]
        problem: BadToken,
    },
    #[error("backend token file {path}: the token is not a header value: {source}")]
    BackendHeader {
        path: String,
        #[source]
        source: axum::http::header::InvalidHeaderValue,
    },
}

/// One token as requests are checked against it.
struct Token {
    spec: TokenSpec,
    limits: Option<Arc<TokenLimits>>,
}

struct AuthFileState {
    path: PathBuf,
    tokens: RwLock<Arc<Vec<Token>>>,
}

/// Most verified JWTs remembered; past it the memory is emptied (callers
/// reuse one token for many requests, so a full cache means churn anyway).
const JWT_CACHE_ENTRIES: usize = 4096;
/// A remembered verification is redone at least this often, and never
/// outlives the token's `exp`.
const JWT_CACHE_SECONDS: u64 = 60;

struct JwtState {
    config: JwtConfig,
    keys: RwLock<Arc<jwt::KeySet>>,
    /// Verified tokens by digest, with the time (s) they may be trusted
    /// until: an RS256 check costs tens of microseconds, measured as a
    /// quarter of the throughput of a small model at c=16 without this.
    verified: Mutex<HashMap<[u8; 32], (jwt::Verified, u64)>>,
    limits: JwtLimits,
    /// Limit state by caller name (`jwt:` and the subject).
    subjects: Mutex<HashMap<Arc<str>, Arc<TokenLimits>>>,
    /// Asks a JWKS URL's refresher for the keys again (a token named a
    /// key the set lacks); `None` for a file, which is watched.
    refetch: Option<Arc<tokio::sync::Notify>>,
}

impl JwtState {
    fn remembered(&self, digest: &[u8; 32], now: u64) -> Option<jwt::Verified> {
        let mut cache = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(digest) {
            Some((verified, until)) if now <= *until => Some(verified.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    fn remember(&self, digest: [u8; 32], verified: &jwt::Verified, now: u64) {
        let until = verified
            .expires_at
            .saturating_add(jwt::LEEWAY_SECONDS)
            .min(now.saturating_add(JWT_CACHE_SECONDS));
        let mut cache = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= JWT_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, (verified.clone(), until));
    }

    /// The limits of one subject, made on its first request; `None` when
    /// JWT callers have none.
    fn limits_of(&self, name: &Arc<str>) -> Option<Arc<TokenLimits>> {
        let JwtLimits { rate, quota } = self.limits;
        if rate.is_none() && quota.is_none() {
            return None;
        }
        let mut subjects = self.subjects.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = subjects.get(name) {
            return Some(existing.clone());
        }
        if subjects.len() >= JWT_SUBJECTS {
            subjects.clear();
        }
        let fresh = Arc::new(TokenLimits::new(rate, quota));
        subjects.insert(name.clone(), fresh.clone());
        Some(fresh)
    }

    fn forget_all(&self) {
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

struct Inner {
    files: Vec<AuthFileState>,
    /// Limit state by token name, carried over reloads while the limits
    /// stay the same.
    limits: Mutex<HashMap<Arc<str>, Arc<TokenLimits>>>,
    jwt: Option<JwtState>,
    checks_callers: bool,
    metrics_open: bool,
    /// The router's token file and the header it makes.
    backend_token: Option<(PathBuf, RwLock<HeaderValue>)>,
}

/// Access control of one server, shared by its handlers and watchers.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

fn read(path: &Path, max_bytes: u64) -> Result<Vec<u8>, AuthError> {
    watch::read_bounded(path, max_bytes)
        .map_err(|source| AuthError::Read { path: path.display().to_string(), source })
}

fn parse_auth_file(path: &Path, bytes: &[u8]) -> Result<Vec<TokenSpec>, AuthError> {
    let invalid = |source| AuthError::AuthFile { path: path.display().to_string(), source };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid(FileError::Parse("the file is not UTF-8".into())))?;
    file::parse(text).map_err(invalid)
}

fn backend_header(path: &Path, bytes: &[u8]) -> Result<HeaderValue, AuthError> {
    let path = || path.display().to_string();
    let token = bytes.trim_ascii();
    file::check_token(token)
        .map_err(|problem| AuthError::BackendToken { path: path(), problem })?;
    let mut value = HeaderValue::from_bytes(&[b"Bearer ", token].concat())
        .map_err(|source| AuthError::BackendHeader { path: path(), source })?;
    value.set_sensitive(true);
    Ok(value)
}

impl Auth {
    /// Reads the configured files and starts watching them. `None` when
    /// nothing is configured: every request passes, and this says so in
    /// the log once.
    ///
    /// Must run inside a tokio runtime (the watchers are tasks).
    ///
    /// # Errors
    /// A file that cannot be read or is not valid, a JWKS URL that cannot
    /// be fetched: the server should not start half-protected.
    pub async fn start(config: &AuthConfig) -> Result<Option<Auth>, AuthError> {
        if !config.checks_callers() {
            tracing::warn!(
                "access control is off: no --auth-file or --jwks, every endpoint is open to every caller"
            );
            if config.backend_token_file.is_none() {
                return Ok(None);
            }
        }
        let mut loaded = Vec::new();
        for path in &config.auth_files {
            let bytes = read(path, file::MAX_AUTH_FILE_BYTES)?;
            let specs = parse_auth_file(path, &bytes)?;
            loaded.push((path.clone(), bytes, specs));
        }
        for (i, (path, _, specs)) in loaded.iter().enumerate() {
            for (other, _, other_specs) in &loaded[..i] {
                if let Some(spec) =
                    specs.iter().find(|s| other_specs.iter().any(|o| o.name == s.name))
                {
                    return Err(AuthError::DuplicateName {
                        name: spec.name.to_string(),
                        first: other.display().to_string(),
                        second: path.display().to_string(),
                    });
                }
            }
        }
        let mut jwks_fetcher = None;
        let jwt = match &config.jwt {
            Some(jwt_config) => {
                let bytes = match &jwt_config.jwks {
                    JwksSource::File(path) => read(path, jwt::MAX_JWKS_BYTES)?,
                    JwksSource::Url(url) => {
                        let client = jwks_url::client(config.jwks_ca.as_deref())
                            .map_err(AuthError::JwksFetch)?;
                        let bytes =
                            jwks_url::fetch(&client, url).await.map_err(AuthError::JwksFetch)?;
                        let asked = Arc::new(tokio::sync::Notify::new());
                        jwks_fetcher = Some((client, url.clone(), asked));
                        bytes
                    }
                };
                let keys = jwt::parse_jwks(&bytes).map_err(|source| AuthError::Jwks {
                    path: jwt_config.jwks.to_string(),
                    source,
                })?;
                Some((
                    JwtState {
                        config: jwt_config.clone(),
                        keys: RwLock::new(Arc::new(keys)),
                        verified: Mutex::new(HashMap::new()),
                        limits: config.jwt_limits,
                        subjects: Mutex::new(HashMap::new()),
                        refetch: jwks_fetcher.as_ref().map(|(_, _, asked)| asked.clone()),
                    },
                    bytes,
                ))
            }
            None => None,
        };
        let backend = match &config.backend_token_file {
            Some(path) => {
                let bytes = read(path, file::MAX_TOKEN_BYTES as u64 + 64)?;
                Some((path.clone(), bytes.clone(), backend_header(path, &bytes)?))
            }
            None => None,
        };
        let (jwt, jwks_bytes) = jwt.unzip();
        let inner = Arc::new(Inner {
            files: loaded
                .iter()
                .map(|(path, _, _)| AuthFileState {
                    path: path.clone(),
                    tokens: RwLock::new(Arc::new(Vec::new())),
                })
                .collect(),
            limits: Mutex::new(HashMap::new()),
            jwt,
            checks_callers: config.checks_callers(),
            metrics_open: config.metrics_open,
            backend_token: backend
                .as_ref()
                .map(|(path, _, header)| (path.clone(), RwLock::new(header.clone()))),
        });
        for (index, (_, _, specs)) in loaded.iter().enumerate() {
            inner.install_tokens(index, specs.clone());
        }
        let tokens: usize = loaded.iter().map(|(_, _, s)| s.len()).sum();
        tracing::info!(
            auth_files = loaded.len(),
            tokens,
            jwt = config.jwt.is_some(),
            metrics_open = config.metrics_open,
            backend_token = config.backend_token_file.is_some(),
            "access control on"
        );
        for (index, (path, bytes, _)) in loaded.into_iter().enumerate() {
            tokio::spawn(watch::watch_file(
                path,
                file::MAX_AUTH_FILE_BYTES,
                Some(bytes),
                Arc::downgrade(&inner),
                move |inner: &Inner, read| inner.reload_auth_file(index, read),
            ));
        }
        match (config.jwt.as_ref().map(|j| &j.jwks), jwks_fetcher, jwks_bytes) {
            (Some(JwksSource::File(path)), _, bytes) => {
                tokio::spawn(watch::watch_file(
                    path.clone(),
                    jwt::MAX_JWKS_BYTES,
                    bytes,
                    Arc::downgrade(&inner),
                    Inner::reload_jwks,
                ));
            }
            (Some(JwksSource::Url(_)), Some((client, url, asked)), Some(bytes)) => {
                let every = config.jwks_refresh.unwrap_or(jwks_url::REFRESH);
                tokio::spawn(jwks_url::refresh(
                    client,
                    url,
                    every,
                    bytes,
                    asked,
                    Arc::downgrade(&inner),
                    Inner::reload_jwks,
                ));
            }
            _ => {}
        }
        if let Some((path, bytes, _)) = backend {
            tokio::spawn(watch::watch_file(
                path,
                file::MAX_TOKEN_BYTES as u64 + 64,
                Some(bytes),
                Arc::downgrade(&inner),
                Inner::reload_backend_token,
            ));
        }
        Ok(Some(Auth { inner }))
    }

    /// Who sent these headers, and the limits their token has.
    ///
    /// # Errors
    /// No bearer token, an unknown one, or a JWT that does not verify.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        self.inner.authenticate(headers).map(|(caller, _)| caller)
    }

    /// The `Authorization` value the router sends its backends, if it has one.
    pub fn backend_authorization(&self) -> Option<HeaderValue> {
        let (_, token) = self.inner.backend_token.as_ref()?;
        token.read().ok().map(|v| v.clone())
    }
}

impl Inner {
    fn install_tokens(&self, index: usize, specs: Vec<TokenSpec>) {
        let mut limits = self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tokens: Vec<Token> = specs
            .into_iter()
            .map(|spec| {
                let token_limits = (spec.rate.is_some() || spec.quota.is_some()).then(|| {
                    match limits.get(&spec.name) {
                        Some(existing) if existing.same_limits(spec.rate, spec.quota) => {
                            existing.clone()
                        }
                        _ => {
                            let fresh = Arc::new(TokenLimits::new(spec.rate, spec.quota));
                            limits.insert(spec.name.clone(), fresh.clone());
                            fresh
                        }
                    }
                });
                Token { spec, limits: token_limits }
            })
            .collect();
        if let Ok(mut current) = self.files[index].tokens.write() {
            *current = Arc::new(tokens);
        }
        // Forget the state of names no file has any more.
        let names: std::collections::HashSet<Arc<str>> = self
            .files
            .iter()
            .filter_map(|f| f.tokens.read().ok().map(|t| t.clone()))
            .flat_map(|tokens| tokens.iter().map(|t| t.spec.name.clone()).collect::<Vec<_>>())
            .collect();
        limits.retain(|name, _| names.contains(name));
    }

    fn reload_auth_file(&self, index: usize, read: std::io::Result<Vec<u8>>) {
        let path = &self.files[index].path;
        let parsed = read
            .map_err(|source| AuthError::Read { path: path.display().to_string(), source })
            .and_then(|bytes| parse_auth_file(path, &bytes))
            .and_then(|specs| {
                for (other_index, other) in self.files.iter().enumerate() {
                    if other_index == index {
                        continue;
                    }
                    let theirs = other.tokens.read().map(|t| t.clone()).unwrap_or_default();
                    if let Some(spec) =
                        specs.iter().find(|s| theirs.iter().any(|t| t.spec.name == s.name))
                    {
                        return Err(AuthError::DuplicateName {
                            name: spec.name.to_string(),
                            first: other.path.display().to_string(),
                            second: path.display().to_string(),
                        });
                    }
                }
                Ok(specs)
            });
        match parsed {
            Ok(specs) => {
                tracing::info!(path = %path.display(), tokens = specs.len(), "auth file reloaded");
                self.install_tokens(index, specs);
            }
            Err(e) => {
                metrics::reload_failed("auth_file");
                tracing::warn!(error = %e, "keeping the last good auth file");
            }
        }
    }

    fn reload_jwks(&self, read: std::io::Result<Vec<u8>>) {
        let Some(state) = &self.jwt else { return };
        let path = state.config.jwks.to_string();
        let parsed = read
            .map_err(|e| e.to_string())
            .and_then(|bytes| jwt::parse_jwks(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(keys) => {
                tracing::info!(%path, keys = ?keys, "JWKS reloaded");
                if let Ok(mut current) = state.keys.write() {
                    *current = Arc::new(keys);
                }
                // A withdrawn key's tokens must not live on in the cache.
                state.forget_all();
            }
            Err(error) => {
                metrics::reload_failed("jwks");
                tracing::warn!(%path, %error, "keeping the last good JWKS");
            }
        }
    }

    fn reload_backend_token(&self, read: std::io::Result<Vec<u8>>) {
        let Some((path, current)) = &self.backend_token else { return };
        match read
            .map_err(|e| e.to_string())
            .and_then(|bytes| backend_header(path, &bytes).map_err(|e| e.to_string()))
        {
            Ok(header) => {
                tracing::info!("backend token reloaded");
                if let Ok(mut value) = current.write() {
                    *value = header;
                }
            }
            Err(error) => {
                metrics::reload_failed("backend_token");
                tracing::warn!(%error, "keeping the last good backend token");
            }
        }
    }

    /// The bearer token of a request, compared with every known token's
    /// digest in constant time (subtle), then, failing that, verified as a
    /// JWT. Comparing digests rather than tokens keeps the comparison the
    /// same length whatever was sent; visiting every token keeps the time
    /// independent of which one matched.
    fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Caller, Option<Arc<TokenLimits>>), Refusal> {
        let token = bearer(headers)?;
        let presented = digest(token.as_bytes());
        let mut found: Option<(Caller, Option<Arc<TokenLimits>>)> = None;
        for state in &self.files {
            let tokens = state.tokens.read().map(|t| t.clone()).unwrap_or_default();
            for candidate in tokens.iter() {
                if bool::from(candidate.spec.digest.ct_eq(&presented)) {
                    found = Some((
                        Caller { name: candidate.spec.name.clone(), scopes: candidate.spec.scopes },
                        candidate.limits.clone(),
                    ));
                }
            }
        }
        if let Some(found) = found {
            return Ok(found);
        }
        match &self.jwt {
            Some(state) if jwt::looks_like_jwt(token) => {
                let now = jsonwebtoken::get_current_timestamp();
                let verified = match state.remembered(&presented, now) {
                    Some(verified) => verified,
                    None => {
                        let keys =
                            state.keys.read().map(|k| k.clone()).map_err(|_| Refusal::Unknown)?;
                        let verified = keys.verify(token, &state.config).map_err(|refusal| {
                            if let Some(refetch) = &state.refetch
                                && refusal == JwtRefusal::BadSignature
                                && !keys.knows(jwt::key_id(token).as_deref())
                            {
                                refetch.notify_one();
                            }
                            Refusal::Jwt(refusal)
                        })?;
                        state.remember(presented, &verified, now);
                        verified
                    }
                };
                let name: Arc<str> = Arc::from(format!("jwt:{}", verified.subject));
                let limits = state.limits_of(&name);
                Ok((Caller { name, scopes: verified.scopes }, limits))
            }
            _ => Err(Refusal::Unknown),
        }
    }
}

/// The token of `Authorization: Bearer TOKEN` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let value = headers.get(header::AUTHORIZATION).ok_or(Refusal::Missing)?;
    let text = value.to_str().map_err(|_| Refusal::Unknown)?;
    let (scheme, token) = text.split_once(' ').ok_or(Refusal::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Unknown);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        h
    }

    #[test]
    fn bearer_tokens_are_read_in_any_case_and_other_schemes_are_missing() {
        assert_eq!(bearer(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&headers("bearer  abc ")).unwrap(), "abc");
        assert!(matches!(bearer(&headers("Basic abc")), Err(Refusal::Missing)));
        assert!(matches!(bearer(&headers("Bearer")), Err(Refusal::Missing)));
        assert!(matches!(bearer(&HeaderMap::new()), Err(Refusal::Missing)));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(bearer(&headers(&long)), Err(Refusal::Unknown)));
    }

    #[test]
    fn remembered_jwts_expire_with_the_token_and_the_cache_bound() {
        let state = JwtState {
            config: JwtConfig { jwks: "x".into(), issuer: "i".into(), audience: "a".into() },
            refetch: None,
            keys: RwLock::new(Arc::new(jwt::KeySet::empty())),
            verified: Mutex::new(HashMap::new()),
            limits: JwtLimits::default(),
            subjects: Mutex::new(HashMap::new()),
        };
        let verified = |expires_at| jwt::Verified {
            subject: "s".into(),
            scopes: Scopes::default(),
            expires_at,
        };
        state.remember([1; 32], &verified(1_000), 500);
        assert!(state.remembered(&[1; 32], 560).is_some());
        assert!(state.remembered(&[1; 32], 561).is_none(), "redone after {JWT_CACHE_SECONDS} s");
        state.remember([2; 32], &verified(1_000), 990);
        assert!(state.remembered(&[2; 32], 1_000 + jwt::LEEWAY_SECONDS).is_some());
        assert!(state.remembered(&[2; 32], 1_001 + jwt::LEEWAY_SECONDS).is_none(), "expired");
        state.remember([3; 32], &verified(1_000), 990);
        state.forget_all();
        assert!(state.remembered(&[3; 32], 991).is_none());
    }

    #[test]
    fn scopes_are_a_set() {
        let scopes: Scopes = [Scope::Infer, Scope::Pin].into_iter().collect();
        assert!(scopes.contains(Scope::Infer) && scopes.contains(Scope::Pin));
        assert!(!scopes.contains(Scope::Admin));
        assert_eq!(format!("{scopes:?}"), r#"{"infer", "pin"}"#);
        assert_eq!(Scope::parse("metrics"), Some(Scope::Metrics));
        assert_eq!(Scope::parse("root"), None);
    }
}
