//! The recipe: an ordered list of passes and an optional accuracy gate.
//!
//! The same type is `spec.optimize` of the `ModelDeployment` CRD, the
//! `--recipe` file of `tractor optimize`, and what the CLI flags build. Every
//! enum is internally tagged (`type:`) or a plain string enum, and there are
//! no free-form maps, so the derived JSON schema stays structural as
//! Kubernetes requires.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Errors of reading a recipe, named after the step that refused it.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// Boxed: the YAML error is large, and every `Result` would carry its size.
    #[error("cannot parse the recipe as YAML or JSON: {0}")]
    Parse(#[source] Box<serde_saphyr::Error>),
    /// A pass whose values serde cannot check; `index` is its position.
    #[error("invalid recipe: pass {index}: {reason}")]
    CheckPass { index: usize, reason: String },
    #[error("invalid recipe: validation maxDrop {0} must be a number >= 0")]
    CheckMaxDrop(f64),
    #[error(
        "unknown quantize mode {0:?}; expected dynamic-int8, static-int8, weight-int8 or weight-int4"
    )]
    ParseQuantizeMode(String),
    #[error("unknown metric {0:?}; expected accuracy, mse or cross-entropy")]
    ParseMetric(String),
}

/// What `tractor optimize` does to a model, in order, and the gate the result
/// must pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recipe {
    /// Passes applied in this order; each keeps the model's inputs and outputs.
    #[serde(default)]
    pub passes: Vec<Pass>,
    /// Refuse the result when its metric drops more than allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}

/// One pass of a recipe, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Pass {
    /// Constant folding, BatchNormalization into Conv/Gemm/MatMul(+Add),
    /// MatMul+Add into Gemm, Identity and Dropout removal.
    Fold,
    Quantize(Quantize),
    Prune(Prune),
    /// Compose with or average against other models.
    Merge(Merge),
    Convert(Convert),
}

impl Pass {
    /// The name the report and error messages use (the `type` tag).
    pub fn name(&self) -> &'static str {
        match self {
            Pass::Fold => "fold",
            Pass::Quantize(_) => "quantize",
            Pass::Prune(_) => "prune",
            Pass::Merge(_) => "merge",
            Pass::Convert(_) => "convert",
        }
    }
}

/// Quantization of weights (and, for the int8 activation modes, activations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quantize {
    pub mode: QuantizeMode,
    /// Elements per quantization block along the reduction axis: for
    /// `weight-int4` (default 32), and for the int8 modes when set (the
    /// weight-only form, and the weight of `static-int8`'s QDQ form; the
    /// `MatMulInteger` form of `dynamic-int8` stays per output channel).
    /// Int8 is per output channel when absent. A power of two >= 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    /// Round stochastically (unbiased) instead of to nearest.
    #[serde(default)]
    pub stochastic: bool,
    /// Seed of the stochastic rounding, for reproducible results.
    #[serde(default)]
    pub seed: u64,
    /// Calibration method for `static-int8`.
    #[serde(default)]
    pub calibration_method: CalibrationMethod,
    /// Calibration data (`.npz`, `.npy` or CSV) for `static-int8`; the CLI's
    /// `--calibration` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// Measure each quantized layer against its float form in tract and keep
    /// the faster one (a per-layer fallback, reported).
    #[serde(default = "default_true")]
    pub fallback: bool,
    /// Names of nodes (or their weight initializers) left in float.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    /// The size objective's bound: every eligible layer is quantized unless
    /// the measured model with it is more than this many times slower than
    /// fp32 (at batch 1 or 32); such a layer stays fp32 and the report says
    /// why. The whole quantized model is held to the same bound. Default
    /// 1.10; at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_slowdown: Option<f64>,
}

fn default_true() -> bool {
    true
}

impl Quantize {
    /// A quantize pass with the defaults of every option.
    pub fn new(mode: QuantizeMode) -> Quantize {
        Quantize {
            mode,
            block_size: None,
            stochastic: false,
            seed: 0,
            calibration_method: CalibrationMethod::default(),
            calibration: None,
            fallback: true,
            skip: Vec::new(),
            max_slowdown: None,
        }
    }
}

/// The quantized formats `tractor optimize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QuantizeMode {
    /// int8 weights per output channel, activations quantized at run time
    /// (`DynamicQuantizeLinear` + `MatMulInteger`).
    DynamicInt8,
    /// int8 weights and activations from calibration, QDQ form.
    StaticInt8,
    /// int8 weights only (per output channel, or in blocks with
    /// `blockSize`), dequantized in the graph.
    WeightInt8,
    /// 4-bit weights in blocks (`com.microsoft` `MatMulNBits`).
    WeightInt4,
}

impl std::str::FromStr for QuantizeMode {
    type Err = RecipeError;
    fn from_str(s: &str) -> Result<QuantizeMode, RecipeError> {
        by_api_name(s).ok_or_else(|| RecipeError::ParseQuantizeMode(s.to_string()))
    }
}

/// A plain string enum read by its name in the API (serde's names and
/// aliases), so a flag accepts exactly the words a recipe does.
fn by_api_name<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    use serde::de::value::{Error, StrDeserializer};
    T::deserialize(StrDeserializer::<Error>::new(s)).ok()
}

/// How `static-int8` picks activation ranges from calibration data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", rename_all = "camelCase")]
pub enum CalibrationMethod {
    /// The observed minimum and maximum.
    #[default]
    Minmax,
    /// A symmetric range covering this percentile of absolute values.
    Percentile {
        #[serde(default = "default_percentile")]
        percentile: f64,
    },
    /// The clipping threshold minimising the KL divergence of the histogram.
    Entropy,
}

fn default_percentile() -> f64 {
    99.99
}

/// Pruning of weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prune {
    pub method: PruneMethod,
    /// Fraction removed, in [0, 1): of weights (magnitude) or hidden units
    /// and channels (structured).
    pub sparsity: f64,
    /// Magnitude only: one threshold over all layers instead of one per layer.
    #[serde(default)]
    pub global: bool,
    /// Structured only: the norm ranking neurons and channels.
    #[serde(default)]
    pub norm: Norm,
    /// Names of nodes (or their weight initializers) left untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PruneMethod {
    /// Zero the smallest weights (unstructured).
    Magnitude,
    /// Remove whole neurons and Conv output channels, shrinking the next layer.
    Structured,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Norm {
    L1,
    #[default]
    L2,
}

/// Merging with other models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Merge {
    pub mode: MergeMode,
    /// The other models (paths or URIs). `compose`: exactly one, run after
    /// the current model. `average`: any number, averaged with it.
    pub models: Vec<String>,
    /// `compose` only: which output of the first model feeds which input of
    /// the second; unmapped inputs are matched by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub map: Vec<NameMap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MergeMode {
    Compose,
    Average,
}

/// An output of the first model wired to an input of the second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameMap {
    pub output: String,
    pub input: String,
}

/// Conversion to another format; ends the recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Convert {
    pub format: ConvertFormat,
    /// Gzip the NNEF archive. Off by default: the issue measured an
    /// uncompressed tar loading MiniLM in 51 ms against 375 ms gzipped.
    #[serde(default)]
    pub compress: bool,
    /// Fix the batch dimension to this size instead of keeping it symbolic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConvertFormat {
    Nnef,
}

/// The accuracy gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Validation {
    /// Validation data (`.npz`, `.npy` or CSV): a path or object-store URI.
    pub data: String,
    pub metric: Metric,
    /// Largest allowed worsening of the metric: percentage points of
    /// accuracy, or absolute increase of MSE / cross-entropy.
    pub max_drop: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    /// Top-1 accuracy, in percent; higher is better.
    Accuracy,
    /// Mean squared error; lower is better.
    Mse,
    /// Mean cross-entropy of the softmax of the outputs; lower is better.
    #[serde(alias = "cross-entropy")]
    CrossEntropy,
}

impl Metric {
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy)
    }
}

impl std::str::FromStr for Metric {
    type Err = RecipeError;
    fn from_str(s: &str) -> Result<Metric, RecipeError> {
        by_api_name(s).ok_or_else(|| RecipeError::ParseMetric(s.to_string()))
    }
}

impl Recipe {
    /// Parses a recipe from YAML (JSON is YAML too) and checks it.
    ///
    /// # Errors
    /// Unparsable text, unknown fields, or values out of range.
    pub fn parse(text: &str) -> Result<Recipe, RecipeError> {
        let recipe: Recipe =
            serde_saphyr::from_str(text).map_err(|e| RecipeError::Parse(Box::new(e)))?;
        recipe.check()?;
        Ok(recipe)
    }

    /// Checks values serde cannot: ranges, and `convert` coming last.
    ///
    /// # Errors
    /// The first problem found, naming the pass by position.
    pub fn check(&self) -> Result<(), RecipeError> {
        let invalid = |index: usize, reason: String| RecipeError::CheckPass { index, reason };
        for (i, pass) in self.passes.iter().enumerate() {
            match pass {
                Pass::Prune(p) if !(0.0..1.0).contains(&p.sparsity) => {
                    return Err(invalid(i, format!("sparsity {} is not in [0, 1)", p.sparsity)));
                }
                Pass::Quantize(q) => {
                    if let Some(b) = q.block_size
                        && (b < 16 || !b.is_power_of_two())
                    {
                        return Err(invalid(
                            i,
                            format!("block size {b} is not a power of two >= 16"),
                        ));
                    }
                    if let Some(bound) = q.max_slowdown
                        && !(bound.is_finite() && bound >= 1.0)
                    {
                        return Err(invalid(
                            i,
                            format!("maxSlowdown {bound} is not a number >= 1"),
                        ));
                    }
                    if let CalibrationMethod::Percentile { percentile } = q.calibration_method
                        && !(50.0..=100.0).contains(&percentile)
                    {
                        return Err(invalid(
                            i,
                            format!("percentile {percentile} is not in [50, 100]"),
                        ));
                    }
                }
                Pass::Merge(m) if m.models.is_empty() => {
                    return Err(invalid(i, "merge needs at least one other model".into()));
                }
                Pass::Merge(m) if m.mode == MergeMode::Compose && m.models.len() != 1 => {
                    return Err(invalid(i, "compose takes exactly one other model".into()));
                }
                Pass::Convert(_) if i + 1 != self.passes.len() => {
                    return Err(invalid(i, "convert must be the last pass".into()));
                }
                _ => {}
            }
        }
        if let Some(v) = &self.validation
            && !(v.max_drop.is_finite() && v.max_drop >= 0.0)
        {
            return Err(RecipeError::CheckMaxDrop(v.max_drop));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_recipe_parses_into_the_shared_type() {
        let text = r#"
passes:
  - type: fold
  - type: prune
    method: structured
    sparsity: 0.5
    norm: l1
  - type: quantize
    mode: weight-int4
    blockSize: 32
    stochastic: true
    seed: 7
  - type: convert
    format: nnef
validation:
  data: s3://bucket/digits-test.npz
  metric: accuracy
  maxDrop: 1.0
"#;
        let recipe = Recipe::parse(text).unwrap();
        assert_eq!(recipe.passes.len(), 4);
        assert_eq!(recipe.passes[0], Pass::Fold);
        let Pass::Quantize(q) = &recipe.passes[2] else { panic!("{:?}", recipe.passes[2]) };
        assert_eq!(q.mode, QuantizeMode::WeightInt4);
        assert_eq!(q.block_size, Some(32));
        assert!(q.stochastic && q.fallback);
        assert_eq!(q.seed, 7);
        let Pass::Prune(p) = &recipe.passes[1] else { panic!() };
        assert_eq!((p.method, p.norm, p.sparsity), (PruneMethod::Structured, Norm::L1, 0.5));
        let v = recipe.validation.as_ref().unwrap();
        assert_eq!((v.metric, v.max_drop), (Metric::Accuracy, 1.0));
        // JSON round trip through serde_json gives the same value.
        let json = serde_json::to_string(&recipe).unwrap();
        assert_eq!(Recipe::parse(&json).unwrap(), recipe);
    }

    #[test]
    fn calibration_method_is_tagged() {
        let text = "passes:\n  - type: quantize\n    mode: static-int8\n    calibrationMethod:\n      method: percentile\n      percentile: 99.9\n";
        let recipe = Recipe::parse(text).unwrap();
        let Pass::Quantize(q) = &recipe.passes[0] else { panic!() };
        assert_eq!(q.calibration_method, CalibrationMethod::Percentile { percentile: 99.9 });
    }

    #[test]
    fn bad_recipes_are_refused_with_a_reason() {
        let unknown = Recipe::parse("passes:\n  - type: shrink\n").unwrap_err();
        assert!(unknown.to_string().contains("shrink"), "{unknown}");
        let field = Recipe::parse(
            "passes:\n  - type: prune\n    method: magnitude\n    sparsity: 0.5\n    sparsty: 1\n",
        )
        .unwrap_err();
        assert!(field.to_string().contains("sparsty"), "{field}");
        let range =
            Recipe::parse("passes:\n  - type: prune\n    method: magnitude\n    sparsity: 1.5\n")
                .unwrap_err();
        assert!(range.to_string().contains("sparsity 1.5"), "{range}");
        let order = Recipe::parse("passes:\n  - type: convert\n    format: nnef\n  - type: fold\n")
            .unwrap_err();
        assert!(order.to_string().contains("last"), "{order}");
        let block = Recipe::parse(
            "passes:\n  - type: quantize\n    mode: weight-int4\n    blockSize: 24\n",
        )
        .unwrap_err();
        assert!(block.to_string().contains("24"), "{block}");
        let slowdown = Recipe::parse(
            "passes:\n  - type: quantize\n    mode: weight-int4\n    maxSlowdown: 0.5\n",
        )
        .unwrap_err();
        assert!(slowdown.to_string().contains("maxSlowdown 0.5"), "{slowdown}");
        let Pass::Quantize(q) = &Recipe::parse(
            "passes:\n  - type: quantize\n    mode: weight-int4\n    maxSlowdown: 1.25\n",
        )
        .unwrap()
        .passes[0] else {
            panic!()
        };
        assert_eq!(q.max_slowdown, Some(1.25));
    }

    #[test]
    fn schema_has_no_untagged_or_free_form_parts() {
        let schema = serde_json::to_value(schemars::schema_for!(Recipe)).unwrap();
        let text = schema.to_string();
        // Free-form maps show up as additionalProperties with a schema.
        assert!(!text.contains("\"additionalProperties\":{"), "{text}");
        assert!(text.contains("\"fold\""), "{text}");
    }

    #[test]
    fn flags_take_the_words_a_recipe_takes() {
        let words = ["dynamic-int8", "static-int8", "weight-int8", "weight-int4"];
        let modes: Vec<QuantizeMode> = words.iter().map(|w| w.parse().unwrap()).collect();
        let expected = [
            QuantizeMode::DynamicInt8,
            QuantizeMode::StaticInt8,
            QuantizeMode::WeightInt8,
            QuantizeMode::WeightInt4,
        ];
        assert_eq!(modes, expected);
        let words = ["accuracy", "mse", "crossEntropy", "cross-entropy"];
        let metrics: Vec<Metric> = words.iter().map(|w| w.parse().unwrap()).collect();
        assert_eq!(
            metrics,
            [Metric::Accuracy, Metric::Mse, Metric::CrossEntropy, Metric::CrossEntropy]
        );
        let mode = "int3".parse::<QuantizeMode>().unwrap_err();
        assert!(mode.to_string().contains("\"int3\"; expected dynamic-int8"), "{mode}");
        let metric = "Accuracy".parse::<Metric>().unwrap_err();
        assert!(metric.to_string().contains("\"Accuracy\"; expected accuracy"), "{metric}");
    }
}
