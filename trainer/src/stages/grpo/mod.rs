//! Stage 3, GRPO: the policy learns from the sandbox's rewards.
//!
//! One step: for each of `prompts_per_step` prompts (the `generate` template over a corpus row's
//! code), sample a group of `num_generations` completions — all groups decoded as one batch with
//! the KV cache, each prompt prefilled once; extract the test file from each and submit a group
//! for scoring as soon as its last completion ends, so the sandbox scores it while the others
//! are generated; then wait for what is still missing. Advantages are each
//! reward less its group's mean (`policy_loss.rs`); completions that could not be scored are left
//! out, never given 0. The loss (clipped surrogate, KL to the reference, optional online JSD to a
//! teacher) is computed group by group as the shared loop's micro-batches, `num_iterations`
//! optimiser steps on the same samples. Every `eval_every` steps, held-out prompts are answered
//! and scored (`eval.jsonl`). The reference policy is the starting weights: with LoRA the same
//! model with its adapters off, with full fine-tuning a frozen copy.
//!
//! Here: the stage and its loss; `round.rs` samples, scores and arranges a step's groups
//! (`Sample`: completion, test file, outcome, advantage); `log.rs` writes `completions.jsonl` and
//! `eval.jsonl`; `policy_loss.rs` the advantages and the clipped loss; `reward_source.rs` where
//! rewards come from.

pub mod curriculum;
mod log;
pub mod policy_loss;
pub mod reward_source;
mod round;
pub mod test_credit;

use std::time::Instant;

use candle_core::Device;
use unitforge_sandbox::rng::SplitMix64;

use self::curriculum::Curriculum;
use self::log::Logs;
use crate::data::dataset::{Example, Targets};
use crate::device::{parse_dtype, usable_dtype};
use crate::model::decoder::Model;
use crate::model::generate::SamplingConfig;
use crate::model::logprobs::chosen_logprobs;
use crate::model::lora::Pass;
use crate::train::checkpoint::{io, latest_checkpoint};
use crate::train::frozen::load_frozen;
use crate::train::loss::jsd_loss;
use crate::train::stage_config::{GrpoSettings, LossType, StageConfig};
use crate::train::student::{load_student, Student};
use crate::train::train_loop::{
    run, Curve, Evaluation, MicroBatch, MicroLoss, Plot, Stage, StageLogic, StageSummary,
    StepFigures,
};
use crate::TrainerError;
use policy_loss::{policy_loss, PolicyInputs, PolicySettings};
use reward_source::{Reward, RewardSource};
use round::{
    mean, round_figures, BatchLayout, Generator, Group, Reference, RowLayout, TrainingBatch,
};

/// Run stage 3 against the sandbox that `config.reward` describes.
pub fn train(config: &StageConfig, device: &Device) -> Result<StageSummary, TrainerError> {
    // Checked before the sandbox starts, so a bad config fails fast.
    let loop_config = checked_loop_config(config)?;
    let rewards = RewardSource::sandbox(&config.reward)?;
    train_checked(config, &loop_config, device, &rewards)
}

/// Run stage 3 with rewards from `rewards` (the sandbox, or a function).
pub fn train_with(
    config: &StageConfig,
    device: &Device,
    rewards: &RewardSource,
) -> Result<StageSummary, TrainerError> {
    let loop_config = checked_loop_config(config)?;
    train_checked(config, &loop_config, device, rewards)
}

/// Stage 3 from a config `checked_loop_config` accepted.
fn train_checked(
    config: &StageConfig,
    loop_config: &StageConfig,
    device: &Device,
    rewards: &RewardSource,
) -> Result<StageSummary, TrainerError> {
    let settings = &config.grpo;
    let student = load_student(loop_config, device, Targets::Optional)?;
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
    let logs = Logs::open(&config.output_dir, settings.log_completions, resuming)?;
    let mut logic = Grpo {
        student: &student,
        config: loop_config,
        settings,
        rewards,
        reference: reference.as_ref(),
        teacher: teacher.as_ref(),
        round: None,
        logs,
        curriculum: CurriculumCell::new(Curriculum::new(
            student.train_set.len(),
            settings.curriculum,
        )),
        blind_steps: 0,
    };
    tracing::info!(rewards = rewards.name(), "GRPO rewards");
    run(
        Stage {
            name: "grpo",
            config: loop_config,
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

/// The loop's view of a GRPO config, once its GRPO settings are checked: `batch_size` groups
/// per micro-batch, and as many micro-batches as make `prompts_per_step`.
fn checked_loop_config(config: &StageConfig) -> Result<StageConfig, TrainerError> {
    let settings = &config.grpo;
    settings.validate()?;
    if settings.test_credit > 0.0 && config.reward.scoring.failing_tests.is_invalidate() {
        return Err(TrainerError::Config(format!(
            "grpo.test_credit = {} needs per-test verdicts: set reward.failing_tests: prune",
            settings.test_credit
        )));
    }
    let per_micro = config.batch_size.max(1);
    if !settings.prompts_per_step.is_multiple_of(per_micro) {
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

/// The samples of one generation round (used for `num_iterations` steps) and their figures.
struct Round {
    batches: Vec<TrainingBatch>,
    figures: StepFigures,
    step_tokens: f64,
}

struct Grpo<'a> {
    student: &'a Student,
    config: &'a StageConfig,
    settings: &'a GrpoSettings,
    rewards: &'a RewardSource,
    reference: Option<&'a Model>,
    teacher: Option<&'a Model>,
    round: Option<Round>,
    logs: Logs,
    /// Running success of the training rows (used to draw prompts when `curriculum` is on).
    curriculum: CurriculumCell,
    /// Steps in a row whose every completion the infrastructure failed to score.
    blind_steps: usize,
}

/// The curriculum, updated while groups are scored through `&self`.
type CurriculumCell = std::cell::RefCell<Curriculum>;

/// Where a round's time went, summed over its generation rounds.
#[derive(Default)]
struct RoundTiming {
    gen_s: f64,
    reward_s: f64,
    wait_s: f64,
    overlapped: usize,
    early: usize,
}

/// The share of groups with no signal: fewer than two scored completions, or all equal.
fn no_signal_share(groups: &[Group]) -> f64 {
    groups.iter().filter(|g| !g.has_signal()).count() as f64 / groups.len().max(1) as f64
}

/// Whether the infrastructure failed every completion of the step (none scored, none refused).
fn all_infra_excluded(groups: &[Group]) -> bool {
    let mut samples = groups.iter().flat_map(|g| &g.samples).peekable();
    samples.peek().is_some()
        && samples.all(|s| {
            matches!(
                s.outcome,
                reward_source::Outcome::Excluded {
                    infrastructure: true,
                    ..
                }
            )
        })
}

/// What a GRPO checkpoint holds beside the weights and the optimiser.
#[derive(serde::Serialize, serde::Deserialize)]
struct GrpoState {
    curriculum: Curriculum,
    blind_steps: usize,
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

    fn generator(&self) -> Generator<'_> {
        Generator {
            model: &self.student.model,
            collator: &self.student.collator,
            end_id: self.student.text.end_id,
        }
    }

    /// The sampling of group `group` of generation round `round` of `step`.
    fn group_sampling(&self, step: usize, round: usize, group: usize) -> SamplingConfig {
        let mut mix = SplitMix64::new(
            self.config.seed
                ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (round as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
                ^ group as u64,
        );
        self.sampling(mix.next_u64())
    }

    /// Generate and score one group per example: the groups, in order.
    fn sample_and_score(
        &self,
        step: usize,
        round: usize,
        examples: &[Example],
        timing: &mut RoundTiming,
    ) -> Result<Vec<Group>, TrainerError> {
        let sampling = |group: usize| self.group_sampling(step, round, group);
        let sampled = self.generator().sample_groups(
            examples,
            self.settings.num_generations,
            &sampling,
            self.rewards,
        )?;
        timing.gen_s += sampled.gen_s;
        timing.overlapped += sampled.overlapped;
        timing.early += sampled.early;
        let mut groups = Vec::with_capacity(sampled.groups.len());
        for submitted in sampled.groups {
            let waiting = Instant::now();
            let (group, scoring_s) = submitted.collect();
            timing.wait_s += waiting.elapsed().as_secs_f64();
            timing.reward_s += scoring_s;
            groups.push(group);
        }
        for group in &groups {
            let rewards = group.rewards();
            let successes = rewards.iter().flatten().filter(|r| **r > 0.0).count();
            let trials = rewards.iter().flatten().count();
            self.curriculum
                .borrow_mut()
                .record(group.example.row, successes, trials);
        }
        Ok(groups)
    }

    /// `count` training rows for generation round `round` of `step`, none of `taken`.
    fn draw_examples(
        &self,
        step: usize,
        round: usize,
        count: usize,
        taken: &[usize],
    ) -> Vec<Example> {
        let mut rng = SplitMix64::new(
            self.config.seed ^ 0xC0FF_EE00 ^ (step as u64).wrapping_mul(0x9E37_79B9) ^ round as u64,
        );
        let train_set = &self.student.train_set;
        let rows = self.curriculum.borrow().draw(count, taken, &mut rng);
        rows.into_iter().map(|row| train_set[row].clone()).collect()
    }

    /// Sample, score and arrange the groups of one step.
    fn new_round(&mut self, step: usize, batches: &[MicroBatch]) -> Result<Round, TrainerError> {
        let settings = self.settings;
        let examples: Vec<Example> = if settings.curriculum {
            self.draw_examples(step, 0, settings.prompts_per_step, &[])
        } else {
            batches
                .iter()
                .flat_map(|b| b.examples.iter().cloned())
                .collect()
        };
        let mut timing = RoundTiming::default();
        let mut groups = self.sample_and_score(step, 0, &examples, &mut timing)?;
        let zero_std_before = no_signal_share(&groups);
        // DAPO's dynamic sampling: groups without signal replaced by groups of other prompts.
        let (mut resampled, mut rounds) = (0usize, 0usize);
        if settings.dynamic_sampling {
            for round in 1..=settings.max_resample_rounds {
                let dead: Vec<usize> = (0..groups.len())
                    .filter(|&g| !groups[g].has_signal())
                    .collect();
                if dead.is_empty() {
                    break;
                }
                rounds += 1;
                let taken: Vec<usize> = groups.iter().map(|g| g.example.row).collect();
                let extra_examples = self.draw_examples(step, round, dead.len(), &taken);
                let extra = self.sample_and_score(step, round, &extra_examples, &mut timing)?;
                let mut live = extra.into_iter().filter(Group::has_signal);
                for slot in dead {
                    let Some(group) = live.next() else { break };
                    groups[slot] = group;
                    resampled += 1;
                }
            }
        }
        let zero_std_after = no_signal_share(&groups);
        self.check_rewards_arrive(&mut groups)?;
        Group::assign_advantages(&mut groups, settings.scale_rewards);
        if settings.dynamic_sampling {
            // What is still without signal is dropped from the loss, not averaged in as zeros.
            for group in groups.iter_mut().filter(|g| !g.has_signal()) {
                for sample in &mut group.samples {
                    sample.advantage = None;
                }
            }
        }
        // Per-test credit: each test function's tokens told how its cases fared.
        let mut credited_tokens = 0;
        if settings.test_credit > 0.0 {
            for group in groups.iter_mut() {
                credited_tokens += group.assign_test_credit(
                    &self.student.text.tokenizer,
                    self.student.text.end_id,
                    settings.test_credit,
                );
            }
        }
        self.logs.completions(step, &groups)?;

        let mut figures = round_figures(&groups);
        if settings.test_credit > 0.0 {
            figures.push(("credited_tokens", credited_tokens as f64));
        }
        figures.extend([
            ("frac_reward_zero_std", zero_std_before),
            ("frac_reward_zero_std_filtered", zero_std_after),
            ("resampled_groups", resampled as f64),
            ("resample_rounds", rounds as f64),
            ("gen_s", timing.gen_s),
            ("reward_s", timing.reward_s),
            ("reward_wait_s", timing.wait_s),
            ("overlap_groups", timing.overlapped as f64),
            ("early_groups", timing.early as f64),
        ]);
        let reference = (settings.beta > 0.0).then_some(match self.reference {
            Some(frozen) => Reference {
                model: frozen,
                pass: Pass::Eval,
            },
            None => Reference {
                model: &self.student.model,
                pass: Pass::BaseOnly,
            },
        });
        let layout = BatchLayout {
            end_id: self.student.text.end_id,
            mask_truncated: settings.mask_truncated_completions,
            temperature: self.logprob_temperature(),
            keep_old_logp: settings.num_iterations > 1,
            reference,
            // The online JSD's whole logits come from one forward over the padded rows.
            rows: if self.teacher.is_none() {
                RowLayout::SharedPrompt
            } else {
                RowLayout::Padded
            },
        };
        let arranging = Instant::now();
        let training = groups
            .chunks(self.config.batch_size)
            .map(|chunk| TrainingBatch::new(&self.student.model, chunk, &layout))
            .collect::<Result<Vec<_>, _>>()?;
        // The reference's (and with several iterations the sampling policy's) log-probs.
        figures.push(("logprob_s", arranging.elapsed().as_secs_f64()));
        let step_tokens = training.iter().map(|b| b.tokens).sum();
        Ok(Round {
            batches: training,
            figures,
            step_tokens,
        })
    }

    /// A step whose every completion the infrastructure failed to score has no reward; after
    /// `max_blind_steps` such steps in a row, wait for the backend (re-scoring this step's
    /// completions with back-off) and, if it does not come back within `backend_wait_s`, stop.
    fn check_rewards_arrive(&mut self, groups: &mut [Group]) -> Result<(), TrainerError> {
        if !all_infra_excluded(groups) {
            self.blind_steps = 0;
            return Ok(());
        }
        self.blind_steps += 1;
        if self.blind_steps < self.settings.max_blind_steps {
            tracing::warn!(
                steps = self.blind_steps,
                "every completion of this step was excluded by the infrastructure: no reward"
            );
            return Ok(());
        }
        let started = Instant::now();
        let mut delay = 1.0f64;
        loop {
            let waited = started.elapsed().as_secs_f64();
            let left = self.settings.backend_wait_s - waited;
            if left <= 0.0 && waited > 0.0 {
                break;
            }
            eprintln!(
                "  the reward backend failed every completion of {} steps in a row; retrying in {:.0} s ({:.0} s of {:.0} s waited)",
                self.blind_steps,
                delay.min(left.max(0.0)),
                waited,
                self.settings.backend_wait_s
            );
            std::thread::sleep(std::time::Duration::from_secs_f64(delay.min(left.max(0.0))));
            delay = (delay * 2.0).min(30.0);
            for group in groups.iter_mut() {
                let tests: Vec<String> = group.samples.iter().map(|s| s.tests.clone()).collect();
                let outcomes = self
                    .rewards
                    .submit(&group.example, &tests)
                    .collect()
                    .outcomes;
                for (sample, outcome) in group.samples.iter_mut().zip(outcomes) {
                    sample.outcome = outcome;
                }
            }
            if !all_infra_excluded(groups) {
                eprintln!("  the reward backend is back");
                self.blind_steps = 0;
                return Ok(());
            }
        }
        let reason = groups
            .iter()
            .flat_map(|g| &g.samples)
            .find_map(|s| s.outcome.exclusion())
            .unwrap_or_default()
            .to_string();
        Err(TrainerError::RewardsUnavailable(format!(
            "the reward backend failed every completion of {} steps in a row and did not come back within {:.0} s (last: {reason})",
            self.blind_steps, self.settings.backend_wait_s
        )))
    }

    /// Log-probs are taken at the sampling temperature, as TRL does.
    fn logprob_temperature(&self) -> f64 {
        if self.settings.temperature > 0.0 {
            self.settings.temperature
        } else {
            1.0
        }
    }
}

impl StageLogic for Grpo<'_> {
    fn prepare_step(
        &mut self,
        step: usize,
        batches: &mut [MicroBatch],
    ) -> Result<StepFigures, TrainerError> {
        if step.is_multiple_of(self.settings.num_iterations) || self.round.is_none() {
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
                    "gen_s"
                        | "reward_s"
                        | "reward_wait_s"
                        | "overlap_groups"
                        | "early_groups"
                        | "resample_rounds"
                        | "logprob_s"
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
            (batch.logprobs(model, temperature, Pass::Train)?, None)
        };
        let old_logp = batch.old_logp.clone().unwrap_or_else(|| logp.detach());
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
                ref_logp: batch.ref_logp.as_ref(),
                advantages: &batch.advantages,
                token_credit: batch.token_credit.as_ref(),
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
        let sampled = self
            .generator()
            .sample_groups(examples, samples, &sampling, self.rewards)?;
        let groups: Vec<Group> = sampled.groups.into_iter().map(|s| s.collect().0).collect();
        let completions = groups.iter().map(|g| g.samples.len()).sum::<usize>();
        let scored: Vec<&Reward> = groups
            .iter()
            .flat_map(|g| &g.samples)
            .filter_map(|s| s.outcome.reward())
            .collect();
        let valid: Vec<&&Reward> = scored.iter().filter(|r| r.validity > 0.0).collect();
        let mut evaluation = Evaluation::new();
        evaluation.insert("eval_excluded".into(), (completions - scored.len()) as f64);
        if scored.is_empty() {
            // Nothing scored: the held-out reward is missing, not 0.
            self.logs.evaluation(step, completions, &evaluation)?;
            return Ok(evaluation);
        }
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
        self.logs.evaluation(step, completions, &evaluation)?;
        Ok(evaluation)
    }

    fn can_stop_after(&self, done: usize) -> bool {
        done.is_multiple_of(self.settings.num_iterations)
    }

    fn state(&self) -> Option<serde_json::Value> {
        let state = GrpoState {
            curriculum: self.curriculum.borrow().clone(),
            blind_steps: self.blind_steps,
        };
        Some(serde_json::to_value(state).expect("the GRPO state serialises"))
    }

    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), TrainerError> {
        let state: GrpoState = serde_json::from_value(state)
            .map_err(|e| TrainerError::Data(format!("GRPO checkpoint state: {e}")))?;
        self.curriculum.replace(state.curriculum);
        self.blind_steps = state.blind_steps;
        Ok(())
    }
}
