//! x · Wᵀ for a frozen weight W, with a backward that computes the input's gradient only.
//!
//! candle's matmul backward always computes both gradients: for `x.matmul(&w.t())` it also forms
//! xᵀ · g, a weight-sized product, and keeps it in the gradient store until the step ends, even
//! when W is a plain tensor that nothing will update. Under LoRA or QLoRA every base weight is
//! frozen, so that is a third of the step's matmul work and one weight-sized buffer per linear
//! layer spent on gradients that are thrown away (the tied output head of a 150 K vocabulary
//! alone: a 544 MB buffer and 2·tokens·vocab·hidden FLOPs). Above [`FEW_ROWS`] rows this op runs
//! the same product as candle (the same gemm on the same layouts, so the same numbers); its
//! backward returns g · W for the input and nothing for the weight, which it holds outside the
//! graph.
//!
//! A contiguous product with few rows (generation: one row per sequence per new token) skips the
//! gemm: gemm packs the whole weight into its own layout on every call, which for a handful of
//! rows costs as much as the product. [`few_rows_product`] reads each weight row once — an f32
//! row in place, a bf16 row widened into a buffer that stays in cache — and dots it with every
//! input row (the same numbers up to the order of the sums); the NF4 product decodes its 4-bit
//! rows through the same function.
//!
//! CPU only (`fused.rs` switches it with the fused ops); elsewhere, and for a weight that does
//! carry a gradient (the output head tied to a trained embedding in full fine-tuning),
//! [`frozen_matmul`] is candle's matmul.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use half::bf16;
use rayon::prelude::*;

/// Products with at most this many input rows go through [`few_rows_product`]; longer ones use
/// the gemm, which reuses each packed weight across many rows and wins there.
pub const FEW_ROWS: usize = 16;

/// A weight's rows as f32, one at a time: borrowed where the weight is f32 already, else
/// decoded or widened into the caller's buffer of one row.
pub(crate) trait WeightRows: Sync {
    fn row<'a>(&'a self, row: usize, buffer: &'a mut [f32]) -> &'a [f32];
}

/// A contiguous row-major f32 weight of `cols` columns.
struct F32Rows<'w> {
    values: &'w [f32],
    cols: usize,
}

impl WeightRows for F32Rows<'_> {
    fn row<'a>(&'a self, row: usize, _buffer: &'a mut [f32]) -> &'a [f32] {
        &self.values[row * self.cols..(row + 1) * self.cols]
    }
}

/// A contiguous row-major bf16 weight, widened a row at a time.
struct Bf16Rows<'w> {
    values: &'w [bf16],
    cols: usize,
}

impl WeightRows for Bf16Rows<'_> {
    fn row<'a>(&'a self, row: usize, buffer: &'a mut [f32]) -> &'a [f32] {
        let values = &self.values[row * self.cols..(row + 1) * self.cols];
        for (slot, value) in buffer.iter_mut().zip(values) {
            *slot = value.to_f32();
        }
        buffer
    }
}

/// x [n, cols] · Wᵀ for a weight of `out` rows of `cols`: row-major [n, out]. The weight rows
/// are shared out over the threads, each read once (into a buffer that stays in cache where it
/// must be decoded) and dotted with every input row.
pub(crate) fn few_rows_product(
    x: &[f32],
    n: usize,
    cols: usize,
    out: usize,
    weight: &impl WeightRows,
) -> Vec<f32> {
    const WEIGHT_ROWS_PER_TASK: usize = 16;
    // Weight-major first ([out, n]: each task owns a contiguous piece), transposed at the end.
    let mut by_weight_row = vec![0f32; out * n];
    if cols > 0 && n > 0 {
        by_weight_row
            .par_chunks_mut(WEIGHT_ROWS_PER_TASK * n)
            .enumerate()
            .for_each_init(
                || vec![0f32; cols],
                |buffer, (task, sums_of_rows)| {
                    for (offset, sums) in sums_of_rows.chunks_mut(n).enumerate() {
                        let row = weight.row(task * WEIGHT_ROWS_PER_TASK + offset, buffer);
                        dots(x, row, sums);
                    }
                },
            );
    }
    let mut y = vec![0f32; n * out];
    for (row, sums) in by_weight_row.chunks_exact(n.max(1)).enumerate() {
        for (input_row, sum) in sums.iter().enumerate() {
            y[input_row * out + row] = *sum;
        }
    }
    y
}

/// `sums[i]` = x row i · `w`, for x of `sums.len()` rows of `w.len()`. With AVX2 and FMA,
/// four input rows at a time share each load of the weight and keep four independent sums in
/// flight (one chain of dependent additions waits on the adder's latency; the compiler, left
/// to itself, vectorised this across rows with spills); a lone row keeps four sums over a
/// stride of 32. Fewer than four rows, with AVX-512F, go one at a time in sixteen lanes:
/// SmolLM2-shape generation at batch 1 went 25.3–25.5 → 30.0–31.5 tokens/s, batch 8 unchanged
/// (2026-12-07, Intel Xeon, 2 cores, the binaries alternated); the four-row groups in sixteen
/// lanes made batch 8 2 % slower (109.3–110.2 → 107.1–107.5), so they stay on AVX2. Elsewhere,
/// a portable loop in eight lanes.
fn dots(x: &[f32], w: &[f32], sums: &mut [f32]) {
    assert_eq!(
        x.len(),
        w.len() * sums.len(),
        "dots: {} rows of {}",
        sums.len(),
        w.len()
    );
    #[cfg(target_arch = "x86_64")]
    if sums.len() < 4 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above); the lengths were checked.
        return unsafe { dots_avx512_rows(x, w, sums) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above); the lengths were checked.
        return unsafe { dots_avx2_fma(x, w, sums) };
    }
    for (sum, input) in sums.iter_mut().zip(x.chunks_exact(w.len().max(1))) {
        *sum = dot_lanes(input, w);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2_fma(x: &[f32], w: &[f32], sums: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY (every load below): offsets stay below `cols` within a row of `x` (n · cols long)
    // and within `w` (cols long).
    let cols = w.len();
    let body = cols - cols % LANES;
    let total = |acc: __m256, row: &[f32]| -> f32 {
        let mut lanes = [0f32; LANES];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes.iter().sum::<f32>() + (body..cols).map(|k| row[k] * w[k]).sum::<f32>()
    };
    let wp = w.as_ptr();
    let zero = _mm256_setzero_ps();
    let mut groups = x.chunks_exact(4 * cols.max(1));
    let mut out = sums.chunks_exact_mut(4);
    for (group, sums) in groups.by_ref().zip(out.by_ref()) {
        let p = group.as_ptr();
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        for k in (0..body).step_by(LANES) {
            let weights = _mm256_loadu_ps(wp.add(k));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(k)), weights, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(cols + k)), weights, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(2 * cols + k)), weights, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(3 * cols + k)), weights, a3);
        }
        for (r, acc) in [a0, a1, a2, a3].into_iter().enumerate() {
            sums[r] = total(acc, &group[r * cols..(r + 1) * cols]);
        }
    }
    for (sum, row) in out
        .into_remainder()
        .iter_mut()
        .zip(groups.remainder().chunks_exact(cols.max(1)))
    {
        let p = row.as_ptr();
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        let mut k = 0;
        while k + 4 * LANES <= body {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(k)), _mm256_loadu_ps(wp.add(k)), a0);
            let k1 = k + LANES;
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(k1)), _mm256_loadu_ps(wp.add(k1)), a1);
            let k2 = k + 2 * LANES;
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(k2)), _mm256_loadu_ps(wp.add(k2)), a2);
            let k3 = k + 3 * LANES;
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(k3)), _mm256_loadu_ps(wp.add(k3)), a3);
            k += 4 * LANES;
        }
        while k < body {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(k)), _mm256_loadu_ps(wp.add(k)), a0);
            k += LANES;
        }
        let acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        *sum = total(acc, row);
    }
}

const LANES: usize = 8;

/// `dots` one row at a time in sixteen lanes (AVX-512F), each row keeping four sums in flight
/// over a stride of 64: for fewer than four rows, where no weight load is shared.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512_rows(x: &[f32], w: &[f32], sums: &mut [f32]) {
    use std::arch::x86_64::*;
    const WIDE: usize = 16;
    // SAFETY (every load below): offsets stay below `cols` within a row of `x` (n · cols long)
    // and within `w` (cols long).
    let cols = w.len();
    let body = cols - cols % WIDE;
    let wp = w.as_ptr();
    let zero = _mm512_setzero_ps();
    for (sum, row) in sums.iter_mut().zip(x.chunks_exact(cols.max(1))) {
        let p = row.as_ptr();
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        let mut k = 0;
        while k + 4 * WIDE <= body {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(k)), _mm512_loadu_ps(wp.add(k)), a0);
            let k1 = k + WIDE;
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(k1)), _mm512_loadu_ps(wp.add(k1)), a1);
            let k2 = k + 2 * WIDE;
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(k2)), _mm512_loadu_ps(wp.add(k2)), a2);
            let k3 = k + 3 * WIDE;
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(k3)), _mm512_loadu_ps(wp.add(k3)), a3);
            k += 4 * WIDE;
        }
        while k < body {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(k)), _mm512_loadu_ps(wp.add(k)), a0);
            k += WIDE;
        }
        let acc = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        *sum = _mm512_reduce_add_ps(acc) + (body..cols).map(|k| row[k] * w[k]).sum::<f32>();
    }
}

/// One dot product in eight lanes of sums (the portable path).
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_body, b_body) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_body
        .remainder()
        .iter()
        .zip(b_body.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_body.zip(b_body) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The few-rows product for a dense f32 or bf16 weight and input of the same type, both
/// contiguous; `None` where it does not apply (the gemm then runs).
fn dense_few_rows(
    x: &CpuStorage,
    x_layout: &Layout,
    weight: &CpuStorage,
    weight_layout: &Layout,
) -> Option<CpuStorage> {
    let (n, cols) = x_layout.shape().dims2().ok()?;
    let (out, _) = weight_layout.shape().dims2().ok()?;
    if n > FEW_ROWS {
        return None;
    }
    let (x_start, x_end) = x_layout.contiguous_offsets()?;
    let (w_start, w_end) = weight_layout.contiguous_offsets()?;
    match (x, weight) {
        (CpuStorage::F32(x), CpuStorage::F32(w)) => {
            let rows = F32Rows {
                values: &w[w_start..w_end],
                cols,
            };
            Some(CpuStorage::F32(few_rows_product(
                &x[x_start..x_end],
                n,
                cols,
                out,
                &rows,
            )))
        }
        (CpuStorage::BF16(x), CpuStorage::BF16(w)) => {
            let rows = Bf16Rows {
                values: &w[w_start..w_end],
                cols,
            };
            let x: Vec<f32> = x[x_start..x_end].iter().map(|v| v.to_f32()).collect();
            let y = few_rows_product(&x, n, cols, out, &rows);
            Some(CpuStorage::BF16(
                y.into_iter().map(bf16::from_f32).collect(),
            ))
        }
        _ => None,
    }
}

/// x [n, in] · Wᵀ for `weight` [out, in]: [n, out]. The gradient reaches `x` only when
/// `weight` is frozen (a tensor outside autograd's graph).
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if crate::kernels::fused::enabled() && x.device().is_cpu() && !weight.track_op() {
        x.apply_op1(FrozenMatmul {
            weight: weight.clone(),
        })
    } else {
        x.matmul(&weight.t()?)
    }
}

struct FrozenMatmul {
    weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, inner) = x_layout.shape().dims2()?;
        let (storage, layout) = self.weight.storage_and_layout();
        let Storage::Cpu(weight) = &*storage else {
            candle_core::bail!("frozen-matmul: the weight is not on the CPU");
        };
        let (out, weight_inner) = layout.shape().dims2()?;
        if weight_inner != inner {
            candle_core::bail!(
                "frozen-matmul: input {:?} does not match weight {:?}",
                x_layout.shape(),
                layout.shape()
            );
        }
        if let Some(y) = dense_few_rows(x, x_layout, weight, layout) {
            return Ok((y, Shape::from((rows, out))));
        }
        // Wᵀ as a view, the layout `weight.t()` gives the plain matmul.
        let transposed = layout.transpose(0, 1)?;
        let y = x.matmul(weight, (1, rows, out, inner), x_layout, &transposed)?;
        Ok((y, Shape::from((rows, out))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_y.matmul(&self.weight)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{assert_matches_finite_differences, max_diff, to64};
    use candle_core::{DType, Device, Var};

    fn inputs(rows: usize, inner: usize, out: usize) -> (Var, Tensor) {
        let device = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (rows, inner), &device).unwrap();
        let w = Tensor::randn(0f32, 0.5, (out, inner), &device).unwrap();
        (x, w)
    }

    #[test]
    fn forward_equals_the_float64_product_and_backward_reaches_the_input_only() {
        let (x, w) = inputs(37, 29, 41);
        let g = Tensor::randn(0f32, 1.0, (37, 41), &Device::Cpu).unwrap();
        let y =
            crate::kernels::fused::with_enabled(true, || frozen_matmul(x.as_tensor(), &w)).unwrap();
        let reference = to64(x.as_tensor()).matmul(&to64(&w).t().unwrap()).unwrap();
        assert!(max_diff(&y, &reference) < 1e-4);

        // d/dx Σ g ⊙ (x Wᵀ) = g W, in float64.
        let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let expected = to64(&g).matmul(&to64(&w)).unwrap();
        assert!(max_diff(grads.get(x.as_tensor()).unwrap(), &expected) < 1e-4);
        assert!(
            grads.get(&w).is_none(),
            "no gradient may be formed for the frozen weight"
        );
    }

    #[test]
    fn few_rows_in_f32_and_bf16_equal_the_float64_product() {
        // At most FEW_ROWS rows skip the gemm (few_rows_product); the product is the same.
        for rows in [1, 3, 7, FEW_ROWS] {
            let (x, w) = inputs(rows, 70, 45);
            let reference = to64(x.as_tensor()).matmul(&to64(&w).t().unwrap()).unwrap();
            let y = crate::kernels::fused::with_enabled(true, || frozen_matmul(x.as_tensor(), &w))
                .unwrap();
            assert!(max_diff(&y, &reference) < 1e-4, "f32, {rows} rows");
            // bf16 in and out: the reference is the float64 product of the rounded operands.
            let (xb, wb) = (
                x.as_tensor().to_dtype(DType::BF16).unwrap(),
                w.to_dtype(DType::BF16).unwrap(),
            );
            let y = crate::kernels::fused::with_enabled(true, || frozen_matmul(&xb, &wb)).unwrap();
            assert_eq!(y.dtype(), DType::BF16);
            let reference = to64(&xb).matmul(&to64(&wb).t().unwrap()).unwrap();
            // One bf16 rounding of the result: 2⁻⁸ relative.
            let tolerance = 4e-3 * (1.0 + crate::kernels::fused::test_support::max_abs(&reference));
            assert!(max_diff(&y, &reference) < tolerance, "bf16, {rows} rows");
        }
    }

    #[test]
    fn each_vector_path_of_dots_equals_the_float64_dots() {
        // `dots` takes the widest path the CPU has; each path this CPU can run is checked here,
        // over row counts that fill the four-row groups or leave a remainder, and widths with
        // and without a tail beyond the vector body.
        let device = Device::Cpu;
        let to_vec = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for cols in [1, 15, 16, 70, 576] {
            for rows in [1, 3, 4, 9] {
                let x = to_vec(Tensor::randn(0f32, 1.0, rows * cols, &device).unwrap());
                let w = to_vec(Tensor::randn(0f32, 1.0, cols, &device).unwrap());
                let want: Vec<f64> = x
                    .chunks_exact(cols)
                    .map(|row| row.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum())
                    .collect();
                let check = |path: &str, sums: &[f32]| {
                    for (got, want) in sums.iter().zip(&want) {
                        assert!(
                            (*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{path}: {rows} rows of {cols}: {got} against {want}"
                        );
                    }
                };
                let mut sums = vec![0f32; rows];
                dots(&x, &w, &mut sums);
                check("dispatched", &sums);
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        // SAFETY: the CPU has AVX-512F; the lengths match.
                        unsafe { dots_avx512_rows(&x, &w, &mut sums) };
                        check("avx512", &sums);
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: the CPU has AVX2 and FMA; the lengths match.
                        unsafe { dots_avx2_fma(&x, &w, &mut sums) };
                        check("avx2", &sums);
                    }
                }
            }
        }
    }

    #[test]
    fn the_portable_dot_equals_the_float64_dot() {
        // CPUs without AVX2 and FMA take this loop; this machine's `dots` takes the intrinsics.
        let device = Device::Cpu;
        let to_vec = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for cols in [1, 7, 8, 75] {
            let a = to_vec(Tensor::randn(0f32, 1.0, cols, &device).unwrap());
            let b = to_vec(Tensor::randn(0f32, 1.0, cols, &device).unwrap());
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot_lanes(&a, &b) as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn candle_matmul_forms_the_weight_gradient_this_op_skips() {
        // Why the op exists: the plain product's backward stores a weight-sized gradient (under
        // the transposed view, which autograd does not follow back to the frozen weight).
        let (x, w) = inputs(8, 16, 24);
        let transposed = w.t().unwrap();
        let y = x.as_tensor().matmul(&transposed).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&transposed).unwrap().dims(), &[16, 24]);
    }

    #[test]
    fn input_gradient_matches_float64_finite_differences() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (5, 7), &device).unwrap();
        let w = Tensor::randn(0f64, 0.5, (6, 7), &device).unwrap();
        let g = Tensor::randn(0f64, 1.0, (5, 6), &device).unwrap();
        let loss = |x: &Tensor| -> f64 {
            crate::kernels::fused::with_enabled(true, || frozen_matmul(x, &w))
                .unwrap()
                .mul(&g)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let var = Var::from_tensor(&x).unwrap();
        let y = crate::kernels::fused::with_enabled(true, || frozen_matmul(var.as_tensor(), &w))
            .unwrap();
        let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let analytic = grads.get(var.as_tensor()).unwrap();
        assert_matches_finite_differences(&x, analytic, loss, 1e-6);
    }

    #[test]
    fn a_weight_that_carries_a_gradient_keeps_it() {
        // The output head tied to a trained embedding: the weight is a variable.
        let (x, w) = inputs(4, 6, 5);
        let w = Var::from_tensor(&w).unwrap();
        let y = crate::kernels::fused::with_enabled(true, || {
            frozen_matmul(x.as_tensor(), w.as_tensor())
        })
        .unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let expected = to64(x.as_tensor())
            .t()
            .unwrap()
            .matmul(&Tensor::ones((4, 5), DType::F64, &Device::Cpu).unwrap())
            .unwrap()
            .t()
            .unwrap();
        assert!(max_diff(grads.get(w.as_tensor()).unwrap(), &expected) < 1e-4);
    }

    #[test]
    fn a_strided_input_gives_the_same_product() {
        // A transposed (non-contiguous) input goes through the same gemm as candle's matmul
        // (few rows, but not contiguous: not the few-rows path).
        let (x, w) = inputs(12, 9, 10);
        let xt = x
            .as_tensor()
            .t()
            .unwrap()
            .contiguous()
            .unwrap()
            .t()
            .unwrap();
        let ours = crate::kernels::fused::with_enabled(true, || frozen_matmul(&xt, &w)).unwrap();
        let plain = xt.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(max_diff(&ours, &plain), 0.0);
    }
}
