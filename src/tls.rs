//! TLS on the listeners of `tractor serve` and `tractor route`
//! (`--tls-cert`, `--tls-key`, `--tls-client-ca`), with the certificate
//! re-read when its files change, so cert-manager's rotation needs no
//! restart.
//!
//! rustls on the aws-lc-rs provider, the one kube's client already builds:
//! the provider is passed explicitly, so nothing depends on a process-wide
//! default being installed (or on which crate installed it first).
//!
//! # Invariants
//! - A connection is handshaken with the configuration current when it was
//!   accepted; a rotation reaches new connections only.
//! - A pair that fails to load (half-written, key not matching, expired CA
//!   file that does not parse) never replaces the last good one: it is
//!   logged with the reason and tried again on the next change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// How often the certificate files are checked for a change. A timer on
/// their modification times rather than a file watch: cert-manager and the
/// kubelet replace a mounted Secret by swapping a symlink, which inotify
/// watches on the files themselves miss, and a once-a-second `stat` of
/// three files costs nothing. A rotation is seen within this.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The largest PEM file read: a chain of a few certificates is a few KiB;
/// a CA bundle with every public root is about 200 KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The TLS flags of `serve` and `route` (docs/security.md, "TLS").
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); re-read
    /// when it changes.
    #[arg(long, env = "TRACTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TRACTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by one of these CAs (PEM):
    /// mutual TLS. Connections without one are refused in the handshake.
    #[arg(long, env = "TRACTOR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// The router's TLS to its backends (`tractor route --backend-ca`).
#[derive(Debug, Clone, Default, Args)]
pub struct BackendTlsArgs {
    /// Accept https:// backends, verified against these CAs (PEM). Without
    /// it, https:// backends are refused when the routes load.
    #[arg(long, env = "TRACTOR_BACKEND_CA")]
    pub backend_ca: Option<PathBuf>,
}

impl BackendTlsArgs {
    /// The client configuration for https:// backends, or `None` when
    /// they are refused.
    ///
    /// # Errors
    /// As [`BackendTls::from_ca_file`].
    pub fn backend_tls(&self) -> Result<Option<BackendTls>, TlsError> {
        self.backend_ca.as_deref().map(BackendTls::from_ca_file).transpose()
    }
}

/// How the router verifies its https:// backends: only certificates signed
/// by the CAs it was given, never the system's roots (a backend is ours,
/// and its CA is the cluster's or cert-manager's).
#[derive(Debug, Clone)]
pub struct BackendTls {
    config: Arc<ClientConfig>,
}

impl BackendTls {
    /// Reads the CA bundle once; a changed CA needs a restart (the
    /// backends' own certificates may rotate freely under the same CA).
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate, or one rustls
    /// cannot use as a trust anchor.
    pub fn from_ca_file(path: &Path) -> Result<BackendTls, TlsError> {
        let roots = read_roots(path, CaFile::Backend)?;
        Ok(BackendTls { config: Arc::new(client_config_with(roots)) })
    }

    /// A client configuration trusting nothing: for a router without
    /// `--backend-ca`, whose https:// backends are refused at load, so it
    /// is never used to connect.
    pub fn trusting_nothing() -> BackendTls {
        BackendTls { config: Arc::new(client_config_with(RootCertStore::empty())) }
    }

    /// The rustls client configuration, for the router's connector.
    pub fn client_config(&self) -> ClientConfig {
        (*self.config).clone()
    }
}

/// A client configuration trusting `roots`, on the process's one provider.
pub fn client_config_with(roots: RootCertStore) -> ClientConfig {
    match ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions() {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // The provider's defaults always include a protocol version; an
        // empty set of defaults would be a build misconfiguration.
        Err(_) => unreachable!("aws-lc-rs supports the default protocol versions"),
    }
}

/// The system's trust anchors, and those of `extra` (`--jwks-ca`) too.
///
/// # Errors
/// `extra` cannot be read, or there is no anchor at all.
pub fn system_roots_and(extra: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = match extra {
        Some(path) => read_roots(path, CaFile::Jwks)?,
        None => RootCertStore::empty(),
    };
    for cert in rustls_native_certs::load_native_certs().certs {
        // One unreadable system certificate must not cost the rest.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(roots)
}

/// The trust anchors of one CA bundle.
fn read_roots(path: &Path, which: CaFile) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(|e| which.error(path, e))?;
    }
    Ok(roots)
}

/// Where a server's TLS configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to serve TLS from, or `None` for plain HTTP.
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is over {MAX_PEM_BYTES} bytes; a PEM certificate or key is a few KiB")]
    TooLarge { path: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("the {which} CA file {path}: {reason}")]
    Ca { which: CaFile, path: String, reason: String },
    #[error("no system root certificates to verify with; give a CA file (--jwks-ca)")]
    NoRoots,
    #[error("certificate {cert} with key {key}: {reason}")]
    Pair { cert: String, key: String, reason: String },
}

/// Which CA bundle a trust error is about: the one clients are checked
/// against (`--tls-client-ca`), or the one backends are (`--backend-ca`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaFile {
    Client,
    Backend,
    Jwks,
}

impl CaFile {
    fn error(self, path: &Path, reason: impl std::fmt::Display) -> TlsError {
        TlsError::Ca { which: self, path: path.display().to_string(), reason: reason.to_string() }
    }
}

impl std::fmt::Display for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CaFile::Client => "client",
            CaFile::Backend => "backend",
            CaFile::Jwks => "JWKS",
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// Reads a PEM file, bounded: a path pointing at something huge (or at a
/// device) is an error, not an allocation.
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let read = |source| TlsError::Read { path: shown.clone(), source };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { path: shown });
    }
    Ok(bytes)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let shown = || path.display().to_string();
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: shown(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown() });
    }
    Ok(certs)
}

/// Builds the server configuration from the files as they are now.
///
/// # Errors
/// A file that cannot be read or parsed, a key that does not match the
/// certificate, a client CA file with no usable certificate.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(&files.cert)?;
    let key_bytes = read_pem(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
        path: files.key.display().to_string(),
        reason: format!("no private key: {e}"),
    })?;
    let pair = |reason: String| TlsError::Pair {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| pair(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = read_roots(path, CaFile::Client)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| CaFile::Client.error(path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // `with_single_cert` checks that the key matches the leaf certificate.
    let mut config = builder.with_single_cert(certs, key).map_err(|e| pair(e.to_string()))?;
    // The listeners speak HTTP/1.1 only (listen.rs).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity of the files' current contents, as far as a timer can
/// tell: modification time and length of each.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| {
            // Follows symlinks, so a swapped `..data` link of a mounted
            // Secret counts as a change.
            std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// A server's TLS side: the configuration for new connections, kept
/// current by [`TlsServer::watch`].
#[derive(Clone)]
pub struct TlsServer {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// The ALPN protocols offered: HTTP/1.1, or `h2` for the gRPC port.
    alpn: &'static [u8],
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("files", &self.files).finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the files once; the server does not start on a broken pair.
    ///
    /// # Errors
    /// As [`load`].
    pub fn new(files: TlsFiles) -> Result<TlsServer, TlsError> {
        let config = load(&files)?;
        Ok(TlsServer { files, current: Arc::new(RwLock::new(config)), alpn: b"http/1.1" })
    }

    /// The same certificate for an HTTP/2 listener (gRPC): ALPN offers
    /// `h2`, which gRPC clients require. It reloads on its own.
    ///
    /// # Errors
    /// As [`load`].
    pub fn for_h2(&self) -> Result<TlsServer, TlsError> {
        let config = with_alpn(load(&self.files)?, b"h2");
        Ok(TlsServer {
            files: self.files.clone(),
            current: Arc::new(RwLock::new(config)),
            alpn: b"h2",
        })
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Whether a client certificate is required (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files whenever they change, for as long as it runs
    /// (the listener aborts it when it stops). A change that does not load
    /// is logged and the last good configuration stays.
    pub async fn watch(self) {
        let mut seen = stamp(&self.files);
        let mut ticks = tokio::time::interval(RELOAD_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = stamp(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            let files = self.files.clone();
            // File reads and key parsing off the async workers.
            let loaded = tokio::task::spawn_blocking(move || load(&files)).await;
            match loaded {
                Ok(Ok(config)) => {
                    let config = with_alpn(config, self.alpn);
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    "TLS files changed but do not load; keeping the previous certificate"
                ),
                Err(e) => tracing::warn!(error = %e, "reloading the TLS files failed"),
            }
        }
    }
}

/// `config` offering only `protocol` in ALPN.
fn with_alpn(config: Arc<ServerConfig>, protocol: &[u8]) -> Arc<ServerConfig> {
    if config.alpn_protocols.len() == 1 && config.alpn_protocols[0] == protocol {
        return config;
    }
    let mut config = (*config).clone();
    config.alpn_protocols = vec![protocol.to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--jwks-ca` adds to the system's roots rather than replacing them,
    /// as docs/security.md says; a file that is not a CA is named.
    #[test]
    fn jwks_roots_are_the_systems_and_the_extra_ca() {
        let system = system_roots_and(None).map(|r| r.len()).unwrap_or(0);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let roots = system_roots_and(Some(&ca)).unwrap();
        assert_eq!(roots.len(), system + 1, "the system's roots and the extra CA");
        let missing = system_roots_and(Some(&dir.path().join("none.crt"))).unwrap_err();
        assert!(missing.to_string().contains("none.crt"), "{missing}");
    }
}
