//! Output agreement between two V2 answers to the same request: per row,
//! the same top-1 class for classifier-shaped outputs (`[N, C]` floats with
//! C > 1, or the classification extension's `"score:index"` strings that
//! output limits answer), otherwise every value within a small tolerance.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::contract::v2::HEADER_LENGTH;
use crate::engine::{DataType, TensorData};

/// Largest absolute difference counted as agreement for non-classifier
/// outputs: above float noise between two builds of one model, below any
/// change a person would call a different answer.
const TOLERANCE: f64 = 1e-3;

/// How an output's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Other,
    /// Class indices, best first per row (a `BYTES` classification answer).
    Classes,
}

/// The outputs of one V2 answer, as floats, by name.
pub struct Decoded {
    outputs: Vec<(String, Vec<usize>, Vec<f64>, Kind)>,
}

impl Decoded {
    /// Reads a V2 answer, JSON or binary; `None` when it is not one.
    pub fn from_answer(headers: &HeaderMap, body: &[u8]) -> Option<Decoded> {
        let header_len = headers
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let (json, mut tail) = match header_len {
            Some(n) if n <= body.len() => body.split_at(n),
            _ => (body, &[][..]),
        };
        let value: Value = serde_json::from_slice(json).ok()?;
        let mut outputs = Vec::new();
        for out in value.get("outputs")?.as_array()? {
            let name = out.get("name")?.as_str()?.to_string();
            let datatype = out.get("datatype")?.as_str()?;
            let shape: Vec<usize> = out
                .get("shape")?
                .as_array()?
                .iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect();
            let binary = match out.get("parameters").and_then(|p| p.get("binary_data_size")) {
                Some(size) => {
                    let size = usize::try_from(size.as_u64()?).ok()?;
                    if size > tail.len() {
                        return None;
                    }
                    let (bytes, rest) = tail.split_at(size);
                    tail = rest;
                    Some(bytes)
                }
                None => None,
            };
            let data = out.get("data");
            let (values, kind) = output_values(
                datatype,
                binary,
                || class_indices_json(data?),
                || data.map(flatten),
            )?;
            outputs.push((name, shape, values, kind));
        }
        Some(Decoded { outputs })
    }

    /// Reads a gRPC `ModelInferResponse` as it travels: one uncompressed
    /// length-prefixed message; `None` when it is not one.
    pub fn from_grpc(body: &[u8]) -> Option<Decoded> {
        use crate::contract::grpc::ModelInferResponse;
        use prost::Message as _;
        let (&compressed, rest) = body.split_first()?;
        let (length, message) = rest.split_first_chunk::<4>()?;
        let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
        if compressed != 0 || message.len() != length {
            return None;
        }
        let answer = ModelInferResponse::decode(message).ok()?;
        let mut outputs = Vec::with_capacity(answer.outputs.len());
        for (i, out) in answer.outputs.iter().enumerate() {
            let shape: Vec<usize> =
                out.shape.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
            let raw = answer.raw_output_contents.get(i).map(Vec::as_slice);
            let contents = out.contents.as_ref();
            let (values, kind) = output_values(
                &out.datatype,
                raw,
                || {
                    let strings = &contents?.bytes_contents;
                    strings.iter().map(|b| class_index(std::str::from_utf8(b).ok()?)).collect()
                },
                || contents.map(typed_values),
            )?;
            outputs.push((out.name.clone(), shape, values, kind));
        }
        Some(Decoded { outputs })
    }
}

/// One output's values and how they compare, whichever protocol carried
/// them: from its raw bytes when it has them, else from the message's own
/// form (`classes` for a `BYTES` classification answer, `typed` for a
/// tensor); `None` when neither reads.
fn output_values(
    datatype: &str,
    raw: Option<&[u8]>,
    classes: impl FnOnce() -> Option<Vec<f64>>,
    typed: impl FnOnce() -> Option<Vec<f64>>,
) -> Option<(Vec<f64>, Kind)> {
    if datatype == "BYTES" {
        let indices = match raw {
            Some(bytes) => class_indices_binary(bytes)?,
            None => classes()?,
        };
        return Some((indices, Kind::Classes));
    }
    let datatype = DataType::from_v2_name(datatype).ok()?;
    let kind = if datatype.is_float() { Kind::Float } else { Kind::Other };
    let values = match raw {
        Some(bytes) => TensorData::from_le_bytes(datatype, bytes).ok()?.to_f64(),
        None => typed()?,
    };
    Some((values, kind))
}

/// The values of typed gRPC contents, whichever field holds them.
fn typed_values(c: &crate::contract::grpc::InferTensorContents) -> Vec<f64> {
    let mut values: Vec<f64> = c.fp32_contents.iter().map(|&x| f64::from(x)).collect();
    values.extend(c.fp64_contents.iter().copied());
    values.extend(c.int_contents.iter().map(|&x| f64::from(x)));
    values.extend(c.int64_contents.iter().map(|&x| x as f64));
    values.extend(c.uint_contents.iter().map(|&x| f64::from(x)));
    values.extend(c.uint64_contents.iter().map(|&x| x as f64));
    values.extend(c.bool_contents.iter().map(|&b| f64::from(u8::from(b))));
    values
}

/// The class index of one `"score:index[:label]"` string.
fn class_index(text: &str) -> Option<f64> {
    let index: u32 = text.split(':').nth(1)?.parse().ok()?;
    Some(f64::from(index))
}

fn class_indices_json(data: &Value) -> Option<Vec<f64>> {
    data.as_array()?.iter().map(|v| class_index(v.as_str()?)).collect()
}

/// `BYTES` binary data: each element's 4-byte little-endian length, then it.
fn class_indices_binary(mut bytes: &[u8]) -> Option<Vec<f64>> {
    let mut indices = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if len > rest.len() {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        indices.push(class_index(std::str::from_utf8(text).ok()?)?);
        bytes = rest;
    }
    Some(indices)
}

fn flatten(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        Value::Bool(b) => vec![f64::from(u8::from(*b))],
        other => other.as_f64().into_iter().collect(),
    }
}

fn argmax(row: &[f64]) -> Option<usize> {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i)
}

/// Rows that agreed, and rows compared, over the outputs both answers share.
pub fn compare(ours: &Decoded, theirs: &Decoded) -> Option<(u64, u64)> {
    let mut agreed = 0;
    let mut compared = 0;
    for (name, shape, values, kind) in &ours.outputs {
        let Some((_, their_shape, their_values, _)) = theirs.outputs.iter().find(|o| &o.0 == name)
        else {
            continue;
        };
        if shape != their_shape || values.len() != their_values.len() || values.is_empty() {
            continue;
        }
        let rows = shape.first().copied().unwrap_or(1).max(1);
        let width = values.len() / rows;
        for r in 0..rows {
            let (a, b) =
                (&values[r * width..(r + 1) * width], &their_values[r * width..(r + 1) * width]);
            let same = if *kind == Kind::Classes {
                a.first() == b.first()
            } else if *kind == Kind::Float && shape.len() == 2 && width > 1 {
                argmax(a) == argmax(b)
            } else {
                a.iter().zip(b).all(|(x, y)| (x - y).abs() <= TOLERANCE * x.abs().max(1.0))
            };
            agreed += u64::from(same);
            compared += 1;
        }
    }
    (compared > 0).then_some((agreed, compared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded(value: Value) -> Decoded {
        Decoded::from_answer(&HeaderMap::new(), value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn classifiers_agree_on_the_top_class_per_row() {
        let a = decoded(
            json!({ "outputs": [{ "name": "logits", "datatype": "FP32", "shape": [2, 3], "data": [1, 5, 2, 9, 1, 1] }] }),
        );
        let b = decoded(
            json!({ "outputs": [{ "name": "logits", "datatype": "FP32", "shape": [2, 3], "data": [0, 4, 3, 1, 9, 1] }] }),
        );
        assert_eq!(compare(&a, &b), Some((1, 2)));
    }

    #[test]
    fn classification_answers_agree_on_their_first_class_json_or_binary() {
        let a = decoded(json!({ "outputs": [{ "name": "logits", "datatype": "BYTES",
            "shape": [2, 2], "data": ["0.9:3", "0.1:1", "0.5:2", "0.4:0"] }] }));
        // Four 5-byte strings, each after its 4-byte length: 36 bytes.
        let header = json!({ "outputs": [{ "name": "logits", "datatype": "BYTES", "shape": [2, 2],
            "parameters": { "binary_data_size": 36 } }] })
        .to_string();
        let mut body = header.clone().into_bytes();
        for s in ["0.8:3", "0.2:2", "0.6:0", "0.3:2"] {
            body.extend(5u32.to_le_bytes());
            body.extend(s.as_bytes());
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, header.len().into());
        let b = Decoded::from_answer(&headers, &body).unwrap();
        assert_eq!(compare(&a, &b), Some((1, 2)));
        let broken = json!({ "outputs": [{ "name": "logits", "datatype": "BYTES",
            "shape": [1, 1], "data": ["no index"] }] });
        assert!(Decoded::from_answer(&HeaderMap::new(), broken.to_string().as_bytes()).is_none());
    }

    #[test]
    fn other_outputs_agree_within_tolerance_and_binary_answers_decode() {
        let a = decoded(
            json!({ "outputs": [{ "name": "target", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0] }] }),
        );
        let header = json!({ "outputs": [{ "name": "target", "datatype": "FP32", "shape": [2, 1], "parameters": { "binary_data_size": 8 } }] }).to_string();
        let mut body = header.clone().into_bytes();
        body.extend(1.0005f32.to_le_bytes());
        body.extend(2.5f32.to_le_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, header.len().into());
        let b = Decoded::from_answer(&headers, &body).unwrap();
        assert_eq!(compare(&a, &b), Some((1, 2)));
        let unrelated = decoded(
            json!({ "outputs": [{ "name": "other", "datatype": "FP32", "shape": [1], "data": [1] }] }),
        );
        assert_eq!(compare(&a, &unrelated), None);
    }
}
