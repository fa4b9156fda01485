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
//!
//! Because int8 in tract is rarely faster than fp32 (4 of 46 measurements
//! in the issue), every candidate form of each layer is timed against fp32
//! (interleaved runs in this process, the median of the per-pair ratios,
//! more runs when the ratio is within noise of the limit) and the fastest
//! one within [`choice::ALLOWED_SLOWDOWN`] is kept, else fp32. Then the whole
//! chosen model is timed against fp32 the same way; while it is more than
//! [`WHOLE_MODEL_ALLOWED`] slower at batch 1 or 32, the quantized layer with
//! the smallest measured gain goes back to fp32 ([`settle`]).
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
    FormTiming, LayerChoice, NoiseFloor, WHOLE_MODEL_ALLOWED, WholeModelCheck, WholeTiming,
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

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuantizeNotes {
    pub mode: QuantizeMode,
    pub layers: Vec<LayerChoice>,
    pub skipped: Vec<Skipped>,
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
        let parts: Vec<String> = [
            self.whole_model.as_ref().map(WholeModelCheck::summary),
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
        // MatMulNBits is a MatMul: a Conv has the unpacked form only.
        QuantizeMode::WeightInt4 => layers
            .iter()
            .map(|l| match l.op.as_str() {
                "Conv" => vec![Form::Int4Unpacked],
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
    if measure && !layers.is_empty() {
        let float =
            Model::load(&graph::encode(model), ModelFormat::Onnx, &EngineOptions::default())?;
        let mut timer = TractTimer { model, layers: &layers, settings: &settings, float };
        let floor = NoiseFloor::measure(layers.len(), &mut timer)?;
        let mut gains = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let (mut form, measured, mut gain) =
                choose_layer(i, layers.len(), &candidates[i], &floor, &mut timer)?;
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
            layers: choices,
            skipped,
            measured: measure,
            float_us,
            whole_model,
            noise_floor,
        },
    ))
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
mod tests {
    use std::collections::HashMap;

    use super::testing::{mlp, two_convs};
    use super::*;
    use crate::crd::recipe::CalibrationMethod;

    #[test]
    fn skip_list_and_weight_stats() {
        let m = mlp();
        let (layers, skipped) = find_layers(graph::graph(&m).unwrap(), &["fc2".into()]);
        assert_eq!(layers.len(), 1);
        assert_eq!(skipped, vec![Skipped { node: "fc2".into(), reason: "listed in skip".into() }]);
        let q = rewrite(
            &m,
            &layers,
            &[Form::WeightInt8],
            &Settings { block: 32, int8_block: None, stochastic: false, seed: 0 },
        )
        .unwrap();
        let g = graph::graph(&q).unwrap();
        assert!(g.initializer.iter().any(|t| t.name == "w2" && t.data_type == graph::FLOAT));
        assert!(g.initializer.iter().any(|t| t.data_type == graph::INT8 && t.dims == vec![8, 4]));
    }

    /// The models the pass writes, pinned byte for byte: a restructuring
    /// of this module must not change a single byte of any form.
    #[test]
    fn written_models_are_pinned_byte_for_byte() {
        use sha2::Digest;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models");
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let recipe = |mode, block_size, stochastic| Quantize {
            mode,
            block_size,
            stochastic,
            seed: 5,
            calibration_method: CalibrationMethod::Minmax,
            calibration: None,
            fallback: true,
            skip: Vec::new(),
        };
        let mut lines = Vec::new();
        for (file, calibration) in [
            ("digits-mlp-v1.onnx", "digits-calibration.npz"),
            ("digits-cnn.onnx", "digits-calibration-images.npz"),
        ] {
            let m = graph::decode(&read(file)).unwrap();
            let ctx = Context {
                calibration: Some(
                    super::super::Dataset::parse(calibration, &read(calibration)).unwrap(),
                ),
                validation: None,
                models: HashMap::new(),
                measure: false,
            };
            let mut recipes = Vec::new();
            for mode in [
                QuantizeMode::WeightInt8,
                QuantizeMode::DynamicInt8,
                QuantizeMode::StaticInt8,
                QuantizeMode::WeightInt4,
            ] {
                recipes.push(recipe(mode, None, false));
                recipes.push(recipe(mode, Some(16), true));
            }
            let mut nbits = recipe(QuantizeMode::WeightInt4, None, false);
            nbits.fallback = false;
            recipes.push(nbits);
            let mut entropy = recipe(QuantizeMode::StaticInt8, None, false);
            entropy.calibration_method = CalibrationMethod::Entropy;
            recipes.push(entropy);
            for q in &recipes {
                let (out, _) = quantize(&m, q, &ctx).unwrap();
                let sha = hex::encode(sha2::Sha256::digest(graph::encode(&out)));
                lines.push(format!(
                    "{file} {:?} {:?} stochastic={} fallback={} {:?}: {sha}",
                    q.mode, q.block_size, q.stochastic, q.fallback, q.calibration_method
                ));
            }
            let (layers, _) = find_layers(graph::graph(&m).unwrap(), &[]);
            let settings = Settings { block: 32, int8_block: Some(16), stochastic: false, seed: 0 };
            let forms: &[Form] = if file.contains("cnn") {
                &[Form::WeightInt8Block]
            } else {
                &[Form::WeightInt8Block, Form::WeightInt8Split]
            };
            for form in forms {
                let out = rewrite(&m, &layers, &vec![*form; layers.len()], &settings).unwrap();
                let sha = hex::encode(sha2::Sha256::digest(graph::encode(&out)));
                lines.push(format!("{file} {form:?}: {sha}"));
            }
        }
        // The synthetic graphs reach every bias tail: Gemm with transB, a
        // bias and beta 0.5 (the Mul), and Convs with and without a bias.
        let mut beta = mlp();
        let gemm = &mut graph::graph_mut(&mut beta).unwrap().node[0];
        gemm.attribute.push(graph::float_attr("beta", 0.5));
        let convs = two_convs();
        let static_form = uint8_params(-1.0, 2.0);
        let dense = [
            Form::WeightInt8,
            Form::WeightInt8Block,
            Form::WeightInt8Split,
            Form::DynamicInt8,
            static_form,
            Form::Int4Unpacked,
            Form::Int4NBits,
        ];
        let conv_forms = [
            Form::WeightInt8,
            Form::WeightInt8Block,
            Form::DynamicInt8,
            static_form,
            Form::Int4Unpacked,
        ];
        for (label, m, forms) in [
            ("mlp", mlp(), &dense[..]),
            ("beta", beta, &dense[..]),
            ("conv", convs, &conv_forms[..]),
        ] {
            let (layers, _) = find_layers(graph::graph(&m).unwrap(), &[]);
            for (int8_block, stochastic) in [(None, false), (Some(16), true)] {
                let settings = Settings { block: 16, int8_block, stochastic, seed: 11 };
                for form in forms {
                    let out = rewrite(&m, &layers, &vec![*form; layers.len()], &settings).unwrap();
                    let sha = hex::encode(sha2::Sha256::digest(graph::encode(&out)));
                    lines.push(format!("{label} {form:?} {int8_block:?} {stochastic}: {sha}"));
                }
            }
        }
        let got = lines.join("\n");
        assert_eq!(got, PINNED.trim(), "\n{got}");
    }

    const PINNED: &str = "
digits-mlp-v1.onnx WeightInt8 None stochastic=false fallback=true Minmax: 1ef966acaa73c319c3435b75a6880652fb65394a4bce9279734b60908f284610
digits-mlp-v1.onnx WeightInt8 Some(16) stochastic=true fallback=true Minmax: 8851926b78f5498295225a2c21b656e8599915a481eb92ea8ddc9077cd5641ea
digits-mlp-v1.onnx DynamicInt8 None stochastic=false fallback=true Minmax: 4d1f55d455e2d9a83fe9932ca6cb5f99e3b747dcb0b2eef0286443ccadeebd37
digits-mlp-v1.onnx DynamicInt8 Some(16) stochastic=true fallback=true Minmax: 997bed1c52b02535ca239177e1108b92beb89cbe10e425ddb443c7c171e72080
digits-mlp-v1.onnx StaticInt8 None stochastic=false fallback=true Minmax: 3050b08e2917f9f790aca8c1e0b7ae87c6b5b23e4a929ca723aa4bc01d1ea95a
digits-mlp-v1.onnx StaticInt8 Some(16) stochastic=true fallback=true Minmax: c9efa96a87d70e40003e7a6aaca5b8e75d2e814089628fec3c85fc03feb325fd
digits-mlp-v1.onnx WeightInt4 None stochastic=false fallback=true Minmax: 3995bb541a6e108fc00f6b925bb0e9bb3ac3f8229b344502c8962b0f1af9d1fd
digits-mlp-v1.onnx WeightInt4 Some(16) stochastic=true fallback=true Minmax: f240ac258e6b95e190dccc3d083b2c8a788c87194c8b624912adbaf5909412ba
digits-mlp-v1.onnx WeightInt4 None stochastic=false fallback=false Minmax: 41622e369a046c1db5b61a0f2ba236cd5074da750c981c79ac90d9c205650738
digits-mlp-v1.onnx StaticInt8 None stochastic=false fallback=true Entropy: 45d138bf5bd2750f6aabe511e3c2c48f189982df675c2ca80cdb858b1823c081
digits-mlp-v1.onnx WeightInt8Block: c9355de332b4cbddc07506163c9c808c6a1cf3f1410334cc6e0f90cf12b57c13
digits-mlp-v1.onnx WeightInt8Split: aa635c4d5d7f60826165a225362f724f2bf912025ae0070584eab38b70de1653
digits-cnn.onnx WeightInt8 None stochastic=false fallback=true Minmax: 01f46afb5cdb94565b5276810f1712b83f373a8ffd5c637228eeb48670194685
digits-cnn.onnx WeightInt8 Some(16) stochastic=true fallback=true Minmax: 6863dc9f2f66c55c8a81473ada9f411fb215de204f9a9f8fb78512d3ebd8afb9
digits-cnn.onnx DynamicInt8 None stochastic=false fallback=true Minmax: fc9bb0c48e1e372a02970c30f8311098aa0160bc17daf095c955eb9bbd0025df
digits-cnn.onnx DynamicInt8 Some(16) stochastic=true fallback=true Minmax: cc4a1224f0be0c1c98fc63b8207fd41e4b58c81a5686a575510606d3f7dcec85
digits-cnn.onnx StaticInt8 None stochastic=false fallback=true Minmax: 5350c0bd030bcd69b78c9680d4497a9531810090d20d2d3ff7ed60701ec575f5
digits-cnn.onnx StaticInt8 Some(16) stochastic=true fallback=true Minmax: 6c5258321248eac96b53a86d752dea83661356c5c09848cdbe797aea64870a81
digits-cnn.onnx WeightInt4 None stochastic=false fallback=true Minmax: a6c1a275a43b344d336acc364ac3224982b2f87afe5e24eede09ec19a41539ae
digits-cnn.onnx WeightInt4 Some(16) stochastic=true fallback=true Minmax: a8d33112ae7959a0566fa336c36d8a3407cc480100e8c20079ceb468d936d889
digits-cnn.onnx WeightInt4 None stochastic=false fallback=false Minmax: aa59e408f380c76e71e9d0d0539bc4274db9c089341d1f223ee31ea3c8bbf5cc
digits-cnn.onnx StaticInt8 None stochastic=false fallback=true Entropy: 6656befd0fe35f4f856deb58c2ea16c2ea41b68f2b756fa1a5629964575e4646
digits-cnn.onnx WeightInt8Block: b84cdb505c29cd5e8b35f9bdf4b9a6c67fa5741a85e2c826e56def5448038c65
mlp WeightInt8 None false: efa3514a8c4dd5a5b5b52a0a4e3c1ce798ba69a18d33f5e800e317e2ec8e0faa
mlp WeightInt8Block None false: 651c3b0ad4c9653c0513222e99023d0dfb6d72ac9757e3ff23de884c1c0e7639
mlp WeightInt8Split None false: 1c1ae8ef56bc588e1685b75f4d4c658440ff2c7d33d4297666ba8a366f087150
mlp DynamicInt8 None false: db088ae3575e12e0cf331ff230d535ea52e3835921ef82a5c5f5ea0273c9593d
mlp StaticInt8 { scale: 0.011764706, zero_point: 85 } None false: 55b837e4473d2f995447e08f21d60fdab464e3041a4f6879a25e908022384c07
mlp Int4Unpacked None false: f6135961221e4dd20cca0c4cc0fa2bbda43f68f989ddd30b403bac2d0b17c00e
mlp Int4NBits None false: dd9135cc477b02223b4ab77dc78832d7924338c54cc392b8baf930f8fa258a63
mlp WeightInt8 Some(16) true: 4a9f0101cb25d09ae4079147092465cb87b5db83993c2accb84bc4d8d522f397
mlp WeightInt8Block Some(16) true: 779d65beac86d980933d6168492b8bff21b01463d1b78c1f027f60840b9d5cc6
mlp WeightInt8Split Some(16) true: 268d9b65878b36794ce184fb33d0120bdc7a5ccd86dcbf404dd08f8b9628007c
mlp DynamicInt8 Some(16) true: 7981a341ef26b35760c1dbfa79c8a18474406f886005daa9af818f8f1340ce2f
mlp StaticInt8 { scale: 0.011764706, zero_point: 85 } Some(16) true: 1e65bae5a404d6c57215fe1e4ec1ea18f4734650272d8d1f2ab4efe7bba2addf
mlp Int4Unpacked Some(16) true: 2733918f055a0ec5465d51873ad9b46b6142fce8a1993ca263bd16f2dd0db82e
mlp Int4NBits Some(16) true: 83cd12f565233f0351c2cab418c084679fbe380a21d13e74090add14e4868089
beta WeightInt8 None false: 191ed091ce72c12f42e8bc5fb013fb5b72753382d4bf9da1379faa776d2109f3
beta WeightInt8Block None false: 78b8b093b878b47114a35fcc53198d3fbd189796b585a5d81edb52baa48d8895
beta WeightInt8Split None false: 708c2f75060bbb994fca1d753a2934e788659b80038792ba46520146d3ec742f
beta DynamicInt8 None false: d6284001cb8bfae2d8b9a5705b92293776da7508969ddbc44cf5547d6a39bbce
beta StaticInt8 { scale: 0.011764706, zero_point: 85 } None false: 1b9d217fa011ebfc97726fe400b63ed921efb1787c4a54a2269dfb32d6c19c82
beta Int4Unpacked None false: 84c833a412e592fce5e67b6f3e8c2749fa7a41f87003aa62e522af85690e8734
beta Int4NBits None false: b1d2b2f78e8e70f8bb10719eea44cf75c2d1e49beda67f8027934031e66d627b
beta WeightInt8 Some(16) true: 7ece7a8a15a2067f5f05f8f6da68e4c7ebcb8c56936c793fc1a623e76aee421d
beta WeightInt8Block Some(16) true: be138ba4e0738c7682834f25713c9bbbc89f54ed1d4783b37bc2e465e3e6294b
beta WeightInt8Split Some(16) true: 9ce94d84b8866570a1a007cd18e49b7fcd31729e4ec223f57ee4f98eaa6ee0df
beta DynamicInt8 Some(16) true: 7a510b074b5b4013826ca8e3237fc2908e1372b152668ae02f0f0c6778037ce7
beta StaticInt8 { scale: 0.011764706, zero_point: 85 } Some(16) true: 98b829be860d1a9921ffc24478be7d27f3ddff9011ffa55071e9744ef00df7c9
beta Int4Unpacked Some(16) true: adba3878e6372aeb95ba98b0eb80ac76d692d33922ae6c5ec81224f81d67cfe4
beta Int4NBits Some(16) true: 00b3b0ccca5ffb1507f269323e8674868ea81ad00ae54fcf94c82c9c6b71ef15
conv WeightInt8 None false: 5312f0a6d33f7eca8e26b9abadba25cacdb80936e42a2607e8d17f5bf0e1bd07
conv WeightInt8Block None false: fd0c311219c7593d5986760e5f7d705f07ec1bbce8e4733badae8667beed7abc
conv DynamicInt8 None false: fcbe8e594c17bf9864c66a714874745123c10960ed78ac60c60ab325877d4618
conv StaticInt8 { scale: 0.011764706, zero_point: 85 } None false: 4108d1bcea72c0bebfef1eeff6fa02fbfcff2887a295d70aa34061b15c2f4081
conv Int4Unpacked None false: f92aa11ab230fe7ca9f3b2f9d00097235ef338ef3e586887cb842acd6981892d
conv WeightInt8 Some(16) true: 50bf4c700ec8e5027f6ad0633d83c6c04f3238af6514f3c6540a5c83c2c66f03
conv WeightInt8Block Some(16) true: 1a41f8f62fbd3183dcc4289d10a32fbe65d6141e6887ba83af6c66d99f27487d
conv DynamicInt8 Some(16) true: e4a5bc51fc217690e1c7389c6cf800caaa44867bed04908bf224456f9e4564b3
conv StaticInt8 { scale: 0.011764706, zero_point: 85 } Some(16) true: 555cbe061ad2042304f98b82f5d973d1b07b0fd5a89b648b21b1985b72b4d781
conv Int4Unpacked Some(16) true: 443c1eff7389b3ce6a2ff7afec50f5ca35d73093d5df8be85ea823cf21f1870d
";
}
