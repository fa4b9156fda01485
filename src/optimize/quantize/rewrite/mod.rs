//! The graph rewrite: each layer written in its chosen form.

use tract_onnx::pb;

use super::layout::{
    conv_channel_dims, int4_block, rows_nk, split_columns, transpose, weight_axis,
};
use super::math::{
    PRODUCT_WEIGHT_MAX, WEIGHT_ONLY_MAX, f16_exact, quantize_i4, quantize_i8, quantize_i8_blocks,
};
use super::{DEFAULT_INT4_BLOCK, Form, Layer, PassError};
use crate::optimize::graph::{self, FloatTensor, Namer};

/// Settings of one rewrite.
pub struct Settings {
    /// 4-bit block size.
    pub block: usize,
    /// int8 block size (`blockSize` on an int8 mode): the weight-only form
    /// becomes [`Form::WeightInt8Block`] and the static form's weight is
    /// blocked the same way; per output channel when `None`.
    pub int8_block: Option<usize>,
    pub stochastic: bool,
    pub seed: u64,
}

/// What one layer's rewrite adds to the graph: initializers and nodes,
/// named after its weight, and the pass's rounding generator.
struct Parts<'a> {
    namer: &'a mut Namer,
    base: &'a str,
    rng: &'a mut Option<fastrand::Rng>,
    inits: Vec<pb::TensorProto>,
    nodes: Vec<pb::NodeProto>,
}

impl Parts<'_> {
    fn fresh(&mut self, suffix: &str) -> String {
        self.namer.fresh(&format!("{}_{suffix}", self.base))
    }

    /// Fresh names for each suffix, reserved in order.
    fn fresh_n<const N: usize>(&mut self, suffixes: [&str; N]) -> [String; N] {
        suffixes.map(|s| self.fresh(s))
    }
}

/// How the new nodes take the layer's place.
enum Change {
    /// They compute the layer's output: the node goes.
    Replaced,
    /// They feed this rewired copy of the node, which stays.
    Rewired(pb::NodeProto),
}

/// Rewrites `layers` of a model in the given forms.
///
/// # Errors
/// Layers no longer found in the graph.
pub fn rewrite(
    model: &pb::ModelProto,
    layers: &[Layer],
    forms: &[Form],
    settings: &Settings,
) -> Result<pb::ModelProto, PassError> {
    let mut out = model.clone();
    let opset = graph::opset(&out);
    if opset < 13 {
        return Err(PassError::Unsupported(format!(
            "opset {opset} is below 13, the first with per-channel DequantizeLinear"
        )));
    }
    if forms.contains(&Form::Int4NBits) {
        graph::import_domain(&mut out, "com.microsoft", 1);
    }
    let g = graph::graph_mut(&mut out)?;
    let mut namer = Namer::new(g);
    // One generator for the whole pass, so a seed gives one result.
    let mut rng = settings.stochastic.then(|| fastrand::Rng::with_seed(settings.seed));
    for (layer, form) in layers.iter().zip(forms) {
        if *form == Form::Float {
            continue;
        }
        let index = g
            .node
            .iter()
            .position(|n| n.name == layer.node)
            .ok_or_else(|| PassError::Rewrite(format!("layer {:?} vanished", layer.node)))?;
        let mut parts = Parts {
            namer: &mut namer,
            base: &layer.weight,
            rng: &mut rng,
            inits: Vec::new(),
            nodes: Vec::new(),
        };
        let change = write_layer(g, &g.node[index], layer, *form, settings, &mut parts)?;
        let Parts { inits, nodes, .. } = parts;
        g.initializer.extend(inits);
        match change {
            Change::Replaced => {
                g.node.splice(index..=index, nodes);
            }
            Change::Rewired(node) => {
                g.node[index] = node;
                g.node.splice(index..index, nodes);
            }
        }
    }
    graph::remove_unused(g);
    Ok(out)
}

/// Writes one layer in `form` (not [`Form::Float`]).
fn write_layer(
    g: &pb::GraphProto,
    node: &pb::NodeProto,
    layer: &Layer,
    form: Form,
    settings: &Settings,
    parts: &mut Parts,
) -> Result<Change, PassError> {
    let mut node = node.clone();
    match form {
        Form::Float => Ok(Change::Rewired(node)),
        Form::WeightInt8Split => {
            weight_int8_split(g, &node, layer, parts)?;
            Ok(Change::Replaced)
        }
        Form::WeightInt8 | Form::WeightInt8Block | Form::StaticInt8 { .. } => {
            let is_static = matches!(form, Form::StaticInt8 { .. });
            let blocked =
                form == Form::WeightInt8Block || (is_static && settings.int8_block.is_some());
            // The static form's weight meets uint8 activations in ONNX
            // Runtime's fused integer product.
            let high = if is_static { PRODUCT_WEIGHT_MAX } else { WEIGHT_ONLY_MAX };
            node.input[1] = if blocked {
                let block = settings.int8_block.unwrap_or(DEFAULT_INT4_BLOCK);
                block_int8_weight(layer, block, high, parts)
            } else {
                channel_int8_weight(layer, high, parts)
            };
            if let Form::StaticInt8 { scale, zero_point } = form {
                node.input[0] = activation_qdq(&node.input[0], scale, zero_point, parts);
            }
            Ok(Change::Rewired(node))
        }
        Form::DynamicInt8 => {
            dynamic_int8(g, &node, layer, parts)?;
            Ok(Change::Replaced)
        }
        Form::Int4NBits => {
            int4_nbits(g, &node, layer, settings.block, parts)?;
            Ok(Change::Replaced)
        }
        Form::Int4Unpacked => {
            int4_unpacked(&mut node, layer, settings.block, parts);
            Ok(Change::Rewired(node))
        }
        Form::Int4Split => {
            int4_split(g, &node, layer, settings.block, parts)?;
            Ok(Change::Replaced)
        }
    }
}

/// `Int4Unpacked` in column blocks whose float weight fits tract's
/// constant-folding budget, one MatMul per block and a Concat, then the
/// bias (as [`weight_int8_split`]): each block unpacks to fp32 once at
/// load, where one big 4-bit weight would be unpacked at every run.
fn int4_split(
    g: &pb::GraphProto,
    node: &pb::NodeProto,
    layer: &Layer,
    block: usize,
    parts: &mut Parts,
) -> Result<(), PassError> {
    let (rows, n, k) = rows_nk(layer);
    let kn = transpose(&rows, n, k);
    drop(rows);
    let cols = split_columns(k);
    let alpha = layer.product_scale();
    let x = &node.input[0];
    let mut pieces = Vec::new();
    for c0 in (0..n).step_by(cols) {
        let c1 = (c0 + cols).min(n);
        let mut data = Vec::with_capacity(k * (c1 - c0));
        for r in 0..k {
            data.extend_from_slice(&kn[r * n + c0..r * n + c1]);
        }
        // The block as a K x width Gemm weight: alpha goes into its scales,
        // and it comes back in the K x width layout a MatMul reads.
        let piece = Layer {
            node: layer.node.clone(),
            op: "Gemm".into(),
            weight: layer.weight.clone(),
            trans_b: false,
            alpha,
            beta: 1.0,
            w: FloatTensor { dims: vec![k, c1 - c0], data },
        };
        let mut scratch = graph::node("Gemm", "", &[x, ""], &[]);
        int4_unpacked(&mut scratch, &piece, block, parts);
        let y = parts.fresh("part");
        parts.nodes.push(graph::node("MatMul", &y, &[x, &scratch.input[1]], &[&y]));
        pieces.push(y);
    }
    concat_columns(g, node, layer, &pieces, parts)
}

/// The tail of a split form: the column blocks `pieces` joined by a
/// Concat along the last axis, then the bias, into the layer's output.
fn concat_columns(
    g: &pb::GraphProto,
    node: &pb::NodeProto,
    layer: &Layer,
    pieces: &[String],
    parts: &mut Parts,
) -> Result<(), PassError> {
    let out = &node.output[0];
    let bias = bias_of(node);
    let cat_out = if bias.is_some() { parts.fresh("concat") } else { out.clone() };
    let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let cat_name = parts.fresh("concat_node");
    let mut cat = graph::node("Concat", &cat_name, &piece_refs, &[&cat_out]);
    cat.attribute.push(graph::int_attr("axis", -1));
    parts.nodes.push(cat);
    match bias {
        Some(bias) => add_bias(g, layer, false, &bias, &cat_out, out, parts),
        None => Ok(()),
    }
}

/// The layer's bias input, when it has one.
fn bias_of(node: &pb::NodeProto) -> Option<String> {
    node.input.get(2).filter(|b| !b.is_empty()).cloned()
}

/// The tail of a replacement with a bias: `y` plus the bias (as
/// [`scaled_bias`] shapes it) written to the layer's output `out`.
fn add_bias(
    g: &pb::GraphProto,
    layer: &Layer,
    conv: bool,
    bias: &str,
    y: &str,
    out: &str,
    parts: &mut Parts,
) -> Result<(), PassError> {
    let bias = scaled_bias(g, bias, layer, conv, parts)?;
    let add = parts.fresh("add");
    parts.nodes.push(graph::node("Add", &add, &[y, &bias], &[out]));
    Ok(())
}

/// `WeightInt8` in column blocks within the fold budget: one MatMul per
/// block, a Concat, then the bias.
fn weight_int8_split(
    g: &pb::GraphProto,
    node: &pb::NodeProto,
    layer: &Layer,
    parts: &mut Parts,
) -> Result<(), PassError> {
    let (rows, n, k) = rows_nk(layer);
    // K x N, columns = outputs; alpha goes into the scales.
    let kn = transpose(&rows, n, k);
    let (q, scales) = quantize_i8(&kn, n, |i| i % n, WEIGHT_ONLY_MAX, parts.rng);
    let alpha = layer.product_scale();
    let cols = split_columns(k);
    let x = &node.input[0];
    let mut pieces = Vec::new();
    for c0 in (0..n).step_by(cols) {
        let c1 = (c0 + cols).min(n);
        let w = c1 - c0;
        let mut block = Vec::with_capacity(k * w);
        for r in 0..k {
            block.extend(q[r * n + c0..r * n + c1].iter().map(|v| *v as u8));
        }
        let sc: Vec<f32> = scales[c0..c1].iter().map(|s| s * alpha).collect();
        let [qn, sn, zn, dq, y] = parts.fresh_n(["q", "scale", "zp", "dq", "part"]);
        parts.inits.push(graph::bytes_tensor(&qn, graph::INT8, &[k, w], block));
        parts.inits.push(graph::f32_tensor(&sn, &[w], &sc));
        parts.inits.push(graph::bytes_tensor(&zn, graph::INT8, &[w], vec![0; w]));
        let mut d = graph::node("DequantizeLinear", &dq, &[&qn, &sn, &zn], &[&dq]);
        d.attribute.push(graph::int_attr("axis", 1));
        parts.nodes.push(d);
        parts.nodes.push(graph::node("MatMul", &y, &[x, &dq], &[&y]));
        pieces.push(y);
    }
    concat_columns(g, node, layer, &pieces, parts)
}

/// The weight per output channel as int8 in [-`high`, `high`] +
/// `DequantizeLinear`; returns the dequantized weight's name.
fn channel_int8_weight(layer: &Layer, high: f32, parts: &mut Parts) -> String {
    let [q_name, s_name, z_name, dq] = parts.fresh_n(["q", "scale", "zp", "dq"]);
    let (axis, channels) = weight_axis(layer);
    let dims = &layer.w.dims;
    let per = dims[axis + 1..].iter().product::<usize>();
    let channel_of = |i: usize| (i / per) % channels;
    let (q, scales) = quantize_i8(&layer.w.data, channels, channel_of, high, parts.rng);
    parts.inits.push(graph::bytes_tensor(
        &q_name,
        graph::INT8,
        dims,
        q.iter().map(|v| *v as u8).collect(),
    ));
    parts.inits.push(graph::f32_tensor(&s_name, &[channels], &scales));
    parts.inits.push(graph::bytes_tensor(&z_name, graph::INT8, &[channels], vec![0; channels]));
    let mut dq_node = graph::node("DequantizeLinear", &dq, &[&q_name, &s_name, &z_name], &[&dq]);
    dq_node.attribute.push(graph::int_attr("axis", axis as i64));
    parts.nodes.push(dq_node);
    dq
}

/// `DynamicQuantizeLinear` + `MatMulInteger`/`ConvInteger`, the int32
/// result scaled back to float, then the bias.
fn dynamic_int8(
    g: &pb::GraphProto,
    node: &pb::NodeProto,
    layer: &Layer,
    parts: &mut Parts,
) -> Result<(), PassError> {
    let (_, channels) = weight_axis(layer);
    let conv = layer.op == "Conv";
    // MatMulInteger wants W as K x N; Gemm's transB is undone here.
    let (w_data, w_dims) = if !conv && layer.trans_b {
        let (rows, n, k) = rows_nk(layer);
        (transpose(&rows, n, k), vec![k, n])
    } else {
        (layer.w.data.clone(), layer.w.dims.clone())
    };
    let per = if conv { w_dims[1..].iter().product::<usize>() } else { 1 };
    let channel_of = |i: usize| if conv { i / per } else { i % channels };
    let (q, scales) = quantize_i8(&w_data, channels, channel_of, PRODUCT_WEIGHT_MAX, parts.rng);
    let scales: Vec<f32> = scales.iter().map(|s| s * layer.alpha).collect();
    let [wq, wz, xq, xs, xz] = parts.fresh_n(["q", "zp", "xq", "x_scale", "x_zp"]);
    let [acc, accf, scaled, ws] = parts.fresh_n(["acc", "acc_f", "acc_scaled", "scale"]);
    parts.inits.push(graph::bytes_tensor(
        &wq,
        graph::INT8,
        &w_dims,
        q.iter().map(|v| *v as u8).collect(),
    ));
    // Symmetric weights: one zero point of 0 serves every channel.
    parts.inits.push(graph::bytes_tensor(&wz, graph::INT8, &[], vec![0]));
    let ws_dims = if conv { conv_channel_dims(layer, channels) } else { vec![channels] };
    parts.inits.push(graph::f32_tensor(&ws, &ws_dims, &scales));
    let x = &node.input[0];
    parts.nodes.push(graph::node("DynamicQuantizeLinear", &xq, &[x], &[&xq, &xs, &xz]));
    let mut int_node = graph::node(
        if conv { "ConvInteger" } else { "MatMulInteger" },
        &node.name,
        &[&xq, &wq, &xz, &wz],
        &[&acc],
    );
    if conv {
        int_node.attribute = node.attribute.clone();
    }
    parts.nodes.push(int_node);
    let mut cast = graph::node("Cast", &accf, &[&acc], &[&accf]);
    cast.attribute.push(graph::int_attr("to", i64::from(graph::FLOAT)));
    parts.nodes.push(cast);
    parts.nodes.push(graph::node("Mul", &scaled, &[&accf, &xs], &[&scaled]));
    let out = &node.output[0];
    let bias = bias_of(node);
    let mul = parts.fresh("mul");
    let mul_out = if bias.is_some() { &mul } else { out };
    parts.nodes.push(graph::node("Mul", &mul, &[&scaled, &ws], &[mul_out]));
    match bias {
        Some(bias) => add_bias(g, layer, conv, &bias, &mul, out, parts),
        None => Ok(()),
    }
}

/// A layer's weight quantized to 4 bits: rows, blocks, and the scales
/// (alpha folded in, as f16 values).
struct Int4 {
    n: usize,
    k: usize,
    block: usize,
    blocks: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
}

impl Int4 {
    fn quantize(layer: &Layer, block: usize, rng: &mut Option<fastrand::Rng>) -> Int4 {
        let (rows, n, k) = rows_nk(layer);
        let block = int4_block(layer, block);
        let blocks = k.div_ceil(block);
        let (q, scales) = quantize_i4(&rows, k, block, rng);
        let alpha = layer.product_scale();
        let scales = scales.iter().map(|s| f16_exact(s * alpha)).collect();
        Int4 { n, k, block, blocks, q, scales }
    }
}

/// `MatMulNBits` 4-bit, then the bias.
fn int4_nbits(
    g: &pb::GraphProto,
    node: &pb::NodeProto,
    layer: &Layer,
    block: usize,
    parts: &mut Parts,
) -> Result<(), PassError> {
    let Int4 { n, k, block, blocks, q, scales } = Int4::quantize(layer, block, parts.rng);
    let [b_name, s_name] = parts.fresh_n(["q4", "scale"]);
    // MatMulNBits: byte j of a block holds elements 2j (low nibble) and
    // 2j+1 (high), stored as value + 8.
    let packed: Vec<u8> =
        q.chunks_exact(2).map(|p| ((p[0] + 8) as u8) | (((p[1] + 8) as u8) << 4)).collect();
    parts.inits.push(graph::bytes_tensor(&b_name, graph::UINT8, &[n, blocks, block / 2], packed));
    parts.inits.push(graph::f32_tensor(&s_name, &[n * blocks], &scales));
    let mm_out = parts.fresh("nbits");
    let x = &node.input[0];
    let mut nb = graph::node("MatMulNBits", &node.name, &[x, &b_name, &s_name], &[&mm_out]);
    nb.domain = "com.microsoft".into();
    for (a, v) in [("K", k), ("N", n), ("bits", 4), ("block_size", block)] {
        nb.attribute.push(graph::int_attr(a, v as i64));
    }
    parts.nodes.push(nb);
    let out = &node.output[0];
    match bias_of(node) {
        Some(bias) => add_bias(g, layer, false, &bias, &mm_out, out, parts),
        None => {
            let id = parts.fresh("out");
            parts.nodes.push(graph::node("Identity", &id, &[&mm_out], &[out]));
            Ok(())
        }
    }
}

/// The 4-bit weight unpacked by standard integer ops into `node`'s weight
/// input.
fn int4_unpacked(node: &mut pb::NodeProto, layer: &Layer, block: usize, parts: &mut Parts) {
    let Int4 { n, k, block, blocks, q, scales } = Int4::quantize(layer, block, parts.rng);
    let [b_name, s_name] = parts.fresh_n(["q4", "scale"]);
    // Byte j of a block holds element j (low nibble) and j + block/2
    // (high), so unpacking is two integer ops and one Concat, all folded
    // by tract at load.
    let half = block / 2;
    let mut packed = Vec::with_capacity(q.len() / 2);
    for b in q.chunks_exact(block) {
        for j in 0..half {
            packed.push(((b[j] + 8) as u8) | (((b[j + half] + 8) as u8) << 4));
        }
    }
    parts.inits.push(graph::bytes_tensor(&b_name, graph::UINT8, &[n, blocks, half], packed));
    parts.inits.push(graph::f32_tensor(&s_name, &[n, blocks, 1], &scales));
    let [sixteen, eight] = parts.fresh_n(["sixteen", "eight"]);
    parts.inits.push(graph::bytes_tensor(
        &sixteen,
        graph::INT32,
        &[],
        16i32.to_le_bytes().to_vec(),
    ));
    parts.inits.push(graph::f32_tensor(&eight, &[], &[8.0]));
    let [wide, hi, hi16, lo, both, f, centered, deq] =
        parts.fresh_n(["i32", "hi", "hi16", "lo", "nibbles", "f", "centered", "deq"]);
    let nodes = &mut parts.nodes;
    let mut c1 = graph::node("Cast", &wide, &[&b_name], &[&wide]);
    c1.attribute.push(graph::int_attr("to", i64::from(graph::INT32)));
    nodes.push(c1);
    nodes.push(graph::node("Div", &hi, &[&wide, &sixteen], &[&hi]));
    nodes.push(graph::node("Mul", &hi16, &[&hi, &sixteen], &[&hi16]));
    nodes.push(graph::node("Sub", &lo, &[&wide, &hi16], &[&lo]));
    let mut cat = graph::node("Concat", &both, &[&lo, &hi], &[&both]);
    cat.attribute.push(graph::int_attr("axis", 2));
    nodes.push(cat);
    let mut c2 = graph::node("Cast", &f, &[&both], &[&f]);
    c2.attribute.push(graph::int_attr("to", i64::from(graph::FLOAT)));
    nodes.push(c2);
    nodes.push(graph::node("Sub", &centered, &[&f, &eight], &[&centered]));
    nodes.push(graph::node("Mul", &deq, &[&centered, &s_name], &[&deq]));
    let [shape, nk] = parts.fresh_n(["shape", "nk"]);
    parts.inits.push(graph::i64_tensor(&shape, &[2], &[n as i64, (blocks * block) as i64]));
    parts.nodes.push(graph::node("Reshape", &nk, &[&deq, &shape], &[&nk]));
    node.input[1] = rows_to_layout(layer, nk, blocks * block, k, parts);
    if layer.op == "Gemm" {
        // alpha went into the scales.
        node.attribute.retain(|a| a.name != "alpha");
    }
}

/// QuantizeLinear + DequantizeLinear (uint8) on activation `x`; returns
/// the dequantized value's name.
fn activation_qdq(x: &str, scale: f32, zero_point: u8, parts: &mut Parts) -> String {
    let [xs, xz, xq, xdq] = parts.fresh_n(["x_scale", "x_zp", "x_q", "x_dq"]);
    parts.inits.push(graph::f32_tensor(&xs, &[], &[scale]));
    parts.inits.push(graph::bytes_tensor(&xz, graph::UINT8, &[], vec![zero_point]));
    parts.nodes.push(graph::node("QuantizeLinear", &xq, &[x, &xs, &xz], &[&xq]));
    parts.nodes.push(graph::node("DequantizeLinear", &xdq, &[&xq, &xs, &xz], &[&xdq]));
    xdq
}

/// Writes a layer's weight as block-wise int8 in standard opset-13 ops and
/// returns the name of the float weight they compute, in the layer's own
/// layout: int8 [N x blocks, block] -> DequantizeLinear (axis 0, one scale
/// per row = per block) -> Reshape [N, blocks x block] -> Slice to K when
/// padded -> Transpose to K x N (MatMul, Gemm without transB) or Reshape to
/// the Conv weight's dims. All constant: tract folds it at load while the
/// float weight fits its folding budget.
fn block_int8_weight(layer: &Layer, block: usize, high: f32, parts: &mut Parts) -> String {
    let (rows, n, k) = rows_nk(layer);
    let blocks = k.div_ceil(block);
    let (q, scales) = quantize_i8_blocks(&rows, k, block, high, parts.rng);
    let [qn, sn, zn, dq, nk] = parts.fresh_n(["q", "scale", "zp", "dq", "nk"]);
    parts.inits.push(graph::bytes_tensor(
        &qn,
        graph::INT8,
        &[n * blocks, block],
        q.iter().map(|v| *v as u8).collect(),
    ));
    parts.inits.push(graph::f32_tensor(&sn, &[n * blocks], &scales));
    parts.inits.push(graph::bytes_tensor(&zn, graph::INT8, &[n * blocks], vec![0; n * blocks]));
    let mut d = graph::node("DequantizeLinear", &dq, &[&qn, &sn, &zn], &[&dq]);
    d.attribute.push(graph::int_attr("axis", 0));
    parts.nodes.push(d);
    let shape = parts.fresh("nk_shape");
    parts.inits.push(graph::i64_tensor(&shape, &[2], &[n as i64, (blocks * block) as i64]));
    parts.nodes.push(graph::node("Reshape", &nk, &[&dq, &shape], &[&nk]));
    rows_to_layout(layer, nk, blocks * block, k, parts)
}

/// From a float weight `w_rows` of N rows of `padded` (whole blocks) to
/// the layer's own layout: Slice to K when padded, then Reshape to the
/// Conv weight's dims, as is for Gemm with transB, else Transpose to K x N.
/// Returns the weight's name.
fn rows_to_layout(
    layer: &Layer,
    mut w_rows: String,
    padded: usize,
    k: usize,
    parts: &mut Parts,
) -> String {
    if padded != k {
        let [starts, ends, axes, sliced] = parts.fresh_n(["starts", "ends", "axes", "sliced"]);
        parts.inits.push(graph::i64_tensor(&starts, &[1], &[0]));
        parts.inits.push(graph::i64_tensor(&ends, &[1], &[k as i64]));
        parts.inits.push(graph::i64_tensor(&axes, &[1], &[1]));
        parts.nodes.push(graph::node(
            "Slice",
            &sliced,
            &[&w_rows, &starts, &ends, &axes],
            &[&sliced],
        ));
        w_rows = sliced;
    }
    match layer.op.as_str() {
        "Conv" => {
            // Rows of C/group x kH x kW per output channel are the Conv
            // weight's own layout: one Reshape.
            let [shape, w] = parts.fresh_n(["conv_shape", "conv_w"]);
            let dims: Vec<i64> = layer.w.dims.iter().map(|d| *d as i64).collect();
            parts.inits.push(graph::i64_tensor(&shape, &[dims.len()], &dims));
            parts.nodes.push(graph::node("Reshape", &w, &[&w_rows, &shape], &[&w]));
            w
        }
        "Gemm" if layer.trans_b => w_rows,
        _ => {
            let kn = parts.fresh("kn");
            let mut t = graph::node("Transpose", &kn, &[&w_rows], &[&kn]);
            t.attribute.push(pb::AttributeProto {
                name: "perm".into(),
                r#type: 7, // INTS
                ints: vec![1, 0],
                ..Default::default()
            });
            parts.nodes.push(t);
            kn
        }
    }
}

/// The Gemm/Conv bias as the rewritten node adds it: times beta, and
/// shaped [1, C, 1, 1] for Conv.
fn scaled_bias(
    g: &pb::GraphProto,
    bias: &str,
    layer: &Layer,
    conv: bool,
    parts: &mut Parts,
) -> Result<String, PassError> {
    let init = g.initializer.iter().find(|t| t.name == bias);
    match (init, conv) {
        (Some(t), true) => {
            let b = graph::read_f32(t)?;
            let name = parts.fresh("bias");
            let (_, channels) = weight_axis(layer);
            let dims = conv_channel_dims(layer, channels);
            parts.inits.push(graph::f32_tensor(&name, &dims, &b.data));
            Ok(name)
        }
        (_, true) => {
            Err(PassError::Unsupported(format!("Conv {:?} has a non-constant bias", layer.node)))
        }
        (_, false) if layer.beta == 1.0 => Ok(bias.to_string()),
        (_, false) => {
            let [beta, out] = parts.fresh_n(["beta", "bias"]);
            parts.inits.push(graph::f32_tensor(&beta, &[], &[layer.beta]));
            parts.nodes.push(graph::node("Mul", &out, &[bias, &beta], &[&out]));
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests;
