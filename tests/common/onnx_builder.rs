//! Builds small ONNX models in Rust, with tract's own protobuf types, so the
//! test fixtures need no Python to regenerate.
//!
//! Shared by `examples/make_models.rs` (writes the files) and
//! `tests/fixtures.rs` (fails when the committed files drift from this code).

#![allow(dead_code)]

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};

/// ONNX `TensorProto.DataType` codes.
pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const UINT16: i32 = 4;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;
pub const FLOAT16: i32 = 10;
pub const DOUBLE: i32 = 11;

/// A dimension of a declared input or output.
#[derive(Clone, Copy)]
pub enum D {
    Fixed(i64),
    Named(&'static str),
    /// Neither value nor name, as skl2onnx writes a batch axis.
    Unnamed,
}

pub fn value_info(name: &str, elem_type: i32, dims: &[D]) -> pb::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: match d {
                D::Fixed(n) => Some(dimension::Value::DimValue(*n)),
                D::Named(s) => Some(dimension::Value::DimParam(s.to_string())),
                D::Unnamed => None,
            },
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> pb::TensorProto {
    assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outputs.join("_")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn with_int_attr(mut node: pb::NodeProto, name: &str, value: i64) -> pb::NodeProto {
    node.attribute.push(pb::AttributeProto {
        name: name.into(),
        r#type: 2, // INT
        i: value,
        ..Default::default()
    });
    node
}

pub fn model(
    name: &str,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
) -> Vec<u8> {
    let graph = pb::GraphProto {
        name: name.into(),
        node: nodes,
        initializer: initializers,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        producer_name: "tractor-fixtures".into(),
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// Deterministic weights in [-scale, scale]: the tests need reproducible
/// files, not trained ones.
pub fn weights(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 * 0.618 + seed as f32 * 1.7).sin()) * scale).collect()
}

/// A dense ReLU network: `input` [N, sizes[0]] -> `output` [N, sizes.last()].
pub fn mlp(name: &str, sizes: &[usize]) -> Vec<u8> {
    mlp_with_output(name, sizes, "output")
}

/// The same, with the output named as the caller needs.
pub fn mlp_with_output(name: &str, sizes: &[usize], output: &str) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut current = "input".to_string();
    for (layer, pair) in sizes.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let w = format!("w{layer}");
        let b = format!("b{layer}");
        let scale = 1.0 / (fan_in as f32).sqrt();
        inits.push(f32_tensor(
            &w,
            &[fan_in as i64, fan_out as i64],
            weights(fan_in * fan_out, layer as u32, scale),
        ));
        inits.push(f32_tensor(&b, &[fan_out as i64], weights(fan_out, 100 + layer as u32, 0.1)));
        let mm = format!("mm{layer}");
        let last = layer + 2 == sizes.len();
        let added = if last { output.to_string() } else { format!("add{layer}") };
        nodes.push(node("MatMul", &[&current, &w], &[&mm]));
        nodes.push(node("Add", &[&mm, &b], &[&added]));
        if last {
            current = added;
        } else {
            let relu = format!("relu{layer}");
            nodes.push(node("Relu", &[&added], &[&relu]));
            current = relu;
        }
    }
    let n_in = sizes[0] as i64;
    let n_out = *sizes.last().unwrap() as i64;
    model(
        name,
        vec![value_info("input", FLOAT, &[D::Named("N"), D::Fixed(n_in)])],
        vec![value_info(&current, FLOAT, &[D::Named("N"), D::Fixed(n_out)])],
        nodes,
        inits,
    )
}

/// A ResNet-18 layout for the engine benchmarks (issue 17): a 3x3 stem, four
/// stages of two basic blocks (3x3 convs; the first block of stages 2-4
/// halves the image with stride 2 and a 1x1 projection), global average
/// pooling and a 10-way Gemm. Batch norm is folded: every Conv carries a
/// bias and nothing else follows it but Relu or Add. Channels are `width`,
/// 2x, 4x, 8x (64 is the original network; 16 keeps a batch of 32 within
/// tens of milliseconds). Input `input` [N, 3, image, image], output
/// `logits` [N, 10]. Deterministic weights, scaled so activations keep
/// their size through the blocks (vanishing values would make both
/// engines time denormals rather than convolutions).
pub fn resnet18(name: &str, width: usize, image: usize) -> Vec<u8> {
    struct Net {
        nodes: Vec<pb::NodeProto>,
        inits: Vec<pb::TensorProto>,
        seed: u32,
    }
    impl Net {
        /// A Conv with folded batch norm: weight, bias, kernel k, stride s.
        fn conv(
            &mut self,
            x: &str,
            out: &str,
            (c_in, c_out): (usize, usize),
            (k, s): (usize, usize),
            gain: f32,
        ) {
            self.seed += 1;
            let fan_in = (c_in * k * k) as f32;
            let (w, b) = (format!("{out}_w"), format!("{out}_b"));
            let dims = [c_out as i64, c_in as i64, k as i64, k as i64];
            let n = c_out * c_in * k * k;
            self.inits.push(f32_tensor(
                &w,
                &dims,
                weights(n, self.seed, gain * 2.0 / fan_in.sqrt()),
            ));
            self.inits.push(f32_tensor(
                &b,
                &[c_out as i64],
                weights(c_out, 1000 + self.seed, 0.05),
            ));
            let mut conv = node("Conv", &[x, &w, &b], &[out]);
            let ints = |name: &str, v: Vec<i64>| pb::AttributeProto {
                name: name.into(),
                r#type: 7, // INTS
                ints: v,
                ..Default::default()
            };
            let pad = (k / 2) as i64;
            conv.attribute.push(ints("kernel_shape", vec![k as i64; 2]));
            conv.attribute.push(ints("strides", vec![s as i64; 2]));
            conv.attribute.push(ints("pads", vec![pad; 4]));
            self.nodes.push(conv);
        }
        fn relu(&mut self, x: &str, out: &str) {
            self.nodes.push(node("Relu", &[x], &[out]));
        }
    }
    let mut net = Net { nodes: Vec::new(), inits: Vec::new(), seed: 0 };
    net.conv("input", "stem", (3, width), (3, 1), 1.0);
    net.relu("stem", "stem_relu");
    let mut x = "stem_relu".to_string();
    let mut c_in = width;
    for stage in 0..4 {
        let c_out = width << stage;
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let p = format!("s{stage}b{block}");
            net.conv(&x, &format!("{p}_c1"), (c_in, c_out), (3, stride), 1.0);
            net.relu(&format!("{p}_c1"), &format!("{p}_r1"));
            // The residual branch enters the sum at half scale, as a
            // trained network's last batch norm of a block tends to.
            net.conv(&format!("{p}_r1"), &format!("{p}_c2"), (c_out, c_out), (3, 1), 0.5);
            let shortcut = if stride != 1 || c_in != c_out {
                net.conv(&x, &format!("{p}_proj"), (c_in, c_out), (1, stride), 1.0);
                format!("{p}_proj")
            } else {
                x.clone()
            };
            net.nodes.push(node("Add", &[&format!("{p}_c2"), &shortcut], &[&format!("{p}_sum")]));
            net.relu(&format!("{p}_sum"), &format!("{p}_out"));
            x = format!("{p}_out");
            c_in = c_out;
        }
    }
    net.nodes.push(node("GlobalAveragePool", &[&x], &["pooled"]));
    net.nodes.push(with_int_attr(node("Flatten", &["pooled"], &["flat"]), "axis", 1));
    let classes = 10;
    net.inits.push(f32_tensor(
        "fc_w",
        &[c_in as i64, classes],
        weights(c_in * classes as usize, 7777, 2.0 / (c_in as f32).sqrt()),
    ));
    net.inits.push(f32_tensor("fc_b", &[classes], weights(classes as usize, 7778, 0.05)));
    net.nodes.push(node("Gemm", &["flat", "fc_w", "fc_b"], &["logits"]));
    let side = image as i64;
    model(
        name,
        vec![value_info(
            "input",
            FLOAT,
            &[D::Named("N"), D::Fixed(3), D::Fixed(side), D::Fixed(side)],
        )],
        vec![value_info("logits", FLOAT, &[D::Named("N"), D::Fixed(classes)])],
        net.nodes,
        net.inits,
    )
}

/// Every committed fixture: file name and bytes.
pub fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("mlp-batch.onnx", mlp("mlp_batch", &[4, 8, 3]))];

    // Fixed batch of 1, as older exporters write: y = 2x + 1.
    out.push((
        "fixed-batch1.onnx",
        model(
            "fixed_batch1",
            vec![value_info("x", FLOAT, &[D::Fixed(1), D::Fixed(3)])],
            vec![value_info("y", FLOAT, &[D::Fixed(1), D::Fixed(3)])],
            vec![node("Mul", &["x", "two"], &["twice"]), node("Add", &["twice", "one"], &["y"])],
            vec![f32_tensor("two", &[], vec![2.0]), f32_tensor("one", &[], vec![1.0])],
        ),
    ));

    // Two inputs, two outputs, batch axis named differently from "N".
    out.push((
        "two-in-two-out.onnx",
        model(
            "two_in_two_out",
            vec![
                value_info("a", FLOAT, &[D::Named("batch"), D::Fixed(3)]),
                value_info("b", FLOAT, &[D::Named("batch"), D::Fixed(3)]),
            ],
            vec![
                value_info("sum", FLOAT, &[D::Named("batch"), D::Fixed(3)]),
                value_info("product", FLOAT, &[D::Named("batch"), D::Fixed(3)]),
            ],
            vec![node("Add", &["a", "b"], &["sum"]), node("Mul", &["a", "b"], &["product"])],
            vec![],
        ),
    ));

    // An int64 input (token ids, categorical codes), unnamed batch axis.
    out.push((
        "int64-input.onnx",
        model(
            "int64_input",
            vec![value_info("ids", INT64, &[D::Unnamed, D::Fixed(4)])],
            vec![
                value_info("doubled", INT64, &[D::Unnamed, D::Fixed(4)]),
                value_info("as_float", FLOAT, &[D::Unnamed, D::Fixed(4)]),
            ],
            vec![
                node("Add", &["ids", "ids"], &["doubled"]),
                with_int_attr(node("Cast", &["ids"], &["as_float"]), "to", FLOAT as i64),
            ],
            vec![],
        ),
    ));

    // One identity per served element type.
    let types: [(&str, i32); 8] = [
        ("bool", BOOL),
        ("uint8", UINT8),
        ("int8", INT8),
        ("int32", INT32),
        ("int64", INT64),
        ("fp16", FLOAT16),
        ("fp32", FLOAT),
        ("fp64", DOUBLE),
    ];
    out.push((
        "dtypes.onnx",
        model(
            "dtypes",
            types
                .iter()
                .map(|(n, t)| value_info(&format!("in_{n}"), *t, &[D::Named("N"), D::Fixed(2)]))
                .collect(),
            types
                .iter()
                .map(|(n, t)| value_info(&format!("out_{n}"), *t, &[D::Named("N"), D::Fixed(2)]))
                .collect(),
            types
                .iter()
                .map(|(n, _)| node("Identity", &[&format!("in_{n}")], &[&format!("out_{n}")]))
                .collect(),
            vec![],
        ),
    ));

    // An element type tractor does not serve: must be refused at load.
    out.push((
        "uint16-input.onnx",
        model(
            "uint16_input",
            vec![value_info("x", UINT16, &[D::Named("N"), D::Fixed(2)])],
            vec![value_info("y", UINT16, &[D::Named("N"), D::Fixed(2)])],
            vec![node("Identity", &["x"], &["y"])],
            vec![],
        ),
    ));
    out
}

/// Example models for `tractor up`: a digits MLP that was never trained (the
/// interface of digits-mlp-v2, weights from `weights`), the "bad version" a
/// canary must be rolled back from.
pub fn examples() -> Vec<(&'static str, Vec<u8>)> {
    vec![(
        "digits-mlp-untrained.onnx",
        mlp_with_output("digits_untrained", &[64, 32, 10], "logits"),
    )]
}
