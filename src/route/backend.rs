//! One exchange with a backend: the URI a request goes to, the request
//! sent, and the answer streamed back to the caller within the request's
//! deadline and the response size limit.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::uri::{InvalidUri, InvalidUriParts, PathAndQuery};
use axum::http::{HeaderMap, HeaderName, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::{Instant, Sleep};

use crate::contract::routes::Backend;
use crate::contract::v2::VERSION_HEADER;
use crate::telemetry::trace_context::Outgoing;

/// The client to backends: hyper's own pooled client rather than reqwest.
/// The router is a hop every request pays for, and reqwest's conveniences
/// (URL parsing with IDNA, redirect and header layers) were a measurable part
/// of its CPU per request; a proxy needs none of them.
/// http:// and, with `--backend-ca`, https:// backends (hyper-rustls, the
/// connector kube's client already builds).
pub(super) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Why one backend gave no answer: the caller gets a 502 naming it (504
/// for the request's own deadline).
#[derive(Debug, thiserror::Error)]
#[error("{version}: {failure}")]
pub(super) struct BackendError {
    version: String,
    failure: Failure,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot address {url:?}: {reason}")]
    Url { url: String, reason: UriError },
    /// hyper's client error says "client error (Connect)"; the message
    /// carries its causes, which say which.
    #[error("{0}")]
    Transport(String),
    #[error("no answer within {0} ms (--backend-timeout-ms)")]
    Timeout(u128),
    #[error("no answer before the request timeout (--request-timeout-ms)")]
    Deadline,
    #[error("answer of {bytes} bytes is over --max-response-bytes {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("reading the answer: {0}")]
    Body(String),
}

impl BackendError {
    fn new(version: &str, failure: Failure) -> BackendError {
        BackendError { version: version.to_string(), failure }
    }

    /// The request's own deadline passed: 504 rather than 502.
    pub(super) fn is_deadline(&self) -> bool {
        matches!(self.failure, Failure::Deadline)
    }
}

/// Why a backend's URL and a request's target make no URI: http's own
/// errors, whose messages say which part.
#[derive(Debug, thiserror::Error)]
pub(super) enum UriError {
    #[error(transparent)]
    Base(InvalidUri),
    #[error(transparent)]
    Path(InvalidUri),
    #[error(transparent)]
    Parts(InvalidUriParts),
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn forwardable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str()) && name != header::HOST && name != header::CONTENT_LENGTH
}

/// The URI a request for `target` is sent to on the backend at `base`.
///
/// Scheme and authority are always the backend's, never the client's: an
/// absolute-form target (`GET http://elsewhere/...`) keeps only its path
/// and query, and the asterisk-form `OPTIONS *` stays `*` on the backend's
/// own port (pasting `*` after the base URL made an authority without a
/// valid port, and the client connected to port 80). A base path is a
/// prefix of every forwarded path.
///
/// # Errors
/// A base URL that does not parse, or a target that makes no valid URI.
pub(super) fn backend_uri(base: &str, target: &Uri) -> Result<Uri, UriError> {
    let base: Uri = base.parse().map_err(UriError::Base)?;
    let prefix = base.path().trim_end_matches('/');
    let path = target.path();
    let mut forwarded = if path == "*" {
        if prefix.is_empty() { "*".to_string() } else { format!("{prefix}/") }
    } else if path.starts_with('/') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}/{path}")
    };
    if let Some(query) = target.query() {
        forwarded.push('?');
        forwarded.push_str(query);
    }
    let mut parts = base.into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(forwarded).map_err(UriError::Path)?);
    Uri::from_parts(parts).map_err(UriError::Parts)
}

/// hyper's client error says "client error (Connect)"; the cause says which.
fn transport_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// The caller's request as every backend gets it.
pub(super) struct Forward<'a> {
    pub method: &'a Method,
    pub target: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    /// The trace headers sent in place of the caller's.
    pub trace: &'a Outgoing,
}

/// Sends one request to a backend and waits for its answer's head, within
/// the backend timeout and the request's `deadline`, whichever is first.
/// The body is left to stream ([`RelayBody`]) or to be read ([`collect`]).
pub(super) async fn send(
    http: &HttpClient,
    backend_timeout: Duration,
    backend: &Backend,
    forward: &Forward<'_>,
    deadline: Instant,
) -> Result<Response<Incoming>, BackendError> {
    let failed = |failure| BackendError::new(&backend.version, failure);
    let uri = backend_uri(&backend.url, forward.target)
        .map_err(|reason| failed(Failure::Url { url: backend.url.clone(), reason }))?;
    let mut request = Request::new(Body::from(forward.body.clone()));
    *request.method_mut() = forward.method.clone();
    *request.uri_mut() = uri;
    let out = request.headers_mut();
    for (name, value) in forward.headers {
        if forwardable(name) && name.as_str() != VERSION_HEADER && !Outgoing::replaces(name) {
            out.append(name, value.clone());
        }
    }
    forward.trace.apply(out);
    let attempt_deadline = deadline.min(Instant::now() + backend_timeout);
    match tokio::time::timeout_at(attempt_deadline, http.request(request)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            for name in HOP_BY_HOP {
                parts.headers.remove(name);
            }
            // The server frames the relayed body itself (from its size).
            parts.headers.remove(header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, body))
        }
        Ok(Err(e)) => Err(failed(Failure::Transport(transport_error(&e)))),
        Err(_) if Instant::now() >= deadline => Err(failed(Failure::Deadline)),
        Err(_) => Err(failed(Failure::Timeout(backend_timeout.as_millis()))),
    }
}

/// Refuses an answer that says up front it is over `limit` bytes.
pub(super) fn check_size(
    version: &str,
    body: &Incoming,
    limit: u64,
) -> Result<Option<u64>, BackendError> {
    match body.size_hint().exact() {
        Some(bytes) if bytes > limit => {
            Err(BackendError::new(version, Failure::TooLarge { bytes, limit }))
        }
        exact => Ok(exact),
    }
}

/// Reads a whole answer of at most `limit` bytes before `deadline`.
pub(super) async fn collect(
    version: &str,
    body: Incoming,
    limit: u64,
    deadline: Instant,
) -> Result<Bytes, BackendError> {
    collect_with_trailers(version, body, limit, deadline).await.map(|copied| copied.bytes)
}

/// A whole answer and its trailers (a gRPC answer's `grpc-status`).
pub(super) struct Copied {
    pub bytes: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// As [`collect`], keeping the trailers.
pub(super) async fn collect_with_trailers(
    version: &str,
    body: Incoming,
    limit: u64,
    deadline: Instant,
) -> Result<Copied, BackendError> {
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Ok(Ok(collected)) => {
            let trailers = collected.trailers().cloned();
            Ok(Copied { bytes: collected.to_bytes(), trailers })
        }
        Ok(Err(e)) => Err(BackendError::new(version, Failure::Body(e.to_string()))),
        Err(_) => Err(BackendError::new(version, Failure::Deadline)),
    }
}

/// A backend's answer on its way to the caller, frame by frame: memory
/// stays at a few frames whatever the size. It holds the request's
/// in-flight slot until it ends, and fails (the caller's connection is cut)
/// past the request's deadline or past the size limit, for answers whose
/// size was not known up front.
pub(super) struct RelayBody {
    inner: Incoming,
    version: String,
    remaining: u64,
    limit: u64,
    deadline: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
    copy: Option<AnswerCopy>,
}

/// A copy of a relayed answer, for comparing it with the shadow's without
/// holding the caller's answer back: kept while under its limit (past it,
/// or when the answer is cut short, the receiver learns nothing), sent
/// once the answer has ended.
struct AnswerCopy {
    bytes: Vec<u8>,
    limit: usize,
    trailers: Option<HeaderMap>,
    done: oneshot::Sender<Copied>,
}

impl RelayBody {
    pub(super) fn new(
        inner: Incoming,
        version: String,
        limit: u64,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
    ) -> RelayBody {
        RelayBody {
            inner,
            version,
            remaining: limit,
            limit,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            _slot: slot,
            copy: None,
        }
    }

    /// Also copies the answer, up to `limit` bytes, to `done` once it ends.
    pub(super) fn with_copy(mut self, limit: u64, done: oneshot::Sender<Copied>) -> RelayBody {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.copy = Some(AnswerCopy { bytes: Vec::new(), limit, trailers: None, done });
        self
    }

    fn copy_frame(&mut self, frame: &Frame<Bytes>) {
        let Some(copy) = &mut self.copy else { return };
        if let Some(data) = frame.data_ref() {
            if copy.bytes.len().saturating_add(data.len()) > copy.limit {
                self.copy = None;
                return;
            }
            copy.bytes.extend_from_slice(data);
        } else if let Some(trailers) = frame.trailers_ref() {
            copy.trailers = Some(trailers.clone());
        }
    }

    fn finish_copy(&mut self) {
        if let Some(copy) = self.copy.take() {
            let _ =
                copy.done.send(Copied { bytes: Bytes::from(copy.bytes), trailers: copy.trailers });
        }
    }
}

/// Why a relayed answer was cut short.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("version {0}: answer not finished before the request timeout")]
    Deadline(String),
    #[error("version {version}: answer over --max-response-bytes {limit}")]
    TooLarge { version: String, limit: u64 },
    #[error("version {version}: {source}")]
    Backend {
        version: String,
        #[source]
        source: hyper::Error,
    },
}

impl HttpBody for RelayBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // Checked on every frame, not only while the backend is slow: a
        // caller reading slowly from a fast backend is held to the same
        // deadline, so it cannot keep its in-flight slot for long.
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(RelayError::Deadline(this.version.clone())))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(Box::new(RelayError::TooLarge {
                            version: this.version.clone(),
                            limit: this.limit,
                        }))));
                    }
                    this.remaining -= len;
                }
                this.copy_frame(&frame);
                // hyper may stop polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish_copy();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(source))) => {
                Poll::Ready(Some(Err(Box::new(RelayError::Backend {
                    version: this.version.clone(),
                    source,
                }))))
            }
            Poll::Ready(None) => {
                this.finish_copy();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> Uri {
        text.parse().unwrap()
    }

    #[test]
    fn the_backend_keeps_its_authority_for_every_target_form() {
        let base = "http://127.0.0.1:9000";
        let star = backend_uri(base, &target("*")).unwrap();
        assert_eq!(star.port_u16(), Some(9000), "OPTIONS * on the configured port, not 80");
        assert_eq!(star.path_and_query().unwrap().as_str(), "*");
        let absolute = backend_uri(base, &target("http://elsewhere:81/v2/models?x=1")).unwrap();
        assert_eq!(absolute.to_string(), "http://127.0.0.1:9000/v2/models?x=1");
        let bare = backend_uri(base, &target("http://elsewhere:81")).unwrap();
        assert_eq!(bare.to_string(), "http://127.0.0.1:9000/");
        assert_eq!(
            backend_uri(base, &target("/v2/health/ready")).unwrap().to_string(),
            "http://127.0.0.1:9000/v2/health/ready"
        );
        assert_eq!(
            backend_uri("http://h:1/prefix/", &target("/v2?a=b")).unwrap().to_string(),
            "http://h:1/prefix/v2?a=b"
        );
    }
}
