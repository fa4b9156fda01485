//! How the controller reads the router's per-version figures.
//!
//! The contract with `tractor route` (its admin listener):
//! - `GET /admin/stats` answers [`StatsReport`]: per version, the requests,
//!   errors, p99 latency and shadow agreement since the last reset;
//! - `POST /admin/stats/reset` starts a new window.
//!
//! Weights go the other way through the routes ConfigMap the router watches,
//! so they survive a router restart without the controller's help.

use futures::future::BoxFuture;
use reqwest::header::AUTHORIZATION;

use crate::contract::routes::StatsReport;
use crate::crd::ModelDeployment;
use crate::plan::CanaryFigures;

/// Why the router's statistics could not be read or reset; the controller
/// logs it and judges "no data" for this interval.
#[derive(Debug, thiserror::Error)]
pub enum RouterStatsError {
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("{url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Reads and resets a router's statistics.
pub trait RouterStats: Send + Sync {
    fn read<'a>(
        &'a self,
        md: &'a ModelDeployment,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<CanaryFigures>, RouterStatsError>>;
    fn reset<'a>(&'a self, md: &'a ModelDeployment) -> BoxFuture<'a, Result<(), RouterStatsError>>;
}

/// The router's admin API over HTTP, at its in-cluster admin Service,
/// with the controller's token ([`super::access::AdminToken`]): a router
/// that checks callers needs `admin`, one that does not ignores it.
pub struct HttpRouterStats {
    http: reqwest::Client,
    bearer: String,
}

impl HttpRouterStats {
    pub fn new(token: &super::access::AdminToken) -> Self {
        // A router that does not answer within this is treated as "no data".
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        HttpRouterStats { http, bearer: format!("Bearer {}", token.token()) }
    }
}

impl RouterStats for HttpRouterStats {
    fn read<'a>(
        &'a self,
        md: &'a ModelDeployment,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<CanaryFigures>, RouterStatsError>> {
        Box::pin(async move {
            let url = format!("{}/admin/stats", super::objects::router_admin_url(md));
            let response = self.http.get(&url).header(AUTHORIZATION, &self.bearer).send().await;
            let response = checked(&url, response)?;
            let report: StatsReport = response
                .json()
                .await
                .map_err(|source| RouterStatsError::Decode { url: url.clone(), source })?;
            Ok(CanaryFigures::of(&report, version))
        })
    }

    fn reset<'a>(&'a self, md: &'a ModelDeployment) -> BoxFuture<'a, Result<(), RouterStatsError>> {
        Box::pin(async move {
            let url = format!("{}/admin/stats/reset", super::objects::router_admin_url(md));
            let response = self.http.post(&url).header(AUTHORIZATION, &self.bearer).send().await;
            checked(&url, response).map(|_| ())
        })
    }
}

/// A response that arrived with a success status.
fn checked(
    url: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, RouterStatsError> {
    let response =
        response.map_err(|source| RouterStatsError::Request { url: url.to_string(), source })?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(RouterStatsError::Status { url: url.to_string(), status: response.status() })
    }
}
