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

/// Load `config.base_model` for training, and the datasets (`targets`: whether every row must
/// have one).
pub fn load_student(
    config: &StageConfig,
    device: &Device,
    targets: Targets,
) -> Result<Student, TrainerError> {
    let dtype = usable_dtype(device, parse_dtype(&config.dtype)?);
    let text = ModelTokenizer::load(&config.base_model)?;
    let train_set = load_jsonl(&config.train_data, &text.format, targets)?;
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
