//! The declarative processing spec: what the `ModelDeployment` CRD embeds
//! as `spec.serving.processing` and what `tractor serve --processing FILE`
//! reads (YAML or JSON). Checking it against a model, and reading files,
//! is the `process` module's part.
//!
//! The types are plain structs with optional fields and unit-variant string
//! enums, so that the schema schemars derives stays structural, as
//! Kubernetes requires of a CRD. Each input names exactly one step (`image`,
//! `features` or `tensor`, the default); each output may name `softmax`,
//! `affine` and at most one decision (`topK`, `argmax`, `threshold`), applied
//! in that order.

mod check;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use check::{
    DecisionSpec, InputStepSpec, Labels, ScaledFeature, ValidInput, ValidOutput, ValidProcessing,
};

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

/// The input steps, by the names the spec uses.
pub const INPUT_STEPS: [&str; 3] = ["image", "features", "tensor"];
/// The output steps, by the names the spec uses, in the order they apply.
pub const OUTPUT_STEPS: [&str; 5] = ["softmax", "affine", "topK", "argmax", "threshold"];

/// The threshold when the spec gives none: the midpoint of a probability.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

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
    fn the_schema_is_structural() {
        // Kubernetes refuses untagged unions and free-form maps; the schema
        // must have no anyOf/oneOf except for optional fields and no
        // additionalProperties.
        let schema = serde_json::to_string(&schemars::schema_for!(ProcessingSpec)).unwrap();
        assert!(!schema.contains("additionalProperties"), "{schema}");
        assert!(!schema.contains("oneOf"), "{schema}");
    }
}
