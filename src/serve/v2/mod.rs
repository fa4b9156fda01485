//! The Open Inference Protocol (KServe V2) REST messages, converted between
//! their wire form (`crate::contract::v2`) and engine tensors: JSON tensors
//! and the binary tensor data extension that Triton's clients use.
//!
//! Decoding checks everything a client can get wrong (names, datatypes,
//! shapes, element counts, byte counts) and says which tensor was wrong, so
//! the handlers can answer 400 with a reason and the engine only ever sees
//! tensors that fit the model.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::output_limits::{self, OutputLimits};
use super::tensor_json;
use crate::contract::v2::{HEADER_LENGTH, InferResponse, ResponseOutput};
use crate::engine::{DataType, Tensor, TensorData, TensorSpec, element_count};

mod processed;
pub use processed::{
    ProcessedHeader, decode_processed, encode_processed, mentions_processing, processed_columns,
    wants_processing,
};

/// Largest `id` or `parameters` (of the request, an input or an output)
/// accepted, in bytes of JSON text: they are parsed into `Value` trees,
/// which cost 16 to 32 times their text, so they are bounded apart from
/// the tensors.
pub const MAX_PARAMETERS_BYTES: usize = 64 << 10;

/// What a request may declare, checked before anything it declares is
/// allocated.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Rows along the batch axis (`--max-batch-size` when batching).
    pub max_rows: Option<usize>,
    /// Elements of all inputs together (`--max-request-elements`).
    pub max_elements: usize,
}

/// A V2 request the client got wrong; every variant answers 400 with its message.
#[derive(Debug, thiserror::Error)]
pub enum V2Error {
    #[error("{HEADER_LENGTH} {0:?} is not a byte count")]
    ParseHeaderLength(String),
    #[error("{HEADER_LENGTH} is {len} but the body has only {body} bytes")]
    SplitBody { len: usize, body: usize },
    #[error("malformed request JSON: {0}")]
    ParseRequest(#[source] serde_json::Error),
    #[error(
        "malformed processed request (each input needs a \"data\" array of one value per instance): {0}"
    )]
    ParseProcessed(#[source] serde_json::Error),
    #[error("unknown input {name:?}; the model takes {known}")]
    UnknownInput { name: String, known: String },
    #[error("input {0:?} is given twice")]
    RepeatedInput(String),
    #[error("missing input {0:?}")]
    MissingInput(String),
    #[error("input {name:?} has datatype {given}, the model expects {expected}")]
    MatchDatatype { name: String, given: DataType, expected: DataType },
    #[error("input {name:?} has a negative dimension in {shape:?}")]
    NegativeDimension { name: String, shape: Vec<i64> },
    /// The engine's reason a shape does not fit the model's input.
    #[error("{0}")]
    CheckShape(String),
    #[error("input {name:?} shape {shape:?} is too large")]
    CountElements { name: String, shape: Vec<usize> },
    #[error(
        "input {name:?} shape {shape:?} brings the request to {total} elements; \
         this server takes at most {limit} per request (--max-request-elements)"
    )]
    TooManyElements { name: String, shape: Vec<usize>, total: usize, limit: usize },
    #[error(
        "input {name:?} declares {size} binary bytes, its shape {shape:?} of {datatype} needs {needed}"
    )]
    BinarySize { name: String, size: usize, shape: Vec<usize>, datatype: DataType, needed: usize },
    #[error("{what} is {len} bytes of JSON; this server takes at most {limit}")]
    ParametersTooLarge { what: &'static str, len: usize, limit: usize },
    #[error("input {0:?} has both \"data\" and binary_data_size")]
    DataAndBinary(String),
    #[error("input {name:?} declares {size} binary bytes but only {left} remain")]
    TakeBinary { name: String, size: usize, left: usize },
    #[error("input {0:?} has no \"data\"")]
    NoData(String),
    /// The input's data could not become its tensor; the source says why.
    #[error("input {name:?}: {source}")]
    ReadInput {
        name: String,
        #[source]
        source: Box<V2Error>,
    },
    #[error("binary_data_size must be a non-negative integer")]
    BinaryDataSize,
    #[error("the shape needs {count} elements, \"data\" has {got}")]
    ElementCount { count: usize, got: usize },
    #[error("\"data\" is nested deeper than {MAX_NESTING} levels")]
    Nesting,
    /// The engine's reason the values do not make a tensor of the datatype.
    #[error("{0}")]
    ConvertData(String),
    #[error("{} bytes of binary data follow the header but the inputs use {used}", .len)]
    BinaryLeftOver { len: usize, used: usize },
    #[error(
        "inputs disagree on the batch size: {first} has {first_rows} rows, {name:?} has {rows}"
    )]
    BatchRows { first: String, first_rows: usize, name: String, rows: usize },
    #[error("batch of {rows} rows exceeds the server's maximum batch size {max}")]
    BatchTooLarge { rows: usize, max: usize },
    #[error("parameter {0} must be true or false")]
    Flag(&'static str),
    #[error("unknown output {name:?}; the model gives {known}")]
    UnknownOutput { name: String, known: String },
    #[error("output {0:?} is requested twice")]
    RepeatedOutput(String),
    #[error(
        "output {0:?}: \"classification\" must be a whole number of classes from 1 to {max}",
        max = super::output_limits::MAX_TOP_K
    )]
    Classification(String),
}

impl V2Error {
    fn input(name: &str, source: V2Error) -> V2Error {
        V2Error::ReadInput { name: name.to_string(), source: Box::new(source) }
    }
}

/// A decoded request: tensors in the model's input order, and what to send back.
#[derive(Debug)]
pub struct DecodedRequest {
    pub id: Option<Value>,
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<Tensor>,
    /// Rows along the batch axis (1 for models without one).
    pub rows: usize,
    pub outputs: Vec<OutputSelection>,
}

/// One output to return, by index into the model's outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSelection {
    pub index: usize,
    pub binary: bool,
    /// The classification extension's class count: the output comes back
    /// as its best classes, `"score:index"` strings.
    pub classes: Option<usize>,
}

/// Splits a body into its JSON header and binary tail.
///
/// # Errors
/// A header length that is not a number or exceeds the body.
pub fn split_body<'a>(
    body: &'a [u8],
    header_length: Option<&str>,
) -> Result<(&'a [u8], &'a [u8]), V2Error> {
    let Some(raw) = header_length else {
        return Ok((body, &[]));
    };
    let len: usize = raw.trim().parse().map_err(|_| V2Error::ParseHeaderLength(raw.into()))?;
    if len > body.len() {
        return Err(V2Error::SplitBody { len, body: body.len() });
    }
    Ok(body.split_at(len))
}

/// A request as read from the wire, before any size it declares is
/// trusted. What the client controls beyond names and shapes (`data`,
/// `parameters`, `id`) stays raw JSON text borrowed from the body, read
/// only once checked: tensor data straight into typed buffers
/// ([`tensor_json`]), the rest under [`MAX_PARAMETERS_BYTES`]. The
/// contract's `InferRequest` (what clients write) would parse all of it
/// into `Value` trees first, 16 to 32 times the size of the text.
#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    inputs: Vec<WireInput<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<WireOutput<'a>>>,
}

#[derive(Deserialize)]
struct WireInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireOutput<'a> {
    name: String,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
}

/// Parses a small raw JSON value (`id`, `parameters`) under its bound.
fn small_json<T: DeserializeOwned>(raw: &RawValue, what: &'static str) -> Result<T, V2Error> {
    let text = raw.get();
    if text.len() > MAX_PARAMETERS_BYTES {
        return Err(V2Error::ParametersTooLarge {
            what,
            len: text.len(),
            limit: MAX_PARAMETERS_BYTES,
        });
    }
    serde_json::from_str(text).map_err(V2Error::ParseRequest)
}

fn parameters(
    raw: Option<&RawValue>,
    what: &'static str,
) -> Result<Option<Map<String, Value>>, V2Error> {
    raw.map(|r| small_json::<Option<Map<String, Value>>>(r, what)).transpose().map(Option::flatten)
}

/// Parses and checks a request against the model's inputs and outputs.
///
/// Every size the request declares (shape products, element counts,
/// binary byte counts, rows) is checked with checked arithmetic against the
/// body and `limits` before anything is allocated for it.
///
/// # Errors
/// Every client mistake, named after the check it failed.
pub fn decode_request(
    json: &[u8],
    binary: &[u8],
    model_inputs: &[TensorSpec],
    model_outputs: &[TensorSpec],
    batchable: bool,
    limits: &DecodeLimits,
) -> Result<DecodedRequest, V2Error> {
    let request: WireRequest<'_> = serde_json::from_slice(json).map_err(V2Error::ParseRequest)?;
    let id = request.id.map(|raw| small_json::<Value>(raw, "id")).transpose()?;
    let request_parameters = parameters(request.parameters, "parameters")?;
    let mut slots: Vec<Option<Tensor>> = vec![None; model_inputs.len()];
    let mut budget = Budget { binary, binary_offset: 0, elements: 0, limits: *limits, batchable };
    for input in &request.inputs {
        let index = model_inputs.iter().position(|s| s.name == input.name).ok_or_else(|| {
            V2Error::UnknownInput {
                name: input.name.clone(),
                known: names(model_inputs.iter().map(|s| &s.name)),
            }
        })?;
        if slots[index].is_some() {
            return Err(V2Error::RepeatedInput(input.name.clone()));
        }
        let tensor = decode_input(input, &model_inputs[index], &mut budget)?;
        slots[index] = Some(tensor);
    }
    if budget.binary_offset != binary.len() {
        return Err(V2Error::BinaryLeftOver { len: binary.len(), used: budget.binary_offset });
    }
    let inputs = slots
        .into_iter()
        .zip(model_inputs)
        .map(|(slot, spec)| slot.ok_or_else(|| V2Error::MissingInput(spec.name.clone())))
        .collect::<Result<Vec<Tensor>, V2Error>>()?;
    let rows = if batchable { batch_rows(&inputs, model_inputs)? } else { 1 };
    if let Some(max) = limits.max_rows
        && rows > max
    {
        return Err(V2Error::BatchTooLarge { rows, max });
    }
    let binary_default = request_parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_output"))
        .map(|v| flag(v, "binary_data_output"))
        .transpose()?
        .unwrap_or(false);
    let outputs = select_outputs(request.outputs.as_deref(), model_outputs, binary_default)?;
    Ok(DecodedRequest { id, parameters: request_parameters, inputs, rows, outputs })
}

/// What the inputs decoded so far have used of the request's allowance.
struct Budget<'b> {
    binary: &'b [u8],
    binary_offset: usize,
    elements: usize,
    limits: DecodeLimits,
    batchable: bool,
}

/// One input as the tensor `spec` describes, its bytes taken from the
/// binary part (the budget's offset moved past them) when it has no JSON
/// `data`. Sizes are checked in order, each before what it sizes: the
/// rank, the shape against the model, the element count (overflow, rows,
/// the request's element limit), then the bytes or the text of the data.
fn decode_input(
    input: &WireInput<'_>,
    spec: &TensorSpec,
    budget: &mut Budget<'_>,
) -> Result<Tensor, V2Error> {
    let name = &input.name;
    let datatype = DataType::from_v2_name(&input.datatype)
        .map_err(|e| V2Error::input(name, V2Error::ConvertData(e.to_string())))?;
    if datatype != spec.datatype {
        return Err(V2Error::MatchDatatype {
            name: name.clone(),
            given: datatype,
            expected: spec.datatype,
        });
    }
    // The rank first: a shape of a million dimensions is refused before it
    // is copied.
    if input.shape.len() != spec.shape.len() {
        let shown: Vec<i64> = input.shape.iter().take(8).copied().collect();
        return Err(V2Error::CheckShape(format!(
            "input {name:?} has rank {} (shape starts {shown:?}), the model expects rank {} {:?}",
            input.shape.len(),
            spec.shape.len(),
            spec.v2_shape()
        )));
    }
    let shape = input
        .shape
        .iter()
        .map(|d| usize::try_from(*d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| V2Error::NegativeDimension {
            name: name.clone(),
            shape: input.shape.clone(),
        })?;
    spec.check_shape(&shape).map_err(|e| V2Error::CheckShape(e.to_string()))?;
    let count = element_count(&shape)
        .ok_or_else(|| V2Error::CountElements { name: name.clone(), shape: shape.clone() })?;
    if budget.batchable
        && let (Some(max), Some(&rows)) = (budget.limits.max_rows, shape.first())
        && rows > max
    {
        return Err(V2Error::BatchTooLarge { rows, max });
    }
    let total = budget.elements.checked_add(count).filter(|t| *t <= budget.limits.max_elements);
    let Some(total) = total else {
        return Err(V2Error::TooManyElements {
            name: name.clone(),
            shape,
            total: budget.elements.saturating_add(count),
            limit: budget.limits.max_elements,
        });
    };
    budget.elements = total;
    let request_parameters = parameters(input.parameters, "an input's parameters")?;
    let binary_size = binary_data_size(name, request_parameters.as_ref())?;
    let data = match (binary_size, input.data) {
        (Some(_), Some(_)) => return Err(V2Error::DataAndBinary(name.clone())),
        (Some(size), None) => {
            let needed = count.checked_mul(datatype.size_of());
            if needed != Some(size) {
                return Err(V2Error::BinarySize {
                    name: name.clone(),
                    size,
                    shape,
                    datatype,
                    needed: needed.unwrap_or(usize::MAX),
                });
            }
            let offset = budget.binary_offset;
            let left = budget.binary.len() - offset;
            let end = offset
                .checked_add(size)
                .filter(|end| *end <= budget.binary.len())
                .ok_or_else(|| V2Error::TakeBinary { name: name.clone(), size, left })?;
            let bytes = &budget.binary[offset..end];
            budget.binary_offset = end;
            TensorData::from_le_bytes(datatype, bytes)
                .map_err(|e| V2Error::input(name, V2Error::ConvertData(e.to_string())))?
        }
        (None, Some(raw)) => tensor_json::read_data(raw.get(), datatype, count)
            .map_err(|e| V2Error::input(name, e))?,
        (None, None) => return Err(V2Error::NoData(name.clone())),
    };
    Tensor::new(shape, data).map_err(|e| V2Error::input(name, V2Error::ConvertData(e.to_string())))
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    it.map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

fn flag(value: &Value, name: &'static str) -> Result<bool, V2Error> {
    value.as_bool().ok_or(V2Error::Flag(name))
}

fn binary_data_size(
    name: &str,
    parameters: Option<&Map<String, Value>>,
) -> Result<Option<usize>, V2Error> {
    let Some(value) = parameters.and_then(|p| p.get("binary_data_size")) else {
        return Ok(None);
    };
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| V2Error::input(name, V2Error::BinaryDataSize))
}

fn batch_rows(inputs: &[Tensor], specs: &[TensorSpec]) -> Result<usize, V2Error> {
    let mut rows = None;
    for (tensor, spec) in inputs.iter().zip(specs) {
        let r = tensor.shape[0];
        match rows {
            None => rows = Some(r),
            Some(prev) if prev != r => {
                return Err(V2Error::BatchRows {
                    first: specs[0].name.clone(),
                    first_rows: prev,
                    name: spec.name.clone(),
                    rows: r,
                });
            }
            Some(_) => {}
        }
    }
    Ok(rows.unwrap_or(1))
}

fn select_outputs(
    requested: Option<&[WireOutput<'_>]>,
    model_outputs: &[TensorSpec],
    binary_default: bool,
) -> Result<Vec<OutputSelection>, V2Error> {
    let Some(requested) = requested else {
        return Ok((0..model_outputs.len())
            .map(|index| OutputSelection { index, binary: binary_default, classes: None })
            .collect());
    };
    let mut selected: Vec<OutputSelection> = Vec::with_capacity(requested.len());
    for out in requested {
        let index = model_outputs.iter().position(|s| s.name == out.name).ok_or_else(|| {
            V2Error::UnknownOutput {
                name: out.name.clone(),
                known: names(model_outputs.iter().map(|s| &s.name)),
            }
        })?;
        if selected.iter().any(|s| s.index == index) {
            return Err(V2Error::RepeatedOutput(out.name.clone()));
        }
        let params = parameters(out.parameters, "an output's parameters")?;
        let params = params.as_ref();
        let classes = match params.and_then(|p| p.get("classification")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|k| usize::try_from(k).ok())
                    .filter(|k| (1..=super::output_limits::MAX_TOP_K).contains(k))
                    .ok_or_else(|| V2Error::Classification(out.name.clone()))?,
            ),
        };
        let binary = params
            .and_then(|p| p.get("binary_data"))
            .map(|v| flag(v, "binary_data"))
            .transpose()?
            .unwrap_or(binary_default);
        selected.push(OutputSelection { index, binary, classes });
    }
    Ok(selected)
}

/// Deep enough for any real tensor, shallow enough that a hostile body of
/// nested brackets cannot exhaust the stack (serde_json already stops at 128).
pub const MAX_NESTING: usize = 64;

/// Serializes tensor elements as a flat JSON array (FP16 as numbers).
#[derive(Debug)]
pub struct JsonData<'a>(pub &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0 {
            TensorData::F16(v) => {
                let mut seq = serializer.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&x.to_f32())?;
                }
                seq.end()
            }
            TensorData::Bool(v) => v.serialize(serializer),
            TensorData::U8(v) => v.serialize(serializer),
            TensorData::I8(v) => v.serialize(serializer),
            TensorData::I32(v) => v.serialize(serializer),
            TensorData::I64(v) => v.serialize(serializer),
            TensorData::F32(v) => v.serialize(serializer),
            TensorData::F64(v) => v.serialize(serializer),
        }
    }
}

/// An encoded response body and, for binary responses, the JSON header length.
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

/// What one output's `data` holds: the tensor's values, or the
/// classification extension's strings.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OutputData<'a> {
    Tensor(JsonData<'a>),
    Classes(&'a [String]),
}

/// Encodes the selected outputs, JSON or binary as each asks; outputs
/// asked as classes, or wider than the limits allow, as their best classes
/// (`BYTES`). `limits` are the ones this request gets; the caller has
/// already rounded the tensors.
///
/// # Errors
/// Only JSON serialization failures, which cannot happen for these types.
pub fn encode_response(
    model_name: &str,
    model_version: &str,
    request: &DecodedRequest,
    model_outputs: &[TensorSpec],
    outputs: &[Tensor],
    limits: Option<&OutputLimits>,
) -> Result<EncodedResponse, serde_json::Error> {
    let classified: Vec<Option<(Vec<usize>, Vec<String>)>> = request
        .outputs
        .iter()
        .map(|selection| {
            let tensor = &outputs[selection.index];
            let floating = tensor.datatype().is_float();
            let width = tensor.shape.last().copied().unwrap_or(1);
            OutputLimits::classes(limits, selection.classes, floating, width)
                .map(|k| output_limits::classify(tensor, k, limits))
        })
        .collect();
    let mut binary_tail: Vec<u8> = Vec::new();
    let mut encoded = Vec::with_capacity(request.outputs.len());
    for (selection, classes) in request.outputs.iter().zip(&classified) {
        let tensor = &outputs[selection.index];
        let spec = &model_outputs[selection.index];
        let bytes = |binary_tail: &mut Vec<u8>, bytes: Vec<u8>| {
            let params = serde_json::json!({ "binary_data_size": bytes.len() });
            binary_tail.extend_from_slice(&bytes);
            Some(params)
        };
        let (datatype, shape, parameters, data) = match (classes, selection.binary) {
            (Some((shape, strings)), true) => {
                let params = bytes(&mut binary_tail, output_limits::bytes_tensor_le(strings));
                ("BYTES", shape.as_slice(), params, None)
            }
            (Some((shape, strings)), false) => {
                ("BYTES", shape.as_slice(), None, Some(OutputData::Classes(strings)))
            }
            (None, true) => {
                let params = bytes(&mut binary_tail, tensor.data.to_le_bytes());
                (tensor.datatype().v2_name(), tensor.shape.as_slice(), params, None)
            }
            (None, false) => (
                tensor.datatype().v2_name(),
                tensor.shape.as_slice(),
                None,
                Some(OutputData::Tensor(JsonData(&tensor.data))),
            ),
        };
        encoded.push(ResponseOutput { name: &spec.name, datatype, shape, parameters, data });
    }
    let response = InferResponse {
        model_name,
        model_version,
        id: request.id.as_ref(),
        parameters: request.parameters.as_ref(),
        outputs: encoded,
    };
    let mut body = serde_json::to_vec(&response)?;
    let header_length =
        (!binary_tail.is_empty() || request.outputs.iter().any(|o| o.binary)).then_some(body.len());
    body.extend_from_slice(&binary_tail);
    Ok(EncodedResponse { body, header_length })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Dim;

    fn spec(name: &str, datatype: DataType, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec { name: name.into(), datatype, shape }
    }

    fn mlp_io() -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        (
            vec![spec("x", DataType::F32, vec![Dim::Batch, Dim::Fixed(2)])],
            vec![
                spec("y", DataType::F32, vec![Dim::Batch, Dim::Fixed(3)]),
                spec("label", DataType::I64, vec![Dim::Batch]),
            ],
        )
    }

    const LIMITS: DecodeLimits = DecodeLimits { max_rows: Some(4), max_elements: 1 << 20 };
    const UNLIMITED: DecodeLimits = DecodeLimits { max_rows: None, max_elements: usize::MAX };

    fn decode(json: &str, binary: &[u8]) -> Result<DecodedRequest, V2Error> {
        let (ins, outs) = mlp_io();
        decode_request(json.as_bytes(), binary, &ins, &outs, true, &LIMITS)
    }

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let flat = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            &[],
        )
        .unwrap();
        let nested = decode(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(flat.inputs, nested.inputs);
        assert_eq!(flat.rows, 2);
        assert_eq!(flat.outputs.len(), 2);
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let json = r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}],
                      "outputs":[{"name":"label","parameters":{"binary_data":true}}]}"#;
        let req = decode(json, &bytes).unwrap();
        assert_eq!(req.inputs[0].data, TensorData::F32(vec![1.0, 2.0]));
        assert_eq!(req.outputs, vec![OutputSelection { index: 1, binary: true, classes: None }]);
        let short = decode(json, &bytes[..4]).unwrap_err().to_string();
        assert!(short.contains("declares 8 binary bytes"), "{short}");
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(json, &long).unwrap_err().to_string().contains("binary data"));
    }

    #[test]
    fn client_mistakes_are_named() {
        let cases = [
            (
                r#"{"inputs":[{"name":"z","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
                "unknown input \"z\"",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP64","data":[1,2]}]}"#,
                "model expects FP32",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"BYTES","data":[1,2]}]}"#,
                "unsupported datatype",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
                "axis 1 must be 2",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2,3]}]}"#,
                "needs 2 elements",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,"a"]}]}"#,
                "element 1 is a string (\"a\"), not a number",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[-1,2],"datatype":"FP32","data":[1,2]}]}"#,
                "negative dimension",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[5,2],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,0]}]}"#,
                "maximum batch size 4",
            ),
            (r#"{"inputs":[]}"#, "missing input \"x\""),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"q"}]}"#,
                "unknown output",
            ),
            (r#"{"inputs":"#, "malformed request JSON"),
            (r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32"}]}"#, "has no \"data\""),
        ];
        for (json, expected) in cases {
            let err = decode(json, &[]).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn integers_are_range_checked() {
        let ins = vec![spec("i", DataType::U8, vec![Dim::Fixed(2)])];
        let json = r#"{"inputs":[{"name":"i","shape":[2],"datatype":"UINT8","data":[1,256]}]}"#;
        let err = decode_request(json.as_bytes(), &[], &ins, &[], false, &UNLIMITED)
            .unwrap_err()
            .to_string();
        assert!(err.contains("element 1 is a number (256), not an integer in 0..=255"), "{err}");
    }

    #[test]
    fn responses_mix_json_and_binary_outputs() {
        let (ins, outs) = mlp_io();
        let json = r#"{"id":"42","inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],
                       "outputs":[{"name":"y"},{"name":"label","parameters":{"binary_data":true}}]}"#;
        let req = decode_request(json.as_bytes(), &[], &ins, &outs, true, &UNLIMITED).unwrap();
        let outputs = vec![
            Tensor::new(vec![1, 3], TensorData::F32(vec![0.5, 1.5, 2.5])).unwrap(),
            Tensor::new(vec![1], TensorData::I64(vec![7])).unwrap(),
        ];
        let encoded = encode_response("m", "2", &req, &outs, &outputs, None).unwrap();
        let header_len = encoded.header_length.unwrap();
        let header: Value = serde_json::from_slice(&encoded.body[..header_len]).unwrap();
        assert_eq!(header["model_name"], "m");
        assert_eq!(header["model_version"], "2");
        assert_eq!(header["id"], "42");
        assert_eq!(header["outputs"][0]["data"], serde_json::json!([0.5, 1.5, 2.5]));
        assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert_eq!(&encoded.body[header_len..], &7i64.to_le_bytes());
    }

    #[test]
    fn classification_answers_strings_and_limits_force_it() {
        let (ins, outs) = mlp_io();
        let decode_with = |outputs: &str| {
            let json = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}}],
                    "outputs":{outputs}}}"#
            );
            decode_request(json.as_bytes(), &[], &ins, &outs, true, &UNLIMITED)
        };
        let outputs = vec![
            Tensor::new(vec![1, 3], TensorData::F32(vec![0.5, 2.5, 1.5])).unwrap(),
            Tensor::new(vec![1], TensorData::I64(vec![1])).unwrap(),
        ];
        let header = |req: &DecodedRequest, limits: Option<&OutputLimits>| {
            let encoded = encode_response("m", "2", req, &outs, &outputs, limits).unwrap();
            let len = encoded.header_length.unwrap_or(encoded.body.len());
            (serde_json::from_slice::<Value>(&encoded.body[..len]).unwrap(), encoded)
        };
        let asked = decode_with(r#"[{"name":"y","parameters":{"classification":2}}]"#).unwrap();
        let (h, _) = header(&asked, None);
        assert_eq!(h["outputs"][0]["datatype"], "BYTES");
        assert_eq!(h["outputs"][0]["shape"], serde_json::json!([1, 2]));
        assert_eq!(h["outputs"][0]["data"], serde_json::json!(["2.5:1", "1.5:2"]));

        let limits = OutputLimits { top_k: Some(1), digits: Some(1) };
        let all =
            decode_with(r#"[{"name":"y","parameters":{"binary_data":true}},{"name":"label"}]"#)
                .unwrap();
        let (h, encoded) = header(&all, Some(&limits));
        assert_eq!(h["outputs"][0]["shape"], serde_json::json!([1, 1]));
        let tail = &encoded.body[encoded.header_length.unwrap()..];
        assert_eq!(tail, [&5u32.to_le_bytes()[..], b"2.5:1"].concat());
        assert_eq!(h["outputs"][1]["datatype"], "INT64", "integer outputs stay tensors");

        for bad in ["0", "1001", "-1", "1.5", "\"3\""] {
            let err = decode_with(&format!(
                r#"[{{"name":"y","parameters":{{"classification":{bad}}}}}]"#
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("whole number of classes from 1 to 1000"), "{bad}: {err}");
        }
    }
}
