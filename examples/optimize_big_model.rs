//! Writes a dense ReLU MLP of about `SIZE_MB` megabytes of fp32 weights
//! (default 100) for the optimizer benchmark: `benches/optimize.sh`.
//!
//! usage: cargo run --release --example optimize_big_model -- OUT.onnx [SIZE_MB]

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};

fn value_info(name: &str, width: i64) -> pb::ValueInfoProto {
    let dim = |value| Dimension { denotation: String::new(), value: Some(value) };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim(dimension::Value::DimParam("batch".into())),
                        dim(dimension::Value::DimValue(width)),
                    ],
                }),
            })),
        }),
        ..Default::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: optimize_big_model OUT.onnx [SIZE_MB]")?;
    let size_mb: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    // Square 2048-wide layers: 16 MiB each.
    let width = 2048usize;
    let layers = (size_mb << 20).div_ceil(width * width * 4).max(1);
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut x = "input".to_string();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for l in 0..layers {
        let w: Vec<u8> = (0..width * width)
            .flat_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05).to_le_bytes()
            })
            .collect();
        let (wn, bn) = (format!("w{l}"), format!("b{l}"));
        inits.push(pb::TensorProto {
            name: wn.clone(),
            dims: vec![width as i64; 2],
            data_type: 1,
            raw_data: w,
            ..Default::default()
        });
        inits.push(pb::TensorProto {
            name: bn.clone(),
            dims: vec![width as i64],
            data_type: 1,
            raw_data: vec![0; width * 4],
            ..Default::default()
        });
        let h = format!("h{l}");
        nodes.push(pb::NodeProto {
            op_type: "Gemm".into(),
            name: format!("fc{l}"),
            input: vec![x.clone(), wn, bn],
            output: vec![h.clone()],
            ..Default::default()
        });
        let y = if l + 1 == layers { "output".to_string() } else { format!("r{l}") };
        nodes.push(pb::NodeProto {
            op_type: "Relu".into(),
            name: format!("relu{l}"),
            input: vec![h],
            output: vec![y.clone()],
            ..Default::default()
        });
        x = y;
    }
    let model = pb::ModelProto {
        ir_version: 8,
        producer_name: "tractor-bench".into(),
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(pb::GraphProto {
            name: "big".into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info("input", width as i64)],
            output: vec![value_info("output", width as i64)],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(&out, model.encode_to_vec())?;
    eprintln!("wrote {out}: {layers} layers of {width}x{width}");
    Ok(())
}
