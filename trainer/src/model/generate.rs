//! Generation: completions sampled together as a batch with the KV cache — n of one prompt, or
//! one each of several prompts.
//!
//! The prompts are run once for all rows; each step then feeds one token per row. Sampling is
//! temperature, then top-k, then top-p (nucleus) on each row's last logits, from a SplitMix64
//! stream per row, so a seed reproduces the completions; temperature 0 is greedy. A row stops at
//! the end token; generation stops when every row has, or after `max_new_tokens`. n samples of
//! one prompt is exactly what GRPO's group needs. Prompts of different lengths are left-padded and
//! their padding masked out of attention.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use unitforge_sandbox::rng::SplitMix64;

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
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if config.top_k > 0 {
        order.truncate(config.top_k);
    }
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
    let device: &Device = model.device();
    let n = prompts.len();
    let limit = model.config().max_position_embeddings;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(bad) = prompts.iter().find(|p| p.is_empty() || p.len() >= limit) {
        return Err(TrainerError::Data(format!(
            "a prompt has {} tokens; the model takes 1 to {}",
            bad.len(),
            limit - 1
        )));
    }
    let mut rngs: Vec<SplitMix64> = (0..n as u64)
        .map(|row| SplitMix64::new(config.seed.wrapping_mul(0x9E37_79B9).wrapping_add(row)))
        .collect();
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
        logits = model.forward_masked(
            &input,
            offset,
            Some(&mut cache),
            mask_for(offset + 1)?.as_ref(),
            false,
        )?;
    }
    Ok(outputs)
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
        .map(|ids| {
            let body: Vec<u32> = ids.iter().copied().take_while(|&t| t != end_id).collect();
            let text = tokenizer
                .decode(&body, false)
                .map_err(|e| TrainerError::Data(e.to_string()))?;
            let truncated = body.len() == ids.len();
            Ok(Completion {
                ids,
                text,
                truncated,
            })
        })
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
