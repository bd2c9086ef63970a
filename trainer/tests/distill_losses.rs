//! The GKD losses against independent references: closed forms on 2- and 3-token vocabularies,
//! a plain float64 loop on random cases, and the properties the definitions promise (zero at
//! equality, symmetry at β = ½, masking, finite gradients equal to finite differences, and the
//! chosen-token estimate's unbiasedness when tokens are sampled from the student).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::randn;
use unitforge_sandbox::rng::SplitMix64;
use unitforge_trainer::train::loss::{
    jsd_loss, reverse_kl_on_chosen, reverse_kl_on_logits, top1_agreement,
};

fn scalar(t: Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// [1, 1, v] logits of one position.
fn one(logits: &[f64]) -> Tensor {
    Tensor::new(logits, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, logits.len()))
        .unwrap()
}

fn all_positions(b: usize, t: usize) -> Tensor {
    Tensor::ones((b, t), DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn two_and_three_token_vocabularies_match_hand_derived_values() {
    // S = (½, ½) from logits (0, 0); T = (0.8, 0.2) from logits (ln 4, 0).
    let s = one(&[0.0, 0.0]);
    let t = one(&[4f64.ln(), 0.0]);
    let m = all_positions(1, 1);
    // KL(S‖T) = ½ ln(0.5/0.8) + ½ ln(0.5/0.2) = ½ ln(1.5625) = ln 1.25.
    let reverse = 1.25f64.ln();
    // KL(T‖S) = 0.8 ln 1.6 + 0.2 ln 0.4.
    let forward = 0.8 * 1.6f64.ln() + 0.2 * 0.4f64.ln();
    // β = ½: M = (0.65, 0.35).
    let jsd_half = 0.5 * (0.8 * (0.8f64 / 0.65).ln() + 0.2 * (0.2f64 / 0.35).ln())
        + 0.5 * (0.5 * (0.5f64 / 0.65).ln() + 0.5 * (0.5f64 / 0.35).ln());
    // β = ¼: M = ¼T + ¾S = (0.575, 0.425).
    let jsd_quarter = 0.25 * (0.8 * (0.8f64 / 0.575).ln() + 0.2 * (0.2f64 / 0.425).ln())
        + 0.75 * (0.5 * (0.5f64 / 0.575).ln() + 0.5 * (0.5f64 / 0.425).ln());
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    close(
        scalar(reverse_kl_on_logits(&s, &t, &m, 1.0).unwrap()),
        reverse,
    );
    close(scalar(jsd_loss(&s, &t, &m, 1.0, 1.0).unwrap()), reverse);
    close(scalar(jsd_loss(&s, &t, &m, 0.0, 1.0).unwrap()), forward);
    close(scalar(jsd_loss(&s, &t, &m, 0.5, 1.0).unwrap()), jsd_half);
    close(
        scalar(jsd_loss(&s, &t, &m, 0.25, 1.0).unwrap()),
        jsd_quarter,
    );
    // Temperature 2 halves the logits: T becomes (⅔, ⅓) from (ln 2, 0).
    let tempered = 0.5 * (0.5f64 / (2.0 / 3.0)).ln() + 0.5 * (0.5f64 / (1.0 / 3.0)).ln();
    close(
        scalar(reverse_kl_on_logits(&s, &t, &m, 2.0).unwrap()),
        tempered,
    );

    // Three tokens: S uniform, T = (½, ¼, ¼) from logits (ln 2, 0, 0).
    let s3 = one(&[0.0, 0.0, 0.0]);
    let t3 = one(&[2f64.ln(), 0.0, 0.0]);
    // KL(S‖T) = ⅓ (ln ⅔ + 2 ln 4/3) = ⅓ ln 32/27; KL(T‖S) = ½ ln 3/2 + ½ ln 3/4 = ½ ln 9/8.
    close(
        scalar(reverse_kl_on_logits(&s3, &t3, &m, 1.0).unwrap()),
        (32f64 / 27.0).ln() / 3.0,
    );
    close(
        scalar(jsd_loss(&s3, &t3, &m, 0.0, 1.0).unwrap()),
        0.5 * (9f64 / 8.0).ln(),
    );

    // Chosen-token estimate: y = token 0, log T(y) = ln 0.8, log S(y) = ln ½; δ = ln 1.6, so
    // e^δ − 1 − δ = 0.6 − ln 1.6.
    let tokens = Tensor::new(&[[0u32]], &Device::Cpu).unwrap();
    let teacher_lp = Tensor::new(&[[0.8f64.ln()]], &Device::Cpu).unwrap();
    close(
        scalar(reverse_kl_on_chosen(&s, &tokens, &teacher_lp, &m, 1.0).unwrap()),
        0.6 - 1.6f64.ln(),
    );
}

/// KL(P‖Q), generalised JSD and top-1 in plain float64 loops, from logits.
mod reference {
    pub fn softmax(logits: &[f64], temperature: f64) -> Vec<f64> {
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits
            .iter()
            .map(|x| ((x - max) / temperature).exp())
            .collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }
    pub fn kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter()
            .zip(q)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, b)| a * (a / b).ln())
            .sum()
    }
    pub fn jsd(s: &[f64], t: &[f64], beta: f64) -> f64 {
        if beta == 0.0 {
            return kl(t, s);
        }
        if beta == 1.0 {
            return kl(s, t);
        }
        let m: Vec<f64> = s
            .iter()
            .zip(t)
            .map(|(a, b)| beta * b + (1.0 - beta) * a)
            .collect();
        beta * kl(t, &m) + (1.0 - beta) * kl(s, &m)
    }
}

#[test]
fn random_cases_match_a_float64_computation_and_masking_is_honoured() {
    let (b, t, v) = (2, 5, 11);
    let student = randn(11, &[b, t, v], 3.0);
    let teacher = randn(12, &[b, t, v], 3.0);
    let mask_values: Vec<f64> = (0..b * t)
        .map(|i| if i % 3 == 1 { 0.0 } else { 1.0 })
        .collect();
    let mask = Tensor::from_vec(mask_values.clone(), (b, t), &Device::Cpu).unwrap();
    let rows = |x: &Tensor| -> Vec<Vec<f64>> { x.reshape((b * t, v)).unwrap().to_vec2().unwrap() };
    let (s_rows, t_rows) = (rows(&student), rows(&teacher));
    let counted = mask_values.iter().sum::<f64>();
    for temperature in [1.0, 0.7, 2.0] {
        for beta in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let expected: f64 = (0..b * t)
                .filter(|&i| mask_values[i] > 0.0)
                .map(|i| {
                    reference::jsd(
                        &reference::softmax(&s_rows[i], temperature),
                        &reference::softmax(&t_rows[i], temperature),
                        beta,
                    )
                })
                .sum::<f64>()
                / counted;
            let got = scalar(jsd_loss(&student, &teacher, &mask, beta, temperature).unwrap());
            assert!(
                (got - expected).abs() < 1e-12,
                "β {beta} T {temperature}: {got} vs {expected}"
            );
        }
    }
    // Masked positions do not count: scrambling them changes nothing.
    let scrambled = student
        .broadcast_mul(
            &Tensor::from_vec(
                mask_values
                    .iter()
                    .map(|m| if *m > 0.0 { 1f64 } else { -40.0 })
                    .collect::<Vec<_>>(),
                (b, t, 1),
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
    for beta in [0.0, 0.5, 1.0] {
        let a = scalar(jsd_loss(&student, &teacher, &mask, beta, 1.0).unwrap());
        let c = scalar(jsd_loss(&scrambled, &teacher, &mask, beta, 1.0).unwrap());
        assert!((a - c).abs() < 1e-12, "β {beta}: {a} vs {c}");
    }
    // Top-1 agreement against counting by hand.
    let argmax = |row: &Vec<f64>| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let agree = (0..b * t)
        .filter(|&i| mask_values[i] > 0.0 && argmax(&s_rows[i]) == argmax(&t_rows[i]))
        .count() as f64
        / counted;
    assert!((top1_agreement(&student, &teacher, &mask).unwrap() - agree).abs() < 1e-12);
    assert_eq!(top1_agreement(&teacher, &teacher, &mask).unwrap(), 1.0);
}

#[test]
fn zero_at_equality_symmetric_at_one_half_and_never_negative() {
    let a = randn(5, &[3, 4, 9], 1.0);
    let b = randn(6, &[3, 4, 9], 2.0);
    let mask = all_positions(3, 4);
    for beta in [0.0, 0.3, 0.5, 1.0] {
        assert!(scalar(jsd_loss(&a, &a, &mask, beta, 1.0).unwrap()).abs() < 1e-6);
    }
    let ab = scalar(jsd_loss(&a, &b, &mask, 0.5, 1.0).unwrap());
    let ba = scalar(jsd_loss(&b, &a, &mask, 0.5, 1.0).unwrap());
    assert!((ab - ba).abs() < 1e-12, "{ab} vs {ba}");
    assert!(ab > 0.0);
    // β and 1 − β swap roles when student and teacher swap.
    let a3 = scalar(jsd_loss(&a, &b, &mask, 0.3, 1.0).unwrap());
    let b7 = scalar(jsd_loss(&b, &a, &mask, 0.7, 1.0).unwrap());
    assert!((a3 - b7).abs() < 1e-12, "{a3} vs {b7}");
    // The JSD is bounded by ln 2 at β = ½.
    assert!(ab <= 2f64.ln());
    let tokens = a.argmax(candle_core::D::Minus1).unwrap();
    let lp = unitforge_trainer::model::logprobs::chosen_logprobs(&b, &tokens, 1.0).unwrap();
    assert!(scalar(reverse_kl_on_chosen(&a, &tokens, &lp, &mask, 1.0).unwrap()) >= 0.0);
    let own = unitforge_trainer::model::logprobs::chosen_logprobs(&a, &tokens, 1.0).unwrap();
    assert!(scalar(reverse_kl_on_chosen(&a, &tokens, &own, &mask, 1.0).unwrap()).abs() < 1e-6);
    // Out-of-range settings are errors, not silent nonsense.
    assert!(jsd_loss(&a, &b, &mask, 1.5, 1.0).is_err());
    assert!(jsd_loss(&a, &b, &mask, 0.5, 0.0).is_err());
}

#[test]
fn gradients_are_finite_reach_only_the_student_and_match_finite_differences() {
    let student = randn(9, &[1, 2, 5], 1.0);
    let teacher = Var::from_tensor(&randn(10, &[1, 2, 5], 1.0)).unwrap();
    let mask = all_positions(1, 2);
    let tokens = Tensor::new(&[[1u32, 3]], &Device::Cpu).unwrap();
    let teacher_lp = Tensor::new(&[[-1.2f64, -0.4]], &Device::Cpu).unwrap();
    type Loss<'a> = Box<dyn Fn(&Tensor, &Tensor) -> Tensor + 'a>;
    let losses: Vec<(&str, Loss)> = vec![
        (
            "jsd 0.5",
            Box::new(|s: &Tensor, t: &Tensor| jsd_loss(s, t, &mask, 0.5, 1.3).unwrap()),
        ),
        (
            "forward",
            Box::new(|s: &Tensor, t: &Tensor| jsd_loss(s, t, &mask, 0.0, 1.0).unwrap()),
        ),
        (
            "reverse",
            Box::new(|s: &Tensor, t: &Tensor| reverse_kl_on_logits(s, t, &mask, 1.0).unwrap()),
        ),
        (
            "chosen",
            Box::new(|s: &Tensor, _: &Tensor| {
                reverse_kl_on_chosen(s, &tokens, &teacher_lp, &mask, 1.0).unwrap()
            }),
        ),
    ];
    for (name, loss) in &losses {
        let var = Var::from_tensor(&student).unwrap();
        let grads = loss(var.as_tensor(), teacher.as_tensor())
            .backward()
            .unwrap();
        let grad: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(grad.iter().all(|g| g.is_finite()), "{name}");
        assert!(grad.iter().any(|g| g.abs() > 1e-6), "{name}: no gradient");
        assert!(
            grads.get(teacher.as_tensor()).is_none(),
            "{name}: the teacher got a gradient"
        );
        // Central differences in float64.
        let base: Vec<f64> = student.flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for i in 0..base.len() {
            let at = |delta: f64| {
                let mut x = base.clone();
                x[i] += delta;
                let s = Tensor::from_vec(x, (1, 2, 5), &Device::Cpu).unwrap();
                scalar(loss(&s, teacher.as_tensor()))
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (numeric - grad[i]).abs() < 1e-6,
                "{name}[{i}]: analytic {} vs numeric {numeric}",
                grad[i]
            );
        }
    }
}

#[test]
fn the_chosen_token_estimate_is_unbiased_for_tokens_sampled_from_the_student() {
    // One position; y ~ S many times; the mean estimate approaches KL(S‖T).
    let s_logits = [1.0f64, 0.2, -0.5, 2.0];
    let t_logits = [0.3f64, 1.1, 0.0, 0.8];
    let s = reference::softmax(&s_logits, 1.0);
    let t = reference::softmax(&t_logits, 1.0);
    let exact = reference::kl(&s, &t);
    let n = 20_000;
    let mut rng = SplitMix64::new(3);
    let tokens: Vec<u32> = (0..n)
        .map(|_| {
            let u = rng.uniform();
            let mut acc = 0.0;
            s.iter()
                .position(|p| {
                    acc += p;
                    u < acc
                })
                .unwrap_or(s.len() - 1) as u32
        })
        .collect();
    let teacher_lp: Vec<f64> = tokens.iter().map(|&y| t[y as usize].ln()).collect();
    let student = Tensor::new(&s_logits, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 4))
        .unwrap()
        .broadcast_as((1, n, 4))
        .unwrap()
        .contiguous()
        .unwrap();
    let estimate = scalar(
        reverse_kl_on_chosen(
            &student,
            &Tensor::from_vec(tokens, (1, n), &Device::Cpu).unwrap(),
            &Tensor::from_vec(teacher_lp, (1, n), &Device::Cpu).unwrap(),
            &all_positions(1, n),
            1.0,
        )
        .unwrap(),
    );
    // The estimator's standard deviation here is about 0.3, so 20,000 samples give ±0.01 (≈ 5σ).
    assert!((estimate - exact).abs() < 0.01, "{estimate} vs {exact}");
}
