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
}

/// The body of `GET /admin/stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub versions: BTreeMap<String, VersionStats>,
}
