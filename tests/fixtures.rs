//! The committed ONNX fixtures are exactly what `examples/make_models.rs`
//! writes; regenerate with `cargo run --example make_models -- tests/fixtures`.

#[path = "common/onnx_builder.rs"]
mod onnx_builder;

#[test]
fn committed_fixtures_match_their_generator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, bytes) in onnx_builder::fixtures() {
        let committed = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!("{name}: {e}; run `cargo run --example make_models -- tests/fixtures`")
        });
        assert!(
            committed == bytes,
            "{name} drifted from tests/common/onnx_builder.rs; run `cargo run --example make_models -- tests/fixtures`"
        );
    }
}

#[test]
fn committed_examples_match_their_generator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/digits");
    for (name, bytes) in onnx_builder::examples() {
        let committed = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            committed == bytes,
            "{name} drifted; run `cargo run --example make_models -- --examples examples/digits`"
        );
    }
}

/// The benchmarks' ResNet-shaped CNN (issue 17) has ResNet-18's layout and
/// runs in the engine: a batch equals its rows run alone, and different
/// images give different, finite logits (weights that vanish or blow up
/// through the blocks would time denormals or infinities, not convolutions).
#[test]
fn resnet18_bench_model_has_the_layout_and_runs() {
    use prost::Message;
    use tractor::engine::{EngineOptions, Model, ModelFormat, Tensor, TensorData};

    let bytes = onnx_builder::resnet18("resnet18_w16_32", 16, 32);
    let proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = proto.graph.unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    // Stem, 8 blocks of two 3x3 convs, 3 projections; no batch norm left.
    assert_eq!(count("Conv"), 20);
    assert_eq!(count("Add"), 8);
    assert_eq!((count("GlobalAveragePool"), count("Gemm")), (1, 1));
    assert_eq!(count("BatchNormalization"), 0);
    let strided = graph
        .node
        .iter()
        .filter(|n| n.attribute.iter().any(|a| a.name == "strides" && a.ints == [2, 2]))
        .count();
    assert_eq!(strided, 6, "three stages halve the image, each in a conv and its projection");

    let model = Model::load(&bytes, ModelFormat::Onnx, &EngineOptions::default()).unwrap();
    let image = 3 * 32 * 32;
    let rows = 3;
    let x = onnx_builder::weights(rows * image, 5, 1.0);
    let run = |data: &[f32], n: usize| {
        let t = Tensor::new(vec![n, 3, 32, 32], TensorData::F32(data.to_vec())).unwrap();
        match model.run(&[t]).unwrap().remove(0).data {
            TensorData::F32(v) => v,
            other => panic!("logits are not FP32: {other:?}"),
        }
    };
    let batch = run(&x, rows);
    assert_eq!(batch.len(), rows * 10);
    for r in 0..rows {
        let alone = run(&x[r * image..(r + 1) * image], 1);
        for (a, b) in alone.iter().zip(&batch[r * 10..(r + 1) * 10]) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "row {r}: {a} vs {b}");
        }
    }
    assert!(batch.iter().all(|v| v.is_finite()));
    let scale = batch.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!((1e-3..1e3).contains(&scale), "logits of size {scale}");
    let spread = (0..10).map(|j| (batch[j] - batch[10 + j]).abs()).fold(0f32, f32::max);
    assert!(spread > 1e-5 * scale, "two images gave the same logits");
}
