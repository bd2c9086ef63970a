//! GRPO's arithmetic: group advantages, and the clipped policy loss with its KL penalty and
//! normalisations (docs/grpo.md).
//!
//! Advantage of completion i in its group: A_i = r_i − mean(group), optionally divided by the
//! group's or the whole batch's standard deviation (+ ε). Completions that were not scored are
//! left out of their group; a group with fewer than two scored completions carries no signal
//! and is skipped. Per completion token, with ratio = exp(log π − log π_old):
//!
//!   ℓ = −min(ratio·A, clip(ratio, 1 − ε, 1 + ε_high)·A) + β·(exp(ref − log π) − (ref − log π) − 1)
//!
//! where the minimum takes the clipped branch only where the ratio left the trust region in the
//! direction its advantage pushes, and there the token's gradient is exactly zero. With
//! `importance_sampling_level: sequence` (GSPO) one ratio per completion, exp of the mean log
//! ratio over its tokens, replaces the per-token ratios. The token losses are then reduced as
//! `loss_type` says (TRL's definitions): `grpo` mean per completion then over completions,
//! `bnpo` sum over the micro-batch's tokens, `dr_grpo` sum over completions × the completion
//! length limit, `dapo` sum over the step's tokens.

use candle_core::{DType, Result, Tensor, D};

use crate::train::stage_config::{ImportanceLevel, LossType, RewardScaling};

/// Added to a standard deviation before dividing by it (TRL's value).
const STD_EPSILON: f64 = 1e-4;

/// Sample standard deviation (n − 1 in the denominator, as torch's `std`); 0 for fewer than two.
fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    var.sqrt()
}

/// Advantages of every group's rewards (`None` = not scored). A completion gets `None` when it
/// was not scored or its group had fewer than two scored completions.
pub fn advantages(groups: &[Vec<Option<f64>>], scaling: RewardScaling) -> Vec<Vec<Option<f64>>> {
    let scored = |group: &[Option<f64>]| -> Vec<f64> { group.iter().flatten().copied().collect() };
    let batch: Vec<f64> = groups.iter().flat_map(|g| scored(g)).collect::<Vec<f64>>();
    let batch_std = std_dev(&batch);
    groups
        .iter()
        .map(|group| {
            let values = scored(group);
            if values.len() < 2 {
                return vec![None; group.len()];
            }
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let scale = match scaling {
                RewardScaling::None => 1.0,
                RewardScaling::Group => std_dev(&values) + STD_EPSILON,
                RewardScaling::Batch => batch_std + STD_EPSILON,
            };
            group
                .iter()
                .map(|r| r.map(|r| (r - mean) / scale))
                .collect()
        })
        .collect()
}

/// Whether a group's scored rewards are all equal: no completion is better than another.
pub fn zero_spread(group: &[Option<f64>]) -> bool {
    let mut values = group.iter().flatten();
    match values.next() {
        Some(first) => values.all(|v| (v - first).abs() < 1e-12),
        None => true,
    }
}

/// The per-token log-probabilities the loss compares, all [completions, time].
pub struct PolicyInputs<'a> {
    /// Under the policy being trained (with gradient).
    pub logp: &'a Tensor,
    /// Under the policy that sampled the completions (no gradient).
    pub old_logp: &'a Tensor,
    /// Under the reference policy (no gradient); needed when `beta > 0`.
    pub ref_logp: Option<&'a Tensor>,
    /// One advantage per completion: [completions].
    pub advantages: &'a Tensor,
    /// Per-token credit added to the completion's advantage (`test_credit.rs`): [completions, time].
    pub token_credit: Option<&'a Tensor>,
    /// 1 on the completion tokens that count, 0 elsewhere.
    pub mask: &'a Tensor,
}

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub epsilon: f64,
    pub epsilon_high: f64,
    pub beta: f64,
    pub loss_type: LossType,
    pub level: ImportanceLevel,
    pub max_completion_length: usize,
    /// Counted tokens in the whole step (every micro-batch): `dapo`'s denominator.
    pub step_tokens: f64,
}

/// The loss of a micro-batch and what to log about it.
pub struct PolicyLoss {
    pub loss: Tensor,
    /// Mean k3 KL per counted token (0 without a reference).
    pub kl: f64,
    /// Share of counted tokens whose clipped branch was taken.
    pub clip_ratio: f64,
    /// Counted tokens.
    pub tokens: f64,
}

fn scalar(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The clipped surrogate with KL penalty, reduced as `settings.loss_type` says.
pub fn policy_loss(inputs: &PolicyInputs, settings: &PolicySettings) -> Result<PolicyLoss> {
    let PolicyInputs {
        logp,
        old_logp,
        ref_logp,
        advantages,
        token_credit,
        mask,
    } = *inputs;
    let dtype = logp.dtype();
    let mask = mask.to_dtype(dtype)?;
    let (rows, time) = logp.dims2()?;
    let log_ratio = (logp - old_logp.detach())?;
    let log_weight = match settings.level {
        ImportanceLevel::Token => log_ratio,
        ImportanceLevel::Sequence => {
            let lengths = mask.sum_keepdim(D::Minus1)?.clamp(1.0, f64::INFINITY)?;
            (log_ratio * &mask)?
                .sum_keepdim(D::Minus1)?
                .div(&lengths)?
                .broadcast_as((rows, time))?
                .contiguous()?
        }
    };
    let ratio = log_weight.exp()?;
    let mut advantage = advantages
        .to_dtype(dtype)?
        .unsqueeze(1)?
        .broadcast_as((rows, time))?
        .contiguous()?;
    if let Some(credit) = token_credit {
        advantage = (advantage + credit.to_dtype(dtype)?)?;
    }
    let unclipped = (&ratio * &advantage)?;
    let bounded = ratio
        .detach()
        .clamp(1.0 - settings.epsilon, 1.0 + settings.epsilon_high)?;
    let clipped = (&bounded * &advantage)?;
    // min(unclipped, clipped): the clipped branch is a constant, so where it is taken the token
    // contributes no gradient; where the two agree (inside the region) the gradient flows.
    let keep = unclipped.detach().le(&clipped)?.to_dtype(dtype)?;
    let surrogate = ((&unclipped * &keep)? + (&clipped * (1.0 - &keep)?)?)?;
    let mut per_token = surrogate.neg()?;
    let mut kl_mean = 0.0;
    let tokens = scalar(&mask.sum_all()?)?;
    if settings.beta > 0.0 {
        let reference = ref_logp.ok_or_else(|| {
            candle_core::Error::Msg("beta > 0 needs the reference log-probs".into())
        })?;
        let delta = (reference.detach() - logp)?;
        let kl = ((delta.exp()? - &delta)? - 1.0)?;
        kl_mean = scalar(&(&kl * &mask)?.sum_all()?)? / tokens.max(1.0);
        per_token = (per_token + (kl * settings.beta)?)?;
    }
    let clip_ratio = scalar(&((1.0 - &keep)? * &mask)?.sum_all()?)? / tokens.max(1.0);
    let masked = (per_token * &mask)?;
    let loss = match settings.loss_type {
        LossType::Grpo => {
            let lengths = mask.sum(D::Minus1)?;
            let counted = scalar(&lengths.gt(0.0)?.to_dtype(DType::F64)?.sum_all()?)?;
            let per_sequence = masked
                .sum(D::Minus1)?
                .div(&lengths.clamp(1.0, f64::INFINITY)?)?;
            (per_sequence.sum_all()? / counted.max(1.0))?
        }
        LossType::Bnpo => (masked.sum_all()? / tokens.max(1.0))?,
        LossType::DrGrpo => {
            (masked.sum_all()? / (rows * settings.max_completion_length).max(1) as f64)?
        }
        LossType::Dapo => (masked.sum_all()? / settings.step_tokens.max(1.0))?,
    };
    Ok(PolicyLoss {
        loss,
        kl: kl_mean,
        clip_ratio,
        tokens,
    })
}
