//! Helpers over the ONNX protobuf: decoding, float weights, names, counts,
//! and the interface check the driver runs after every pass.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb;

/// ONNX `TensorProto.DataType` codes used here.
pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;

/// Errors of reading and rewriting ONNX graphs.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("cannot decode the model as ONNX: {0}")]
    Decode(#[source] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("tensor {name:?}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("node {node:?} reads {input:?}, which nothing produces before it")]
    DanglingInput { node: String, input: String },
    #[error("graph output {output:?} is not produced")]
    DanglingOutput { output: String },
}

/// Decodes ONNX bytes.
///
/// # Errors
/// Bytes that are not an ONNX `ModelProto` with a graph.
pub fn decode(bytes: &[u8]) -> Result<pb::ModelProto, GraphError> {
    let model = pb::ModelProto::decode(bytes).map_err(GraphError::Decode)?;
    if model.graph.is_none() {
        return Err(GraphError::NoGraph);
    }
    Ok(model)
}

pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// The graph of a model decoded by [`decode`].
///
/// # Errors
/// A model without a graph.
pub fn graph(model: &pb::ModelProto) -> Result<&pb::GraphProto, GraphError> {
    model.graph.as_ref().ok_or(GraphError::NoGraph)
}

pub fn graph_mut(model: &mut pb::ModelProto) -> Result<&mut pb::GraphProto, GraphError> {
    model.graph.as_mut().ok_or(GraphError::NoGraph)
}

/// A float tensor read out of an initializer.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads a float initializer (raw or `float_data`).
///
/// # Errors
/// Another data type, external data, or a size that disagrees with the dims.
pub fn read_f32(t: &pb::TensorProto) -> Result<FloatTensor, GraphError> {
    let err = |reason: String| GraphError::Tensor { name: t.name.clone(), reason };
    if t.data_type != FLOAT {
        return Err(err(format!("data type {} is not float", t.data_type)));
    }
    if t.data_location == Some(1) {
        return Err(err("external data is not supported".into()));
    }
    let dims = t
        .dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| err(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return Err(err("raw data length is not a multiple of 4".into()));
        }
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        t.float_data.clone()
    };
    let declared = dims.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
    if declared != Some(data.len()) {
        return Err(err(format!("{} values for dims {dims:?}", data.len())));
    }
    Ok(FloatTensor { dims, data })
}

/// Reads an int64 initializer (raw or `int64_data`).
///
/// # Errors
/// Another data type or malformed data.
pub fn read_i64(t: &pb::TensorProto) -> Result<Vec<i64>, GraphError> {
    let err = |reason: String| GraphError::Tensor { name: t.name.clone(), reason };
    if t.data_type != INT64 {
        return Err(err(format!("data type {} is not int64", t.data_type)));
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(8) {
            return Err(err("raw data length is not a multiple of 8".into()));
        }
        return Ok(t
            .raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect());
    }
    Ok(t.int64_data.clone())
}

pub fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: FLOAT,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn bytes_tensor(name: &str, data_type: i32, dims: &[usize], raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type,
        raw_data: raw,
        ..Default::default()
    }
}

pub fn i64_tensor(name: &str, dims: &[usize], data: &[i64]) -> pb::TensorProto {
    bytes_tensor(name, INT64, dims, data.iter().flat_map(|x| x.to_le_bytes()).collect())
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn int_attr(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 2, i: value, ..Default::default() }
}

pub fn float_attr(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: 1, f: value, ..Default::default() }
}

/// An integer attribute of a node, or `default`.
pub fn get_int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i).unwrap_or(default)
}

/// A float attribute of a node, or `default`.
pub fn get_float(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f).unwrap_or(default)
}

/// Index of initializers by name.
pub fn initializers(g: &pb::GraphProto) -> HashMap<String, usize> {
    g.initializer.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect()
}

/// Index of the node that produces each value.
pub fn producers(g: &pb::GraphProto) -> HashMap<&String, usize> {
    g.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o, i))).collect()
}

/// How many nodes read each value, graph outputs counting as readers.
pub fn use_counts(g: &pb::GraphProto) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *counts.entry(i.clone()).or_insert(0) += 1;
        }
    }
    for o in &g.output {
        *counts.entry(o.name.clone()).or_insert(0) += 1;
    }
    counts
}

/// Makes names that are not in the graph yet.
pub struct Namer {
    taken: HashSet<String>,
}

impl Namer {
    pub fn new(g: &pb::GraphProto) -> Namer {
        let mut taken: HashSet<String> = HashSet::new();
        taken.extend(g.initializer.iter().map(|t| t.name.clone()));
        taken.extend(g.input.iter().chain(&g.output).chain(&g.value_info).map(|v| v.name.clone()));
        for n in &g.node {
            taken.insert(n.name.clone());
            taken.extend(n.input.iter().chain(&n.output).cloned());
        }
        Namer { taken }
    }

    pub(crate) fn taken_contains(&self, name: &str) -> bool {
        self.taken.contains(name)
    }

    /// `base`, or `base_2`, `base_3`... whichever is free; reserves it.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 2;
        while self.taken.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}

/// Drops initializers nothing reads and nodes whose outputs nothing reads
/// (nodes are kept when any output is used).
pub fn remove_unused(g: &mut pb::GraphProto) {
    loop {
        let counts = use_counts(g);
        let before = g.node.len();
        g.node.retain(|n| n.output.iter().any(|o| counts.contains_key(o)));
        if g.node.len() == before {
            break;
        }
    }
    let counts = use_counts(g);
    g.initializer.retain(|t| counts.contains_key(&t.name));
    // Stale shape annotations of removed values confuse nobody, but drop them
    // to keep the file honest.
    let produced: HashSet<&String> = g.node.iter().flat_map(|n| &n.output).collect();
    g.value_info.retain(|v| produced.contains(&v.name));
}

/// Renames every read of value `from` to `to` (nodes and graph outputs are
/// left alone when `from` is a graph output: that name is the interface).
pub fn replace_uses(g: &mut pb::GraphProto, from: &str, to: &str) {
    for n in &mut g.node {
        for i in &mut n.input {
            if i == from {
                *i = to.to_string();
            }
        }
    }
}

/// Weight statistics of a model: float parameters and how many are non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamStats {
    /// Elements of all initializers (of any type; 4-bit packs count twice per byte).
    pub parameters: u64,
    pub non_zero: u64,
}

/// Counts parameters over all initializers. Quantized tensors count each
/// stored value; for `MatMulNBits` packs, each nibble.
pub fn param_stats(model: &pb::ModelProto) -> ParamStats {
    let Some(g) = &model.graph else { return ParamStats::default() };
    let nibble_packed: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "MatMulNBits")
        .filter_map(|n| n.input.get(1).map(String::as_str))
        .collect();
    let mut stats = ParamStats::default();
    for t in &g.initializer {
        let n: u64 = t.dims.iter().fold(1u64, |n, d| n.saturating_mul((*d).max(0) as u64));
        match t.data_type {
            FLOAT => {
                if let Ok(f) = read_f32(t) {
                    stats.parameters += n;
                    stats.non_zero += f.data.iter().filter(|x| **x != 0.0).count() as u64;
                }
            }
            UINT8 if nibble_packed.contains(t.name.as_str()) => {
                // Zero in a symmetric 4-bit pack is the nibble 8.
                stats.parameters += 2 * n;
                stats.non_zero += t
                    .raw_data
                    .iter()
                    .map(|b| u64::from(b & 0x0f != 8) + u64::from(b >> 4 != 8))
                    .sum::<u64>();
            }
            UINT8 | INT8 => {
                stats.parameters += n;
                stats.non_zero += t.raw_data.iter().filter(|b| **b != 0).count() as u64;
            }
            _ => {}
        }
    }
    stats
}

/// Names, element types and shapes of a graph's inputs (initializers
/// excluded) and outputs: what a pass must keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub inputs: Vec<(String, pb::TypeProto)>,
    pub outputs: Vec<(String, pb::TypeProto)>,
}

pub fn interface(model: &pb::ModelProto) -> Interface {
    let Some(g) = &model.graph else {
        return Interface { inputs: Vec::new(), outputs: Vec::new() };
    };
    let inits: HashSet<&String> = g.initializer.iter().map(|t| &t.name).collect();
    let io = |v: &pb::ValueInfoProto| (v.name.clone(), v.r#type.clone().unwrap_or_default());
    Interface {
        inputs: g.input.iter().filter(|v| !inits.contains(&v.name)).map(io).collect(),
        outputs: g.output.iter().map(io).collect(),
    }
}

/// Checks that every node input is produced by a node, a graph input or an
/// initializer before it is read (the graph is topologically sorted), and
/// that every graph output is produced.
///
/// # Errors
/// The first dangling name.
pub fn check_wiring(g: &pb::GraphProto) -> Result<(), GraphError> {
    let mut known: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    known.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !known.contains(i.as_str()) {
                return Err(GraphError::DanglingInput { node: n.name.clone(), input: i.clone() });
            }
        }
        known.extend(n.output.iter().map(String::as_str));
    }
    for o in &g.output {
        if !known.contains(o.name.as_str()) {
            return Err(GraphError::DanglingOutput { output: o.name.clone() });
        }
    }
    Ok(())
}

/// The ONNX opset of the default domain.
pub fn opset(model: &pb::ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1)
}

/// Makes sure the model imports `domain` (e.g. `com.microsoft`).
pub fn import_domain(model: &mut pb::ModelProto, domain: &str, version: i64) {
    if !model.opset_import.iter().any(|o| o.domain == domain) {
        model.opset_import.push(pb::OperatorSetIdProto { domain: domain.into(), version });
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Tiny graphs for the passes' unit tests.
    use super::*;
    use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};

    pub fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                denotation: String::new(),
                value: Some(match d {
                    Some(n) => dimension::Value::DimValue(*n),
                    None => dimension::Value::DimParam("batch".into()),
                }),
            })
            .collect();
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: FLOAT,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
            }),
            ..Default::default()
        }
    }

    /// A model with float input `x` [batch, in] and output `y` [batch, out].
    pub fn model(
        input: (&str, &[Option<i64>]),
        output: (&str, &[Option<i64>]),
        nodes: Vec<pb::NodeProto>,
        inits: Vec<pb::TensorProto>,
    ) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            producer_name: "tractor-test".into(),
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: nodes,
                initializer: inits,
                input: vec![value_info(input.0, input.1)],
                output: vec![value_info(output.0, output.1)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// [`model`] with a float `x` [batch, inputs] and `y` [batch, outputs]:
    /// the dense graphs most pass tests build.
    pub fn dense(
        inputs: i64,
        outputs: i64,
        nodes: Vec<pb::NodeProto>,
        inits: Vec<pb::TensorProto>,
    ) -> pb::ModelProto {
        model(("x", &[None, Some(inputs)]), ("y", &[None, Some(outputs)]), nodes, inits)
    }

    /// Deterministic pseudo-random values in [-scale, scale].
    pub fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.618 + seed as f32 * 1.7).sin()) * scale).collect()
    }

    /// Runs an encoded model on one f32 input with tract.
    pub fn run(model: &pb::ModelProto, shape: &[usize], x: &[f32]) -> Vec<f32> {
        use crate::engine::{EngineOptions, Model, ModelFormat, Tensor, TensorData};
        let m = Model::load(&encode(model), ModelFormat::Onnx, &EngineOptions::default())
            .expect("model loads");
        let t = Tensor::new(shape.to_vec(), TensorData::F32(x.to_vec())).expect("tensor");
        let out = m.run(&[t]).expect("model runs");
        match &out[0].data {
            TensorData::F32(v) => v.clone(),
            other => panic!("unexpected output {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_tensors_round_trip_and_stats_count_zeros() {
        let t = f32_tensor("w", &[2, 2], &[1.0, 0.0, -2.0, 0.0]);
        assert_eq!(
            read_f32(&t).unwrap(),
            FloatTensor { dims: vec![2, 2], data: vec![1.0, 0.0, -2.0, 0.0] }
        );
        let m = testing::model(
            ("x", &[None, Some(2)]),
            ("y", &[None, Some(2)]),
            vec![node("MatMul", "mm", &["x", "w"], &["y"])],
            vec![t],
        );
        assert_eq!(param_stats(&m), ParamStats { parameters: 4, non_zero: 2 });
        assert!(check_wiring(graph(&m).unwrap()).is_ok());
    }

    #[test]
    fn wiring_check_names_the_dangling_value() {
        let m = testing::model(
            ("x", &[None, Some(2)]),
            ("y", &[None, Some(2)]),
            vec![node("Relu", "r", &["nope"], &["y"])],
            vec![],
        );
        let err = check_wiring(graph(&m).unwrap()).unwrap_err().to_string();
        assert_eq!(err, r#"node "r" reads "nope", which nothing produces before it"#);
    }

    #[test]
    fn namer_avoids_taken_names() {
        let m = testing::model(
            ("x", &[None]),
            ("y", &[None]),
            vec![node("Relu", "r", &["x"], &["y"])],
            vec![],
        );
        let mut namer = Namer::new(graph(&m).unwrap());
        assert_eq!(namer.fresh("y"), "y_2");
        assert_eq!(namer.fresh("y"), "y_3");
        assert_eq!(namer.fresh("z"), "z");
    }
}
