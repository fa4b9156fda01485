//! `serve --grpc-port`: the Open Inference Protocol's gRPC API
//! (`inference.GRPCInferenceService`) and `grpc.health.v1`, on HTTP/2.
//!
//! There is no second request path: metadata and configuration are the
//! REST handlers' answers, read back; `ModelInfer` is translated into a V2
//! binary request ([`super::grpc_convert`]) and goes through
//! `infer::infer_as` (timeout, body limit, in-flight slot, decoding,
//! batcher, metrics under `protocol="grpc"`). Tokens, scopes and limits are
//! REST's ([`crate::auth::grpc`]); TLS is the REST port's certificate.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use super::error::ApiError;
use super::grpc_convert;
use super::metrics::Outcome;
use super::output_limits::OutputLimits;
use super::state::{AppState, ModelPath};
use super::{infer, metadata};
use crate::auth::Caller;
use crate::auth::grpc::{code_of, error_message};
use crate::contract::grpc::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use crate::contract::grpc::{self as pb, SERVICE};
use crate::contract::v2::HEADER_LENGTH;
use crate::listen::{self, ConnectionLimits};
use crate::telemetry::requests;
use crate::tls::TlsServer;

/// How often the health service's status follows readiness: the same
/// order as a kubelet's probe period is fine-grained enough.
const HEALTH_POLL: Duration = Duration::from_millis(200);

/// Where the gRPC port listens, and its TLS side ([`TlsServer::for_h2`]).
#[derive(Debug, Clone)]
pub struct GrpcListen {
    pub addr: SocketAddr,
    pub tls: Option<TlsServer>,
}

/// The service, over the REST server's state.
#[derive(Clone)]
pub struct Service {
    state: AppState,
}

fn at(name: String, version: String) -> ModelPath {
    ModelPath { name, version: (!version.is_empty()).then_some(version) }
}

/// A REST error as the gRPC status the protocol names.
fn api_status(e: ApiError) -> Status {
    let message = match &e {
        ApiError::Internal(_) => "inference failed; see the server log".to_string(),
        other => other.to_string(),
    };
    Status::new(code_of(e.status()), message)
}

/// A REST answer read back: its JSON when it succeeded, else its status.
async fn json_of(
    answer: Result<axum::response::Response, ApiError>,
) -> Result<serde_json::Value, Status> {
    let (status, bytes) = read(answer.map_err(api_status)?).await?;
    if !status.is_success() {
        return Err(Status::new(code_of(status), error_message(status, &bytes)));
    }
    serde_json::from_slice(&bytes).map_err(|e| Status::internal(format!("metadata: {e}")))
}

async fn read(answer: axum::response::Response) -> Result<(StatusCode, bytes::Bytes), Status> {
    let (parts, body) = answer.into_parts();
    // Our own answer, already bounded by the request that made it.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| Status::internal(format!("reading the answer: {e}")))?;
    Ok((parts.status, bytes))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn dims(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
        .unwrap_or_default()
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `grpc-timeout` (`<digits><unit>`, at most 8 digits, units H M S m u n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: self.state.liveness().is_ok() }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.state.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let version = (!r.version.is_empty()).then_some(r.version.as_str());
        self.state.check_model(&r.name, version).map_err(api_status)?;
        Ok(Response::new(pb::ModelReadyResponse { ready: self.state.is_ready() }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let v = json_of(Ok(metadata::server_metadata().await)).await?;
        Ok(Response::new(pb::ServerMetadataResponse {
            name: text(&v["name"]),
            version: text(&v["version"]),
            extensions: strings(&v["extensions"]),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let v = self.model_json(metadata::model_metadata, r.name, r.version).await?;
        let tensors = |v: &serde_json::Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| pb::model_metadata_response::TensorMetadata {
                            name: text(&t["name"]),
                            datatype: text(&t["datatype"]),
                            shape: dims(&t["shape"]),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: text(&v["name"]),
            versions: strings(&v["versions"]),
            platform: text(&v["platform"]),
            inputs: tensors(&v["inputs"]),
            outputs: tensors(&v["outputs"]),
        }))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let v = self.model_json(metadata::model_config, r.name, r.version).await?;
        let datatype = |t: &serde_json::Value| {
            pb::DataType::from_str_name(t["data_type"].as_str().unwrap_or_default())
                .unwrap_or(pb::DataType::TypeInvalid) as i32
        };
        let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
        let scheduling = v.get("dynamic_batching").map(|d| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                preferred_batch_size: Vec::new(),
                max_queue_delay_microseconds: d["max_queue_delay_microseconds"]
                    .as_u64()
                    .unwrap_or(0),
            })
        });
        let config = pb::ModelConfig {
            name: text(&v["name"]),
            platform: text(&v["platform"]),
            backend: text(&v["backend"]),
            max_batch_size: v["max_batch_size"]
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(0),
            input: list(&v["input"])
                .iter()
                .map(|t| pb::ModelInput {
                    name: text(&t["name"]),
                    data_type: datatype(t),
                    dims: dims(&t["dims"]),
                })
                .collect(),
            output: list(&v["output"])
                .iter()
                .map(|t| pb::ModelOutput {
                    name: text(&t["name"]),
                    data_type: datatype(t),
                    dims: dims(&t["dims"]),
                })
                .collect(),
            scheduling_choice: scheduling,
        };
        Ok(Response::new(pb::ModelConfigResponse { config: Some(config) }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let deadline = grpc_timeout(request.metadata());
        let limits = self
            .state
            .inner
            .output_limits
            .for_request(request.extensions().get::<Caller>(), request.metadata().as_ref());
        let work = self.infer(request.into_inner(), limits);
        match deadline {
            Some(wait) => tokio::time::timeout(wait, work).await.unwrap_or_else(|_| {
                self.state.metrics().count_request("grpc", Outcome::Timeout);
                Err(Status::deadline_exceeded(format!(
                    "the request's deadline ({} ms) passed",
                    wait.as_millis()
                )))
            }),
            None => work.await,
        }
        .map(Response::new)
    }
}

impl Service {
    /// The JSON of `handler`, the REST twin of a per-model method, for the
    /// model and version a gRPC request names.
    async fn model_json<F, Fut>(
        &self,
        handler: F,
        name: String,
        version: String,
    ) -> Result<serde_json::Value, Status>
    where
        F: FnOnce(State<AppState>, Path<ModelPath>) -> Fut,
        Fut: Future<Output = Result<axum::response::Response, ApiError>>,
    {
        json_of(handler(State(self.state.clone()), Path(at(name, version))).await).await
    }

    async fn infer(
        &self,
        message: pb::ModelInferRequest,
        limits: Option<OutputLimits>,
    ) -> Result<pb::ModelInferResponse, Status> {
        let state = &self.state;
        let refused = |e: Status, outcome: Outcome| {
            state.metrics().count_request("grpc", outcome);
            e
        };
        let at = at(message.model_name.clone(), message.model_version.clone());
        let outputs: Vec<String> = match state.serving(&at) {
            Ok(loaded) => loaded.model.outputs().iter().map(|s| s.name.clone()).collect(),
            Err(e) => {
                let outcome = e.outcome();
                return Err(refused(api_status(e), outcome));
            }
        };
        let rest =
            grpc_convert::to_rest(&message, &outputs, state.inner.max_body_bytes).map_err(|e| {
                let code = match e {
                    grpc_convert::GrpcRequestError::TooLarge { .. } => {
                        tonic::Code::ResourceExhausted
                    }
                    _ => tonic::Code::InvalidArgument,
                };
                refused(Status::new(code, e.to_string()), Outcome::BadRequest)
            })?;
        drop(message);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, HeaderValue::from(rest.header_length));
        let answer =
            infer::infer_as(state, &at, &headers, Body::from(rest.body), limits, "grpc").await;
        let header_length = answer
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let (status, bytes) = read(answer).await?;
        if !status.is_success() {
            return Err(Status::new(code_of(status), error_message(status, &bytes)));
        }
        grpc_convert::from_rest(bytes, header_length).map_err(|reason| {
            tracing::error!(%reason, "a V2 answer did not translate to gRPC");
            Status::internal("inference failed; see the server log")
        })
    }
}

/// The gRPC routes: the inference service, with the body limit as
/// tonic's decoding limit, and the health service, whose reporter is
/// returned.
pub fn routes(state: AppState) -> (Router, tonic_health::server::HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let limit = state.inner.max_body_bytes;
    let service = GrpcInferenceServiceServer::new(Service { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    (tonic::service::Routes::new(service).add_service(health).into_axum_router(), reporter)
}

/// Serves the gRPC port until `shutdown` resolves, with the health service
/// following readiness.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    auth: Option<crate::auth::Auth>,
    limits: ConnectionLimits,
    tls: Option<TlsServer>,
    shutdown: impl Future<Output = ()>,
) {
    let (routes, reporter) = routes(state.clone());
    let routes = crate::auth::grpc::protect(routes, auth.as_ref(), crate::auth::Surface::Serve);
    let spans =
        requests::Server::serve(requests::Protocol::Grpc, &state.inner.name, &state.inner.version);
    let routes = requests::traced(routes, spans);
    let following = tokio::spawn(async move {
        let mut last = None;
        loop {
            let status = if state.is_ready() && state.liveness().is_ok() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if last != Some(status) {
                reporter.set_service_status("", status).await;
                reporter.set_service_status(SERVICE, status).await;
                last = Some(status);
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    });
    listen::serve_h2(listener, routes, limits, tls, shutdown).await;
    following.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        let of = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(of("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(of("123456789m"), None, "at most 8 digits");
        assert_eq!(of("5x"), None);
        assert_eq!(of("m"), None);
    }
}
