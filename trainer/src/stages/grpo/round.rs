//! One GRPO round: a step's groups sampled, scored and arranged for training.
//!
//! Each prompt's group of completions is generated with the KV-cache generator and submitted
//! for scoring at once, so the sandbox scores group k while group k + 1 is generated. Each
//! completion becomes a [`Sample`] — the completion, the test file extracted from it, what the
//! sandbox made of it, and its advantage — and the groups become the loop's micro-batches
//! (prompt + completion per row, right-padded, the loss masked to the completion tokens that
//! count). The samples serve `num_iterations` optimiser steps.

use std::time::Instant;

use candle_core::Tensor;

use super::reward_source::{Outcome, Pending, Reward, RewardSource};
use crate::data::dataset::{Collator, Example};
use crate::data::prompts::extract_tests;
use crate::model::decoder::Model;
use crate::model::generate::{sample_completions, Completion, SamplingConfig};
use crate::model::lora::Pass;
use crate::train::train_loop::StepFigures;
use crate::TrainerError;

use super::policy_loss::{advantages, zero_spread};
use crate::train::stage_config::RewardScaling;

/// One completion of a group and everything learned about it.
pub(super) struct Sample {
    pub completion: Completion,
    /// The test file extracted from the completion: what the sandbox scored.
    pub tests: String,
    pub outcome: Outcome,
    /// Reward less the group's mean (scaled), when the sample counts; `None` when it was
    /// excluded or its group has fewer than two scored samples.
    pub advantage: Option<f64>,
}

/// One prompt's group of samples.
pub(super) struct Group {
    pub example: Example,
    pub prompt: Vec<u32>,
    pub samples: Vec<Sample>,
}

impl Group {
    /// Each sample's reward (`None` when it was excluded).
    fn rewards(&self) -> Vec<Option<f64>> {
        self.samples
            .iter()
            .map(|s| s.outcome.reward().map(|r| r.reward))
            .collect()
    }

    /// Set each sample's advantage from the rewards of every group of the step.
    pub fn assign_advantages(groups: &mut [Group], scaling: RewardScaling) {
        let rewards: Vec<Vec<Option<f64>>> = groups.iter().map(Group::rewards).collect();
        for (group, values) in groups.iter_mut().zip(advantages(&rewards, scaling)) {
            for (sample, advantage) in group.samples.iter_mut().zip(values) {
                sample.advantage = advantage;
            }
        }
    }
}

/// A group generated and submitted for scoring, its outcomes not yet collected.
pub(super) struct Submitted {
    example: Example,
    prompt: Vec<u32>,
    drafts: Vec<(Completion, String)>,
    pending: Pending,
}

impl Submitted {
    /// Wait for the group's scores: the group, and the seconds its scores took together.
    pub fn collect(self) -> (Group, f64) {
        let collected = self.pending.collect();
        let samples = self
            .drafts
            .into_iter()
            .zip(collected.outcomes)
            .map(|((completion, tests), outcome)| Sample {
                completion,
                tests,
                outcome,
                advantage: None,
            })
            .collect();
        let group = Group {
            example: self.example,
            prompt: self.prompt,
            samples,
        };
        (group, collected.scoring_s)
    }
}

/// Groups sampled and submitted for scoring.
pub(super) struct Sampled {
    pub groups: Vec<Submitted>,
    /// Seconds spent generating.
    pub gen_s: f64,
    /// Groups whose scoring had begun before the next group's generation ended.
    pub overlapped: usize,
}

/// What generating a group needs: the policy, its tokenizer's collator and end token.
pub(super) struct Generator<'a> {
    pub model: &'a Model,
    pub collator: &'a Collator,
    pub end_id: u32,
}

impl Generator<'_> {
    /// `n` completions of each example's prompt (sampled with `sampling(group index)`),
    /// submitted to `rewards` group by group as they are generated.
    pub fn sample_groups(
        &self,
        examples: &[Example],
        n: usize,
        sampling: &dyn Fn(usize) -> SamplingConfig,
        rewards: &RewardSource,
    ) -> Result<Sampled, TrainerError> {
        let mut groups: Vec<Submitted> = Vec::with_capacity(examples.len());
        let (mut gen_s, mut overlapped) = (0.0, 0usize);
        for (index, example) in examples.iter().enumerate() {
            let started = Instant::now();
            let prompt = self.collator.tokenize_prompt(example)?;
            let completions = sample_completions(
                self.model,
                self.collator.tokenizer(),
                &vec![prompt.clone(); n],
                self.end_id,
                &sampling(index),
            )?;
            gen_s += started.elapsed().as_secs_f64();
            if let Some(previous) = groups.last() {
                overlapped += usize::from(previous.pending.started());
            }
            let tests: Vec<String> = completions.iter().map(|c| extract_tests(&c.text)).collect();
            let pending = rewards.submit(example, &tests);
            groups.push(Submitted {
                example: example.clone(),
                prompt,
                drafts: completions.into_iter().zip(tests).collect(),
                pending,
            });
        }
        Ok(Sampled {
            groups,
            gen_s,
            overlapped,
        })
    }
}

/// One micro-batch of sampled groups, ready to train on.
pub(super) struct TrainingBatch {
    /// [completions, time]: prompt + completion, right-padded.
    pub input_ids: Tensor,
    pub targets: Tensor,
    /// 1 on the completion tokens that count (scored, not skipped, not masked as truncated).
    pub mask: Tensor,
    /// [completions].
    pub advantages: Tensor,
    /// The sampling policy's log-probs, kept when the samples serve several steps.
    pub old_logp: Option<Tensor>,
    pub tokens: f64,
}

/// How a micro-batch's rows are laid out and which tokens count.
pub(super) struct BatchLayout {
    /// The padding token of the rows.
    pub end_id: u32,
    /// Leave truncated completions out of the loss.
    pub mask_truncated: bool,
    /// Compute the sampling policy's log-probs now, at this temperature (several iterations
    /// on the same samples); `None` when each step's own detached log-probs serve.
    pub old_logp_temperature: Option<f64>,
}

impl TrainingBatch {
    /// Tensors of a micro-batch's groups: each row prompt + completion.
    pub fn new(
        model: &Model,
        groups: &[Group],
        layout: &BatchLayout,
    ) -> Result<Self, TrainerError> {
        let end = layout.end_id;
        let mut rows: Vec<(Vec<u32>, usize, bool)> = Vec::new();
        let mut row_advantages = Vec::new();
        for group in groups {
            for sample in &group.samples {
                let counts = sample.advantage.is_some()
                    && !(layout.mask_truncated && sample.completion.truncated);
                let sequence: Vec<u32> = group
                    .prompt
                    .iter()
                    .chain(&sample.completion.ids)
                    .copied()
                    .collect();
                rows.push((sequence, group.prompt.len(), counts));
                row_advantages.push(sample.advantage.unwrap_or(0.0) as f32);
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
        let device = model.device();
        let shape = (rows.len(), time);
        let tokens = mask.iter().map(|m| *m as f64).sum();
        let input_ids = Tensor::from_vec(inputs, shape, device)?;
        let targets = Tensor::from_vec(targets, shape, device)?;
        let old_logp = match layout.old_logp_temperature {
            Some(temperature) => Some(
                model
                    .target_logprobs(&input_ids, &targets, temperature, Pass::Eval)?
                    .detach(),
            ),
            None => None,
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
}

/// Mean of `values` (0 when empty).
pub(super) fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, count) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// The step's figures from its scored groups.
pub(super) fn round_figures(groups: &[Group]) -> StepFigures {
    let samples = || groups.iter().flat_map(|g| &g.samples);
    let scored: Vec<&Reward> = samples().filter_map(|s| s.outcome.reward()).collect();
    let excluded = |infra: bool| {
        samples()
            .filter(|s| matches!(&s.outcome, Outcome::Excluded { infrastructure, .. } if *infrastructure == infra))
            .count() as f64
    };
    let component = |f: fn(&Reward) -> f64| mean(scored.iter().map(|r| f(r)));
    let rewards: Vec<Vec<Option<f64>>> = groups.iter().map(Group::rewards).collect();
    let spreads: Vec<f64> = rewards
        .iter()
        .filter(|g| g.iter().flatten().count() >= 2)
        .map(|g| {
            let values: Vec<f64> = g.iter().flatten().copied().collect();
            let m = mean(values.iter().copied());
            (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
        })
        .collect();
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
            mean(samples().map(|s| s.completion.ids.len() as f64)),
        ),
        (
            "truncated_frac",
            mean(samples().map(|s| f64::from(u8::from(s.completion.truncated)))),
        ),
        (
            "zero_std_frac",
            no_signal as f64 / rewards.len().max(1) as f64,
        ),
        ("infra_excluded", excluded(true)),
        ("input_excluded", excluded(false)),
    ]
}
