//! The `prune` pass: unstructured magnitude pruning, and structured removal
//! of hidden units (MatMul/Gemm) and Conv output channels that really
//! shrinks the graph.

use std::collections::HashMap;

use tract_onnx::pb;

use super::PassError;
use super::graph::{self, FloatTensor};
use crate::crd::recipe::{Norm, Prune, PruneMethod};

/// Element-wise ops a hidden unit passes through unchanged in position.
const CHANNELWISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "Erf",
    "Identity",
    "Dropout",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Clip",
    "MaxPool",
    "AveragePool",
];

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerSparsity {
    pub node: String,
    pub parameters: usize,
    pub zeros: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub node: String,
    pub next: String,
    pub kept: usize,
    pub removed: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneNotes {
    pub method: PruneMethod,
    /// Magnitude: zeros over parameters of the pruned layers.
    pub sparsity: f64,
    pub layers: Vec<LayerSparsity>,
    /// Structured: units or channels removed per layer pair.
    pub removed: Vec<Removed>,
}

/// The prune pass.
///
/// # Errors
/// Malformed weights.
pub fn prune(model: &mut pb::ModelProto, p: &Prune) -> Result<PruneNotes, PassError> {
    let g = graph::graph_mut(model)?;
    match p.method {
        PruneMethod::Magnitude => magnitude(g, p),
        PruneMethod::Structured => structured(g, p),
    }
}

fn weight_layers(g: &pb::GraphProto, skip: &[String]) -> Vec<(String, usize)> {
    let inits = graph::initializers(g);
    g.node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "MatMul" | "Gemm" | "Conv"))
        .filter(|n| !skip.iter().any(|s| *s == n.name || Some(s) == n.input.get(1)))
        .filter_map(|n| {
            let i = *inits.get(n.input.get(1)?)?;
            let t = &g.initializer[i];
            (t.data_type == graph::FLOAT && t.dims.len() >= 2).then(|| (n.name.clone(), i))
        })
        .collect()
}

/// Indices of the `k` smallest magnitudes (ties broken by position, so the
/// count is exact).
fn smallest(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].abs().total_cmp(&values[*b].abs()).then(a.cmp(b)));
    order.truncate(k);
    order
}

fn magnitude(g: &mut pb::GraphProto, p: &Prune) -> Result<PruneNotes, PassError> {
    let layers = weight_layers(g, &p.skip);
    let mut weights: Vec<FloatTensor> = layers
        .iter()
        .map(|(_, i)| graph::read_f32(&g.initializer[*i]))
        .collect::<Result<_, _>>()?;
    if p.global {
        let all: Vec<f32> = weights.iter().flat_map(|w| w.data.iter().copied()).collect();
        let k = (all.len() as f64 * p.sparsity).round() as usize;
        let mut offsets = Vec::new();
        let mut o = 0;
        for w in &weights {
            offsets.push(o);
            o += w.data.len();
        }
        for flat in smallest(&all, k) {
            let layer = offsets.partition_point(|start| *start <= flat) - 1;
            weights[layer].data[flat - offsets[layer]] = 0.0;
        }
    } else {
        for w in &mut weights {
            let k = (w.data.len() as f64 * p.sparsity).round() as usize;
            for i in smallest(&w.data, k) {
                w.data[i] = 0.0;
            }
        }
    }
    let mut notes =
        PruneNotes { method: p.method, sparsity: 0.0, layers: Vec::new(), removed: Vec::new() };
    let (mut zeros, mut total) = (0, 0);
    for ((node, i), w) in layers.iter().zip(&weights) {
        let name = g.initializer[*i].name.clone();
        g.initializer[*i] = graph::f32_tensor(&name, &w.dims, &w.data);
        let z = w.data.iter().filter(|v| **v == 0.0).count();
        zeros += z;
        total += w.data.len();
        notes.layers.push(LayerSparsity { node: node.clone(), parameters: w.data.len(), zeros: z });
    }
    notes.sparsity = if total == 0 { 0.0 } else { zeros as f64 / total as f64 };
    Ok(notes)
}

/// A weight seen as units: `unit_of(i)` is the output unit (column, row or
/// channel) of flat element `i`.
fn unit_norms(
    w: &FloatTensor,
    units: usize,
    unit_of: impl Fn(usize) -> usize,
    norm: Norm,
) -> Vec<f32> {
    let mut n = vec![0f32; units];
    for (i, v) in w.data.iter().enumerate() {
        n[unit_of(i)] += match norm {
            Norm::L1 => v.abs(),
            Norm::L2 => v * v,
        };
    }
    n
}

/// Keeps the elements whose unit along `axis` is in `keep` (sorted).
fn select(w: &FloatTensor, axis: usize, keep: &[usize], group: usize) -> FloatTensor {
    // `group` consecutive indices per unit along the axis (a Flatten after a
    // Conv maps one channel to H*W features).
    let outer: usize = w.dims[..axis].iter().product();
    let len = w.dims[axis];
    let inner: usize = w.dims[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(outer * keep.len() * group * inner);
    for o in 0..outer {
        for u in keep {
            for gi in 0..group {
                let a = u * group + gi;
                let start = (o * len + a) * inner;
                data.extend_from_slice(&w.data[start..start + inner]);
            }
        }
    }
    let mut dims = w.dims.clone();
    dims[axis] = keep.len() * group;
    FloatTensor { dims, data }
}

/// How the consumer reads the pruned units.
struct Next {
    node: usize,
    /// Axis of the consumer's weight that indexes the producer's units.
    axis: usize,
    /// Consecutive entries per unit along that axis.
    group: usize,
}

/// Follows a unit-preserving path from `value` to the next weighted layer.
/// Returns the nodes on the path (to fix their constants) and the consumer.
fn follow(
    g: &pb::GraphProto,
    start: &str,
    units: usize,
    inits: &HashMap<String, usize>,
    counts: &HashMap<String, usize>,
) -> Option<(Vec<usize>, Next)> {
    let outputs: Vec<&String> = g.output.iter().map(|o| &o.name).collect();
    let mut value = start.to_string();
    let mut path = Vec::new();
    let mut conv_source = false;
    loop {
        // A path longer than the graph goes round a cycle.
        if path.len() > g.node.len() || counts.get(&value) != Some(&1) || outputs.contains(&&value)
        {
            return None;
        }
        let (i, n) = g.node.iter().enumerate().find(|(_, n)| n.input.contains(&value))?;
        match n.op_type.as_str() {
            op if CHANNELWISE.contains(&op) && n.input[0] == value => {
                if matches!(op, "MaxPool" | "AveragePool") {
                    conv_source = true;
                }
                path.push(i);
                value = n.output[0].clone();
            }
            "Add" => {
                // A bias add: the other operand a constant of `units` values.
                let other = n.input.iter().find(|x| **x != value)?;
                let t = &g.initializer[*inits.get(other)?];
                let count = t.dims.iter().try_fold(1i64, |n, d| n.checked_mul(*d));
                if count != i64::try_from(units).ok() {
                    return None;
                }
                path.push(i);
                value = n.output[0].clone();
            }
            "Flatten" if graph::get_int(n, "axis", 1) == 1 => {
                path.push(i);
                value = n.output[0].clone();
                conv_source = true;
            }
            "MatMul" | "Gemm" | "Conv" if n.input[0] == value => {
                let w = &g.initializer[*inits.get(n.input.get(1)?)?];
                if w.data_type != graph::FLOAT {
                    return None;
                }
                let trans_b = graph::get_int(n, "transB", 0) == 1;
                let dim = |axis: usize| w.dims.get(axis).and_then(|d| usize::try_from(*d).ok());
                let (axis, len) = match n.op_type.as_str() {
                    "Conv" if graph::get_int(n, "group", 1) == 1 => (1, dim(1)?),
                    "Conv" => return None,
                    "Gemm" if graph::get_int(n, "transA", 0) != 0 => return None,
                    "Gemm" if trans_b => (1, dim(1)?),
                    _ if w.dims.len() == 2 => (0, dim(0)?),
                    _ => return None,
                };
                if len % units != 0 || (len != units && !conv_source) {
                    return None;
                }
                return Some((path, Next { node: i, axis, group: len / units }));
            }
            _ => return None,
        }
    }
}

fn structured(g: &mut pb::GraphProto, p: &Prune) -> Result<PruneNotes, PassError> {
    let mut notes = PruneNotes {
        method: p.method,
        sparsity: p.sparsity,
        layers: Vec::new(),
        removed: Vec::new(),
    };
    let candidates: Vec<String> = weight_layers(g, &p.skip).into_iter().map(|(n, _)| n).collect();
    for name in candidates {
        let inits = graph::initializers(g);
        let counts = graph::use_counts(g);
        let Some(ai) = g.node.iter().position(|n| n.name == name) else { continue };
        let a = g.node[ai].clone();
        let w = graph::read_f32(&g.initializer[inits[&a.input[1]]])?;
        let trans_b = graph::get_int(&a, "transB", 0) == 1;
        // Axis of A's weight along its output units.
        let out_axis = match a.op_type.as_str() {
            "Conv" if graph::get_int(&a, "group", 1) != 1 => continue,
            "Conv" => 0,
            "Gemm" if trans_b => 0,
            _ if w.dims.len() == 2 => 1,
            _ => continue,
        };
        let Some(&units) = w.dims.get(out_axis).filter(|u| **u > 0) else { continue };
        let Some((path, next)) = follow(g, &a.output[0], units, &inits, &counts) else { continue };
        let keep_count = units - ((units as f64 * p.sparsity).floor() as usize).min(units - 1);
        if keep_count == units {
            continue;
        }
        let inner: usize = w.dims[out_axis + 1..].iter().product();
        let norms = unit_norms(&w, units, |i| (i / inner) % units, p.norm);
        let mut order: Vec<usize> = (0..units).collect();
        order.sort_by(|x, y| norms[*y].total_cmp(&norms[*x]).then(x.cmp(y)));
        let mut keep: Vec<usize> = order[..keep_count].to_vec();
        keep.sort_unstable();
        // A's weight and bias.
        let new_w = select(&w, out_axis, &keep, 1);
        replace_init(g, &a.input[1], &new_w);
        if let Some(b) = a.input.get(2).filter(|b| !b.is_empty()) {
            let bias = graph::read_f32(&g.initializer[graph::initializers(g)[b]])?;
            if bias.data.len() == units {
                let flat = FloatTensor { dims: vec![units], data: bias.data };
                let sel = select(&flat, 0, &keep, 1);
                let dims =
                    bias.dims.iter().map(|d| if *d == units { keep_count } else { *d }).collect();
                replace_init(g, b, &FloatTensor { dims, data: sel.data });
            }
        }
        // Bias adds on the path.
        for i in &path {
            let n = g.node[*i].clone();
            if n.op_type != "Add" {
                continue;
            }
            let inits = graph::initializers(g);
            for x in &n.input {
                if let Some(ti) = inits.get(x) {
                    let t = graph::read_f32(&g.initializer[*ti])?;
                    let flat = FloatTensor { dims: vec![units], data: t.data };
                    let sel = select(&flat, 0, &keep, 1);
                    let dims =
                        t.dims.iter().map(|d| if *d == units { keep_count } else { *d }).collect();
                    replace_init(g, x, &FloatTensor { dims, data: sel.data });
                }
            }
        }
        // The consumer's weight.
        let b_node = g.node[next.node].clone();
        let bw = graph::read_f32(&g.initializer[graph::initializers(g)[&b_node.input[1]]])?;
        let new_bw = select(&bw, next.axis, &keep, next.group);
        replace_init(g, &b_node.input[1], &new_bw);
        notes.removed.push(Removed {
            node: a.name.clone(),
            next: b_node.name.clone(),
            kept: keep_count,
            removed: units - keep_count,
        });
    }
    // Declared intermediate shapes are now wrong; they are optional hints.
    g.value_info.clear();
    Ok(notes)
}

fn replace_init(g: &mut pb::GraphProto, name: &str, t: &FloatTensor) {
    if let Some(slot) = g.initializer.iter_mut().find(|x| x.name == name) {
        *slot = graph::f32_tensor(name, &t.dims, &t.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::graph::testing::{dense, model, run, values};
    use crate::optimize::graph::{f32_tensor, node};

    fn prune_spec(method: PruneMethod, sparsity: f64) -> Prune {
        Prune { method, sparsity, global: false, norm: Norm::L1, skip: Vec::new() }
    }

    #[test]
    fn magnitude_zeroes_the_smallest_by_hand() {
        let mut m = dense(
            2,
            2,
            vec![node("MatMul", "mm", &["x", "w"], &["y"])],
            vec![f32_tensor("w", &[2, 2], &[0.1, -3.0, 2.0, -0.2])],
        );
        let notes = prune(&mut m, &prune_spec(PruneMethod::Magnitude, 0.5)).unwrap();
        let w = graph::read_f32(&graph::graph(&m).unwrap().initializer[0]).unwrap();
        assert_eq!(w.data, vec![0.0, -3.0, 2.0, 0.0]);
        assert_eq!(notes.sparsity, 0.5);
    }

    #[test]
    fn global_magnitude_uses_one_threshold_and_skip_is_honoured() {
        let mut m = dense(
            2,
            2,
            vec![
                node("MatMul", "a", &["x", "w1"], &["h"]),
                node("MatMul", "b", &["h", "w2"], &["y"]),
            ],
            vec![
                f32_tensor("w1", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
                f32_tensor("w2", &[2, 2], &[5.0, 6.0, 7.0, 8.0]),
            ],
        );
        let mut spec = prune_spec(PruneMethod::Magnitude, 0.5);
        spec.global = true;
        let notes = prune(&mut m.clone(), &spec).unwrap();
        // The four smallest of all eight are all in w1.
        assert_eq!(notes.layers[0].zeros, 4);
        assert_eq!(notes.layers[1].zeros, 0);
        spec.global = false;
        spec.skip = vec!["a".into()];
        let notes = prune(&mut m, &spec).unwrap();
        assert_eq!(notes.layers.len(), 1);
        assert_eq!(notes.layers[0].node, "b");
    }

    #[test]
    fn structured_removes_a_neuron_by_hand() {
        // x [b,2] -> W1 [2,3] -> Relu -> W2 [3,1]. Hidden unit 1 has the
        // smallest column of W1 (L1 0.2): removing it drops column 1 of W1 and
        // row 1 of W2.
        let mut m = dense(
            2,
            1,
            vec![
                node("MatMul", "a", &["x", "w1"], &["h"]),
                node("Add", "bias", &["h", "b1"], &["hb"]),
                node("Relu", "r", &["hb"], &["z"]),
                node("MatMul", "b", &["z", "w2"], &["y"]),
            ],
            vec![
                f32_tensor("w1", &[2, 3], &[1.0, 0.1, -2.0, 1.0, 0.1, 3.0]),
                f32_tensor("b1", &[3], &[0.5, 0.25, 0.0]),
                f32_tensor("w2", &[3, 1], &[1.0, 10.0, -1.0]),
            ],
        );
        let notes = prune(&mut m, &prune_spec(PruneMethod::Structured, 0.34)).unwrap();
        assert_eq!(
            notes.removed,
            vec![Removed { node: "a".into(), next: "b".into(), kept: 2, removed: 1 }]
        );
        let g = graph::graph(&m).unwrap();
        let get =
            |n: &str| graph::read_f32(g.initializer.iter().find(|t| t.name == n).unwrap()).unwrap();
        assert_eq!(get("w1"), FloatTensor { dims: vec![2, 2], data: vec![1.0, -2.0, 1.0, 3.0] });
        assert_eq!(get("b1").data, vec![0.5, 0.0]);
        assert_eq!(get("w2"), FloatTensor { dims: vec![2, 1], data: vec![1.0, -1.0] });
        // x = [1, 1]: h = [2, 1] + [0.5, 0] -> relu [2.5, 1] -> 2.5 - 1 = 1.5
        assert_eq!(run(&m, &[1, 2], &[1.0, 1.0]), vec![1.5]);
    }

    #[test]
    fn structured_conv_channels_through_flatten() {
        // Conv 1->4 channels (1x1) on a 2x2 image, Relu, Flatten, Gemm to 2.
        let mut gemm = node("Gemm", "fc", &["f", "wf"], &["y"]);
        gemm.attribute.push(graph::int_attr("transB", 1));
        let mut m = model(
            ("x", &[None, Some(1), Some(2), Some(2)]),
            ("y", &[None, Some(2)]),
            vec![
                node("Conv", "conv", &["x", "wc", "bc"], &["c"]),
                node("Relu", "r", &["c"], &["rc"]),
                node("Flatten", "flat", &["rc"], &["f"]),
                gemm,
            ],
            vec![
                f32_tensor("wc", &[4, 1, 1, 1], &[1.0, 0.01, 2.0, -0.02]),
                f32_tensor("bc", &[4], &[0.0, 0.0, 0.0, 0.0]),
                f32_tensor("wf", &[2, 16], &values(32, 5, 1.0)),
            ],
        );
        let x = [1.0, 2.0, 3.0, 4.0];
        let before = run(&m, &[1, 1, 2, 2], &x);
        let notes = prune(&mut m, &prune_spec(PruneMethod::Structured, 0.5)).unwrap();
        assert_eq!(notes.removed[0].kept, 2);
        let g = graph::graph(&m).unwrap();
        let wf = graph::read_f32(g.initializer.iter().find(|t| t.name == "wf").unwrap()).unwrap();
        assert_eq!(wf.dims, vec![2, 8]);
        // Channels 1 and 3 were nearly dead (weights 0.01, -0.02; inputs <= 4).
        let after = run(&m, &[1, 1, 2, 2], &x);
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() < 0.2, "{before:?} vs {after:?}");
        }
        // Kept channels are exactly those two: wf columns 0..4 and 8..12.
        let all = values(32, 5, 1.0);
        assert_eq!(&wf.data[0..4], &all[0..4]);
        assert_eq!(&wf.data[4..8], &all[8..12]);
    }
}
