//! tractor: one binary that optimizes, serves and rolls out ML models on
//! the tract engine. The module tree follows the subcommands; see
//! `DESIGN.md` in the shared folder for the map.

pub mod auth;
pub mod bench;
pub mod client;
pub mod contract;
pub mod controller;
pub mod crd;
pub mod engine;
pub mod latency;
pub mod listen;
pub mod local;
pub mod optimize;
pub mod plan;
pub mod process;
pub mod registry;
pub mod route;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod tls;
