//! The router's side of the contract: the table it reads (a ConfigMap in a
//! cluster, a file for `tractor up`) and the statistics it answers on
//! `GET /admin/stats`, which the controller and `tractor up` judge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Each version's URL and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteTable {
    pub backends: Vec<Backend>,
    /// A version that also receives a copy of every request, whose answers
    /// are compared with the chosen version's and discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub version: String,
    pub url: String,
    /// Percent of the traffic.
    pub weight: u32,
    /// The version's gRPC endpoint (`http://HOST:PORT`), when it serves
    /// gRPC: where the router's `--grpc-port` sends its requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
}

/// Figures of one version over the current window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct VersionStats {
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
    /// Share of shadowed requests whose answer agreed with the stable one.
    #[serde(default)]
    pub agreement: Option<f64>,
    /// Rows compared for `agreement`, so the reports of several routers
    /// weigh their agreement by what each compared.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compared: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The body of `GET /admin/stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub versions: BTreeMap<String, VersionStats>,
}

impl StatsReport {
    /// The reports of every router pod of one deployment, as one window:
    /// counts add up; agreement is weighed by the rows each compared (by
    /// requests, from a router that does not say); a percentile is the
    /// largest of the pods'. That is an upper bound of the true one: if
    /// each pod has at most 1% of its requests above its own p99, then at
    /// most 1% of all are above the largest. So a canary behind several
    /// routers is judged at most slower than it is, never faster.
    pub fn merged(reports: impl IntoIterator<Item = StatsReport>) -> StatsReport {
        let mut versions: BTreeMap<String, VersionStats> = BTreeMap::new();
        // Agreed rows and their weight, per version.
        let mut agreed: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for report in reports {
            for (version, s) in report.versions {
                let into = versions.entry(version.clone()).or_default();
                into.requests += s.requests;
                into.errors += s.errors;
                into.compared += s.compared;
                into.latency_p50_ms = larger(into.latency_p50_ms, s.latency_p50_ms);
                into.latency_p99_ms = larger(into.latency_p99_ms, s.latency_p99_ms);
                if let Some(share) = s.agreement {
                    let weight = if s.compared > 0 { s.compared } else { s.requests.max(1) };
                    let sums = agreed.entry(version).or_default();
                    sums.0 += share * weight as f64;
                    sums.1 += weight as f64;
                }
            }
        }
        for (version, (sum, weight)) in agreed {
            if let Some(into) = versions.get_mut(&version) {
                into.agreement = Some(sum / weight);
            }
        }
        StatsReport { versions }
    }
}

fn larger(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, p99: f64, agreement: Option<(f64, u64)>) -> VersionStats {
        VersionStats {
            requests,
            errors,
            latency_p50_ms: Some(p99 / 2.0),
            latency_p99_ms: Some(p99),
            agreement: agreement.map(|(share, _)| share),
            compared: agreement.map_or(0, |(_, rows)| rows),
        }
    }

    fn report(entries: &[(&str, VersionStats)]) -> StatsReport {
        StatsReport { versions: entries.iter().map(|(v, s)| (v.to_string(), *s)).collect() }
    }

    #[test]
    fn reports_of_several_routers_add_up_and_keep_the_worst_percentile() {
        let a = report(&[
            ("1", stats(900, 9, 12.0, None)),
            ("2", stats(100, 1, 30.0, Some((1.0, 300)))),
        ]);
        let b = report(&[
            ("1", stats(300, 0, 15.0, None)),
            ("2", stats(50, 4, 20.0, Some((0.5, 100)))),
        ]);
        let merged = StatsReport::merged([a, b]);
        let v2 = merged.versions["2"];
        assert_eq!((v2.requests, v2.errors, v2.compared), (150, 5, 400));
        assert_eq!(v2.latency_p99_ms, Some(30.0));
        assert_eq!(v2.latency_p50_ms, Some(15.0));
        // 300 rows all agreed and 100 rows half: 350 of 400.
        assert!((v2.agreement.unwrap() - 0.875).abs() < 1e-12, "{v2:?}");
        let v1 = merged.versions["1"];
        assert_eq!((v1.requests, v1.errors, v1.agreement), (1200, 9, None));
        assert_eq!(v1.latency_p99_ms, Some(15.0));
    }

    #[test]
    fn one_report_is_itself_and_none_is_empty() {
        let a = report(&[("2", stats(100, 1, 30.0, Some((0.75, 40))))]);
        assert_eq!(StatsReport::merged([a.clone()]), a);
        assert_eq!(StatsReport::merged([]), StatsReport::default());
        // A version only one router saw keeps its figures; one without
        // requests anywhere has no percentiles.
        let quiet = report(&[("2", VersionStats::default())]);
        let merged = StatsReport::merged([quiet, a.clone()]);
        assert_eq!(merged, a);
    }

    #[test]
    fn agreement_from_a_router_without_compared_counts_by_requests() {
        let old = |requests, share| VersionStats {
            requests,
            agreement: Some(share),
            ..VersionStats::default()
        };
        let merged =
            StatsReport::merged([report(&[("2", old(30, 1.0))]), report(&[("2", old(10, 0.0))])]);
        assert_eq!(merged.versions["2"].agreement, Some(0.75));
    }
}
