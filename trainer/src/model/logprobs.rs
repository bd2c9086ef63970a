//! Log-probabilities of chosen tokens: log-softmax, and log p(token) under `logits / temperature`
//! (the fused CPU op where it applies, the composition elsewhere). The decoder's
//! `target_logprobs`, the losses and GRPO's policy ratio all read them here.

use candle_core::{Result, Tensor, D};

use crate::kernels::fused_logprobs::fused_chosen_logprobs;

/// log-softmax over the last dimension, differentiable (the max is detached: softmax does not
/// depend on it).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// log p(token) under `logits / temperature`: [b, t, v] and [b, t] → [b, t]. On the CPU in f32
/// a fused op with its own backward (`fused_logprobs.rs`: one logit-sized tensor instead of
/// four); elsewhere the composition, which gives the same numbers.
pub fn chosen_logprobs(logits: &Tensor, tokens: &Tensor, temperature: f64) -> Result<Tensor> {
    if crate::kernels::fused::applies(logits) {
        return fused_chosen_logprobs(logits, tokens, temperature);
    }
    composed_chosen_logprobs(logits, tokens, temperature)
}

/// [`chosen_logprobs`] from autograd's primitives: the reference the fused op is checked
/// against, and the path on devices without it.
pub fn composed_chosen_logprobs(
    logits: &Tensor,
    tokens: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    log_softmax(&(logits / temperature)?)?
        .gather(&tokens.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)
}
