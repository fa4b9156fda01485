//! Output agreement between two V2 answers to the same request: per row,
//! the same top-1 class for classifier-shaped outputs (`[N, C]` floats with
//! C > 1), otherwise every value within a small tolerance.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::contract::v2::HEADER_LENGTH;
use crate::engine::{DataType, TensorData};

/// Largest absolute difference counted as agreement for non-classifier
/// outputs: above float noise between two builds of one model, below any
/// change a person would call a different answer.
const TOLERANCE: f64 = 1e-3;

/// The outputs of one V2 answer, as floats, by name.
pub struct Decoded {
    outputs: Vec<(String, Vec<usize>, Vec<f64>, bool)>,
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
            let datatype = DataType::from_v2_name(out.get("datatype")?.as_str()?).ok()?;
            let shape: Vec<usize> = out
                .get("shape")?
                .as_array()?
                .iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect();
            let is_float = matches!(datatype, DataType::F16 | DataType::F32 | DataType::F64);
            let values: Vec<f64> =
                match out.get("parameters").and_then(|p| p.get("binary_data_size")) {
                    Some(size) => {
                        let size = size.as_u64()? as usize;
                        if size > tail.len() {
                            return None;
                        }
                        let (bytes, rest) = tail.split_at(size);
                        tail = rest;
                        TensorData::from_le_bytes(datatype, bytes).ok()?.to_f64()
                    }
                    None => flatten(out.get("data")?),
                };
            outputs.push((name, shape, values, is_float));
        }
        Some(Decoded { outputs })
    }
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
    for (name, shape, values, is_float) in &ours.outputs {
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
            let same = if *is_float && shape.len() == 2 && width > 1 {
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
