//! Artifact I/O through `object_store`: plain paths, `file://`, `http(s)://`
//! and `s3://`, with sha256 digests.

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
    let expected = expected_sha256.map(normalize_digest).transpose()?;
    let url = location_url(location)?;
    let (store, path) = open(&url)?;
    let fetch_err = |source| StoreError::FetchArtifact { uri: url.to_string(), source };
    let bytes = store.get(&path).await.map_err(fetch_err)?.bytes().await.map_err(fetch_err)?;
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

fn open(url: &Url) -> Result<(Box<dyn ObjectStore>, StorePath), StoreError> {
    let invalid = |reason: String| StoreError::InvalidUri { uri: url.to_string(), reason };
    match url.scheme() {
        "s3" => {
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            let path = StorePath::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
            Ok((Box::new(store), path))
        }
        "file" | "https" => object_store::parse_url(url).map_err(|e| invalid(e.to_string())),
        // object_store refuses plain HTTP unless told; the user asked for it
        // by writing http://, as for an in-cluster artifact server.
        "http" => object_store::parse_url_opts(url, [("allow_http", "true")])
            .map_err(|e| invalid(e.to_string())),
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
}
