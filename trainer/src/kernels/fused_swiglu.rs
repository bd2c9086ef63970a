//! The SwiGLU gate, silu(g) ⊙ u, in one fused op with its own backward.
//!
//! Composed (`blocks::composed_swiglu`), silu(g) is a tensor of the MLP's width (2.7 to 6 times
//! the model's) that autograd keeps beside the product; this op writes only the product and its
//! backward recomputes the sigmoid: with σ = sigmoid(g), du = dy ⊙ g σ and
//! dg = dy ⊙ u ⊙ σ (1 + g (1 − σ)). Elements run in parallel (rayon).
//!
//! CPU and f32 only (`fused.rs` says where it serves); elsewhere `Mlp::forward` keeps the
//! composed path, which gives the same numbers (tests compare them, and the backward with float64
//! finite differences).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::fused::{f32_input, min_rows};

/// Elements per parallel task: small enough to spread, large enough to amortise the task.
const CHUNK: usize = 4096;

/// silu(gate) ⊙ up for two tensors of one shape (f32, CPU).
pub fn fused_swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

/// out = sigmoid(g) for each element (the vectorised exponential of `fast_exp.rs`).
fn sigmoid_into(out: &mut [f32], g: &[f32]) {
    for (o, &g) in out.iter_mut().zip(g) {
        *o = -g;
    }
    crate::kernels::fast_exp::exp_in_place(out);
    out.iter_mut().for_each(|o| *o = 1.0 / (1.0 + *o));
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gate_layout.shape() != up_layout.shape() {
            candle_core::bail!(
                "swiglu: gate {:?}, up {:?}",
                gate_layout.shape(),
                up_layout.shape()
            );
        }
        let g = f32_input("swiglu", gate, gate_layout, "gate")?;
        let u = f32_input("swiglu", up, up_layout, "up")?;
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .with_min_len(min_rows(CHUNK))
            .for_each(|(y, (g, u))| {
                sigmoid_into(y, g);
                for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                    *y *= g * u;
                }
            });
        Ok((CpuStorage::F32(out), gate_layout.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.contiguous()?;
        let part = |wanted: bool, which: Part| -> Result<Option<Tensor>> {
            if !wanted {
                return Ok(None);
            }
            gate.apply_op3_no_bwd(up, &grad_y, &SwiGluGrad(which))
                .map(Some)
        };
        Ok((
            part(gate.track_op(), Part::Gate)?,
            part(up.track_op(), Part::Up)?,
        ))
    }
}

#[derive(Clone, Copy)]
enum Part {
    Gate,
    Up,
}

/// One of the two gradients, from gate, up and the upstream gradient.
struct SwiGluGrad(Part);

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "swiglu-grad"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gate_layout.shape() != up_layout.shape() || grad_layout.shape() != up_layout.shape() {
            candle_core::bail!("swiglu-grad: shapes differ");
        }
        let g = f32_input("swiglu", gate, gate_layout, "gate")?;
        let u = f32_input("swiglu", up, up_layout, "up")?;
        let dy = f32_input("swiglu", grad, grad_layout, "gradient")?;
        let mut out = vec![0f32; g.len()];
        let which = self.0;
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .zip(dy.par_chunks(CHUNK))
            .with_min_len(min_rows(CHUNK))
            .for_each(|((d, (g, u)), dy)| {
                sigmoid_into(d, g);
                for (((d, &g), &u), &dy) in d.iter_mut().zip(g).zip(u).zip(dy) {
                    let s = *d;
                    *d = match which {
                        Part::Up => dy * g * s,
                        Part::Gate => dy * u * s * (1.0 + g * (1.0 - s)),
                    };
                }
            });
        Ok((CpuStorage::F32(out), gate_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{max_diff, to64};
    use crate::model::blocks::composed_swiglu;
    use candle_core::{DType, Device, Var};

    fn inputs() -> (Tensor, Tensor) {
        let device = Device::Cpu;
        let g = (Tensor::randn(0f32, 1.0, (2, 3, 6), &device).unwrap() * 3.0).unwrap();
        let u = Tensor::randn(0f32, 1.0, (2, 3, 6), &device).unwrap();
        (g, u)
    }

    #[test]
    fn values_match_the_composed_path_in_float64() {
        let (g, u) = inputs();
        let fused = fused_swiglu(&g, &u).unwrap();
        let reference = composed_swiglu(&to64(&g), &to64(&u)).unwrap();
        let diff = max_diff(&fused, &reference);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn gradients_match_float64_finite_differences() {
        let (g, u) = inputs();
        let upstream = Tensor::randn(0f32, 1.0, g.shape(), &Device::Cpu).unwrap();
        let (g_var, u_var) = (Var::from_tensor(&g).unwrap(), Var::from_tensor(&u).unwrap());
        let grads = (fused_swiglu(g_var.as_tensor(), u_var.as_tensor()).unwrap() * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let up64 = to64(&upstream);
        let f = |g: &[f64], u: &[f64]| -> f64 {
            let g = Tensor::from_slice(g, (2, 3, 6), &Device::Cpu).unwrap();
            let u = Tensor::from_slice(u, (2, 3, 6), &Device::Cpu).unwrap();
            (composed_swiglu(&g, &u).unwrap() * &up64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let flat = |t: &Tensor| -> Vec<f64> { to64(t).flatten_all().unwrap().to_vec1().unwrap() };
        let (gs, us) = (flat(&g), flat(&u));
        let h = 1e-6;
        for (var, perturb_gate) in [(&g_var, true), (&u_var, false)] {
            let analytic: Vec<f32> = grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (i, &a) in analytic.iter().enumerate() {
                let nudged = |delta: f64| {
                    let (mut g, mut u) = (gs.clone(), us.clone());
                    if perturb_gate {
                        g[i] += delta;
                    } else {
                        u[i] += delta;
                    }
                    f(&g, &u)
                };
                let numeric = (nudged(h) - nudged(-h)) / (2.0 * h);
                assert!(
                    (numeric - a as f64).abs() < 1e-4,
                    "{} {i}: finite difference {numeric}, fused {a}",
                    if perturb_gate { "gate" } else { "up" }
                );
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let (g, _) = inputs();
        let u = Tensor::zeros((2, 3, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(fused_swiglu(&g, &u).is_err());
    }
    /// Inputs above `fused::min_rows`' grain are split across threads; forward and gradient
    /// still equal the float64 composition and its autograd.
    #[test]
    fn large_inputs_split_across_threads_match_the_float64_composition() {
        let device = Device::Cpu;
        let g = (Tensor::randn(0f32, 1.0, (64, 1536), &device).unwrap() * 3.0).unwrap();
        let u = Tensor::randn(0f32, 1.0, (64, 1536), &device).unwrap();
        let up = Tensor::randn(0f32, 1.0, (64, 1536), &device).unwrap();
        let run = |g: &Tensor, u: &Tensor, up: &Tensor, fused: bool| {
            let (gv, uv) = (Var::from_tensor(g).unwrap(), Var::from_tensor(u).unwrap());
            let y = if fused {
                fused_swiglu(gv.as_tensor(), uv.as_tensor()).unwrap()
            } else {
                composed_swiglu(gv.as_tensor(), uv.as_tensor()).unwrap()
            };
            let grads = (&y * up).unwrap().sum_all().unwrap().backward().unwrap();
            [
                y,
                grads.get(&gv).unwrap().clone(),
                grads.get(&uv).unwrap().clone(),
            ]
        };
        let ours = run(&g, &u, &up, true);
        let expected = run(&to64(&g), &to64(&u), &to64(&up), false);
        for (a, b) in ours.iter().zip(&expected) {
            assert!(max_diff(a, b) < 1e-4);
        }
    }
}
