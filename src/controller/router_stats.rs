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

use crate::contract::routes::StatsReport;
use crate::crd::ModelDeployment;
use crate::plan::CanaryFigures;

/// Reads and resets a router's statistics.
pub trait RouterStats: Send + Sync {
    fn read<'a>(
        &'a self,
        md: &'a ModelDeployment,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<CanaryFigures>, String>>;
    fn reset<'a>(&'a self, md: &'a ModelDeployment) -> BoxFuture<'a, Result<(), String>>;
}

/// The router's admin API over HTTP, at its in-cluster Service.
pub struct HttpRouterStats {
    http: reqwest::Client,
}

impl Default for HttpRouterStats {
    fn default() -> Self {
        // A router that does not answer within this is treated as "no data".
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        HttpRouterStats { http }
    }
}

impl RouterStats for HttpRouterStats {
    fn read<'a>(
        &'a self,
        md: &'a ModelDeployment,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<CanaryFigures>, String>> {
        Box::pin(async move {
            let url = format!("{}/admin/stats", super::objects::router_admin_url(md));
            let response = self.http.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let report: StatsReport = response.json().await.map_err(|e| format!("{url}: {e}"))?;
            Ok(CanaryFigures::of(&report, version))
        })
    }

    fn reset<'a>(&'a self, md: &'a ModelDeployment) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let url = format!("{}/admin/stats/reset", super::objects::router_admin_url(md));
            let response = self.http.post(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("{url} answered {}", response.status()))
            }
        })
    }
}
