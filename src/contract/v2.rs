//! The Open Inference Protocol (KServe V2) as it travels on the wire.
//!
//! The messages are plain: datatypes are the protocol's names (`"FP32"`),
//! and tensor `data` is a type parameter, so that the server can decode into
//! JSON values and encode straight from engine buffers without this module
//! knowing the engine. `serve` converts to and from engine tensors, `route`
//! reads the headers, the client writes requests.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The HTTP header that splits a binary request or response into its JSON
/// header and the raw tensor bytes that follow (the binary tensor data
/// extension's `Inference-Header-Content-Length`, lowercase as HTTP/2 and
/// `http::HeaderName` want it).
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Header that sends a request to one version through the router, and that
/// every answer of the router carries.
pub const VERSION_HEADER: &str = "x-tractor-version";

/// Header the router sends with a request whose caller lacks the `raw`
/// scope, so that `serve` applies its output limits although the router's
/// own token has `raw` (any value counts; see `serve::output_limits`).
pub const LIMITED_OUTPUT_HEADER: &str = "x-tractor-limited-output";

/// An inference request; `D` is what each input's `data` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
pub struct InferRequest<D = Value> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<RequestInput<D>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of a request. Without `data`, its bytes follow the
/// JSON header (`parameters.binary_data_size` says how many).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
pub struct RequestInput<D = Value> {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<D>,
}

/// An output a request asks for, with its own parameters (`binary_data`).
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

/// An inference answer, borrowing what it echoes from the request; `D` is
/// what each output's `data` holds.
#[derive(Debug, Serialize)]
pub struct InferResponse<'a, D> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a Map<String, Value>>,
    pub outputs: Vec<ResponseOutput<'a, D>>,
}

/// One output tensor of an answer: `data` in JSON, or `parameters` with
/// `binary_data_size` and the bytes after the JSON header.
#[derive(Debug, Serialize)]
pub struct ResponseOutput<'a, D> {
    pub name: &'a str,
    pub datatype: &'a str,
    pub shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<D>,
}

/// A request with `"parameters": {"processing": true}`: each input's
/// `data` holds one application-level value per instance. `shape` and
/// `datatype` (`BYTES` by convention) are accepted and not read: the
/// server's processing defines what the values are.
#[derive(Debug, Deserialize)]
pub struct ProcessedRequest {
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<ProcessedInput>,
}

#[derive(Debug, Deserialize)]
pub struct ProcessedInput {
    pub name: String,
    pub data: Vec<Value>,
}

/// The datatype of every processed output: one JSON answer per instance.
pub const PROCESSED_DATATYPE: &str = "BYTES";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_without_empty_fields() {
        let json = r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#;
        let request: InferRequest = serde_json::from_str(json).unwrap();
        assert_eq!(request.inputs[0].shape, vec![1, 2]);
        let back = serde_json::to_value(&request).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(json).unwrap());
    }
}
