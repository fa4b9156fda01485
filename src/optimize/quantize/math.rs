//! The integers a weight or an activation becomes: symmetric scales per
//! channel or per block, uint8 activation parameters, and the rounding.

use super::Form;

/// Rounds to nearest, or stochastically (unbiased) with `rng`.
fn round(v: f32, rng: &mut Option<fastrand::Rng>) -> f32 {
    match rng {
        Some(r) => (v + r.f32()).floor(),
        None => v.round(),
    }
}

/// Largest int8 weight of a weight-only form: dequantized to float before
/// any product, so the whole symmetric range serves.
pub const WEIGHT_ONLY_MAX: f32 = 127.0;

/// Largest int8 weight that meets uint8 activations in an integer product
/// (`MatMulInteger`, `ConvInteger`, QDQ pairs ONNX Runtime fuses into
/// `QLinearMatMul`/`QLinearConv`): 64, ONNX Runtime's `reduce_range`.
/// x86 processors without VNNI multiply u8 by s8 with AVX2 `vpmaddubsw`,
/// which adds each pair of products into a saturating i16: with weights up
/// to 127 a pair reaches 2 x 255 x 127 = 64,770 and is cut to 32,767 (the
/// 3.7-of-25 disagreement of issue 17 on an AVX2-only EPYC), while
/// 2 x 255 x 64 = 32,640 always fits. The weight keeps 129 levels instead
/// of 255: one bit less, measured in docs/optimize.md.
pub const PRODUCT_WEIGHT_MAX: f32 = 64.0;

/// Symmetric int8 quantization per channel to integers in
/// [-`high`, `high`]. `channel_of(i)` maps a flat index to its channel;
/// returns the int8 values and one scale per channel.
pub fn quantize_i8(
    data: &[f32],
    channels: usize,
    channel_of: impl Fn(usize) -> usize,
    high: f32,
    rng: &mut Option<fastrand::Rng>,
) -> (Vec<i8>, Vec<f32>) {
    let mut amax = vec![0f32; channels];
    for (i, v) in data.iter().enumerate() {
        let c = channel_of(i);
        amax[c] = amax[c].max(v.abs());
    }
    // An all-zero channel gets scale 1 so dequantization stays finite.
    let scales: Vec<f32> = amax.iter().map(|a| if *a > 0.0 { a / high } else { 1.0 }).collect();
    let q = data
        .iter()
        .enumerate()
        .map(|(i, v)| round(v / scales[channel_of(i)], rng).clamp(-high, high) as i8)
        .collect();
    (q, scales)
}

/// Symmetric 4-bit quantization of a weight given as rows of length `k`
/// (one row per output), in blocks of `block` along the row. Returns the
/// signed values in [-8, 7] (rows padded with zeros to whole blocks) and one
/// scale per (row, block).
pub fn quantize_i4(
    rows: &[f32],
    k: usize,
    block: usize,
    rng: &mut Option<fastrand::Rng>,
) -> (Vec<i8>, Vec<f32>) {
    quantize_blocks(rows, k, block, (-8.0, 7.0), rng)
}

/// Symmetric int8 quantization of a weight given as rows of length `k` (one
/// row per output), in blocks of `block` along the row, to integers in
/// [-`high`, `high`]. Returns the values (rows padded with zeros to whole
/// blocks) and one scale per (row, block).
pub fn quantize_i8_blocks(
    rows: &[f32],
    k: usize,
    block: usize,
    high: f32,
    rng: &mut Option<fastrand::Rng>,
) -> (Vec<i8>, Vec<f32>) {
    quantize_blocks(rows, k, block, (-high, high), rng)
}

/// Block-wise symmetric quantization to integers in `(low, high)`: each
/// block's largest magnitude maps to `high`.
fn quantize_blocks(
    rows: &[f32],
    k: usize,
    block: usize,
    (low, high): (f32, f32),
    rng: &mut Option<fastrand::Rng>,
) -> (Vec<i8>, Vec<f32>) {
    let n = rows.len() / k.max(1);
    let blocks = k.div_ceil(block);
    let mut q = vec![0i8; n * blocks * block];
    let mut scales = vec![1f32; n * blocks];
    for r in 0..n {
        for b in 0..blocks {
            let start = b * block;
            let chunk = &rows[r * k + start..r * k + (start + block).min(k)];
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            // An all-zero block gets scale 1 so dequantization stays finite.
            let scale = if amax > 0.0 { amax / high } else { 1.0 };
            scales[r * blocks + b] = scale;
            for (j, v) in chunk.iter().enumerate() {
                q[(r * blocks + b) * block + j] = round(v / scale, rng).clamp(low, high) as i8;
            }
        }
    }
    (q, scales)
}

/// The nearest value an f16 holds (kept as is when that would be zero).
///
/// tract 0.23.9 loads `MatMulNBits` with block size 32 (K a multiple of 32)
/// as its Q4_0 block format, which stores each scale as an f16, while ONNX
/// Runtime uses the float scales as written: 2.4e-4 of the output scale
/// apart on the digits MLP. Scales that are already f16 values mean the same
/// in both engines (and in the unpacked form); the 11-bit scale is far finer
/// than the 4-bit step it scales.
pub fn f16_exact(s: f32) -> f32 {
    let r = half::f16::from_f32(s).to_f32();
    if r == 0.0 || !r.is_finite() { s } else { r }
}

/// uint8 asymmetric parameters for a range containing zero.
pub fn uint8_params(lo: f32, hi: f32) -> Form {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    Form::StaticInt8 { scale, zero_point }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2x2_weight_quantized_by_hand() {
        // Columns are the output channels: amax 2 and 4, scales 2/127 and 4/127.
        let w = [1.0f32, -4.0, 2.0, 1.0];
        let (q, s) = quantize_i8(&w, 2, |i| i % 2, WEIGHT_ONLY_MAX, &mut None);
        assert_eq!(s, vec![2.0 / 127.0, 4.0 / 127.0]);
        // 1 / (2/127) = 63.5 -> 64 (half away from zero); -4 -> -127; 2 -> 127; 1 -> 31.75 -> 32
        assert_eq!(q, vec![64, -127, 127, 32]);
        // 4-bit, one row of 4 in a block of 4: amax 4, scale 4/7.
        let (q4, s4) = quantize_i4(&[1.0, -4.0, 2.5, 0.0], 4, 4, &mut None);
        assert_eq!(s4, vec![4.0 / 7.0]);
        // As written: the f16 nearest 4/7 = 0.571428... is 0.5712890625 (1170 / 2048).
        assert_eq!(f16_exact(s4[0]), 1170.0 / 2048.0);
        assert_eq!(q4, vec![2, -7, 4, 0]); // 1.75 -> 2, -7, 4.375 -> 4
    }

    #[test]
    fn product_weights_cannot_saturate_a_16_bit_pair_sum() {
        // The AVX2 u8 x s8 kernel: two products of a u8 activation (up to
        // 255) and a weight, added in an i16. Every weight the product
        // forms write keeps any such pair inside i16.
        let worst = 2 * 255 * PRODUCT_WEIGHT_MAX as i32;
        assert!(worst <= i32::from(i16::MAX), "{worst}");
        assert!(2 * 255 * WEIGHT_ONLY_MAX as i32 > i32::from(i16::MAX));
        let w: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.37).collect();
        let (q, s) = quantize_i8(&w, 2, |i| i % 2, PRODUCT_WEIGHT_MAX, &mut None);
        assert!(q.iter().all(|v| v.unsigned_abs() <= 64), "{q:?}");
        assert!(q.iter().any(|v| v.unsigned_abs() == 64));
        // 31.5 * 0.37 = 11.655 is the largest magnitude of both channels.
        assert_eq!(s, vec![11.655 / 64.0; 2]);
        let (qb, _) = quantize_i8_blocks(
            &w,
            32,
            16,
            PRODUCT_WEIGHT_MAX,
            &mut Some(fastrand::Rng::with_seed(1)),
        );
        assert!(qb.iter().all(|v| v.unsigned_abs() <= 64), "{qb:?}");
    }

    #[test]
    fn int8_blocks_quantized_by_hand() {
        // Two rows of K = 3 in blocks of 2 (the second block padded).
        // Row 0: [1, -4 | 2]: scales 4/127 and 2/127.
        // Row 1: [0.5, 0.25 | 0]: scale 0.5/127, then an all-zero block (scale 1).
        let rows = [1.0f32, -4.0, 2.0, 0.5, 0.25, 0.0];
        let (q, s) = quantize_i8_blocks(&rows, 3, 2, WEIGHT_ONLY_MAX, &mut None);
        assert_eq!(s, vec![4.0 / 127.0, 2.0 / 127.0, 0.5 / 127.0, 1.0]);
        // 1 / (4/127) = 31.75 -> 32; -127 | 127, pad 0 || 127, 0.25 / (0.5/127) = 63.5 -> 64 | 0, pad 0
        assert_eq!(q, vec![32, -127, 127, 0, 127, 64, 0, 0]);
    }

    #[test]
    fn dequantized_error_is_bounded_by_the_scale() {
        // Against the naive bound: nearest rounding is within half a step,
        // stochastic within one step, for many random channels.
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..50 {
            let channels = rng.usize(1..6);
            let len = channels * rng.usize(1..40);
            let scale = rng.f32() * 10.0;
            let w: Vec<f32> = (0..len).map(|_| (rng.f32() - 0.5) * scale).collect();
            for stochastic in [false, true] {
                let mut r = stochastic.then(|| fastrand::Rng::with_seed(9));
                let (q, s) = quantize_i8(&w, channels, |i| i % channels, WEIGHT_ONLY_MAX, &mut r);
                let bound = if stochastic { 1.0 } else { 0.5 };
                for (i, (v, q)) in w.iter().zip(&q).enumerate() {
                    let step = s[i % channels];
                    let err = (v - f32::from(*q) * step).abs();
                    assert!(err <= bound * step * 1.0001, "{v} -> {q} * {step}");
                }
                let block = 16;
                let k = len;
                let (q4, s4) = quantize_i4(&w, k, block, &mut r);
                for (j, v) in w.iter().enumerate() {
                    let step = s4[j / block];
                    let err = (v - f32::from(q4[j]) * step).abs();
                    assert!(err <= bound * step * 1.0001, "{v} -> {} * {step}", q4[j]);
                }
            }
        }
    }

    #[test]
    fn stochastic_rounding_is_seeded_and_unbiased() {
        let w = vec![0.3f32; 4000];
        let mut a = Some(fastrand::Rng::with_seed(7));
        let mut b = Some(fastrand::Rng::with_seed(7));
        let (qa, s) = quantize_i8(&[&w[..], &[1.0]].concat(), 1, |_| 0, WEIGHT_ONLY_MAX, &mut a);
        let (qb, _) = quantize_i8(&[&w[..], &[1.0]].concat(), 1, |_| 0, WEIGHT_ONLY_MAX, &mut b);
        assert_eq!(qa, qb);
        // 0.3 * 127 = 38.1: mostly 38, about 10% 39; the mean stays 38.1.
        let mean = qa[..4000].iter().map(|v| f64::from(*v)).sum::<f64>() / 4000.0;
        assert!((mean - 38.1).abs() < 0.05, "{mean}");
        assert!(qa[..4000].iter().all(|v| *v == 38 || *v == 39));
        assert_eq!(s, vec![1.0 / 127.0]);
    }
}
