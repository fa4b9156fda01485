//! JSON tensor `data` read straight into a typed buffer.
//!
//! `serde_json::Value` costs 32 bytes per number (plus the arrays holding
//! them) against two bytes of text for `0,`: a 62 MB body became 1.45 GB.
//! Here the raw text of `data` (borrowed from the body) is walked once with
//! a serde visitor that converts each scalar to the input's datatype as it
//! comes, into a buffer whose capacity was checked before: at most 8 bytes
//! per element (FP64, INT64), so a request costs a small multiple of its
//! text. The rules and messages are those of `TensorData::from_json`, which
//! processing's `tensor` step still uses.

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

use super::v2::{MAX_NESTING, V2Error};
use crate::engine::{DataType, TensorData, TensorError};

/// Reads `count` elements of `datatype` from the JSON text of a `data`
/// field (flat or nested arrays, or one scalar).
///
/// # Errors
/// An element that is not of the datatype (named by index), more or fewer
/// elements than `count`, nesting deeper than [`MAX_NESTING`].
pub fn read_data(raw: &str, datatype: DataType, count: usize) -> Result<TensorData, V2Error> {
    // Every element takes at least one byte of text, so the capacity is
    // bounded by the body as well as by the checked element count.
    let capacity = count.min(raw.len() / 2 + 1);
    let mut sink =
        Sink { data: TensorData::empty(datatype, capacity), count, seen: 0, error: None };
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    let parsed = Level { sink: &mut sink, depth: 0 }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    if let Some(error) = sink.error {
        return Err(error);
    }
    parsed.map_err(|e| V2Error::ConvertData(format!("malformed data: {e}")))?;
    if sink.seen != count {
        return Err(V2Error::ElementCount { count, got: sink.seen });
    }
    Ok(sink.data)
}

/// One JSON scalar as the visitor sees it.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'a str),
    Object,
}

impl Scalar<'_> {
    fn int(self) -> Option<i64> {
        match self {
            Scalar::I64(v) => Some(v),
            Scalar::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    fn float(self) -> Option<f64> {
        match self {
            Scalar::I64(v) => Some(v as f64),
            Scalar::U64(v) => Some(v as f64),
            Scalar::F64(v) => Some(v),
            _ => None,
        }
    }

    /// As `engine::json_kind` names a value.
    fn kind(self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => format!("a boolean ({b})"),
            Scalar::I64(v) => format!("a number ({v})"),
            Scalar::U64(v) => format!("a number ({v})"),
            Scalar::F64(v) => match serde_json::Number::from_f64(v) {
                Some(n) => format!("a number ({n})"),
                None => "a number".into(),
            },
            Scalar::Str(s) if s.len() > 40 => "a string".into(),
            Scalar::Str(s) => format!("a string ({s:?})"),
            Scalar::Object => "an object".into(),
        }
    }
}

struct Sink {
    data: TensorData,
    count: usize,
    seen: usize,
    error: Option<V2Error>,
}

impl Sink {
    /// Converts and stores one element; past `count` elements only counts
    /// them, for the message. `Err` stops the parse (the reason is kept).
    fn push(&mut self, scalar: Scalar<'_>) -> Result<(), ()> {
        let index = self.seen;
        self.seen += 1;
        if index >= self.count {
            return Ok(());
        }
        let stored = match &mut self.data {
            TensorData::Bool(v) => store(
                v,
                match scalar {
                    Scalar::Bool(b) => Some(b),
                    _ => None,
                },
                "a boolean",
            ),
            TensorData::U8(v) => {
                store(v, scalar.int().and_then(|i| i.try_into().ok()), "an integer in 0..=255")
            }
            TensorData::I8(v) => {
                store(v, scalar.int().and_then(|i| i.try_into().ok()), "an integer in -128..=127")
            }
            TensorData::I32(v) => {
                store(v, scalar.int().and_then(|i| i.try_into().ok()), "a 32-bit integer")
            }
            TensorData::I64(v) => store(v, scalar.int(), "a 64-bit integer"),
            TensorData::F16(v) => store(v, scalar.float().map(half::f16::from_f64), "a number"),
            TensorData::F32(v) => store(v, scalar.float().map(|x| x as f32), "a number"),
            TensorData::F64(v) => store(v, scalar.float(), "a number"),
        };
        stored.map_err(|expected| {
            let e = TensorError::Element { index, kind: scalar.kind(), expected };
            self.error = Some(V2Error::ConvertData(e.to_string()));
        })
    }
}

fn store<T>(
    out: &mut Vec<T>,
    value: Option<T>,
    expected: &'static str,
) -> Result<(), &'static str> {
    out.push(value.ok_or(expected)?);
    Ok(())
}

/// One level of nesting of the data.
struct Level<'s> {
    sink: &'s mut Sink,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The visitor's error when the sink refused: its reason is in the sink.
const STOPPED: &str = "stopped";

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data: numbers or booleans, in (nested) arrays")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.sink.push(Scalar::Bool(v)).map_err(|()| E::custom(STOPPED))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.sink.push(Scalar::I64(v)).map_err(|()| E::custom(STOPPED))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.sink.push(Scalar::U64(v)).map_err(|()| E::custom(STOPPED))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.sink.push(Scalar::F64(v)).map_err(|()| E::custom(STOPPED))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.push(Scalar::Str(v)).map_err(|()| E::custom(STOPPED))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.sink.push(Scalar::Null).map_err(|()| E::custom(STOPPED))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        // An object is never an element; stop here rather than read it.
        match self.sink.push(Scalar::Object) {
            Ok(()) => Err(A::Error::custom("an object in tensor data")),
            Err(()) => Err(A::Error::custom(STOPPED)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let sink = self.sink;
        if self.depth >= MAX_NESTING {
            sink.error = Some(V2Error::Nesting);
            return Err(A::Error::custom(STOPPED));
        }
        while seq.next_element_seed(Level { sink: &mut *sink, depth: self.depth + 1 })?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_text_give_the_same_elements() {
        let flat = read_data("[1, 2, 3, 4]", DataType::F32, 4).unwrap();
        let nested = read_data("[[1, 2], [3, 4.0]]", DataType::F32, 4).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(read_data("7", DataType::I64, 1).unwrap(), TensorData::I64(vec![7]));
        assert_eq!(
            read_data("[true, false]", DataType::Bool, 2).unwrap(),
            TensorData::Bool(vec![true, false])
        );
    }

    #[test]
    fn elements_are_refused_in_from_json_words() {
        let cases = [
            ("[1, \"a\"]", DataType::F32, "element 1 is a string (\"a\"), not a number"),
            ("[1, 256]", DataType::U8, "element 1 is a number (256), not an integer in 0..=255"),
            ("[1.5]", DataType::I64, "element 0 is a number (1.5), not a 64-bit integer"),
            ("[null]", DataType::F64, "element 0 is null, not a number"),
            ("[1, {\"a\": 1}]", DataType::F32, "element 1 is an object, not a number"),
            ("[1, true]", DataType::I32, "element 1 is a boolean (true), not a 32-bit integer"),
        ];
        for (text, datatype, expected) in cases {
            let count = 2;
            let err = read_data(text, datatype, count).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn counts_must_match_and_nesting_is_bounded() {
        let err = read_data("[1, 2, 3]", DataType::F32, 2).unwrap_err().to_string();
        assert!(err.contains("needs 2 elements, \"data\" has 3"), "{err}");
        let err = read_data("[1]", DataType::F32, 2).unwrap_err().to_string();
        assert!(err.contains("needs 2 elements, \"data\" has 1"), "{err}");
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let err = read_data(&deep, DataType::F32, 1).unwrap_err().to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn a_huge_count_reserves_only_what_the_text_can_hold() {
        // The count is the caller's checked product; the buffer is sized by
        // the text, so this allocates a few bytes, not 4 TiB.
        let err = read_data("[1]", DataType::F32, 1 << 40).unwrap_err().to_string();
        assert!(err.contains("has 1"), "{err}");
    }
}
