//! gRPC inference messages to and from the V2 REST binary form, so that a
//! gRPC request takes the REST path whole (`infer::infer_as`): the same
//! decoder checks its names, datatypes, shapes and sizes, the same limits,
//! batcher and metrics apply.
//!
//! A `ModelInferRequest` becomes a JSON header plus a binary tail: each
//! input's bytes (`raw_input_contents` as sent, typed `contents` written
//! little-endian) declared with `binary_data_size`, which the decoder checks
//! against shape × datatype size exactly. Every output is asked for as
//! binary, and the answer's tail becomes `raw_output_contents`, as Triton
//! answers.
//!
//! # Invariants
//! - Typed contents are counted against the shape, and the bytes they
//!   take against the body limit, before any buffer is allocated for them.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::contract::grpc::infer_parameter::ParameterChoice;
use crate::contract::grpc::model_infer_request::InferInputTensor;
use crate::contract::grpc::model_infer_response::InferOutputTensor;
use crate::contract::grpc::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
};

/// A client mistake in a gRPC request, found before the REST decoder runs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GrpcRequestError {
    #[error("parameter {0:?} has no value")]
    EmptyParameter(String),
    #[error(
        "\"processing\" requests are served over REST only; over gRPC send the model's tensors"
    )]
    Processing,
    #[error(
        "raw_input_contents has {raw} buffers for {inputs} inputs; send one per input, or none"
    )]
    RawCount { raw: usize, inputs: usize },
    #[error("input {0:?} has both contents and raw_input_contents")]
    ContentsAndRaw(String),
    #[error("input {name:?} is {datatype}: its values belong in {field}, not {found}")]
    WrongField { name: String, datatype: String, field: &'static str, found: &'static str },
    #[error("input {name:?}: {datatype} has no typed contents field; send raw_input_contents")]
    NoTypedField { name: String, datatype: String },
    #[error("input {name:?}: contents hold {got} values, its shape {shape:?} needs {count}")]
    ContentsCount { name: String, got: usize, shape: Vec<i64>, count: usize },
    #[error("input {name:?}: value {index} ({value}) does not fit {datatype}")]
    Range { name: String, index: usize, value: i64, datatype: String },
    #[error("the request's tensors take {bytes} bytes; this server takes at most {limit}")]
    TooLarge { bytes: usize, limit: usize },
}

/// A V2 answer that is not what the server's own encoder writes: an
/// internal error, logged, never shown to the caller.
#[derive(Debug, thiserror::Error)]
pub enum RestAnswerError {
    #[error("header length {header_length} past a {body}-byte answer")]
    HeaderLength { header_length: usize, body: usize },
    #[error("the V2 answer does not parse: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("output {0:?} is not binary")]
    NotBinary(String),
    #[error("output {0:?} runs past the answer")]
    PastEnd(String),
}

/// A gRPC request as a V2 REST body with the binary extension.
#[derive(Debug)]
pub struct RestRequest {
    /// The JSON header followed by the binary tail.
    pub body: Vec<u8>,
    /// `Inference-Header-Content-Length`.
    pub header_length: usize,
}

/// Which typed field holds a datatype's values, and bytes per element.
fn typed_field(datatype: &str) -> Option<(&'static str, usize)> {
    Some(match datatype {
        "BOOL" => ("bool_contents", 1),
        "UINT8" => ("uint_contents", 1),
        "INT8" => ("int_contents", 1),
        "INT32" => ("int_contents", 4),
        "INT64" => ("int64_contents", 8),
        "FP32" => ("fp32_contents", 4),
        "FP64" => ("fp64_contents", 8),
        _ => return None,
    })
}

/// The typed fields that hold values, with their counts.
fn filled_fields(c: &InferTensorContents) -> Vec<(&'static str, usize)> {
    [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

/// The values of one typed input, checked against its field and shape;
/// `None` when it has no values at all (the decoder then names what is
/// missing, or accepts an empty tensor).
fn typed_len(input: &InferInputTensor) -> Result<Option<usize>, GrpcRequestError> {
    let Some(contents) = &input.contents else { return Ok(None) };
    let filled = filled_fields(contents);
    let Some(&(found, got)) = filled.first() else { return Ok(None) };
    let name = || input.name.clone();
    let Some((field, _)) = typed_field(&input.datatype) else {
        // The decoder refuses datatypes tractor does not serve by name.
        return Ok(None);
    };
    if found != field || filled.len() > 1 {
        let found = filled.iter().map(|(f, _)| *f).find(|f| *f != field).unwrap_or(found);
        return Err(GrpcRequestError::WrongField {
            name: name(),
            datatype: input.datatype.clone(),
            field,
            found,
        });
    }
    // A shape the decoder will refuse (negative, overflowing) is left to it.
    let count = input
        .shape
        .iter()
        .try_fold(1usize, |acc, d| usize::try_from(*d).ok().and_then(|d| acc.checked_mul(d)));
    if let Some(count) = count
        && count != got
    {
        return Err(GrpcRequestError::ContentsCount {
            name: name(),
            got,
            shape: input.shape.clone(),
            count,
        });
    }
    Ok(Some(got))
}

/// Writes typed values little-endian, range-checking the narrow integers.
fn write_typed(input: &InferInputTensor, out: &mut Vec<u8>) -> Result<(), GrpcRequestError> {
    let Some(c) = &input.contents else { return Ok(()) };
    let range = |index: usize, value: i64| GrpcRequestError::Range {
        name: input.name.clone(),
        index,
        value,
        datatype: input.datatype.clone(),
    };
    match input.datatype.as_str() {
        "BOOL" => out.extend(c.bool_contents.iter().map(|b| u8::from(*b))),
        "UINT8" => {
            for (i, v) in c.uint_contents.iter().enumerate() {
                out.push(u8::try_from(*v).map_err(|_| range(i, i64::from(*v)))?);
            }
        }
        "INT8" => {
            for (i, v) in c.int_contents.iter().enumerate() {
                out.push(i8::try_from(*v).map_err(|_| range(i, i64::from(*v)))?.to_le_bytes()[0]);
            }
        }
        "INT32" => c.int_contents.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        "INT64" => c.int64_contents.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        "FP32" => c.fp32_contents.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        "FP64" => c.fp64_contents.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        _ => {}
    }
    Ok(())
}

fn parameter_json(name: &str, p: &InferParameter) -> Result<Value, GrpcRequestError> {
    Ok(match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Value::Bool(*b),
        Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
        Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
        Some(ParameterChoice::DoubleParam(d)) => Value::from(*d),
        Some(ParameterChoice::StringParam(s)) => Value::String(s.clone()),
        None => return Err(GrpcRequestError::EmptyParameter(name.to_string())),
    })
}

fn parameters_json(
    map: &HashMap<String, InferParameter>,
) -> Result<Map<String, Value>, GrpcRequestError> {
    map.iter().map(|(k, v)| Ok((k.clone(), parameter_json(k, v)?))).collect()
}

/// A JSON parameter as gRPC carries it; arrays and objects as their text.
fn parameter_proto(value: &Value) -> InferParameter {
    let choice = match value {
        Value::Bool(b) => ParameterChoice::BoolParam(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ParameterChoice::Int64Param(i),
            (None, Some(u)) => ParameterChoice::Uint64Param(u),
            _ => ParameterChoice::DoubleParam(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => ParameterChoice::StringParam(s.clone()),
        other => ParameterChoice::StringParam(other.to_string()),
    };
    InferParameter { parameter_choice: Some(choice) }
}

/// Translates a gRPC request into the V2 binary form. `output_names` are
/// the model's outputs, asked for when the request names none;
/// `max_body_bytes` bounds the body before it is built.
///
/// # Errors
/// Mistakes only the gRPC form can make (buffers per input, typed fields,
/// parameters without a value); everything else is the decoder's to find.
pub fn to_rest(
    request: &ModelInferRequest,
    output_names: &[String],
    max_body_bytes: usize,
) -> Result<RestRequest, GrpcRequestError> {
    let parameters = parameters_json(&request.parameters)?;
    if parameters.contains_key("processing") {
        return Err(GrpcRequestError::Processing);
    }
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(GrpcRequestError::RawCount { raw: raw.len(), inputs: request.inputs.len() });
    }
    // Sizes first: what the tail will take, before it is allocated.
    let mut sizes = Vec::with_capacity(request.inputs.len());
    let mut total = 0usize;
    for (index, input) in request.inputs.iter().enumerate() {
        let typed = typed_len(input)?;
        let size = match (raw.get(index), typed) {
            (Some(_), Some(_)) => return Err(GrpcRequestError::ContentsAndRaw(input.name.clone())),
            (Some(buffer), None) => Some(buffer.len()),
            (None, Some(count)) => {
                let each = typed_field(&input.datatype).map_or(0, |(_, each)| each);
                Some(count.saturating_mul(each))
            }
            // FP16 is served but has no typed field; other datatypes without
            // one are refused by the decoder, by name.
            (None, None) if input.datatype == "FP16" && !filled_is_empty(input) => {
                return Err(GrpcRequestError::NoTypedField {
                    name: input.name.clone(),
                    datatype: input.datatype.clone(),
                });
            }
            (None, None) if input.contents.is_some() && typed_field(&input.datatype).is_some() => {
                Some(0)
            }
            (None, None) => None,
        };
        total = total.saturating_add(size.unwrap_or(0));
        sizes.push(size);
    }
    if total > max_body_bytes {
        return Err(GrpcRequestError::TooLarge { bytes: total, limit: max_body_bytes });
    }
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (input, size) in request.inputs.iter().zip(&sizes) {
        let mut params = parameters_json(&input.parameters)?;
        params.remove("binary_data_size");
        let mut entry = serde_json::json!({
            "name": input.name,
            "shape": input.shape,
            "datatype": input.datatype,
        });
        if let Some(size) = size {
            params.insert("binary_data_size".into(), Value::from(*size));
        }
        if !params.is_empty() {
            entry["parameters"] = Value::Object(params);
        }
        inputs.push(entry);
    }
    let outputs: Vec<Value> = if request.outputs.is_empty() {
        output_names
            .iter()
            .map(|name| serde_json::json!({"name": name, "parameters": {"binary_data": true}}))
            .collect()
    } else {
        request
            .outputs
            .iter()
            .map(|o| {
                let mut params = parameters_json(&o.parameters)?;
                params.insert("binary_data".into(), Value::Bool(true));
                Ok(serde_json::json!({"name": o.name, "parameters": params}))
            })
            .collect::<Result<_, GrpcRequestError>>()?
    };
    let mut header = serde_json::json!({ "inputs": inputs, "outputs": outputs });
    if !request.id.is_empty() {
        header["id"] = Value::String(request.id.clone());
    }
    if !parameters.is_empty() {
        header["parameters"] = Value::Object(parameters);
    }
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    let header_length = body.len();
    body.reserve_exact(total);
    for (index, input) in request.inputs.iter().enumerate() {
        match raw.get(index) {
            Some(buffer) => body.extend_from_slice(buffer),
            None => write_typed(input, &mut body)?,
        }
    }
    Ok(RestRequest { body, header_length })
}

fn filled_is_empty(input: &InferInputTensor) -> bool {
    input.contents.as_ref().is_none_or(|c| filled_fields(c).is_empty())
}

/// The V2 answer's JSON header, as much of it as a gRPC answer carries.
#[derive(Deserialize)]
struct RestAnswer {
    model_name: String,
    #[serde(default)]
    model_version: String,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    outputs: Vec<RestOutput>,
}

#[derive(Deserialize)]
struct RestOutput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// Translates a V2 binary answer (all outputs binary) into a gRPC answer,
/// the tail cut into `raw_output_contents`.
///
/// # Errors
/// An answer that is not what the server's own encoder writes: an internal error.
pub fn from_rest(
    body: Bytes,
    header_length: Option<usize>,
) -> Result<ModelInferResponse, RestAnswerError> {
    let header_length = header_length.unwrap_or(body.len());
    if header_length > body.len() {
        return Err(RestAnswerError::HeaderLength { header_length, body: body.len() });
    }
    let answer: RestAnswer =
        serde_json::from_slice(&body[..header_length]).map_err(RestAnswerError::Parse)?;
    let mut offset = header_length;
    let mut outputs = Vec::with_capacity(answer.outputs.len());
    let mut raw = Vec::with_capacity(answer.outputs.len());
    for output in answer.outputs {
        let size = output
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| RestAnswerError::NotBinary(output.name.clone()))?;
        let end = offset
            .checked_add(size)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| RestAnswerError::PastEnd(output.name.clone()))?;
        raw.push(body[offset..end].to_vec());
        offset = end;
        outputs.push(InferOutputTensor {
            name: output.name,
            datatype: output.datatype,
            shape: output.shape,
            parameters: HashMap::new(),
            contents: None,
        });
    }
    let id = match answer.id {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let parameters = answer
        .parameters
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.clone(), parameter_proto(v)))
        .collect();
    Ok(ModelInferResponse {
        model_name: answer.model_name,
        model_version: answer.model_version,
        id,
        parameters,
        outputs,
        raw_output_contents: raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        c: InferTensorContents,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: HashMap::new(),
            contents: Some(c),
        }
    }

    fn header(rest: &RestRequest) -> Value {
        serde_json::from_slice(&rest.body[..rest.header_length]).unwrap()
    }

    #[test]
    fn typed_contents_become_the_binary_tail() {
        let request = ModelInferRequest {
            model_name: "m".into(),
            id: "7".into(),
            inputs: vec![input(
                "x",
                "FP32",
                vec![1, 2],
                InferTensorContents { fp32_contents: vec![1.0, 2.5], ..Default::default() },
            )],
            ..Default::default()
        };
        let rest = to_rest(&request, &["y".into()], 1 << 20).unwrap();
        let h = header(&rest);
        assert_eq!(h["id"], "7");
        assert_eq!(h["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(h["outputs"][0]["parameters"]["binary_data"], true);
        let tail: Vec<u8> = [1.0f32, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&rest.body[rest.header_length..], &tail[..]);
    }

    #[test]
    fn grpc_only_mistakes_are_named() {
        let fp = |v: Vec<f32>| InferTensorContents { fp32_contents: v, ..Default::default() };
        let one = |i: InferInputTensor| ModelInferRequest { inputs: vec![i], ..Default::default() };
        let wrong_count = one(input("x", "FP32", vec![1, 3], fp(vec![1.0])));
        assert!(matches!(
            to_rest(&wrong_count, &[], 1 << 20),
            Err(GrpcRequestError::ContentsCount { got: 1, count: 3, .. })
        ));
        let wrong_field = one(input("x", "INT64", vec![1], fp(vec![1.0])));
        assert!(matches!(
            to_rest(&wrong_field, &[], 1 << 20),
            Err(GrpcRequestError::WrongField { field: "int64_contents", .. })
        ));
        let narrow = one(input(
            "x",
            "UINT8",
            vec![1],
            InferTensorContents { uint_contents: vec![300], ..Default::default() },
        ));
        assert!(matches!(to_rest(&narrow, &[], 1 << 20), Err(GrpcRequestError::Range { .. })));
        let big = one(input("x", "FP32", vec![4], fp(vec![0.0; 4])));
        assert_eq!(
            to_rest(&big, &[], 15).unwrap_err(),
            GrpcRequestError::TooLarge { bytes: 16, limit: 15 }
        );
        let mut raw = one(input("x", "FP32", vec![1], InferTensorContents::default()));
        raw.raw_input_contents = vec![vec![0; 4], vec![0; 4]];
        assert!(matches!(to_rest(&raw, &[], 1 << 20), Err(GrpcRequestError::RawCount { .. })));
        let mut processing = one(input("x", "FP32", vec![1], fp(vec![1.0])));
        processing.parameters.insert(
            "processing".into(),
            InferParameter { parameter_choice: Some(ParameterChoice::BoolParam(true)) },
        );
        assert_eq!(to_rest(&processing, &[], 1 << 20).unwrap_err(), GrpcRequestError::Processing);
    }

    #[test]
    fn binary_answers_become_raw_outputs() {
        let json = br#"{"model_name":"m","model_version":"2","id":"9","parameters":{"k":3},
            "outputs":[{"name":"y","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}},
                       {"name":"l","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&7i64.to_le_bytes());
        let answer = from_rest(Bytes::from(body), Some(json.len())).unwrap();
        assert_eq!(answer.id, "9");
        assert_eq!(answer.model_version, "2");
        assert_eq!(answer.raw_output_contents[0], 1.5f32.to_le_bytes());
        assert_eq!(answer.raw_output_contents[1], 7i64.to_le_bytes());
        assert_eq!(answer.parameters["k"].parameter_choice, Some(ParameterChoice::Int64Param(3)));
        assert!(from_rest(Bytes::from_static(b"{}"), Some(10)).is_err());
    }
}
