//! The engine on real exported models and on the fixtures: loading, the
//! symbolic batch axis, NNEF conversion, refusals.

mod common;

use common::{fixture, load, real_model};
use tractor::engine::{
    DataType, Dim, EngineError, EngineOptions, Model, ModelFormat, Tensor, TensorData, Threads,
};

fn f32s(t: &Tensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("not FP32: {other:?}"),
    }
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{x} vs {y}");
    }
}

/// Every real model keeps its batch axis, whatever the exporter called it.
#[test]
fn real_exports_load_with_a_symbolic_batch_axis() {
    for file in [
        "digits-mlp-v1.onnx",
        "digits-mlp-v2.onnx",
        "digits-cnn.onnx",
        "digits-cnn-bn.onnx",
        "digits-sklearn-mlp.onnx",
        "diabetes-mlp.onnx",
    ] {
        let model = load(&real_model(file));
        assert!(model.is_batchable(), "{file}: {:?} -> {:?}", model.inputs(), model.outputs());
        assert_eq!(model.threads(), 1, "{file} is small: one thread by default");
    }
    let sklearn = load(&real_model("digits-sklearn-mlp.onnx"));
    let label = &sklearn.outputs()[0];
    assert_eq!((label.name.as_str(), label.datatype), ("label", DataType::I64));
}

/// Any batch size gives the rows each row gives alone.
#[test]
fn batches_of_any_size_equal_rows_run_alone() {
    let model = load(&real_model("digits-cnn.onnx"));
    // Rows alone run on the batch-1 plan when it measured faster at load
    // (it does for this CNN: 30 against 48 µs), the batch on the symbolic one.
    println!("batch-1 plan: {}", model.has_single_plan());
    let rows = 13;
    let inputs = tractor::client::synthetic_inputs(model.inputs(), rows, 5);
    let batched = model.run(&inputs).unwrap();
    assert_eq!(batched[0].shape, vec![rows, 10]);
    for r in 0..rows {
        let one = model.run(&[inputs[0].rows(r, 1).unwrap()]).unwrap();
        assert_close(f32s(&one[0]), f32s(&batched[0].rows(r, 1).unwrap()), 1e-5);
    }
}

#[test]
fn nnef_archives_load_and_agree_with_onnx() {
    for path in [fixture("mlp-batch.onnx"), real_model("digits-cnn-bn.onnx")] {
        let onnx = load(&path);
        let archive = tractor::engine::onnx_to_nnef(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(ModelFormat::detect("model.nnef.tgz", &archive), ModelFormat::Nnef);
        assert_eq!(ModelFormat::detect("model", &archive), ModelFormat::Nnef, "sniffed as gzip");
        let nnef = Model::load(&archive, ModelFormat::Nnef, &EngineOptions::default()).unwrap();
        assert_eq!(nnef.inputs(), onnx.inputs());
        assert_eq!(nnef.outputs(), onnx.outputs());
        assert_eq!(nnef.format(), ModelFormat::Nnef);
        let inputs = tractor::client::synthetic_inputs(onnx.inputs(), 4, 3);
        assert_close(
            f32s(&nnef.run(&inputs).unwrap()[0]),
            f32s(&onnx.run(&inputs).unwrap()[0]),
            1e-6,
        );
    }
}

#[test]
fn fixtures_describe_their_inputs_and_outputs() {
    let fixed = load(&fixture("fixed-batch1.onnx"));
    assert!(!fixed.is_batchable());
    assert_eq!(fixed.inputs()[0].shape, vec![Dim::Fixed(1), Dim::Fixed(3)]);
    let pair = load(&fixture("two-in-two-out.onnx"));
    let names: Vec<&str> =
        pair.inputs().iter().chain(pair.outputs()).map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "sum", "product"]);
    let ids = load(&fixture("int64-input.onnx"));
    assert_eq!(
        ids.inputs()[0].shape,
        vec![Dim::Batch, Dim::Fixed(4)],
        "unnamed axis became the batch"
    );
    let dtypes = load(&fixture("dtypes.onnx"));
    let served: Vec<DataType> = dtypes.inputs().iter().map(|s| s.datatype).collect();
    assert_eq!(served, DataType::ALL);
}

#[test]
fn bad_models_are_refused_with_a_reason() {
    let unsupported = Model::load_path(&fixture("uint16-input.onnx"), &EngineOptions::default());
    let err = unsupported.unwrap_err();
    assert!(matches!(err, EngineError::UnsupportedModel { .. }), "{err}");
    assert!(err.to_string().contains("\"x\""), "{err}");
    let garbage = Model::load(b"not a model", ModelFormat::Onnx, &EngineOptions::default());
    assert!(matches!(garbage, Err(EngineError::ParseModel { .. })));
    let bad_nnef = Model::load(&[0x1f, 0x8b, 0, 0], ModelFormat::Nnef, &EngineOptions::default());
    assert!(matches!(bad_nnef, Err(EngineError::ParseModel { .. })));
}

/// The engine keeps tract's run states between runs; a state used for one
/// batch size must answer the next, of another size, as a fresh one does.
#[test]
fn a_reused_run_state_answers_like_a_fresh_one() {
    let path = real_model("digits-cnn.onnx");
    let reused = load(&path);
    for (i, rows) in [13, 1, 32, 1, 13, 2].into_iter().enumerate() {
        let inputs = tractor::client::synthetic_inputs(reused.inputs(), rows, i as u64);
        let again = reused.run(&inputs).unwrap();
        let fresh = load(&path).run(&inputs).unwrap();
        assert_eq!(again[0].shape, vec![rows, 10]);
        assert_eq!(f32s(&again[0]), f32s(&fresh[0]), "batch of {rows} after other sizes");
    }
}

#[test]
fn run_checks_inputs_before_tract_sees_them() {
    let model = load(&fixture("mlp-batch.onnx"));
    let wrong_type = Tensor::new(vec![1, 4], TensorData::F64(vec![0.0; 4])).unwrap();
    assert!(model.run(&[wrong_type]).unwrap_err().to_string().contains("expects FP32"));
    let wrong_shape = Tensor::new(vec![1, 5], TensorData::F32(vec![0.0; 5])).unwrap();
    assert!(model.run(&[wrong_shape]).is_err());
    assert!(model.run(&[]).unwrap_err().to_string().contains("takes 1 inputs"));
}

#[test]
fn thread_count_is_a_setting() {
    let options = EngineOptions { threads: Threads::Count(2) };
    let model = Model::load_path(&fixture("mlp-batch.onnx"), &options).unwrap();
    assert_eq!(model.threads(), 2);
    let inputs = tractor::client::synthetic_inputs(model.inputs(), 3, 1);
    let single = load(&fixture("mlp-batch.onnx"));
    assert_close(
        f32s(&model.run(&inputs).unwrap()[0]),
        f32s(&single.run(&inputs).unwrap()[0]),
        1e-6,
    );
    // The weights and biases, plus the scalars tract adds (Relu's zero).
    let declared = (4 * 8 + 8 + 8 * 3 + 3) * 4;
    assert!(
        (declared..declared + 16).contains(&single.weight_bytes()),
        "{}",
        single.weight_bytes()
    );
    assert_eq!("auto".parse::<Threads>(), Ok(Threads::Auto));
    assert!("0".parse::<Threads>().is_err());
}
