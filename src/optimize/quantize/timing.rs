//! Timing a quantized model against fp32 in tract.

use std::time::Duration;

use tract_onnx::pb;

use super::rewrite::{Settings, rewrite};
use super::{Form, Layer, PassError};
use crate::engine::{EngineOptions, Model, ModelFormat};
use crate::optimize::graph;

/// A model measured against fp32, interleaved, at batch 1 and 32.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Paired {
    pub float_us: [f64; 2],
    pub us: [f64; 2],
    /// Median of the per-pair ratios (model / fp32).
    pub ratio: [f64; 2],
}

/// Times the model with the given per-layer forms against fp32: the seam
/// the tests replace with made-up timings.
pub trait Timer {
    /// # Errors
    /// Rewrites that fail and models tract cannot load or run.
    fn compare(&mut self, forms: &[Form], budget: Duration) -> Result<Paired, PassError>;
}

/// The real [`Timer`]: rewrites the model, loads it in tract and runs it
/// interleaved with the fp32 model, loaded once.
pub(super) struct TractTimer<'a> {
    pub(super) model: &'a pb::ModelProto,
    pub(super) layers: &'a [Layer],
    pub(super) settings: &'a Settings,
    pub(super) float: Model,
}

impl Timer for TractTimer<'_> {
    fn compare(&mut self, forms: &[Form], budget: Duration) -> Result<Paired, PassError> {
        let bytes = graph::encode(&rewrite(self.model, self.layers, forms, self.settings)?);
        let m = Model::load(&bytes, ModelFormat::Onnx, &EngineOptions::default())?;
        let mut p = Paired { float_us: [0.0; 2], us: [0.0; 2], ratio: [1.0; 2] };
        for (slot, batch) in crate::optimize::LATENCY_BATCHES.into_iter().enumerate() {
            let batch = if m.is_batchable() && self.float.is_batchable() { batch } else { 1 };
            let (a, b, r) =
                crate::optimize::evaluate::paired_latency(&self.float, &m, batch, budget)?;
            p.float_us[slot] = a.as_secs_f64() * 1e6;
            p.us[slot] = b.as_secs_f64() * 1e6;
            p.ratio[slot] = r;
        }
        Ok(p)
    }
}
