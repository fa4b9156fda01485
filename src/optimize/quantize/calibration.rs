//! Static calibration: activation ranges at each layer's input, measured
//! on calibration data, as static-int8 forms.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::math::uint8_params;
use super::{Form, Layer, PassError};
use crate::crd::recipe::CalibrationMethod;
use crate::engine::{EngineOptions, Model, ModelFormat};
use crate::optimize::graph;

/// Activation ranges at each layer's input from calibration data, as
/// static-int8 forms (uint8, asymmetric).
pub(super) fn calibrate(
    model: &pb::ModelProto,
    layers: &[Layer],
    data: &crate::optimize::Dataset,
    method: CalibrationMethod,
) -> Result<Vec<Form>, PassError> {
    let g = graph::graph(model)?;
    let inputs: HashSet<&String> = g.input.iter().map(|v| &v.name).collect();
    let layer_inputs: Vec<String> = layers
        .iter()
        .map(|l| {
            g.node.iter().find(|n| n.name == l.node).map(|n| n.input[0].clone()).unwrap_or_default()
        })
        .collect();
    let mut probe = model.clone();
    let pg = graph::graph_mut(&mut probe)?;
    let mut extra = Vec::new();
    for x in &layer_inputs {
        if !inputs.contains(x) && !extra.contains(x) && !pg.output.iter().any(|o| &o.name == x) {
            pg.output.push(pb::ValueInfoProto { name: x.clone(), ..Default::default() });
            extra.push(x.clone());
        }
    }
    let m = Model::load(&graph::encode(&probe), ModelFormat::Onnx, &EngineOptions::default())?;
    let feeds = data.inputs_for(m.inputs())?;
    let outs = m.run(&feeds)?;
    let mut values: HashMap<String, Vec<f32>> = HashMap::new();
    for (spec, t) in m.inputs().iter().zip(&feeds) {
        values.insert(
            spec.name.clone(),
            crate::optimize::data::as_f64(t).iter().map(|v| *v as f32).collect(),
        );
    }
    for (spec, t) in m.outputs().iter().zip(&outs) {
        values.insert(
            spec.name.clone(),
            crate::optimize::data::as_f64(t).iter().map(|v| *v as f32).collect(),
        );
    }
    layer_inputs
        .iter()
        .map(|x| {
            let v = values
                .get(x)
                .ok_or_else(|| PassError::Rewrite(format!("no calibration values for {x:?}")))?;
            let (lo, hi) = range(v, method);
            Ok(uint8_params(lo, hi))
        })
        .collect()
}

/// The clipping range of activations by calibration method.
pub fn range(v: &[f32], method: CalibrationMethod) -> (f32, f32) {
    let min = v.iter().cloned().fold(f32::INFINITY, f32::min).min(0.0);
    let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max).max(0.0);
    let threshold = match method {
        CalibrationMethod::Minmax => return (min, max),
        CalibrationMethod::Percentile { percentile } => {
            let mut a: Vec<f32> = v.iter().map(|x| x.abs()).collect();
            a.sort_by(f32::total_cmp);
            let i = ((percentile / 100.0) * (a.len().saturating_sub(1)) as f64).round() as usize;
            a.get(i).copied().unwrap_or(0.0)
        }
        CalibrationMethod::Entropy => entropy_threshold(v),
    };
    (min.max(-threshold), max.min(threshold))
}

/// The |x| threshold minimising KL(P || Q) between the clipped histogram and
/// its 128-level quantization (the TensorRT calibration).
pub fn entropy_threshold(v: &[f32]) -> f32 {
    const BINS: usize = 2048;
    const LEVELS: usize = 128;
    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 {
        return 0.0;
    }
    let width = amax / BINS as f32;
    let mut hist = vec![0f64; BINS];
    for x in v {
        let b = ((x.abs() / width) as usize).min(BINS - 1);
        hist[b] += 1.0;
    }
    let mut best = (f64::INFINITY, BINS);
    for i in (LEVELS..=BINS).step_by(16) {
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        // Quantize p into LEVELS bins, spreading each over its non-empty sources.
        let mut q = vec![0f64; i];
        let per = i as f64 / LEVELS as f64;
        for l in 0..LEVELS {
            let (s, e) = ((l as f64 * per) as usize, (((l + 1) as f64 * per) as usize).min(i));
            let total: f64 = hist[s..e].iter().sum();
            let nonzero = hist[s..e].iter().filter(|h| **h > 0.0).count();
            if nonzero > 0 {
                for j in s..e {
                    if hist[j] > 0.0 {
                        q[j] = total / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        let mut kl = 0.0;
        for (a, b) in p.iter().zip(&q) {
            if *a > 0.0 {
                let (a, b) = (a / ps, (b / qs).max(1e-12));
                kl += a * (a / b).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    (best.1 as f32 + 0.5) * width
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_ranges_by_method() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).chain([100.0]).collect();
        assert_eq!(range(&v, CalibrationMethod::Minmax), (0.0, 100.0));
        let (_, p) = range(&v, CalibrationMethod::Percentile { percentile: 99.0 });
        assert!((0.98..1.0).contains(&p), "{p}");
        // KL keeps a uniform range whole (any clipping moves mass into the
        // last bin, which the quantized histogram cannot match).
        let uniform: Vec<f32> = (1..=10_000).map(|i| i as f32 / 10_000.0).collect();
        let (lo, e) = range(&uniform, CalibrationMethod::Entropy);
        assert!(lo == 0.0 && e > 0.99 && e <= 1.0, "{e}");
        // zero point 1 / (4 / 255) = 63.75 -> 64
        assert_eq!(
            uint8_params(-1.0, 3.0),
            Form::StaticInt8 { scale: 4.0 / 255.0, zero_point: 64 }
        );
    }
}
