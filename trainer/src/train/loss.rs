//! Losses, each a mean over the positions a mask selects (completion tokens).
//!
//! `masked_cross_entropy` is next-token cross-entropy (candle-nn's `cross_entropy` has no mask).
//! The GKD distillation losses compare the student's next-token distribution S with a teacher's T
//! (conventions, intuition and the approximation of the chosen-token path: docs/distillation.md):
//! - `jsd_loss`: the generalised Jensen–Shannon divergence with mixture M = β·T + (1−β)·S,
//!   β·KL(T‖M) + (1−β)·KL(S‖M); β = 0 is defined as forward KL(T‖S) and β = 1 as reverse
//!   KL(S‖T) (the limits of the divergence divided by β and by 1−β).
//! - `reverse_kl_on_logits`: KL(S‖T) over the whole vocabulary.
//! - `reverse_kl_on_chosen`: when only log T(y) of each chosen token y is known, the per-token
//!   estimate r − 1 − ln r with r = T(y)/S(y): unbiased for KL(S‖T) when y is sampled from the
//!   student, a biased but zero-at-agreement penalty on other data.
//!
//! All work in log space (log-softmax, log-sum-exp), so large logits do not overflow.

use candle_core::{DType, Result, Tensor, D};

use crate::model::logprobs::{chosen_logprobs, log_softmax};

/// Mean of −log p(target) over positions where `mask` is 1. logits [b, t, v] (float), targets
/// [b, t] (u32), mask [b, t] (same float type as logits).
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    masked_nll(&chosen_logprobs(logits, targets, 1.0)?, mask)
}

/// Mean of −log p over positions where `mask` is 1, from the log-probabilities [b, t] of the
/// targets (`Model::target_logprobs`): the cross-entropy without the logits.
pub fn masked_nll(target_logprobs: &Tensor, mask: &Tensor) -> Result<Tensor> {
    masked_mean(&target_logprobs.neg()?, mask)
}

/// Σ over masked positions of `per_token` [b, t], divided by their count (at least 1).
fn masked_mean(per_token: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(per_token.dtype())?;
    let count = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    (per_token * &mask)?.sum_all()? / count.max(1.0)
}

/// KL(P‖Q) per position from log-probabilities [b, t, v] → [b, t].
fn kl(log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    (log_p.exp()? * (log_p - log_q)?)?.sum(D::Minus1)
}

fn tempered_logprobs(
    student: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> Result<(Tensor, Tensor)> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        candle_core::bail!("distillation temperature must be positive, not {temperature}");
    }
    // The teacher is a fixed target: no gradient flows into it.
    Ok((
        log_softmax(&(student / temperature)?)?,
        log_softmax(&(teacher.detach() / temperature)?)?,
    ))
}

/// GKD's generalised JSD between the student's and teacher's next-token distributions at
/// `temperature`, mean over masked positions. logits [b, t, v]; mask [b, t]; β in [0, 1].
pub fn jsd_loss(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    mask: &Tensor,
    beta: f64,
    temperature: f64,
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&beta) {
        candle_core::bail!("JSD beta must lie in [0, 1], not {beta}");
    }
    let (log_s, log_t) = tempered_logprobs(student_logits, teacher_logits, temperature)?;
    let per_token = if beta == 0.0 {
        kl(&log_t, &log_s)?
    } else if beta == 1.0 {
        kl(&log_s, &log_t)?
    } else {
        // log M = log(β·T + (1−β)·S), by log-sum-exp of the two weighted terms.
        let a = (&log_t + beta.ln())?;
        let b = (&log_s + (1.0 - beta).ln())?;
        let high = a.maximum(&b)?;
        let log_m = (&high + ((&a - &high)?.exp()? + (&b - &high)?.exp()?)?.log()?)?;
        ((kl(&log_t, &log_m)? * beta)? + (kl(&log_s, &log_m)? * (1.0 - beta))?)?
    };
    masked_mean(&per_token, mask)
}

/// Reverse KL(S‖T) over the full vocabulary at `temperature`, mean over masked positions.
pub fn reverse_kl_on_logits(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    mask: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    jsd_loss(student_logits, teacher_logits, mask, 1.0, temperature)
}

/// The chosen-token estimate of reverse KL(S‖T): with δ = log T(y) − log S(y) for each chosen
/// token y (`tokens` [b, t]) and the teacher's `teacher_logprobs` [b, t], the mean over masked
/// positions of e^δ − 1 − δ (≥ 0, zero where student and teacher agree on y).
pub fn reverse_kl_on_chosen(
    student_logits: &Tensor,
    tokens: &Tensor,
    teacher_logprobs: &Tensor,
    mask: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let log_s = chosen_logprobs(student_logits, tokens, temperature)?;
    let delta = (teacher_logprobs.detach().to_dtype(log_s.dtype())? - &log_s)?;
    let per_token = ((delta.exp()? - 1.0)? - &delta)?;
    masked_mean(&per_token, mask)
}

/// Share of masked positions where the student's most likely token is the teacher's.
pub fn top1_agreement(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    mask: &Tensor,
) -> Result<f64> {
    let same = student_logits
        .argmax(D::Minus1)?
        .eq(&teacher_logits.argmax(D::Minus1)?)?
        .to_dtype(DType::F64)?;
    masked_mean(&same, &mask.to_dtype(DType::F64)?)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_hand_computed_values_and_honours_the_mask() {
        let device = Device::Cpu;
        // One sequence of 3 positions over a 2-token vocabulary.
        let logits = Tensor::new(&[[[0.0f64, 0.0], [2.0, 0.0], [0.0, 3.0]]], &device).unwrap();
        let targets = Tensor::new(&[[1u32, 0, 0]], &device).unwrap();
        // −log p: ln 2; ln(1 + e^-2); ln(1 + e^3).
        let expected = [
            2f64.ln(),
            (1.0 + (-2f64).exp()).ln(),
            (1.0 + 3f64.exp()).ln(),
        ];
        let all = masked_cross_entropy(
            &logits,
            &targets,
            &Tensor::new(&[[1f64, 1.0, 1.0]], &device).unwrap(),
        )
        .unwrap();
        assert!(
            (all.to_scalar::<f64>().unwrap() - expected.iter().sum::<f64>() / 3.0).abs() < 1e-12
        );
        let some = masked_cross_entropy(
            &logits,
            &targets,
            &Tensor::new(&[[0f64, 1.0, 0.0]], &device).unwrap(),
        )
        .unwrap();
        assert!((some.to_scalar::<f64>().unwrap() - expected[1]).abs() < 1e-12);
    }

    #[test]
    fn gradient_is_softmax_minus_one_hot() {
        let device = Device::Cpu;
        let logits =
            candle_core::Var::from_tensor(&Tensor::new(&[[[1.0f64, 2.0, 0.5]]], &device).unwrap())
                .unwrap();
        let targets = Tensor::new(&[[2u32]], &device).unwrap();
        let loss = masked_cross_entropy(
            logits.as_tensor(),
            &targets,
            &Tensor::new(&[[1f64]], &device).unwrap(),
        )
        .unwrap();
        let grad: Vec<f64> = loss
            .backward()
            .unwrap()
            .get(logits.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let z: f64 = [1.0f64, 2.0, 0.5].iter().map(|x| x.exp()).sum();
        let expected = [1f64.exp() / z, 2f64.exp() / z, 0.5f64.exp() / z - 1.0];
        for (g, e) in grad.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "{g} vs {e}");
        }
    }
}
