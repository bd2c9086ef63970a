//! Rotary position embeddings (rotate-half, as in Llama and Qwen2) in one fused op with its own
//! backward.
//!
//! Composed (`blocks::Rope::apply_composed`), the four products with cos and sin, their sum and
//! difference and the concatenation each write a tensor that autograd keeps: about four
//! query-sized tensors for each of q and k in every layer. This op writes only its output. A
//! rotation's backward is the inverse rotation (sin negated), so the backward is the same
//! kernel: for x = [x₁, x₂], y = [x₁ cos − x₂ sin, x₂ cos + x₁ sin] and
//! dx = [dy₁ cos + dy₂ sin, dy₂ cos − dy₁ sin]. Rows run in parallel (rayon).
//!
//! CPU and f32 only (`fused.rs` says where it serves); elsewhere `Rope::apply` keeps the
//! composed path, which gives the same numbers (tests compare them, and the backward with float64
//! finite differences).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::fused::{f32_input, min_rows};

/// Rotate x [b, h, t, d] (f32, CPU) by cos and sin [t, d / 2] (row i: position of query i).
pub fn fused_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rotate { inverse: false },
    )
}

/// The rotation by the angles (forward) or by their negatives (`inverse`: the backward).
struct Rotate {
    inverse: bool,
}

impl CustomOp3 for Rotate {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        cos: &CpuStorage,
        cos_layout: &Layout,
        sin: &CpuStorage,
        sin_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, _, time, dim) = x_layout.shape().dims4()?;
        let half = dim / 2;
        if dim % 2 != 0
            || cos_layout.shape().dims() != [time, half]
            || sin_layout.shape() != cos_layout.shape()
        {
            candle_core::bail!(
                "rope: cos {:?} and sin {:?} for input {:?}",
                cos_layout.shape(),
                sin_layout.shape(),
                x_layout.shape()
            );
        }
        let x = f32_input("rope", x, x_layout, "input")?;
        let cos = f32_input("rope", cos, cos_layout, "cos")?;
        let sin = f32_input("rope", sin, sin_layout, "sin")?;
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(dim)
            .zip(x.par_chunks(dim))
            .enumerate()
            .with_min_len(min_rows(dim))
            .for_each(|(row, (y, x))| {
                let position = row % time;
                let cos = &cos[position * half..][..half];
                let sin = &sin[position * half..][..half];
                let (x1, x2) = x.split_at(half);
                let (y1, y2) = y.split_at_mut(half);
                for j in 0..half {
                    let s = sign * sin[j];
                    y1[j] = x1[j] * cos[j] - x2[j] * s;
                    y2[j] = x2[j] * cos[j] + x1[j] * s;
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !x.track_op() {
            return Ok((None, None, None));
        }
        let grad = grad_y.contiguous()?.apply_op3_no_bwd(
            cos,
            sin,
            &Rotate {
                inverse: !self.inverse,
            },
        )?;
        Ok((Some(grad), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{max_diff, to64};
    use crate::model::blocks::composed_rope;
    use candle_core::{Device, Var};

    fn inputs() -> (Tensor, Tensor, Tensor) {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &device).unwrap();
        let angles = (Tensor::randn(0f32, 1.0, (5, 4), &device).unwrap() * 2.0).unwrap();
        (x, angles.cos().unwrap(), angles.sin().unwrap())
    }

    #[test]
    fn values_match_the_composed_path_in_float64() {
        let (x, cos, sin) = inputs();
        let fused = fused_rope(&x, &cos, &sin).unwrap();
        let reference = composed_rope(&to64(&x), &to64(&cos), &to64(&sin)).unwrap();
        let diff = max_diff(&fused, &reference);
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn gradient_matches_float64_finite_differences() {
        let (x, cos, sin) = inputs();
        let upstream = Tensor::randn(0f32, 1.0, x.shape(), &Device::Cpu).unwrap();
        let var = Var::from_tensor(&x).unwrap();
        let grads = (fused_rope(var.as_tensor(), &cos, &sin).unwrap() * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad: Vec<f32> = grads
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (cos64, sin64, up64) = (to64(&cos), to64(&sin), to64(&upstream));
        let f = |values: &[f64]| -> f64 {
            let x = Tensor::from_slice(values, x.shape(), &Device::Cpu).unwrap();
            (composed_rope(&x, &cos64, &sin64).unwrap() * &up64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let base: Vec<f64> = to64(&x).flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for (i, &g) in grad.iter().enumerate() {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += h;
            minus[i] -= h;
            let numeric = (f(&plus) - f(&minus)) / (2.0 * h);
            assert!(
                (numeric - g as f64).abs() < 1e-5,
                "element {i}: finite difference {numeric}, fused {g}"
            );
        }
    }

    #[test]
    fn mismatched_angles_are_an_error() {
        let (x, cos, sin) = inputs();
        let short = cos.narrow(0, 0, 4).unwrap();
        assert!(fused_rope(&x, &short, &sin).is_err());
    }
    /// Inputs above `fused::min_rows`' grain are split across threads; forward and gradient
    /// still equal the float64 composition and its autograd.
    #[test]
    fn large_inputs_split_across_threads_match_the_float64_composition() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 9, 64, 64), &device).unwrap();
        let angles = Tensor::randn(0f32, 1.0, (64, 32), &device).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let up = Tensor::randn(0f32, 1.0, x.shape(), &device).unwrap();
        let run = |x: &Tensor, cos: &Tensor, sin: &Tensor, up: &Tensor, fused: bool| {
            let var = Var::from_tensor(x).unwrap();
            let y = if fused {
                fused_rope(var.as_tensor(), cos, sin).unwrap()
            } else {
                composed_rope(var.as_tensor(), cos, sin).unwrap()
            };
            let grads = (&y * up).unwrap().sum_all().unwrap().backward().unwrap();
            [y, grads.get(&var).unwrap().clone()]
        };
        let ours = run(&x, &cos, &sin, &up, true);
        let expected = run(&to64(&x), &to64(&cos), &to64(&sin), &to64(&up), false);
        for (a, b) in ours.iter().zip(&expected) {
            assert!(max_diff(a, b) < 1e-5);
        }
    }
}
