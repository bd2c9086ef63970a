//! The exponential of f32 slices, eight lanes at a time, for the fused ops' softmaxes and
//! sigmoids.
//!
//! libm's `expf` is scalar: in a training step it was ~5 % (SmolLM2 shape) to ~9 % (tiny shape)
//! of the time, called once per attention probability, per SwiGLU element (twice more in the
//! backward) and per vocabulary entry of the log-probabilities. Here, on a CPU with AVX2 and FMA
//! (checked at run time), eight at once: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r from Cephes'
//! degree-6 polynomial, 2^n put into the exponent bits (as two factors, so that n = 128 and
//! n = −126 stay representable). Within 2 ulp of the exact value over f32's normal range (tests
//! compare with float64); exp(0) = 1 exactly, so a softmax's largest term stays 1. Results that
//! would be subnormal (x < −87.34) are 0 — an absolute error below 1.2·10⁻³⁸ — above 88.38 they
//! are +inf, and NaN stays NaN. The slice's tail shorter than eight lanes goes through the same
//! kernel (padded), so every element of a run gets the same arithmetic. Other CPUs use libm.

/// Below this the result is subnormal: 0 here (`ln` of f32's smallest normal number).
const LOWEST: f32 = -87.336_55;
/// Above this the result overflows f32: +inf.
const HIGHEST: f32 = 88.376_26;
const LANES: usize = 8;

/// `values[i] = exp(values[i])` for every element.
pub fn exp_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { exp_avx2_fma(values) };
        return;
    }
    values.iter_mut().for_each(|v| *v = v.exp());
}

/// Σ exp(values[i] − shift), summed in f64, leaving exp(values[i] − shift) in `values`: a
/// log-sum-exp's or a softmax's denominator in one pass over the row.
pub fn exp_shifted_sum(values: &mut [f32], shift: f32) -> f64 {
    values.iter_mut().for_each(|v| *v -= shift);
    exp_in_place(values);
    values.iter().map(|&v| f64::from(v)).sum()
}

/// Σ exp(values[i] · scale − shift), summed in f64, `values` unchanged: the sum of a
/// log-sum-exp over a row of logits (scale = 1 / temperature, shift = the row's maximum).
pub fn scaled_shifted_exp_sum(values: &[f32], scale: f32, shift: f32) -> f64 {
    // Blocks on the stack: no allocation per row, and a block stays in L1 between the passes.
    const BLOCK: usize = 256;
    let mut terms = [0f32; BLOCK];
    let mut sum = 0f64;
    for block in values.chunks(BLOCK) {
        let terms = &mut terms[..block.len()];
        for (t, &v) in terms.iter_mut().zip(block) {
            *t = v * scale - shift;
        }
        exp_in_place(terms);
        sum += terms.iter().map(|&t| f64::from(t)).sum::<f64>();
    }
    sum
}

/// out = factor · softmax(row / T) = factor · exp(row / T − lse), from the row's log-sum-exp
/// `lse` of row / T: a log-probability's backward without its target's +1 (both log-prob ops).
pub fn softmax_times(out: &mut [f32], row: &[f32], inv_t: f32, lse: f32, factor: f32) {
    for (o, &z) in out.iter_mut().zip(row) {
        *o = z * inv_t - lse;
    }
    exp_in_place(out);
    out.iter_mut().for_each(|o| *o *= factor);
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2_fma(values: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut blocks = values.chunks_exact_mut(LANES);
    for block in &mut blocks {
        // SAFETY: `block` holds exactly LANES f32 (unaligned loads and stores).
        let x = _mm256_loadu_ps(block.as_ptr());
        _mm256_storeu_ps(block.as_mut_ptr(), exp8(x));
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let mut padded = [0f32; LANES];
        padded[..tail.len()].copy_from_slice(tail);
        let x = _mm256_loadu_ps(padded.as_ptr());
        _mm256_storeu_ps(padded.as_mut_ptr(), exp8(x));
        tail.copy_from_slice(&padded[..tail.len()]);
    }
}

/// exp of eight lanes (see the module comment for the method and its limits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // ln 2 split in two, so that n · ln2_high is exact for |n| ≤ 128.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    const COEFFICIENTS: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    let low = _mm256_set1_ps(LOWEST);
    let high = _mm256_set1_ps(HIGHEST);
    // The clamped argument (min/max return their second operand for NaN: the clamp of a NaN is
    // `high`; its lane is replaced by the NaN at the end).
    let clamped = _mm256_max_ps(_mm256_min_ps(x, high), low);
    let n = _mm256_round_ps(
        _mm256_mul_ps(clamped, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), clamped);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LOW), r);
    let mut p = _mm256_set1_ps(COEFFICIENTS[0]);
    for &c in &COEFFICIENTS[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let e_r = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    // 2^n as 2^(n>>1) · 2^(n − n>>1): each factor's exponent within [−63, 64].
    let n = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32(n, 1);
    let rest = _mm256_sub_epi32(n, half);
    let bias = _mm256_set1_epi32(127);
    let pow2 = |k: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, bias), 23));
    let y = _mm256_mul_ps(_mm256_mul_ps(e_r, pow2(half)), pow2(rest));
    let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, low, _CMP_LT_OQ));
    let y = _mm256_blendv_ps(
        y,
        _mm256_set1_ps(f32::INFINITY),
        _mm256_cmp_ps(x, high, _CMP_GT_OQ),
    );
    _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error in units of f32's epsilon, against float64.
    fn ulps(got: f32, x: f32) -> f64 {
        let exact = f64::from(x).exp();
        (f64::from(got) - exact).abs() / (exact * f64::from(f32::EPSILON))
    }

    #[test]
    fn within_two_ulp_of_float64_over_the_normal_range() {
        let count = 2_000_003;
        let mut xs: Vec<f32> = (0..count)
            .map(|i| LOWEST + (HIGHEST - LOWEST) * i as f32 / (count - 1) as f32)
            .collect();
        // Where softmaxes live: small negative arguments, densely.
        xs.extend((0..100_001).map(|i| -20.0 * i as f32 / 100_000.0));
        let mut got = xs.clone();
        exp_in_place(&mut got);
        let worst = xs
            .iter()
            .zip(&got)
            .filter(|(&x, _)| f64::from(x).exp() >= f64::from(f32::MIN_POSITIVE))
            .map(|(&x, &y)| ulps(y, x))
            .fold(0.0, f64::max);
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn edges_zero_overflow_underflow_and_nan() {
        let mut v = vec![
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -1.0e4,
            -88.0,
            89.0,
            88.0,
        ];
        exp_in_place(&mut v);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], 1.0);
        assert_eq!(v[2], 0.0);
        assert_eq!(v[3], f32::INFINITY);
        assert!(v[4].is_nan());
        assert_eq!(v[5], 0.0);
        assert!(v[6] >= 0.0 && v[6] < f32::MIN_POSITIVE);
        assert_eq!(v[7], f32::INFINITY);
        assert!(ulps(v[8], 88.0) <= 2.0, "exp(88) = {}", v[8]);
    }

    #[test]
    fn every_length_and_every_tail_position_alike() {
        // The tail goes through the padded kernel: an element's result does not depend on where
        // it sits in the slice.
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.731).collect();
        let mut whole = xs.clone();
        exp_in_place(&mut whole);
        for start in 0..xs.len() {
            for end in start..=xs.len() {
                let mut part = xs[start..end].to_vec();
                exp_in_place(&mut part);
                assert_eq!(part, whole[start..end]);
            }
        }
    }

    #[test]
    fn shifted_sum_is_a_softmax_denominator() {
        let row: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 3.0)
            .collect();
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut terms = row.clone();
        let sum = exp_shifted_sum(&mut terms, max);
        let exact: f64 = row
            .iter()
            .map(|&x| (f64::from(x) - f64::from(max)).exp())
            .sum();
        assert!((sum - exact).abs() / exact < 1e-6, "{sum} vs {exact}");
        assert!(terms.contains(&1.0), "the largest term is exp(0) = 1");
    }

    #[test]
    fn softmax_times_equals_the_float64_softmax() {
        let row: Vec<f32> = (0..300)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 4.0)
            .collect();
        let inv_t = 1.0 / 0.9;
        let z: Vec<f64> = row.iter().map(|&x| f64::from(x * inv_t)).collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
        let mut out = vec![0f32; row.len()];
        softmax_times(&mut out, &row, inv_t, lse as f32, -2.5);
        for (&o, &v) in out.iter().zip(&z) {
            let want = -2.5 * (v - lse).exp();
            assert!((f64::from(o) - want).abs() < 1e-6, "{o} vs {want}");
        }
    }

    #[test]
    fn scaled_shifted_sum_over_several_blocks_leaves_the_row() {
        let row: Vec<f32> = (0..1000)
            .map(|i| ((i * 613) % 997) as f32 * 0.02 - 9.0)
            .collect();
        let (scale, shift) = (1.0 / 0.7, 12.0);
        let before = row.clone();
        let sum = scaled_shifted_exp_sum(&row, scale, shift);
        let exact: f64 = row
            .iter()
            .map(|&x| (f64::from(x * scale) - f64::from(shift)).exp())
            .sum();
        assert!((sum - exact).abs() / exact < 1e-6, "{sum} vs {exact}");
        assert_eq!(row, before);
    }
}
