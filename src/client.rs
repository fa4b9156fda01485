//! A small Open Inference Protocol client, for `tractor infer` and
//! `tractor bench`, and the request generator both use.

use serde_json::Value;

use crate::contract::v2::{InferRequest, RequestInput};
use crate::engine::{DataType, Dim, Tensor, TensorSpec};
use crate::serve::v2::JsonData;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("reading {path}: {reason}")]
    Input { path: String, reason: String },
}

/// Base URL plus model name, with the paths of the V2 API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    base: String,
    model: String,
    version: Option<String>,
}

impl Endpoint {
    pub fn new(base: &str, model: &str, version: Option<&str>) -> Endpoint {
        Endpoint {
            base: base.trim_end_matches('/').to_string(),
            model: model.to_string(),
            version: version.map(str::to_string),
        }
    }

    fn model_path(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/v2/models/{}/versions/{v}", self.base, self.model),
            None => format!("{}/v2/models/{}", self.base, self.model),
        }
    }

    pub fn metadata_url(&self) -> String {
        self.model_path()
    }

    pub fn infer_url(&self) -> String {
        format!("{}/infer", self.model_path())
    }
}

/// GETs the model metadata and reads its inputs.
///
/// # Errors
/// Transport failures, non-2xx answers and metadata that is not V2.
pub async fn fetch_input_specs(
    http: &reqwest::Client,
    endpoint: &Endpoint,
) -> Result<Vec<TensorSpec>, ClientError> {
    let url = endpoint.metadata_url();
    let metadata = get_json(http, &url).await?;
    specs_from_metadata(&url, &metadata)
}

/// The inputs of V2 model metadata (REST's JSON, or gRPC's made JSON).
fn specs_from_metadata(url: &str, metadata: &Value) -> Result<Vec<TensorSpec>, ClientError> {
    let protocol = |reason: String| ClientError::Protocol { url: url.to_string(), reason };
    let inputs = metadata["inputs"]
        .as_array()
        .ok_or_else(|| protocol("no \"inputs\" in the metadata".into()))?;
    inputs
        .iter()
        .map(|input| {
            let name =
                input["name"].as_str().ok_or_else(|| protocol("an input has no name".into()))?;
            let datatype = DataType::from_v2_name(input["datatype"].as_str().unwrap_or_default())
                .map_err(|e| protocol(e.to_string()))?;
            let shape = input["shape"]
                .as_array()
                .ok_or_else(|| protocol(format!("input {name:?} has no shape")))?
                .iter()
                .enumerate()
                .map(|(axis, d)| match d.as_i64() {
                    Some(n) if n >= 0 => Dim::Fixed(n as usize),
                    _ if axis == 0 => Dim::Batch,
                    _ => Dim::Dynamic(format!("{name}_{axis}")),
                })
                .collect();
            Ok(TensorSpec { name: name.to_string(), datatype, shape })
        })
        .collect()
}

/// GETs a URL and parses the JSON answer.
///
/// # Errors
/// Transport failures, non-2xx answers, bodies that are not JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, ClientError> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|source| ClientError::Http { url: url.to_string(), source })?;
    json_answer(url, response).await
}

/// POSTs a JSON body and parses the JSON answer.
///
/// # Errors
/// As [`get_json`].
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<Value, ClientError> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|source| ClientError::Http { url: url.to_string(), source })?;
    json_answer(url, response).await
}

async fn json_answer(url: &str, response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|source| ClientError::Http { url: url.to_string(), source })?;
    if !status.is_success() {
        return Err(ClientError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
        url: url.to_string(),
        reason: format!("the body is not JSON: {e}"),
    })
}

pub use crate::engine::synthetic_inputs;

/// A V2 JSON request carrying `tensors` as the inputs named by `specs`.
pub fn v2_request<'a>(
    specs: &'a [TensorSpec],
    tensors: &'a [Tensor],
) -> InferRequest<JsonData<'a>> {
    let inputs = specs
        .iter()
        .zip(tensors)
        .map(|(spec, t)| RequestInput {
            name: spec.name.clone(),
            // Our own tensors: no dimension comes near i64::MAX.
            shape: t.shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect(),
            datatype: t.datatype().v2_name().to_string(),
            parameters: None,
            data: Some(JsonData(&t.data)),
        })
        .collect();
    InferRequest { id: None, parameters: None, inputs, outputs: None }
}

/// How `infer` and `bench` talk to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// V2 REST, JSON tensors.
    #[default]
    Rest,
    /// V2 REST with the binary tensor data extension.
    RestBinary,
    /// The Open Inference Protocol's gRPC API (`--url http://HOST:8001`).
    Grpc,
}

/// A V2 REST body with every input in the binary extension and every
/// output asked for as binary; the second value is the
/// `Inference-Header-Content-Length`.
pub fn v2_binary_request(specs: &[TensorSpec], tensors: &[Tensor]) -> (Vec<u8>, usize) {
    let inputs: Vec<Value> = specs
        .iter()
        .zip(tensors)
        .map(|(spec, t)| {
            serde_json::json!({
                "name": spec.name,
                "shape": t.shape,
                "datatype": t.datatype().v2_name(),
                "parameters": {"binary_data_size": t.data.len() * t.datatype().size_of()},
            })
        })
        .collect();
    let header = serde_json::json!({"inputs": inputs, "parameters": {"binary_data_output": true}});
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    let header_length = body.len();
    for t in tensors {
        body.extend_from_slice(&t.data.to_le_bytes());
    }
    (body, header_length)
}

/// An HTTP/2 channel to a gRPC endpoint.
///
/// # Errors
/// A URL that does not parse, or a server that does not answer.
pub async fn grpc_channel(url: &str) -> Result<tonic::transport::Channel, ClientError> {
    let protocol = |reason: String| ClientError::Protocol { url: url.to_string(), reason };
    tonic::transport::Channel::from_shared(url.to_string())
        .map_err(|e| protocol(e.to_string()))?
        .connect()
        .await
        .map_err(|e| protocol(format!("cannot connect: {e}")))
}

/// The gRPC client, with `token` (if any) as every call's `authorization`.
pub type GrpcClient =
    crate::contract::grpc::grpc_inference_service_client::GrpcInferenceServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>,
    >;

/// Adds `authorization: Bearer TOKEN` to every gRPC call.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A gRPC client of `url`, sending `token` with every call.
///
/// # Errors
/// As [`grpc_channel`], and a token that is not ASCII.
pub async fn grpc_client(url: &str, token: Option<&str>) -> Result<GrpcClient, ClientError> {
    let channel = grpc_channel(url).await?;
    let token = token.map(|t| format!("Bearer {t}").parse()).transpose().map_err(|_| {
        ClientError::Protocol { url: url.into(), reason: "the token is not ASCII".into() }
    })?;
    Ok(crate::contract::grpc::grpc_inference_service_client::GrpcInferenceServiceClient::with_interceptor(
        channel,
        BearerToken(token),
    )
    .max_decoding_message_size(usize::MAX))
}

fn grpc_error(url: &str, status: tonic::Status) -> ClientError {
    ClientError::Status {
        url: url.to_string(),
        status: status.code() as u16,
        body: format!("{:?}: {}", status.code(), status.message()),
    }
}

/// A model's inputs, from its gRPC metadata.
///
/// # Errors
/// The call's status, or metadata that is not V2.
pub async fn grpc_input_specs(
    client: &mut GrpcClient,
    url: &str,
    model: &str,
) -> Result<Vec<TensorSpec>, ClientError> {
    let request =
        crate::contract::grpc::ModelMetadataRequest { name: model.into(), version: String::new() };
    let metadata =
        client.model_metadata(request).await.map_err(|s| grpc_error(url, s))?.into_inner();
    let inputs: Vec<Value> = metadata
        .inputs
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
        .collect();
    specs_from_metadata(url, &serde_json::json!({ "inputs": inputs }))
}

/// A gRPC request carrying `tensors` as raw contents (as Triton's client sends).
pub fn grpc_request(
    model: &str,
    specs: &[TensorSpec],
    tensors: &[Tensor],
) -> crate::contract::grpc::ModelInferRequest {
    use crate::contract::grpc::model_infer_request::InferInputTensor;
    crate::contract::grpc::ModelInferRequest {
        model_name: model.to_string(),
        inputs: specs
            .iter()
            .zip(tensors)
            .map(|(spec, t)| InferInputTensor {
                name: spec.name.clone(),
                datatype: t.datatype().v2_name().to_string(),
                shape: t.shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: tensors.iter().map(|t| t.data.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Sends one gRPC inference; the answer as V2 JSON.
///
/// # Errors
/// The call's status, or raw outputs that do not fit their shapes.
pub async fn grpc_infer(
    client: &mut GrpcClient,
    url: &str,
    request: crate::contract::grpc::ModelInferRequest,
) -> Result<Value, ClientError> {
    let answer = client.model_infer(request).await.map_err(|s| grpc_error(url, s))?.into_inner();
    let protocol = |reason: String| ClientError::Protocol { url: url.to_string(), reason };
    let mut outputs = Vec::new();
    for (output, raw) in answer.outputs.iter().zip(&answer.raw_output_contents) {
        let datatype =
            DataType::from_v2_name(&output.datatype).map_err(|e| protocol(e.to_string()))?;
        let data = crate::engine::TensorData::from_le_bytes(datatype, raw)
            .map_err(|e| protocol(format!("output {:?}: {e}", output.name)))?;
        outputs.push(serde_json::json!({
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
            "data": serde_json::to_value(JsonData(&data)).unwrap_or_default(),
        }));
    }
    Ok(serde_json::json!({
        "model_name": answer.model_name,
        "model_version": answer.model_version,
        "id": answer.id,
        "outputs": outputs,
    }))
}

/// A V2 JSON request (`{"inputs": [{"name", "shape", "datatype", "data"}]}`)
/// as a gRPC request with typed contents.
///
/// # Errors
/// An input without a name, shape or datatype, data that is not numbers,
/// a datatype gRPC has no typed field for.
pub fn grpc_from_json(
    model: &str,
    request: &Value,
) -> Result<crate::contract::grpc::ModelInferRequest, ClientError> {
    use crate::contract::grpc::InferTensorContents;
    use crate::contract::grpc::model_infer_request::InferInputTensor;
    let bad = |reason: String| ClientError::Input { path: "the request".into(), reason };
    fn flatten<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
            other => out.push(other),
        }
    }
    /// Integers narrowed to a typed field's element type, refused in order.
    fn narrowed<T: TryFrom<i64>, E>(
        values: &[&Value],
        integer: impl Fn(&Value) -> Result<i64, E>,
        out_of_range: impl Fn(i64) -> E,
    ) -> Result<Vec<T>, E> {
        values
            .iter()
            .map(|v| integer(v).and_then(|i| T::try_from(i).map_err(|_| out_of_range(i))))
            .collect()
    }
    let mut inputs = Vec::new();
    for input in request["inputs"].as_array().ok_or_else(|| bad("no \"inputs\" array".into()))? {
        let name = input["name"].as_str().ok_or_else(|| bad("an input has no name".into()))?;
        let datatype = input["datatype"]
            .as_str()
            .ok_or_else(|| bad(format!("input {name:?} has no datatype")))?;
        let shape: Vec<i64> = input["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("input {name:?} has no shape")))?
            .iter()
            .map(|d| d.as_i64().ok_or_else(|| bad(format!("input {name:?}: shape of integers"))))
            .collect::<Result<_, _>>()?;
        let mut values = Vec::new();
        flatten(&input["data"], &mut values);
        let number = |v: &Value| {
            v.as_f64().ok_or_else(|| bad(format!("input {name:?}: {v} is not a number")))
        };
        let integer = |v: &Value| {
            v.as_i64().ok_or_else(|| bad(format!("input {name:?}: {v} is not an integer")))
        };
        let out_of_range = |i: i64| bad(format!("input {name:?}: {i} out of range"));
        let mut contents = InferTensorContents::default();
        match datatype {
            "FP32" => {
                contents.fp32_contents =
                    values.iter().map(|v| number(v).map(|x| x as f32)).collect::<Result<_, _>>()?
            }
            "FP64" => {
                contents.fp64_contents =
                    values.iter().map(|v| number(v)).collect::<Result<_, _>>()?
            }
            "INT64" => {
                contents.int64_contents =
                    values.iter().map(|v| integer(v)).collect::<Result<_, _>>()?
            }
            "INT32" | "INT8" => contents.int_contents = narrowed(&values, integer, out_of_range)?,
            "UINT8" => contents.uint_contents = narrowed(&values, integer, out_of_range)?,
            "BOOL" => {
                contents.bool_contents = values
                    .iter()
                    .map(|v| {
                        v.as_bool()
                            .ok_or_else(|| bad(format!("input {name:?}: {v} is not a boolean")))
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(bad(format!("input {name:?}: {other} has no typed gRPC field"))),
        }
        inputs.push(InferInputTensor {
            name: name.to_string(),
            datatype: datatype.to_string(),
            shape,
            parameters: Default::default(),
            contents: Some(contents),
        });
    }
    Ok(crate::contract::grpc::ModelInferRequest {
        model_name: model.to_string(),
        id: request["id"].as_str().unwrap_or_default().to_string(),
        inputs,
        ..Default::default()
    })
}
