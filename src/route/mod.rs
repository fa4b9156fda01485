//! `tractor route`: the weighted router in front of a model's versions.
//!
//! Each request goes to one version: the one named by `x-tractor-version`,
//! else the one a sticky header hashes to, else one drawn by weight. The
//! router measures every version (requests, errors, latency) over a window
//! the controller reads and resets through the admin API, and, when the
//! routing table names a shadow version, sends it a copy of each request and
//! measures how often its answer agrees with the one the caller got.
//!
//! The routing table comes from a file or a ConfigMap, watched, so weights
//! change without dropping requests and survive a router restart.

mod agreement;
mod backend;
pub mod grpc;
mod stats;
mod table;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::contract::routes::{Backend, RouteTable};
pub use crate::contract::v2::VERSION_HEADER;
use crate::listen::{self, BindError, ConnectionLimits, bind};
use crate::telemetry::requests;
use crate::telemetry::trace_context::Outgoing;
use backend::{BackendError, Forward, HttpClient, RelayBody};
pub use stats::Stats;
pub use table::{RoutesSource, TableError, parse_backend};

/// Seconds a client should wait before retrying an overloaded router.
const RETRY_AFTER_SECONDS: &str = "1";
/// Largest answer read whole to compare with the shadow's. V2 answers of
/// classifiers are a few KiB; a bigger one is streamed to the caller, and
/// only the shadow's errors and latency are measured.
const AGREEMENT_MAX_BYTES: u64 = 8 << 20;

/// Errors that stop the router.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub routes: RoutesSource,
    pub sticky_header: Option<String>,
    /// A failed canary request is tried once more on the stable version.
    pub retry_on_stable: bool,
    /// A backend whose answer has not begun within this is an error (502),
    /// never a hang.
    pub backend_timeout: Duration,
    /// The longest one request may take, retry and streamed answer
    /// included: 504 when no answer has begun by then; an answer still
    /// streaming is cut.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Largest answer relayed: refused (502) when its length says so up
    /// front, cut when it streams past it.
    pub max_response_bytes: u64,
    pub max_inflight: usize,
    /// Timeouts and the cap of the traffic and admin connections.
    pub connections: ConnectionLimits,
    /// Tokens, JWT, scopes, the backend token (issue 12); the default checks no one.
    pub auth: crate::auth::AuthConfig,
    /// How https:// backends are verified (`--backend-ca`); without it
    /// they are refused when the routes load.
    pub backend_tls: Option<crate::tls::BackendTls>,
}

/// Shared state of the traffic and admin handlers.
#[derive(Clone)]
pub struct RouterState {
    inner: Arc<Inner>,
}

struct Inner {
    table: RwLock<Arc<RouteTable>>,
    stats: Stats,
    http: HttpClient,
    /// HTTP/2 to the versions' gRPC ports (`grpc.rs`).
    grpc: HttpClient,
    backend_timeout: Duration,
    request_timeout: Duration,
    sticky_header: Option<HeaderName>,
    retry_on_stable: bool,
    max_body_bytes: usize,
    max_response_bytes: u64,
    inflight: Arc<Semaphore>,
    /// Whether https:// backends are allowed (`--backend-ca` given).
    https_backends: bool,
}

impl RouterState {
    pub fn new(config: &RouteConfig, table: RouteTable) -> RouterState {
        let mut connector = HttpConnector::new();
        // Answers are small and latency-bound: never wait for Nagle.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.backend_timeout));
        // The https connector below decides the scheme.
        connector.enforce_http(false);
        let tls =
            config.backend_tls.clone().unwrap_or_else(crate::tls::BackendTls::trusting_nothing);
        let grpc = grpc::client(connector.clone(), &tls);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
        RouterState {
            inner: Arc::new(Inner {
                table: RwLock::new(Arc::new(table)),
                stats: Stats::default(),
                http,
                grpc,
                backend_timeout: config.backend_timeout,
                request_timeout: config.request_timeout,
                sticky_header: config
                    .sticky_header
                    .as_deref()
                    .and_then(|h| HeaderName::try_from(h).ok()),
                retry_on_stable: config.retry_on_stable,
                max_body_bytes: config.max_body_bytes,
                max_response_bytes: config.max_response_bytes,
                inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
                https_backends: config.backend_tls.is_some(),
            }),
        }
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.inner.table.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Swaps the routing table; requests in flight finish on the old one.
    pub fn set_table(&self, table: RouteTable) {
        if let Ok(mut current) = self.inner.table.write() {
            *current = Arc::new(table);
        }
    }

    /// Swaps the routing table if the router can reach all its backends
    /// (https:// ones only with `--backend-ca`).
    ///
    /// # Errors
    /// An https:// backend without `--backend-ca`; the table is unchanged.
    pub fn replace_table(&self, table: RouteTable) -> Result<(), TableError> {
        table::check_tls(&table, self.inner.https_backends)?;
        self.set_table(table);
        Ok(())
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }
}

/// The traffic side: every path is proxied.
pub fn app(state: RouterState) -> Router {
    Router::new().fallback(proxy).with_state(state)
}

/// The admin side: statistics, the current table, health, metrics.
pub fn admin_app(state: RouterState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/admin/stats",
            get(|State(s): State<RouterState>| async move { axum::Json(s.stats().report()) }),
        )
        .route(
            "/admin/stats/reset",
            post(|State(s): State<RouterState>| async move {
                s.stats().reset();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/admin/routes",
            get(|State(s): State<RouterState>| async move { axum::Json((*s.table()).clone()) }),
        )
        .route(
            "/metrics",
            get(|State(s): State<RouterState>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    s.stats().render() + &crate::auth::metrics_text(),
                )
            }),
        )
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Picks the backend for a request.
fn choose<'a>(
    table: &'a RouteTable,
    headers: &HeaderMap,
    sticky: Option<&HeaderName>,
) -> Result<&'a Backend, (StatusCode, String)> {
    if let Some(wanted) = headers.get(VERSION_HEADER) {
        let wanted = wanted.to_str().unwrap_or_default();
        return table.backends.iter().find(|b| b.version == wanted).ok_or_else(|| {
            let known: Vec<&str> = table.backends.iter().map(|b| b.version.as_str()).collect();
            (
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown version {wanted:?} in {VERSION_HEADER}; this router has {known:?}"
                ),
            )
        });
    }
    let total: u64 = table.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "no version takes traffic yet".into()));
    }
    let point = match sticky.and_then(|h| headers.get(h)) {
        // A stable hash of the header value: one user, one version, for as
        // long as the weights stay the same.
        Some(value) => fnv1a(value.as_bytes()) % total,
        None => fastrand::u64(0..total),
    };
    let mut acc = 0;
    for backend in &table.backends {
        acc += u64::from(backend.weight);
        if point < acc {
            return Ok(backend);
        }
    }
    Err((StatusCode::SERVICE_UNAVAILABLE, "no version takes traffic yet".into()))
}

/// FNV-1a: tiny, stable across processes and versions (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A failed attempt: no answer, or a server error (retried on the stable).
fn failed(result: &Result<axum::http::Response<Incoming>, BackendError>) -> bool {
    result.as_ref().map_or(true, |a| a.status().is_server_error() || grpc::failed(a.headers()))
}

/// One attempt on one backend, measured in its figures (until the answer's
/// head: what the backend costs, not how fast the caller reads).
async fn attempt(
    state: &RouterState,
    backend: &Backend,
    forward: &Forward<'_>,
    deadline: tokio::time::Instant,
    over_grpc: bool,
) -> Result<axum::http::Response<Incoming>, BackendError> {
    let started = Instant::now();
    let inner = &state.inner;
    let http = if over_grpc { &inner.grpc } else { &inner.http };
    let result = backend::send(http, inner.backend_timeout, backend, forward, deadline).await;
    state.stats().record(&backend.version, started.elapsed(), failed(&result));
    result
}

fn gateway_error(version: &str, reason: &BackendError) -> Response {
    tracing::warn!(%version, %reason, "backend failed");
    let status =
        if reason.is_deadline() { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
    error(status, format!("version {version} did not answer: {reason}"))
}

/// True when axum's body reader stopped at its length limit (413), rather
/// than for the client's failure to send (400, or 408 from `listen`).
fn over_length_limit(error: &axum::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

async fn proxy(State(state): State<RouterState>, request: Request) -> Response {
    let over_grpc = request.extensions().get::<grpc::GrpcTraffic>().is_some();
    let deadline = tokio::time::Instant::now() + state.inner.request_timeout;
    let (parts, body) = request.into_parts();
    // The body is read before an in-flight slot is taken: a slow client
    // holds its own connection (cut at the body-read timeout), never one of
    // the slots the other callers need.
    let limit = state.inner.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) if over_length_limit(&e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
            );
        }
        Err(_) => return error(StatusCode::BAD_REQUEST, "the request body could not be read"),
    };
    let table = state.table();
    let chosen = match choose(&table, &parts.headers, state.inner.sticky_header.as_ref()) {
        Ok(b) if over_grpc => match grpc::backend(b) {
            Ok(b) => b,
            Err(message) => return error(StatusCode::SERVICE_UNAVAILABLE, message),
        },
        Ok(b) => b.clone(),
        Err((status, message)) => return error(status, message),
    };
    let Ok(slot) = state.inner.inflight.clone().try_acquire_owned() else {
        let mut response =
            error(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight; retry later");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        return response;
    };
    // The caller's trace goes on to the backend, as a child of this
    // request's span when it is exported.
    let span = tracing::Span::current();
    let trace = Outgoing::for_span(&parts.headers, &span);
    let forward = Forward {
        method: &parts.method,
        target: &parts.uri,
        headers: &parts.headers,
        body,
        trace: &trace,
    };
    let mut result = attempt(&state, &chosen, &forward, deadline, over_grpc).await;
    let mut answered_by = chosen.clone();
    if failed(&result)
        && !result.as_ref().is_err_and(BackendError::is_deadline)
        && state.inner.retry_on_stable
        && let Some(stable) = table.backends.first()
        && stable.version != chosen.version
        && let Some(stable) =
            if over_grpc { grpc::backend(stable).ok() } else { Some(stable.clone()) }
    {
        result = attempt(&state, &stable, &forward, deadline, over_grpc).await;
        answered_by = stable;
    }
    requests::record_version(&span, &answered_by.version);
    let answer = match result {
        Ok(answer) => answer,
        Err(reason) => return gateway_error(&answered_by.version, &reason),
    };
    let (head, answer) = answer.into_parts();
    let max_response = state.inner.max_response_bytes;
    let length = match backend::check_size(&answered_by.version, &answer, max_response) {
        Ok(length) => length,
        Err(reason) => return gateway_error(&answered_by.version, &reason),
    };
    let shadow = table
        .shadow
        .as_ref()
        .and_then(|s| table.backends.iter().find(|b| &b.version == s))
        .filter(|shadow| {
            shadow.version != answered_by.version
                && head.status.is_success()
                && parts.method == Method::POST
        })
        // Over gRPC, to the shadow's gRPC endpoint, when it has one.
        .and_then(
            |shadow| if over_grpc { grpc::backend(shadow).ok() } else { Some(shadow.clone()) },
        );
    let copy = || ShadowCopy {
        target: &parts.uri,
        headers: &parts.headers,
        body: forward.body.clone(),
        over_grpc,
    };
    let relay =
        |answer| RelayBody::new(answer, answered_by.version.clone(), max_response, deadline, slot);
    let body = match shadow {
        // gRPC answers stream (no length up front): relayed as they come,
        // with a copy for the comparison once they end.
        Some(shadow) if over_grpc => {
            let (done, copied) = tokio::sync::oneshot::channel();
            shadow_copy(&state, &shadow, copy(), Primary::Relayed(copied));
            Body::new(relay(answer).with_copy(AGREEMENT_MAX_BYTES, done))
        }
        // Small enough to compare: read whole, then both sides are known.
        Some(shadow) if length.is_some_and(|n| n <= AGREEMENT_MAX_BYTES) => {
            let whole =
                match backend::collect(&answered_by.version, answer, AGREEMENT_MAX_BYTES, deadline)
                    .await
                {
                    Ok(whole) => whole,
                    Err(reason) => return gateway_error(&answered_by.version, &reason),
                };
            let primary = agreement::Decoded::from_answer(&head.headers, &whole);
            shadow_copy(&state, &shadow, copy(), primary.map_or(Primary::Unknown, Primary::Read));
            Body::from(whole)
        }
        shadow => {
            if let Some(shadow) = shadow {
                shadow_copy(&state, &shadow, copy(), Primary::Unknown);
            }
            Body::new(relay(answer))
        }
    };
    let mut response = Response::from_parts(head, body);
    if let Ok(v) = HeaderValue::from_str(&answered_by.version) {
        response.headers_mut().insert(VERSION_HEADER, v);
    }
    response
}

/// The request a shadow gets a copy of.
struct ShadowCopy<'a> {
    target: &'a Uri,
    headers: &'a HeaderMap,
    body: Bytes,
    over_grpc: bool,
}

/// The caller's answer, as far as the comparison can know it.
enum Primary {
    /// Streamed without a copy (too large, or of unknown size on REST).
    Unknown,
    /// Read whole before it was relayed.
    Read(agreement::Decoded),
    /// Relayed as it came; its copy arrives when it has ended (gRPC).
    Relayed(tokio::sync::oneshot::Receiver<backend::Copied>),
}

/// Whether a gRPC answer succeeded: `grpc-status: 0` in its trailers (or
/// its head, for a trailers-only answer).
fn grpc_ok(head: &HeaderMap, trailers: Option<&HeaderMap>) -> bool {
    trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.get("grpc-status"))
        .is_some_and(|status| status == "0")
}

/// Sends the shadow version a copy of the request, in the background: the
/// caller never waits for it. Its errors and latency are measured, and,
/// when the caller's answer is known (`primary`), its agreement.
fn shadow_copy(state: &RouterState, shadow: &Backend, copy: ShadowCopy<'_>, primary: Primary) {
    let (state, shadow) = (state.clone(), shadow.clone());
    let (target, headers, body, over_grpc) =
        (copy.target.clone(), copy.headers.clone(), copy.body, copy.over_grpc);
    // A child of the request's span (the current one), and the parent of
    // the shadow version's own span.
    let span = requests::shadow_span(&shadow.version);
    let trace = Outgoing::for_span(&headers, &span);
    let recorded = span.clone();
    tokio::spawn(
        async move {
            let inner = &state.inner;
            let deadline = tokio::time::Instant::now() + inner.request_timeout;
            let forward = Forward {
                method: &Method::POST,
                target: &target,
                headers: &headers,
                body,
                trace: &trace,
            };
            let started = Instant::now();
            let http = if over_grpc { &inner.grpc } else { &inner.http };
            let answer =
                backend::send(http, inner.backend_timeout, &shadow, &forward, deadline).await;
            // A REST answer's head says how it went; a gRPC one's trailers do.
            if !over_grpc || answer.is_err() {
                state.stats().record_shadow(&shadow.version, started.elapsed(), failed(&answer));
            }
            let Ok(answer) = answer else { return };
            requests::record_shadow_answer(&recorded, answer.status());
            let (head, body) = answer.into_parts();
            let whole = if head.status.is_success() {
                backend::collect_with_trailers(&shadow.version, body, AGREEMENT_MAX_BYTES, deadline)
                    .await
                    .ok()
            } else {
                None
            };
            let trailers = whole.as_ref().and_then(|w| w.trailers.as_ref());
            if over_grpc {
                let failed = grpc::failed(&head.headers) || trailers.is_some_and(grpc::failed);
                state.stats().record_shadow(&shadow.version, started.elapsed(), failed);
            }
            let theirs = match whole {
                Some(w) if over_grpc && grpc_ok(&head.headers, w.trailers.as_ref()) => {
                    agreement::Decoded::from_grpc(&w.bytes)
                }
                Some(w) if !over_grpc => agreement::Decoded::from_answer(&head.headers, &w.bytes),
                _ => None,
            };
            let Some(theirs) = theirs else { return };
            let ours = match primary {
                Primary::Unknown => return,
                Primary::Read(ours) => ours,
                Primary::Relayed(copied) => {
                    let Ok(Ok(copied)) = tokio::time::timeout_at(deadline, copied).await else {
                        return;
                    };
                    if !grpc_ok(&HeaderMap::new(), copied.trailers.as_ref()) {
                        return;
                    }
                    let Some(ours) = agreement::Decoded::from_grpc(&copied.bytes) else { return };
                    ours
                }
            };
            if let Some((agreed, compared)) = agreement::compare(&ours, &theirs) {
                state.stats().record_agreement(&shadow.version, agreed, compared);
            }
        }
        .instrument(span),
    );
}

/// Runs the router until `shutdown` resolves, then drains in-flight requests.
///
/// # Errors
/// Ports that cannot be bound, or a routing table that cannot be read at start.
pub async fn run(
    config: RouteConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouteError> {
    run_with_tls(config, None, shutdown).await
}

/// As [`run`], serving HTTPS on the traffic port when `tls` is given
/// (`tls.rs`); the admin port stays plain, on loopback by default.
///
/// # Errors
/// As [`run`].
pub async fn run_with_tls(
    config: RouteConfig,
    tls: Option<crate::tls::TlsServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouteError> {
    run_with_grpc(config, tls, None, shutdown).await
}

/// As [`run_with_tls`], proxying gRPC too when `grpc` is given
/// (`route --grpc-port`, `grpc.rs`).
///
/// # Errors
/// As [`run`].
pub async fn run_with_grpc(
    config: RouteConfig,
    tls: Option<crate::tls::TlsServer>,
    grpc: Option<grpc::GrpcListen>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouteError> {
    let initial = config.routes.load().await?;
    table::check_tls(&initial, config.backend_tls.is_some())?;
    let state = RouterState::new(&config, initial);
    let auth = crate::auth::Auth::start(&config.auth).await?;
    let listener = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, routes = ?state.table(), "router listening");
    let watcher = tokio::spawn(config.routes.clone().watch(state.clone()));
    let admin_server = tokio::spawn(listen::serve(
        admin,
        crate::auth::protect(
            admin_app(state.clone()),
            auth.as_ref(),
            crate::auth::Surface::RouterAdmin,
        ),
        config.connections,
        std::future::pending(),
    ));
    let (draining, stopped) = listen::drain_together(shutdown);
    let grpc_server = match grpc {
        Some(grpc) => {
            let listener = bind(grpc.addr).await?;
            tracing::info!(grpc = %grpc.addr, "router proxying gRPC");
            Some(tokio::spawn(grpc::serve(
                listener,
                state.clone(),
                auth.clone(),
                config.connections,
                grpc.tls,
                stopped,
            )))
        }
        None => None,
    };
    let traffic =
        crate::auth::protect(app(state), auth.as_ref(), crate::auth::Surface::RouterTraffic);
    let traffic = requests::traced(traffic, requests::Server::router(requests::Protocol::Rest));
    listen::serve_tls(listener, traffic, config.connections, tls, draining).await;
    if let Some(grpc) = grpc_server {
        let _ = grpc.await;
    }
    watcher.abort();
    admin_server.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(weights: &[(&str, u32)]) -> RouteTable {
        RouteTable {
            backends: weights
                .iter()
                .map(|(v, w)| Backend {
                    version: v.to_string(),
                    url: format!("http://{v}"),
                    weight: *w,
                    grpc: None,
                })
                .collect(),
            shadow: None,
        }
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let t = table(&[("1", 80), ("2", 20)]);
        let mut twos = 0;
        for _ in 0..20_000 {
            if choose(&t, &HeaderMap::new(), None).unwrap().version == "2" {
                twos += 1;
            }
        }
        let share = twos as f64 / 20_000.0;
        assert!((share - 0.2).abs() < 0.02, "{share}");
    }

    #[test]
    fn the_version_header_wins_and_unknown_versions_are_400() {
        let t = table(&[("1", 100), ("2", 0)]);
        let mut headers = HeaderMap::new();
        headers.insert(VERSION_HEADER, HeaderValue::from_static("2"));
        assert_eq!(choose(&t, &headers, None).unwrap().version, "2");
        headers.insert(VERSION_HEADER, HeaderValue::from_static("9"));
        assert_eq!(choose(&t, &headers, None).unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(
            choose(&table(&[("1", 0)]), &HeaderMap::new(), None).unwrap_err().0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn sticky_headers_keep_a_user_on_one_version() {
        let t = table(&[("1", 50), ("2", 50)]);
        let sticky = HeaderName::from_static("x-user");
        let mut seen = std::collections::BTreeSet::new();
        for user in 0..200 {
            let mut headers = HeaderMap::new();
            headers.insert(&sticky, HeaderValue::from_str(&format!("user-{user}")).unwrap());
            let first = choose(&t, &headers, Some(&sticky)).unwrap().version.clone();
            for _ in 0..5 {
                assert_eq!(choose(&t, &headers, Some(&sticky)).unwrap().version, first);
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 2, "users spread over both versions");
    }
}
