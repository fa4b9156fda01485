//! The Open Inference Protocol's gRPC messages and service
//! (`proto/grpc_service.proto`), generated at build time (`build.rs`),
//! shared by `serve`, `route` and `client` as the REST wire types are.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("inference");

/// The service's full name: its methods' paths start `/{SERVICE}/`.
pub const SERVICE: &str = "inference.GRPCInferenceService";
