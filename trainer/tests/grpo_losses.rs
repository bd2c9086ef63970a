//! GRPO's arithmetic against hand computation: group advantages (with exclusions and every
//! scaling), each `loss_type` normalisation, the clipped surrogate's gradient, the k3 KL (zero at
//! the start, gradient against float64 finite differences), GSPO's sequence ratio, and the
//! reference policy of a LoRA model (its adapters switched off).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use common::{lora, max_abs_diff, random_weights, randomise_b, tiny_config, write_checkpoint};
use unitforge_trainer::model::config::ModelConfig;
use unitforge_trainer::model::decoder::{LoadOptions, Model};
use unitforge_trainer::stages::grpo::policy_loss::{
    advantages, policy_loss, zero_spread, PolicyInputs, PolicySettings,
};
use unitforge_trainer::train::stage_config::{ImportanceLevel, LossType, RewardScaling};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn t2(rows: &[&[f64]]) -> Tensor {
    let cols = rows[0].len();
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), cols), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn advantages_leave_out_what_was_not_scored_and_scale_as_asked() {
    let groups = vec![
        vec![Some(1.0), Some(0.0), None, Some(0.5)],
        vec![Some(0.2), None, None, None],
        vec![Some(0.3), Some(0.3)],
    ];
    let plain = advantages(&groups, RewardScaling::None);
    // Group 1: mean of the three scored is 0.5; the unscored one stays out (None, not −0.5).
    assert_eq!(plain[0], vec![Some(0.5), Some(-0.5), None, Some(0.0)]);
    // A group with one scored completion has no baseline: skipped entirely.
    assert_eq!(plain[1], vec![None; 4]);
    assert_eq!(plain[2], vec![Some(0.0), Some(0.0)]);
    assert!(zero_spread(&groups[2]) && !zero_spread(&groups[0]));

    // Group std (n − 1): of [1, 0, 0.5] it is 0.5.
    let group = advantages(&groups, RewardScaling::Group);
    let expect = 0.5 / (0.5 + 1e-4);
    assert!(close(group[0][0].unwrap(), expect, 1e-12));
    assert!(close(group[0][1].unwrap(), -expect, 1e-12));
    assert_eq!(group[2], vec![Some(0.0), Some(0.0)]);

    // Batch std over every scored reward: [1, 0, 0.5, 0.2, 0.3, 0.3].
    let all = [1.0, 0.0, 0.5, 0.2, 0.3, 0.3];
    let m = all.iter().sum::<f64>() / 6.0;
    let std = (all.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 5.0).sqrt();
    let batch = advantages(&groups, RewardScaling::Batch);
    assert!(close(batch[0][0].unwrap(), 0.5 / (std + 1e-4), 1e-12));
}

/// Two completions of three token slots; the second's last slot is padding.
fn case() -> (Tensor, Tensor, Tensor, Tensor) {
    let logp = t2(&[&[-1.0, -2.0, -0.5], &[-0.3, -1.2, -9.0]]);
    let old = t2(&[&[-1.1, -1.9, -0.5], &[-0.1, -1.4, -9.0]]);
    let mask = t2(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0]]);
    let adv = Tensor::new(&[0.7f64, -0.4], &Device::Cpu).unwrap();
    (logp, old, mask, adv)
}

fn settings(loss_type: LossType, beta: f64) -> PolicySettings {
    PolicySettings {
        epsilon: 0.2,
        epsilon_high: 0.28,
        beta,
        loss_type,
        level: ImportanceLevel::Token,
        max_completion_length: 4,
        step_tokens: 10.0,
    }
}

/// Per-token loss by hand: −min(r·A, clip(r)·A) + β·k3.
fn by_hand(beta: f64, reference: &[[f64; 3]; 2]) -> [[f64; 3]; 2] {
    let logp: [[f64; 3]; 2] = [[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]];
    let old = [[-1.1, -1.9, -0.5], [-0.1, -1.4, -9.0]];
    let adv = [0.7, -0.4];
    let mut out = [[0.0; 3]; 2];
    for i in 0..2 {
        for j in 0..3 {
            let r = (logp[i][j] - old[i][j]).exp();
            let clipped = r.clamp(0.8, 1.28);
            let surrogate = (r * adv[i]).min(clipped * adv[i]);
            let d = reference[i][j] - logp[i][j];
            out[i][j] = -surrogate + beta * (d.exp() - d - 1.0);
        }
    }
    out
}

#[test]
fn each_loss_type_reduces_the_token_losses_as_defined() {
    let (logp, old, mask, adv) = case();
    let reference = [[-0.9, -2.1, -0.6], [-0.2, -1.0, -9.0]];
    let ref_t = t2(&[&reference[0], &reference[1]]);
    let tokens = by_hand(0.1, &reference);
    let m = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]];
    let row_sum = |i: usize| (0..3).map(|j| tokens[i][j] * m[i][j]).sum::<f64>();
    let total = row_sum(0) + row_sum(1);
    let expected = [
        (LossType::Grpo, (row_sum(0) / 3.0 + row_sum(1) / 2.0) / 2.0),
        (LossType::Bnpo, total / 5.0),
        (LossType::DrGrpo, total / (2.0 * 4.0)),
        (LossType::Dapo, total / 10.0),
    ];
    for (loss_type, want) in expected {
        let out = policy_loss(
            &PolicyInputs {
                logp: &logp,
                old_logp: &old,
                ref_logp: Some(&ref_t),
                advantages: &adv,
                token_credit: None,
                mask: &mask,
            },
            &settings(loss_type, 0.1),
        )
        .unwrap();
        let got = scalar(&out.loss);
        assert!(close(got, want, 1e-12), "{loss_type:?}: {got} vs {want}");
        assert_eq!(out.tokens, 5.0);
    }
    // The KL figure is the mean k3 over counted tokens.
    let out = policy_loss(
        &PolicyInputs {
            logp: &logp,
            old_logp: &old,
            ref_logp: Some(&ref_t),
            advantages: &adv,
            token_credit: None,
            mask: &mask,
        },
        &settings(LossType::Bnpo, 0.1),
    )
    .unwrap();
    let k3 = |i: usize, j: usize| {
        let d: f64 = reference[i][j] - [[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]][i][j];
        d.exp() - d - 1.0
    };
    let kl = (k3(0, 0) + k3(0, 1) + k3(0, 2) + k3(1, 0) + k3(1, 1)) / 5.0;
    assert!(close(out.kl, kl, 1e-12), "{} vs {kl}", out.kl);
}

#[test]
fn token_credit_adds_to_each_tokens_advantage_before_the_clip() {
    let (logp, old, mask, adv) = case();
    // Each token's advantage is its row's plus its credit, and the clip's minimum is taken with
    // that sum: the second row's first token turns from −0.4 to +0.5, the first row's second
    // token from 0.7 to −0.3; the padding slot's credit (5.0) is masked out.
    let credit_rows = [[0.0, -1.0, 0.25], [0.9, 0.0, 5.0]];
    let credit = t2(&[&credit_rows[0], &credit_rows[1]]);
    let logp_v: [[f64; 3]; 2] = [[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]];
    let old_v: [[f64; 3]; 2] = [[-1.1, -1.9, -0.5], [-0.1, -1.4, -9.0]];
    let m = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]];
    let mut total = 0.0;
    for i in 0..2 {
        for j in 0..3 {
            let a = [0.7, -0.4][i] + credit_rows[i][j];
            let r: f64 = (logp_v[i][j] - old_v[i][j]).exp();
            let surrogate = (r * a).min(r.clamp(0.8, 1.28) * a);
            total += -surrogate * m[i][j];
        }
    }
    let loss = |token_credit: Option<&Tensor>| {
        let out = policy_loss(
            &PolicyInputs {
                logp: &logp,
                old_logp: &old,
                ref_logp: None,
                advantages: &adv,
                token_credit,
                mask: &mask,
            },
            &settings(LossType::Bnpo, 0.0),
        )
        .unwrap();
        scalar(&out.loss)
    };
    let got = loss(Some(&credit));
    assert!(close(got, total / 5.0, 1e-12), "{got} vs {}", total / 5.0);
    // Without the credit the loss is the plain one, which differs.
    assert!((loss(None) - got).abs() > 1e-3);
}

#[test]
fn clipping_zeroes_exactly_the_gradients_that_left_the_trust_region_the_way_their_advantage_pushes()
{
    // Ratios 0.5, 0.9, 1.0, 1.1, 1.5 for a positive and for a negative advantage.
    let ratios = [0.5f64, 0.9, 1.0, 1.1, 1.5];
    let old: Vec<f64> = vec![-1.0; 5];
    let new: Vec<f64> = ratios.iter().map(|r| -1.0 + r.ln()).collect();
    for advantage in [1.0f64, -1.0] {
        let logp = Var::from_tensor(&Tensor::from_vec(new.clone(), (1, 5), &Device::Cpu).unwrap())
            .unwrap();
        let old_t = Tensor::from_vec(old.clone(), (1, 5), &Device::Cpu).unwrap();
        let mask = Tensor::ones((1, 5), DType::F64, &Device::Cpu).unwrap();
        let adv = Tensor::new(&[advantage], &Device::Cpu).unwrap();
        let out = policy_loss(
            &PolicyInputs {
                logp: logp.as_tensor(),
                old_logp: &old_t,
                ref_logp: None,
                advantages: &adv,
                token_credit: None,
                mask: &mask,
            },
            &settings(LossType::Bnpo, 0.0),
        )
        .unwrap();
        let grads = out.loss.backward().unwrap();
        let grad: Vec<f64> = grads
            .get(&logp)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (&ratio, g) in ratios.iter().zip(&grad) {
            // A > 0 pushes the ratio up: clipped above 1 + ε_high. A < 0 pushes it down:
            // clipped below 1 − ε. Elsewhere d(−r·A)/d logp = −r·A / tokens.
            let clipped = if advantage > 0.0 {
                ratio > 1.28
            } else {
                ratio < 0.8
            };
            if clipped {
                assert_eq!(*g, 0.0, "A = {advantage}, ratio {ratio}");
            } else {
                let want = -ratio * advantage / 5.0;
                assert!(
                    close(*g, want, 1e-12),
                    "A = {advantage}, ratio {ratio}: {g} vs {want}"
                );
            }
        }
        let clipped_share = ratios
            .iter()
            .filter(|&&r| if advantage > 0.0 { r > 1.28 } else { r < 0.8 })
            .count() as f64
            / 5.0;
        assert!(close(out.clip_ratio, clipped_share, 1e-12));
    }
}

#[test]
fn the_k3_kl_is_zero_at_the_start_and_its_gradient_matches_finite_differences() {
    let (logp, old, mask, adv) = case();
    let start = policy_loss(
        &PolicyInputs {
            logp: &logp,
            old_logp: &logp,
            ref_logp: Some(&logp),
            advantages: &adv,
            token_credit: None,
            mask: &mask,
        },
        &settings(LossType::Bnpo, 0.5),
    )
    .unwrap();
    assert_eq!(start.kl, 0.0);
    assert_eq!(start.clip_ratio, 0.0);

    // d/dθ of the whole loss, θ = the policy's log-probs, in float64, by central differences.
    let reference = t2(&[&[-0.9, -2.1, -0.6], &[-0.2, -1.0, -9.0]]);
    let loss_at = |values: &Tensor| {
        scalar(
            &policy_loss(
                &PolicyInputs {
                    logp: values,
                    old_logp: &old,
                    ref_logp: Some(&reference),
                    advantages: &adv,
                    token_credit: None,
                    mask: &mask,
                },
                &settings(LossType::Grpo, 0.3),
            )
            .unwrap()
            .loss,
        )
    };
    let var = Var::from_tensor(&logp).unwrap();
    let analytic = policy_loss(
        &PolicyInputs {
            logp: var.as_tensor(),
            old_logp: &old,
            ref_logp: Some(&reference),
            advantages: &adv,
            token_credit: None,
            mask: &mask,
        },
        &settings(LossType::Grpo, 0.3),
    )
    .unwrap()
    .loss
    .backward()
    .unwrap();
    let analytic: Vec<f64> = analytic
        .get(&var)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f64> = logp.flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-6;
    for index in 0..base.len() {
        let mut up = base.clone();
        let mut down = base.clone();
        up[index] += h;
        down[index] -= h;
        let at = |v: Vec<f64>| loss_at(&Tensor::from_vec(v, (2, 3), &Device::Cpu).unwrap());
        let numeric = (at(up) - at(down)) / (2.0 * h);
        assert!(
            (numeric - analytic[index]).abs() < 1e-7,
            "slot {index}: numeric {numeric}, analytic {}",
            analytic[index]
        );
    }
}

#[test]
fn sequence_level_importance_uses_one_length_normalised_ratio_per_completion() {
    let (logp, old, mask, adv) = case();
    let mut s = settings(LossType::Bnpo, 0.0);
    s.level = ImportanceLevel::Sequence;
    let out = policy_loss(
        &PolicyInputs {
            logp: &logp,
            old_logp: &old,
            ref_logp: None,
            advantages: &adv,
            token_credit: None,
            mask: &mask,
        },
        &s,
    )
    .unwrap();
    // Row 0: mean log ratio (0.1 − 0.1 + 0) / 3 = 0 → ratio 1; row 1: (−0.2 + 0.2) / 2 = 0.
    // Both ratios are 1, so the loss is −Σ A·(tokens) / 5 = −(0.7·3 − 0.4·2) / 5.
    let want = -(0.7 * 3.0 - 0.4 * 2.0) / 5.0;
    assert!(close(scalar(&out.loss), want, 1e-12));
    // A non-zero mean log ratio: row 0 shifted by +0.3 on every token → ratio e^0.3 = 1.35,
    // above 1 + ε_high with A > 0: clipped to 1.28 on all three tokens.
    let shifted = (&old - 0.3).unwrap();
    let out = policy_loss(
        &PolicyInputs {
            logp: &logp,
            old_logp: &shifted,
            ref_logp: None,
            advantages: &adv,
            token_credit: None,
            mask: &mask,
        },
        &s,
    )
    .unwrap();
    let r1 = ((0.3 + 0.1 - 0.1 + 0.3 + 0.0 + 0.3) / 3.0f64).exp();
    let r2 = ((0.3 - 0.2 + 0.3 + 0.2) / 2.0f64).exp();
    let row0 = -(r1 * 0.7).min(r1.clamp(0.8, 1.28) * 0.7) * 3.0;
    let row1 = -(r2 * -0.4).min(r2.clamp(0.8, 1.28) * -0.4) * 2.0;
    assert!(close(scalar(&out.loss), (row0 + row1) / 5.0, 1e-12));
}

#[test]
fn a_lora_model_with_its_adapters_off_gives_exactly_the_reference_logits() {
    let dir = tempfile::tempdir().unwrap();
    let config: ModelConfig = serde_json::from_value(tiny_config()).unwrap();
    write_checkpoint(dir.path(), &random_weights(&config, 11, DType::F32));
    let load = |options: &LoadOptions| {
        Model::load(dir.path(), &Device::Cpu, options, &VarMap::new()).unwrap()
    };
    let plain = load(&LoadOptions::default());
    let adapted = load(&LoadOptions {
        lora: Some(lora(4)),
        ..LoadOptions::default()
    });
    // Trained adapters: every B non-zero, so the adapted model really differs.
    randomise_b(&adapted, 3);
    let ids = Tensor::new(&[[3u32, 9, 27, 1, 44, 5]], &Device::Cpu).unwrap();
    let reference = plain.forward(&ids, 0, None, false).unwrap();
    let with = adapted.forward(&ids, 0, None, false).unwrap();
    let without = adapted.forward_without_adapters(&ids, None).unwrap();
    assert!(
        max_abs_diff(&with, &reference) > 1e-3,
        "the adapters change the logits"
    );
    assert_eq!(
        max_abs_diff(&without, &reference),
        0.0,
        "adapters off = the base, exactly"
    );
    assert!(adapted.has_adapters() && !plain.has_adapters());
}
