//! The declarative processing spec: what the `ModelDeployment` CRD embeds
//! as `spec.serving.processing` and what `tractor serve --processing FILE`
//! reads (YAML or JSON). Checking it against a model, and reading files, is
//! `crate::process`'s part.
//!
//! The types are plain structs with optional fields and unit-variant string
//! enums, so that the schema schemars derives stays structural, as
//! Kubernetes requires of a CRD. Each input names exactly one step (`image`,
//! `features` or `tensor`, the default); each output may name `softmax`,
//! `affine` and at most one decision (`topK`, `argmax`, `threshold`), applied
//! in that order.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Errors of reading a processing spec, named after the step that refused it.
#[derive(Debug, thiserror::Error)]
pub enum ProcessingError {
    /// `file` is where the text came from, when it came from a file.
    #[error("invalid processing spec: {}{source}", file_prefix(.file))]
    ParseJson {
        file: Option<String>,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid processing spec: {}{source}", file_prefix(.file))]
    ParseYaml {
        file: Option<String>,
        /// Boxed: the YAML error is large, and every `Result` of the
        /// processing code would carry its size.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// `key` is the path of a key no type reads (`outputs[0].top_k`).
    #[error("invalid processing spec: {}unknown field {key}", file_prefix(.file))]
    UnknownField { file: Option<String>, key: String },
    /// A value the spec cannot use whatever the model; `field` is its
    /// path in the spec (`inputs[0].image.std`).
    #[error("processing spec {field}: {reason}")]
    Check { field: String, reason: String },
}

impl ProcessingError {
    /// The same error, saying which file the text was read from.
    pub fn in_file(self, path: impl Into<String>) -> ProcessingError {
        let path = Some(path.into());
        match self {
            ProcessingError::ParseJson { source, .. } => {
                ProcessingError::ParseJson { file: path, source }
            }
            ProcessingError::ParseYaml { source, .. } => {
                ProcessingError::ParseYaml { file: path, source }
            }
            ProcessingError::UnknownField { key, .. } => {
                ProcessingError::UnknownField { file: path, key }
            }
            // A check is about a field, which the path already names.
            check @ ProcessingError::Check { .. } => check,
        }
    }
}

fn file_prefix(file: &Option<String>) -> String {
    file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

/// Input and output processing around one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingSpec {
    /// Processing per model input, by input name. Inputs not listed take
    /// tensors as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputProcessing>,
    /// Processing per model output, by output name. With none listed,
    /// answers carry the raw output rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputProcessing>,
}

/// How one model input is built from what a client sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputProcessing {
    /// The model input this builds.
    pub name: String,
    /// Decode a PNG or JPEG image into the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInput>,
    /// Build the input vector from named JSON fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesInput>,
    /// Take the tensor as sent (the default when no step is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<TensorInput>,
}

/// Image decoding: PNG or JPEG, base64 in JSON or raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageInput {
    /// Colour conversion; default from the model's channel count (1 or 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorMode>,
    /// Axis order of the model input; default `nchw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Target width; default the model's (required when the model's is variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Target height; default the model's (required when the model's is variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Resampling filter when the image is not the target size; default `bilinear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<ResizeFilter>,
    /// `center` keeps the aspect ratio: scale so the image covers the
    /// target, then cut the centre; `none` (default) stretches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Crop>,
    /// Factor applied to the 0..255 pixel values before normalization
    /// (e.g. 1/255); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Subtracted per channel after scaling (one value, or one per channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// Divisor per channel after the mean (one value, or one per channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
    /// Largest width or height accepted, read from the image header before
    /// decoding; default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dimension: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ColorMode {
    Grayscale,
    Rgb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResizeFilter {
    Nearest,
    Bilinear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Crop {
    None,
    Center,
}

/// Named fields of a JSON object, in the order the model expects them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeaturesInput {
    pub fields: Vec<Feature>,
}

/// One feature: its name, scaling and default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    pub name: String,
    /// Standardization: `(x - mean) / std`; give both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Min-max scaling: `(x - min) / (max - min)`; give both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Value used when the field is missing (before scaling); without one
    /// the field is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<f64>,
}

/// Pass-through: the input takes V2-style data unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TensorInput {}

/// How one model output becomes an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputProcessing {
    /// The model output this reads.
    pub name: String,
    /// Softmax over the row, for models that give logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softmax: Option<bool>,
    /// `value * scale + offset`, after softmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affine: Option<Affine>,
    /// The `k` best classes with their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<TopK>,
    /// The best class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argmax: Option<Argmax>,
    /// A binary decision on one score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
}

/// Scale and offset, e.g. to undo a standardized regression target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Affine {
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopK {
    /// How many classes to return; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,
    /// Class names, one per output column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// A file with one class name per line (relative to the spec file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Argmax {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_file: Option<String>,
}

/// For binary classifiers: one score (or the second of two columns)
/// against a threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    /// Default 0.5; scores at or above it are positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Names of the negative and the positive class; default "0" and "1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

impl ProcessingSpec {
    /// Parses a spec from YAML or JSON text (JSON is YAML, but the JSON
    /// parser gives better messages, so `{` picks it).
    ///
    /// # Errors
    /// Malformed text or unknown fields, with the parser's position.
    pub fn parse(text: &str) -> Result<ProcessingSpec, ProcessingError> {
        let json = text.trim_start().starts_with('{');
        // Typed first: YAML scalars take the type the field asks for (an
        // output named `y` stays a string, where an untyped YAML 1.1 read
        // makes it `true`).
        let spec: ProcessingSpec = parse_as(text, json)?;
        // The types cannot deny unknown fields (`additionalProperties: false`
        // does not belong in a CRD schema), so a file's typo is found by a
        // round trip of the keys: one that does not come back was not understood.
        let raw: serde_json::Value = parse_as(text, json)?;
        let understood = serde_json::to_value(&spec)
            .map_err(|source| ProcessingError::ParseJson { file: None, source })?;
        if let Some(key) = unknown_key(&raw, &understood, String::new()) {
            return Err(ProcessingError::UnknownField { file: None, key });
        }
        Ok(spec)
    }
}

fn parse_as<T: serde::de::DeserializeOwned>(text: &str, json: bool) -> Result<T, ProcessingError> {
    if json {
        serde_json::from_str(text)
            .map_err(|source| ProcessingError::ParseJson { file: None, source })
    } else {
        serde_saphyr::from_str(text)
            .map_err(|source| ProcessingError::ParseYaml { file: None, source: Box::new(source) })
    }
}

/// The path of the first key of `raw` (not null) missing from `understood`.
fn unknown_key(
    raw: &serde_json::Value,
    understood: &serde_json::Value,
    path: String,
) -> Option<String> {
    use serde_json::Value;
    match (raw, understood) {
        (Value::Object(raw), Value::Object(known)) => raw.iter().find_map(|(k, v)| {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            match known.get(k) {
                None if v.is_null() => None,
                None => Some(here),
                Some(u) => unknown_key(v, u, here),
            }
        }),
        (Value::Array(raw), Value::Array(known)) => raw
            .iter()
            .zip(known)
            .enumerate()
            .find_map(|(i, (r, u))| unknown_key(r, u, format!("{path}[{i}]"))),
        (Value::Object(raw), _) => raw
            .iter()
            .find(|(_, v)| !v.is_null())
            .map(|(k, _)| if path.is_empty() { k.clone() } else { format!("{path}.{k}") }),
        _ => None,
    }
}

/// The input steps, by the names the spec uses.
pub const INPUT_STEPS: [&str; 3] = ["image", "features", "tensor"];
/// The output steps, by the names the spec uses, in the order they apply.
pub const OUTPUT_STEPS: [&str; 5] = ["softmax", "affine", "topK", "argmax", "threshold"];

/// The threshold when the spec gives none: the midpoint of a probability.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// A processing spec checked on its own, before any model is known: each
/// input names one step, no input or output is listed twice, numbers are
/// finite, scaling pairs are whole, an output makes at most one decision.
/// What is left to check needs the model or the file system, and is
/// `crate::process`'s part.
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

impl ProcessingSpec {
    /// Checks what needs no model: see [`ValidProcessing`].
    ///
    /// # Errors
    /// [`ProcessingError::Check`] naming the first field that cannot be
    /// used, by its path in the spec (`inputs[0].image.std`).
    pub fn check(&self) -> Result<ValidProcessing, ProcessingError> {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (i, input) in self.inputs.iter().enumerate() {
            let field = format!("inputs[{i}]");
            if self.inputs[..i].iter().any(|other| other.name == input.name) {
                return Err(check_error(
                    format!("{field}.name"),
                    format!("input {:?} is listed twice", input.name),
                ));
            }
            inputs.push(ValidInput { name: input.name.clone(), step: input.check(&field)? });
        }
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (i, output) in self.outputs.iter().enumerate() {
            let field = format!("outputs[{i}]");
            if self.outputs[..i].iter().any(|other| other.name == output.name) {
                return Err(check_error(
                    format!("{field}.name"),
                    format!("output {:?} is listed twice", output.name),
                ));
            }
            outputs.push(output.check(&field)?);
        }
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
    use super::*;

    #[test]
    fn yaml_and_json_give_the_same_spec() {
        let yaml = r#"
inputs:
  - name: image
    image:
      color: grayscale
      layout: nchw
      resize: bilinear
      crop: center
      scale: 0.0625
      mean: [0.5]
      std: [0.25]
outputs:
  - name: logits
    softmax: true
    topK:
      k: 3
      labels: [zero, one]
"#;
        let json = r#"{"inputs":[{"name":"image","image":{"color":"grayscale","layout":"nchw",
            "resize":"bilinear","crop":"center","scale":0.0625,"mean":[0.5],"std":[0.25]}}],
            "outputs":[{"name":"logits","softmax":true,"topK":{"k":3,"labels":["zero","one"]}}]}"#;
        let a = ProcessingSpec::parse(yaml).unwrap();
        assert_eq!(a, ProcessingSpec::parse(json).unwrap());
        let image = a.inputs[0].image.as_ref().unwrap();
        assert_eq!(image.crop, Some(Crop::Center));
        assert_eq!(image.scale, Some(0.0625));
        assert_eq!(a.outputs[0].top_k.as_ref().unwrap().k, Some(3));
        // And back: what serializes parses to the same spec.
        let again = serde_json::to_string(&a).unwrap();
        assert_eq!(ProcessingSpec::parse(&again).unwrap(), a);
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_path() {
        let cases = [
            ("inputs:\n  - name: x\n    image:\n      scal: 2\n", "inputs[0].image.scal"),
            ("outputs:\n  - name: y\n    top_k: {k: 1}\n", "outputs[0].top_k"),
            ("outputs:\n  - name: y\n    softmax: true\n    extra: 1\n", "outputs[0].extra"),
            ("inputs:\n  - name: x\n    image:\n      resize: cubic\n", "cubic"),
            ("{\"inputs\": 3}", "invalid type"),
            ("inputs: [", "invalid processing spec"),
        ];
        for (text, expected) in cases {
            let err = ProcessingSpec::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

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

    #[test]
    fn the_schema_is_structural() {
        // Kubernetes refuses untagged unions and free-form maps; the schema
        // must have no anyOf/oneOf except for optional fields and no
        // additionalProperties.
        let schema = serde_json::to_string(&schemars::schema_for!(ProcessingSpec)).unwrap();
        assert!(!schema.contains("additionalProperties"), "{schema}");
        assert!(!schema.contains("oneOf"), "{schema}");
    }
}
