//! Stage 3 on a tiny model: it learns from a synthetic reward (no sandbox), deterministically
//! and with exact resume; completions that cannot be scored are excluded, not zeroed; and a few
//! steps against the real sandbox (local processes, and Docker containers) write every output,
//! with each group's scoring under way while the next group is generated.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use unitforge_trainer::stages::grpo::reward_source::{Reward, RewardSource};
use unitforge_trainer::stages::grpo::train_with;
use unitforge_trainer::train::stage_config::StageConfig;
use unitforge_trainer::train::train_loop::{read_metrics, StepMetrics};

/// A 2-layer, 32-wide model with a 400-token vocabulary, and 16 + 4 corpus rows.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (model, train, eval, _) = common::small_student(dir, 16, 4);
    (model, train, eval)
}

fn config(model: &Path, train: &Path, eval: &Path, out: &Path, extra: &str) -> StageConfig {
    let yaml = format!(
        "base_model: {}\noutput_dir: {}\ntrain_data: {}\neval_data: {}\nmax_steps: 24\nbatch_size: 2\nlearning_rate: 0.01\nwarmup_steps: 0\nmax_len: 512\neval_every: 12\nsave_every: 100\nprogress: false\nfull_finetune: true\nlora: {{rank: 4, alpha: 8, dropout: 0.0}}\ngrpo: {{prompts_per_step: 4, num_generations: 6, max_completion_length: 12, temperature: 1.0, eval_prompts: 2, eval_samples: 2}}\n{extra}",
        model.display(),
        out.display(),
        train.display(),
        eval.display()
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

/// A dense synthetic reward: the share of the test file's characters that are `e`.
fn share_of_e() -> RewardSource {
    RewardSource::Function(Box::new(|_, tests: &str| {
        let chars = tests.chars().count().max(1);
        Some(Reward::plain(
            tests.chars().filter(|&c| c == 'e').count() as f64 / chars as f64,
        ))
    }))
}

/// The weights a finished run wrote.
fn final_weights(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn rewards(metrics: &[StepMetrics]) -> Vec<f64> {
    metrics.iter().map(|m| m.parts["reward"]).collect()
}

#[test]
fn the_policy_learns_a_synthetic_reward_deterministically_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, eval) = setup(dir.path());
    let device = Device::Cpu;
    let out = dir.path().join("learn");
    let cfg = config(&model, &train, &eval, &out, "");
    let summary = train_with(&cfg, &device, &share_of_e()).unwrap();
    let metrics = read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 24);
    let r = rewards(&metrics);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (early, late) = (mean(&r[..6]), mean(&r[18..]));
    eprintln!("mean reward: first 6 steps {early:.3}, last 6 steps {late:.3}");
    assert!(
        late > early + 0.05 && late > 1.5 * early,
        "mean reward {early:.3} in the first 6 steps, {late:.3} in the last 6: {r:?}"
    );
    assert!(
        summary.final_eval["eval_reward"] > summary.first_eval["eval_reward"],
        "{summary:?}"
    );
    for m in &metrics {
        for key in [
            "reward_std",
            "kl",
            "clip_ratio",
            "completion_len",
            "truncated_frac",
            "frac_reward_zero_std",
            "frac_reward_zero_std_filtered",
            "gen_s",
            "reward_s",
            "reward_wait_s",
            "train_s",
        ] {
            assert!(m.parts[key].is_finite(), "step {}: {key}", m.step);
        }
        assert_eq!(m.parts["infra_excluded"], 0.0);
    }
    // One line per sampled completion, with its advantage.
    let lines = std::fs::read_to_string(out.join("completions.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 24 * 4 * 6);
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert!(first["advantage"].is_number() && first["rewards"]["reward"].is_number());
    assert_eq!(
        std::fs::read_to_string(out.join("eval.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3,
        "before training, at step 12 and at step 24"
    );
    assert!(out.join("reward_curve.png").is_file() && out.join("model.safetensors").is_file());

    // The same seed gives the same run; a run stopped at step 6 and resumed ends where an
    // uninterrupted one does.
    let short = |name: &str, extra: &str| {
        let out = dir.path().join(name);
        let mut cfg = config(&model, &train, &eval, &out, extra);
        cfg.max_steps = 8;
        cfg.eval_every = 100;
        cfg.save_every = 2;
        (out, cfg)
    };
    let (a, cfg_a) = short("a", "");
    let (b, cfg_b) = short("b", "");
    train_with(&cfg_a, &device, &share_of_e()).unwrap();
    train_with(&cfg_b, &device, &share_of_e()).unwrap();
    let (ra, rb) = (
        rewards(&read_metrics(&a.join("metrics.jsonl")).unwrap()),
        rewards(&read_metrics(&b.join("metrics.jsonl")).unwrap()),
    );
    assert_eq!(ra, rb);
    let (c, mut cfg_c) = short("c", "");
    cfg_c.stop_at = Some(6);
    train_with(&cfg_c, &device, &share_of_e()).unwrap();
    assert!(!c.join("model.safetensors").exists(), "stopped early");
    cfg_c.stop_at = None;
    cfg_c.resume = true;
    train_with(&cfg_c, &device, &share_of_e()).unwrap();
    let (wa, wc) = (final_weights(&a), final_weights(&c));
    for (name, tensor) in &wa {
        let gap = common::max_abs_diff(tensor, &wc[name]);
        assert_eq!(gap, 0.0, "{name} differs after resume by {gap}");
    }
    assert_eq!(
        rewards(&read_metrics(&c.join("metrics.jsonl")).unwrap()),
        ra
    );
}

#[test]
fn completions_that_cannot_be_scored_are_excluded_not_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, eval) = setup(dir.path());
    let device = Device::Cpu;

    // A function that refuses some completions: they drop out of their group's baseline.
    let out = dir.path().join("partial");
    let mut cfg = config(&model, &train, &eval, &out, "");
    cfg.max_steps = 2;
    let picky = RewardSource::Function(Box::new(|_, tests: &str| {
        (!tests.len().is_multiple_of(3)).then(|| Reward::plain(tests.len() as f64 / 100.0))
    }));
    train_with(&cfg, &device, &picky).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("completions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let excluded: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["excluded"].is_string()).collect();
    assert!(!excluded.is_empty(), "some completions were refused");
    for line in &excluded {
        assert!(
            line["rewards"].is_null() && line["advantage"].is_null(),
            "{line}"
        );
    }
    // The advantages of a group are its scored rewards less their own mean: they sum to zero.
    for step in [1, 2] {
        for group in 0..4 {
            let scored: Vec<f64> = lines
                .iter()
                .filter(|l| l["step"] == step && l["group"] == group)
                .filter_map(|l| l["advantage"].as_f64())
                .collect();
            assert!(scored.iter().sum::<f64>().abs() < 1e-9, "{scored:?}");
        }
    }
    let metrics = read_metrics(&out.join("metrics.jsonl")).unwrap();
    let refused: f64 = metrics.iter().map(|m| m.parts["input_excluded"]).sum();
    assert_eq!(refused as usize, excluded.len());

    // An unreachable reward service: every completion is an infrastructure failure, excluded;
    // nothing is learned from them (no signal, zero loss), and the run goes on.
    let out = dir.path().join("unreachable");
    let mut cfg = config(
        &model,
        &train,
        &eval,
        &out,
        "reward: {server: \"http://127.0.0.1:9\", concurrency: 4}\n",
    );
    cfg.max_steps = 1;
    cfg.grpo.prompts_per_step = 2;
    cfg.grpo.num_generations = 2;
    cfg.grpo.eval_prompts = 1;
    cfg.grpo.eval_samples = 0;
    let service = RewardSource::sandbox(&cfg.reward).unwrap();
    train_with(&cfg, &device, &service).unwrap();
    let m = &read_metrics(&out.join("metrics.jsonl")).unwrap()[0];
    assert_eq!(m.parts["infra_excluded"], 4.0);
    assert_eq!(m.parts["frac_reward_zero_std"], 1.0);
    // No reward at all: missing, not 0; and no update of the weights.
    assert!(!m.parts.contains_key("reward"), "{:?}", m.parts);
    assert_eq!(m.parts["update_skipped"], 1.0);
    assert_eq!(m.loss, 0.0);
    assert_eq!(m.grad_norm, 0.0);
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("completions.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        line["excluded"]
            .as_str()
            .unwrap()
            .contains("infrastructure"),
        "{line}"
    );
    assert!(line["rewards"].is_null());
}

/// A few steps against a real sandbox: the outputs, and scoring overlapped with generation;
/// with `credit`, pruned scores and per-test credit.
fn against_the_sandbox(executor: &str, credit: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, eval) = setup(dir.path());
    let out = dir.path().join("sandbox");
    let mut cfg = config(
        &model,
        &train,
        &eval,
        &out,
        &format!(
            "reward: {{executor: {executor}, workers: 2, concurrency: 4, mutants: {{max_mutants: 6}}{}}}\n",
            if credit { ", failing_tests: prune" } else { "" }
        ),
    );
    if credit {
        cfg.grpo.test_credit = 0.2;
    }
    cfg.max_steps = 2;
    cfg.eval_every = 2;
    cfg.full_finetune = false; // LoRA: the reference is the model with its adapters off
    cfg.grpo.beta = 0.05;
    cfg.grpo.max_completion_length = 24;
    let rewards = RewardSource::sandbox(&cfg.reward).unwrap();
    assert_eq!(rewards.name(), executor);
    train_with(&cfg, &Device::Cpu, &rewards).unwrap();
    for file in [
        "model.safetensors",
        "adapter_model.safetensors",
        "adapter_config.json",
        "metrics.jsonl",
        "eval.jsonl",
        "completions.jsonl",
        "reward_curve.png",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    for m in read_metrics(&out.join("metrics.jsonl")).unwrap() {
        assert_eq!(m.parts["infra_excluded"], 0.0, "step {}", m.step);
        // The step's four groups decode as one batch; a group goes to the sandbox when its last
        // row ends, so at most the three before the last can be scored while others decode.
        assert!(m.parts["early_groups"] <= 3.0, "step {}", m.step);
        assert!(m.parts["overlap_groups"] <= 3.0, "step {}", m.step);
        assert!(m.parts["reward_s"] > 0.0);
        assert!(m.parts["kl"].is_finite() && m.parts["kl"] >= 0.0);
        assert_eq!(m.parts.contains_key("credited_tokens"), credit);
    }
    let eval: Vec<serde_json::Value> = std::fs::read_to_string(out.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(eval.len(), 2);
    assert_eq!(eval[1]["step"], 2);
    assert_eq!(eval[1]["completions"], 4);
    assert_eq!(eval[1]["eval_excluded"], 0.0);
}

#[test]
fn a_few_steps_against_the_local_sandbox_write_every_output() {
    against_the_sandbox("local", true);
}

/// The error a config that must be refused gets.
fn refusal(cfg: &StageConfig) -> String {
    match train_with(cfg, &Device::Cpu, &share_of_e()) {
        Ok(_) => panic!("the config was accepted"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn test_credit_without_pruned_scores_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, eval) = setup(dir.path());
    let mut cfg = config(&model, &train, &eval, &dir.path().join("refused"), "");
    cfg.grpo.test_credit = 0.2;
    let err = refusal(&cfg);
    assert!(err.contains("failing_tests: prune"), "{err}");
    cfg.grpo.test_credit = -1.0;
    let err = refusal(&cfg);
    assert!(err.contains("test_credit"), "{err}");
}

#[test]
fn a_few_steps_against_docker_sandbox_containers() {
    against_the_sandbox("docker", false);
}

#[test]
fn several_iterations_reuse_their_samples_with_a_frozen_reference_and_a_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, eval) = setup(dir.path());
    let out = dir.path().join("iterations");
    // μ = 2, full fine-tuning with β > 0 (a frozen copy is the reference), and online JSD to a
    // teacher (the starting model itself).
    let mut cfg = config(
        &model,
        &train,
        &eval,
        &out,
        &format!("teacher_model: {}\n", model.display()),
    );
    cfg.max_steps = 4;
    cfg.eval_every = 100;
    cfg.save_every = 2;
    cfg.grpo.num_iterations = 2;
    cfg.grpo.beta = 0.1;
    cfg.grpo.gkd_online.weight = 0.5;
    cfg.grpo.loss_type = unitforge_trainer::train::stage_config::LossType::Grpo;
    train_with(&cfg, &Device::Cpu, &share_of_e()).unwrap();
    let metrics = read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 4);
    // Steps 1 and 3 sample; steps 2 and 4 train on the same samples again.
    for m in &metrics {
        let sampled = m.step % 2 == 1;
        assert_eq!(m.parts["gen_s"] > 0.0, sampled, "step {}", m.step);
        assert!(m.parts["jsd"].is_finite() && m.parts["jsd"] >= 0.0);
    }
    assert_eq!(metrics[0].parts["reward"], metrics[1].parts["reward"]);
    // The first pass starts at the reference (KL 0); the second has moved away from it.
    assert_eq!(metrics[0].parts["kl"], 0.0);
    assert!(metrics[1].parts["kl"] > 0.0, "{:?}", metrics[1].parts);
    let steps: std::collections::BTreeSet<u64> =
        std::fs::read_to_string(out.join("completions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
    assert_eq!(steps, [1, 3].into_iter().collect());
    // A checkpoint between the two iterations could not resume exactly: refused.
    cfg.save_every = 3;
    let err = train_with(&cfg, &Device::Cpu, &share_of_e())
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_iterations"), "{err}");
}

/// A reward with no spread on the even rows (every completion scores 0.5: always a success)
/// and a coin flip on the odd ones (1 for a test file of even length, else 0).
fn half_the_rows_without_signal() -> RewardSource {
    RewardSource::Function(Box::new(|example, tests: &str| {
        Some(Reward::plain(if example.row % 2 == 0 {
            0.5
        } else {
            f64::from(u8::from(tests.len().is_multiple_of(2)))
        }))
    }))
}

#[test]
fn dynamic_sampling_replaces_groups_without_signal_and_the_curriculum_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, eval) = setup(dir.path());
    let device = Device::Cpu;
    let grpo = "{prompts_per_step: 4, num_generations: 4, max_completion_length: 12, temperature: 1.0, eval_prompts: 2, eval_samples: 2, dynamic_sampling: true, max_resample_rounds: 2, curriculum: true}";
    let run = |name: &str, stop_at: Option<usize>, resume: bool| {
        let out = dir.path().join(name);
        let mut cfg = config(&model, &train, &eval, &out, "");
        cfg.grpo = serde_yaml_ng::from_str(grpo).unwrap();
        cfg.max_steps = 8;
        cfg.eval_every = 100;
        cfg.save_every = 2;
        cfg.stop_at = stop_at;
        cfg.resume = resume;
        train_with(&cfg, &device, &half_the_rows_without_signal()).unwrap();
        out
    };
    let whole = run("whole", None, false);
    let metrics = read_metrics(&whole.join("metrics.jsonl")).unwrap();
    let sum = |key: &str| metrics.iter().map(|m| m.parts[key]).sum::<f64>();
    // Half the rows give groups without spread; drawn groups are replaced by others.
    assert!(sum("frac_reward_zero_std") > 0.0, "{metrics:?}");
    assert!(sum("resampled_groups") > 0.0);
    assert!(
        sum("frac_reward_zero_std_filtered") < sum("frac_reward_zero_std"),
        "{} vs {}",
        sum("frac_reward_zero_std_filtered"),
        sum("frac_reward_zero_std")
    );
    // The groups trained on: a group still without signal has no advantages (out of the loss).
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(whole.join("completions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for line in &lines {
        if line["prompt_id"].as_u64().unwrap() % 2 == 0 {
            assert!(line["advantage"].is_null(), "{line}");
        }
    }
    // The curriculum learns that even rows never differ and draws them less than odd ones.
    let even = lines
        .iter()
        .filter(|l| l["prompt_id"].as_u64().unwrap() % 2 == 0)
        .count();
    assert!(even * 2 < lines.len(), "{even} of {} lines", lines.len());
    // The curriculum's state is in each checkpoint: stopped at 4 and resumed, the same run.
    let parted = run("parted", Some(4), false);
    assert!(parted.join("checkpoint-000004/stage_state.json").is_file());
    run("parted", None, true);
    assert_eq!(
        rewards(&read_metrics(&parted.join("metrics.jsonl")).unwrap()),
        rewards(&metrics)
    );
    let (a, b) = (final_weights(&whole), final_weights(&parted));
    for (name, tensor) in &a {
        assert_eq!(common::max_abs_diff(tensor, &b[name]), 0.0, "{name}");
    }
}

#[test]
fn a_run_whose_reward_backend_stays_down_stops_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, eval) = setup(dir.path());
    let out = dir.path().join("blind");
    let mut cfg = config(
        &model,
        &train,
        &eval,
        &out,
        "reward: {server: \"http://127.0.0.1:9\", concurrency: 4}\n",
    );
    cfg.max_steps = 6;
    cfg.save_every = 100;
    cfg.eval_every = 100;
    cfg.grpo.prompts_per_step = 2;
    cfg.grpo.num_generations = 2;
    cfg.grpo.eval_prompts = 1;
    cfg.grpo.max_blind_steps = 2;
    cfg.grpo.backend_wait_s = 1.0;
    let service = RewardSource::sandbox(&cfg.reward).unwrap();
    let err = train_with(&cfg, &Device::Cpu, &service).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("2 steps in a row") && message.contains("did not come back"),
        "{message}"
    );
    assert!(message.contains("checkpoint of 1 steps"), "{message}");
    // The first blind step ran without a reward and without an update; the second stopped the
    // run before it trained, with a checkpoint of the one step done: nothing is lost.
    let metrics = read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 1);
    assert!(!metrics[0].parts.contains_key("reward"));
    assert!(out
        .join("checkpoint-000001/trainable.safetensors")
        .is_file());
    assert!(!out.join("model.safetensors").exists());
    let eval_line = std::fs::read_to_string(out.join("eval.jsonl")).unwrap();
    assert!(!eval_line.contains("eval_reward"), "{eval_line}");
}
