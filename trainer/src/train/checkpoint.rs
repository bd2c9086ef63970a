//! What a stage writes to disk and reads back: checkpoints (trainable weights, optimiser state,
//! the step) from which `resume: true` continues exactly, and the final output directory — the
//! merged model in Hugging Face layout, the tokenizer and, with LoRA, the PEFT adapter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use tokenizers::Tokenizer;

use crate::data::tokenizer;
use crate::model::decoder::Model;
use crate::train::optim::AdamW;
use crate::train::stage_config::StageConfig;
use crate::TrainerError;

pub fn checkpoint_dir(output: &Path, step: usize) -> PathBuf {
    output.join(format!("checkpoint-{step:06}"))
}

/// The checkpoint with the highest step in `output`, if any.
pub fn latest_checkpoint(output: &Path) -> Option<(PathBuf, usize)> {
    std::fs::read_dir(output)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((entry.path(), step))
        })
        .max_by_key(|(_, step)| *step)
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |e| TrainerError::Io(path.display().to_string(), e)
}

/// Write the trainable weights, the optimiser state and the step into `dir`.
pub fn save(
    model: &Model,
    config: &StageConfig,
    dir: &Path,
    optimizer: &AdamW,
    step: usize,
) -> Result<(), TrainerError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let trainable: HashMap<String, Tensor> = model
        .trainable()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    candle_core::safetensors::save(&trainable, dir.join("trainable.safetensors"))?;
    optimizer.save(&dir.join("optimizer.safetensors"))?;
    let state = serde_json::json!({ "step": step, "config": config });
    std::fs::write(
        dir.join("trainer_state.json"),
        serde_json::to_string_pretty(&state).expect("state serialises"),
    )
    .map_err(io(dir))?;
    Ok(())
}

/// Load the latest checkpoint of `config.output_dir` into the model and optimiser; the step to
/// continue from (0 when there is none).
pub fn restore(
    model: &Model,
    config: &StageConfig,
    optimizer: &mut AdamW,
) -> Result<usize, TrainerError> {
    let Some((dir, step)) = latest_checkpoint(&config.output_dir) else {
        return Ok(0);
    };
    let saved = candle_core::safetensors::load(dir.join("trainable.safetensors"), model.device())?;
    for (name, var) in model.trainable() {
        let value = saved
            .get(name)
            .ok_or_else(|| TrainerError::Config(format!("{} lacks {name}", dir.display())))?;
        var.set(&value.to_dtype(var.dtype())?)?;
    }
    optimizer.load(&dir.join("optimizer.safetensors"))?;
    tracing::info!(step, "resumed from {}", dir.display());
    Ok(step)
}

/// Copy what `from` has beside its tokenizer (chat template, special tokens, generation
/// settings) to `to`, so the next stage renders prompts and ends answers as this one did.
pub fn carry_tokenizer_files(from: &Path, to: &Path) -> Result<(), TrainerError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for name in tokenizer::TOKENIZER_COMPANIONS {
        let source = from.join(name);
        if source.is_file() && source != to.join(name) {
            std::fs::copy(&source, to.join(name)).map_err(io(&source))?;
        }
    }
    Ok(())
}

/// The PEFT adapter config Python's `peft` reads.
fn adapter_config(config: &StageConfig) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": config.base_model.display().to_string(),
        "r": config.lora.rank,
        "lora_alpha": config.lora.alpha,
        "lora_dropout": config.lora.dropout,
        "target_modules": config.lora.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "modules_to_save": null,
    })
}

/// Write the final model: merged weights in Hugging Face layout (unless `save_merged` is off and
/// there is an adapter), the tokenizer, and (with LoRA) the PEFT adapter.
pub fn save_final(
    model: &Model,
    config: &StageConfig,
    tokenizer: &Tokenizer,
) -> Result<(), TrainerError> {
    carry_tokenizer_files(&config.base_model, &config.output_dir)?;
    let out = &config.output_dir;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let adapter = model.adapter_weights();
    if config.save_merged || adapter.is_empty() {
        candle_core::safetensors::save(&model.merged_weights()?, out.join("model.safetensors"))?;
        std::fs::write(
            out.join("config.json"),
            serde_json::to_string_pretty(model.config()).expect("config serialises"),
        )
        .map_err(io(out))?;
    }
    tokenizer::save(tokenizer, &out.join("tokenizer.json"))?;
    if !adapter.is_empty() {
        candle_core::safetensors::save(&adapter, out.join("adapter_model.safetensors"))?;
        std::fs::write(
            out.join("adapter_config.json"),
            serde_json::to_string_pretty(&adapter_config(config)).expect("json"),
        )
        .map_err(io(out))?;
    }
    Ok(())
}
