//! Validation and calibration data: `.npz` and `.npy` as NumPy writes them,
//! and CSV with a header as a fallback.
//!
//! An `.npz` holds one array per model input (by input name, or `x` when the
//! model has one input) and `y` for labels or targets. A CSV's `y` (or
//! `label`, `target`) column is the target; every other column is a feature
//! of `x`. An `.npy` is a bare `x` (calibration data needs no labels).

use std::io::Cursor;

use crate::engine::{Tensor, TensorData, TensorSpec};

/// Errors of reading data files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: array {name:?} has unsupported dtype {dtype}")]
    DType { file: String, name: String, dtype: String },
    #[error("the data has no array for model input {input:?} (arrays: {available})")]
    MissingInput { input: String, available: String },
    #[error("the data has no labels or targets (array or column `y`)")]
    MissingTargets,
    #[error("{0}")]
    Shape(String),
    #[error(transparent)]
    Tensor(#[from] crate::engine::TensorError),
}

/// Named arrays read from one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub arrays: Vec<(String, Tensor)>,
}

impl Dataset {
    /// Parses a data file; the format comes from the name, then the content
    /// (`.npz` is a zip, `.npy` starts with `\x93NUMPY`).
    ///
    /// # Errors
    /// Malformed files and element types tractor does not handle.
    pub fn parse(file_name: &str, bytes: &[u8]) -> Result<Dataset, DataError> {
        let lower = file_name.to_ascii_lowercase();
        if lower.ends_with(".npz") || bytes.starts_with(b"PK\x03\x04") {
            parse_npz(file_name, bytes)
        } else if lower.ends_with(".npy") || bytes.starts_with(b"\x93NUMPY") {
            let t = read_npy(file_name, "x", bytes)?;
            Ok(Dataset { arrays: vec![("x".into(), t)] })
        } else {
            parse_csv(file_name, bytes)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.arrays.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    fn names(&self) -> String {
        self.arrays.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The inputs for a model, in its input order: by input name, or `x`
    /// for a single-input model. Float data is cast to the input's type.
    ///
    /// # Errors
    /// A missing array, or rows that disagree between inputs.
    pub fn inputs_for(&self, specs: &[TensorSpec]) -> Result<Vec<Tensor>, DataError> {
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let found = self
                .get(&spec.name)
                .or_else(|| (specs.len() == 1).then(|| self.get("x")).flatten());
            let t = found.ok_or_else(|| DataError::MissingInput {
                input: spec.name.clone(),
                available: self.names(),
            })?;
            out.push(cast_to(t, spec.datatype)?);
        }
        let rows: Vec<usize> = out.iter().map(|t| t.shape.first().copied().unwrap_or(0)).collect();
        if rows.windows(2).any(|w| w[0] != w[1]) {
            return Err(DataError::Shape(format!("inputs have different row counts {rows:?}")));
        }
        Ok(out)
    }

    /// The labels or targets (`y`).
    ///
    /// # Errors
    /// [`DataError::MissingTargets`].
    pub fn targets(&self) -> Result<&Tensor, DataError> {
        self.get("y").ok_or(DataError::MissingTargets)
    }
}

fn cast_to(t: &Tensor, to: crate::engine::DataType) -> Result<Tensor, DataError> {
    use crate::engine::DataType;
    if t.datatype() == to {
        return Ok(t.clone());
    }
    let data = match (to, &t.data) {
        (DataType::F32, TensorData::F64(v)) => {
            TensorData::F32(v.iter().map(|x| *x as f32).collect())
        }
        (DataType::F32, _) => TensorData::F32(as_f64(t).iter().map(|x| *x as f32).collect()),
        (DataType::F64, _) => TensorData::F64(as_f64(t)),
        _ => {
            return Err(DataError::Shape(format!(
                "data of type {} cannot feed a model input of type {to}",
                t.datatype()
            )));
        }
    };
    Tensor::new(t.shape.clone(), data).map_err(DataError::Tensor)
}

/// Any numeric tensor as f64 values (booleans as 0/1).
pub fn as_f64(t: &Tensor) -> Vec<f64> {
    match &t.data {
        TensorData::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::F64(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|x| f64::from(x.to_f32())).collect(),
        TensorData::I64(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::I32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::I8(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::U8(v) => v.iter().map(|x| f64::from(*x)).collect(),
        TensorData::Bool(v) => v.iter().map(|x| f64::from(u8::from(*x))).collect(),
        #[allow(unreachable_patterns)]
        _ => Vec::new(),
    }
}

fn parse_npz(file: &str, bytes: &[u8]) -> Result<Dataset, DataError> {
    let read_err = |e: std::io::Error| DataError::Read { file: file.into(), reason: e.to_string() };
    let mut archive = npyz::npz::NpzArchive::new(Cursor::new(bytes)).map_err(read_err)?;
    let names: Vec<String> = archive.array_names().map(str::to_string).collect();
    let mut arrays = Vec::with_capacity(names.len());
    for name in names {
        let npy = archive.by_name(&name).map_err(read_err)?.ok_or_else(|| DataError::Read {
            file: file.into(),
            reason: format!("array {name:?} listed but not found"),
        })?;
        arrays.push((name.clone(), npy_to_tensor(file, &name, npy)?));
    }
    Ok(Dataset { arrays })
}

fn read_npy(file: &str, name: &str, bytes: &[u8]) -> Result<Tensor, DataError> {
    let npy = npyz::NpyFile::new(bytes)
        .map_err(|e| DataError::Read { file: file.into(), reason: e.to_string() })?;
    npy_to_tensor(file, name, npy)
}

fn npy_to_tensor<R: std::io::Read>(
    file: &str,
    name: &str,
    npy: npyz::NpyFile<R>,
) -> Result<Tensor, DataError> {
    use npyz::{DType, TypeChar};
    let shape: Vec<usize> = npy.shape().iter().map(|d| *d as usize).collect();
    if npy.order() == npyz::Order::Fortran && shape.len() > 1 {
        return Err(DataError::Read {
            file: file.into(),
            reason: format!("array {name:?} is in Fortran order; save it C-contiguous"),
        });
    }
    let dtype = npy.dtype();
    let unsupported =
        || DataError::DType { file: file.into(), name: name.into(), dtype: dtype.descr() };
    let DType::Plain(ts) = &dtype else { return Err(unsupported()) };
    let read_err = |e: std::io::Error| DataError::Read { file: file.into(), reason: e.to_string() };
    let data = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => TensorData::F32(npy.into_vec().map_err(read_err)?),
        (TypeChar::Float, 8) => TensorData::F64(npy.into_vec().map_err(read_err)?),
        (TypeChar::Int, 8) => TensorData::I64(npy.into_vec().map_err(read_err)?),
        (TypeChar::Int, 4) => TensorData::I32(npy.into_vec().map_err(read_err)?),
        (TypeChar::Int, 1) => TensorData::I8(npy.into_vec().map_err(read_err)?),
        (TypeChar::Uint, 1) => TensorData::U8(npy.into_vec().map_err(read_err)?),
        (TypeChar::Bool, 1) => TensorData::Bool(npy.into_vec().map_err(read_err)?),
        _ => return Err(unsupported()),
    };
    Tensor::new(shape, data).map_err(DataError::Tensor)
}

fn parse_csv(file: &str, bytes: &[u8]) -> Result<Dataset, DataError> {
    let err = |reason: String| DataError::Read { file: file.into(), reason };
    // Ragged rows are reported with their row number rather than refused
    // by the reader with its own words; blank lines are skipped as before.
    let mut reader =
        csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| err(format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.is_empty() {
        return Err(err("empty CSV".into()));
    }
    let target = header.iter().position(|h| matches!(h.as_str(), "y" | "label" | "target"));
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.map_err(|e| err(format!("cannot read the CSV: {e}")))?;
        // The header is line 1; blank lines, which the reader skips, are
        // not counted (as before the csv crate).
        let line = record.position().map_or(rows + 2, |p| p.line() as usize);
        if record.len() != header.len() {
            return Err(err(format!(
                "line {line} has {} cells, the header {}",
                record.len(),
                header.len()
            )));
        }
        for (c, cell) in record.iter().enumerate() {
            let v: f64 = cell.parse().map_err(|_| {
                err(format!("line {line}, column {:?}: {cell:?} is not a number", header[c]))
            })?;
            if Some(c) == target { y.push(v) } else { x.push(v as f32) }
        }
        rows += 1;
    }
    let features = header.len() - usize::from(target.is_some());
    let mut arrays = vec![(
        "x".to_string(),
        Tensor::new(vec![rows, features], TensorData::F32(x)).map_err(DataError::Tensor)?,
    )];
    if target.is_some() {
        // Whole numbers are class labels; anything else is a regression target.
        let data = if y.iter().all(|v| v.fract() == 0.0) {
            TensorData::I64(y.iter().map(|v| *v as i64).collect())
        } else {
            TensorData::F32(y.iter().map(|v| *v as f32).collect())
        };
        arrays.push(("y".into(), Tensor::new(vec![rows], data).map_err(DataError::Tensor)?));
    }
    Ok(Dataset { arrays })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_splits_features_and_labels() {
        let d = Dataset::parse("d.csv", b"a,b,y\n1,2,0\n3,4.5,1\n").unwrap();
        let x = d.get("x").unwrap();
        assert_eq!(x.shape, vec![2, 2]);
        assert_eq!(x.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(d.targets().unwrap().data, TensorData::I64(vec![0, 1]));
        let bad = Dataset::parse("d.csv", b"a,y\n1\n").unwrap_err();
        assert!(bad.to_string().contains("line 2"), "{bad}");
    }

    #[test]
    fn csv_quoted_fields_are_read_as_one_cell() {
        let d = Dataset::parse("d.csv", b"\"a, first\",\"b\",label\n\"1.5\", 2 ,\"3\"\n").unwrap();
        assert_eq!(d.get("x").unwrap().shape, vec![1, 2]);
        assert_eq!(d.get("x").unwrap().data, TensorData::F32(vec![1.5, 2.0]));
        assert_eq!(d.targets().unwrap().data, TensorData::I64(vec![3]));
    }

    #[test]
    fn csv_ragged_rows_and_bad_cells_name_the_line_and_column() {
        let ragged = Dataset::parse("d.csv", b"a,b,y\n1,2,0\n3,4,5,6\n").unwrap_err();
        assert!(ragged.to_string().contains("line 3 has 4 cells, the header 3"), "{ragged}");
        let bad = Dataset::parse("d.csv", b"a,b,y\n1,2,0\n3,\"x,y\",1\n").unwrap_err();
        assert!(bad.to_string().contains("line 3, column \"b\": \"x,y\" is not a number"), "{bad}");
        assert!(Dataset::parse("d.csv", b"").is_err());
    }

    #[test]
    fn npz_written_by_numpy_is_read() {
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/digits-test.npz"))
                .unwrap();
        let d = Dataset::parse("digits-test.npz", &bytes).unwrap();
        assert_eq!(d.get("x").unwrap().shape, vec![540, 64]);
        assert_eq!(d.targets().unwrap().datatype(), crate::engine::DataType::I64);
        let spec = TensorSpec {
            name: "input".into(),
            datatype: crate::engine::DataType::F32,
            shape: vec![crate::engine::Dim::Batch, crate::engine::Dim::Fixed(64)],
        };
        let err = d
            .inputs_for(&[spec.clone(), TensorSpec { name: "other".into(), ..spec }])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no array for model input \"input\""), "{err}");
    }

    #[test]
    fn npy_is_a_bare_x() {
        // A 2x2 little-endian f32 array as numpy.save writes it.
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }".to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            bytes.extend(v.to_le_bytes());
        }
        let d = Dataset::parse("c.npy", &bytes).unwrap();
        assert_eq!(d.get("x").unwrap().data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
        assert!(d.targets().is_err());
    }
}
