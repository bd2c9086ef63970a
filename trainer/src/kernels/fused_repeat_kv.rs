//! Grouped-query attention's repeat of the key and value heads, as one op with its own backward.
//!
//! With fewer key/value heads than query heads, query head h reads key/value head h / repeats
//! (Hugging Face's `repeat_kv`). Composed, that is an unsqueeze, a broadcast and a reshape that
//! copies: three graph nodes, each summed into a fresh zero tensor in the backward, and the
//! broadcast's backward a sum over a strided axis (candle's generic reduction, 3 % of a tiny
//! full-fine-tuning step's samples). Here the forward copies each head's block `repeats` times
//! and the backward adds the `repeats` contiguous blocks of the gradient back into one. The
//! binary before and after, alternated (2026-12-05, AMD EPYC with AVX-512): tiny full step
//! 0.034–0.036 → 0.029–0.033 s, tiny LoRA 0.041–0.044 → 0.038–0.040 s. CPU and f32
//! only; elsewhere the composition serves, which gives the same numbers (tests compare them, and
//! the backward with float64 finite differences).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use crate::kernels::fused::{f32_input, f32_storage};

const OP: &str = "repeat-kv";

/// [batch, kv_heads, time, head_dim] → [batch, kv_heads · repeats, time, head_dim], head h of the
/// result being head h / repeats of the input.
pub fn repeat_kv(x: &Tensor, repeats: usize) -> Result<Tensor> {
    if repeats == 1 {
        return Ok(x.clone());
    }
    if crate::kernels::fused::applies(x) {
        return x.contiguous()?.apply_op1(RepeatKv { repeats });
    }
    let (batch, kv_heads, time, head_dim) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((batch, kv_heads, repeats, time, head_dim))?
        .reshape((batch, kv_heads * repeats, time, head_dim))
}

struct RepeatKv {
    repeats: usize,
}

impl CustomOp1 for RepeatKv {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (batch, kv_heads, time, head_dim) = layout.shape().dims4()?;
        let values = f32_input(OP, x, layout, "keys or values")?;
        let block = time * head_dim;
        let mut out = Vec::with_capacity(values.len() * self.repeats);
        for head in values.chunks_exact(block.max(1)) {
            for _ in 0..self.repeats {
                out.extend_from_slice(head);
            }
        }
        let shape = Shape::from((batch, kv_heads * self.repeats, time, head_dim));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, time, head_dim) = x.dims4()?;
        let grad_y = grad_y.contiguous()?;
        let (storage, layout) = grad_y.storage_and_layout();
        let grad = f32_storage(OP, &storage, layout, "output gradient")?;
        let block = time * head_dim;
        let mut summed = vec![0f32; x.elem_count()];
        if block > 0 {
            let groups = grad.chunks_exact(block * self.repeats);
            for (head, group) in summed.chunks_exact_mut(block).zip(groups) {
                for copy in group.chunks_exact(block) {
                    head.iter_mut().zip(copy).for_each(|(sum, g)| *sum += g);
                }
            }
        }
        Ok(Some(Tensor::from_vec(summed, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{
        assert_matches_finite_differences, max_diff, to64, weighted_sum,
    };
    use candle_core::{Device, Var};

    /// Σ g ⊙ repeat(x) in float64, through the composition (the fused ops do not serve f64).
    fn loss(x: &Tensor, g: &Tensor, repeats: usize) -> f64 {
        weighted_sum(&repeat_kv(&to64(x), repeats).unwrap(), g)
    }

    #[test]
    fn equals_the_broadcast_composition_and_finite_differences() {
        let device = Device::Cpu;
        let (batch, kv_heads, time, head_dim, repeats) = (2, 3, 4, 5, 3);
        let x = Var::randn(0f32, 1.0, (batch, kv_heads, time, head_dim), &device).unwrap();
        let g = Tensor::randn(
            0f32,
            1.0,
            (batch, kv_heads * repeats, time, head_dim),
            &device,
        )
        .unwrap();
        let fused = repeat_kv(x.as_tensor(), repeats).unwrap();
        let composed = crate::kernels::fused::with_enabled(false, || {
            repeat_kv(x.as_tensor(), repeats).unwrap()
        });
        assert_eq!(fused.dims(), composed.dims());
        assert_eq!(max_diff(&fused, &composed), 0.0);
        // Query head 4 reads key/value head 4 / 3 = 1.
        let head = |t: &Tensor, h: usize| t.narrow(1, h, 1).unwrap();
        assert_eq!(max_diff(&head(&fused, 4), &head(x.as_tensor(), 1)), 0.0);

        let grads = (fused * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = grads.get(x.as_tensor()).unwrap();
        let rows = (batch * kv_heads * time, head_dim);
        let shape = x.dims().to_vec();
        assert_matches_finite_differences(
            &x.as_tensor().reshape(rows).unwrap(),
            &grad.reshape(rows).unwrap(),
            |point| loss(&point.reshape(shape.as_slice()).unwrap(), &g, repeats),
            1e-6,
        );
    }

    #[test]
    fn one_repeat_is_the_input() {
        let x = Tensor::randn(0f32, 1.0, (1, 2, 3, 4), &Device::Cpu).unwrap();
        assert_eq!(max_diff(&repeat_kv(&x, 1).unwrap(), &x), 0.0);
    }
}
