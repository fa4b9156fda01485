//! The servers' side of a TCP connection, shared by `tractor serve` and
//! `tractor route`: binding the port, then serving HTTP/1.1 on every
//! connection with the limits a hostile client cannot get around.
//!
//! - A request's head (request line and headers) must arrive within the
//!   header-read timeout, counted from the connection's opening or from the
//!   first byte of a later request; past it the connection is closed.
//! - A kept-alive connection waiting for its next request is closed after
//!   the idle timeout.
//! - A request's body must arrive whole within the body-read timeout of its
//!   head; past it the caller gets 408 and the connection is closed.
//! - At most `max_connections` connections are open at once. One more is
//!   accepted, answered 503 with `Retry-After`, and closed (see [`refuse`]).
//! - On shutdown the listener closes, idle connections close, requests in
//!   flight finish, and whatever is still open when the drain timeout ends
//!   is closed: the process exits within the drain timeout.
//! - With TLS ([`serve_tls`], `tls.rs`), the handshake must finish within
//!   the header-read timeout too.
//! - [`serve_h2`] speaks HTTP/2 instead (gRPC) under the same limits; a
//!   connection is busy while any of its streams is, and idle when none is.
//!
//! # Why hyper by hand rather than `axum::serve`
//! `axum::serve` has none of these limits and waits for every connection
//! on shutdown, half-sent headers included. hyper's own
//! `header_read_timeout` starts when a connection goes idle, so it would be
//! the idle timeout and the head timeout at once; the timers here keep them
//! apart, as Go's `ReadHeaderTimeout` and `IdleTimeout` do.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::tls::TlsServer;

/// Default of `--header-read-timeout-ms`: a request head is a few hundred
/// bytes, so ten seconds is generous on any network, and short enough that
/// connections opened and left silent do not pile up (Go servers commonly
/// use the same figure).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default of `--body-read-timeout-ms`: the default 64 MiB body limit at
/// about 2 MB/s, and the same as the default request timeouts.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// Default of `--idle-timeout-ms`: nginx's `keepalive_timeout`, longer than
/// the 60 s idle timeout of common load balancers, so that the balancer
/// closes first and never sends a request down a connection we just closed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 75_000;
/// Default of `--max-connections`: well under the file-descriptor limit of
/// a container (1 048 576 in Kubernetes, 1024 soft on many desktops, where
/// the accept loop pauses on EMFILE instead), and four times the default
/// in-flight limits, so kept-alive idle clients do not crowd out busy ones.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of `--drain-timeout-ms`: under the 30 s Kubernetes gives a pod
/// between SIGTERM and SIGKILL (`terminationGracePeriodSeconds`), leaving
/// time to exit cleanly.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 20_000;

/// Refused connections answered at once: each lingers up to
/// [`REFUSAL_LINGER`] reading what the client sent, so that its 503 is not
/// lost to a reset. Past this many, a refused connection is closed
/// without an answer: refusals must stay cheaper than service.
const REFUSAL_SLOTS: usize = 64;
/// How long a refused connection is read from before closing (a lingering
/// close, as Apache does): closing a socket with unread data sends a reset,
/// which can destroy the 503 before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Pause after an accept error that is not the client's (EMFILE: out of
/// file descriptors), so the loop does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The answer to a connection over the cap, written before anything is read.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 50\r\n\
\r\n\
{\"error\":\"too many open connections; retry later\"}";

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` for an HTTP server.
///
/// # Errors
/// The operating system refusing the address (taken, not ours, no permission).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })
}

/// What one server allows each connection (`--header-read-timeout-ms` and
/// the other connection flags of `serve` and `route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head must be whole within this of the connection's opening
    /// or of the first byte of a later request.
    pub header_read_timeout: Duration,
    /// A request body must be whole within this of its head (408 past it).
    pub body_read_timeout: Duration,
    /// A kept-alive connection with no request is closed after this.
    pub idle_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// After the shutdown signal, connections still open this long are closed.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: Duration::from_millis(DEFAULT_DRAIN_TIMEOUT_MS),
        }
    }
}

/// Serves `app` on every connection `listener` accepts, within `limits`,
/// until `shutdown` resolves; then drains for at most the drain timeout.
///
/// Nothing a client does ends this function: accept errors are logged and
/// retried, connection errors end that connection only.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, app, limits, None, shutdown).await;
}

/// As [`serve`], speaking TLS on every connection when `tls` is given. The
/// handshake counts against the header-read timeout, so a client that
/// opens a connection and never handshakes is closed like one that never
/// sends a request head.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsServer>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, app, limits, tls, Http::One, shutdown).await;
}

/// As [`serve_tls`], speaking HTTP/2 (gRPC's transport): prior knowledge on
/// plain TCP, ALPN `h2` with TLS ([`TlsServer::for_h2`]).
pub async fn serve_h2(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsServer>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, app, limits, tls, Http::Two, shutdown).await;
}

/// One shutdown for a REST listener and the gRPC listener beside it: the
/// first future resolves when `shutdown` does (and logs that draining
/// starts), and at that moment the second resolves too, so both ports stop
/// taking requests together and drain what they hold.
pub fn drain_together(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (impl Future<Output = ()> + Send + 'static, impl Future<Output = ()> + Send + 'static) {
    let (stop, mut stopped) = watch::channel(false);
    let first = async move {
        shutdown.await;
        tracing::info!("shutdown signal received; draining in-flight requests");
        let _ = stop.send(true);
    };
    // A dropped sender (the first future dropped unresolved) stops too.
    let second = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    (first, second)
}

/// The HTTP version a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Http {
    One,
    Two,
}

async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsServer>,
    http: Http,
    shutdown: impl Future<Output = ()>,
) {
    // Stops with this function: the listener is the reloader's only user.
    let _reloading = tls.clone().map(|tls| AbortOnDrop(tokio::spawn(tls.watch())));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refusing = false;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Finished connections are reaped as they end, so the set
            // holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached; answering new connections 503 until some close"
                );
                refusing = true;
            }
            if let Ok(linger) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(linger);
                });
            }
            continue;
        };
        refusing = false;
        // Answers are small and latency-bound: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let span = tracing::debug_span!("connection", %peer);
        let acceptor = tls.as_ref().map(TlsServer::acceptor);
        connections.spawn(
            serve_connection(stream, acceptor, app.clone(), limits, http, stopped.clone(), slot)
                .instrument(span),
        );
    }
    drop(listener);
    let _ = stop.send(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, drain_timeout = ?limits.drain_timeout, "draining connections");
    }
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain timeout reached; closing the connections still open"
        );
        connections.shutdown().await;
    }
}

/// Aborts a background task when its owner's scope ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Errors of one incoming connection (reset before accept), not of the
/// listener: hyper's and axum's accept loops skip the same ones.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection over the cap with 503 and closes it.
///
/// Accepting and refusing, rather than leaving connections in the kernel's
/// backlog, tells a client at once that this replica is full, so it (or
/// its load balancer) can retry elsewhere, instead of waiting unanswered
/// behind connections that may stay open for the full header and idle
/// timeouts; and the backlog never overflows into silently dropped SYNs.
async fn refuse(mut stream: TcpStream) {
    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// One connection, from accept to close.
async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    http: Http,
    mut stopped: watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    // Started before any handshake: the header-read timeout covers it.
    let clock = Arc::new(Clock::new(limits));
    let watched = Watched { stream, clock: clock.clone() };
    let Some(acceptor) = tls else {
        return serve_http(TokioIo::new(watched), clock, app, limits, http, stopped).await;
    };
    let handshaken = tokio::select! {
        handshaken = acceptor.accept(watched) => handshaken,
        waited = clock.expired() => {
            tracing::debug!("{waited} (TLS handshake included); closing the connection");
            return;
        }
        () = stop_requested(&mut stopped) => return,
    };
    match handshaken {
        Ok(stream) => serve_http(TokioIo::new(stream), clock, app, limits, http, stopped).await,
        // A plain-HTTP client, an unknown or missing client certificate, a
        // scanner: the peer's fault, hence debug.
        Err(e) => tracing::debug!(error = %e, "TLS handshake failed; closing the connection"),
    }
}

/// Runs a connection (either HTTP version: their types share no trait)
/// until it ends, its clock expires, or the server stops.
macro_rules! drive {
    ($connection:ident, $clock:ident, $stopped:ident) => {{
        let mut stopped = $stopped;
        tokio::pin!($connection);
        let served = tokio::select! {
            served = $connection.as_mut() => served,
            waited = $clock.expired() => {
                tracing::debug!("{waited}; closing the connection");
                return;
            }
            () = stop_requested(&mut stopped) => {
                // Closes at once when idle; otherwise after the answers in flight.
                $connection.as_mut().graceful_shutdown();
                tokio::select! {
                    served = $connection.as_mut() => served,
                    waited = $clock.expired() => {
                        tracing::debug!("{waited}; closing the connection");
                        return;
                    }
                }
            }
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }};
}

/// HTTP/1.1 or HTTP/2 on one connection, plain or after its TLS handshake.
async fn serve_http<I>(
    io: I,
    clock: Arc<Clock>,
    app: Router,
    limits: ConnectionLimits,
    http: Http,
    stopped: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |request| {
            handle(app.clone(), clock.clone(), limits.body_read_timeout, request)
        })
    };
    if http == Http::Two {
        let connection = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        drive!(connection, clock, stopped);
    } else {
        let connection = http1::Builder::new().serve_connection(io, service);
        drive!(connection, clock, stopped);
    }
}

/// Resolves once the server stops (or is gone). The watch's guard is
/// dropped here, as it must not be held across the connection's awaits.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await.map(|_| ());
}

/// One request: the body under its deadline, the answer tracked so the
/// connection knows when it is idle again.
async fn handle(
    app: Router,
    clock: Arc<Clock>,
    body_read_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<impl HttpBody<Data = Bytes, Error = axum::Error>>, Infallible> {
    clock.on_request();
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        if body.is_end_stream() {
            Body::new(body)
        } else {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Instant::now() + body_read_timeout,
                timer: None,
                timeout: body_read_timeout,
                expired: expired.clone(),
            })
        }
    });
    let Ok(mut response) = app.oneshot(request).await;
    if expired.load(Ordering::Relaxed) {
        // Whatever the handler made of its failed read, the cause is the
        // client's slowness; the rest of the body is unread, so the
        // connection cannot carry another request.
        response = body_timeout_response(body_read_timeout);
    }
    let answered = Answered(clock);
    // The frame closure owns the guard, so it drops with the body.
    Ok(response.map(|inner| {
        inner.map_frame(move |frame| {
            let _held = &answered;
            frame
        })
    }))
}

fn body_timeout_response(timeout: Duration) -> Response<Body> {
    let message = format!(
        "the request body did not arrive within {} ms (--body-read-timeout-ms)",
        timeout.as_millis()
    );
    let mut response =
        (StatusCode::REQUEST_TIMEOUT, axum::Json(serde_json::json!({ "error": message })))
            .into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What a connection is waiting for, for its read deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading a request head that started at `since` (the connection's
    /// opening, or the first byte after the previous answer).
    Head { since: Instant },
    /// Between requests since `since`: the previous answer was sent.
    Idle { since: Instant },
    /// Requests are being served (one on HTTP/1.1, any number of
    /// streams on HTTP/2): their bodies and answers have their own
    /// deadlines.
    Busy(usize),
}

/// Why a connection was closed by its [`Clock`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Waited {
    #[error("no whole request head within {0:?}")]
    Head(Duration),
    #[error("idle for {0:?}")]
    Idle(Duration),
}

/// The read deadline of one connection, moved by its reads and requests.
struct Clock {
    phase: Mutex<Phase>,
    changed: Notify,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Clock {
    fn new(limits: ConnectionLimits) -> Clock {
        Clock {
            phase: Mutex::new(Phase::Head { since: Instant::now() }),
            changed: Notify::new(),
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    fn deadline(&self) -> Option<(Instant, Waited)> {
        match *self.phase.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Head { since } => {
                Some((since + self.header_read_timeout, Waited::Head(self.header_read_timeout)))
            }
            Phase::Idle { since } => {
                Some((since + self.idle_timeout, Waited::Idle(self.idle_timeout)))
            }
            Phase::Busy(_) => None,
        }
    }

    /// Bytes arrived: on an idle connection, a new request head has begun.
    fn on_bytes(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*phase, Phase::Idle { .. }) {
            *phase = Phase::Head { since: Instant::now() };
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn on_request(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
            _ => Phase::Busy(1),
        };
        drop(phase);
        self.changed.notify_one();
    }

    fn on_answered(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle { since: Instant::now() },
        };
        drop(phase);
        self.changed.notify_one();
    }

    /// Resolves when the current deadline passes without the phase moving.
    async fn expired(&self) -> Waited {
        loop {
            // Registered before the phase is read, so no change is missed.
            let changed = self.changed.notified();
            match self.deadline() {
                None => changed.await,
                Some((deadline, waited)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {
                            if self.deadline().is_some_and(|(d, _)| d <= Instant::now()) {
                                return waited;
                            }
                        }
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// The TCP stream, telling the connection's clock when bytes arrive.
struct Watched {
    stream: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.on_bytes();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The request body was not whole within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails once its deadline passes, and says so to the
/// request's [`handle`], which answers 408 whatever the handler made of it.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    /// Made on the first wait: most bodies arrive with their head.
    timer: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    expired: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer =
                    this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.expired.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Held by an answer's body: when hyper is done with the body (sent, or the
/// connection failed), the connection is idle again and its idle timeout
/// starts.
struct Answered(Arc<Clock>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.on_answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_declares_its_body_length() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(declared, body.len());
        assert!(serde_json::from_str::<serde_json::Value>(body).unwrap()["error"].is_string());
    }

    #[test]
    fn the_clock_keeps_head_and_idle_deadlines_apart() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        };
        let head = Duration::from_secs(2);
        let idle = Duration::from_secs(60);
        let before = Instant::now();
        let clock = Clock::new(limits);
        let (deadline, waited) = clock.deadline().unwrap();
        assert!(matches!(waited, Waited::Head(_)), "a new connection waits for a head");
        assert!(deadline >= before + head && deadline <= Instant::now() + head);
        clock.on_request();
        assert!(clock.deadline().is_none(), "a request in flight has no read deadline");
        let answered = Instant::now();
        clock.on_answered();
        let (deadline, waited) = clock.deadline().unwrap();
        assert!(matches!(waited, Waited::Idle(_)));
        assert!(deadline >= answered + idle);
        let first_byte = Instant::now();
        clock.on_bytes();
        let (deadline, waited) = clock.deadline().unwrap();
        assert!(matches!(waited, Waited::Head(_)), "the next request's first byte");
        assert!(deadline >= first_byte + head && deadline <= Instant::now() + head);
        clock.on_bytes();
        assert_eq!(clock.deadline().unwrap().0, deadline, "later bytes do not move it");
    }

    #[tokio::test]
    async fn the_clock_expires_on_a_silent_connection() {
        let clock = Clock::new(ConnectionLimits {
            header_read_timeout: Duration::from_millis(20),
            ..ConnectionLimits::default()
        });
        let waited = tokio::time::timeout(Duration::from_secs(10), clock.expired()).await;
        assert!(matches!(waited, Ok(Waited::Head(_))));
    }
}
