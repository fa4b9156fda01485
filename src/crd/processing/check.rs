//! [`ProcessingSpec::check`]: the checks of a processing spec that need no
//! model, and the typed value they yield.

use serde::Serialize;

use super::{
    DEFAULT_THRESHOLD, FeaturesInput, INPUT_STEPS, ImageInput, InputProcessing, OutputProcessing,
    ProcessingError, ProcessingSpec,
};

/// A processing spec checked on its own, before any model is known: each
/// input names one step, no input or output is listed twice, numbers are
/// finite, scaling pairs are whole, an output makes at most one decision.
/// What is left to check needs the model or the file system: the
/// `process` module does it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidProcessing {
    /// The document as given: a `serve` is handed it and reads it through
    /// this same check.
    spec: ProcessingSpec,
    /// In the spec's order.
    pub inputs: Vec<ValidInput>,
    /// In the spec's order.
    pub outputs: Vec<ValidOutput>,
}

impl ValidProcessing {
    /// The document this was checked from.
    pub fn spec(&self) -> &ProcessingSpec {
        &self.spec
    }
}

/// Written as the document it was read from, so what the controller and
/// `tractor up` hand to a `serve` is what the user wrote.
impl Serialize for ValidProcessing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.spec.serialize(serializer)
    }
}

/// One input and the one step that builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidInput {
    pub name: String,
    pub step: InputStepSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputStepSpec {
    /// Finite `scale`, `mean` and `std`, no zero `std`, `maxDimension` at
    /// least 1; sizes and channel counts depend on the model.
    Image(ImageInput),
    Features(Vec<ScaledFeature>),
    Tensor,
}

/// One feature as applied: `(x - offset) / divisor`, `divisor` not zero.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledFeature {
    pub name: String,
    pub offset: f64,
    pub divisor: f64,
    /// Used when the field is missing; without one the field is required.
    pub default: Option<f64>,
}

/// One output's steps, with the defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOutput {
    pub name: String,
    pub softmax: bool,
    /// `(scale, offset)`, both finite.
    pub affine: Option<(f64, f64)>,
    pub decision: DecisionSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DecisionSpec {
    /// No decision: the processed row as a value.
    Value,
    /// `k` at least 1; whether it fits the output width depends on the model.
    TopK {
        k: usize,
        labels: Option<Labels>,
    },
    Argmax {
        labels: Option<Labels>,
    },
    Threshold {
        threshold: f64,
        labels: [String; 2],
    },
}

/// Where class names come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    Inline(Vec<String>),
    /// A file with one name per line, relative to the spec file.
    File(String),
}

fn check_error(field: impl Into<String>, reason: impl Into<String>) -> ProcessingError {
    ProcessingError::Check { field: field.into(), reason: reason.into() }
}

fn finite(field: String, value: Option<f64>) -> Result<Option<f64>, ProcessingError> {
    match value {
        Some(x) if !x.is_finite() => Err(check_error(field, format!("{x} is not a finite number"))),
        other => Ok(other),
    }
}

/// Checks each entry of the list of `what`s (`inputs`), by its path
/// (`inputs[0]`), after refusing a name the list already had.
fn check_each<T, V>(
    what: &str,
    items: &[T],
    name: impl Fn(&T) -> &String,
    check: impl Fn(&T, &str) -> Result<V, ProcessingError>,
) -> Result<Vec<V>, ProcessingError> {
    let mut checked = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("{what}s[{i}]");
        if items[..i].iter().any(|other| name(other) == name(item)) {
            return Err(check_error(
                format!("{field}.name"),
                format!("{what} {:?} is listed twice", name(item)),
            ));
        }
        checked.push(check(item, &field)?);
    }
    Ok(checked)
}

impl ProcessingSpec {
    /// Checks what needs no model: see [`ValidProcessing`].
    ///
    /// # Errors
    /// [`ProcessingError::Check`] naming the first field that cannot be
    /// used, by its path in the spec (`inputs[0].image.std`).
    pub fn check(&self) -> Result<ValidProcessing, ProcessingError> {
        let inputs = check_each(
            "input",
            &self.inputs,
            |input| &input.name,
            |input, field| Ok(ValidInput { name: input.name.clone(), step: input.check(field)? }),
        )?;
        let outputs =
            check_each("output", &self.outputs, |output| &output.name, OutputProcessing::check)?;
        Ok(ValidProcessing { spec: self.clone(), inputs, outputs })
    }
}

impl InputProcessing {
    /// The one step this input names; `field` is its path (`inputs[0]`).
    ///
    /// # Errors
    /// As [`ProcessingSpec::check`].
    pub fn check(&self, field: &str) -> Result<InputStepSpec, ProcessingError> {
        let named = [self.image.is_some(), self.features.is_some(), self.tensor.is_some()];
        if named.iter().filter(|n| **n).count() > 1 {
            let steps = INPUT_STEPS.map(|n| format!("{n:?}")).join(", ");
            return Err(check_error(field, format!("name one step of {steps}, not several")));
        }
        Ok(if let Some(image) = &self.image {
            image.check(&format!("{field}.image"))?;
            InputStepSpec::Image(image.clone())
        } else if let Some(features) = &self.features {
            InputStepSpec::Features(features.check(&format!("{field}.features"))?)
        } else {
            InputStepSpec::Tensor
        })
    }
}

impl ImageInput {
    /// `field` is the image step's path (`inputs[0].image`).
    ///
    /// # Errors
    /// As [`ProcessingSpec::check`].
    pub fn check(&self, field: &str) -> Result<(), ProcessingError> {
        finite(format!("{field}.scale"), self.scale)?;
        for (sub, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.iter().flatten().any(|v| !v.is_finite()) {
                return Err(check_error(
                    format!("{field}.{sub}"),
                    "holds a value that is not a finite number",
                ));
            }
        }
        // Compared as the f32 the pixels are divided by: a tiny f64 that
        // rounds to zero divides by zero all the same.
        if self.std.iter().flatten().any(|v| *v as f32 == 0.0) {
            return Err(check_error(format!("{field}.std"), "holds a zero; it divides"));
        }
        if self.max_dimension == Some(0) {
            return Err(check_error(format!("{field}.maxDimension"), "must be at least 1"));
        }
        Ok(())
    }
}

impl FeaturesInput {
    /// The fields with their scaling; `field` is the step's path
    /// (`inputs[0].features`).
    ///
    /// # Errors
    /// As [`ProcessingSpec::check`]: a repeated name, half a scaling pair,
    /// both scalings, a zero `std` or `max == min`.
    pub fn check(&self, field: &str) -> Result<Vec<ScaledFeature>, ProcessingError> {
        let mut scaled = Vec::with_capacity(self.fields.len());
        for (i, f) in self.fields.iter().enumerate() {
            let here = format!("{field}.fields[{i}]");
            if self.fields[..i].iter().any(|g| g.name == f.name) {
                return Err(check_error(
                    format!("{here}.name"),
                    format!("{:?} is listed twice", f.name),
                ));
            }
            let finite = |name: &str, v: Option<f64>| finite(format!("{here}.{name}"), v);
            let (mean, std) = (finite("mean", f.mean)?, finite("std", f.std)?);
            let (min, max) = (finite("min", f.min)?, finite("max", f.max)?);
            let default = finite("default", f.default)?;
            let (offset, divisor) = match (mean, std, min, max) {
                (None, None, None, None) => (0.0, 1.0),
                (Some(_), Some(0.0), None, None) => {
                    return Err(check_error(format!("{here}.std"), "is zero; it divides"));
                }
                (Some(m), Some(s), None, None) => (m, s),
                (None, None, Some(lo), Some(hi)) if hi == lo => {
                    return Err(check_error(format!("{here}.max"), "equals min; it divides"));
                }
                (None, None, Some(lo), Some(hi)) => (lo, hi - lo),
                (Some(_) | None, Some(_) | None, None, None) => {
                    return Err(check_error(here, "give both mean and std, or neither"));
                }
                (None, None, _, _) => {
                    return Err(check_error(here, "give both min and max, or neither"));
                }
                _ => {
                    return Err(check_error(here, "give mean/std or min/max, not both"));
                }
            };
            scaled.push(ScaledFeature { name: f.name.clone(), offset, divisor, default });
        }
        Ok(scaled)
    }
}

impl OutputProcessing {
    /// `field` is the output's path (`outputs[0]`).
    ///
    /// # Errors
    /// As [`ProcessingSpec::check`]: two decisions, `k` of 0, both
    /// `labels` and `labelsFile`, a threshold not finite or with other
    /// than two labels, an affine step not finite.
    pub fn check(&self, field: &str) -> Result<ValidOutput, ProcessingError> {
        let decisions = [self.top_k.is_some(), self.argmax.is_some(), self.threshold.is_some()];
        if decisions.iter().filter(|d| **d).count() > 1 {
            return Err(check_error(field, "name at most one of topK, argmax and threshold"));
        }
        let labels =
            |sub: &str, list: &Option<Vec<String>>, file: &Option<String>| match (list, file) {
                (Some(_), Some(_)) => Err(check_error(
                    format!("{field}.{sub}"),
                    "give labels or labelsFile, not both",
                )),
                (Some(list), None) => Ok(Some(Labels::Inline(list.clone()))),
                (None, Some(path)) => Ok(Some(Labels::File(path.clone()))),
                (None, None) => Ok(None),
            };
        let decision = if let Some(top) = &self.top_k {
            let k = top.k.unwrap_or(1) as usize;
            if k == 0 {
                return Err(check_error(format!("{field}.topK.k"), "must be at least 1"));
            }
            DecisionSpec::TopK { k, labels: labels("topK", &top.labels, &top.labels_file)? }
        } else if let Some(arg) = &self.argmax {
            DecisionSpec::Argmax { labels: labels("argmax", &arg.labels, &arg.labels_file)? }
        } else if let Some(t) = &self.threshold {
            let threshold = t.threshold.unwrap_or(DEFAULT_THRESHOLD);
            if !threshold.is_finite() {
                return Err(check_error(
                    format!("{field}.threshold.threshold"),
                    "is not a finite number",
                ));
            }
            let labels = match t.labels.as_deref() {
                None => ["0".to_string(), "1".to_string()],
                Some([neg, pos]) => [neg.clone(), pos.clone()],
                Some(other) => {
                    return Err(check_error(
                        format!("{field}.threshold.labels"),
                        format!("{} labels; give two (negative, positive)", other.len()),
                    ));
                }
            };
            DecisionSpec::Threshold { threshold, labels }
        } else {
            DecisionSpec::Value
        };
        let affine = match &self.affine {
            None => None,
            Some(a) => {
                let (scale, offset) = (a.scale.unwrap_or(1.0), a.offset.unwrap_or(0.0));
                if !scale.is_finite() || !offset.is_finite() {
                    return Err(check_error(
                        format!("{field}.affine"),
                        "scale and offset must be finite numbers",
                    ));
                }
                Some((scale, offset))
            }
        };
        Ok(ValidOutput {
            name: self.name.clone(),
            softmax: self.softmax.unwrap_or(false),
            affine,
            decision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Affine, Threshold};
    use super::*;

    #[test]
    fn checks_that_need_no_model_name_the_field() {
        let cases = [
            ("inputs: [{name: x}, {name: x}]", "inputs[1].name"),
            ("inputs: [{name: x, image: {}, features: {fields: []}}]", "inputs[0]"),
            ("inputs: [{name: x, image: {std: [1, 0]}}]", "inputs[0].image.std"),
            ("inputs: [{name: x, image: {maxDimension: 0}}]", "inputs[0].image.maxDimension"),
            (
                "inputs: [{name: x, features: {fields: [{name: a}, {name: a}]}}]",
                "inputs[0].features.fields[1].name",
            ),
            (
                "inputs: [{name: x, features: {fields: [{name: a, mean: 1}]}}]",
                "inputs[0].features.fields[0]",
            ),
            (
                "inputs: [{name: x, features: {fields: [{name: a, min: 1, max: 1}]}}]",
                "inputs[0].features.fields[0].max",
            ),
            (
                "inputs: [{name: x, features: {fields: [{name: a, mean: 0, std: 1, min: 0, max: 1}]}}]",
                "inputs[0].features.fields[0]",
            ),
            ("outputs: [{name: y}, {name: y}]", "outputs[1].name"),
            ("outputs: [{name: y, argmax: {}, topK: {}}]", "outputs[0]"),
            ("outputs: [{name: y, topK: {k: 0}}]", "outputs[0].topK.k"),
            ("outputs: [{name: y, argmax: {labels: [a], labelsFile: l}}]", "outputs[0].argmax"),
            ("outputs: [{name: y, threshold: {labels: [a, b, c]}}]", "outputs[0].threshold.labels"),
        ];
        let mut cases: Vec<(ProcessingSpec, &str)> = cases
            .into_iter()
            .map(|(text, field)| (ProcessingSpec::parse(text).unwrap(), field))
            .collect();
        // Parsers refuse non-finite numbers; a spec built in code can hold them.
        let image = |image: ImageInput| ProcessingSpec {
            inputs: vec![InputProcessing {
                name: "x".into(),
                image: Some(image),
                ..Default::default()
            }],
            outputs: vec![],
        };
        let output = |output: OutputProcessing| ProcessingSpec {
            inputs: vec![],
            outputs: vec![OutputProcessing { name: "y".into(), ..output }],
        };
        cases.extend([
            (
                image(ImageInput { scale: Some(f64::NAN), ..Default::default() }),
                "inputs[0].image.scale",
            ),
            (
                image(ImageInput { mean: Some(vec![f64::INFINITY]), ..Default::default() }),
                "inputs[0].image.mean",
            ),
            (
                output(OutputProcessing {
                    threshold: Some(Threshold { threshold: Some(f64::NAN), labels: None }),
                    ..Default::default()
                }),
                "outputs[0].threshold.threshold",
            ),
            (
                output(OutputProcessing {
                    affine: Some(Affine { scale: Some(f64::INFINITY), offset: None }),
                    ..Default::default()
                }),
                "outputs[0].affine",
            ),
        ]);
        for (spec, field) in cases {
            let text = format!("{spec:?}");
            match spec.check() {
                Err(ProcessingError::Check { field: f, reason }) => {
                    assert_eq!(f, field, "{text}: {reason}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_checked_spec_has_its_defaults_and_reads_as_written() {
        let text = "inputs:\n  - name: x\n    features: {fields: [{name: a, min: 2, max: 6}]}\n  - name: t\noutputs:\n  - name: y\n    threshold: {}\n    affine: {scale: 2}\n";
        let spec = ProcessingSpec::parse(text).unwrap();
        let valid = spec.check().unwrap();
        let scaled = ScaledFeature { name: "a".into(), offset: 2.0, divisor: 4.0, default: None };
        assert_eq!(valid.inputs[0].step, InputStepSpec::Features(vec![scaled]));
        assert_eq!(valid.inputs[1].step, InputStepSpec::Tensor);
        let out = &valid.outputs[0];
        assert_eq!((out.softmax, out.affine), (false, Some((2.0, 0.0))));
        assert_eq!(
            out.decision,
            DecisionSpec::Threshold {
                threshold: DEFAULT_THRESHOLD,
                labels: ["0".to_string(), "1".to_string()]
            }
        );
        // What a serve is handed is the document, not the defaults.
        assert_eq!(serde_json::to_value(&valid).unwrap(), serde_json::to_value(&spec).unwrap());
    }
}
