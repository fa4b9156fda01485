//! Processed V2 requests: inputs given as JSON values for the model's
//! processing steps, and answers as `BYTES` tensors of JSON values.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{V2Error, flag};
use crate::contract::v2::{InferResponse, PROCESSED_DATATYPE, ProcessedRequest, ResponseOutput};
use crate::process::{InputValue, Processor};

/// Whether the JSON holds the word `"processing"` at all: a byte search,
/// much cheaper than the parse [`wants_processing`] does.
pub fn mentions_processing(json: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"processing\"";
    json.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Whether a request asks for processing: `"parameters": {"processing": true}`.
///
/// # Errors
/// Malformed JSON, or a `processing` parameter that is not a boolean.
pub fn wants_processing(json: &[u8]) -> Result<bool, V2Error> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        parameters: Option<Map<String, Value>>,
    }
    let peek: Peek = serde_json::from_slice(json).map_err(V2Error::ParseRequest)?;
    peek.parameters
        .as_ref()
        .and_then(|p| p.get("processing"))
        .map(|v| flag(v, "processing"))
        .transpose()
        .map(|f| f.unwrap_or(false))
}

/// Parses a processed V2 request.
///
/// # Errors
/// Malformed JSON or an input without a `data` array.
pub fn decode_processed(json: &[u8]) -> Result<ProcessedRequest, V2Error> {
    serde_json::from_slice(json).map_err(V2Error::ParseProcessed)
}

/// One column of values per model input of a processed request, in the
/// processor's (the model's) input order.
///
/// # Errors
/// An unknown, repeated or missing input.
pub fn processed_columns<'a>(
    request: &'a ProcessedRequest,
    processor: &Processor,
) -> Result<Vec<Vec<InputValue<'a>>>, V2Error> {
    let names: Vec<&str> = processor.input_steps().map(|(n, _)| n).collect();
    let mut columns: Vec<Option<Vec<InputValue<'a>>>> = vec![None; names.len()];
    for input in &request.inputs {
        let index = names.iter().position(|n| *n == input.name).ok_or_else(|| {
            V2Error::UnknownInput { name: input.name.clone(), known: names.join(", ") }
        })?;
        if columns[index].is_some() {
            return Err(V2Error::RepeatedInput(input.name.clone()));
        }
        columns[index] = Some(input.data.iter().map(InputValue::Json).collect());
    }
    columns
        .into_iter()
        .zip(&names)
        .map(|(c, name)| c.ok_or_else(|| V2Error::MissingInput(name.to_string())))
        .collect()
}

/// What a processed answer echoes of its request.
#[derive(Debug)]
pub struct ProcessedHeader {
    pub id: Option<Value>,
    pub parameters: Option<Map<String, Value>>,
}

impl From<ProcessedRequest> for ProcessedHeader {
    fn from(request: ProcessedRequest) -> ProcessedHeader {
        ProcessedHeader { id: request.id, parameters: request.parameters }
    }
}

/// A processed V2 answer: each output a `BYTES` tensor of `rows` JSON answers.
///
/// # Errors
/// Only JSON serialization failures, which cannot happen for these types.
pub fn encode_processed(
    model_name: &str,
    model_version: &str,
    request: &ProcessedHeader,
    answers: &[(String, Vec<Value>)],
    rows: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    let shape = [rows];
    let outputs = answers
        .iter()
        .map(|(name, data)| ResponseOutput {
            name,
            datatype: PROCESSED_DATATYPE,
            shape: &shape,
            parameters: None,
            data: Some(data),
        })
        .collect();
    serde_json::to_vec(&InferResponse {
        model_name,
        model_version,
        id: request.id.as_ref(),
        parameters: request.parameters.as_ref(),
        outputs,
    })
}
