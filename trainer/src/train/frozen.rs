//! Frozen models a stage compares its student with: distillation's teacher and GRPO's reference
//! policy (with full fine-tuning; LoRA's reference is the student with its adapters off). Never
//! trained, its outputs detached; it must share the student's vocabulary, since the two
//! distributions are compared token by token.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use tokenizers::Tokenizer;

use crate::model::decoder::{LoadOptions, Model};
use crate::TrainerError;

/// The vocabulary as token → id, for comparing tokenizers.
fn vocabulary(tokenizer: &Tokenizer) -> BTreeMap<String, u32> {
    tokenizer.get_vocab(true).into_iter().collect()
}

/// Load `dir` frozen, as the `role` (`teacher`, `reference`) of a student with
/// `student_tokenizer`; refuse a model whose vocabulary differs from the student's.
pub fn load_frozen(
    role: &str,
    dir: &Path,
    student_tokenizer: &Tokenizer,
    student_vocab_size: usize,
    dtype: DType,
    quantize: bool,
    device: &Device,
) -> Result<Model, TrainerError> {
    let teacher_tokenizer = crate::data::tokenizer::load(&dir.join("tokenizer.json"))?;
    let (ours, theirs) = (
        vocabulary(student_tokenizer),
        vocabulary(&teacher_tokenizer),
    );
    if ours != theirs {
        let differing = ours
            .iter()
            .find(|(token, id)| theirs.get(*token) != Some(*id))
            .map(|(token, _)| token.clone())
            .or_else(|| theirs.keys().find(|t| !ours.contains_key(*t)).cloned())
            .unwrap_or_default();
        return Err(TrainerError::Config(format!(
            "the {role} {} does not share the student's vocabulary ({} vs {} tokens; first difference at {differing:?}); the two distributions are compared token by token, so both must use the same tokenizer",
            dir.display(),
            theirs.len(),
            ours.len()
        )));
    }
    let options = LoadOptions {
        dtype,
        lora: None,
        quantize_base: quantize,
        full_finetune: false,
        seed: 0,
        gradient_checkpointing: false,
    };
    let model = Model::load(dir, device, &options, &VarMap::new())?;
    if model.config().vocab_size != student_vocab_size {
        return Err(TrainerError::Config(format!(
            "the {role}'s output layer has {} entries, the student's {}",
            model.config().vocab_size,
            student_vocab_size
        )));
    }
    Ok(model)
}
