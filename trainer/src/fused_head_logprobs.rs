//! log p(token) straight from the final hidden states through a frozen output head, a few rows
//! at a time, so that the [tokens × vocabulary] logits never exist whole.
//!
//! With a real vocabulary the logits are the largest tensors of a step: 4 × 832 positions of a
//! GRPO group over SmolLM2's 49,152 tokens are 654 MB in f32, the 0.5B shape's 512 positions
//! over 151,936 tokens 311 MB, and the logits-based path holds them, a copy and their gradient
//! in the backward. This op (the "cut cross-entropy" idea) takes the hidden states [n, d], the
//! head's weight [V, d] and the tokens [n]: its forward multiplies a chunk of rows by the head,
//! keeps each row's log-sum-exp and chosen logit and drops the chunk; its backward multiplies
//! each chunk again, turns it into (onehot − softmax(z)) · g / T and multiplies that by the
//! weight into the hidden states' gradient. Autograd keeps only the hidden states. The price is
//! the head's product once more in the backward — the weight's gradient, which would cost as
//! much, is not formed: the head is frozen (LoRA and QLoRA; `Model::target_logprobs` takes the
//! logits path for a trained head).
//!
//! CPU and f32 only (`fused.rs`); the logits path gives the same numbers (tests compare them,
//! and the gradient with float64 finite differences).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::fused_logprobs::row_lse;

/// Logit elements one chunk holds at most (16 MB in f32).
const CHUNK_ELEMENTS: usize = 4 * 1024 * 1024;

/// log p(tokens[i]) under (hidden[i] · Wᵀ) / temperature: hidden [n, d] (f32, CPU), a frozen
/// `weight` [V, d], tokens [n] (u32) → [n].
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
        },
    )
}

struct HeadLogprobs {
    weight: Tensor,
    temperature: f64,
}

impl HeadLogprobs {
    fn vocab(&self) -> usize {
        self.weight.dim(0).unwrap_or(1)
    }

    /// Rows per chunk: as many as keep a chunk's logits under `CHUNK_ELEMENTS`.
    fn chunk_rows(&self) -> usize {
        (CHUNK_ELEMENTS / self.vocab().max(1)).max(1)
    }

    /// The logits of `rows` ([len, d]) and `f` applied to them as one f32 slice.
    fn with_logits<R>(&self, rows: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
        let logits = rows.matmul(&self.weight.t()?)?;
        let (storage, layout) = logits.storage_and_layout();
        match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) => f(&values[start..end]),
            _ => candle_core::bail!("head-logprobs: the logits are not contiguous f32 on the CPU"),
        }
    }
}

impl CustomOp2 for HeadLogprobs {
    fn name(&self) -> &'static str {
        "head-logprobs"
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
                "head-logprobs: hidden {:?}, weight {:?} and tokens {:?} do not fit",
                hidden_layout.shape(),
                self.weight.shape(),
                tokens_layout.shape()
            );
        }
        let h = crate::fused::f32_input("head-logprobs", hidden, hidden_layout, "hidden")?;
        let tokens = crate::fused::token_input("head-logprobs", tokens, tokens_layout, vocab)?;
        let inv_t = (1.0 / self.temperature) as f32;
        let step = self.chunk_rows();
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(step) {
            let len = step.min(n - start);
            let rows = Tensor::from_slice(
                &h[start * d..(start + len) * d],
                (len, d),
                self.weight.device(),
            )?;
            self.with_logits(&rows, |logits| {
                out.par_extend(
                    logits
                        .par_chunks(vocab)
                        .zip(tokens[start..start + len].par_iter())
                        .with_min_len(crate::fused::min_rows(vocab))
                        .map(|(row, &token)| row[token as usize] * inv_t - row_lse(row, inv_t)),
                );
                Ok(())
            })?;
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        tokens: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let hidden = hidden.detach();
        let (n, _) = hidden.dims2()?;
        let vocab = self.vocab();
        // Checked against the vocabulary by the forward.
        let tokens = tokens.flatten_all()?.to_vec1::<u32>()?;
        let grads = grad_res.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let inv_t = (1.0 / self.temperature) as f32;
        let step = self.chunk_rows();
        let mut parts = Vec::with_capacity(n.div_ceil(step));
        for start in (0..n).step_by(step) {
            let len = step.min(n - start);
            let grad_logits = self.with_logits(&hidden.narrow(0, start, len)?, |logits| {
                let mut grad = vec![0f32; len * vocab];
                grad.par_chunks_mut(vocab)
                    .zip(logits.par_chunks(vocab))
                    .zip(tokens[start..start + len].par_iter())
                    .zip(grads[start..start + len].par_iter())
                    .with_min_len(crate::fused::min_rows(vocab))
                    .for_each(|(((out, row), &token), &g)| {
                        let lse = row_lse(row, inv_t);
                        let scale = g * inv_t;
                        for (o, &v) in out.iter_mut().zip(row) {
                            *o = -(v * inv_t - lse).exp() * scale;
                        }
                        out[token as usize] += scale;
                    });
                Ok(grad)
            })?;
            let grad_logits = Tensor::from_vec(grad_logits, (len, vocab), hidden.device())?;
            parts.push(grad_logits.matmul(&self.weight)?);
        }
        Ok((Some(Tensor::cat(&parts, 0)?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::test_support::{assert_matches_finite_differences, max_abs, max_diff, to64};
    use candle_core::{Device, Var};

    /// The logits path in float64: an independent reference.
    fn reference(hidden: &Tensor, weight: &Tensor, tokens: &Tensor, temperature: f64) -> Tensor {
        let logits = to64(hidden).matmul(&to64(weight).t().unwrap()).unwrap();
        crate::loss::log_softmax(&(logits / temperature).unwrap())
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
        // Several chunks (vocab 70,000: 59 rows a chunk) and a last chunk shorter than the rest.
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
