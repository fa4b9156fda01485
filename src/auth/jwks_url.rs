//! A JWKS fetched from an identity provider's `jwks_uri` rather than read
//! from a file: fetched once before the server starts (a provider that
//! cannot be reached stops it, as a missing file does), then again every
//! [`REFRESH`], and early, at most once per [`MIN_REFETCH`], when a token
//! names a key the set lacks: providers publish a new key shortly before
//! signing with it, and a hostile caller inventing key ids must not turn
//! the router into a load generator against the provider.
//!
//! Only `https://` URLs, except `http://` to a loopback address (a local
//! provider or a sidecar). Redirects are not followed, the answer is read
//! under [`jwt::MAX_JWKS_BYTES`](super::jwt::MAX_JWKS_BYTES) and
//! [`FETCH_TIMEOUT`], and the roots are the system's plus `--jwks-ca`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use url::Url;

use super::jwt::MAX_JWKS_BYTES;

/// How often the keys are fetched again without a reason to, by default
/// (`--jwks-refresh`).
pub const REFRESH: Duration = Duration::from_secs(300);
/// Least time between two fetches, whatever asks for them (or the refresh
/// period, when shorter).
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// One fetch, connection and body together.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The client the keys are fetched with.
pub type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why a JWKS URL is refused, or its keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksUrlError {
    #[error("the JWKS URL {0} has no host")]
    NoHost(String),
    #[error(
        "the JWKS URL {0} must be https:// (http:// only to a loopback address): \
         the keys decide who may call"
    )]
    NotHttps(String),
    #[error(transparent)]
    Roots(#[from] crate::tls::TlsError),
    #[error("{url} is not a request URI: {source}")]
    RequestUri {
        url: String,
        #[source]
        source: axum::http::uri::InvalidUri,
    },
    #[error("cannot fetch {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: Box<hyper_util::client::legacy::Error>,
    },
    #[error("{url} answered {status}, not the JWKS")]
    Status { url: String, status: axum::http::StatusCode },
    #[error("reading {url}: {source} (at most {MAX_JWKS_BYTES} bytes)")]
    Read {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} did not answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
}

/// Refuses a URL the keys may not come from.
///
/// # Errors
/// Not `https://` (and not `http://` to a loopback address), or without a host.
pub fn check(url: &Url) -> Result<(), JwksUrlError> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => return Err(JwksUrlError::NoHost(url.to_string())),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(JwksUrlError::NotHttps(url.to_string())),
    }
}

/// A client trusting the system's roots and `extra_roots` (a provider
/// with a private CA, `--jwks-ca`).
///
/// # Errors
/// `extra_roots` cannot be read, or there is no root at all.
pub fn client(extra_roots: Option<&std::path::Path>) -> Result<JwksClient, JwksUrlError> {
    let roots = crate::tls::system_roots_and(extra_roots)?;
    let config = crate::tls::client_config_with(roots);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Fetches the JWKS document.
///
/// # Errors
/// The request fails, times out, answers other than 200, or is larger
/// than [`MAX_JWKS_BYTES`].
pub async fn fetch(client: &JwksClient, url: &Url) -> Result<Vec<u8>, JwksUrlError> {
    let uri: axum::http::Uri = url
        .as_str()
        .parse()
        .map_err(|source| JwksUrlError::RequestUri { url: url.to_string(), source })?;
    let work = async {
        let answer = client
            .get(uri)
            .await
            .map_err(|e| JwksUrlError::Fetch { url: url.to_string(), source: Box::new(e) })?;
        let status = answer.status();
        if status != axum::http::StatusCode::OK {
            return Err(JwksUrlError::Status { url: url.to_string(), status });
        }
        let limit = usize::try_from(MAX_JWKS_BYTES).unwrap_or(usize::MAX);
        let body = Limited::new(answer.into_body(), limit)
            .collect()
            .await
            .map_err(|source| JwksUrlError::Read { url: url.to_string(), source })?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(JwksUrlError::Timeout { url: url.to_string() }))
}

/// Fetches the keys again `every` period, or when `asked` (a token with
/// an unknown key id), never twice within [`MIN_REFETCH`], handing each
/// changed document (or the failure) to `changed`, for as long as `owner`
/// lives.
pub async fn refresh<T: Send + Sync>(
    client: JwksClient,
    url: Url,
    every: Duration,
    mut last: Vec<u8>,
    asked: Arc<Notify>,
    owner: Weak<T>,
    changed: impl Fn(&T, std::io::Result<Vec<u8>>) + Send,
) {
    let every = every.max(Duration::from_millis(100));
    let spacing = MIN_REFETCH.min(every);
    loop {
        tokio::time::sleep(spacing).await;
        let _ = tokio::time::timeout(every.saturating_sub(spacing), asked.notified()).await;
        let Some(owner) = owner.upgrade() else { return };
        match fetch(&client, &url).await {
            Ok(bytes) if bytes == last => {}
            Ok(bytes) => {
                last.clone_from(&bytes);
                changed(&owner, Ok(bytes));
            }
            Err(reason) => changed(&owner, Err(std::io::Error::other(reason))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        let ok = |u: &str| check(&Url::parse(u).unwrap());
        assert!(ok("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(ok("http://127.0.0.1:8080/jwks").is_ok());
        assert!(ok("http://[::1]/jwks").is_ok());
        assert!(ok("http://localhost/jwks").is_ok());
        let refused = ok("http://idp.example.com/jwks").unwrap_err().to_string();
        assert!(refused.contains("must be https://"), "{refused}");
        assert!(ok("ftp://idp.example.com/jwks").is_err());
    }
}
