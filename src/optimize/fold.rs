//! The `fold` pass: constant folding, BatchNormalization into the Conv,
//! Gemm or MatMul (+ Add) before it, MatMul + Add into Gemm, Identity and
//! Dropout removal.
//!
//! Every rewrite is exact up to float rounding; the tests check outputs
//! within 1e-5 relative.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::PassError;
use super::graph::{self, FloatTensor, Namer};
use crate::engine::{EngineOptions, Model, ModelFormat, TensorData};

/// What the fold pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoldNotes {
    pub removed_identities: usize,
    pub folded_batch_norms: usize,
    pub fused_gemms: usize,
    pub folded_constants: usize,
}

/// Ops never folded although their inputs are constant: random ones, and
/// dequantization, which a quantize pass put there to keep the file small.
const KEEP_OPS: &[&str] = &[
    "DequantizeLinear",
    "QuantizeLinear",
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// Runs every fold rewrite once, in an order where each enables the next.
///
/// # Errors
/// Constant subgraphs tract cannot evaluate.
pub fn fold(model: &mut pb::ModelProto) -> Result<FoldNotes, PassError> {
    let mut notes = FoldNotes::default();
    let opsets = model.opset_import.clone();
    let g = graph::graph_mut(model)?;
    notes.removed_identities = remove_identities(g);
    notes.folded_constants = fold_constants(g, &opsets)?;
    notes.folded_batch_norms = fold_batch_norms(g)?;
    notes.folded_batch_norms += fold_matmul_batch_norms(g)?;
    notes.fused_gemms = fuse_matmul_add(g)?;
    graph::remove_unused(g);
    Ok(notes)
}

/// Removes Identity, and Dropout whose mask nobody reads (inference
/// Dropout is the identity).
fn remove_identities(g: &mut pb::GraphProto) -> usize {
    let mut removed = 0;
    loop {
        let outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        let inputs: HashSet<String> = g.input.iter().map(|o| o.name.clone()).collect();
        let counts = graph::use_counts(g);
        let found = g.node.iter().position(|n| {
            let passthrough = n.op_type == "Identity"
                || (n.op_type == "Dropout"
                    && n.output.get(1).is_none_or(|m| m.is_empty() || !counts.contains_key(m))
                    // A training_mode input could switch Dropout on.
                    && n.input.len() < 3);
            let (Some(src), Some(dst)) = (n.input.first(), n.output.first()) else { return false };
            // When both ends are interface names, one must stay a copy.
            passthrough
                && !(outputs.contains(dst) && (inputs.contains(src) || outputs.contains(src)))
        });
        let Some(i) = found else { break };
        let n = g.node.remove(i);
        let (src, dst) = (n.input[0].clone(), n.output[0].clone());
        if outputs.contains(&dst) {
            // Keep the output name: the producer of `src` now writes `dst`.
            for m in &mut g.node {
                for o in &mut m.output {
                    if *o == src {
                        o.clone_from(&dst);
                    }
                }
            }
            graph::replace_uses(g, &src, &dst);
            for t in &mut g.initializer {
                if t.name == src {
                    t.name.clone_from(&dst);
                }
            }
        } else {
            graph::replace_uses(g, &dst, &src);
        }
        removed += 1;
    }
    removed
}

/// Evaluates nodes whose inputs are all constant (with tract) and replaces
/// them with initializers.
fn fold_constants(
    g: &mut pb::GraphProto,
    opsets: &[pb::OperatorSetIdProto],
) -> Result<usize, PassError> {
    let mut constant: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    // Values computed from 8- or 4-bit weights: folding them would expand a
    // quantized weight back to float and undo the quantize pass.
    let mut compressed: HashSet<String> = g
        .initializer
        .iter()
        .filter(|t| matches!(t.data_type, graph::INT8 | graph::UINT8))
        .map(|t| t.name.clone())
        .collect();
    let mut foldable = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let all_const = n.input.iter().all(|x| x.is_empty() || constant.contains(x));
        if n.input.iter().any(|x| compressed.contains(x)) {
            compressed.extend(n.output.iter().cloned());
            continue;
        }
        if all_const && !KEEP_OPS.contains(&n.op_type.as_str()) && n.domain.is_empty() {
            foldable.push(i);
            constant.extend(n.output.iter().cloned());
        }
    }
    if foldable.is_empty() {
        return Ok(0);
    }
    let folded: HashSet<usize> = foldable.iter().copied().collect();
    let produced: HashSet<&String> = foldable.iter().flat_map(|i| &g.node[*i].output).collect();
    // Values the rest of the graph reads from the folded part.
    let mut wanted: Vec<String> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if folded.contains(&i) {
            continue;
        }
        for x in &n.input {
            if produced.contains(x) && !wanted.contains(x) {
                wanted.push(x.clone());
            }
        }
    }
    for o in &g.output {
        if produced.contains(&o.name) && !wanted.contains(&o.name) {
            wanted.push(o.name.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(0);
    }
    let sub = pb::ModelProto {
        ir_version: 8,
        opset_import: opsets.to_vec(),
        graph: Some(pb::GraphProto {
            name: "constants".into(),
            node: foldable.iter().map(|i| g.node[*i].clone()).collect(),
            initializer: g.initializer.clone(),
            output: wanted
                .iter()
                .map(|w| pb::ValueInfoProto { name: w.clone(), ..Default::default() })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let evaluated = evaluate_constants(&sub)
        .map_err(|reason| PassError::Rewrite(format!("evaluating constant subgraphs: {reason}")))?;
    let mut index = 0;
    g.node = std::mem::take(&mut g.node)
        .into_iter()
        .filter(|_| {
            let keep = !folded.contains(&index);
            index += 1;
            keep
        })
        .collect();
    for (name, t) in wanted.iter().zip(evaluated) {
        g.initializer.push(to_initializer(name, t)?);
    }
    Ok(foldable.len())
}

fn evaluate_constants(sub: &pb::ModelProto) -> Result<Vec<crate::engine::Tensor>, String> {
    let model = Model::load(&graph::encode(sub), ModelFormat::Onnx, &EngineOptions::default())
        .map_err(|e| e.to_string())?;
    model.run(&[]).map_err(|e| e.to_string())
}

fn to_initializer(name: &str, t: crate::engine::Tensor) -> Result<pb::TensorProto, PassError> {
    let code = match t.data {
        TensorData::F32(_) => graph::FLOAT,
        TensorData::I64(_) => graph::INT64,
        TensorData::I32(_) => graph::INT32,
        TensorData::I8(_) => graph::INT8,
        TensorData::U8(_) => graph::UINT8,
        TensorData::F64(_) => 11,
        TensorData::Bool(_) => 9,
        TensorData::F16(_) => 10,
        #[allow(unreachable_patterns)]
        _ => return Err(PassError::Rewrite(format!("constant {name:?} has an unsupported type"))),
    };
    Ok(graph::bytes_tensor(name, code, &t.shape, t.data.to_le_bytes()))
}

/// BatchNormalization(Conv(x, W, b)) -> Conv(x, W', b') and the same for
/// Gemm, when the BN's statistics are constant and the Conv/Gemm output
/// feeds only the BN.
fn fold_batch_norms(g: &mut pb::GraphProto) -> Result<usize, PassError> {
    let mut count = 0;
    let mut namer = Namer::new(g);
    loop {
        let inits = graph::initializers(g);
        let counts = graph::use_counts(g);
        let producer = graph::producers(g);
        let candidate = g.node.iter().enumerate().find_map(|(bi, bn)| {
            if bn.op_type != "BatchNormalization" || bn.input.len() < 5 || bn.output.len() != 1 {
                return None;
            }
            if !bn.input[1..5].iter().all(|x| inits.contains_key(x)) {
                return None;
            }
            let pi = *producer.get(&bn.input[0])?;
            let p = &g.node[pi];
            let weight_const = p.input.get(1).is_some_and(|w| inits.contains_key(w));
            let bias_ok = p.input.get(2).is_none_or(|b| b.is_empty() || inits.contains_key(b));
            let single_use = counts.get(&bn.input[0]) == Some(&1);
            let kind_ok = p.op_type == "Conv"
                || (p.op_type == "Gemm" && graph::get_float(p, "beta", 1.0) == 1.0);
            (kind_ok && weight_const && bias_ok && single_use).then_some((bi, pi))
        });
        let Some((bi, pi)) = candidate else { break };
        let bn = g.node[bi].clone();
        let eps = graph::get_float(&bn, "epsilon", 1e-5);
        let read = |name: &str| -> Result<FloatTensor, PassError> {
            let i = inits[name];
            Ok(graph::read_f32(&g.initializer[i])?)
        };
        let (scale, shift, mean, var) =
            (read(&bn.input[1])?, read(&bn.input[2])?, read(&bn.input[3])?, read(&bn.input[4])?);
        let channels = scale.data.len();
        let p = g.node[pi].clone();
        let w = read(&p.input[1])?;
        let trans_b = graph::get_int(&p, "transB", 0) == 1;
        let out_axis_len = match p.op_type.as_str() {
            "Conv" => w.dims.first().copied().unwrap_or(0),
            _ if trans_b => w.dims.first().copied().unwrap_or(0),
            _ => w.dims.get(1).copied().unwrap_or(0),
        };
        if channels == 0
            || out_axis_len != channels
            || [&shift, &mean, &var].iter().any(|t| t.data.len() != channels)
        {
            break;
        }
        let s: Vec<f32> =
            (0..channels).map(|c| scale.data[c] / (var.data[c] + eps).sqrt()).collect();
        let mut new_w = w.data.clone();
        if p.op_type == "Conv" || trans_b {
            let per = new_w.len() / channels;
            for (c, chunk) in new_w.chunks_mut(per).enumerate() {
                chunk.iter_mut().for_each(|v| *v *= s[c]);
            }
        } else {
            for (i, v) in new_w.iter_mut().enumerate() {
                *v *= s[i % channels];
            }
        }
        let old_b = match p.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => {
                let b = read(b)?;
                if b.data.len() == channels {
                    b.data
                } else if b.data.len() == 1 {
                    vec![b.data[0]; channels]
                } else {
                    break;
                }
            }
            None => vec![0.0; channels],
        };
        let new_b: Vec<f32> =
            (0..channels).map(|c| (old_b[c] - mean.data[c]) * s[c] + shift.data[c]).collect();
        let w_name = namer.fresh(&format!("{}_bnfolded", p.input[1]));
        let b_name = namer.fresh(&format!("{}_bnfolded_bias", p.name));
        g.initializer.push(graph::f32_tensor(&w_name, &w.dims, &new_w));
        g.initializer.push(graph::f32_tensor(&b_name, &[channels], &new_b));
        // alpha scales A*B', which already carries s; C = b' is outside it,
        // so the formulas above hold for any alpha when beta is 1.
        let node = &mut g.node[pi];
        node.input.truncate(1);
        node.input.push(w_name);
        node.input.push(b_name.clone());
        node.output[0].clone_from(&bn.output[0]);
        g.node.remove(bi);
        count += 1;
        graph::remove_unused(g);
    }
    Ok(count)
}

/// BatchNormalization(MatMul(x, W) [+ b]) -> MatMul(x, W') + b' when x has
/// rank 2, W is a 2-D float initializer [K, C] and b a constant of C (or 1,
/// or 1 x C) values.
///
/// BatchNormalization normalizes axis 1. For a rank-2 activation [N, C] that
/// is MatMul's output column axis, so the per-channel scale goes into W's
/// columns; for rank 3 and up ([N, T, C]) axis 1 is not the column axis and
/// the node is left alone, as it is when the rank is unknown.
fn fold_matmul_batch_norms(g: &mut pb::GraphProto) -> Result<usize, PassError> {
    let mut count = 0;
    let mut namer = Namer::new(g);
    // Candidates refused after reading their tensors, so the loop moves on.
    let mut refused: HashSet<String> = HashSet::new();
    loop {
        let inits = graph::initializers(g);
        let counts = graph::use_counts(g);
        let ranks = ranks(g);
        let producer = graph::producers(g);
        let is_float_init = |name: &String| {
            inits.get(name).is_some_and(|i| g.initializer[*i].data_type == graph::FLOAT)
        };
        // (BN index, MatMul index, Add index and its bias name)
        let candidate = g.node.iter().enumerate().find_map(|(bi, bn)| {
            if bn.op_type != "BatchNormalization"
                || bn.input.len() < 5
                || bn.output.len() != 1
                || refused.contains(&bn.name)
            {
                return None;
            }
            if !bn.input[1..5].iter().all(is_float_init) {
                return None;
            }
            if counts.get(&bn.input[0]) != Some(&1) {
                return None;
            }
            let pi = *producer.get(&bn.input[0])?;
            let (mi, add) = match g.node[pi].op_type.as_str() {
                "MatMul" => (pi, None),
                "Add" if g.node[pi].input.len() == 2 => {
                    let a = &g.node[pi];
                    let (m, b) = [(0, 1), (1, 0)].into_iter().find_map(|(m, b)| {
                        let mi = *producer.get(&a.input[m])?;
                        (g.node[mi].op_type == "MatMul" && is_float_init(&a.input[b]))
                            .then_some((mi, a.input[b].clone()))
                    })?;
                    if counts.get(&g.node[m].output[0]) != Some(&1) {
                        return None;
                    }
                    (m, Some((pi, b)))
                }
                _ => return None,
            };
            let mm = &g.node[mi];
            let w = g.initializer.get(*inits.get(mm.input.get(1)?)?)?;
            let ok = w.data_type == graph::FLOAT
                && w.dims.len() == 2
                && ranks.get(&mm.input[0]) == Some(&2);
            ok.then_some((bi, mi, add))
        });
        let Some((bi, mi, add)) = candidate else { break };
        let bn = g.node[bi].clone();
        let eps = graph::get_float(&bn, "epsilon", 1e-5);
        let read = |name: &str| -> Result<FloatTensor, PassError> {
            Ok(graph::read_f32(&g.initializer[inits[name]])?)
        };
        let (scale, shift, mean, var) =
            (read(&bn.input[1])?, read(&bn.input[2])?, read(&bn.input[3])?, read(&bn.input[4])?);
        let w = read(&g.node[mi].input[1])?;
        let channels = w.dims[1];
        let old_b = match &add {
            Some((_, b)) => {
                let b = read(b)?;
                let shape_ok = matches!(b.dims.as_slice(), [] | [_] | [1, _]);
                match b.data.len() {
                    n if shape_ok && n == channels => Some(b.data),
                    1 if shape_ok => Some(vec![b.data[0]; channels]),
                    _ => None,
                }
            }
            None => Some(vec![0.0; channels]),
        };
        let stats_ok = [&scale, &shift, &mean, &var].iter().all(|t| t.data.len() == channels);
        let Some(old_b) = old_b.filter(|_| stats_ok) else {
            refused.insert(bn.name.clone());
            continue;
        };
        let s: Vec<f32> =
            (0..channels).map(|c| scale.data[c] / (var.data[c] + eps).sqrt()).collect();
        // W is K x C: element i is in column i % C.
        let new_w: Vec<f32> = w.data.iter().enumerate().map(|(i, v)| v * s[i % channels]).collect();
        let new_b: Vec<f32> =
            (0..channels).map(|c| (old_b[c] - mean.data[c]) * s[c] + shift.data[c]).collect();
        let mm_name = g.node[mi].name.clone();
        let w_name = namer.fresh(&format!("{}_bnfolded", g.node[mi].input[1]));
        let b_name = namer.fresh(&format!("{mm_name}_bnfolded_bias"));
        g.initializer.push(graph::f32_tensor(&w_name, &w.dims, &new_w));
        g.initializer.push(graph::f32_tensor(&b_name, &[channels], &new_b));
        g.node[mi].input[1] = w_name;
        match add {
            Some((ai, bias)) => {
                let a = &mut g.node[ai];
                for i in &mut a.input {
                    if *i == bias {
                        i.clone_from(&b_name);
                    }
                }
                a.output[0].clone_from(&bn.output[0]);
                g.node.remove(bi);
            }
            None => {
                // The BN node becomes the Add, in its place (after the MatMul).
                let add_name = namer.fresh(&format!("{mm_name}_bnfolded_add"));
                g.node[bi] =
                    graph::node("Add", &add_name, &[&bn.input[0], &b_name], &[&bn.output[0]]);
            }
        }
        count += 1;
        graph::remove_unused(g);
    }
    Ok(count)
}

/// Rank of each value where it can be read from declarations or propagated
/// through ops that keep or fix it.
fn ranks(g: &pb::GraphProto) -> HashMap<String, usize> {
    let mut ranks: HashMap<String, usize> = HashMap::new();
    let shape_rank = |v: &pb::ValueInfoProto| match &v.r#type.as_ref()?.value {
        Some(pb::type_proto::Value::TensorType(t)) => t.shape.as_ref().map(|s| s.dim.len()),
        _ => None,
    };
    for v in g.input.iter().chain(&g.value_info) {
        if let Some(r) = shape_rank(v) {
            ranks.insert(v.name.clone(), r);
        }
    }
    for t in &g.initializer {
        ranks.insert(t.name.clone(), t.dims.len());
    }
    const SAME: &[&str] = &[
        "Relu",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Softmax",
        "LogSoftmax",
        "Erf",
        "Gelu",
        "Clip",
        "Cast",
        "Identity",
        "Dropout",
        "BatchNormalization",
        "Neg",
        "Abs",
        "Exp",
        "HardSigmoid",
        "HardSwish",
    ];
    for n in &g.node {
        let Some(out) = n.output.first() else { continue };
        let first = n.input.first().and_then(|i| ranks.get(i)).copied();
        let r = match n.op_type.as_str() {
            "Gemm" | "Flatten" => Some(2),
            op if SAME.contains(&op) => first,
            "Add" | "Sub" | "Mul" | "Div" | "MatMul" => {
                let a = first;
                let b = n.input.get(1).and_then(|i| ranks.get(i)).copied();
                match (a, b) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(r) = r {
            ranks.entry(out.clone()).or_insert(r);
        }
    }
    ranks
}

/// MatMul(x, W) + b -> Gemm(x, W, b) when x has rank 2, W is a 2-D
/// initializer and b a constant of N or 1xN values.
fn fuse_matmul_add(g: &mut pb::GraphProto) -> Result<usize, PassError> {
    let mut count = 0;
    loop {
        let inits = graph::initializers(g);
        let counts = graph::use_counts(g);
        let ranks = ranks(g);
        let producer = graph::producers(g);
        let candidate = g.node.iter().enumerate().find_map(|(ai, add)| {
            if add.op_type != "Add" || add.input.len() != 2 {
                return None;
            }
            let (mm_out, bias) = [(0, 1), (1, 0)].iter().find_map(|(m, b)| {
                let mi = *producer.get(&add.input[*m])?;
                (g.node[mi].op_type == "MatMul" && inits.contains_key(&add.input[*b]))
                    .then(|| (add.input[*m].clone(), add.input[*b].clone()))
            })?;
            let mi = producer[&mm_out];
            let mm = &g.node[mi];
            let w = g.initializer.get(*inits.get(mm.input.get(1)?)?)?;
            let n = *w.dims.get(1)?;
            let b = &g.initializer[inits[&bias]];
            let bias_ok = b.data_type == graph::FLOAT
                && (b.dims == [n] || b.dims == [1, n])
                && w.dims.len() == 2
                && w.data_type == graph::FLOAT;
            let x_rank2 = ranks.get(&mm.input[0]) == Some(&2);
            (bias_ok && x_rank2 && counts.get(&mm_out) == Some(&1)).then_some((ai, mi, bias))
        });
        let Some((ai, mi, bias)) = candidate else { break };
        let add = g.node.remove(ai);
        let mm = &mut g.node[mi];
        mm.op_type = "Gemm".into();
        mm.input.push(bias);
        mm.output[0].clone_from(&add.output[0]);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::graph::testing::{dense, model, run, values};
    use crate::optimize::graph::{f32_tensor, node};

    /// Relative to the largest magnitude of the output: logits near zero
    /// carry the absolute rounding error of their larger neighbours.
    fn close(a: &[f32], b: &[f32], rel: f32) {
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= rel * scale, "{x} vs {y} (scale {scale})");
        }
    }

    #[test]
    fn identity_and_dropout_disappear_and_output_name_stays() {
        let mut m = dense(
            2,
            2,
            vec![
                node("Identity", "id", &["x"], &["a"]),
                node("MatMul", "mm", &["a", "w"], &["b"]),
                node("Dropout", "drop", &["b"], &["y"]),
            ],
            vec![f32_tensor("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0])],
        );
        let notes = fold(&mut m).unwrap();
        assert_eq!(notes.removed_identities, 2);
        let g = graph::graph(&m).unwrap();
        assert_eq!(g.node.len(), 1);
        assert_eq!(g.node[0].input, vec!["x", "w"]);
        assert_eq!(g.node[0].output, vec!["y"]);
        // [1, 1] x [[1, 2], [3, 4]] = [4, 6]
        assert_eq!(run(&m, &[1, 2], &[1.0, 1.0]), vec![4.0, 6.0]);
    }

    #[test]
    fn batch_norm_folds_into_conv_by_hand() {
        // 1x1 conv, one input channel, two output channels: W = [2, 3], b = [1, 0].
        // BN: scale [1, 2], shift [0, 1], mean [1, 0], var [3, 0] (eps 1): s = [0.5, 2].
        let mut bn =
            node("BatchNormalization", "bn", &["c", "scale", "shift", "mean", "var"], &["y"]);
        bn.attribute.push(graph::float_attr("epsilon", 1.0));
        let mut m = model(
            ("x", &[None, Some(1), Some(1), Some(1)]),
            ("y", &[None, Some(2), Some(1), Some(1)]),
            vec![node("Conv", "conv", &["x", "w", "b"], &["c"]), bn],
            vec![
                f32_tensor("w", &[2, 1, 1, 1], &[2.0, 3.0]),
                f32_tensor("b", &[2], &[1.0, 0.0]),
                f32_tensor("scale", &[2], &[1.0, 2.0]),
                f32_tensor("shift", &[2], &[0.0, 1.0]),
                f32_tensor("mean", &[2], &[1.0, 0.0]),
                f32_tensor("var", &[2], &[3.0, 0.0]),
            ],
        );
        let before = run(&m, &[1, 1, 1, 1], &[5.0]);
        assert_eq!(fold(&mut m).unwrap().folded_batch_norms, 1);
        let g = graph::graph(&m).unwrap();
        assert_eq!(g.node.len(), 1);
        let inits = graph::initializers(g);
        let w = graph::read_f32(&g.initializer[inits[&g.node[0].input[1]]]).unwrap();
        let b = graph::read_f32(&g.initializer[inits[&g.node[0].input[2]]]).unwrap();
        assert_eq!(w.data, vec![1.0, 6.0]);
        // (1 - 1) * 0.5 + 0 = 0; (0 - 0) * 2 + 1 = 1
        assert_eq!(b.data, vec![0.0, 1.0]);
        // x = 5: conv = [11, 15]; BN = [(11-1)*0.5, 15*2+1] = [5, 31]
        assert_eq!(before, vec![5.0, 31.0]);
        assert_eq!(run(&m, &[1, 1, 1, 1], &[5.0]), before);
    }

    fn bn(eps: f32) -> pb::NodeProto {
        let mut bn =
            node("BatchNormalization", "bn", &["c", "scale", "shift", "mean", "var"], &["y"]);
        bn.attribute.push(graph::float_attr("epsilon", eps));
        bn
    }

    /// x [N, 2, 3] -> y [N, 2, 2] through a MatMul by a 3 x 2 weight `w`,
    /// then `then` and its constants: the last axis is not a channel axis.
    fn rank3(then: pb::NodeProto, inits: Vec<pb::TensorProto>) -> pb::ModelProto {
        model(
            ("x", &[None, Some(2), Some(3)]),
            ("y", &[None, Some(2), Some(2)]),
            vec![node("MatMul", "mm", &["x", "w"], &[&then.input[0]]), then],
            [vec![f32_tensor("w", &[3, 2], &values(6, 1, 1.0))], inits].concat(),
        )
    }

    /// BN with scale [1, 2], shift [0, 1], mean [1, 0], var [3, 0] and eps 1:
    /// s = scale / sqrt(var + eps) = [0.5, 2].
    fn bn_stats() -> Vec<pb::TensorProto> {
        vec![
            f32_tensor("scale", &[2], &[1.0, 2.0]),
            f32_tensor("shift", &[2], &[0.0, 1.0]),
            f32_tensor("mean", &[2], &[1.0, 0.0]),
            f32_tensor("var", &[2], &[3.0, 0.0]),
        ]
    }

    #[test]
    fn batch_norm_folds_into_matmul_and_add_by_hand() {
        // x [N, 2] x W [[1, 2], [3, 4]] + b [1, -1], then BN over the 2 columns.
        let mut m = dense(
            2,
            2,
            vec![
                node("MatMul", "mm", &["x", "w"], &["m"]),
                node("Add", "add", &["m", "b"], &["c"]),
                bn(1.0),
            ],
            [
                vec![
                    f32_tensor("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
                    f32_tensor("b", &[2], &[1.0, -1.0]),
                ],
                bn_stats(),
            ]
            .concat(),
        );
        // x = [1, 1]: MatMul [4, 6], Add [5, 5], BN [(5 - 1) * 0.5 + 0, 5 * 2 + 1] = [2, 11]
        let before = run(&m, &[1, 2], &[1.0, 1.0]);
        assert_eq!(before, vec![2.0, 11.0]);
        let notes = fold(&mut m).unwrap();
        assert_eq!((notes.folded_batch_norms, notes.fused_gemms), (1, 1));
        let g = graph::graph(&m).unwrap();
        assert_eq!(g.node.iter().map(|n| n.op_type.as_str()).collect::<Vec<_>>(), vec!["Gemm"]);
        let inits = graph::initializers(g);
        let w = graph::read_f32(&g.initializer[inits[&g.node[0].input[1]]]).unwrap();
        let b = graph::read_f32(&g.initializer[inits[&g.node[0].input[2]]]).unwrap();
        // Columns times s: [[0.5, 4], [1.5, 8]]; b' = (b - mean) * s + shift = [0, -1]
        assert_eq!(w.data, vec![0.5, 4.0, 1.5, 8.0]);
        assert_eq!(b.data, vec![0.0, -1.0]);
        assert_eq!(run(&m, &[1, 2], &[1.0, 1.0]), before);
    }

    #[test]
    fn batch_norm_after_a_bare_matmul_folds_within_1e5() {
        // MatMul 3 -> 2 without bias; the BN becomes the Add of b'.
        let mut m = dense(
            3,
            2,
            vec![node("MatMul", "mm", &["x", "w"], &["c"]), bn(1e-5)],
            [vec![f32_tensor("w", &[3, 2], &values(6, 1, 1.0))], bn_stats()].concat(),
        );
        // var 0 + eps 1e-5: a large s on column 1, the hardest case for rounding.
        let x = values(4 * 3, 2, 1.0);
        let before = run(&m, &[4, 3], &x);
        assert_eq!(fold(&mut m).unwrap().folded_batch_norms, 1);
        let g = graph::graph(&m).unwrap();
        assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
        close(&run(&m, &[4, 3], &x), &before, 1e-5);
    }

    #[test]
    fn batch_norm_after_a_rank3_matmul_is_left_alone() {
        // [N, T, C]: BN's channel axis is T, not MatMul's output columns.
        let mut m = rank3(bn(1.0), bn_stats());
        assert_eq!(fold(&mut m).unwrap().folded_batch_norms, 0);
        let g = graph::graph(&m).unwrap();
        assert!(g.node.iter().any(|n| n.op_type == "BatchNormalization"));
    }

    #[test]
    fn matmul_add_becomes_gemm_and_constants_fold() {
        let mut m = dense(
            3,
            2,
            vec![
                node("Transpose", "t", &["wt"], &["w"]),
                node("MatMul", "mm", &["x", "w"], &["m"]),
                node("Add", "add", &["m", "b"], &["y"]),
            ],
            vec![
                f32_tensor("wt", &[2, 3], &values(6, 1, 1.0)),
                f32_tensor("b", &[2], &[0.5, -0.5]),
            ],
        );
        let x = values(6, 2, 1.0);
        let before = run(&m, &[2, 3], &x);
        let notes = fold(&mut m).unwrap();
        assert_eq!((notes.folded_constants, notes.fused_gemms), (1, 1));
        let g = graph::graph(&m).unwrap();
        assert_eq!(g.node.iter().map(|n| n.op_type.as_str()).collect::<Vec<_>>(), vec!["Gemm"]);
        assert_eq!(g.initializer.iter().find(|t| t.name == "w").unwrap().dims, vec![3, 2]);
        close(&run(&m, &[2, 3], &x), &before, 1e-6);
    }

    #[test]
    fn matmul_add_on_rank3_input_is_left_alone() {
        let add = node("Add", "add", &["m", "b"], &["y"]);
        let mut m = rank3(add, vec![f32_tensor("b", &[2], &[0.5, -0.5])]);
        assert_eq!(fold(&mut m).unwrap().fused_gemms, 0);
    }

    #[test]
    fn real_cnn_with_batch_norm_folds_within_1e5() {
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/digits-cnn-bn.onnx"))
                .unwrap();
        let mut m = graph::decode(&bytes).unwrap();
        let count_bn = |m: &pb::ModelProto| {
            graph::graph(m)
                .unwrap()
                .node
                .iter()
                .filter(|n| n.op_type == "BatchNormalization")
                .count()
        };
        assert!(count_bn(&m) > 0);
        let original = m.clone();
        let notes = fold(&mut m).unwrap();
        assert_eq!(count_bn(&m), 0, "{notes:?}");
        let x = values(3 * 64, 3, 1.0).iter().map(|v| v.abs()).collect::<Vec<_>>();
        let a = run(&original, &[3, 1, 8, 8], &x);
        let b = run(&m, &[3, 1, 8, 8], &x);
        close(&a, &b, 1e-5);
    }
}
