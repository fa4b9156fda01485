//! The `tensor` input step (the default): one instance's numbers, as
//! (nested) JSON arrays, passed through to the model unchanged.

use serde_json::Value;

use crate::engine::{Dim, Tensor, TensorData, TensorError, TensorSpec, element_count};

/// Deep enough for any real tensor, shallow enough that nested brackets
/// cannot exhaust the stack.
const MAX_NESTING: usize = 64;

/// Why the instances cannot make the model input: the client's mistake,
/// which the caller reports as a [`super::ProcessError::Input`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorStepError {
    /// Only when the request has several instances.
    #[error("instance {row}: {source}")]
    Instance {
        row: usize,
        #[source]
        source: Box<TensorStepError>,
    },
    #[error("is nested deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("is a ragged array (rows of different lengths)")]
    Ragged,
    #[error("has shape {shape:?}, the model expects {expected} per instance")]
    Rank { shape: Vec<usize>, expected: String },
    #[error(
        "has shape {shape:?}, the model expects {expected} per instance (axis {axis} must be {size})"
    )]
    Axis { shape: Vec<usize>, expected: String, axis: usize, size: usize },
    #[error("has shape {shape:?} but instance 0 has {first:?}")]
    Mismatch { shape: Vec<usize>, first: Vec<usize> },
    #[error("the tensor is too large")]
    TooLarge,
    #[error("the shape needs {count} elements, the data has {got}")]
    Count { count: usize, got: usize },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorStep {
    spec: TensorSpec,
}

impl TensorStep {
    pub fn new(model: &TensorSpec) -> TensorStep {
        TensorStep { spec: model.clone() }
    }

    /// Stacks one value per instance into the model input. Each value's
    /// nesting gives its shape, which must fit the model's dimensions
    /// after the batch axis (all of them without one); every instance
    /// must have the same shape.
    ///
    /// # Errors
    /// Ragged arrays, a shape the model cannot take, or an element that is
    /// not of the input's type, naming the instance.
    pub fn build(&self, values: &[&Value], batched: bool) -> Result<Tensor, TensorStepError> {
        let dims = if batched { &self.spec.shape[1..] } else { &self.spec.shape[..] };
        let mut shape: Option<Vec<usize>> = None;
        let mut flat: Vec<&Value> = Vec::new();
        for (row, value) in values.iter().enumerate() {
            let at = |error: TensorStepError| {
                if values.len() > 1 {
                    TensorStepError::Instance { row, source: Box::new(error) }
                } else {
                    error
                }
            };
            let mut this = infer_shape(value).map_err(at)?;
            // A scalar for a one-element instance, e.g. [batch, 1] or [batch].
            if this.is_empty() && dims.len() == 1 && dims[0] == Dim::Fixed(1) {
                this = vec![1];
            }
            // A model with a fixed batch of 1 takes an instance without that axis too.
            if !batched && this.len() + 1 == dims.len() && dims.first() == Some(&Dim::Fixed(1)) {
                this.insert(0, 1);
            }
            if this.len() != dims.len() {
                return Err(at(TensorStepError::Rank { shape: this, expected: describe(dims) }));
            }
            for (axis, (got, want)) in this.iter().zip(dims).enumerate() {
                if let Dim::Fixed(n) = want
                    && got != n
                {
                    return Err(at(TensorStepError::Axis {
                        shape: this,
                        expected: describe(dims),
                        axis,
                        size: *n,
                    }));
                }
            }
            match &shape {
                None => shape = Some(this),
                Some(first) if *first != this => {
                    return Err(at(TensorStepError::Mismatch {
                        shape: this,
                        first: first.clone(),
                    }));
                }
                Some(_) => {}
            }
            collect(value, &mut flat);
        }
        let instance = shape.unwrap_or_default();
        let full: Vec<usize> = if batched {
            std::iter::once(values.len()).chain(instance.iter().copied()).collect()
        } else {
            instance
        };
        let count = element_count(&full).ok_or(TensorStepError::TooLarge)?;
        if count != flat.len() {
            return Err(TensorStepError::Count { count, got: flat.len() });
        }
        let data = TensorData::from_json(self.spec.datatype, &flat)?;
        Ok(Tensor::new(full, data)?)
    }
}

fn describe(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Batch | Dim::Dynamic(_) => "-1".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The shape of nested arrays; ragged arrays are an error.
fn infer_shape(value: &Value) -> Result<Vec<usize>, TensorStepError> {
    fn walk(value: &Value, depth: usize) -> Result<Vec<usize>, TensorStepError> {
        match value {
            Value::Array(items) => {
                if depth >= MAX_NESTING {
                    return Err(TensorStepError::TooDeep);
                }
                let mut inner: Option<Vec<usize>> = None;
                for item in items {
                    let s = walk(item, depth + 1)?;
                    match &inner {
                        None => inner = Some(s),
                        Some(prev) if *prev != s => {
                            return Err(TensorStepError::Ragged);
                        }
                        Some(_) => {}
                    }
                }
                let mut shape = vec![items.len()];
                shape.extend(inner.unwrap_or_default());
                Ok(shape)
            }
            _ => Ok(Vec::new()),
        }
    }
    walk(value, 0)
}

fn collect<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        scalar => out.push(scalar),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::DataType;

    fn step(shape: Vec<Dim>) -> TensorStep {
        TensorStep::new(&TensorSpec { name: "x".into(), datatype: DataType::F32, shape })
    }

    #[test]
    fn instances_stack_along_the_batch_axis() {
        let s = step(vec![Dim::Batch, Dim::Fixed(2), Dim::Fixed(2)]);
        let (a, b) = (json!([[1, 2], [3, 4]]), json!([[5, 6], [7, 8]]));
        let t = s.build(&[&a, &b], true).unwrap();
        assert_eq!(t.shape, vec![2, 2, 2]);
        assert_eq!(t.data, TensorData::F32(vec![1., 2., 3., 4., 5., 6., 7., 8.]));
    }

    #[test]
    fn wrong_shapes_and_types_are_named() {
        let s = step(vec![Dim::Batch, Dim::Fixed(3)]);
        let cases = [
            (json!([1, 2]), "axis 0 must be 3"),
            (json!([[1, 2, 3]]), "expects [3] per instance"),
            (json!([[1], [2, 3]]), "ragged"),
            (json!([1, "2", 3]), "element 1 is a string (\"2\"), not a number"),
        ];
        for (value, expected) in cases {
            let err = s.build(&[&value], true).unwrap_err().to_string();
            assert!(err.contains(expected), "{value}: {err}");
        }
        let fixed = step(vec![Dim::Fixed(1), Dim::Fixed(2)]);
        let row = json!([3, 4]);
        assert_eq!(fixed.build(&[&row], false).unwrap().shape, vec![1, 2]);
        let (a, b) = (json!([1, 2]), json!([1, 2, 3]));
        let s = step(vec![Dim::Batch, Dim::Dynamic("n".into())]);
        let err = s.build(&[&a, &b], true).unwrap_err().to_string();
        assert_eq!(err, "instance 1: has shape [3] but instance 0 has [2]");
    }
}
