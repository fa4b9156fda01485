//! Writes a dense ReLU MLP of about `SIZE_MB` megabytes of fp32 weights
//! (default 100) for the optimizer benchmark: `benches/optimize.sh`.
//!
//! usage: cargo run --release --example optimize_big_model -- OUT.onnx [SIZE_MB]
//!
//! With `--latency-breakdown A.onnx B.onnx...` it instead prints where the
//! batch-1 and batch-32 time of each model goes (the structured-pruning
//! latency question of issue 4): the engine as `tractor serve` and the
//! optimize report run it, then tract alone with the batch symbolic or
//! fixed, with a fresh run state per call (what `SimplePlan::run` does) or
//! one reused state. In release only: tract's generic run loop is
//! instantiated in the calling crate, so a debug build times it unoptimized.

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
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("--latency-breakdown") {
        return breakdown(&all[1..]);
    }
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

/// Median µs of `f` over about a second, after warm-up runs.
fn median_us(mut f: impl FnMut()) -> f64 {
    use std::time::{Duration, Instant};
    for _ in 0..50 {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 20 || (start.elapsed() < Duration::from_secs(1) && times.len() < 200_000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn breakdown(paths: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use tract_onnx::prelude::*;
    use tractor::engine::{EngineOptions, Model};
    let clock = median_us(|| {
        std::hint::black_box(std::time::Instant::now());
    });
    println!("reading the clock: {clock:.3} us");
    println!(
        "| model | batch | engine (serve; threads) | tract, symbolic batch, fresh state | tract, fixed batch, fresh state | tract, fixed batch, reused state |"
    );
    println!("|---|---|---|---|---|---|");
    for path in paths {
        let bytes = std::fs::read(path)?;
        let proto = pb::ModelProto::decode(bytes.as_slice())?;
        let width = proto
            .graph
            .as_ref()
            .and_then(|g| g.input.first())
            .and_then(|i| match &i.r#type.as_ref()?.value {
                Some(pb::type_proto::Value::TensorType(t)) => t.shape.as_ref()?.dim.get(1).cloned(),
                _ => None,
            })
            .and_then(|d| match d.value {
                Some(dimension::Value::DimValue(v)) => Some(v as usize),
                _ => None,
            })
            .ok_or("the first input is not [batch, width]")?;
        let engine = Model::load_path(std::path::Path::new(path), &EngineOptions::default())?;
        for batch in [1usize, 32] {
            let plan = |fixed: bool| -> TractResult<_> {
                let mut m = tract_onnx::onnx().model_for_read(&mut bytes.as_slice())?;
                let n: TDim =
                    if fixed { TDim::Val(batch as i64) } else { m.symbols.sym("N").into() };
                m.set_input_fact(0, f32::fact([n, width.to_dim()]).into())?;
                // Declared output shapes name their own batch; let tract infer them.
                for o in 0..m.outputs.len() {
                    m.set_output_fact(o, InferenceFact::default())?;
                }
                m.into_optimized()?.into_runnable()
            };
            let (symbolic, fixed) = (plan(false)?, plan(true)?);
            let x: TValue = Tensor::zero::<f32>(&[batch, width])?.into_tvalue();
            let inputs = tractor::client::synthetic_inputs(engine.inputs(), batch, 42);
            let e = median_us(|| {
                engine.run(&inputs).expect("engine runs");
            });
            let a = median_us(|| {
                symbolic.run(tvec![x.clone()]).expect("runs");
            });
            let b = median_us(|| {
                fixed.run(tvec![x.clone()]).expect("runs");
            });
            let mut state = fixed.spawn()?;
            let c = median_us(|| {
                state.run(tvec![x.clone()]).expect("runs");
            });
            let name = std::path::Path::new(path).file_name().unwrap_or_default().to_string_lossy();
            println!(
                "| {name} | {batch} | {e:.2} us ({}) | {a:.2} us | {b:.2} us | {c:.2} us |",
                engine.threads()
            );
        }
    }
    Ok(())
}
