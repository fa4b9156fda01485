//! Where a layer's weight keeps its outputs, and what tract folds at load.

use super::{Form, Layer};

/// tract-core 0.23.9's `CONST_FOLD_MEM_BUDGET`: a constant computation is
/// folded at load only when its output stays under this (or its input size).
pub const TRACT_FOLD_BUDGET: usize = 4 << 20;

/// The weight as rows of K per output (N x K); a Conv weight [O, I, kh, kw]
/// is already O rows of I x kh x kw.
pub(super) fn rows_nk(layer: &Layer) -> (Vec<f32>, usize, usize) {
    if layer.op == "Conv" {
        let n = layer.w.dims[0];
        return (layer.w.data.clone(), n, layer.w.data.len() / n.max(1));
    }
    let (d0, d1) = (layer.w.dims[0], layer.w.dims[1]);
    if layer.op == "Gemm" && layer.trans_b {
        return (layer.w.data.clone(), d0, d1);
    }
    (transpose(&layer.w.data, d0, d1), d1, d0)
}

/// `rows` x `cols`, row-major, transposed to `cols` x `rows`.
pub(super) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// The 4-bit block of a layer: `block`, except that a Conv whose rows (C/group
/// x kH x kW per output channel) are shorter gets one block per output
/// channel, rounded up to an even length for the nibble pairs, so a 1x3x3
/// kernel is not padded to 32 (which would make its file bigger than int8).
pub(super) fn int4_block(layer: &Layer, block: usize) -> usize {
    let k = layer.w.data.len() / layer.w.dims[0].max(1);
    if layer.op == "Conv" && k < block { k.div_ceil(2) * 2 } else { block }
}

/// Whether tract turns this layer's `form` back into the fp32 weight when it
/// loads the model (constant folding within its budget), so that the plan
/// it runs is the fp32 plan: smaller on disk, never slower.
pub(super) fn folds_at_load(form: Form, layer: &Layer) -> bool {
    matches!(form, Form::WeightInt8 | Form::WeightInt8Block | Form::Int4Unpacked)
        && layer.w.data.len() * 4 <= TRACT_FOLD_BUDGET
}

/// Columns per block so that a K x cols float block fits the fold budget.
pub(super) fn split_columns(k: usize) -> usize {
    (TRACT_FOLD_BUDGET / (4 * k.max(1))).max(1)
}

/// Whether a layer's float weight is too big for tract to fold its
/// dequantization, so the split form is worth trying.
pub(super) fn over_fold_budget(layer: &Layer) -> bool {
    layer.op != "Conv" && layer.w.data.len() * 4 > TRACT_FOLD_BUDGET
}

/// Axis of output channels in the stored weight, and their count.
pub(super) fn weight_axis(layer: &Layer) -> (usize, usize) {
    let axis = match layer.op.as_str() {
        "Conv" => 0,
        "Gemm" if layer.trans_b => 0,
        _ => 1,
    };
    // Dynamic MatMulInteger always sees K x N.
    let channels = match layer.op.as_str() {
        "Conv" => layer.w.dims[0],
        "Gemm" if layer.trans_b => layer.w.dims[0],
        _ => layer.w.dims[1],
    };
    (axis, channels)
}

/// [1, C, 1, 1...]: one value per channel, broadcast over a Conv output.
pub(super) fn conv_channel_dims(layer: &Layer, channels: usize) -> Vec<usize> {
    let mut dims = vec![1, channels];
    dims.extend(std::iter::repeat_n(1, layer.w.dims.len() - 2));
    dims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::graph::FloatTensor;

    #[test]
    fn only_weight_forms_within_the_fold_budget_fold_at_load() {
        let layer = |elements: usize| Layer {
            node: "n".into(),
            op: "MatMul".into(),
            weight: "w".into(),
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
            w: FloatTensor { dims: vec![elements], data: vec![0.0; elements] },
        };
        let small = layer(1024);
        let big = layer(TRACT_FOLD_BUDGET / 4 + 1);
        assert!(folds_at_load(Form::WeightInt8, &small));
        assert!(folds_at_load(Form::WeightInt8Block, &small));
        assert!(folds_at_load(Form::Int4Unpacked, &small));
        assert!(!folds_at_load(Form::WeightInt8, &big));
        assert!(!folds_at_load(Form::DynamicInt8, &small));
        assert!(!folds_at_load(Form::Int4NBits, &small));
        assert!(!folds_at_load(Form::WeightInt8Split, &small));
    }
}
