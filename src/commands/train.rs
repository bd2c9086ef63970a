//! Training commands: `train <stage>`, `init-model`, `import-gguf`, `adapter` and
//! `teacher-logprobs`.

use anyhow::{Context, Result};
use candle_core::Device;
use unitforge_trainer::model::decoder::Model;
use unitforge_trainer::train::checkpoint::carry_tokenizer_files;

use crate::cli::{
    AdapterCommand, ImportGgufArgs, InitModelArgs, TeacherLogprobsArgs, TrainCommand, WeightDtype,
};

pub fn train(command: &TrainCommand) -> Result<()> {
    let (kind, args, overrides) = command.stage();
    let config = unitforge_trainer::train::stage_config::load(&args.config, &overrides)?;
    let device = unitforge_trainer::device::select()?;
    let summary = unitforge_trainer::stages::train(kind, &config, &device)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let headline = &summary.headline;
    println!(
        "{}: {} steps, held-out {} {:.3} → {:.3}, {} trainable parameters; model, adapter, metrics.jsonl and {} in {}",
        kind.name(),
        summary.steps,
        headline.trim_start_matches("eval_"),
        summary.first_eval.get(headline).copied().unwrap_or(f64::NAN),
        summary.final_eval.get(headline).copied().unwrap_or(f64::NAN),
        summary.trainable_parameters,
        summary
            .plot
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        summary.output_dir.display()
    );
    for (key, before) in &summary.first_eval {
        if key == headline {
            continue;
        }
        if let Some(after) = summary.final_eval.get(key) {
            println!("  {key}: {before:.3} → {after:.3}");
        }
    }
    Ok(())
}

pub fn init_model(args: &InitModelArgs) -> Result<()> {
    if let (Some(from), Some(keep)) = (&args.from, args.keep_layers) {
        let summary = unitforge_trainer::new_model::prune::prune_layers(from, keep, &args.out)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            println!(
                "wrote {}: layers {:?} of {}'s {}, {} of its {} parameters",
                args.out.display(),
                summary.kept_layers,
                from.display(),
                summary.teacher_layers,
                summary.parameters,
                summary.teacher_parameters
            );
        }
        return Ok(());
    }
    let init = unitforge_trainer::new_model::init::read_init_config(&args.config)?;
    let summary = unitforge_trainer::new_model::init::init_model(&init, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "wrote {}: {} parameters, vocabulary of {} tokens trained on {} files",
            args.out.display(),
            summary.parameters,
            summary.vocab_size,
            summary.corpus_files
        );
    }
    Ok(())
}

pub fn teacher_logprobs(args: &TeacherLogprobsArgs) -> Result<()> {
    let device = unitforge_trainer::device::select()?;
    let summary = unitforge_trainer::stages::distill::teacher_logprobs(
        &args.teacher,
        &args.data,
        &args.out,
        args.max_len,
        &device,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "wrote {}: {} rows, {} target tokens, teacher's mean log-prob {:.3}",
            args.out.display(),
            summary.rows,
            summary.tokens,
            summary.mean_logprob
        );
    }
    Ok(())
}

pub fn import_gguf(args: &ImportGgufArgs) -> Result<()> {
    let dtype = match args.dtype {
        WeightDtype::F32 => candle_core::DType::F32,
        WeightDtype::Bf16 => candle_core::DType::BF16,
    };
    let summary =
        unitforge_trainer::new_model::gguf_import::import_gguf(&args.gguf, &args.out, dtype)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let types: Vec<String> = summary
            .source_types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        println!(
            "wrote {}: {} ({} layers, {} parameters, vocabulary of {}) from {} tensors ({}), stored as {}",
            args.out.display(),
            summary.name.as_deref().unwrap_or(&summary.architecture),
            summary.layers,
            summary.parameters,
            summary.vocab_size,
            summary.tensors,
            types.join(", "),
            summary.dtype
        );
    }
    Ok(())
}

/// The PEFT files of an adapter directory.
const ADAPTER_CONFIG: &str = "adapter_config.json";
const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

pub fn adapter(command: &AdapterCommand) -> Result<()> {
    match command {
        AdapterCommand::Export { from, out, dtype } => {
            let dtype = match dtype {
                WeightDtype::F32 => candle_core::DType::F32,
                WeightDtype::Bf16 => candle_core::DType::BF16,
            };
            let weights = candle_core::safetensors::load(from.join(ADAPTER_WEIGHTS), &Device::Cpu)
                .with_context(|| format!("{} holds no PEFT adapter", from.display()))?;
            let converted = weights
                .into_iter()
                .map(|(name, tensor)| Ok((name, tensor.to_dtype(dtype)?)))
                .collect::<Result<std::collections::HashMap<_, _>>>()?;
            std::fs::create_dir_all(out)?;
            candle_core::safetensors::save(&converted, out.join(ADAPTER_WEIGHTS))?;
            std::fs::copy(from.join(ADAPTER_CONFIG), out.join(ADAPTER_CONFIG))?;
            let bytes = std::fs::metadata(out.join(ADAPTER_WEIGHTS))?.len();
            println!(
                "wrote {}: {} tensors, {:.1} MB",
                out.display(),
                converted.len(),
                bytes as f64 / 1e6
            );
        }
        AdapterCommand::Merge {
            model,
            adapter,
            out,
        } => {
            let merged = Model::load_for_inference(model, Some(adapter), &Device::Cpu)?;
            std::fs::create_dir_all(out)?;
            candle_core::safetensors::save(
                &merged.merged_weights()?,
                out.join("model.safetensors"),
            )?;
            std::fs::write(
                out.join("config.json"),
                serde_json::to_string_pretty(merged.config())?,
            )?;
            carry_tokenizer_files(model, out)?;
            std::fs::copy(model.join("tokenizer.json"), out.join("tokenizer.json"))?;
            println!(
                "wrote {}: {} with {} merged",
                out.display(),
                model.display(),
                adapter.display()
            );
        }
    }
    Ok(())
}
