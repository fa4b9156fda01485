//! The `features` input step: a JSON object of named numbers to the input
//! vector, in the declared order, each scaled as declared.

use serde_json::Value;

use super::{ProcessError, json_kind, quoted, spec_error};
use crate::crd::processing::ScaledFeature;
use crate::engine::{DataType, Dim, TensorSpec};

/// A features step checked against its model input.
#[derive(Debug, Clone, PartialEq)]
pub struct FeaturesStep {
    fields: Vec<ScaledFeature>,
    instance_shape: Vec<usize>,
}

impl FeaturesStep {
    /// Checks the fields against the model input: `[batch, n]` (or `[1, n]`,
    /// or `[n]`) with `n` the number of fields. The fields themselves were
    /// checked without the model ([`FeaturesInput::check`]).
    ///
    /// [`FeaturesInput::check`]: crate::crd::processing::FeaturesInput::check
    ///
    /// # Errors
    /// [`ProcessError::Spec`] naming the field: a model input that is not
    /// floating point or not `[batch, n]`, or a count that differs from `n`.
    pub fn new(
        fields: &[ScaledFeature],
        model: &TensorSpec,
        field: &str,
    ) -> Result<FeaturesStep, ProcessError> {
        if !matches!(model.datatype, DataType::F32 | DataType::F64 | DataType::F16) {
            return Err(spec_error(
                field,
                format!(
                    "model input {:?} is {}; features become floating-point inputs",
                    model.name, model.datatype
                ),
            ));
        }
        let (width, instance_shape) = match model.shape.as_slice() {
            [Dim::Batch, Dim::Fixed(n)] => (*n, vec![*n]),
            [Dim::Fixed(1), Dim::Fixed(n)] => (*n, vec![1, *n]),
            [Dim::Fixed(n)] => (*n, vec![*n]),
            other => {
                return Err(spec_error(
                    field,
                    format!(
                        "model input {:?} has shape {other:?}; features need [batch, n] with a fixed n",
                        model.name
                    ),
                ));
            }
        };
        if fields.len() != width {
            return Err(spec_error(
                format!("{field}.fields"),
                format!(
                    "{} fields, but model input {:?} takes {width} values",
                    fields.len(),
                    model.name
                ),
            ));
        }
        Ok(FeaturesStep { fields: fields.to_vec(), instance_shape })
    }

    /// Values per instance.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn instance_shape(&self) -> Vec<usize> {
        self.instance_shape.clone()
    }

    /// The scaled input vector of one JSON object.
    ///
    /// # Errors
    /// Not an object, an unknown field, a missing required field, or a
    /// value that is not a number, each naming the field.
    pub fn row(&self, value: &Value) -> Result<Vec<f32>, String> {
        let Value::Object(object) = value else {
            return Err(format!(
                "features come as an object of named numbers, got {}",
                json_kind(value)
            ));
        };
        if let Some(unknown) = object.keys().find(|k| !self.fields.iter().any(|f| &f.name == *k)) {
            return Err(format!(
                "unknown field {unknown:?}; the fields are {}",
                quoted(self.fields.iter().map(|f| f.name.as_str()))
            ));
        }
        self.fields
            .iter()
            .map(|f| {
                let x = match object.get(&f.name) {
                    None | Some(Value::Null) => {
                        f.default.ok_or_else(|| format!("missing required field {:?}", f.name))?
                    }
                    Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                        format!("field {:?}: {n} is not representable as a number", f.name)
                    })?,
                    Some(other) => {
                        return Err(format!(
                            "field {:?} must be a number, got {}",
                            f.name,
                            json_kind(other)
                        ));
                    }
                };
                Ok(((x - f.offset) / f.divisor) as f32)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::processing::{Feature, FeaturesInput};

    /// The whole path a spec takes: checked alone, then against the model.
    fn step(spec: &FeaturesInput, n: usize, field: &str) -> Result<FeaturesStep, ProcessError> {
        FeaturesStep::new(&spec.check(field)?, &model(n), field)
    }

    fn model(n: usize) -> TensorSpec {
        TensorSpec::f32_rows("features", n)
    }

    fn feature(name: &str) -> Feature {
        Feature { name: name.into(), ..Feature::default() }
    }

    fn three() -> FeaturesInput {
        FeaturesInput {
            fields: vec![
                Feature { mean: Some(50.0), std: Some(10.0), ..feature("age") },
                Feature { min: Some(1.0), max: Some(3.0), default: Some(2.0), ..feature("grade") },
                feature("x"),
            ],
        }
    }

    #[test]
    fn fields_are_ordered_scaled_and_defaulted() {
        let step = step(&three(), 3, "inputs[0].features").unwrap();
        // Order follows the spec, not the object: age (52-50)/10 = 0.2,
        // grade (3-1)/2 = 1, x as is.
        let row = step.row(&json!({"x": -4, "grade": 3, "age": 52})).unwrap();
        assert_eq!(row, vec![0.2, 1.0, -4.0]);
        // grade missing: default 2 -> (2-1)/2 = 0.5; null counts as missing.
        let row = step.row(&json!({"age": 40, "x": 0.5, "grade": null})).unwrap();
        assert_eq!(row, vec![-1.0, 0.5, 0.5]);
    }

    #[test]
    fn client_mistakes_name_the_field() {
        let step = step(&three(), 3, "f").unwrap();
        let cases = [
            (json!({"grade": 1, "x": 0}), "missing required field \"age\""),
            (json!({"age": "52", "x": 0}), "field \"age\" must be a number, got a string (\"52\")"),
            (json!({"age": 1, "x": [1]}), "field \"x\" must be a number, got an array"),
            (json!({"age": 1, "x": 1, "agee": 2}), "unknown field \"agee\""),
            (json!([1, 2, 3]), "features come as an object"),
        ];
        for (value, expected) in cases {
            let err = step.row(&value).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn specs_that_cannot_fit_name_the_field() {
        let half = FeaturesInput {
            fields: vec![Feature { mean: Some(1.0), ..feature("a") }, feature("b")],
        };
        let zero = FeaturesInput {
            fields: vec![Feature { mean: Some(1.0), std: Some(0.0), ..feature("a") }, feature("b")],
        };
        let twice = FeaturesInput { fields: vec![feature("a"), feature("a")] };
        let cases = [
            (three(), 4, "f.fields"),
            (half, 2, "f.fields[0]"),
            (zero, 2, "f.fields[0].std"),
            (twice, 2, "f.fields[1].name"),
        ];
        for (spec, n, field) in cases {
            match step(&spec, n, "f") {
                Err(ProcessError::Spec { field: f, reason }) => assert_eq!(f, field, "{reason}"),
                other => panic!("{spec:?}: {other:?}"),
            }
        }
    }
}
