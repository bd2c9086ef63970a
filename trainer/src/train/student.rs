//! What every stage starts from: the model being trained (LoRA, QLoRA or full fine-tuning, as
//! the config says), its tokenizer and end token, the datasets, and the collator.

use candle_core::Device;
use candle_nn::VarMap;

use crate::data::dataset::{load_jsonl, Collator, Example, Targets};
use crate::data::tokenizer::ModelTokenizer;
use crate::device::{parse_dtype, usable_dtype};
use crate::model::decoder::{LoadOptions, Model};
use crate::train::stage_config::StageConfig;
use crate::TrainerError;

/// What every stage starts from: the tokenizer, its end token, the datasets and the model being
/// trained (LoRA, QLoRA or full, as the config says).
pub struct Student {
    /// The tokenizer, the prompt format and the end token.
    pub text: ModelTokenizer,
    pub train_set: Vec<Example>,
    pub eval_set: Vec<Example>,
    pub model: Model,
    pub collator: Collator,
}

/// `weight × own_rows` rows of `rows` for the training mix, in a seeded order, repeating `rows`
/// when it is smaller than its share.
pub fn mixed_rows(mut rows: Vec<Example>, weight: f64, own_rows: usize, seed: u64) -> Vec<Example> {
    let wanted = (weight.max(0.0) * own_rows as f64).round() as usize;
    if rows.is_empty() || wanted == 0 {
        return Vec::new();
    }
    unitforge_sandbox::rng::SplitMix64::new(seed).shuffle(&mut rows);
    rows.iter().cycle().take(wanted).cloned().collect()
}

/// Load `config.base_model` for training, and the datasets (`targets`: whether every row must
/// have one).
pub fn load_student(
    config: &StageConfig,
    device: &Device,
    targets: Targets,
) -> Result<Student, TrainerError> {
    let dtype = usable_dtype(device, parse_dtype(&config.dtype)?);
    let text = ModelTokenizer::load(&config.base_model)?;
    let mut train_set = load_jsonl(&config.train_data, &text.format, targets)?;
    let own_rows = train_set.len();
    for (k, source) in config.train_mix.iter().enumerate() {
        let rows = load_jsonl(&source.data, &text.format, targets)?;
        train_set.extend(mixed_rows(
            rows,
            source.weight,
            own_rows,
            config.seed ^ k as u64,
        ));
    }
    let eval_set = load_jsonl(&config.eval_data, &text.format, targets)?;
    let options = LoadOptions {
        dtype,
        lora: (!config.full_finetune).then(|| config.lora.clone()),
        quantize_base: config.quantize_base,
        full_finetune: config.full_finetune,
        seed: config.seed,
        gradient_checkpointing: config.gradient_checkpointing,
    };
    let model = Model::load(&config.base_model, device, &options, &VarMap::new())?;
    let collator = Collator::new(
        text.tokenizer.clone(),
        config.max_len,
        text.end_id,
        text.end_id,
    );
    Ok(Student {
        text,
        train_set,
        eval_set,
        model,
        collator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Example> {
        (0..n)
            .map(|row| Example {
                row,
                prompt: format!("p{row}"),
                target: Some(format!("t{row}")),
                teacher_logprobs: None,
                code: None,
                module: "m".into(),
                reference_tests: None,
                prompt_from_code: false,
            })
            .collect()
    }

    #[test]
    fn a_mix_source_adds_its_share_in_a_seeded_order() {
        // A quarter of 100 own rows from a source of 40: 25 distinct rows.
        let mixed = mixed_rows(rows(40), 0.25, 100, 7);
        assert_eq!(mixed.len(), 25);
        let distinct: std::collections::BTreeSet<usize> = mixed.iter().map(|e| e.row).collect();
        assert_eq!(distinct.len(), 25);
        assert_eq!(mixed, mixed_rows(rows(40), 0.25, 100, 7));
        assert_ne!(mixed, mixed_rows(rows(40), 0.25, 100, 8));
        // A source smaller than its share repeats, each row as often as the others (±1).
        let mixed = mixed_rows(rows(3), 1.0, 10, 1);
        assert_eq!(mixed.len(), 10);
        for row in 0..3 {
            let n = mixed.iter().filter(|e| e.row == row).count();
            assert!((3..=4).contains(&n), "row {row}: {n}");
        }
        assert!(mixed_rows(rows(3), 0.0, 10, 1).is_empty());
    }
}
