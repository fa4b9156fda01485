//! Host tensors: the engine's currency with the rest of tractor.
//!
//! The server, the batcher and the protocol codecs work on these plain typed
//! vectors, so that only `engine` ever touches tract's own `Tensor`.

use std::fmt;

use half::f16;

use super::{Dim, TensorSpec};

/// Errors of building, converting and checking host tensors. The messages
/// reach clients (a V2 400 names the input, then this), so they say what
/// was expected in the protocol's terms.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("unsupported datatype {name:?}; tractor serves {}", DataType::supported_list())]
    UnsupportedDatatype { name: String },
    #[error("cannot append {from} elements to a {to} tensor")]
    Append { from: DataType, to: DataType },
    #[error("element {index} is {kind}, not {expected}")]
    Element { index: usize, kind: String, expected: &'static str },
    #[error("{bytes} bytes is not a whole number of {datatype} elements ({} bytes each)", datatype.size_of())]
    PartialElement { bytes: usize, datatype: DataType },
    #[error("BOOL byte {0} is neither 0 nor 1")]
    BoolByte(u8),
    #[error("shape {0:?} has more elements than memory can hold")]
    TooLarge(Vec<usize>),
    #[error("shape {shape:?} needs {expected} elements, the data has {got}")]
    ElementCount { shape: Vec<usize>, expected: usize, got: usize },
    #[error("nothing to concatenate")]
    NothingToConcatenate,
    #[error("a scalar has no rows to concatenate")]
    ConcatenateScalar,
    #[error("cannot concatenate shapes {first:?} and {other:?} along the batch axis")]
    ConcatenateShapes { first: Vec<usize>, other: Vec<usize> },
    #[error("a scalar has no rows")]
    RowsOfScalar,
    #[error("rows {start}..{end} out of {rows}")]
    RowsOutOfRange { start: usize, end: usize, rows: usize },
    #[error("input {name:?} has shape {shape:?}, the model expects rank {rank} {expected}")]
    Rank { name: String, shape: Vec<usize>, rank: usize, expected: String },
    #[error(
        "input {name:?} has shape {shape:?}, the model expects {expected} (axis {axis} must be {size})"
    )]
    Axis { name: String, shape: Vec<usize>, expected: String, axis: usize, size: usize },
    #[error("input {name:?} has an empty batch")]
    EmptyBatch { name: String },
    #[error("cannot resize shape {from:?} to {to:?}: the ranks differ")]
    ResizeRank { from: Vec<usize>, to: Vec<usize> },
}

/// The element types tractor serves, named as the Open Inference Protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    I8,
    I32,
    I64,
    F16,
    F32,
    F64,
}

impl DataType {
    pub const ALL: [DataType; 8] = [
        DataType::Bool,
        DataType::U8,
        DataType::I8,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
    ];

    /// The V2 protocol name (`FP32`, `INT64`, ...).
    pub fn v2_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::I8 => "INT8",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
        }
    }

    /// Parses a V2 protocol name.
    ///
    /// # Errors
    /// Names the protocol knows but tractor does not serve (`UINT16`, `BYTES`,
    /// ...) and unknown names both return a message listing what is accepted.
    pub fn from_v2_name(name: &str) -> Result<DataType, TensorError> {
        DataType::ALL
            .into_iter()
            .find(|dt| dt.v2_name() == name)
            .ok_or_else(|| TensorError::UnsupportedDatatype { name: name.to_string() })
    }

    pub fn supported_list() -> String {
        DataType::ALL.map(DataType::v2_name).join(", ")
    }

    /// Whether values of this type are scores rather than labels or counts.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F16 | DataType::F32 | DataType::F64)
    }

    /// Bytes one element takes in the binary tensor data extension.
    pub fn size_of(self) -> usize {
        match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::F16 => 2,
            DataType::I32 | DataType::F32 => 4,
            DataType::I64 | DataType::F64 => 8,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// Elements of a tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of any variant.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::engine::TensorData::Bool($v) => $body,
            $crate::engine::TensorData::U8($v) => $body,
            $crate::engine::TensorData::I8($v) => $body,
            $crate::engine::TensorData::I32($v) => $body,
            $crate::engine::TensorData::I64($v) => $body,
            $crate::engine::TensorData::F16($v) => $body,
            $crate::engine::TensorData::F32($v) => $body,
            $crate::engine::TensorData::F64($v) => $body,
        }
    };
}

/// Builds the same variant as `$like` from an expression over its inner `Vec`.
macro_rules! map_same_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::U8,
            TensorData::I8(_) => DataType::I8,
            TensorData::I32(_) => DataType::I32,
            TensorData::I64(_) => DataType::I64,
            TensorData::F16(_) => DataType::F16,
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
        }
    }

    pub fn len(&self) -> usize {
        dispatch_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn empty(datatype: DataType, capacity: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
            DataType::U8 => TensorData::U8(Vec::with_capacity(capacity)),
            DataType::I8 => TensorData::I8(Vec::with_capacity(capacity)),
            DataType::I32 => TensorData::I32(Vec::with_capacity(capacity)),
            DataType::I64 => TensorData::I64(Vec::with_capacity(capacity)),
            DataType::F16 => TensorData::F16(Vec::with_capacity(capacity)),
            DataType::F32 => TensorData::F32(Vec::with_capacity(capacity)),
            DataType::F64 => TensorData::F64(Vec::with_capacity(capacity)),
        }
    }

    /// Elements `range` as a new buffer of the same type.
    pub fn slice(&self, range: std::ops::Range<usize>) -> TensorData {
        map_same_variant!(self, v => v[range].to_vec())
    }

    /// Appends `other`, which must have the same datatype.
    ///
    /// # Errors
    /// A datatype mismatch is reported and nothing is appended.
    pub fn extend_from(&mut self, other: &TensorData) -> Result<(), TensorError> {
        match (self, other) {
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
            (TensorData::U8(a), TensorData::U8(b)) => a.extend_from_slice(b),
            (TensorData::I8(a), TensorData::I8(b)) => a.extend_from_slice(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
            (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
            (TensorData::F16(a), TensorData::F16(b)) => a.extend_from_slice(b),
            (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
            (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
            (a, b) => {
                return Err(TensorError::Append { from: b.datatype(), to: a.datatype() });
            }
        }
        Ok(())
    }

    /// JSON scalars (already flattened) as elements of `datatype`: the one
    /// conversion behind V2 `data` and processing's `tensor` step, so both
    /// accept the same numbers and refuse the rest in the same words.
    ///
    /// # Errors
    /// The first element that is not of the type, e.g. `element 1 is a
    /// number (256), not an integer in 0..=255`.
    pub fn from_json(
        datatype: DataType,
        flat: &[&serde_json::Value],
    ) -> Result<TensorData, TensorError> {
        use serde_json::Value;
        fn each<T>(
            flat: &[&Value],
            expected: &'static str,
            f: impl Fn(&Value) -> Option<T>,
        ) -> Result<Vec<T>, TensorError> {
            flat.iter()
                .enumerate()
                .map(|(index, v)| {
                    f(v).ok_or_else(|| TensorError::Element { index, kind: json_kind(v), expected })
                })
                .collect()
        }
        fn int<T: TryFrom<i64>>(v: &Value) -> Option<T> {
            v.as_i64().and_then(|i| T::try_from(i).ok())
        }
        Ok(match datatype {
            DataType::Bool => TensorData::Bool(each(flat, "a boolean", Value::as_bool)?),
            DataType::U8 => TensorData::U8(each(flat, "an integer in 0..=255", int)?),
            DataType::I8 => TensorData::I8(each(flat, "an integer in -128..=127", int)?),
            DataType::I32 => TensorData::I32(each(flat, "a 32-bit integer", int)?),
            DataType::I64 => TensorData::I64(each(flat, "a 64-bit integer", Value::as_i64)?),
            DataType::F16 => {
                TensorData::F16(each(flat, "a number", |v| v.as_f64().map(f16::from_f64))?)
            }
            DataType::F32 => {
                TensorData::F32(each(flat, "a number", |v| v.as_f64().map(|x| x as f32))?)
            }
            DataType::F64 => TensorData::F64(each(flat, "a number", Value::as_f64)?),
        })
    }

    /// Every element as f64 (booleans as 0 and 1), for output processing
    /// and for comparing answers.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            TensorData::Bool(v) => v.iter().map(|b| f64::from(u8::from(*b))).collect(),
            TensorData::U8(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::I8(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::I32(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::I64(v) => v.iter().map(|x| *x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
            TensorData::F64(v) => v.clone(),
        }
    }

    /// Little-endian bytes, as the binary tensor data extension lays them out.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.datatype().size_of());
        match self {
            TensorData::Bool(v) => out.extend(v.iter().map(|b| *b as u8)),
            TensorData::U8(v) => out.extend_from_slice(v),
            TensorData::I8(v) => out.extend(v.iter().map(|x| *x as u8)),
            TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
        out
    }

    /// Reads little-endian bytes of `datatype`.
    ///
    /// # Errors
    /// A byte count that is not a whole number of elements, or a BOOL byte
    /// other than 0 or 1.
    pub fn from_le_bytes(datatype: DataType, bytes: &[u8]) -> Result<TensorData, TensorError> {
        if !bytes.len().is_multiple_of(datatype.size_of()) {
            return Err(TensorError::PartialElement { bytes: bytes.len(), datatype });
        }
        fn chunks<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
                .collect()
        }
        Ok(match datatype {
            DataType::Bool => TensorData::Bool(
                bytes
                    .iter()
                    .map(|b| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        other => Err(TensorError::BoolByte(*other)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::U8 => TensorData::U8(bytes.to_vec()),
            DataType::I8 => TensorData::I8(bytes.iter().map(|b| *b as i8).collect()),
            DataType::I32 => TensorData::I32(chunks(bytes, i32::from_le_bytes)),
            DataType::I64 => TensorData::I64(chunks(bytes, i64::from_le_bytes)),
            DataType::F16 => TensorData::F16(chunks(bytes, f16::from_le_bytes)),
            DataType::F32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)),
            DataType::F64 => TensorData::F64(chunks(bytes, f64::from_le_bytes)),
        })
    }
}

/// A tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// A JSON value as an error message names it: `a string ("2")`, `an array`.
pub fn json_kind(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.len() > 40 => "a string".into(),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

impl Tensor {
    /// # Errors
    /// The element count must equal the product of the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let Some(expected) = element_count(&shape) else {
            return Err(TensorError::TooLarge(shape));
        };
        if expected != data.len() {
            return Err(TensorError::ElementCount { shape, expected, got: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Joins tensors along axis 0. All must share datatype and trailing dims.
    ///
    /// # Errors
    /// Mismatched datatypes or trailing dimensions, or no tensor at all.
    pub fn concat_rows(parts: &[&Tensor]) -> Result<Tensor, TensorError> {
        let first = parts.first().ok_or(TensorError::NothingToConcatenate)?;
        let trailing = first.shape.get(1..).ok_or(TensorError::ConcatenateScalar)?;
        let total_rows: usize = parts.iter().map(|p| p.shape.first().copied().unwrap_or(0)).sum();
        let total_len: usize = parts.iter().map(|p| p.data.len()).sum();
        let mut data = TensorData::empty(first.datatype(), total_len);
        for part in parts {
            if part.shape.get(1..) != Some(trailing) {
                return Err(TensorError::ConcatenateShapes {
                    first: first.shape.clone(),
                    other: part.shape.clone(),
                });
            }
            data.extend_from(&part.data)?;
        }
        let mut shape = first.shape.clone();
        shape[0] = total_rows;
        Tensor::new(shape, data)
    }

    /// Rows `start..start + count` along axis 0.
    ///
    /// # Errors
    /// A scalar, or rows beyond the tensor.
    pub fn rows(&self, start: usize, count: usize) -> Result<Tensor, TensorError> {
        let rows = *self.shape.first().ok_or(TensorError::RowsOfScalar)?;
        if start + count > rows {
            return Err(TensorError::RowsOutOfRange { start, end: start + count, rows });
        }
        let row_len = element_count(&self.shape[1..]).unwrap_or(0);
        let mut shape = self.shape.clone();
        shape[0] = count;
        Ok(Tensor { shape, data: self.data.slice(start * row_len..(start + count) * row_len) })
    }
}

impl Tensor {
    /// The tensor cut or zero-padded to `shape`, of the same rank: each
    /// element at an index inside both shapes is kept, the rest is zero
    /// (`false`). Padding ragged rows to the longest, and cutting an
    /// answer back to its caller's own length, are this one copy.
    ///
    /// # Errors
    /// Another rank, or a `shape` too large to count.
    pub fn resized(&self, shape: &[usize]) -> Result<Tensor, TensorError> {
        if shape.len() != self.shape.len() || shape.is_empty() {
            return Err(TensorError::ResizeRank { from: self.shape.clone(), to: shape.to_vec() });
        }
        if shape == self.shape {
            return Ok(self.clone());
        }
        let len = element_count(shape).ok_or_else(|| TensorError::TooLarge(shape.to_vec()))?;
        let data = map_same_variant!(&self.data, v => resize_block(v, &self.shape, shape, len));
        Tensor::new(shape.to_vec(), data)
    }
}

/// Copies the block both shapes share, last axis contiguous, into a
/// zeroed buffer of `len` elements laid out as `to`.
fn resize_block<T: Copy + Default>(src: &[T], from: &[usize], to: &[usize], len: usize) -> Vec<T> {
    let mut out = vec![T::default(); len];
    let common: Vec<usize> = from.iter().zip(to).map(|(a, b)| (*a).min(*b)).collect();
    let last = common.len() - 1;
    let run = common[last];
    if run == 0 || common.contains(&0) {
        return out;
    }
    let strides = |shape: &[usize]| {
        let mut strides = vec![1; shape.len()];
        for axis in (0..shape.len() - 1).rev() {
            strides[axis] = strides[axis + 1] * shape[axis + 1];
        }
        strides
    };
    let (src_strides, dst_strides) = (strides(from), strides(to));
    // Walks every index of the common block's outer axes, odometer-style.
    let mut index = vec![0usize; last];
    loop {
        let src_at: usize = index.iter().zip(&src_strides).map(|(i, s)| i * s).sum();
        let dst_at: usize = index.iter().zip(&dst_strides).map(|(i, s)| i * s).sum();
        out[dst_at..dst_at + run].copy_from_slice(&src[src_at..src_at + run]);
        let mut axis = last;
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < common[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// Product of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

/// Makes input tensors that fit `specs`: the batch axis (and any other
/// variable axis) set to `batch` and 1, values drawn from a seeded generator
/// in ranges any model accepts (0..1 floats; integers 0 and 1, valid ids,
/// masks and token types for any vocabulary, even a 2-row type table).
pub fn synthetic_inputs(specs: &[TensorSpec], batch: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = fastrand::Rng::with_seed(seed);
    specs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Batch => batch,
                    Dim::Dynamic(_) => 1,
                })
                .collect();
            let n = element_count(&shape).unwrap_or(0);
            let data = match spec.datatype {
                DataType::Bool => TensorData::Bool((0..n).map(|_| rng.bool()).collect()),
                DataType::U8 => TensorData::U8((0..n).map(|_| rng.u8(0..2)).collect()),
                DataType::I8 => TensorData::I8((0..n).map(|_| rng.i8(0..2)).collect()),
                DataType::I32 => TensorData::I32((0..n).map(|_| rng.i32(0..2)).collect()),
                DataType::I64 => TensorData::I64((0..n).map(|_| rng.i64(0..2)).collect()),
                DataType::F16 => {
                    TensorData::F16((0..n).map(|_| half::f16::from_f32(rng.f32())).collect())
                }
                DataType::F32 => TensorData::F32((0..n).map(|_| rng.f32()).collect()),
                DataType::F64 => TensorData::F64((0..n).map(|_| rng.f64()).collect()),
            };
            Tensor { shape, data }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), TensorData::F32(v.to_vec())).unwrap()
    }

    #[test]
    fn concat_then_split_gives_back_the_parts() {
        let a = f32s(&[1, 2], &[1., 2.]);
        let b = f32s(&[2, 2], &[3., 4., 5., 6.]);
        let joined = Tensor::concat_rows(&[&a, &b]).unwrap();
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(joined.rows(0, 1).unwrap(), a);
        assert_eq!(joined.rows(1, 2).unwrap(), b);
        assert!(joined.rows(2, 2).is_err());
    }

    #[test]
    fn resizing_pads_with_zeros_and_cuts_back_to_the_original() {
        let ids = Tensor::new(vec![2, 2], TensorData::I64(vec![1, 2, 3, 4])).unwrap();
        let padded = ids.resized(&[2, 4]).unwrap();
        assert_eq!(padded.data, TensorData::I64(vec![1, 2, 0, 0, 3, 4, 0, 0]));
        assert_eq!(padded.resized(&[2, 2]).unwrap(), ids);
        let cube = f32s(&[1, 2, 2], &[1., 2., 3., 4.]);
        let grown = cube.resized(&[1, 3, 3]).unwrap();
        assert_eq!(grown.data, TensorData::F32(vec![1., 2., 0., 3., 4., 0., 0., 0., 0.]));
        assert_eq!(grown.resized(&[1, 2, 2]).unwrap(), cube);
        assert_eq!(cube.resized(&[1, 0, 2]).unwrap().data, TensorData::F32(vec![]));
        assert!(matches!(cube.resized(&[4, 4]), Err(TensorError::ResizeRank { .. })));
        assert!(matches!(cube.resized(&[usize::MAX, 2, 2]), Err(TensorError::TooLarge(_))));
    }

    #[test]
    fn concat_refuses_mismatched_trailing_dims() {
        let a = f32s(&[1, 2], &[1., 2.]);
        let b = f32s(&[1, 3], &[1., 2., 3.]);
        let err = Tensor::concat_rows(&[&a, &b]).unwrap_err().to_string();
        assert_eq!(err, "cannot concatenate shapes [1, 2] and [1, 3] along the batch axis");
    }

    #[test]
    fn shape_must_match_element_count() {
        let err = Tensor::new(vec![2, 2], TensorData::F32(vec![1.0; 3])).unwrap_err();
        assert_eq!(err.to_string(), "shape [2, 2] needs 4 elements, the data has 3");
        assert!(Tensor::new(vec![usize::MAX, 2], TensorData::F32(vec![])).is_err());
    }

    #[test]
    fn le_bytes_round_trip_every_datatype() {
        let samples = vec![
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![0, 255]),
            TensorData::I8(vec![-128, 127]),
            TensorData::I32(vec![i32::MIN, 7]),
            TensorData::I64(vec![i64::MAX, -1]),
            TensorData::F16(vec![f16::from_f32(0.5), f16::from_f32(-2.0)]),
            TensorData::F32(vec![1.5, f32::NAN]),
            TensorData::F64(vec![-0.25, f64::INFINITY]),
        ];
        for data in samples {
            let bytes = data.to_le_bytes();
            assert_eq!(bytes.len(), data.len() * data.datatype().size_of());
            let back = TensorData::from_le_bytes(data.datatype(), &bytes).unwrap();
            // NaN != NaN, so compare the bytes.
            assert_eq!(back.to_le_bytes(), bytes);
        }
    }

    #[test]
    fn le_bytes_refuse_partial_elements_and_bad_bools() {
        let err = TensorData::from_le_bytes(DataType::F32, &[0, 0, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "3 bytes is not a whole number of FP32 elements (4 bytes each)"
        );
        let err = TensorData::from_le_bytes(DataType::Bool, &[2]).unwrap_err();
        assert_eq!(err.to_string(), "BOOL byte 2 is neither 0 nor 1");
    }

    #[test]
    fn v2_names_round_trip_and_refuse_the_rest() {
        for dt in DataType::ALL {
            assert_eq!(DataType::from_v2_name(dt.v2_name()), Ok(dt));
        }
        let err = DataType::from_v2_name("BYTES").unwrap_err().to_string();
        assert!(err.contains("BYTES") && err.contains("FP32"), "{err}");
    }
}
