//! Losses. `masked_cross_entropy` is next-token cross-entropy over the positions a mask selects
//! (candle-nn's `cross_entropy` has no mask); the distillation losses join it in the GKD stage.

use candle_core::{Result, Tensor, D};

/// log-softmax over the last dimension, differentiable (the max is detached: softmax does not
/// depend on it).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Mean of −log p(target) over positions where `mask` is 1. logits [b, t, v] (float), targets
/// [b, t] (u32), mask [b, t] (same float type as logits).
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let picked = log_softmax(logits)?
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let mask = mask.to_dtype(picked.dtype())?;
    let total = (picked * &mask)?.sum_all()?;
    total.neg()?
        / mask
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?
            .max(1.0)
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
