//! log p(token) under `logits / temperature` in one fused op with its own backward.
//!
//! The composed version (`logprobs::log_softmax` then `gather`) keeps four logit-sized tensors alive
//! for autograd — the shifted logits, their exponentials, the log-softmax and its gradient path —
//! and with the real model's vocabulary (49,152) the logits are the largest tensors of a training
//! step. This op keeps only its input: the forward computes each row's log-sum-exp and the chosen
//! token's log-probability ([b, t] out), and the backward recomputes the row's softmax to write
//! the one gradient tensor, (onehot − softmax(z)) · g / T. Rows run in parallel (rayon).
//!
//! CPU and f32 only (`fused.rs` says where it serves); elsewhere [`chosen_logprobs`](crate::model::logprobs::chosen_logprobs) keeps the
//! composed path, which gives the same numbers (tests compare them, and both with float64
//! finite differences).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// log p(token) for logits [b, t, v] (f32, CPU) and tokens [b, t] (u32): [b, t].
pub fn fused_chosen_logprobs(logits: &Tensor, tokens: &Tensor, temperature: f64) -> Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&tokens.contiguous()?, ChosenLogprobs { temperature })
}

struct ChosenLogprobs {
    temperature: f64,
}

/// Log-sum-exp of one row of z = x / T (shifted by the row's maximum, so it cannot overflow;
/// summed in f64, since a vocabulary's worth of f32 additions loses ~1e-4 of the sum).
pub(crate) fn row_lse(row: &[f32], inv_t: f32) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x * inv_t));
    let sum = crate::kernels::fast_exp::scaled_shifted_exp_sum(row, inv_t, max);
    max + sum.ln() as f32
}

impl CustomOp2 for ChosenLogprobs {
    fn name(&self) -> &'static str {
        "chosen-logprobs"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        logits_layout: &Layout,
        tokens: &CpuStorage,
        tokens_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = logits_layout.shape().dims();
        let vocab = *dims.last().expect("logits have a vocabulary dimension");
        if tokens_layout.shape().dims() != &dims[..dims.len() - 1] {
            candle_core::bail!(
                "chosen-logprobs: tokens {:?} do not match logits {:?}",
                tokens_layout.shape(),
                logits_layout.shape()
            );
        }
        let x =
            crate::kernels::fused::f32_input("chosen-logprobs", logits, logits_layout, "logits")?;
        let tokens =
            crate::kernels::fused::token_input("chosen-logprobs", tokens, tokens_layout, vocab)?;
        let inv_t = (1.0 / self.temperature) as f32;
        let out: Vec<f32> = x
            .par_chunks(vocab)
            .zip(tokens.par_iter())
            .with_min_len(crate::kernels::fused::min_rows(vocab))
            .map(|(row, &token)| row[token as usize] * inv_t - row_lse(row, inv_t))
            .collect();
        Ok((CpuStorage::F32(out), tokens_layout.shape().clone()))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        tokens: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let shape = logits.shape().clone();
        let vocab = *shape
            .dims()
            .last()
            .expect("logits have a vocabulary dimension");
        let x = logits.flatten_all()?.to_vec1::<f32>()?;
        let tokens = tokens.flatten_all()?.to_vec1::<u32>()?;
        let grads = grad_res
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let inv_t = (1.0 / self.temperature) as f32;
        let mut grad = vec![0f32; x.len()];
        grad.par_chunks_mut(vocab)
            .zip(x.par_chunks(vocab))
            .zip(tokens.par_iter().zip(grads.par_iter()))
            .with_min_len(crate::kernels::fused::min_rows(vocab))
            .for_each(|((out, row), (&token, &g))| {
                let lse = row_lse(row, inv_t);
                let scale = g * inv_t;
                crate::kernels::fast_exp::softmax_times(out, row, inv_t, lse, -scale);
                out[token as usize] += scale;
            });
        let grad = Tensor::from_vec(grad, shape, logits.device())?;
        Ok((Some(grad), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::max_diff;
    use candle_core::{Device, Var};

    /// The composed path in float64: an independent reference.
    fn reference(logits: &Tensor, tokens: &Tensor, temperature: f64) -> Tensor {
        let z = (logits.to_dtype(DType::F64).unwrap() / temperature).unwrap();
        crate::model::logprobs::log_softmax(&z)
            .unwrap()
            .gather(&tokens.unsqueeze(2).unwrap(), 2)
            .unwrap()
            .squeeze(2)
            .unwrap()
    }

    fn inputs() -> (Tensor, Tensor) {
        let device = Device::Cpu;
        let logits = (Tensor::randn(0f32, 1.0, (2, 3, 11), &device).unwrap() * 4.0).unwrap();
        let tokens = Tensor::new(&[[0u32, 10, 5], [7, 7, 1]], &device).unwrap();
        (logits, tokens)
    }

    #[test]
    fn values_match_the_composed_path_in_float64() {
        let (logits, tokens) = inputs();
        for temperature in [1.0, 0.7, 2.5] {
            let fused = fused_chosen_logprobs(&logits, &tokens, temperature).unwrap();
            let expected = reference(&logits, &tokens, temperature);
            let diff = max_diff(&fused, &expected);
            assert!(diff < 1e-5, "temperature {temperature}: {diff}");
        }
    }

    #[test]
    fn gradient_matches_float64_finite_differences() {
        let (logits, tokens) = inputs();
        let weights = Tensor::new(&[[0.3f32, -1.2, 0.8], [2.0, 0.5, -0.4]], &Device::Cpu).unwrap();
        let temperature = 0.7;
        let var = Var::from_tensor(&logits).unwrap();
        let loss = (fused_chosen_logprobs(var.as_tensor(), &tokens, temperature).unwrap()
            * &weights)
            .unwrap()
            .sum_all()
            .unwrap();
        let grad = loss.backward().unwrap();
        let grad = grad
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let x64 = logits.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        let w64 = weights.to_dtype(DType::F64).unwrap();
        let f = |x: &Tensor| -> f64 {
            let x = x.reshape((2, 3, 11)).unwrap();
            let z = (x / temperature).unwrap();
            (crate::model::logprobs::log_softmax(&z)
                .unwrap()
                .gather(&tokens.unsqueeze(2).unwrap(), 2)
                .unwrap()
                .squeeze(2)
                .unwrap()
                * &w64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let h = 1e-6;
        let base = x64.to_vec1::<f64>().unwrap();
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let numeric = (f(&Tensor::new(plus, &Device::Cpu).unwrap())
                - f(&Tensor::new(minus, &Device::Cpu).unwrap()))
                / (2.0 * h);
            assert!(
                (numeric - grad[i] as f64).abs() < 1e-4,
                "element {i}: finite difference {numeric}, fused {}",
                grad[i]
            );
        }
    }

    #[test]
    fn mismatched_tokens_are_an_error() {
        let (logits, _) = inputs();
        let tokens = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        assert!(fused_chosen_logprobs(&logits, &tokens, 1.0).is_err());
        let tokens = Tensor::new(&[[0u32, 11, 5], [7, 7, 1]], &Device::Cpu).unwrap();
        assert!(fused_chosen_logprobs(&logits, &tokens, 1.0).is_err());
    }
}
