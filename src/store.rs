//! Artifact I/O through `object_store`: plain paths, `file://`, `http(s)://`
//! and `s3://`, with sha256 digests, and the [`SourcePolicy`] that bounds
//! what a model location may make the server fetch; [`encryption`] reads
//! and writes age-encrypted artifacts.

pub mod encryption;

use futures::StreamExt;
use object_store::client::{ClientOptions, HttpClient, HttpConnector};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use url::Url;

/// Errors of fetching and verifying artifacts.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid artifact location {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("fetching {uri}: {source}")]
    FetchArtifact {
        uri: String,
        #[source]
        source: object_store::Error,
    },
    #[error("sha256 mismatch for {uri}: expected {expected}, got {actual}")]
    DigestMismatch { uri: String, expected: String, actual: String },
    #[error("invalid sha256 {0:?}: expected 64 hexadecimal characters")]
    InvalidDigest(String),
    #[error("{uri} is not an allowed model source (--allowed-sources {allowed})")]
    NotAllowed { uri: String, allowed: String },
    #[error("invalid --allowed-sources entry {entry:?}: {reason}")]
    InvalidSourcePattern { entry: String, reason: String },
    #[error("{uri} is larger than --max-model-bytes {max}")]
    TooLarge { uri: String, max: u64 },
}

/// Redirects followed within one origin before giving up.
const MAX_REDIRECTS: usize = 5;
/// A store host that does not accept a connection within this long is
/// down; the fetch fails with the reason rather than hanging start-up.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest up-front allocation for an artifact whose size the store
/// reported: a lying `Content-Length` cannot reserve more than this; the
/// buffer grows past it as bytes actually arrive.
const MAX_PREALLOCATION: u64 = 64 << 20;

/// One entry of `--allowed-sources`: a scheme, optionally a host pattern
/// (`*.example.com` for its subdomains, a port when not the default), and
/// a path prefix: `file:///models/`, `s3://team-models`,
/// `https://*.models.example.com/tractor/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePattern {
    text: String,
    scheme: String,
    host: Option<String>,
    port: Option<u16>,
    path_prefix: String,
}

impl std::str::FromStr for SourcePattern {
    type Err = StoreError;

    fn from_str(entry: &str) -> Result<SourcePattern, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidSourcePattern {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (scheme, Some(rest)),
            None => (entry, None),
        };
        let scheme = scheme.to_ascii_lowercase();
        if !["file", "http", "https", "s3"].contains(&scheme.as_str()) {
            return Err(invalid("the scheme must be file, http, https or s3"));
        }
        let Some(rest) = rest else {
            return Ok(SourcePattern {
                text: entry.to_string(),
                scheme,
                host: None,
                port: None,
                path_prefix: "/".into(),
            });
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => {
                (host, Some(port.parse::<u16>().map_err(|_| invalid("the port is not a number"))?))
            }
            None => (authority, None),
        };
        let host = host.to_ascii_lowercase();
        if scheme == "file" && !host.is_empty() {
            return Err(invalid("file sources have no host: file:///path/"));
        }
        if scheme != "file" && host.is_empty() {
            return Err(invalid("give a host (or * for any host)"));
        }
        let wildcard_ok = host == "*" || !host.trim_start_matches("*.").contains('*');
        if !wildcard_ok {
            return Err(invalid("a * may only stand alone or begin the host as *."));
        }
        Ok(SourcePattern {
            text: entry.to_string(),
            scheme,
            host: (!host.is_empty()).then_some(host),
            port,
            path_prefix: path.to_string(),
        })
    }
}

impl SourcePattern {
    fn allows(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme || !url.path().starts_with(&self.path_prefix) {
            return false;
        }
        let Some(pattern) = &self.host else { return true };
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else { return false };
        let host_ok = match pattern.strip_prefix("*.") {
            _ if pattern == "*" => true,
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == *pattern,
        };
        host_ok && (self.port.is_none() || url.port_or_known_default() == self.port)
    }
}

/// What a model location may be: the defence against a model URI
/// turned into a probe of the cluster's network with the store's
/// credentials. The default allows everything, as before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePolicy {
    /// Empty: every source.
    pub allowed: Vec<SourcePattern>,
    /// Largest artifact fetched; `None`: no bound.
    pub max_bytes: Option<u64>,
}

impl SourcePolicy {
    /// # Errors
    /// A location no pattern allows.
    pub fn check(&self, url: &Url) -> Result<(), StoreError> {
        if self.allowed.is_empty() || self.allowed.iter().any(|p| p.allows(url)) {
            return Ok(());
        }
        let allowed: Vec<&str> = self.allowed.iter().map(|p| p.text.as_str()).collect();
        Err(StoreError::NotAllowed { uri: url.to_string(), allowed: allowed.join(",") })
    }
}

/// object_store's HTTP client with one change: a redirect is followed only
/// within the origin it started from (and at most [`MAX_REDIRECTS`]
/// times), so an artifact server cannot send the fetch, with the store's
/// credentials, to another host. reqwest's own policy follows any host.
#[derive(Debug, Default)]
struct SameOriginRedirects;

impl HttpConnector for SameOriginRedirects {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if same_origin {
                attempt.follow()
            } else {
                let to = attempt.url().origin().ascii_serialization();
                attempt.error(format!("refusing a redirect to another host ({to})"))
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tractor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| object_store::Error::Generic { store: "http", source: Box::new(e) })?;
        Ok(HttpClient::new(client))
    }
}

/// Bytes of an artifact, with where they came from.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub uri: String,
    /// The last path segment, used to guess the format and name the model.
    pub file_name: String,
    pub bytes: bytes::Bytes,
    pub sha256: String,
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks the shape of a user-given digest and normalizes it to lowercase:
/// the API's rule ([`crate::crd::normalize_digest`]), with the store's error.
///
/// # Errors
/// Anything but 64 hexadecimal characters (an optional `sha256:` prefix is accepted).
pub fn normalize_digest(digest: &str) -> Result<String, StoreError> {
    crate::crd::normalize_digest(digest).map_err(|e| StoreError::InvalidDigest(e.0))
}

/// Turns a user-given location into a URL: plain paths become `file://` URLs
/// (relative ones against the working directory).
///
/// # Errors
/// An unparsable URL or a path that cannot be made absolute.
pub fn location_url(location: &str) -> Result<Url, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUri { uri: location.to_string(), reason };
    if location.contains("://") {
        return Url::parse(location).map_err(|e| invalid(e.to_string()));
    }
    // Canonical when the file exists: object_store refuses `..` segments.
    let path = std::fs::canonicalize(location)
        .or_else(|_| std::path::absolute(location))
        .map_err(|e| invalid(e.to_string()))?;
    Url::from_file_path(&path).map_err(|()| invalid("not an absolute path".into()))
}

/// Fetches an artifact and, when `expected_sha256` is given, refuses it
/// unless its digest matches.
///
/// `s3://` reads credentials and region from the usual `AWS_*` variables;
/// `http(s)://` issues plain GETs.
///
/// # Errors
/// An unsupported scheme, a failed read, or a digest mismatch.
pub async fn fetch(location: &str, expected_sha256: Option<&str>) -> Result<Artifact, StoreError> {
    fetch_with(location, expected_sha256, &SourcePolicy::default()).await
}

/// As [`fetch`], refusing a location `policy` does not allow (before any
/// connection is made) and an artifact over its size bound (before its
/// body is read when the store says its size, else as soon as the bytes
/// received pass it).
///
/// # Errors
/// As [`fetch`], and [`StoreError::NotAllowed`], [`StoreError::TooLarge`].
pub async fn fetch_with(
    location: &str,
    expected_sha256: Option<&str>,
    policy: &SourcePolicy,
) -> Result<Artifact, StoreError> {
    let expected = expected_sha256.map(normalize_digest).transpose()?;
    let url = location_url(location)?;
    policy.check(&url)?;
    let (store, path) = open(&url)?;
    let fetch_err = |source| StoreError::FetchArtifact { uri: url.to_string(), source };
    let too_large = |max| StoreError::TooLarge { uri: url.to_string(), max };
    let got = store.get(&path).await.map_err(fetch_err)?;
    let max = policy.max_bytes.unwrap_or(u64::MAX);
    if got.meta.size > max {
        return Err(too_large(max));
    }
    let capacity = usize::try_from(got.meta.size.min(MAX_PREALLOCATION)).unwrap_or(0);
    let mut buffer = Vec::with_capacity(capacity);
    let mut chunks = got.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(fetch_err)?;
        let total = (buffer.len() as u64).checked_add(chunk.len() as u64);
        if total.is_none_or(|t| t > max) {
            return Err(too_large(max));
        }
        buffer.extend_from_slice(&chunk);
    }
    let bytes = bytes::Bytes::from(buffer);
    let sha256 = sha256_hex(&bytes);
    if let Some(expected) = expected
        && expected != sha256
    {
        return Err(StoreError::DigestMismatch { uri: url.to_string(), expected, actual: sha256 });
    }
    let file_name = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or_default()
        .to_string();
    Ok(Artifact { uri: url.to_string(), file_name, bytes, sha256 })
}

/// Writes an artifact. Local files are written to a temporary name in the
/// same directory and renamed, so a reader (the controller, `serve`) never
/// sees a partial file; object stores make a put visible at once.
///
/// # Errors
/// An unsupported scheme or a failed write.
pub async fn put(location: &str, bytes: bytes::Bytes) -> Result<String, StoreError> {
    let url = location_url(location)?;
    let write_err = |source| StoreError::FetchArtifact { uri: url.to_string(), source };
    if url.scheme() == "file" {
        let path = url.to_file_path().map_err(|()| StoreError::InvalidUri {
            uri: url.to_string(),
            reason: "not a file path".into(),
        })?;
        let io_err = |e: std::io::Error| StoreError::FetchArtifact {
            uri: url.to_string(),
            source: object_store::Error::Generic { store: "file", source: Box::new(e) },
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("artifact");
        let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(io_err)?;
        std::fs::rename(&tmp, &path).map_err(io_err)?;
        return Ok(url.to_string());
    }
    let (store, path) = open(&url)?;
    store.put(&path, bytes.into()).await.map_err(write_err)?;
    Ok(url.to_string())
}

/// Deletes an artifact if it exists.
///
/// # Errors
/// An unsupported scheme or a failed delete (a missing object is not one).
pub async fn delete(location: &str) -> Result<(), StoreError> {
    let url = location_url(location)?;
    let (store, path) = open(&url)?;
    match store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(StoreError::FetchArtifact { uri: url.to_string(), source }),
    }
}

/// The object store a location names and the path inside it, for callers
/// that keep several objects under one root (the registry). A local
/// directory is made absolute as [`location_url`] does.
///
/// # Errors
/// An unparsable location or an unsupported scheme.
pub fn open_location(location: &str) -> Result<(Box<dyn ObjectStore>, StorePath), StoreError> {
    open(&location_url(location)?)
}

fn open(url: &Url) -> Result<(Box<dyn ObjectStore>, StorePath), StoreError> {
    let invalid = |reason: String| StoreError::InvalidUri { uri: url.to_string(), reason };
    match url.scheme() {
        "s3" => {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_http_connector(SameOriginRedirects)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            let path = StorePath::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
            Ok((Box::new(store), path))
        }
        "file" => object_store::parse_url(url).map_err(|e| invalid(e.to_string())),
        "http" | "https" => {
            let (scheme, path) =
                object_store::ObjectStoreScheme::parse(url).map_err(|e| invalid(e.to_string()))?;
            if scheme != object_store::ObjectStoreScheme::Http {
                // An https URL object_store reads as S3 or Azure: its own client.
                return object_store::parse_url(url).map_err(|e| invalid(e.to_string()));
            }
            let origin = &url[..url::Position::BeforePath];
            // object_store refuses plain HTTP unless told; the user asked for
            // it by writing http://, as for an in-cluster artifact server.
            let options = ClientOptions::new().with_allow_http(url.scheme() == "http");
            let store = object_store::http::HttpBuilder::new()
                .with_url(origin)
                .with_client_options(options)
                .with_http_connector(SameOriginRedirects)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            Ok((Box::new(store), path))
        }
        other => Err(invalid(format!(
            "unsupported scheme {other:?}; use a path, file://, http(s):// or s3://"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_normalized_and_checked() {
        let d = "AB".repeat(32);
        assert_eq!(normalize_digest(&d).unwrap(), "ab".repeat(32));
        assert_eq!(normalize_digest(&format!("sha256:{d}")).unwrap(), "ab".repeat(32));
        assert!(normalize_digest("abc").is_err());
        assert!(normalize_digest(&"g".repeat(64)).is_err());
    }

    #[test]
    fn relative_paths_with_dot_dot_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("m.onnx"), b"x").unwrap();
        let winding = dir.path().join("sub/../m.onnx");
        let url = location_url(winding.to_str().unwrap()).unwrap();
        assert!(!url.path().contains(".."), "{url}");
        assert!(url.path().ends_with("/m.onnx"));
    }

    #[test]
    fn plain_paths_become_file_urls() {
        let url = location_url("/tmp/model.onnx").unwrap();
        assert_eq!(url.as_str(), "file:///tmp/model.onnx");
        assert_eq!(location_url("s3://bucket/m.onnx").unwrap().scheme(), "s3");
    }

    #[tokio::test]
    async fn fetch_verifies_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"hello").unwrap();
        let location = path.to_str().unwrap();
        let good = sha256_hex(b"hello");
        let artifact = fetch(location, Some(&good)).await.unwrap();
        assert_eq!(&artifact.bytes[..], b"hello");
        assert_eq!(artifact.file_name, "m.onnx");
        let err = fetch(location, Some(&"0".repeat(64))).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        let missing = fetch(dir.path().join("nope.onnx").to_str().unwrap(), None).await;
        assert!(matches!(missing, Err(StoreError::FetchArtifact { .. })));
        let scheme = fetch("ftp://host/m.onnx", None).await.unwrap_err();
        assert!(scheme.to_string().contains("unsupported scheme"), "{scheme}");
    }

    #[tokio::test]
    async fn put_writes_atomically_and_delete_tolerates_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.onnx");
        let location = path.to_str().unwrap();
        put(location, bytes::Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left");
        delete(location).await.unwrap();
        assert!(!path.exists());
        delete(location).await.unwrap();
    }

    #[tokio::test]
    async fn fetch_reads_http_urls() {
        use axum::routing::get;
        let app = axum::Router::new().route("/models/m.onnx", get(|| async { "model bytes" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/models/m.onnx");
        let artifact = fetch(&url, Some(&sha256_hex(b"model bytes"))).await.unwrap();
        assert_eq!(&artifact.bytes[..], b"model bytes");
        assert_eq!(artifact.file_name, "m.onnx");
        let missing = fetch(&format!("http://{addr}/models/other.onnx"), None).await;
        assert!(matches!(missing, Err(StoreError::FetchArtifact { .. })), "{missing:?}");
        server.abort();
    }

    #[test]
    fn source_patterns_match_scheme_host_port_and_path() {
        let allows = |pattern: &str, url: &str| {
            pattern.parse::<SourcePattern>().unwrap().allows(&Url::parse(url).unwrap())
        };
        assert!(allows("file", "file:///anything/m.onnx"));
        assert!(allows("file:///models/", "file:///models/m.onnx"));
        assert!(!allows("file:///models/", "file:///etc/passwd"));
        assert!(allows("s3://team", "s3://team/m.onnx"));
        assert!(!allows("s3://team", "s3://other/m.onnx"));
        assert!(allows("https://*.example.com", "https://a.b.example.com/m"));
        assert!(!allows("https://*.example.com", "https://example.com.evil.net/m"));
        assert!(!allows("https://*.example.com", "http://a.example.com/m"));
        assert!(allows("http://models.internal:8080", "http://models.internal:8080/m"));
        assert!(!allows("http://models.internal:8080", "http://models.internal:9090/m"));
        assert!(allows("https://*", "https://anywhere.test/m"));
        for bad in ["ftp://x", "https://", "file://host/x", "https://a*.b", "http://h:port"] {
            assert!(bad.parse::<SourcePattern>().is_err(), "{bad}");
        }
        let policy = SourcePolicy { allowed: vec!["s3://team".parse().unwrap()], max_bytes: None };
        let err = policy.check(&Url::parse("http://169.254.169.254/latest").unwrap()).unwrap_err();
        assert!(err.to_string().contains("not an allowed model source"), "{err}");
        assert!(SourcePolicy::default().check(&Url::parse("http://x/m").unwrap()).is_ok());
    }

    async fn http_server(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn redirects_stay_on_their_origin_and_sizes_are_bounded() {
        use axum::response::Redirect;
        use axum::routing::get;
        let (other, other_task) =
            http_server(axum::Router::new().route("/m.onnx", get(|| async { "elsewhere" }))).await;
        let away = format!("{other}/m.onnx");
        let app = axum::Router::new()
            .route("/m.onnx", get(|| async { "x".repeat(2000) }))
            .route("/same", get(|| async { Redirect::temporary("/m.onnx") }))
            .route("/away", get(move || async move { Redirect::temporary(&away) }));
        let (origin, task) = http_server(app).await;
        let followed = fetch(&format!("{origin}/same"), None).await.unwrap();
        assert_eq!(followed.bytes.len(), 2000);
        let refused = fetch(&format!("{origin}/away"), None).await.unwrap_err();
        let chain = format!("{refused} {:?}", std::error::Error::source(&refused));
        assert!(chain.contains("another host"), "{chain}");
        let bounded = SourcePolicy { allowed: vec![], max_bytes: Some(1000) };
        let large = fetch_with(&format!("{origin}/m.onnx"), None, &bounded).await.unwrap_err();
        assert!(matches!(large, StoreError::TooLarge { max: 1000, .. }), "{large}");
        let enough = SourcePolicy { allowed: vec![], max_bytes: Some(2000) };
        assert!(fetch_with(&format!("{origin}/m.onnx"), None, &enough).await.is_ok());
        task.abort();
        other_task.abort();
    }
}
