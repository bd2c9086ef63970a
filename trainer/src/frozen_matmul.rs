//! x · Wᵀ for a frozen weight W, with a backward that computes the input's gradient only.
//!
//! candle's matmul backward always computes both gradients: for `x.matmul(&w.t())` it also forms
//! xᵀ · g, a weight-sized product, and keeps it in the gradient store until the step ends, even
//! when W is a plain tensor that nothing will update. Under LoRA or QLoRA every base weight is
//! frozen, so that is a third of the step's matmul work and one weight-sized buffer per linear
//! layer spent on gradients that are thrown away (the tied output head of a 150 K vocabulary
//! alone: a 544 MB buffer and 2·tokens·vocab·hidden FLOPs). This op runs the same product as
//! candle (the same gemm on the same layouts, so the same numbers) and its backward returns
//! g · W for the input and nothing for the weight, which it holds outside the graph.
//!
//! CPU only (`fused.rs` switches it with the fused ops); elsewhere, and for a weight that does
//! carry a gradient (the output head tied to a trained embedding in full fine-tuning),
//! [`frozen_matmul`] is candle's matmul.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

/// x [n, in] · Wᵀ for `weight` [out, in]: [n, out]. The gradient reaches `x` only when
/// `weight` is frozen (a tensor outside autograd's graph).
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if crate::fused::enabled() && x.device().is_cpu() && !weight.track_op() {
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
    use crate::fused::test_support::{assert_matches_finite_differences, max_diff, to64};
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
        let y = crate::fused::with_enabled(true, || frozen_matmul(x.as_tensor(), &w)).unwrap();
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
            crate::fused::with_enabled(true, || frozen_matmul(x, &w))
                .unwrap()
                .mul(&g)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let var = Var::from_tensor(&x).unwrap();
        let y = crate::fused::with_enabled(true, || frozen_matmul(var.as_tensor(), &w)).unwrap();
        let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let analytic = grads.get(var.as_tensor()).unwrap();
        assert_matches_finite_differences(&x, analytic, loss, 1e-6);
    }

    #[test]
    fn a_weight_that_carries_a_gradient_keeps_it() {
        // The output head tied to a trained embedding: the weight is a variable.
        let (x, w) = inputs(4, 6, 5);
        let w = Var::from_tensor(&w).unwrap();
        let y = crate::fused::with_enabled(true, || frozen_matmul(x.as_tensor(), w.as_tensor()))
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
        // A transposed (non-contiguous) input goes through the same gemm as candle's matmul.
        let (x, w) = inputs(12, 9, 10);
        let xt = x
            .as_tensor()
            .t()
            .unwrap()
            .contiguous()
            .unwrap()
            .t()
            .unwrap();
        let ours = crate::fused::with_enabled(true, || frozen_matmul(&xt, &w)).unwrap();
        let plain = xt.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(max_diff(&ours, &plain), 0.0);
    }
}
