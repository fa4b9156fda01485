//! A batch run image by image on the batch-1 plan, for the models where
//! that measured faster at load than the plan for any batch.
//!
//! tract 0.23 reads a 3x3 convolution's patches in place (lazy im2col,
//! bias and activation fused into the product) only when the batch is 1
//! and known; any other batch first copies every image's patches into a
//! packed buffer, one element at a time and on one thread, and runs the
//! bias and the activation as separate passes. On the ResNet-shaped bench
//! model that copy was most of a batch's time (docs/performance.md).

use std::time::{Duration, Instant};

use super::race::Race;
use super::{EngineError, Model, Tensor, synthetic_inputs};

/// Rows of the batch the two ways are compared at: large enough that the
/// batch plan's fixed costs are shared, small enough to time quickly.
const PROBE_BATCH: usize = 8;
/// How the two are compared at load: 5 pairs, then more for up to 60 ms;
/// splitting must be at least 10% faster to be used.
const PROBE: Race = Race {
    warm_ups: 2,
    min_pairs: 5,
    max_pairs: 100,
    budget: Duration::from_millis(60),
    min_gain: 0.9,
};

/// Runs `inputs` (a batch) one row at a time and joins the outputs.
///
/// # Errors
/// As [`Model::run`]; inputs whose batch sizes differ.
pub(super) fn run_by_rows(model: &Model, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
    let batch = inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(0);
    let mut outputs: Vec<Vec<Tensor>> = Vec::with_capacity(batch);
    for r in 0..batch {
        let row = inputs.iter().map(|t| t.rows(r, 1)).collect::<Result<Vec<_>, _>>()?;
        outputs.push(model.run(&row)?);
    }
    (0..model.outputs().len())
        .map(|o| {
            let parts: Vec<&Tensor> = outputs.iter().map(|row| &row[o]).collect();
            Ok(Tensor::concat_rows(&parts)?)
        })
        .collect()
}

impl Model {
    /// The model, set to run batches row by row when [`faster_by_rows`].
    pub(super) fn with_split_rows(mut self) -> Model {
        // Row by row, a graph with an op over the whole batch (one
        // quantization scale) would answer otherwise than ONNX Runtime does.
        self.split_rows = self.rows_independent && faster_by_rows(&self);
        self
    }
}

/// Whether a batch runs faster row by row on the batch-1 plan than on the
/// plan for any batch: both timed on synthetic inputs, interleaved, medians
/// compared. Only for models with a batch-1 plan and no other variable axis.
fn faster_by_rows(model: &Model) -> bool {
    if !model.has_single_plan() {
        return false;
    }
    let inputs = synthetic_inputs(model.inputs(), PROBE_BATCH, 1);
    let time = |split: bool| {
        let started = Instant::now();
        let ran = if split { run_by_rows(model, &inputs) } else { model.run(&inputs) };
        ran.map(|_| started.elapsed())
    };
    PROBE.candidate_wins(|| time(true), || time(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineOptions, TensorData};

    fn digits_cnn() -> Model {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/digits-cnn.onnx");
        Model::load_path(std::path::Path::new(path), &EngineOptions::default()).unwrap()
    }

    #[test]
    fn a_batch_run_row_by_row_equals_the_batch_plan() {
        let mut model = digits_cnn();
        assert!(model.has_single_plan(), "the digits CNN gets a batch-1 plan");
        let inputs = synthetic_inputs(model.inputs(), 5, 7);
        model.split_rows = false;
        let whole = model.run(&inputs).unwrap();
        model.split_rows = true;
        let split = model.run(&inputs).unwrap();
        assert_eq!(whole.len(), split.len());
        for (a, b) in whole.iter().zip(&split) {
            assert_eq!(a.shape, vec![5, 10]);
            assert_eq!(a.shape, b.shape);
            let (TensorData::F32(a), TensorData::F32(b)) = (&a.data, &b.data) else {
                panic!("logits are FP32");
            };
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
            }
        }
        // A batch of one, and inputs of the wrong shape, as without the split.
        let one: Vec<Tensor> = inputs.iter().map(|t| t.rows(0, 1).unwrap()).collect();
        assert_eq!(model.run(&one).unwrap()[0].shape, vec![1, 10]);
        let bad = Tensor::new(vec![2, 1, 8, 7], TensorData::F32(vec![0.0; 112])).unwrap();
        assert!(model.run(&[bad]).is_err());
    }
}
