//! How the controller reads the router's per-version figures.
//!
//! The contract with `tractor route` (its admin listener):
//! - `GET /admin/stats` answers [`StatsReport`]: per version, the requests,
//!   errors, p99 latency and shadow agreement since the last reset;
//! - `POST /admin/stats/reset` starts a new window.
//!
//! A deployment runs several router pods (`spec.router.replicas`, two by
//! default), each counting the requests it proxied, so the controller
//! reads every ready one at its pod IP and merges the reports
//! ([`StatsReport::merged`]), and resets each. Through the admin Service it
//! would read one pod at random per request.
//!
//! Weights go the other way through the routes ConfigMap the router watches,
//! so they survive a router restart without the controller's help.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
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
    #[error("listing the router pods: {0}")]
    Pods(#[source] kube::Error),
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

/// The routers' admin API over HTTP, at each ready router pod, with the
/// controller's token ([`super::access::AdminToken`]): a router that checks
/// callers needs `admin`, one that does not ignores it.
pub struct HttpRouterStats {
    http: reqwest::Client,
    bearer: String,
    client: kube::Client,
    admin_port: u16,
}

impl HttpRouterStats {
    pub fn new(client: kube::Client, token: &super::access::AdminToken) -> Self {
        // A router that does not answer within this is treated as "no data".
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        HttpRouterStats {
            http,
            bearer: format!("Bearer {}", token.token()),
            client,
            admin_port: super::objects::ROUTE_ADMIN_PORT as u16,
        }
    }

    /// Another admin port than the router pods' own, for tests that run
    /// routers on loopback addresses.
    pub fn with_admin_port(mut self, port: u16) -> Self {
        self.admin_port = port;
        self
    }

    /// The admin URL of every router pod of `md` that is ready (the others
    /// take no traffic, so they have nothing to count).
    async fn admin_urls(&self, md: &ModelDeployment) -> Result<Vec<String>, RouterStatsError> {
        let namespace = md.namespace().unwrap_or_else(|| "default".into());
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let selector = super::objects::labels(md, "route", None)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(RouterStatsError::Pods)?;
        Ok(list.items.iter().filter_map(ready_ip).map(|ip| self.url(ip)).collect())
    }

    fn url(&self, ip: std::net::IpAddr) -> String {
        // SocketAddr puts an IPv6 address in brackets.
        format!("http://{}", std::net::SocketAddr::new(ip, self.admin_port))
    }
}

/// A pod's IP when its Ready condition is True.
fn ready_ip(pod: &Pod) -> Option<std::net::IpAddr> {
    let status = pod.status.as_ref()?;
    let ready =
        status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then(|| status.pod_ip.as_deref()?.parse().ok()).flatten()
}

impl RouterStats for HttpRouterStats {
    fn read<'a>(
        &'a self,
        md: &'a ModelDeployment,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<CanaryFigures>, RouterStatsError>> {
        Box::pin(async move {
            let mut reports = vec![];
            for base in self.admin_urls(md).await? {
                // Every pod or none: a window with a pod's share missing
                // would be judged on part of the traffic it claims.
                let url = format!("{base}/admin/stats");
                let response = self.http.get(&url).header(AUTHORIZATION, &self.bearer).send().await;
                let response = checked(&url, response)?;
                let report: StatsReport = response
                    .json()
                    .await
                    .map_err(|source| RouterStatsError::Decode { url: url.clone(), source })?;
                reports.push(report);
            }
            Ok(CanaryFigures::of(&StatsReport::merged(reports), version))
        })
    }

    fn reset<'a>(&'a self, md: &'a ModelDeployment) -> BoxFuture<'a, Result<(), RouterStatsError>> {
        Box::pin(async move {
            for base in self.admin_urls(md).await? {
                let url = format!("{base}/admin/stats/reset");
                let response =
                    self.http.post(&url).header(AUTHORIZATION, &self.bearer).send().await;
                checked(&url, response)?;
            }
            Ok(())
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
