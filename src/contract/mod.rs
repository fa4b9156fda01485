//! What passes between tractor's roles: the V2 wire types and headers that
//! `serve`, `route` and the client share, the router's table and statistics,
//! the optimize Job's result, and the typed arguments of each child role.
//!
//! Each contract is defined once here and both of its sides use it, so the
//! writer and the reader of a message cannot drift apart. It sits just
//! above `crd`: it may import `crd` and nothing else of ours.

pub mod args;
pub mod grpc;
pub mod job;
pub mod routes;
pub mod v2;
