//! Generation: completions sampled together as a batch with the KV cache — n of one prompt, or
//! one each of several prompts.
//!
//! The prompts are run once for all rows; each step then feeds one token per row. Sampling is
//! temperature, then top-k, then top-p (nucleus) on each row's last logits, from a SplitMix64
//! stream per row, so a seed reproduces the completions; temperature 0 is greedy. A row stops at
//! the end token; generation stops when every row has, or after `max_new_tokens`. n samples of
//! one prompt is exactly what GRPO's group needs. Prompts of different lengths are left-padded and
//! their padding masked out of attention.
//!
//! `generate_groups` is a whole GRPO step's generation as one workload: every group's prompt is
//! prefilled once (its keys and values copied to the rows of its samples), all samples are
//! decoded together, a row leaves the batch as soon as it ends, and each group is handed back
//! the moment its last sample ends, so that its scoring can start while the others decode. Row j
//! of a group draws from the stream `generate_ids` gives row j of that group's prompt and seed,
//! so the completions are those of generating each group by itself.
//!
//! A model with LoRA adapters decodes through a copy with each adapter merged into its base
//! weight (`Model::merged_for_generation`): one product per layer and token instead of three
//! products and a sum, made once per call.

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use unitforge_sandbox::rng::SplitMix64;

use crate::device::on_compute_pool;
use crate::model::decoder::{padding_mask, Model};
use crate::TrainerError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    pub top_p: f64,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            seed: 0,
        }
    }
}

/// Pick a token from one row of logits.
pub fn sample_token(logits: &[f32], config: &SamplingConfig, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if config.temperature <= 0.0 || config.top_k == 1 {
        return argmax();
    }
    if (config.top_k == 0 || config.top_k >= logits.len()) && config.top_p >= 1.0 {
        // The whole distribution: one pass in vocabulary order, no sort of the vocabulary.
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| ((l as f64 - top) / config.temperature).exp())
            .collect();
        let mut draw = rng.uniform() * weights.iter().sum::<f64>();
        for (token, weight) in weights.iter().enumerate() {
            if draw < *weight {
                return token as u32;
            }
            draw -= weight;
        }
        return argmax();
    }
    // Most likely first, ties in vocabulary order.
    let before = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..logits.len()).collect();
    if config.top_k > 0 && config.top_k < order.len() {
        // The k most likely without sorting the rest of the vocabulary.
        order.select_nth_unstable_by(config.top_k - 1, before);
        order.truncate(config.top_k);
    }
    order.sort_unstable_by(before);
    let top = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - top) / config.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut kept = 0;
    let mut mass = 0.0;
    for weight in &weights {
        kept += 1;
        mass += weight / total;
        if mass >= config.top_p {
            break;
        }
    }
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut draw = rng.uniform() * kept_total;
    for (index, weight) in weights[..kept].iter().enumerate() {
        if draw < *weight {
            return order[index] as u32;
        }
        draw -= weight;
    }
    order[kept - 1] as u32
}

/// Every prompt has 1 to `limit − 1` tokens (room for at least one more position).
fn check_prompts(
    lengths: impl IntoIterator<Item = usize>,
    limit: usize,
) -> Result<(), TrainerError> {
    match lengths.into_iter().find(|&len| len == 0 || len >= limit) {
        Some(bad) => Err(TrainerError::Data(format!(
            "a prompt has {bad} tokens; the model takes 1 to {}",
            limit - 1
        ))),
        None => Ok(()),
    }
}

/// Token ids of `n` completions of `prompt_ids` (each without the prompt; the end token, if
/// reached, is included).
pub fn generate_ids(
    model: &Model,
    prompt_ids: &[u32],
    n: usize,
    end_id: u32,
    config: &SamplingConfig,
) -> Result<Vec<Vec<u32>>, TrainerError> {
    let prompts = vec![prompt_ids.to_vec(); n.max(1)];
    generate_batch(model, &prompts, end_id, config)
}

/// One completion of each prompt, all rows sampled together: prompts of different lengths are
/// left-padded (with `end_id`) and their padding masked out of attention. Row r draws from its
/// own stream, seeded by `config.seed` and r.
pub fn generate_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    end_id: u32,
    config: &SamplingConfig,
) -> Result<Vec<Vec<u32>>, TrainerError> {
    let merged = model.merged_for_generation()?;
    let model = merged.as_ref().unwrap_or(model);
    let device: &Device = model.device();
    let n = prompts.len();
    let limit = model.config().max_position_embeddings;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    check_prompts(prompts.iter().map(Vec::len), limit)?;
    let mut rngs: Vec<SplitMix64> = (0..n).map(|row| row_stream(config.seed, row)).collect();
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let padded: Vec<u32> = prompts
        .iter()
        .zip(&pads)
        .flat_map(|(p, &pad)| std::iter::repeat_n(end_id, pad).chain(p.iter().copied()))
        .collect();
    let ragged = pads.iter().any(|&p| p > 0);
    let max_new = config.max_new_tokens.min(limit - longest);
    // Keys of the prompt and of every token still to come; each step uses its prefix.
    let key_mask = if ragged {
        Some(padding_mask(&pads, longest + max_new, device)?)
    } else {
        None
    };
    let mask_for = |keys: usize| -> Result<Option<Tensor>, TrainerError> {
        Ok(match &key_mask {
            Some(mask) => Some(mask.narrow(3, 0, keys)?),
            None => None,
        })
    };
    let mut cache = model.new_cache();
    let prompt = Tensor::from_vec(padded, (n, longest), device)?;
    let mut logits = model.forward_masked(
        &prompt,
        0,
        Some(&mut cache),
        mask_for(longest)?.as_ref(),
        false,
    )?;
    let mut outputs = vec![Vec::new(); n];
    let mut done = vec![false; n];
    for step in 0..max_new {
        let last = logits
            .narrow(1, logits.dim(1)? - 1, 1)?
            .squeeze(1)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let mut next = Vec::with_capacity(n);
        for row in 0..n {
            let token = if done[row] {
                end_id
            } else {
                sample_token(&last[row], config, &mut rngs[row])
            };
            if !done[row] {
                outputs[row].push(token);
                done[row] = token == end_id;
            }
            next.push(token);
        }
        if done.iter().all(|d| *d) || step + 1 == max_new {
            break;
        }
        let input = Tensor::new(next.as_slice(), device)?.unsqueeze(D::Minus1)?;
        let offset = longest + step;
        let mask = mask_for(offset + 1)?;
        logits = on_compute_pool(|| {
            model.forward_masked(&input, offset, Some(&mut cache), mask.as_ref(), false)
        })?;
    }
    Ok(outputs)
}

/// One group of samples to generate: a prompt, how many completions of it, and the seed of
/// its rows' sampling streams.
#[derive(Debug, Clone)]
pub struct GroupRequest {
    pub prompt: Vec<u32>,
    pub samples: usize,
    pub seed: u64,
}

/// Row `row`'s sampling stream under `seed` (the same in `generate_batch` and
/// `generate_groups`).
fn row_stream(seed: u64, row: usize) -> SplitMix64 {
    SplitMix64::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(row as u64))
}

/// The rows still decoding: which group and sample each is, and its stream.
struct LiveRows {
    group: Vec<usize>,
    sample: Vec<usize>,
    rng: Vec<SplitMix64>,
}

/// Completions of every group in `groups`, decoded as one batch (see the module's comment).
/// `done(g, ids, decoding)` receives group g's completions (its samples in order, each without
/// the prompt and with the end token when one was sampled) as soon as its last sample ends, with
/// the number of rows that go on decoding after that step; groups end in any order.
/// `config.seed` is not used: each group carries its own.
pub fn generate_groups(
    model: &Model,
    groups: &[GroupRequest],
    end_id: u32,
    config: &SamplingConfig,
    done: &mut dyn FnMut(usize, Vec<Vec<u32>>, usize) -> Result<(), TrainerError>,
) -> Result<(), TrainerError> {
    let merged = model.merged_for_generation()?;
    let model = merged.as_ref().unwrap_or(model);
    let device: &Device = model.device();
    let limit = model.config().max_position_embeddings;
    check_prompts(groups.iter().map(|g| g.prompt.len()), limit)?;
    let groups: Vec<(usize, &GroupRequest)> = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.samples > 0)
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let longest = groups
        .iter()
        .map(|(_, g)| g.prompt.len())
        .max()
        .unwrap_or(0);
    let pads: Vec<usize> = groups
        .iter()
        .map(|(_, g)| longest - g.prompt.len())
        .collect();
    let ragged = pads.iter().any(|&p| p > 0);
    let max_new = config.max_new_tokens.min(limit - longest);

    // Prefill: one row per group, left-padded to the longest prompt.
    let padded: Vec<u32> = groups
        .iter()
        .zip(&pads)
        .flat_map(|((_, g), &pad)| std::iter::repeat_n(end_id, pad).chain(g.prompt.iter().copied()))
        .collect();
    let mut cache = model.new_cache();
    let prompt = Tensor::from_vec(padded, (groups.len(), longest), device)?;
    let prefill_mask = if ragged {
        Some(padding_mask(&pads, longest, device)?)
    } else {
        None
    };
    let mut last: Vec<Vec<f32>> = model
        .last_logits(&prompt, 0, Some(&mut cache), prefill_mask.as_ref())?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;

    // Every sample a row of its own, with a copy of its group's keys and values.
    let mut live = LiveRows {
        group: Vec::new(),
        sample: Vec::new(),
        rng: Vec::new(),
    };
    for (slot, (_, g)) in groups.iter().enumerate() {
        for sample in 0..g.samples {
            live.group.push(slot);
            live.sample.push(sample);
            live.rng.push(row_stream(g.seed, sample));
        }
    }
    let expand: Vec<u32> = live.group.iter().map(|&g| g as u32).collect();
    cache.select_rows(&Tensor::new(expand.as_slice(), device)?)?;
    last = live.group.iter().map(|&g| last[g].clone()).collect();

    let mut outputs: Vec<Vec<Vec<u32>>> = groups
        .iter()
        .map(|(_, g)| vec![Vec::new(); g.samples])
        .collect();
    let mut unfinished: Vec<usize> = groups.iter().map(|(_, g)| g.samples).collect();
    for step in 0..max_new {
        let mut next = Vec::with_capacity(live.group.len());
        let mut keep = Vec::with_capacity(live.group.len());
        let mut ended = Vec::new();
        // Each row draws from its own stream, so the rows can draw in parallel (a draw from the
        // whole distribution is a pass over the vocabulary per row).
        let tokens: Vec<u32> = on_compute_pool(|| {
            last.par_iter()
                .zip(live.rng.par_iter_mut())
                .map(|(logits, rng)| sample_token(logits, config, rng))
                .collect()
        });
        for (row, &token) in tokens.iter().enumerate() {
            let (g, j) = (live.group[row], live.sample[row]);
            outputs[g][j].push(token);
            if token == end_id || step + 1 == max_new {
                unfinished[g] -= 1;
                if unfinished[g] == 0 {
                    ended.push(g);
                }
            } else {
                keep.push(row);
                next.push(token);
            }
        }
        for g in ended {
            done(groups[g].0, std::mem::take(&mut outputs[g]), keep.len())?;
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < live.group.len() {
            let rows: Vec<u32> = keep.iter().map(|&r| r as u32).collect();
            cache.select_rows(&Tensor::new(rows.as_slice(), device)?)?;
            live = LiveRows {
                group: keep.iter().map(|&r| live.group[r]).collect(),
                sample: keep.iter().map(|&r| live.sample[r]).collect(),
                rng: keep.iter().map(|&r| live.rng[r].clone()).collect(),
            };
        }
        let offset = longest + step;
        let mask = if ragged {
            let row_pads: Vec<usize> = live.group.iter().map(|&g| pads[g]).collect();
            Some(padding_mask(&row_pads, offset + 1, device)?)
        } else {
            None
        };
        let input = Tensor::new(next.as_slice(), device)?.unsqueeze(D::Minus1)?;
        let logits = on_compute_pool(|| {
            model.forward_masked(&input, offset, Some(&mut cache), mask.as_ref(), false)
        })?;
        last = logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    }
    // With no room for a new token, every group ends empty.
    for (slot, left) in unfinished.iter().enumerate() {
        if *left > 0 {
            done(groups[slot].0, std::mem::take(&mut outputs[slot]), 0)?;
        }
    }
    Ok(())
}

/// A sampled completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The sampled token ids, the end token included when it was sampled.
    pub ids: Vec<u32>,
    /// The text of the ids before the end token.
    pub text: String,
    /// Generation stopped at `max_new_tokens` before an end token.
    pub truncated: bool,
}

/// The sampled ids that make a completion's text: those before its first end token.
pub fn body_of(ids: &[u32], end_id: u32) -> &[u32] {
    let end = ids.iter().position(|&t| t == end_id).unwrap_or(ids.len());
    &ids[..end]
}

impl Completion {
    /// The completion of sampled `ids` (the end token included when it was sampled).
    pub fn decode(ids: Vec<u32>, tokenizer: &Tokenizer, end_id: u32) -> Result<Self, TrainerError> {
        let body = body_of(&ids, end_id);
        let text = tokenizer
            .decode(body, false)
            .map_err(|e| TrainerError::Data(e.to_string()))?;
        let truncated = body.len() == ids.len();
        Ok(Completion {
            ids,
            text,
            truncated,
        })
    }
}

/// One completion of each tokenised prompt (repeat a prompt for several), sampled as one batch
/// and decoded: what on-policy distillation and GRPO's groups train on.
pub fn sample_completions(
    model: &Model,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    end_id: u32,
    config: &SamplingConfig,
) -> Result<Vec<Completion>, TrainerError> {
    generate_batch(model, prompts, end_id, config)?
        .into_iter()
        .map(|ids| Completion::decode(ids, tokenizer, end_id))
        .collect()
}

/// One completion of each prompt, as text (special tokens kept, so callers can cut at them),
/// generated as one batch.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompts: &[String],
    end_id: u32,
    config: &SamplingConfig,
) -> Result<Vec<String>, TrainerError> {
    let ids = prompts
        .iter()
        .map(|prompt| {
            Ok(tokenizer
                .encode(prompt.as_str(), false)
                .map_err(|e| TrainerError::Data(e.to_string()))?
                .get_ids()
                .to_vec())
        })
        .collect::<Result<Vec<_>, TrainerError>>()?;
    generate_batch(model, &ids, end_id, config)?
        .iter()
        .map(|completion| {
            tokenizer
                .decode(completion, false)
                .map_err(|e| TrainerError::Data(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_draws_each_token_with_its_tempered_softmax_probability() {
        let logits = [0.0f32, 1.0, 2.0, 0.5, -1.0];
        for (temperature, top_k, top_p) in
            [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 3, 1.0), (1.0, 0, 0.9)]
        {
            let config = SamplingConfig {
                temperature,
                top_k,
                top_p,
                ..SamplingConfig::default()
            };
            // The expected distribution, computed directly: softmax of logits / T over the k most
            // likely, cut to the smallest prefix whose mass reaches p, renormalised.
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            if top_k > 0 {
                order.truncate(top_k);
            }
            let weights: Vec<f64> = order
                .iter()
                .map(|&i| (logits[i] as f64 / temperature).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            let (mut kept, mut mass) = (0, 0.0);
            for w in &weights {
                kept += 1;
                mass += w / total;
                if mass >= top_p {
                    break;
                }
            }
            let kept_total: f64 = weights[..kept].iter().sum();
            let mut expected = [0.0f64; 5];
            for (&i, w) in order[..kept].iter().zip(&weights) {
                expected[i] = w / kept_total;
            }
            let mut rng = SplitMix64::new(7);
            let draws = 40_000;
            let mut counts = [0usize; 5];
            for _ in 0..draws {
                counts[sample_token(&logits, &config, &mut rng) as usize] += 1;
            }
            for token in 0..5 {
                let observed = counts[token] as f64 / draws as f64;
                // Five standard errors of a binomial share.
                let bound = 5.0 * (expected[token] * (1.0 - expected[token]) / draws as f64).sqrt();
                assert!(
                    (observed - expected[token]).abs() <= bound + 1e-12,
                    "T {temperature} k {top_k} p {top_p}: token {token} drawn {observed:.4}, expected {:.4}",
                    expected[token]
                );
            }
        }
    }

    #[test]
    fn sampling_respects_greedy_top_k_and_top_p() {
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        let mut rng = SplitMix64::new(1);
        let greedy = SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        assert_eq!(sample_token(&logits, &greedy, &mut rng), 1);
        let top2 = SamplingConfig {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            ..SamplingConfig::default()
        };
        let picks: std::collections::BTreeSet<u32> = (0..200)
            .map(|_| sample_token(&logits, &top2, &mut rng))
            .collect();
        assert_eq!(picks, [1, 3].into_iter().collect());
        // p(1) ≈ 0.49 after softmax of all four; top_p 0.3 keeps only it.
        let nucleus = SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
            ..SamplingConfig::default()
        };
        assert!((0..100).all(|_| sample_token(&logits, &nucleus, &mut rng) == 1));
        let all = SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            ..SamplingConfig::default()
        };
        let picks: std::collections::BTreeSet<u32> = (0..2000)
            .map(|_| sample_token(&logits, &all, &mut rng))
            .collect();
        assert_eq!(picks.len(), 4);
    }
}
