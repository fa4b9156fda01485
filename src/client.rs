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
    let protocol = |reason: String| ClientError::Protocol { url: url.clone(), reason };
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
