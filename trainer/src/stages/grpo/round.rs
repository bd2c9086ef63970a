//! One GRPO round: a step's groups sampled, scored and arranged for training.
//!
//! A step's groups are generated as one batch (`generate_groups`: each prompt prefilled once,
//! finished samples leaving the batch), and each group is submitted for scoring the moment its
//! last completion ends, so the sandbox scores it while the others are still decoding. Each
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
use crate::model::generate::{body_of, generate_groups, Completion, GroupRequest, SamplingConfig};
use crate::model::lora::Pass;
use crate::train::train_loop::StepFigures;
use crate::TrainerError;

use super::policy_loss::{advantages, zero_spread};
use super::test_credit::{
    function_ranges, group_baseline, token_credit, token_ranges, TestVerdicts,
};
use crate::train::stage_config::RewardScaling;
use tokenizers::Tokenizer;

/// One completion of a group and everything learned about it.
pub(super) struct Sample {
    pub completion: Completion,
    /// The test file extracted from the completion: what the sandbox scored.
    pub tests: String,
    pub outcome: Outcome,
    /// Reward less the group's mean (scaled), when the sample counts; `None` when it was
    /// excluded or its group has fewer than two scored samples.
    pub advantage: Option<f64>,
    /// The sandbox's per-test verdicts on the suite, when it was scored pruned.
    pub verdicts: Option<TestVerdicts>,
    /// Per completion token, the credit added to the advantage (`test_credit.rs`).
    pub credit: Option<Vec<f32>>,
}

/// One prompt's group of samples.
pub(super) struct Group {
    pub example: Example,
    pub prompt: Vec<u32>,
    pub samples: Vec<Sample>,
}

impl Group {
    /// Whether the group can teach: at least two scored samples whose rewards differ.
    pub fn has_signal(&self) -> bool {
        let rewards = self.rewards();
        rewards.iter().flatten().count() >= 2 && !zero_spread(&rewards)
    }

    /// Each sample's reward (`None` when it was excluded).
    pub fn rewards(&self) -> Vec<Option<f64>> {
        self.samples
            .iter()
            .map(|s| s.outcome.reward().map(|r| r.reward))
            .collect()
    }

    /// Give each counted sample's tokens their test function's credit: λ · (p_f − p̄), p̄ over
    /// every test function the group wrote (`test_credit.rs`). Returns the tokens credited.
    pub fn assign_test_credit(&mut self, tokenizer: &Tokenizer, end_id: u32, weight: f64) -> usize {
        let Some(baseline) =
            group_baseline(self.samples.iter().filter_map(|s| s.verdicts.as_ref()))
        else {
            return 0;
        };
        let mut credited = 0;
        for sample in &mut self.samples {
            sample.credit = None;
            let (Some(verdicts), Some(_)) = (&sample.verdicts, sample.advantage) else {
                continue;
            };
            let body = body_of(&sample.completion.ids, end_id);
            let functions = function_ranges(&sample.completion.text, &sample.tests);
            let Some(tokens) = token_ranges(tokenizer, body, &sample.completion.text) else {
                continue;
            };
            sample.credit = token_credit(&tokens, &functions, verdicts, baseline, weight);
            credited += sample
                .credit
                .as_ref()
                .map_or(0, |c| c.iter().filter(|v| **v != 0.0).count());
        }
        credited
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
            .zip(collected.verdicts)
            .map(|(((completion, tests), outcome), verdicts)| Sample {
                completion,
                tests,
                outcome,
                advantage: None,
                verdicts,
                credit: None,
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
    /// Seconds spent generating (decoding, and extracting and submitting each group).
    pub gen_s: f64,
    /// Groups whose scoring had begun when the last group's generation ended.
    pub overlapped: usize,
    /// Groups handed to the sandbox while other rows were still decoding.
    pub early: usize,
}

/// What generating a group needs: the policy, its tokenizer's collator and end token.
pub(super) struct Generator<'a> {
    pub model: &'a Model,
    pub collator: &'a Collator,
    pub end_id: u32,
}

impl Generator<'_> {
    /// `n` completions of each example's prompt (group g sampled with `sampling(g)`), all
    /// decoded as one batch; each group is submitted to `rewards` the moment its last
    /// completion ends, so the sandbox scores it while the others are still generated.
    pub fn sample_groups(
        &self,
        examples: &[Example],
        n: usize,
        sampling: &dyn Fn(usize) -> SamplingConfig,
        rewards: &RewardSource,
    ) -> Result<Sampled, TrainerError> {
        let started = Instant::now();
        let requests = examples
            .iter()
            .enumerate()
            .map(|(index, example)| {
                Ok(GroupRequest {
                    prompt: self.collator.tokenize_prompt(example)?,
                    samples: n,
                    seed: sampling(index).seed,
                })
            })
            .collect::<Result<Vec<_>, TrainerError>>()?;
        let config = sampling(0);
        let mut submitted: Vec<Option<Submitted>> = (0..examples.len()).map(|_| None).collect();
        let mut finished = 0;
        let mut overlapped = 0;
        let mut early = 0;
        generate_groups(
            self.model,
            &requests,
            self.end_id,
            &config,
            &mut |index, ids, decoding| {
                early += usize::from(decoding > 0);
                let completions = ids
                    .into_iter()
                    .map(|ids| Completion::decode(ids, self.collator.tokenizer(), self.end_id))
                    .collect::<Result<Vec<_>, TrainerError>>()?;
                let tests: Vec<String> =
                    completions.iter().map(|c| extract_tests(&c.text)).collect();
                let pending = rewards.submit(&examples[index], &tests);
                finished += 1;
                if finished == examples.len() {
                    // Groups whose scoring had begun before generation ended.
                    overlapped = submitted
                        .iter()
                        .flatten()
                        .filter(|s| s.pending.started())
                        .count();
                }
                submitted[index] = Some(Submitted {
                    example: examples[index].clone(),
                    prompt: requests[index].prompt.clone(),
                    drafts: completions.into_iter().zip(tests).collect(),
                    pending,
                });
                Ok(())
            },
        )?;
        let groups = submitted
            .into_iter()
            .map(|s| s.expect("every group ends"))
            .collect();
        Ok(Sampled {
            groups,
            gen_s: started.elapsed().as_secs_f64(),
            overlapped,
            early,
        })
    }
}

/// Rows of a micro-batch that share one forward pass, right-padded to their longest.
pub(super) struct Bucket {
    /// The rows' tokens from position `from` on when they share `prompt`, else whole.
    input_ids: Tensor,
    targets: Tensor,
    /// The first position any of its rows counts (its shortest prompt's length − 1): the
    /// positions before it are prompt, whose log-probs no loss reads.
    from: usize,
    /// The prompt's first `from` tokens [1, from], when every row continues them and they go
    /// through the model once for all of them (`Model::shared_prefix_target_logprobs`).
    prompt: Option<Tensor>,
}

/// One micro-batch of sampled groups, ready to train on. Its rows are ordered longest first
/// (group by group when they share their prompt) and split into buckets of similar length,
/// each its own forward pass, so that a short completion is not padded to the longest of its
/// micro-batch; the per-row tensors all follow that order (the loss does not depend on the
/// order of its rows).
pub(super) struct TrainingBatch {
    /// [completions, time]: prompt + completion, right-padded to the longest row (the online
    /// JSD's path, which needs whole logits, uses these).
    pub input_ids: Tensor,
    pub targets: Tensor,
    buckets: Vec<Bucket>,
    /// 1 on the completion tokens that count (scored, not skipped, not masked as truncated).
    pub mask: Tensor,
    /// [completions].
    pub advantages: Tensor,
    /// [completions, time]: per-token credit added to the advantages, when any sample has some.
    pub token_credit: Option<Tensor>,
    /// The sampling policy's log-probs, kept when the samples serve several steps.
    pub old_logp: Option<Tensor>,
    /// The reference policy's log-probs, when the loss has a KL term: computed once for the
    /// round, since the reference does not change.
    pub ref_logp: Option<Tensor>,
    pub tokens: f64,
}

/// The reference policy: a frozen model, or the student with its adapters off.
pub(super) struct Reference<'a> {
    pub model: &'a Model,
    pub pass: Pass,
}

/// How a micro-batch's rows are laid out and which tokens count.
pub(super) struct BatchLayout<'a> {
    /// The padding token of the rows.
    pub end_id: u32,
    /// Leave truncated completions out of the loss.
    pub mask_truncated: bool,
    /// The temperature log-probs are taken at.
    pub temperature: f64,
    /// Compute the sampling policy's log-probs now (several iterations on the same samples);
    /// otherwise each step's own detached log-probs serve.
    pub keep_old_logp: bool,
    /// The reference the KL term compares with, when there is one.
    pub reference: Option<Reference<'a>>,
    /// How the rows go through the model.
    pub rows: RowLayout,
}

/// How a micro-batch's rows go through the model for their log-probs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowLayout {
    /// One forward for all rows, each padded to the longest.
    Padded,
    /// Buckets of one group's rows of similar length; the group's prompt goes through the model
    /// once per bucket and its keys and values serve every row (a group's samples share their
    /// prompt, typically longer than their completions).
    SharedPrompt,
}

/// One row of a micro-batch: a sample's prompt + completion and how its tokens count.
struct Row<'a> {
    /// Its group's index in the micro-batch.
    group: usize,
    sequence: Vec<u32>,
    prompt_len: usize,
    /// Whether its completion tokens count in the loss.
    counts: bool,
    advantage: f32,
    /// Per completion token, added to the advantage.
    credit: Option<&'a [f32]>,
}

/// A new bucket starts when a row is shorter than this share of the bucket's longest row.
const BUCKET_SHARE: f64 = 0.75;

impl TrainingBatch {
    /// Tensors of a micro-batch's groups: each row prompt + completion.
    pub fn new(
        model: &Model,
        groups: &[Group],
        layout: &BatchLayout,
    ) -> Result<Self, TrainerError> {
        let end = layout.end_id;
        let mut rows: Vec<Row> = Vec::new();
        for (index, group) in groups.iter().enumerate() {
            for sample in &group.samples {
                let counts = sample.advantage.is_some()
                    && !(layout.mask_truncated && sample.completion.truncated);
                let sequence: Vec<u32> = group
                    .prompt
                    .iter()
                    .chain(&sample.completion.ids)
                    .copied()
                    .collect();
                let advantage = sample.advantage.unwrap_or(0.0) as f32;
                rows.push(Row {
                    group: index,
                    sequence,
                    prompt_len: group.prompt.len(),
                    counts,
                    advantage,
                    credit: sample.credit.as_deref(),
                });
            }
        }
        // Longest first (stable, so equal lengths keep their order), group by group when the
        // rows share their prompt.
        let sharing = layout.rows == RowLayout::SharedPrompt;
        rows.sort_by_key(|row| {
            (
                if sharing { row.group } else { 0 },
                std::cmp::Reverse(row.sequence.len()),
            )
        });
        let device = model.device();
        let lengths: Vec<usize> = rows.iter().map(|row| row.sequence.len() - 1).collect();
        let time = lengths.iter().copied().max().unwrap_or(1).max(1);
        // The rows of `range` from position `start` on, right-padded to `width` positions.
        let padded = |range: std::ops::Range<usize>,
                      start: usize,
                      width: usize|
         -> Result<(Tensor, Tensor), TrainerError> {
            let (mut inputs, mut targets) = (Vec::new(), Vec::new());
            for Row { sequence, .. } in &rows[range.clone()] {
                let len = sequence.len() - 1;
                inputs.extend(sequence[start..len].iter().copied());
                inputs.extend(std::iter::repeat_n(end, width + start - len));
                targets.extend(sequence[start + 1..].iter().copied());
                targets.extend(std::iter::repeat_n(end, width + start - len));
            }
            let shape = (range.len(), width);
            Ok((
                Tensor::from_vec(inputs, shape, device)?,
                Tensor::from_vec(targets, shape, device)?,
            ))
        };
        // What a row costs in its bucket's forward when its group's prompt is shared: the
        // positions from the prompt's last token on.
        let own_positions = |row: &Row| row.sequence.len().saturating_sub(row.prompt_len.max(1));
        let mut buckets = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let longest = lengths[start];
            let mut end_row = start + 1;
            while end_row < rows.len()
                && (!sharing
                    || (rows[end_row].group == rows[start].group
                        && own_positions(&rows[end_row]) as f64
                            >= BUCKET_SHARE * own_positions(&rows[start]) as f64))
            {
                end_row += 1;
            }
            let from = rows[start..end_row]
                .iter()
                .map(|row| row.prompt_len.saturating_sub(1))
                .min()
                .unwrap_or(0);
            // Sharing, the rows go through the model from position `from` on.
            let (prompt, own_start) = if sharing && from > 0 {
                let prompt = rows[start].sequence[..from].to_vec();
                (Some(Tensor::from_vec(prompt, (1, from), device)?), from)
            } else {
                (None, 0)
            };
            let (input_ids, targets) =
                padded(start..end_row, own_start, (longest - own_start).max(1))?;
            buckets.push(Bucket {
                input_ids,
                targets,
                from,
                prompt,
            });
            start = end_row;
        }
        let (input_ids, targets) = padded(0..rows.len(), 0, time)?;
        let mut mask = Vec::with_capacity(rows.len() * time);
        for Row {
            sequence,
            prompt_len,
            counts,
            ..
        } in &rows
        {
            let len = sequence.len() - 1;
            // Position t predicts token t + 1: it counts when that token is the completion's.
            mask.extend((0..time).map(|t| {
                if *counts && t < len && t + 1 >= *prompt_len {
                    1.0f32
                } else {
                    0.0
                }
            }));
        }
        let shape = (rows.len(), time);
        let tokens = mask.iter().map(|m| *m as f64).sum();
        let advantages: Vec<f32> = rows.iter().map(|row| row.advantage).collect();
        // Completion token j of a row is predicted at position prompt_len − 1 + j.
        let token_credit = if rows.iter().any(|row| row.credit.is_some()) {
            let mut credit = vec![0f32; rows.len() * time];
            for (index, row) in rows.iter().enumerate() {
                for (j, value) in row.credit.unwrap_or_default().iter().enumerate() {
                    let t = row.prompt_len - 1 + j;
                    if t < time {
                        credit[index * time + t] = *value;
                    }
                }
            }
            Some(Tensor::from_vec(credit, shape, device)?)
        } else {
            None
        };
        let mut batch = TrainingBatch {
            input_ids,
            targets,
            buckets,
            mask: Tensor::from_vec(mask, shape, device)?,
            advantages: Tensor::from_vec(advantages, rows.len(), device)?,
            token_credit,
            old_logp: None,
            ref_logp: None,
            tokens,
        };
        if layout.keep_old_logp {
            batch.old_logp = Some(
                batch
                    .logprobs(model, layout.temperature, Pass::Eval)?
                    .detach(),
            );
        }
        if let Some(reference) = &layout.reference {
            batch.ref_logp = Some(
                batch
                    .logprobs(reference.model, layout.temperature, reference.pass)?
                    .detach(),
            );
        }
        Ok(batch)
    }

    /// log p(target) of every row under `model` [completions, time]: one forward per bucket,
    /// each right-padded with zeros (masked out) to the batch's time; the prompt positions
    /// before a bucket's first completion token read 0 (masked out too).
    pub fn logprobs(
        &self,
        model: &Model,
        temperature: f64,
        pass: Pass,
    ) -> Result<Tensor, TrainerError> {
        let time = self.targets.dim(1)?;
        let parts = self
            .buckets
            .iter()
            .map(|bucket| {
                let logp = match &bucket.prompt {
                    Some(prompt) => model
                        .shared_prefix_target_logprobs(
                            prompt,
                            &bucket.input_ids,
                            &bucket.targets,
                            temperature,
                            pass,
                        )?
                        .pad_with_zeros(1, bucket.from, 0)?,
                    None => model.target_logprobs_from(
                        &bucket.input_ids,
                        &bucket.targets,
                        bucket.from,
                        temperature,
                        pass,
                    )?,
                };
                // A bucket of completions with no token is one position wider than its rows.
                let width = logp.dim(1)?;
                Ok(match width.cmp(&time) {
                    std::cmp::Ordering::Less => logp.pad_with_zeros(1, 0, time - width)?,
                    std::cmp::Ordering::Equal => logp,
                    std::cmp::Ordering::Greater => logp.narrow(1, 0, time)?,
                })
            })
            .collect::<Result<Vec<_>, TrainerError>>()?;
        Ok(Tensor::cat(&parts, 0)?)
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

/// The step's figures from its scored groups. With nothing scored the reward and its parts
/// are missing, not 0: the step had no reward.
pub(super) fn round_figures(groups: &[Group]) -> StepFigures {
    let samples = || groups.iter().flat_map(|g| &g.samples);
    let scored: Vec<&Reward> = samples().filter_map(|s| s.outcome.reward()).collect();
    let excluded = |infra: bool| {
        samples()
            .filter(|s| matches!(&s.outcome, Outcome::Excluded { infrastructure, .. } if *infrastructure == infra))
            .count() as f64
    };
    let mut figures = StepFigures::new();
    if !scored.is_empty() {
        let component = |f: fn(&Reward) -> f64| mean(scored.iter().map(|r| f(r)));
        let spreads: Vec<f64> = groups
            .iter()
            .map(Group::rewards)
            .filter(|g| g.iter().flatten().count() >= 2)
            .map(|g| {
                let values: Vec<f64> = g.iter().flatten().copied().collect();
                let m = mean(values.iter().copied());
                (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64)
                    .sqrt()
            })
            .collect();
        figures.extend([
            ("reward", component(|r| r.reward)),
            ("reward_std", mean(spreads)),
            ("validity", component(|r| r.validity)),
            ("mutant_kill", component(|r| r.mutant_kill)),
            ("speed", component(|r| r.speed)),
            ("stability", component(|r| r.stability)),
            ("robustness", component(|r| r.robustness)),
        ]);
    }
    figures.extend([
        (
            "completion_len",
            mean(samples().map(|s| s.completion.ids.len() as f64)),
        ),
        (
            "prompt_len",
            mean(groups.iter().map(|g| g.prompt.len() as f64)),
        ),
        (
            "truncated_frac",
            mean(samples().map(|s| f64::from(u8::from(s.completion.truncated)))),
        ),
        ("infra_excluded", excluded(true)),
        ("input_excluded", excluded(false)),
    ]);
    figures
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::kernels::fused::test_support::{max_abs, max_diff};
    use crate::model::decoder::LoadOptions;
    use crate::model::recompute;
    use crate::train::probe::{shape, RandomWeights};

    fn sample(ids: Vec<u32>, advantage: f64) -> Sample {
        Sample {
            completion: Completion {
                ids,
                text: String::new(),
                truncated: false,
            },
            tests: String::new(),
            outcome: Outcome::Scored(Reward::plain(advantage)),
            advantage: Some(advantage),
            verdicts: None,
            credit: None,
        }
    }

    fn group(prompt: Vec<u32>, samples: Vec<Sample>) -> Group {
        Group {
            example: Example {
                row: 0,
                prompt: String::new(),
                target: None,
                teacher_logprobs: None,
                code: None,
                module: "m".into(),
                reference_tests: None,
                prompt_from_code: false,
            },
            prompt,
            samples,
        }
    }

    /// Σ over counted tokens of advantage · log p: a loss whose gradient reaches every adapter.
    fn surrogate(batch: &TrainingBatch, logp: &Tensor) -> Tensor {
        (logp * &batch.mask)
            .unwrap()
            .broadcast_mul(&batch.advantages.unsqueeze(1).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
    }

    #[test]
    fn test_credit_reaches_the_positions_that_predict_each_functions_tokens() {
        use crate::data::tokenizer::train_bpe;
        let suite = |expected: u32| {
            format!(
                "from m import f\n\ndef test_one():\n    assert f(1) == 2\n\n\
                 def test_two():\n    assert f(2) == {expected}\n"
            )
        };
        let texts: Vec<String> = (0..30).map(&suite).collect();
        let tokenizer = train_bpe(&texts, 300).unwrap();
        let end_id = tokenizer.token_to_id("<|endoftext|>").unwrap();
        let encode = |text: &str| tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        let scored = |expected: u32, kept: &[(&str, usize, usize)], advantage: f64| {
            let text = suite(expected);
            let mut ids = encode(&text);
            ids.push(end_id);
            Sample {
                completion: Completion {
                    ids,
                    text: text.clone(),
                    truncated: false,
                },
                tests: text,
                outcome: Outcome::Scored(Reward::plain(advantage)),
                advantage: Some(advantage),
                verdicts: Some(TestVerdicts::from_counts(kept.iter().copied())),
                credit: None,
            }
        };
        // Suite A: both tests kept; suite B: its second test pruned. p̄ = (1 + 1 + 1 + 0) / 4.
        let mut one = group(
            encode("def f(x):\n    return x + 1\n"),
            vec![
                scored(3, &[("test_one", 1, 1), ("test_two", 1, 1)], 0.1),
                scored(4, &[("test_one", 1, 1), ("test_two", 0, 1)], -0.1),
            ],
        );
        let credited = one.assign_test_credit(&tokenizer, end_id, 0.4);
        assert!(credited > 0);
        let b = &one.samples[1];
        let credit = b.credit.as_ref().unwrap();
        let text = &b.completion.text;
        let ranges = token_ranges(&tokenizer, &b.completion.ids[..credit.len()], text).unwrap();
        let four = text.rfind('4').unwrap();
        let at_four = ranges.iter().position(|r| r.contains(&four)).unwrap();
        assert!((credit[at_four] - 0.4 * (0.0 - 0.75)).abs() < 1e-6);
        let one_at = text.find("f(1)").unwrap();
        let at_one = ranges.iter().position(|r| r.contains(&one_at)).unwrap();
        assert!((credit[at_one] - 0.4 * 0.25).abs() < 1e-6);
        assert_eq!(credit[0], 0.0, "the import has no credit");

        // In the batch: completion token j of a row sits at position prompt_len − 1 + j.
        let device = Device::Cpu;
        let weights = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone());
        let model = Model::from_weights(
            shape("tiny").unwrap(),
            &weights,
            &device,
            &LoadOptions::default(),
            &VarMap::new(),
        )
        .unwrap();
        let layout = BatchLayout {
            end_id,
            mask_truncated: false,
            temperature: 1.0,
            keep_old_logp: false,
            reference: None,
            rows: RowLayout::SharedPrompt,
        };
        let batch = TrainingBatch::new(&model, std::slice::from_ref(&one), &layout).unwrap();
        let grid: Vec<Vec<f32>> = batch.token_credit.as_ref().unwrap().to_vec2().unwrap();
        let prompt_len = one.prompt.len();
        // The batch's rows are longest first (a stable sort).
        let mut order: Vec<usize> = (0..one.samples.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(one.samples[i].completion.ids.len()));
        for (row, sample) in order.iter().map(|&i| &one.samples[i]).enumerate() {
            let values = sample.credit.as_ref().unwrap();
            for (j, value) in values.iter().enumerate() {
                assert_eq!(grid[row][prompt_len - 1 + j], *value, "row {row} token {j}");
            }
            assert!(grid[row][..prompt_len - 1].iter().all(|v| *v == 0.0));
        }
        // Without credit the batch carries none.
        for sample in &mut one.samples {
            sample.credit = None;
        }
        let plain = TrainingBatch::new(&model, std::slice::from_ref(&one), &layout).unwrap();
        assert!(plain.token_credit.is_none());
    }

    /// Each row's counted log-probs summed, sorted: what two layouts that order their rows
    /// differently must agree on.
    fn row_sums(batch: &TrainingBatch, logp: &Tensor) -> Vec<f32> {
        let mut sums = (logp * &batch.mask)
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        sums.sort_by(f32::total_cmp);
        sums
    }

    #[test]
    fn prompt_sharing_buckets_give_the_padded_batch_its_loss_and_gradients() {
        let device = Device::Cpu;
        let model = crate::train::probe::tiny_lora_model(false);
        // Completions of 3 to 40 tokens, in two groups with prompts of different lengths.
        let ids = |n: usize, seed: u32| (0..n as u32).map(|i| (i * 7 + seed) % 2000).collect();
        let groups = vec![
            group(
                ids(12, 1),
                vec![
                    sample(ids(40, 2), 0.5),
                    sample(ids(3, 3), -0.25),
                    sample(ids(22, 4), 1.0),
                ],
            ),
            group(
                ids(5, 5),
                vec![sample(ids(9, 6), -1.0), sample(ids(38, 7), 0.75)],
            ),
        ];
        let layout = |rows| BatchLayout {
            end_id: 0,
            mask_truncated: false,
            temperature: 1.0,
            keep_old_logp: true,
            reference: Some(Reference {
                model: &model,
                pass: Pass::BaseOnly,
            }),
            rows,
        };
        let padded = TrainingBatch::new(&model, &groups, &layout(RowLayout::Padded)).unwrap();
        let shared = TrainingBatch::new(&model, &groups, &layout(RowLayout::SharedPrompt)).unwrap();
        assert_eq!(padded.buckets.len(), 1);
        // Each group's rows bucketed by completion length (40 | 22 | 3 tokens; 38 | 9), each bucket's
        // prompt through the model once, the rows from their last prompt position on.
        assert_eq!(shared.buckets.len(), 5);
        for bucket in &shared.buckets {
            let prompt = bucket.prompt.as_ref().expect("a shared prompt");
            assert_eq!(prompt.dim(1).unwrap(), bucket.from);
            assert!(bucket.from == 11 || bucket.from == 4, "{}", bucket.from);
        }
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let (diff, scale) = (max_diff(a, b), max_abs(a));
            assert!(
                diff <= 1e-4 * (1.0 + scale),
                "{what}: {diff} (scale {scale})"
            );
        };
        assert_eq!(padded.tokens, shared.tokens);
        // The layouts order their rows differently: each row's counted log-probs, summed.
        let sums = |batch: &TrainingBatch, logp: &Option<Tensor>| {
            Tensor::new(row_sums(batch, logp.as_ref().unwrap()), &device).unwrap()
        };
        close(
            &sums(&padded, &padded.old_logp),
            &sums(&shared, &shared.old_logp),
            "old log-probs",
        );
        close(
            &sums(&padded, &padded.ref_logp),
            &sums(&shared, &shared.ref_logp),
            "reference log-probs",
        );
        let loss_padded = surrogate(&padded, &padded.logprobs(&model, 1.0, Pass::Train).unwrap());
        let loss_shared = surrogate(&shared, &shared.logprobs(&model, 1.0, Pass::Train).unwrap());
        close(&loss_padded, &loss_shared, "loss");
        // The reference: every position's log-probs from the whole head, one forward, masked.
        let whole = model
            .target_logprobs(&padded.input_ids, &padded.targets, 1.0, Pass::Train)
            .unwrap();
        let loss_whole = surrogate(&padded, &whole);
        close(&loss_whole, &loss_shared, "loss against the whole head");
        let grads_whole = recompute::backward(&loss_whole).unwrap();
        let grads_padded = recompute::backward(&loss_padded).unwrap();
        let grads_shared = recompute::backward(&loss_shared).unwrap();
        let mut compared = 0;
        for (name, var) in model.trainable() {
            let a = grads_padded.get(var.as_tensor()).expect("a gradient");
            let c = grads_whole.get(var.as_tensor()).expect("a gradient");
            let d = grads_shared.get(var.as_tensor()).expect("a gradient");
            close(a, d, name);
            close(c, d, name);
            compared += 1;
        }
        assert!(compared > 10);
    }
}
