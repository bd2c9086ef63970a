//! Products of f32 matrices held in slices, by gemm (the crate under candle's CPU matmul).
//!
//! The fused ops that multiply (`fused_lora.rs`, `fused_head_logprobs.rs`) work on their
//! inputs' slices: wrapping a slice in a tensor for candle's matmul copies it, and candle's
//! matmul cannot accumulate into an existing product (dst += s·A·B), which saves a pass and a
//! buffer wherever a sum of products is formed. Views carry strides, so a transpose costs
//! nothing; gemm packs whatever layout it gets.

use gemm::Parallelism;

/// A matrix over a slice: `rows × cols`, element (i, j) at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A row-major `rows × cols` matrix.
    pub(crate) fn new(values: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(values.len(), rows * cols, "a matrix's size");
        Self {
            values,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// Products of at least this many multiply-adds are split across rayon's threads; below it
/// handing work to another thread costs more than it saves (the rank-r products).
const PARALLEL_MULTIPLY_ADDS: usize = 1 << 20;

/// dst [m, n] (row-major) = lhs [m, k] · rhs [k, n], or with `accumulate: Some(s)`,
/// dst += s · lhs · rhs.
pub(crate) fn product(dst: &mut [f32], lhs: Matrix, rhs: Matrix, accumulate: Option<f32>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && dst.len() == m * n, "product dimensions");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if accumulate.is_none() {
            dst.fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_MULTIPLY_ADDS {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every view was built over a slice holding exactly rows × cols elements at its
    // strides (`Matrix::new`, checked), the transpose only swaps them, and dst holds m × n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate.is_some(),
            lhs.values.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.values.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            accumulate.unwrap_or(1.0),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unitforge_sandbox::rng::SplitMix64;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len)
            .map(|_| (rng.uniform() * 2.0 - 1.0) as f32)
            .collect()
    }

    /// Element (i, j) of a view, by its strides.
    fn at(m: Matrix, i: usize, j: usize) -> f64 {
        f64::from(m.values[i * m.row_stride + j * m.col_stride])
    }

    #[test]
    fn products_of_views_equal_float64_sums_and_accumulate() {
        // Below and above the size split across threads; plain and transposed operands.
        for (m, k, n) in [(3, 5, 4), (70, 130, 150)] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let start = values(m * n, 3);
            let views = [
                (Matrix::new(&a, m, k), Matrix::new(&b, k, n)),
                (Matrix::new(&a, k, m).t(), Matrix::new(&b, n, k).t()),
            ];
            for (lhs, rhs) in views {
                let expected =
                    |i: usize, j: usize| (0..k).map(|p| at(lhs, i, p) * at(rhs, p, j)).sum::<f64>();
                let mut dst = vec![7f32; m * n];
                product(&mut dst, lhs, rhs, None);
                let mut acc = start.clone();
                product(&mut acc, lhs, rhs, Some(0.5));
                for i in 0..m {
                    for j in 0..n {
                        let e = expected(i, j);
                        assert!((f64::from(dst[i * n + j]) - e).abs() < 1e-4, "({i}, {j})");
                        let e = f64::from(start[i * n + j]) + 0.5 * e;
                        assert!(
                            (f64::from(acc[i * n + j]) - e).abs() < 1e-4,
                            "({i}, {j}) accumulated"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_empty_inner_dimension_is_zero_or_leaves_the_sum() {
        let mut dst = vec![3f32; 6];
        product(
            &mut dst,
            Matrix::new(&[], 2, 0),
            Matrix::new(&[], 0, 3),
            Some(1.0),
        );
        assert_eq!(dst, vec![3.0; 6]);
        product(
            &mut dst,
            Matrix::new(&[], 2, 0),
            Matrix::new(&[], 0, 3),
            None,
        );
        assert_eq!(dst, vec![0.0; 6]);
    }
}
