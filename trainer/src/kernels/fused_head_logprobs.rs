//! log p(token) straight from the final hidden states through a frozen output head, a slice of
//! the vocabulary at a time, so that the [tokens × vocabulary] logits never exist whole.
//!
//! With a real vocabulary the logits are the largest tensors of a step: 4 × 832 positions of a
//! GRPO group over SmolLM2's 49,152 tokens are 654 MB in f32, the 0.5B shape's 512 positions
//! over 151,936 tokens 311 MB, and the logits-based path holds them, a copy and their gradient
//! in the backward. This op (the "cut cross-entropy" idea) takes the hidden states [n, d], the
//! head's weight [V, d] and the tokens [n]. Its forward multiplies every row by one slice of the
//! head's rows at a time and folds the slice into each row's running log-sum-exp (the running
//! maximum rescales the sum, as flash attention does) and picks up the chosen logit when the
//! slice holds it; its backward multiplies each slice again, turns it into
//! (onehot − softmax(z)) · g / T with the saved log-sum-exps, and accumulates its product with
//! the slice of the weight into the hidden states' gradient. Autograd keeps only the hidden
//! states. The price is the head's product once more in the backward — the weight's gradient,
//! which would cost as much, is not formed: the head is frozen (LoRA and QLoRA;
//! `Model::target_logprobs` takes the logits path for a trained head).
//!
//! Slicing the vocabulary rather than the rows matters for speed: gemm packs its right operand
//! for every product, so with slices of rows each slice re-read and re-packed the whole head
//! (544 MB for the 0.5B shape, 19 times a pass); a slice of the vocabulary is packed once per
//! pass and only the small hidden states are packed again.
//!
//! CPU and f32 only (`fused.rs`); the logits path gives the same numbers (tests compare them,
//! and the gradient with float64 finite differences).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::fast_exp::softmax_times;
use crate::kernels::slice_gemm::{product, Matrix};

const OP: &str = "head-logprobs";

/// Logit elements one slice holds at most (16 MB in f32).
const CHUNK_ELEMENTS: usize = 4 * 1024 * 1024;

/// The fewest vocabulary entries a slice has, however many rows: narrower slices would repack
/// the hidden states more often than they save memory.
const MIN_SLICE: usize = 512;

/// log p(tokens[i]) under (hidden[i] · Wᵀ) / temperature: hidden [n, d] (f32, CPU), a frozen
/// `weight` [V, d] (f32), tokens [n] (u32) → [n].
pub fn fused_head_logprobs(
    hidden: &Tensor,
    weight: &Tensor,
    tokens: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    hidden.contiguous()?.apply_op2(
        &tokens.contiguous()?,
        HeadLogprobs {
            weight: weight.contiguous()?,
            temperature,
            lse: OnceLock::new(),
        },
    )
}

struct HeadLogprobs {
    weight: Tensor,
    temperature: f64,
    /// Each row's log-sum-exp of z / T, from the forward, for the backward.
    lse: OnceLock<Vec<f32>>,
}

/// One row's log-sum-exp of scaled logits, folded in a slice of the vocabulary at a time.
#[derive(Clone, Copy)]
struct RunningLse {
    max: f32,
    /// Σ exp(z / T − max), in f64: a vocabulary's worth of f32 additions loses ~1e-4 of it.
    sum: f64,
}

impl RunningLse {
    const EMPTY: Self = Self {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };

    fn fold(&mut self, logits: &[f32], inv_t: f32) {
        let slice_max = logits
            .iter()
            .fold(f32::NEG_INFINITY, |m, &z| m.max(z * inv_t));
        let max = self.max.max(slice_max);
        if max == f32::NEG_INFINITY {
            return;
        }
        let slice_sum = crate::kernels::fast_exp::scaled_shifted_exp_sum(logits, inv_t, max);
        self.sum = self.sum * f64::from((self.max - max).exp()) + slice_sum;
        self.max = max;
    }

    fn value(self) -> f32 {
        self.max + self.sum.ln() as f32
    }
}

impl HeadLogprobs {
    /// Vocabulary entries per slice for `n` rows: a slice's logits stay under
    /// `CHUNK_ELEMENTS`, but no slice is narrower than `MIN_SLICE`.
    fn slice_width(n: usize, vocab: usize) -> usize {
        (CHUNK_ELEMENTS / n.max(1)).max(MIN_SLICE).min(vocab.max(1))
    }

    /// `f(first, logits, rows)` for each slice of the vocabulary `first..first + width`: the
    /// logits of every row of `hidden` [n, d] against it ([n, width], row-major) and the slice's
    /// rows of the weight ([width, d]).
    fn for_each_slice(
        &self,
        hidden: &[f32],
        n: usize,
        mut f: impl FnMut(usize, &[f32], Matrix) -> Result<()>,
    ) -> Result<()> {
        let (storage, layout) = self.weight.storage_and_layout();
        let weight = crate::kernels::fused::f32_storage(OP, &storage, layout, "the weight")?;
        let (vocab, d) = self.weight.dims2()?;
        let width = Self::slice_width(n, vocab);
        let mut logits = vec![0f32; n * width];
        for first in (0..vocab).step_by(width) {
            let len = width.min(vocab - first);
            let rows = Matrix::new(&weight[first * d..(first + len) * d], len, d);
            let out = &mut logits[..n * len];
            product(out, Matrix::new(hidden, n, d), rows.t(), None);
            f(first, out, rows)?;
        }
        Ok(())
    }
}

impl CustomOp2 for HeadLogprobs {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        hidden: &CpuStorage,
        hidden_layout: &Layout,
        tokens: &CpuStorage,
        tokens_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, d) = hidden_layout.shape().dims2()?;
        let (vocab, weight_d) = self.weight.dims2()?;
        if weight_d != d || tokens_layout.shape().dims() != [n] {
            candle_core::bail!(
                "{OP}: hidden {:?}, weight {:?} and tokens {:?} do not fit",
                hidden_layout.shape(),
                self.weight.shape(),
                tokens_layout.shape()
            );
        }
        let h = crate::kernels::fused::f32_input(OP, hidden, hidden_layout, "hidden")?;
        let tokens = crate::kernels::fused::token_input(OP, tokens, tokens_layout, vocab)?;
        let inv_t = (1.0 / self.temperature) as f32;
        let mut running = vec![RunningLse::EMPTY; n];
        let mut chosen = vec![0f32; n];
        self.for_each_slice(h, n, |first, logits, _| {
            let width = logits.len() / n.max(1);
            running
                .par_iter_mut()
                .zip(chosen.par_iter_mut())
                .zip(logits.par_chunks(width.max(1)))
                .zip(tokens.par_iter())
                .with_min_len(crate::kernels::fused::min_rows(width))
                .for_each(|(((lse, chosen), row), &token)| {
                    lse.fold(row, inv_t);
                    if let Some(&z) = (token as usize).checked_sub(first).and_then(|i| row.get(i)) {
                        *chosen = z * inv_t;
                    }
                });
            Ok(())
        })?;
        let lse: Vec<f32> = running.into_iter().map(RunningLse::value).collect();
        let out = chosen.iter().zip(&lse).map(|(c, l)| c - l).collect();
        // An op is applied once; a second forward through the same op would find this set.
        let _ = self.lse.set(lse);
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        tokens: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let lse = self
            .lse
            .get()
            .ok_or_else(|| candle_core::Error::Msg(format!("{OP}: backward before forward")))?;
        let hidden = hidden.contiguous()?;
        let (n, d) = hidden.dims2()?;
        // Checked against the vocabulary by the forward.
        let tokens = tokens.flatten_all()?.to_vec1::<u32>()?;
        let grads = grad_res.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let inv_t = (1.0 / self.temperature) as f32;
        let (storage, layout) = hidden.storage_and_layout();
        let h = crate::kernels::fused::f32_storage(OP, &storage, layout, "the hidden states")?;
        let mut grad_hidden = vec![0f32; n * d];
        let mut grad_logits = Vec::new();
        self.for_each_slice(h, n, |first, logits, rows| {
            let width = logits.len() / n.max(1);
            grad_logits.resize(logits.len(), 0f32);
            grad_logits
                .par_chunks_mut(width.max(1))
                .zip(logits.par_chunks(width.max(1)))
                .zip(tokens.par_iter().zip(&grads[..]).zip(&lse[..]))
                .with_min_len(crate::kernels::fused::min_rows(width))
                .for_each(|((out, row), ((&token, &g), &lse))| {
                    let scale = g * inv_t;
                    softmax_times(out, row, inv_t, lse, -scale);
                    if let Some(o) = (token as usize)
                        .checked_sub(first)
                        .and_then(|i| out.get_mut(i))
                    {
                        *o += scale;
                    }
                });
            // grad_hidden += (∂/∂z) · W[first..first + width].
            product(
                &mut grad_hidden,
                Matrix::new(&grad_logits, n, width),
                rows,
                Some(1.0),
            );
            Ok(())
        })?;
        Ok((
            Some(Tensor::from_vec(grad_hidden, (n, d), hidden.device())?),
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{
        assert_matches_finite_differences, max_abs, max_diff, to64,
    };
    use candle_core::{Device, Var};

    /// The logits path in float64: an independent reference.
    fn reference(hidden: &Tensor, weight: &Tensor, tokens: &Tensor, temperature: f64) -> Tensor {
        let logits = to64(hidden).matmul(&to64(weight).t().unwrap()).unwrap();
        crate::model::logprobs::log_softmax(&(logits / temperature).unwrap())
            .unwrap()
            .gather(&tokens.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
    }

    fn inputs(n: usize, d: usize, vocab: usize, seed: u32) -> (Tensor, Tensor, Tensor) {
        let device = Device::Cpu;
        let hidden = Tensor::randn(0f32, 1.0, (n, d), &device).unwrap();
        let weight = Tensor::randn(0f32, 0.5, (vocab, d), &device).unwrap();
        let tokens: Vec<u32> = (0..n as u32)
            .map(|i| (i * 7919 + seed) % vocab as u32)
            .collect();
        (hidden, weight, Tensor::new(tokens, &device).unwrap())
    }

    #[test]
    fn forward_and_gradient_equal_the_float64_logits_path() {
        // Several slices (130 rows: 32,263 of the 70,000 entries a slice) and a last slice shorter
        // than the rest.
        for (n, d, vocab, temperature) in [(5, 8, 11, 1.0), (130, 16, 70_000, 0.7)] {
            let (hidden, weight, tokens) = inputs(n, d, vocab, 3);
            let var = Var::from_tensor(&hidden).unwrap();
            let ours = fused_head_logprobs(var.as_tensor(), &weight, &tokens, temperature).unwrap();
            let expected = reference(&hidden, &weight, &tokens, temperature);
            // f32 sums over 70,000 exponentials: agreement to ~1e-5 of the log-prob's size.
            let tolerance = 2e-5 * max_abs(&expected).max(1.0);
            let error = max_diff(&ours, &expected);
            assert!(error < tolerance, "{n}×{vocab} forward: {error}");

            let g = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
            let grads = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let ours = grads.get(var.as_tensor()).unwrap();
            let hidden64 = Var::from_tensor(&to64(&hidden)).unwrap();
            let reference_loss = (reference(hidden64.as_tensor(), &weight, &tokens, temperature)
                * to64(&g))
            .unwrap()
            .sum_all()
            .unwrap();
            let expected = reference_loss.backward().unwrap();
            let expected = expected.get(hidden64.as_tensor()).unwrap();
            let tolerance = 2e-5 * max_abs(expected).max(1.0);
            let error = max_diff(ours, expected);
            assert!(
                error < tolerance,
                "{n}×{vocab} gradient: {error} (largest {})",
                max_abs(expected)
            );
        }
    }

    #[test]
    fn gradient_matches_float64_finite_differences() {
        let (hidden, weight, tokens) = inputs(3, 4, 9, 1);
        let temperature = 0.8;
        let loss = |h: &Tensor| -> f64 {
            reference(h, &weight, &tokens, temperature)
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let var = Var::from_tensor(&hidden).unwrap();
        let grads = fused_head_logprobs(var.as_tensor(), &weight, &tokens, temperature)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let analytic = grads.get(var.as_tensor()).unwrap();
        assert_matches_finite_differences(&to64(&hidden), analytic, loss, 1e-4);
    }

    #[test]
    fn tokens_outside_the_vocabulary_and_misfit_shapes_are_errors() {
        let (hidden, weight, _) = inputs(2, 4, 5, 0);
        let device = Device::Cpu;
        let outside = Tensor::new(&[1u32, 5], &device).unwrap();
        assert!(fused_head_logprobs(&hidden, &weight, &outside, 1.0).is_err());
        let short = Tensor::new(&[1u32], &device).unwrap();
        assert!(fused_head_logprobs(&hidden, &weight, &short, 1.0).is_err());
    }
}
