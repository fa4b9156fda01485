//! The axum layer: which scope a request needs, the check, the refusal.

use std::time::{Duration, SystemTime};

use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;

use super::jwt::JwtRefusal;
use super::limit::{Exceeded, retry_after_seconds};
use super::{Auth, Caller, Scope, metrics};
use crate::contract::v2::{LIMITED_OUTPUT_HEADER, VERSION_HEADER};

/// Which server a layer guards: the paths and their scopes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `tractor serve`.
    Serve,
    /// The router's traffic port: the same V2/V1 paths, proxied; pins.
    RouterTraffic,
    /// The router's admin listener.
    RouterAdmin,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Needs(Scope),
}

/// The scope a request needs. Only exact paths are open, and anything not
/// known to be a read is classed as inference, so that a path spelt oddly
/// can only ever need more than it should, never less.
pub fn access(surface: Surface, metrics_open: bool, method: &Method, path: &str) -> Access {
    let read = method == Method::GET || method == Method::HEAD;
    let metrics = if metrics_open { Access::Open } else { Access::Needs(Scope::Metrics) };
    match surface {
        Surface::RouterAdmin => match path {
            "/healthz" if read => Access::Open,
            "/metrics" => metrics,
            _ => Access::Needs(Scope::Admin),
        },
        Surface::Serve | Surface::RouterTraffic => match path {
            "/v2/health/live" | "/v2/health/ready" if read => Access::Open,
            "/metrics" => metrics,
            p if read && (p == "/v2" || p.starts_with("/v2/") || p.starts_with("/v1/")) => {
                Access::Needs(Scope::Metadata)
            }
            _ => Access::Needs(Scope::Infer),
        },
    }
}

/// Why a request was refused; each becomes the V2 `{"error": ...}` body
/// with its status and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Unknown,
    Jwt(JwtRefusal),
    Scope { caller: Caller, needed: Scope },
    Exceeded { caller: Caller, exceeded: Exceeded },
}

impl Refusal {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Unknown => "unknown",
            Refusal::Jwt(j) => j.label(),
            Refusal::Scope { .. } => "scope",
            Refusal::Exceeded { exceeded: Exceeded::Rate { .. }, .. } => "rate",
            Refusal::Exceeded { exceeded: Exceeded::Quota { .. }, .. } => "quota",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Missing | Refusal::Unknown | Refusal::Jwt(_) => StatusCode::UNAUTHORIZED,
            Refusal::Scope { .. } => StatusCode::FORBIDDEN,
            Refusal::Exceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn token_name(&self) -> &str {
        match self {
            Refusal::Scope { caller, .. } | Refusal::Exceeded { caller, .. } => &caller.name,
            _ => "",
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::Missing => "this endpoint needs an Authorization: Bearer token".into(),
            Refusal::Unknown => "the bearer token is not known to this server".into(),
            Refusal::Jwt(j) => j.to_string(),
            Refusal::Scope { caller, needed } => {
                format!("the token {:?} lacks the {:?} scope", caller.name, needed.name())
            }
            Refusal::Exceeded { caller, exceeded: Exceeded::Rate { .. } } => {
                format!("the token {:?} is over its rate limit; retry later", caller.name)
            }
            Refusal::Exceeded { caller, exceeded: Exceeded::Quota { .. } } => {
                format!("the token {:?} has used its daily quota", caller.name)
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Exceeded {
                exceeded: Exceeded::Rate { retry_after } | Exceeded::Quota { retry_after },
                ..
            } => Some(*retry_after),
            _ => None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        metrics::refused(self.label(), self.token_name());
        let challenge = match &self {
            Refusal::Missing => Some(r#"Bearer realm="tractor""#.to_string()),
            Refusal::Unknown | Refusal::Jwt(_) => {
                Some(r#"Bearer realm="tractor", error="invalid_token""#.to_string())
            }
            Refusal::Scope { needed, .. } => Some(format!(
                r#"Bearer realm="tractor", error="insufficient_scope", scope="{}""#,
                needed.name()
            )),
            Refusal::Exceeded { .. } => None,
        };
        let mut response =
            (self.status(), axum::Json(serde_json::json!({ "error": self.message() })))
                .into_response();
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(wait) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after_seconds(wait).into());
        }
        response
    }
}

/// The access check as a tower layer. Written as a plain `Service`
/// rather than axum's `from_fn` middleware, which boxes a future and
/// clones the inner service on every request: measured as most of what
/// a token cost a small model's requests (docs/performance.md, section 12).
#[derive(Clone)]
struct Guard {
    auth: Auth,
    surface: Surface,
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { guard: self.clone(), inner }
    }
}

/// A service behind the check: refused requests are answered here and
/// never reach it.
#[derive(Clone)]
struct Guarded<S> {
    guard: Guard,
    inner: S,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.guard.admit(&mut request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => Either::Left(std::future::ready(Ok(refusal.into_response()))),
        }
    }
}

/// Wraps a server's routes in the access check; `None` leaves them open.
pub fn protect(router: Router, auth: Option<&Auth>, surface: Surface) -> Router {
    match auth {
        None => router,
        Some(auth) => router.layer(Guard { auth: auth.clone(), surface }),
    }
}

impl Auth {
    /// Checks one request: its scope, then its token's limits (a refused
    /// scope does not use up the quota). `Ok(None)` for an open endpoint.
    ///
    /// # Errors
    /// The refusal, ready to answer.
    pub fn check(
        &self,
        surface: Surface,
        method: &Method,
        path: &str,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<Caller>, Refusal> {
        if !self.inner.checks_callers {
            return Ok(None);
        }
        let Access::Needs(needed) = access(surface, self.inner.metrics_open, method, path) else {
            return Ok(None);
        };
        let (caller, limits) = self.inner.authenticate(headers)?;
        if !caller.scopes.contains(needed) {
            return Err(Refusal::Scope { caller, needed });
        }
        if let Some(limits) = limits
            && let Err(exceeded) = limits.take(SystemTime::now())
        {
            return Err(Refusal::Exceeded { caller, exceeded });
        }
        Ok(Some(caller))
    }
}

impl Guard {
    /// Checks a request and readies it for the inner service (the caller
    /// in its extensions; at the router, the pin, limit and token headers
    /// rewritten), or says why it is refused.
    fn admit(&self, request: &mut Request) -> Result<(), Refusal> {
        let caller = match self.auth.check(
            self.surface,
            request.method(),
            request.uri().path(),
            request.headers(),
        ) {
            Ok(caller) => caller,
            Err(refusal) => {
                tracing::debug!(reason = refusal.label(), token = refusal.token_name(), "refused");
                return Err(refusal);
            }
        };
        if self.surface == Surface::RouterTraffic {
            // The router's token at its versions has `raw`; what its caller
            // may have is the router's to say (serve::output_limits).
            let headers = request.headers_mut();
            headers.remove(LIMITED_OUTPUT_HEADER);
            if !caller.as_ref().is_some_and(|c| c.scopes.contains(Scope::Raw)) {
                headers.insert(LIMITED_OUTPUT_HEADER, HeaderValue::from_static("true"));
            }
            // A pin chooses which version's figures a request writes, weight-0
            // and shadow versions included: only callers trusted with that may.
            if let Some(caller) = &caller
                && !caller.scopes.contains(Scope::Pin)
                && request.headers_mut().remove(VERSION_HEADER).is_some()
            {
                metrics::pin_ignored(&caller.name);
            }
            if let Some(own) = self.auth.backend_authorization() {
                request.headers_mut().insert(header::AUTHORIZATION, own);
            }
        }
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_need_the_scopes_the_issue_names() {
        use Access::{Needs, Open};
        let serve = |m: Method, p: &str| access(Surface::Serve, false, &m, p);
        assert_eq!(serve(Method::GET, "/v2/health/live"), Open);
        assert_eq!(serve(Method::GET, "/v2/health/ready"), Open);
        assert_eq!(serve(Method::POST, "/v2/health/live"), Needs(Scope::Infer));
        assert_eq!(serve(Method::GET, "/v2/health/live/"), Needs(Scope::Metadata));
        assert_eq!(serve(Method::GET, "/v2"), Needs(Scope::Metadata));
        assert_eq!(serve(Method::GET, "/v2/models/m"), Needs(Scope::Metadata));
        assert_eq!(serve(Method::GET, "/v1/models/m"), Needs(Scope::Metadata));
        assert_eq!(serve(Method::POST, "/v2/models/m/infer"), Needs(Scope::Infer));
        assert_eq!(serve(Method::POST, "/v1/models/m:predict"), Needs(Scope::Infer));
        assert_eq!(serve(Method::GET, "/metrics"), Needs(Scope::Metrics));
        assert_eq!(access(Surface::Serve, true, &Method::GET, "/metrics"), Open);
        assert_eq!(serve(Method::GET, "/anything"), Needs(Scope::Infer));
        let admin = |m: Method, p: &str| access(Surface::RouterAdmin, false, &m, p);
        assert_eq!(admin(Method::GET, "/healthz"), Open);
        assert_eq!(admin(Method::GET, "/admin/stats"), Needs(Scope::Admin));
        assert_eq!(admin(Method::POST, "/admin/stats/reset"), Needs(Scope::Admin));
        assert_eq!(admin(Method::GET, "/admin/routes"), Needs(Scope::Admin));
        assert_eq!(admin(Method::GET, "/metrics"), Needs(Scope::Metrics));
    }
}
