//! Output limits against model extraction (issue 12): a model can be
//! copied by querying it and fitting its answers, and full-precision
//! scores over every class are what such a copy learns fastest from. With
//! `--limit-top-k K` a caller without the `raw` scope gets, for every
//! floating output wider than `K`, only its `K` best classes (the
//! classification extension's `"score:index"` strings); with
//! `--limit-digits N` every score it gets is rounded to `N` decimals.
//!
//! # Who is limited
//! Everyone, unless the request is authenticated with the `raw` scope and
//! does not carry [`LIMITED_OUTPUT_HEADER`]. With auth off nobody has
//! `raw`: limits set on an open server apply to all. The router holds a
//! `raw` token to its backends and sends the header for each caller of
//! its own that lacks `raw`, so a limit cannot be escaped through it; a
//! direct caller who sends the header only limits itself.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::auth::{Caller, Scope};
pub use crate::contract::v2::LIMITED_OUTPUT_HEADER;
use crate::engine::{Tensor, TensorData};

/// Most decimals a limit can keep: an `f64` holds about 15 significant
/// digits, so more would not round anything.
pub const MAX_DIGITS: u32 = 12;

/// Most classes a limit or a classification request can ask for: the
/// strings it answers are a few tens of bytes each.
pub const MAX_TOP_K: usize = 1000;

/// What a caller without `raw` may see of the model's outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputLimits {
    /// Classes per row of each floating output wider than this.
    pub top_k: Option<usize>,
    /// Decimals kept of every floating value.
    pub digits: Option<u32>,
}

impl OutputLimits {
    pub fn is_set(&self) -> bool {
        self.top_k.is_some() || self.digits.is_some()
    }

    /// The limits one request gets: `None` for whole answers.
    pub fn for_request(&self, caller: Option<&Caller>, headers: &HeaderMap) -> Option<Self> {
        if !self.is_set() {
            return None;
        }
        let raw = caller.is_some_and(|c| c.scopes.contains(Scope::Raw))
            && !headers.contains_key(LIMITED_OUTPUT_HEADER);
        (!raw).then_some(*self)
    }

    /// `x` rounded to the kept decimals (unchanged without a digit limit;
    /// NaN and infinities stay what they are).
    pub fn round(&self, x: f64) -> f64 {
        match self.digits {
            Some(d) if x.is_finite() => {
                let scale = 10f64.powi(i32::try_from(d.min(MAX_DIGITS)).unwrap_or(0));
                let rounded = (x * scale).round() / scale;
                // Past 1e300 the product overflows; such values have no
                // decimals left to hide.
                if rounded.is_finite() { rounded } else { x }
            }
            _ => x,
        }
    }

    /// Rounds a floating tensor's values in place; others are left alone
    /// (integer outputs are labels or counts, not scores).
    pub fn round_tensor(&self, tensor: &mut Tensor) {
        if self.digits.is_none() {
            return;
        }
        match &mut tensor.data {
            TensorData::F32(v) => v.iter_mut().for_each(|x| *x = self.round(f64::from(*x)) as f32),
            TensorData::F64(v) => v.iter_mut().for_each(|x| *x = self.round(*x)),
            TensorData::F16(v) => v.iter_mut().for_each(|x| {
                *x = half::f16::from_f64(self.round(x.to_f64()));
            }),
            _ => {}
        }
    }

    /// The classes to answer for an output: what the caller asked
    /// (`requested`, the classification extension), at most the limit,
    /// which also applies to floating outputs wider than it that were not
    /// asked as classes. `None`: the tensor itself.
    pub fn classes(
        limits: Option<&Self>,
        requested: Option<usize>,
        floating: bool,
        width: usize,
    ) -> Option<usize> {
        let limit = limits.and_then(|l| l.top_k).filter(|_| floating);
        match (requested, limit) {
            (Some(k), Some(limit)) => Some(k.min(limit)),
            (Some(k), None) => Some(k),
            (None, Some(limit)) if width > limit => Some(limit),
            (None, _) => None,
        }
    }

    /// Limits one processed answer (`{"label", "score", "top_k": [...]}`
    /// or `{"value": ...}`): a `top_k` list keeps its first `K` entries, a
    /// `value` list wider than `K` becomes the `top_k` of its `K` largest,
    /// and every number that is not an index is rounded.
    pub fn limit_answer(&self, answer: &mut Value) {
        if let Some(k) = self.top_k {
            limit_raw_rows(answer, k);
        }
        if let (Some(k), Value::Object(map)) = (self.top_k, &mut *answer) {
            if let Some(Value::Array(entries)) = map.get_mut("top_k") {
                entries.truncate(k);
            }
            let wide_values = match map.get("value") {
                Some(Value::Array(values)) if values.len() > k => {
                    Some(values.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect::<Vec<_>>())
                }
                _ => None,
            };
            if let Some(values) = wide_values {
                map.remove("value");
                map.insert("top_k".into(), top_k_entries(&values, k));
            }
        }
        if self.digits.is_some() {
            self.round_numbers(answer, None);
        }
    }

    /// Limits every answer of processed outputs (name, one answer per
    /// instance), as V1 and processed V2 requests answer them.
    pub fn limit_columns(&self, columns: &mut [(String, Vec<Value>)]) {
        columns.iter_mut().flat_map(|(_, answers)| answers).for_each(|a| self.limit_answer(a));
    }

    fn round_numbers(&self, value: &mut Value, key: Option<&str>) {
        match value {
            // Integers (indices, counts) are not scores.
            Value::Number(n) if n.is_f64() && key != Some("index") => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                *value =
                    serde_json::Number::from_f64(self.round(x)).map_or(Value::Null, Value::Number);
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.round_numbers(v, key)),
            Value::Object(map) => {
                map.iter_mut().for_each(|(k, v)| self.round_numbers(v, Some(k.as_str())));
            }
            _ => {}
        }
    }
}

/// The `k` largest of `values` as `[{"index", "score"}, ...]`, best first.
fn top_k_entries(values: &[f64], k: usize) -> Value {
    crate::process::top_k(values, k)
        .into_iter()
        .map(|(index, score)| serde_json::json!({ "index": index, "score": score }))
        .collect()
}

/// A model without output steps answers its raw rows (nested arrays):
/// each innermost row wider than `k` becomes the `top_k` of its `k`
/// largest values.
fn limit_raw_rows(value: &mut Value, k: usize) {
    let Value::Array(items) = value else { return };
    if items.iter().all(Value::is_number) {
        if items.len() > k {
            let values: Vec<f64> = items.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
            *value = serde_json::json!({ "top_k": top_k_entries(&values, k) });
        }
    } else {
        items.iter_mut().for_each(|v| limit_raw_rows(v, k));
    }
}

/// The classification extension's answer for one output: the `k` highest
/// values of each row along the last axis, best first, as
/// `"value:index"` strings in a `[rows..., k]` shape (Triton's format,
/// which `tritonclient`'s `class_count` reads). `k` above the width
/// answers every class.
pub fn classify(
    tensor: &Tensor,
    k: usize,
    limits: Option<&OutputLimits>,
) -> (Vec<usize>, Vec<String>) {
    let width = tensor.shape.last().copied().unwrap_or(1).max(1);
    let k = k.min(width);
    let values = tensor.data.to_f64();
    let mut shape = tensor.shape.clone();
    match shape.last_mut() {
        Some(last) => *last = k,
        None => shape.push(k),
    }
    // Values are written at their own precision: an FP32 score as the
    // shortest text that reads back to the same f32.
    let single = !matches!(tensor.data, TensorData::F64(_));
    let mut strings = Vec::with_capacity(values.len() / width * k);
    for row in values.chunks(width) {
        for (index, value) in crate::process::top_k(row, k) {
            let value = limits.map_or(value, |l| l.round(value));
            strings.push(match limits.and_then(|l| l.digits) {
                Some(d) => format!("{value:.prec$}:{index}", prec = d as usize),
                None if single => format!("{}:{index}", value as f32),
                None => format!("{value}:{index}"),
            });
        }
    }
    (shape, strings)
}

/// The binary form of a `BYTES` tensor: each element's length (4 bytes,
/// little-endian) then its bytes.
pub fn bytes_tensor_le(strings: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(strings.iter().map(|s| s.len() + 4).sum());
    for s in strings {
        // Classification strings are a few tens of bytes: the cast holds.
        out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;
    use crate::auth::Scopes;

    fn caller(scopes: &[Scope]) -> Caller {
        let mut set = Scopes::default();
        scopes.iter().for_each(|s| set.insert(*s));
        Caller { name: Arc::from("t"), scopes: set }
    }

    const LIMITS: OutputLimits = OutputLimits { top_k: Some(2), digits: Some(2) };

    #[test]
    fn only_raw_callers_without_the_router_header_get_whole_answers() {
        let none = HeaderMap::new();
        let mut limited = HeaderMap::new();
        limited.insert(LIMITED_OUTPUT_HEADER, HeaderValue::from_static("true"));
        let raw = caller(&[Scope::Infer, Scope::Raw]);
        let plain = caller(&[Scope::Infer]);
        assert_eq!(LIMITS.for_request(Some(&raw), &none), None);
        assert_eq!(LIMITS.for_request(Some(&raw), &limited), Some(LIMITS));
        assert_eq!(LIMITS.for_request(Some(&plain), &none), Some(LIMITS));
        // Auth off: nobody can show `raw`.
        assert_eq!(LIMITS.for_request(None, &none), Some(LIMITS));
        assert_eq!(OutputLimits::default().for_request(None, &limited), None);
    }

    #[test]
    fn rounding_keeps_the_decimals_asked_and_leaves_the_rest() {
        assert_eq!(LIMITS.round(0.98765), 0.99);
        assert_eq!(LIMITS.round(-1.234), -1.23);
        assert!(LIMITS.round(f64::NAN).is_nan());
        assert_eq!(LIMITS.round(f64::INFINITY), f64::INFINITY);
        assert_eq!(LIMITS.round(1e306), 1e306);
        assert_eq!(OutputLimits::default().round(0.98765), 0.98765);
        let mut t = Tensor::new(vec![2], TensorData::F32(vec![0.123_45, 9.876])).unwrap();
        LIMITS.round_tensor(&mut t);
        assert_eq!(t.data, TensorData::F32(vec![0.12, 9.88]));
        let mut labels = Tensor::new(vec![1], TensorData::I64(vec![7])).unwrap();
        LIMITS.round_tensor(&mut labels);
        assert_eq!(labels.data, TensorData::I64(vec![7]));
    }

    #[test]
    fn classes_follow_the_request_and_the_limit() {
        let l = Some(&LIMITS);
        assert_eq!(OutputLimits::classes(l, None, true, 10), Some(2));
        assert_eq!(OutputLimits::classes(l, Some(5), true, 10), Some(2));
        assert_eq!(OutputLimits::classes(l, Some(1), true, 10), Some(1));
        // A regression's one value, or two classes, show nothing more.
        assert_eq!(OutputLimits::classes(l, None, true, 2), None);
        // Integer outputs are decisions already.
        assert_eq!(OutputLimits::classes(l, None, false, 10), None);
        assert_eq!(OutputLimits::classes(None, Some(3), true, 10), Some(3));
        assert_eq!(OutputLimits::classes(None, None, true, 10), None);
    }

    #[test]
    fn classification_answers_the_best_classes_of_each_row() {
        let t =
            Tensor::new(vec![2, 3], TensorData::F32(vec![0.1, 0.7, 0.2, 0.5, 0.25, 0.25])).unwrap();
        let (shape, strings) = classify(&t, 2, None);
        assert_eq!(shape, vec![2, 2]);
        assert_eq!(strings[0], "0.7:1");
        assert!(strings[1].ends_with(":2"));
        assert_eq!(&strings[2..], ["0.5:0", "0.25:1"]);
        let (shape, strings) = classify(&t, 9, Some(&LIMITS));
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(strings[0], "0.70:1");
        let binary = bytes_tensor_le(&strings[..1]);
        assert_eq!(&binary[..4], &6u32.to_le_bytes());
        assert_eq!(&binary[4..], b"0.70:1");
    }

    #[test]
    fn processed_answers_lose_classes_and_decimals_but_keep_indices() {
        let mut answer = json!({"label": "7", "index": 7, "score": 0.98765,
            "top_k": [{"label": "7", "index": 7, "score": 0.98765},
                      {"label": "1", "index": 1, "score": 0.01},
                      {"label": "2", "index": 2, "score": 0.002}]});
        LIMITS.limit_answer(&mut answer);
        assert_eq!(answer["score"], 0.99);
        assert_eq!(answer["index"], 7);
        assert_eq!(answer["top_k"].as_array().unwrap().len(), 2);
        assert_eq!(answer["top_k"][1]["score"], 0.01);
        let mut wide = json!({"value": [0.1, 0.9, 0.5]});
        LIMITS.limit_answer(&mut wide);
        assert_eq!(
            wide,
            json!({"top_k": [{"index": 1, "score": 0.9}, {"index": 2, "score": 0.5}]})
        );
        let mut raw = json!([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]]);
        LIMITS.limit_answer(&mut raw);
        assert_eq!(
            raw[0],
            json!({"top_k": [{"index": 1, "score": 0.9}, {"index": 2, "score": 0.5}]})
        );
        assert_eq!(raw[1]["top_k"][0]["index"], 0);
        let mut one = json!({"value": 151.345});
        LIMITS.limit_answer(&mut one);
        assert_eq!(one, json!({"value": 151.35}));
    }
}
