//! RMSNorm, x / √(mean(x²) + ε) ⊙ w over the last dimension, in one fused op with its own
//! backward.
//!
//! Composed (`blocks::composed_rms_norm`), the square, the quotient and the product each write
//! a tensor the size of the residual stream that autograd keeps — three per norm, two norms per
//! layer. This op writes only its output; its backward recomputes each row's 1/r from the input
//! (which the residual connection keeps anyway) and writes the two gradients,
//!   dx = (w ⊙ dy) / r − x · Σ(w ⊙ dy ⊙ x) / (n r³),   dw = Σ_rows dy ⊙ x / r,
//! the second only when the weight is trained. Rows run in parallel (rayon).
//!
//! CPU and f32 only (`fused.rs` says where it serves); elsewhere
//! [`rms_norm`](crate::model::blocks::rms_norm) keeps the composed path, which gives the same numbers
//! (tests compare them, and the backward with float64 finite differences).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::fused::{f32_input, min_rows};

/// RMSNorm of x [.., n] (f32, CPU) with weight [n].
pub fn fused_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

/// The row length n, checked against the weight's.
fn row_len(x: &Layout, weight: &Layout) -> Result<usize> {
    let n = *x.shape().dims().last().unwrap_or(&0);
    if weight.shape().dims() != [n] || n == 0 {
        candle_core::bail!(
            "rms-norm: weight {:?} for input {:?}",
            weight.shape(),
            x.shape()
        );
    }
    Ok(n)
}

/// 1 / √(mean(x²) + ε) of one row.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let mean_square = row.iter().map(|x| x * x).sum::<f32>() / row.len() as f32;
    1.0 / (mean_square + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = row_len(x_layout, weight_layout)?;
        let x = f32_input("rms-norm", x, x_layout, "input")?;
        let w = f32_input("rms-norm", weight, weight_layout, "weight")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .with_min_len(min_rows(n))
            .for_each(|(y, x)| {
                let inv = inv_rms(x, self.eps);
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * inv * w;
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.contiguous()?;
        let grad_x = if x.track_op() {
            Some(x.apply_op3_no_bwd(weight, &grad_y, &RmsNormGradInput { eps: self.eps })?)
        } else {
            None
        };
        let grad_w = if weight.track_op() {
            Some(x.apply_op2_no_bwd(&grad_y, &RmsNormGradWeight { eps: self.eps })?)
        } else {
            None
        };
        Ok((grad_x, grad_w))
    }
}

/// dx = (w ⊙ dy) / r − x · Σ(w ⊙ dy ⊙ x) / (n r³), row by row.
struct RmsNormGradInput {
    eps: f32,
}

impl CustomOp3 for RmsNormGradInput {
    fn name(&self) -> &'static str {
        "rms-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = row_len(x_layout, weight_layout)?;
        if grad_layout.shape() != x_layout.shape() {
            candle_core::bail!("rms-norm-grad-input: gradient shape differs from the input's");
        }
        let x = f32_input("rms-norm", x, x_layout, "input")?;
        let w = f32_input("rms-norm", weight, weight_layout, "weight")?;
        let dy = f32_input("rms-norm", grad, grad_layout, "gradient")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n).zip(dy.par_chunks(n)))
            .with_min_len(min_rows(n))
            .for_each(|(dx, (x, dy))| {
                let inv = inv_rms(x, self.eps);
                let dot: f32 = x.iter().zip(dy).zip(w).map(|((x, dy), w)| w * dy * x).sum();
                let coefficient = dot * inv * inv * inv / n as f32;
                for (((dx, &x), &dy), &w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                    *dx = w * dy * inv - x * coefficient;
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// dw = Σ_rows dy ⊙ x / r.
struct RmsNormGradWeight {
    eps: f32,
}

impl CustomOp2 for RmsNormGradWeight {
    fn name(&self) -> &'static str {
        "rms-norm-grad-weight"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if grad_layout.shape() != x_layout.shape() {
            candle_core::bail!("rms-norm-grad-weight: gradient shape differs from the input's");
        }
        let n = *x_layout.shape().dims().last().unwrap_or(&0);
        let x = f32_input("rms-norm", x, x_layout, "input")?;
        let dy = f32_input("rms-norm", grad, grad_layout, "gradient")?;
        let dw = x
            .par_chunks(n)
            .zip(dy.par_chunks(n))
            .with_min_len(min_rows(n))
            .fold(
                || vec![0f32; n],
                |mut dw, (x, dy)| {
                    let inv = inv_rms(x, self.eps);
                    for ((dw, &x), &dy) in dw.iter_mut().zip(x).zip(dy) {
                        *dw += dy * x * inv;
                    }
                    dw
                },
            )
            .reduce(
                || vec![0f32; n],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        Ok((CpuStorage::F32(dw), Shape::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{max_abs, max_diff, to64};
    use crate::model::blocks::composed_rms_norm;
    use candle_core::{DType, Device, Var};

    const EPS: f64 = 1e-5;

    fn inputs() -> (Tensor, Tensor) {
        let device = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (2, 3, 7), &device).unwrap() * 2.0).unwrap();
        let w = (Tensor::randn(0f32, 1.0, 7, &device).unwrap() + 1.0).unwrap();
        (x, w)
    }

    #[test]
    fn values_match_the_composed_path_in_float64() {
        let (x, w) = inputs();
        let fused = fused_rms_norm(&x, &w, EPS).unwrap();
        let reference = composed_rms_norm(&to64(&x), &to64(&w), EPS).unwrap();
        let diff = max_diff(&fused, &reference);
        assert!(diff < 1e-5, "{diff}");
    }

    /// Both gradients (input and weight) against central differences of the float64
    /// composition, at the same point.
    #[test]
    fn gradients_match_float64_finite_differences() {
        let (x, w) = inputs();
        let upstream = Tensor::randn(0f32, 1.0, x.shape(), &Device::Cpu).unwrap();
        let (x_var, w_var) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
        let loss = (fused_rms_norm(x_var.as_tensor(), w_var.as_tensor(), EPS).unwrap() * &upstream)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        let (x64, w64, up64) = (flat(&x), flat(&w), upstream.to_dtype(DType::F64).unwrap());
        let f = |x: &[f64], w: &[f64]| -> f64 {
            let x = Tensor::from_slice(x, (2, 3, 7), &Device::Cpu).unwrap();
            let w = Tensor::from_slice(w, 7, &Device::Cpu).unwrap();
            (composed_rms_norm(&x, &w, EPS).unwrap() * &up64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (xs, ws) = (x64.to_vec1::<f64>().unwrap(), w64.to_vec1::<f64>().unwrap());
        let h = 1e-6;
        let check = |analytic: Vec<f32>, perturb_x: bool| {
            let base = if perturb_x { &xs } else { &ws };
            for (i, &g) in analytic.iter().enumerate() {
                let (mut plus, mut minus) = (base.clone(), base.clone());
                plus[i] += h;
                minus[i] -= h;
                let numeric = if perturb_x {
                    (f(&plus, &ws) - f(&minus, &ws)) / (2.0 * h)
                } else {
                    (f(&xs, &plus) - f(&xs, &minus)) / (2.0 * h)
                };
                assert!(
                    (numeric - g as f64).abs() < 1e-4,
                    "{} {i}: finite difference {numeric}, fused {g}",
                    if perturb_x { "input" } else { "weight" }
                );
            }
        };
        let get = |v: &Var| {
            grads
                .get(v)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        check(get(&x_var), true);
        check(get(&w_var), false);
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient() {
        let (x, w) = inputs();
        let x_var = Var::from_tensor(&x).unwrap();
        let grads = fused_rms_norm(x_var.as_tensor(), &w, EPS)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&x_var).is_some());
        assert!(grads.get(&w).is_none());
    }

    #[test]
    fn a_mismatched_weight_is_an_error() {
        let (x, _) = inputs();
        let w = Tensor::ones(6, DType::F32, &Device::Cpu).unwrap();
        assert!(fused_rms_norm(&x, &w, EPS).is_err());
    }
    /// Inputs above `fused::min_rows`' grain are split across threads; forward and gradient
    /// still equal the float64 composition and its autograd.
    #[test]
    fn large_inputs_split_across_threads_match_the_float64_composition() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (96, 1024), &device).unwrap();
        let w = (Tensor::randn(0f32, 1.0, 1024, &device).unwrap() + 1.0).unwrap();
        let upstream = Tensor::randn(0f32, 1.0, (96, 1024), &device).unwrap();
        let grads_of = |x: &Tensor, w: &Tensor, up: &Tensor, fused: bool| {
            let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
            let y = if fused {
                fused_rms_norm(xv.as_tensor(), wv.as_tensor(), EPS).unwrap()
            } else {
                composed_rms_norm(xv.as_tensor(), wv.as_tensor(), EPS).unwrap()
            };
            let grads = (&y * up).unwrap().sum_all().unwrap().backward().unwrap();
            [
                y,
                grads.get(&xv).unwrap().clone(),
                grads.get(&wv).unwrap().clone(),
            ]
        };
        let fused = grads_of(&x, &w, &upstream, true);
        let reference = grads_of(&to64(&x), &to64(&w), &to64(&upstream), false);
        for (ours, expected) in fused.iter().zip(&reference) {
            assert!(max_diff(ours, expected) < 1e-4 * max_abs(expected).max(1.0));
        }
    }
}
