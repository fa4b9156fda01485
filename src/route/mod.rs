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
mod stats;
mod table;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::contract::routes::{Backend, RouteTable};
pub use crate::contract::v2::VERSION_HEADER;
use crate::listen::{BindError, bind};
pub use stats::Stats;
pub use table::{RoutesSource, TableError, parse_backend};

/// Seconds a client should wait before retrying an overloaded router.
const RETRY_AFTER_SECONDS: &str = "1";

/// Errors that stop the router.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Why one backend gave no answer: the caller gets a 502 naming it.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error("{version}: bad backend URL {url:?}: {source}")]
    Url {
        version: String,
        url: String,
        #[source]
        source: axum::http::uri::InvalidUri,
    },
    /// hyper's client error says "client error (Connect)"; the message
    /// carries its causes, which say which.
    #[error("{version}: {reason}")]
    Transport { version: String, reason: String },
    #[error("{version}: {source}")]
    Body {
        version: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{version}: no answer within {ms} ms")]
    Timeout { version: String, ms: u128 },
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub routes: RoutesSource,
    pub sticky_header: Option<String>,
    /// A failed canary request is tried once more on the stable version.
    pub retry_on_stable: bool,
    /// A backend slower than this counts as an error (502), never a hang.
    pub backend_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_inflight: usize,
    /// Tokens, JWT, scopes, the backend token (issue 12); the default checks no one.
    pub auth: crate::auth::AuthConfig,
}

/// Shared state of the traffic and admin handlers.
#[derive(Clone)]
pub struct RouterState {
    inner: Arc<Inner>,
}

/// The client to backends: hyper's own pooled client rather than reqwest.
/// The router is a hop every request pays for, and reqwest's conveniences
/// (URL parsing with IDNA, redirect and header layers) were a measurable part
/// of its CPU per request; a proxy needs none of them.
type HttpClient = Client<HttpConnector, Body>;

struct Inner {
    table: RwLock<Arc<RouteTable>>,
    stats: Stats,
    http: HttpClient,
    backend_timeout: Duration,
    sticky_header: Option<HeaderName>,
    retry_on_stable: bool,
    max_body_bytes: usize,
    inflight: Arc<Semaphore>,
}

impl RouterState {
    pub fn new(config: &RouteConfig, table: RouteTable) -> RouterState {
        let mut connector = HttpConnector::new();
        // Answers are small and latency-bound: never wait for Nagle.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.backend_timeout));
        let http =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
        RouterState {
            inner: Arc::new(Inner {
                table: RwLock::new(Arc::new(table)),
                stats: Stats::default(),
                http,
                backend_timeout: config.backend_timeout,
                sticky_header: config
                    .sticky_header
                    .as_deref()
                    .and_then(|h| HeaderName::try_from(h).ok()),
                retry_on_stable: config.retry_on_stable,
                max_body_bytes: config.max_body_bytes,
                inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
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

/// What a backend answered.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Sends one request to a backend and reads its whole answer, within the
/// backend timeout (a slow backend is an error, never a hang).
async fn send(
    inner: &Inner,
    backend: &Backend,
    method: &axum::http::Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Answer, BackendError> {
    let version = || backend.version.clone();
    let uri: axum::http::Uri =
        format!("{}{path_and_query}", backend.url.trim_end_matches('/')).parse().map_err(
            |source| BackendError::Url { version: version(), url: backend.url.clone(), source },
        )?;
    let mut request = axum::http::Request::new(Body::from(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    let out = request.headers_mut();
    for (name, value) in headers {
        if forwardable(name) && name.as_str() != VERSION_HEADER {
            out.append(name, value.clone());
        }
    }
    let exchange = async {
        let response = inner.http.request(request).await.map_err(|e| BackendError::Transport {
            version: version(),
            reason: transport_error(&e),
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| BackendError::Body { version: version(), source: Box::new(e) })?
            .to_bytes();
        let mut headers = parts.headers;
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove(header::CONTENT_LENGTH);
        Ok(Answer { status: parts.status, headers, body })
    };
    tokio::time::timeout(inner.backend_timeout, exchange).await.unwrap_or_else(|_| {
        Err(BackendError::Timeout { version: version(), ms: inner.backend_timeout.as_millis() })
    })
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

async fn proxy(State(state): State<RouterState>, request: Request) -> Response {
    let Ok(_permit) = state.inner.inflight.clone().try_acquire_owned() else {
        let mut response =
            error(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight; retry later");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        return response;
    };
    let (parts, body) = request.into_parts();
    let limit = state.inner.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
            );
        }
    };
    let table = state.table();
    let chosen = match choose(&table, &parts.headers, state.inner.sticky_header.as_ref()) {
        Ok(b) => b.clone(),
        Err((status, message)) => return error(status, message),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let started = Instant::now();
    let mut result =
        send(&state.inner, &chosen, &parts.method, &path, &parts.headers, body.clone()).await;
    let failed =
        |r: &Result<Answer, BackendError>| r.as_ref().map_or(true, |a| a.status.is_server_error());
    state.stats().record(&chosen.version, started.elapsed(), failed(&result));
    let mut answered_by = chosen.clone();
    let stable = table.backends.first();
    if failed(&result)
        && state.inner.retry_on_stable
        && let Some(stable) = stable
        && stable.version != chosen.version
    {
        let retry_started = Instant::now();
        result =
            send(&state.inner, stable, &parts.method, &path, &parts.headers, body.clone()).await;
        state.stats().record(&stable.version, retry_started.elapsed(), failed(&result));
        answered_by = stable.clone();
    }
    let answer = match result {
        Ok(answer) => answer,
        Err(reason) => {
            tracing::warn!(version = %answered_by.version, %reason, "backend failed");
            return error(
                StatusCode::BAD_GATEWAY,
                format!("version {} did not answer: {reason}", answered_by.version),
            );
        }
    };
    if let Some(shadow) =
        table.shadow.as_ref().and_then(|s| table.backends.iter().find(|b| &b.version == s))
        && shadow.version != answered_by.version
        && answer.status.is_success()
        && parts.method == axum::http::Method::POST
    {
        let (state, shadow, headers) = (state.clone(), shadow.clone(), parts.headers.clone());
        let primary = agreement::Decoded::from_answer(&answer.headers, &answer.body);
        tokio::spawn(async move {
            let started = Instant::now();
            let copy =
                send(&state.inner, &shadow, &axum::http::Method::POST, &path, &headers, body).await;
            let failed = copy.as_ref().map_or(true, |a| a.status.is_server_error());
            state.stats().record_shadow(&shadow.version, started.elapsed(), failed);
            if let (Some(primary), Ok(copy)) = (primary, copy)
                && copy.status.is_success()
                && let Some(theirs) = agreement::Decoded::from_answer(&copy.headers, &copy.body)
                && let Some((agreed, compared)) = agreement::compare(&primary, &theirs)
            {
                state.stats().record_agreement(&shadow.version, agreed, compared);
            }
        });
    }
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    if let Ok(v) = HeaderValue::from_str(&answered_by.version) {
        response.headers_mut().insert(VERSION_HEADER, v);
    }
    response
}

/// Runs the router until `shutdown` resolves, then drains in-flight requests.
///
/// # Errors
/// Ports that cannot be bound, or a routing table that cannot be read at start.
pub async fn run(
    config: RouteConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouteError> {
    let initial = config.routes.load().await?;
    let state = RouterState::new(&config, initial);
    let auth = crate::auth::Auth::start(&config.auth)?;
    let listener = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, routes = ?state.table(), "router listening");
    let watcher = tokio::spawn(config.routes.clone().watch(state.clone()));
    let admin_server = tokio::spawn({
        let app = crate::auth::protect(
            admin_app(state.clone()),
            auth.as_ref(),
            crate::auth::Surface::RouterAdmin,
        );
        async move { axum::serve(admin, app).await }
    });
    let draining = async move {
        shutdown.await;
        tracing::info!("shutdown signal received; draining in-flight requests");
    };
    let traffic =
        crate::auth::protect(app(state), auth.as_ref(), crate::auth::Surface::RouterTraffic);
    let served = axum::serve(listener, traffic).with_graceful_shutdown(draining).await;
    watcher.abort();
    admin_server.abort();
    served.map_err(RouteError::Http)
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
