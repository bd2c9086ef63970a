//! Attention probabilities, softmax(scale · q·kᵀ + causal mask + key mask) over the keys, in one
//! fused op with its own backward.
//!
//! Composed (`blocks::composed_attention_probs`), the scaling, the two additive masks, the
//! shift by the row maximum, the exponentials and the normalisation each write a score-sized
//! tensor ([batch, heads, queries, keys]) that autograd keeps: seven per layer, the largest
//! activations of a step after the logits. This op reads the raw scores once and writes only
//! the probabilities, which the product with the values keeps anyway; the causal mask is never
//! materialised (query i sees keys 0..=offset + i). Its backward needs only those probabilities:
//! dS = scale · P ⊙ (dP − Σ_keys dP ⊙ P), one row at a time in parallel (rayon).
//!
//! CPU and f32 only (`fused.rs` says where it serves); elsewhere
//! [`attention_probs`](crate::model::blocks::attention_probs) keeps the composed path, which gives the
//! same numbers (tests compare them, and the backward with float64 finite differences).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::fused::{f32_input, min_rows};

/// softmax(scale · scores + causal + key_mask) for scores [b, h, t, k] (f32, CPU), where query
/// i sits at position offset + i and k = offset + t; key_mask [b, 1, 1, k] is additive.
pub fn fused_attention_probs(
    scores: &Tensor,
    scale: f64,
    offset: usize,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (batch, _, _, keys) = scores.dims4()?;
    let mask = match key_mask {
        Some(mask) => mask.to_dtype(scores.dtype())?.contiguous()?,
        None => Tensor::zeros((batch, 1, 1, keys), scores.dtype(), scores.device())?,
    };
    scores.contiguous()?.apply_op2(
        &mask,
        AttentionProbs {
            scale: scale as f32,
            offset,
        },
    )
}

struct AttentionProbs {
    scale: f32,
    offset: usize,
}

impl CustomOp2 for AttentionProbs {
    fn name(&self) -> &'static str {
        "attention-probs"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, heads, queries, keys) = scores_layout.shape().dims4()?;
        if keys != self.offset + queries {
            candle_core::bail!(
                "attention-probs: {keys} keys for {queries} queries at offset {}",
                self.offset
            );
        }
        if mask_layout.shape().dims() != [batch, 1, 1, keys] {
            candle_core::bail!(
                "attention-probs: key mask {:?} for scores {:?}",
                mask_layout.shape(),
                scores_layout.shape()
            );
        }
        let s = f32_input("attention-probs", scores, scores_layout, "scores")?;
        let mask = f32_input("attention-probs", mask, mask_layout, "key mask")?;
        let mut out = vec![0f32; s.len()];
        out.par_chunks_mut(keys)
            .zip(s.par_chunks(keys))
            .enumerate()
            .with_min_len(min_rows(keys))
            .for_each(|(row, (p, s))| {
                let mask = &mask[row / (heads * queries) * keys..][..keys];
                // Keys past the query's own position stay at probability 0 (the causal mask).
                let visible = self.offset + row % queries + 1;
                let mut max = f32::NEG_INFINITY;
                for ((p, &s), &m) in p[..visible].iter_mut().zip(s).zip(mask) {
                    *p = s * self.scale + m;
                    max = max.max(*p);
                }
                let sum = crate::kernels::fast_exp::exp_shifted_sum(&mut p[..visible], max);
                let inv = (1.0 / sum) as f32;
                p[..visible].iter_mut().for_each(|p| *p *= inv);
            });
        Ok((CpuStorage::F32(out), scores_layout.shape().clone()))
    }

    fn bwd(
        &self,
        scores: &Tensor,
        _mask: &Tensor,
        probs: &Tensor,
        grad_probs: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if !scores.track_op() {
            return Ok((None, None));
        }
        let grad = probs.contiguous()?.apply_op2_no_bwd(
            &grad_probs.contiguous()?,
            &AttentionProbsGrad { scale: self.scale },
        )?;
        Ok((Some(grad), None))
    }
}

/// dS = scale · P ⊙ (dP − Σ_keys dP ⊙ P), row by row: the softmax's backward, times the scale.
struct AttentionProbsGrad {
    scale: f32,
}

impl CustomOp2 for AttentionProbsGrad {
    fn name(&self) -> &'static str {
        "attention-probs-grad"
    }

    fn cpu_fwd(
        &self,
        probs: &CpuStorage,
        probs_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let keys = *probs_layout
            .shape()
            .dims()
            .last()
            .expect("probabilities have a key dimension");
        if probs_layout.shape() != grad_layout.shape() {
            candle_core::bail!("attention-probs-grad: gradient shape differs from the output's");
        }
        let p = f32_input("attention-probs", probs, probs_layout, "probabilities")?;
        let dp = f32_input("attention-probs", grad, grad_layout, "gradient")?;
        let mut out = vec![0f32; p.len()];
        out.par_chunks_mut(keys)
            .zip(p.par_chunks(keys).zip(dp.par_chunks(keys)))
            .with_min_len(min_rows(keys))
            .for_each(|(ds, (p, dp))| {
                let dot: f32 = p.iter().zip(dp).map(|(p, dp)| p * dp).sum();
                for ((ds, &p), &dp) in ds.iter_mut().zip(p).zip(dp) {
                    *ds = self.scale * p * (dp - dot);
                }
            });
        Ok((CpuStorage::F32(out), probs_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{max_diff, to64};
    use crate::model::blocks::{composed_attention_probs, padding_mask};
    use candle_core::{DType, Device, Var};

    const SCALE: f64 = 0.35;

    /// Raw scores [2, 3, t, offset + t] and the key mask of rows left-padded by 0 and 2.
    fn inputs(queries: usize, offset: usize) -> (Tensor, Tensor) {
        let device = Device::Cpu;
        let keys = offset + queries;
        let scores =
            (Tensor::randn(0f32, 1.0, (2, 3, queries, keys), &device).unwrap() * 3.0).unwrap();
        (scores, padding_mask(&[0, 2], keys, &device).unwrap())
    }

    #[test]
    fn probabilities_match_the_composed_path_in_float64() {
        for (queries, offset) in [(5, 0), (1, 6), (4, 3)] {
            let (scores, _) = inputs(queries, offset);
            let fused = fused_attention_probs(&scores, SCALE, offset, None).unwrap();
            let scores64 = to64(&scores);
            let reference = composed_attention_probs(&scores64, SCALE, offset, None).unwrap();
            let diff = max_diff(&fused, &reference);
            assert!(diff < 1e-6, "t {queries}, offset {offset}: {diff}");
        }
    }

    /// With a padding mask the f32 sums s · scale − 10⁴ round to 10⁻³ in both paths (the rows
    /// of padding queries, never used, differ from float64 by that much), so the fused op is
    /// compared with the composition in f32, which rounds the same way.
    #[test]
    fn masked_probabilities_match_the_composed_path() {
        for (queries, offset) in [(5, 0), (1, 6), (4, 3)] {
            let (scores, mask) = inputs(queries, offset);
            let fused = fused_attention_probs(&scores, SCALE, offset, Some(&mask)).unwrap();
            let composed = composed_attention_probs(&scores, SCALE, offset, Some(&mask)).unwrap();
            let diff = max_diff(&fused, &composed);
            assert!(diff < 1e-6, "t {queries}, offset {offset}: {diff}");
        }
    }

    #[test]
    fn gradient_matches_float64_finite_differences() {
        let (queries, offset) = (4, 2);
        let (scores, mask) = inputs(queries, offset);
        let shape = scores.shape().clone();
        let weights = Tensor::randn(0f32, 1.0, shape.clone(), &Device::Cpu).unwrap();
        let var = Var::from_tensor(&scores).unwrap();
        let loss = (fused_attention_probs(var.as_tensor(), SCALE, offset, Some(&mask)).unwrap()
            * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let grad = grads.get(&var).unwrap().flatten_all().unwrap();
        let grad = grad.to_vec1::<f32>().unwrap();
        let w64 = to64(&weights);
        let f = |values: Vec<f64>| -> f64 {
            let x = Tensor::from_vec(values, shape.clone(), &Device::Cpu).unwrap();
            (composed_attention_probs(&x, SCALE, offset, Some(&mask)).unwrap() * &w64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let base = scores
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let h = 1e-6;
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let numeric = (f(plus) - f(minus)) / (2.0 * h);
            assert!(
                (numeric - grad[i] as f64).abs() < 1e-4,
                "element {i}: finite difference {numeric}, fused {}",
                grad[i]
            );
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let (scores, _) = inputs(4, 2);
        assert!(fused_attention_probs(&scores, SCALE, 1, None).is_err());
        let wrong_mask = padding_mask(&[0, 1], 5, &Device::Cpu).unwrap();
        assert!(fused_attention_probs(&scores, SCALE, 2, Some(&wrong_mask)).is_err());
    }
    /// Inputs above `fused::min_rows`' grain are split across threads; forward and gradient
    /// still equal the float64 composition and its autograd.
    #[test]
    fn large_inputs_split_across_threads_match_the_float64_composition() {
        let (queries, offset) = (64, 64);
        let (scores, _) = inputs(queries, offset);
        let upstream = Tensor::randn(0f32, 1.0, scores.shape(), &Device::Cpu).unwrap();
        let run = |scores: &Tensor, up: &Tensor, fused: bool| {
            let var = Var::from_tensor(scores).unwrap();
            let p = if fused {
                fused_attention_probs(var.as_tensor(), SCALE, offset, None).unwrap()
            } else {
                composed_attention_probs(var.as_tensor(), SCALE, offset, None).unwrap()
            };
            let grads = (&p * up).unwrap().sum_all().unwrap().backward().unwrap();
            (p, grads.get(&var).unwrap().clone())
        };
        let (p, g) = run(&scores, &upstream, true);
        let (p64, g64) = run(&to64(&scores), &to64(&upstream), false);
        assert!(max_diff(&p, &p64) < 1e-6);
        assert!(max_diff(&g, &g64) < 1e-5);
    }
}
