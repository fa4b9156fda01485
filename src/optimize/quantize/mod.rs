//! The `quantize` pass: int8 and 4-bit weights, int8 activations, with a
//! measured per-layer fallback.
//!
//! Forms written, all standard ONNX except `MatMulNBits` (`com.microsoft`),
//! all loading in tract 0.23.9 and ONNX Runtime:
//! - `weight-int8`: int8 weight + `DequantizeLinear` per output channel.
//!   The weight is constant, so tract dequantizes it once at load and runs
//!   the layer at fp32 speed while the file stays int8.
//! - `weight-int8-block` (`blockSize` set): one scale per block of
//!   `blockSize` weights along K. `DequantizeLinear`'s `block_size` (opset
//!   21) is refused by tract 0.23.9, so the weight is stored as
//!   [N x blocks, blockSize] int8 with a per-row (axis 0) `DequantizeLinear`
//!   (opset 13), then Reshape (+ Slice of the padding) and Transpose back to
//!   the layer's layout: all constant, folded by tract at load.
//! - `dynamic-int8`: `DynamicQuantizeLinear` + `MatMulInteger`/`ConvInteger`,
//!   then the int32 result scaled back to float.
//! - `static-int8`: QDQ pairs (calibrated) on the layer's activation input,
//!   weight as in `weight-int8`. Only on MatMul/Gemm/Conv inputs, so never
//!   around a Softmax (tract computes Q-DQ-Softmax wrongly, per the issue).
//! - `int4-unpacked`: 4-bit packed weight unpacked by standard integer ops;
//!   constant, so tract folds it at load (fp32 speed, 4-bit file). For a
//!   Conv the rows are C/group x kH x kW per output channel, reshaped back
//!   to [M, C/group, kH, kW]; one block per channel when a row is shorter
//!   than the block.
//! - `int4-nbits`: `MatMulNBits` 4-bit, block size as given (MatMul and
//!   Gemm only).
//! - `int4-unpacked-split`: `int4-unpacked` cut into column blocks whose
//!   float weight fits tract's folding budget, one MatMul each and a
//!   Concat, for a MatMul/Gemm weight too big to fold whole (the int4 twin
//!   of `weight-int8-split`).
//!
//! Weights that meet uint8 activations in an integer product (the dynamic
//! and static forms) are kept within ±64 ([`math::PRODUCT_WEIGHT_MAX`]) so
//! no x86 kernel saturates on them; weight-only forms use ±127.
//!
//! The objective is size: a recipe that asks for int4 or int8 wants a
//! small model, so every eligible layer is converted unless the measured
//! model with it is slower than fp32 by more than `maxSlowdown`
//! ([`DEFAULT_MAX_SLOWDOWN`], 1.10). Each candidate form of each layer is
//! timed against fp32 (interleaved runs in this process, the median of the
//! per-pair ratios, more runs when the ratio is within noise of the bound)
//! and the first within the bound is kept, a later one only when faster by
//! more than noise; none within: fp32, listed in the report's `keptFloat`
//! with the measured reason. Then the whole chosen model is timed against
//! fp32 the same way; while it is beyond the bound at batch 1 or 32, the
//! quantized layer with the smallest measured gain goes back to fp32
//! ([`settle`]), and is listed too.
//! Before any of that, fp32 is timed against a second copy of itself
//! ([`NoiseFloor`]): where two copies of one model already measure further
//! apart than those limits, the limits widen to that spread and a
//! difference inside it counts as none, so noise does not make the choices.
//! Weight-only forms are usually free, as tract dequantizes a constant once
//! at load, but only while the float weight fits its constant-folding
//! budget (`CONST_FOLD_MEM_BUDGET`, 4 MiB in tract-core 0.23.9): a bigger
//! one is dequantized at every run, which the measurement catches.
//!
//! Here the pass ([`quantize`]) and the layers it finds; `math` turns
//! floats into integers and scales, `calibration` measures activation
//! ranges, `layout` knows where a weight keeps its outputs and what tract
//! folds at load, `rewrite` writes each form into the graph, `timing`
//! times a model against fp32 and `choice` decides from those timings.

mod calibration;
mod choice;
mod layout;
mod math;
mod rewrite;
mod timing;

use tract_onnx::pb;

use super::graph::{self, FloatTensor};
use super::{Context, PassError};
use crate::crd::recipe::{Quantize, QuantizeMode};
use crate::engine::{EngineOptions, Model, ModelFormat};
use calibration::calibrate;
pub use calibration::{entropy_threshold, range};
pub use choice::{
    DEFAULT_MAX_SLOWDOWN, FormTiming, LayerChoice, NoiseFloor, WholeModelCheck, WholeTiming,
    choose_layer, settle,
};
pub use layout::TRACT_FOLD_BUDGET;
use layout::{folds_at_load, over_fold_budget};
pub use math::{f16_exact, quantize_i4, quantize_i8, quantize_i8_blocks, uint8_params};
pub use rewrite::{Settings, rewrite};
use timing::TractTimer;
pub use timing::{Paired, Timer};

/// Default 4-bit block: the one the issue measured identical in both engines.
pub const DEFAULT_INT4_BLOCK: usize = 32;

/// How one layer is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Form {
    /// Left in fp32 (the fallback when every quantized form is slower).
    Float,
    WeightInt8,
    /// int8 with one scale per block of [`Settings::int8_block`] weights along K.
    WeightInt8Block,
    /// `WeightInt8` cut into column blocks whose float weight fits tract's
    /// constant-folding budget, one MatMul per block and a Concat: the
    /// blocks are dequantized once at load, where one big weight is not.
    WeightInt8Split,
    DynamicInt8,
    /// QDQ on the activation, with its uint8 scale and zero point.
    StaticInt8 {
        scale: f32,
        zero_point: u8,
    },
    Int4Unpacked,
    Int4NBits,
    /// `Int4Unpacked` in column blocks within tract's folding budget.
    Int4Split,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Float => "float",
            Form::WeightInt8 => "weight-int8",
            Form::WeightInt8Block => "weight-int8-block",
            Form::WeightInt8Split => "weight-int8-split",
            Form::DynamicInt8 => "dynamic-int8",
            Form::StaticInt8 { .. } => "static-int8",
            Form::Int4Unpacked => "int4-unpacked",
            Form::Int4NBits => "int4-nbits",
            Form::Int4Split => "int4-unpacked-split",
        }
    }
}

/// One quantizable layer found in the graph.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Name of the node (stable across rewrites of other layers).
    pub node: String,
    pub op: String,
    pub weight: String,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    w: FloatTensor,
}

impl Layer {
    /// The factor the layer's product is scaled by, which the quantized
    /// forms fold into their scales: Gemm's `alpha`; MatMul and Conv have
    /// none.
    fn product_scale(&self) -> f32 {
        if self.op == "Gemm" { self.alpha } else { 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

/// A layer the pass could have converted and left in fp32, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptFloat {
    pub node: String,
    /// What was measured, against which bound.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuantizeNotes {
    pub mode: QuantizeMode,
    /// The size objective's bound used (`maxSlowdown`).
    pub max_slowdown: f64,
    pub layers: Vec<LayerChoice>,
    pub skipped: Vec<Skipped>,
    /// Eligible layers left in fp32 by the measurements, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_float: Vec<KeptFloat>,
    /// Whether the per-layer fallback was measured.
    pub measured: bool,
    /// Median µs at batch 1 and 32 of the unquantized input model (from
    /// the first whole-model check, else the first per-layer timing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub float_us: Option<[f64; 2]>,
    /// The whole chosen model timed against fp32, and any reversals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_model: Option<WholeModelCheck>,
    /// fp32 timed against a copy of itself before the choices, and the
    /// limits that followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_floor: Option<NoiseFloor>,
}

impl QuantizeNotes {
    /// The pass's part of the report's summary: the whole-model check, and
    /// the noise floor when it was wider than the limits.
    pub fn remark(&self) -> Option<String> {
        let kept = (!self.kept_float.is_empty()).then(|| {
            format!(
                "quantize: {} of {} layers kept fp32, slower than {:.2}x ({})",
                self.kept_float.len(),
                self.layers.len(),
                self.max_slowdown,
                self.kept_float.iter().map(|k| k.node.as_str()).collect::<Vec<_>>().join(", ")
            )
        });
        let parts: Vec<String> = [
            self.whole_model.as_ref().map(WholeModelCheck::summary),
            kept,
            self.noise_floor.as_ref().and_then(NoiseFloor::remark),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Finds MatMul, Gemm and Conv nodes with a float weight initializer.
pub fn find_layers(g: &pb::GraphProto, skip: &[String]) -> (Vec<Layer>, Vec<Skipped>) {
    let inits = graph::initializers(g);
    let counts = graph::use_counts(g);
    let mut layers = Vec::new();
    let mut skipped = Vec::new();
    for n in &g.node {
        if !matches!(n.op_type.as_str(), "MatMul" | "Gemm" | "Conv") {
            continue;
        }
        let Some(w_name) = n.input.get(1) else { continue };
        let Some(w) = inits.get(w_name).and_then(|i| graph::read_f32(&g.initializer[*i]).ok())
        else {
            continue;
        };
        let mut skip_reason =
            |reason: &str| skipped.push(Skipped { node: n.name.clone(), reason: reason.into() });
        if skip.iter().any(|s| *s == n.name || s == w_name) {
            skip_reason("listed in skip");
            continue;
        }
        if counts.get(w_name) != Some(&1) {
            skip_reason("weight shared with another node");
            continue;
        }
        if w.data.is_empty() {
            skip_reason("weight has no elements");
            continue;
        }
        let ok_rank = match n.op_type.as_str() {
            "Conv" => w.dims.len() >= 3,
            _ => w.dims.len() == 2,
        };
        if !ok_rank {
            skip_reason("weight rank not supported");
            continue;
        }
        if n.op_type == "Gemm" && graph::get_int(n, "transA", 0) != 0 {
            skip_reason("Gemm with transA");
            continue;
        }
        layers.push(Layer {
            node: n.name.clone(),
            op: n.op_type.clone(),
            weight: w_name.clone(),
            trans_b: graph::get_int(n, "transB", 0) == 1,
            alpha: graph::get_float(n, "alpha", 1.0),
            beta: graph::get_float(n, "beta", 1.0),
            w,
        });
    }
    (layers, skipped)
}

fn measure_wanted(ctx: &Context, q: &Quantize) -> bool {
    ctx.measure && q.fallback
}

/// The quantize pass.
///
/// # Errors
/// Calibration problems, graphs that cannot be rewritten, and quantized
/// models tract cannot load while measuring.
pub fn quantize(
    model: &pb::ModelProto,
    q: &Quantize,
    ctx: &Context,
) -> Result<(pb::ModelProto, QuantizeNotes), PassError> {
    let g = graph::graph(model)?;
    let int4 = q.mode == QuantizeMode::WeightInt4;
    let (layers, skipped) = find_layers(g, &q.skip);
    let block = q.block_size.unwrap_or(DEFAULT_INT4_BLOCK);
    let int8_block = if int4 { None } else { q.block_size };
    let settings = Settings { block, int8_block, stochastic: q.stochastic, seed: q.seed };
    // Forms tried per layer, the mode's own form last. With an int8 block
    // size the weight-only form is the block form (no split variant: a
    // weight over tract's folding budget is measured and falls back).
    let bound = q.max_slowdown.unwrap_or(DEFAULT_MAX_SLOWDOWN);
    let weight_only = |l: &Layer| {
        if int8_block.is_some() {
            vec![Form::WeightInt8Block]
        } else if over_fold_budget(l) {
            vec![Form::WeightInt8, Form::WeightInt8Split]
        } else {
            vec![Form::WeightInt8]
        }
    };
    let candidates: Vec<Vec<Form>> = match q.mode {
        QuantizeMode::WeightInt8 => layers.iter().map(weight_only).collect(),
        // MatMulNBits is a MatMul: a Conv has the unpacked form only. A
        // weight too big for tract to fold whole is tried split first, the
        // form that unpacks once at load.
        QuantizeMode::WeightInt4 => layers
            .iter()
            .map(|l| match l.op.as_str() {
                "Conv" => vec![Form::Int4Unpacked],
                _ if over_fold_budget(l) => {
                    vec![Form::Int4Split, Form::Int4Unpacked, Form::Int4NBits]
                }
                _ => vec![Form::Int4Unpacked, Form::Int4NBits],
            })
            .collect(),
        QuantizeMode::DynamicInt8 => {
            layers.iter().map(|l| [weight_only(l), vec![Form::DynamicInt8]].concat()).collect()
        }
        QuantizeMode::StaticInt8 => {
            let data = ctx.calibration.as_ref().ok_or_else(|| {
                PassError::Unsupported("static-int8 needs calibration data (--calibration)".into())
            })?;
            let ranges = calibrate(model, &layers, data, q.calibration_method)?;
            layers.iter().zip(ranges).map(|(l, r)| [weight_only(l), vec![r]].concat()).collect()
        }
    };
    let measure = measure_wanted(ctx, q);
    let mut choices = Vec::with_capacity(layers.len());
    let mut forms = Vec::with_capacity(layers.len());
    let mut float_us = None;
    let mut whole_model = None;
    let mut noise_floor = None;
    let mut kept_float = Vec::new();
    if measure && !layers.is_empty() {
        let float =
            Model::load(&graph::encode(model), ModelFormat::Onnx, &EngineOptions::default())?;
        let mut timer = TractTimer { model, layers: &layers, settings: &settings, float };
        let floor = NoiseFloor::measure(layers.len(), bound, &mut timer)?;
        let mut gains = Vec::with_capacity(layers.len());
        let mut progress = crate::optimize::progress::Progress::new("timing layers", layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let (mut form, measured, mut gain) =
                choose_layer(i, layers.len(), &candidates[i], &floor, &mut timer)?;
            progress.step(&layer.node);
            if float_us.is_none() {
                float_us = measured.first().map(|m| m.float_us);
            }
            let mut kept_because = None;
            let neutral = candidates[i].first().copied().filter(|f| folds_at_load(*f, layer));
            if let Some(neutral) = neutral
                && (form == Form::Float || form == neutral)
            {
                form = neutral;
                gain = f64::INFINITY;
                kept_because = Some("folded to the fp32 weight at load: the same plan as fp32");
            }
            forms.push(form);
            gains.push(gain);
            choices.push(LayerChoice {
                node: layer.node.clone(),
                op: layer.op.clone(),
                form: form.name(),
                measured,
                kept_because,
            });
        }
        let names: Vec<String> = layers.iter().map(|l| l.node.clone()).collect();
        let check = settle(&mut forms, &gains, &names, floor.whole_limit, &mut timer)?;
        if let Some(t) = check.timings.first() {
            float_us = Some(t.paired.float_us);
        }
        for (choice, form) in choices.iter_mut().zip(&forms) {
            choice.form = form.name();
        }
        kept_float = kept_float_reasons(&choices, &check, &floor);
        whole_model = Some(check);
        noise_floor = Some(floor);
    } else {
        for (i, layer) in layers.iter().enumerate() {
            // Unmeasured: the mode's own form; for int4 the standard-ops
            // form unless the fallback is off (then MatMulNBits).
            let c = &candidates[i];
            let form = if q.mode == QuantizeMode::WeightInt4 && q.fallback {
                c[0]
            } else {
                c[c.len() - 1]
            };
            forms.push(form);
            choices.push(LayerChoice {
                node: layer.node.clone(),
                op: layer.op.clone(),
                form: form.name(),
                measured: Vec::new(),
                kept_because: None,
            });
        }
    }
    let out = rewrite(model, &layers, &forms, &settings)?;
    Ok((
        out,
        QuantizeNotes {
            mode: q.mode,
            max_slowdown: bound,
            layers: choices,
            skipped,
            kept_float,
            measured: measure,
            float_us,
            whole_model,
            noise_floor,
        },
    ))
}

/// The report's reason for each layer the measurements left in fp32: its
/// own timings beyond the bound, or the whole-model check that put it back.
fn kept_float_reasons(
    choices: &[LayerChoice],
    check: &WholeModelCheck,
    floor: &NoiseFloor,
) -> Vec<KeptFloat> {
    let ratios = |r: [f64; 2]| format!("{:.2}x at batch 1, {:.2}x at batch 32", r[0], r[1]);
    choices
        .iter()
        .filter(|c| c.form == Form::Float.name())
        .map(|c| {
            let reason = match check.reverted.iter().position(|n| *n == c.node) {
                Some(i) => format!(
                    "put back by the whole-model check: the model measured {} against fp32, \
                     over the {:.2}x bound",
                    check.timings.get(i).map(|t| ratios(t.paired.ratio)).unwrap_or_default(),
                    floor.whole_limit
                ),
                None => format!(
                    "every form measured slower than the {:.2}x bound: {}",
                    floor.layer_limit,
                    c.measured
                        .iter()
                        .map(|m| format!("{} {}", m.form, ratios(m.ratio)))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            KeptFloat { node: c.node.clone(), reason }
        })
        .collect()
}

/// Graphs and comparisons the tests of several files share.
#[cfg(test)]
mod testing {
    use tract_onnx::pb;

    use crate::optimize::graph::testing::{dense, model, values};
    use crate::optimize::graph::{self, f32_tensor, node};

    pub fn mlp() -> pb::ModelProto {
        // x [b, 4] -> MatMul W1 [4, 8] + b1 (Gemm) -> Relu -> MatMul W2 [8, 3]
        let mut gemm = node("Gemm", "fc1", &["x", "w1", "b1"], &["h"]);
        gemm.attribute.push(graph::int_attr("transB", 1));
        dense(
            4,
            3,
            vec![
                gemm,
                node("Relu", "relu", &["h"], &["r"]),
                node("MatMul", "fc2", &["r", "w2"], &["y"]),
            ],
            vec![
                f32_tensor("w1", &[8, 4], &values(32, 1, 1.0)),
                f32_tensor("b1", &[8], &values(8, 2, 0.5)),
                f32_tensor("w2", &[8, 3], &values(24, 3, 1.0)),
            ],
        )
    }

    pub fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    pub fn conv(name: &str, inputs: &[&str], output: &str, group: i64) -> pb::NodeProto {
        let mut c = node("Conv", name, inputs, &[output]);
        c.attribute.push(graph::int_attr("group", group));
        c
    }

    /// x [b, 2, 6, 6] -> Conv 8x2x3x3 -> Relu -> Conv group 2, 4x4x3x3
    /// with a bias.
    pub fn two_convs() -> pb::ModelProto {
        model(
            ("x", &[None, Some(2), Some(6), Some(6)]),
            ("y", &[None, Some(4), Some(2), Some(2)]),
            vec![
                conv("c1", &["x", "w1"], "h", 1),
                node("Relu", "relu", &["h"], &["r"]),
                conv("c2", &["r", "w2", "b2"], "y", 2),
            ],
            vec![
                f32_tensor("w1", &[8, 2, 3, 3], &values(144, 1, 0.5)),
                f32_tensor("w2", &[4, 4, 3, 3], &values(144, 2, 0.3)),
                f32_tensor("b2", &[4], &values(4, 3, 0.5)),
            ],
        )
    }
}

#[cfg(test)]
mod tests;
