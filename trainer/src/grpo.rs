//! Stage 3, GRPO: the policy learns from the sandbox's rewards.
//!
//! One step: for each of `prompts_per_step` prompts (the `generate` template over a corpus row's
//! code), sample a group of `num_generations` completions with the KV-cache generator; extract
//! the test file from each and submit the group for scoring at once, so the sandbox scores group
//! k while group k + 1 is generated; then wait for what is still missing. Advantages are each
//! reward less its group's mean (`policy_loss.rs`); completions that could not be scored are left
//! out, never given 0. The loss (clipped surrogate, KL to the reference, optional online JSD to a
//! teacher) is computed group by group as the shared loop's micro-batches, `num_iterations`
//! optimiser steps on the same samples. Every `eval_every` steps, held-out prompts are answered
//! and scored (`eval.jsonl`). The reference policy is the starting weights: with LoRA the same
//! model with its adapters off, with full fine-tuning a frozen copy.

use std::fs::File;
use std::io::Write;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;
use unitforge_sandbox::rng::SplitMix64;

use crate::checkpoint::{io, latest_checkpoint};
use crate::data::{Example, Targets};
use crate::device::{parse_dtype, usable_dtype};
use crate::frozen::load_frozen;
use crate::generate::{sample_completions, Completion, SamplingConfig};
use crate::lora::Pass;
use crate::loss::{chosen_logprobs, jsd_loss};
use crate::model::Model;
use crate::policy_loss::{advantages, policy_loss, zero_spread, PolicyInputs, PolicySettings};
use crate::prompts::extract_tests;
use crate::reward_source::{Outcome, Pending, Reward, RewardSource};
use crate::stage_config::{GrpoSettings, LossType, StageConfig};
use crate::student::{load_student, Student};
use crate::train_loop::{
    run, Curve, Evaluation, Figures, MicroBatch, MicroLoss, Plot, Stage, StageLogic, StageSummary,
};
use crate::TrainerError;

/// Run stage 3 against the sandbox that `config.reward` describes.
pub fn train(config: &StageConfig, device: &Device) -> Result<StageSummary, TrainerError> {
    config.grpo.validate()?;
    loop_config(config)?;
    let rewards = RewardSource::sandbox(&config.reward)?;
    train_with(config, device, &rewards)
}

/// Run stage 3 with rewards from `rewards` (the sandbox, or a function).
pub fn train_with(
    config: &StageConfig,
    device: &Device,
    rewards: &RewardSource,
) -> Result<StageSummary, TrainerError> {
    let settings = &config.grpo;
    settings.validate()?;
    let loop_config = loop_config(config)?;
    let student = load_student(&loop_config, device, Targets::Optional)?;
    if matches!(rewards, RewardSource::Sandbox { .. }) {
        for (set, path) in [
            (&student.train_set, &config.train_data),
            (&student.eval_set, &config.eval_data),
        ] {
            if let Some(example) = set.iter().find(|e| e.code.is_none()) {
                return Err(TrainerError::Data(format!(
                    "{}: row {} has no `code`: the sandbox scores a completion against its row's code",
                    path.display(),
                    example.row + 1
                )));
            }
        }
    }
    let dtype = usable_dtype(device, parse_dtype(&config.dtype)?);
    let vocab = student.model.config().vocab_size;
    let reference = if settings.beta > 0.0 && config.full_finetune {
        Some(load_frozen(
            "reference",
            &config.base_model,
            &student.text.tokenizer,
            vocab,
            dtype,
            false,
            device,
        )?)
    } else {
        None
    };
    let teacher = match (&config.teacher_model, settings.gkd_online.weight > 0.0) {
        (Some(dir), true) => Some(load_frozen(
            "teacher",
            dir,
            &student.text.tokenizer,
            vocab,
            dtype,
            config.distill.quantize_teacher,
            device,
        )?),
        (None, true) => {
            return Err(TrainerError::Config(
                "grpo.gkd_online.weight > 0 needs a teacher_model".into(),
            ))
        }
        _ => None,
    };
    let resuming = config.resume && latest_checkpoint(&config.output_dir).is_some();
    std::fs::create_dir_all(&config.output_dir).map_err(io(&config.output_dir))?;
    let open = |name: &str| -> Result<File, TrainerError> {
        let path = config.output_dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(resuming)
            .write(true)
            .truncate(!resuming)
            .open(&path)
            .map_err(io(&path))
    };
    let mut logic = Grpo {
        student: &student,
        config: &loop_config,
        settings,
        rewards,
        reference: reference.as_ref(),
        teacher: teacher.as_ref(),
        round: None,
        completions_log: if settings.log_completions {
            Some(open("completions.jsonl")?)
        } else {
            None
        },
        eval_log: open("eval.jsonl")?,
    };
    tracing::info!(rewards = rewards.name(), "GRPO rewards");
    run(
        Stage {
            name: "grpo",
            config: &loop_config,
            model: &student.model,
            tokenizer: &student.text,
            train_set: &student.train_set,
            headline: "eval_reward",
            progress_figures: &["reward", "kl"],
            plot: Plot {
                file: "reward_curve.png",
                title: "GRPO reward".into(),
                y_label: "reward (composite)",
                curves: vec![
                    Curve {
                        metric: "reward",
                        label: "mean reward of the sampled completions",
                        markers: false,
                    },
                    Curve {
                        metric: "eval_reward",
                        label: "held-out reward",
                        markers: true,
                    },
                ],
            },
        },
        &mut logic,
    )
}

/// The loop's view of a GRPO config: `batch_size` groups per micro-batch, and as many
/// micro-batches as make `prompts_per_step`.
fn loop_config(config: &StageConfig) -> Result<StageConfig, TrainerError> {
    let settings = &config.grpo;
    let per_micro = config.batch_size.max(1);
    if settings.prompts_per_step % per_micro != 0 {
        return Err(TrainerError::Config(format!(
            "grpo.prompts_per_step = {} is not a multiple of batch_size = {per_micro} (the groups in one forward)",
            settings.prompts_per_step
        )));
    }
    let micro_batches = settings.prompts_per_step / per_micro;
    if config.grad_accum != 1 && config.grad_accum != micro_batches {
        return Err(TrainerError::Config(format!(
            "grad_accum = {} contradicts grpo.prompts_per_step / batch_size = {micro_batches}; leave grad_accum out of a GRPO config",
            config.grad_accum
        )));
    }
    let iterations = settings.num_iterations;
    for (name, value) in [
        ("save_every", Some(config.save_every)),
        ("stop_at", config.stop_at),
    ] {
        if let Some(value) = value.filter(|v| v % iterations != 0) {
            return Err(TrainerError::Config(format!(
                "{name} = {value} is not a multiple of grpo.num_iterations = {iterations}: a checkpoint between the iterations on one batch of samples could not resume exactly"
            )));
        }
    }
    Ok(StageConfig {
        batch_size: per_micro,
        grad_accum: micro_batches,
        ..config.clone()
    })
}

/// One micro-batch of sampled groups, ready to train on.
struct TrainingBatch {
    /// [completions, time]: prompt + completion, right-padded.
    input_ids: Tensor,
    targets: Tensor,
    /// 1 on the completion tokens that count (scored, not skipped, not masked as truncated).
    mask: Tensor,
    /// [completions].
    advantages: Tensor,
    /// The sampling policy's log-probs, kept when the samples serve several steps.
    old_logp: Option<Tensor>,
    tokens: f64,
}

/// The samples of one generation round (used for `num_iterations` steps) and their figures.
struct Round {
    batches: Vec<TrainingBatch>,
    figures: Figures,
    step_tokens: f64,
}

/// Groups sampled and submitted for scoring.
struct Sampled {
    groups: Vec<(Group, Pending)>,
    /// Seconds spent generating.
    gen_s: f64,
    /// Groups whose scoring had begun before the next group's generation ended.
    overlapped: usize,
}

/// One sampled group.
struct Group {
    example: Example,
    prompt: Vec<u32>,
    completions: Vec<Completion>,
    tests: Vec<String>,
    outcomes: Vec<Outcome>,
}

struct Grpo<'a> {
    student: &'a Student,
    config: &'a StageConfig,
    settings: &'a GrpoSettings,
    rewards: &'a RewardSource,
    reference: Option<&'a Model>,
    teacher: Option<&'a Model>,
    round: Option<Round>,
    completions_log: Option<File>,
    eval_log: File,
}

/// Mean of `values` (0 when empty).
fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, count) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

#[derive(Serialize)]
struct CompletionLine<'a> {
    step: usize,
    prompt_id: usize,
    group: usize,
    completion: &'a str,
    tests: &'a str,
    length: usize,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewards: Option<&'a Reward>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advantage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded: Option<&'a str>,
}

impl Grpo<'_> {
    fn sampling(&self, seed: u64) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: self.settings.max_completion_length,
            temperature: self.settings.temperature,
            top_k: self.settings.top_k,
            top_p: self.settings.top_p,
            seed,
        }
    }

    /// `n` completions of each example's prompt (sampled with `sampling`), submitted for scoring
    /// group by group as they are generated.
    fn sample_groups(
        &self,
        examples: &[Example],
        n: usize,
        sampling: &dyn Fn(usize) -> SamplingConfig,
    ) -> Result<Sampled, TrainerError> {
        let student = self.student;
        let mut groups: Vec<(Group, Pending)> = Vec::with_capacity(examples.len());
        let (mut gen_s, mut overlapped) = (0.0, 0usize);
        for (index, example) in examples.iter().enumerate() {
            let started = Instant::now();
            let prompt = student.collator.tokenize_prompt(example)?;
            let completions = sample_completions(
                &student.model,
                &student.text.tokenizer,
                &vec![prompt.clone(); n],
                student.text.end_id,
                &sampling(index),
            )?;
            gen_s += started.elapsed().as_secs_f64();
            if let Some((_, previous)) = groups.last() {
                overlapped += usize::from(previous.started());
            }
            let tests: Vec<String> = completions.iter().map(|c| extract_tests(&c.text)).collect();
            let pending = self.rewards.submit(example, &tests);
            groups.push((
                Group {
                    example: example.clone(),
                    prompt,
                    completions,
                    tests,
                    outcomes: Vec::new(),
                },
                pending,
            ));
        }
        Ok(Sampled {
            groups,
            gen_s,
            overlapped,
        })
    }

    /// Sample, score and arrange the groups of one step.
    fn new_round(&mut self, step: usize, batches: &[MicroBatch]) -> Result<Round, TrainerError> {
        let settings = self.settings;
        let examples: Vec<Example> = batches
            .iter()
            .flat_map(|b| b.examples.iter().cloned())
            .collect();
        let base_seed = self.config.seed;
        let sampling = |group: usize| {
            let mut mix = SplitMix64::new(
                base_seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ group as u64,
            );
            self.sampling(mix.next_u64())
        };
        let Sampled {
            groups: pending,
            gen_s,
            overlapped,
        } = self.sample_groups(&examples, settings.num_generations, &sampling)?;
        let (mut reward_s, mut wait_s) = (0.0, 0.0);
        let mut groups = Vec::with_capacity(pending.len());
        for (mut group, pending) in pending {
            let waiting = Instant::now();
            let collected = pending.collect();
            wait_s += waiting.elapsed().as_secs_f64();
            reward_s += collected.scoring_s;
            group.outcomes = collected.outcomes;
            groups.push(group);
        }
        let rewards: Vec<Vec<Option<f64>>> = groups
            .iter()
            .map(|g| {
                g.outcomes
                    .iter()
                    .map(|o| match o {
                        Outcome::Scored(r) => Some(r.reward),
                        Outcome::Excluded { .. } => None,
                    })
                    .collect()
            })
            .collect();
        let advantages = advantages(&rewards, settings.scale_rewards);
        self.log_completions(step, &groups, &advantages)?;

        let mut figures = round_figures(&groups, &rewards);
        figures.extend([
            ("gen_s", gen_s),
            ("reward_s", reward_s),
            ("reward_wait_s", wait_s),
            ("overlap_groups", overlapped as f64),
        ]);
        let per_micro = self.config.batch_size;
        let mut training = Vec::with_capacity(batches.len());
        for (chunk, advantage) in groups.chunks(per_micro).zip(advantages.chunks(per_micro)) {
            training.push(self.training_batch(chunk, advantage)?);
        }
        let step_tokens = training.iter().map(|b| b.tokens).sum();
        Ok(Round {
            batches: training,
            figures,
            step_tokens,
        })
    }

    /// Tensors of a micro-batch's groups: each row prompt + completion.
    fn training_batch(
        &self,
        groups: &[Group],
        advantages: &[Vec<Option<f64>>],
    ) -> Result<TrainingBatch, TrainerError> {
        let end = self.student.text.end_id;
        let mut rows: Vec<(Vec<u32>, usize, bool)> = Vec::new();
        let mut row_advantages = Vec::new();
        for (group, advantage) in groups.iter().zip(advantages) {
            for (completion, advantage) in group.completions.iter().zip(advantage) {
                let counts = advantage.is_some()
                    && !(self.settings.mask_truncated_completions && completion.truncated);
                let sequence: Vec<u32> = group
                    .prompt
                    .iter()
                    .chain(&completion.ids)
                    .copied()
                    .collect();
                rows.push((sequence, group.prompt.len(), counts));
                row_advantages.push(advantage.unwrap_or(0.0) as f32);
            }
        }
        let time = rows.iter().map(|(s, _, _)| s.len() - 1).max().unwrap_or(1);
        let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for (sequence, prompt_len, counts) in &rows {
            let len = sequence.len() - 1;
            let pad = time - len;
            inputs.extend(sequence[..len].iter().copied());
            inputs.extend(std::iter::repeat_n(end, pad));
            targets.extend(sequence[1..].iter().copied());
            targets.extend(std::iter::repeat_n(end, pad));
            // Position t predicts token t + 1: it counts when that token is the completion's.
            mask.extend((0..time).map(|t| {
                if *counts && t < len && t + 1 >= *prompt_len {
                    1.0f32
                } else {
                    0.0
                }
            }));
        }
        let device = self.student.model.device();
        let shape = (rows.len(), time);
        let tokens = mask.iter().map(|m| *m as f64).sum();
        let input_ids = Tensor::from_vec(inputs, shape, device)?;
        let targets = Tensor::from_vec(targets, shape, device)?;
        let old_logp = if self.settings.num_iterations > 1 {
            let model = &self.student.model;
            let temperature = self.logprob_temperature();
            Some(
                model
                    .target_logprobs(&input_ids, &targets, temperature, Pass::Eval)?
                    .detach(),
            )
        } else {
            None
        };
        Ok(TrainingBatch {
            input_ids,
            targets,
            mask: Tensor::from_vec(mask, shape, device)?,
            advantages: Tensor::from_vec(row_advantages, rows.len(), device)?,
            old_logp,
            tokens,
        })
    }

    /// Log-probs are taken at the sampling temperature, as TRL does.
    fn logprob_temperature(&self) -> f64 {
        if self.settings.temperature > 0.0 {
            self.settings.temperature
        } else {
            1.0
        }
    }

    fn log_completions(
        &mut self,
        step: usize,
        groups: &[Group],
        advantages: &[Vec<Option<f64>>],
    ) -> Result<(), TrainerError> {
        let Some(file) = self.completions_log.as_mut() else {
            return Ok(());
        };
        for (index, (group, advantage)) in groups.iter().zip(advantages).enumerate() {
            for (i, completion) in group.completions.iter().enumerate() {
                let (rewards, excluded) = match &group.outcomes[i] {
                    Outcome::Scored(r) => (Some(r), None),
                    Outcome::Excluded { reason, .. } => (None, Some(reason.as_str())),
                };
                let line = CompletionLine {
                    step: step + 1,
                    prompt_id: group.example.row,
                    group: index,
                    completion: &completion.text,
                    tests: &group.tests[i],
                    length: completion.ids.len(),
                    truncated: completion.truncated,
                    rewards,
                    advantage: advantage[i],
                    excluded,
                };
                let text = serde_json::to_string(&line).expect("completion lines serialise");
                writeln!(file, "{text}").map_err(io(&self.config.output_dir))?;
            }
        }
        Ok(())
    }
}

/// The step's figures from its scored groups.
fn round_figures(groups: &[Group], rewards: &[Vec<Option<f64>>]) -> Figures {
    let scored: Vec<&Reward> = groups
        .iter()
        .flat_map(|g| g.outcomes.iter())
        .filter_map(|o| match o {
            Outcome::Scored(r) => Some(r),
            Outcome::Excluded { .. } => None,
        })
        .collect();
    let excluded = |infra: bool| {
        groups
            .iter()
            .flat_map(|g| g.outcomes.iter())
            .filter(|o| matches!(o, Outcome::Excluded { infrastructure, .. } if *infrastructure == infra))
            .count() as f64
    };
    let component = |f: fn(&Reward) -> f64| mean(scored.iter().map(|r| f(r)));
    let spreads: Vec<f64> = rewards
        .iter()
        .filter(|g| g.iter().flatten().count() >= 2)
        .map(|g| {
            let values: Vec<f64> = g.iter().flatten().copied().collect();
            let m = mean(values.iter().copied());
            (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
        })
        .collect();
    let completions: Vec<&Completion> = groups.iter().flat_map(|g| &g.completions).collect();
    let no_signal = rewards
        .iter()
        .filter(|g| g.iter().flatten().count() < 2 || zero_spread(g))
        .count();
    vec![
        ("reward", component(|r| r.reward)),
        ("reward_std", mean(spreads)),
        ("validity", component(|r| r.validity)),
        ("mutant_kill", component(|r| r.mutant_kill)),
        ("speed", component(|r| r.speed)),
        ("stability", component(|r| r.stability)),
        ("robustness", component(|r| r.robustness)),
        (
            "completion_len",
            mean(completions.iter().map(|c| c.ids.len() as f64)),
        ),
        (
            "truncated_frac",
            mean(completions.iter().map(|c| f64::from(u8::from(c.truncated)))),
        ),
        (
            "zero_std_frac",
            no_signal as f64 / rewards.len().max(1) as f64,
        ),
        ("infra_excluded", excluded(true)),
        ("input_excluded", excluded(false)),
    ]
}

impl StageLogic for Grpo<'_> {
    fn prepare_step(
        &mut self,
        step: usize,
        batches: &mut [MicroBatch],
    ) -> Result<Figures, TrainerError> {
        if step % self.settings.num_iterations == 0 || self.round.is_none() {
            let round = self.new_round(step, batches)?;
            let figures = round.figures.clone();
            self.round = Some(round);
            return Ok(figures);
        }
        // A later iteration on the same samples: their figures again, no new sampling time.
        let round = self.round.as_ref().expect("a round exists");
        Ok(round
            .figures
            .iter()
            .map(|&(key, value)| {
                let fresh = matches!(
                    key,
                    "gen_s" | "reward_s" | "reward_wait_s" | "overlap_groups"
                );
                (key, if fresh { 0.0 } else { value })
            })
            .collect())
    }

    fn micro_loss(&mut self, index: usize, _: &mut MicroBatch) -> Result<MicroLoss, TrainerError> {
        let round = self.round.as_ref().expect("prepare_step made the round");
        let batch = &round.batches[index];
        let model = &self.student.model;
        let temperature = self.logprob_temperature();
        // The online JSD compares whole distributions, so only then are the logits formed;
        // otherwise the log-probs come straight from the hidden states (`target_logprobs`).
        let (logp, logits) = if self.teacher.is_some() {
            let logits = model.forward(&batch.input_ids, 0, None, true)?;
            let logp = chosen_logprobs(&logits, &batch.targets, temperature)?;
            (logp, Some(logits))
        } else {
            let logp = model.target_logprobs(
                &batch.input_ids,
                &batch.targets,
                temperature,
                Pass::Train,
            )?;
            (logp, None)
        };
        let old_logp = batch.old_logp.clone().unwrap_or_else(|| logp.detach());
        let ref_logp = if self.settings.beta > 0.0 {
            let (reference, pass) = match self.reference {
                Some(frozen) => (frozen, Pass::Eval),
                None => (model, Pass::BaseOnly),
            };
            let ref_logp =
                reference.target_logprobs(&batch.input_ids, &batch.targets, temperature, pass)?;
            Some(ref_logp.detach())
        } else {
            None
        };
        let settings = PolicySettings {
            epsilon: self.settings.epsilon,
            epsilon_high: self.settings.epsilon_high(),
            beta: self.settings.beta,
            loss_type: self.settings.loss_type,
            level: self.settings.importance_sampling_level,
            max_completion_length: self.settings.max_completion_length,
            step_tokens: round.step_tokens,
        };
        let policy = policy_loss(
            &PolicyInputs {
                logp: &logp,
                old_logp: &old_logp,
                ref_logp: ref_logp.as_ref(),
                advantages: &batch.advantages,
                mask: &batch.mask,
            },
            &settings,
        )?;
        let mut loss = policy.loss;
        if self.settings.loss_type == LossType::Dapo {
            // The loop averages micro-batches; dapo's denominator already spans the whole step.
            loss = (loss * self.config.grad_accum as f64)?;
        }
        let mut parts = vec![("kl", policy.kl), ("clip_ratio", policy.clip_ratio)];
        if let (Some(teacher), Some(logits)) = (self.teacher, logits.as_ref()) {
            let online = &self.settings.gkd_online;
            let teacher_logits = teacher.forward(&batch.input_ids, 0, None, false)?.detach();
            let jsd = jsd_loss(
                logits,
                &teacher_logits,
                &batch.mask,
                online.beta,
                online.temperature,
            )?;
            parts.push(("jsd", jsd.to_dtype(candle_core::DType::F64)?.to_scalar()?));
            loss = (loss + (jsd * online.weight)?)?;
        }
        if batch.tokens == 0.0 {
            // No completion counts: a zero loss that still reaches every parameter.
            loss = (logp.sum_all()? * 0.0)?;
        }
        Ok(MicroLoss {
            loss,
            tokens: batch.tokens as usize,
            parts,
        })
    }

    fn evaluate(&mut self, step: usize) -> Result<Evaluation, TrainerError> {
        let settings = self.settings;
        let count = settings.eval_prompts.min(self.student.eval_set.len());
        let examples = &self.student.eval_set[..count];
        let samples = settings.eval_samples.max(1);
        let seed = self.config.seed;
        let sampling = |group: usize| {
            let mut config = self.sampling(seed ^ group as u64);
            if settings.eval_samples == 0 {
                config.temperature = 0.0;
            }
            config
        };
        let outcomes: Vec<Outcome> = self
            .sample_groups(examples, samples, &sampling)?
            .groups
            .into_iter()
            .flat_map(|(_, pending)| pending.collect().outcomes)
            .collect();
        let scored: Vec<&Reward> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Scored(r) => Some(r),
                Outcome::Excluded { .. } => None,
            })
            .collect();
        let valid: Vec<&&Reward> = scored.iter().filter(|r| r.validity > 0.0).collect();
        let mut evaluation = Evaluation::new();
        evaluation.insert("eval_reward".into(), mean(scored.iter().map(|r| r.reward)));
        evaluation.insert(
            "eval_validity".into(),
            mean(scored.iter().map(|r| r.validity)),
        );
        evaluation.insert(
            "eval_mutant_kill".into(),
            mean(scored.iter().map(|r| r.mutant_kill)),
        );
        evaluation.insert(
            "eval_suite_cpu_ms".into(),
            mean(valid.iter().map(|r| r.suite_cpu_ms)),
        );
        evaluation.insert(
            "eval_stability".into(),
            mean(valid.iter().map(|r| r.stability)),
        );
        evaluation.insert(
            "eval_excluded".into(),
            (outcomes.len() - scored.len()) as f64,
        );
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        line.insert("completions".into(), outcomes.len().into());
        for (key, value) in &evaluation {
            line.insert(key.clone(), (*value).into());
        }
        writeln!(self.eval_log, "{}", serde_json::Value::Object(line))
            .map_err(io(&self.config.output_dir))?;
        Ok(evaluation)
    }

    fn can_stop_after(&self, done: usize) -> bool {
        done % self.settings.num_iterations == 0
    }
}
