//! tractor: one binary that optimizes, serves and rolls out ML models on
//! the tract engine. The module tree follows the subcommands; see
//! `DESIGN.md` in the shared folder for the map.

pub mod bench;
pub mod client;
pub mod engine;
pub mod serve;
pub mod store;
pub mod telemetry;
