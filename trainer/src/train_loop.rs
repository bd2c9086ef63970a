//! The optimisation loop every training stage shares, and the stage config it reads.
//!
//! Each optimiser step: `grad_accum` micro-batches (the stage computes each one's loss),
//! gradients summed and averaged, clipped to `max_grad_norm`, one AdamW update at the warmup +
//! cosine learning rate. Every `eval_every` steps the stage evaluates on held-out data; every
//! `save_every` steps a checkpoint (trainable weights, optimiser state, step) is written, from
//! which `resume: true` continues exactly. At the end the output directory holds the merged
//! model in Hugging Face layout (what the next stage names as `base_model`), the PEFT adapter,
//! `metrics.jsonl` (one line per step) and `loss_curve.png`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use unitforge_sandbox::rng::SplitMix64;

use crate::data::{load_jsonl, with_code_variant, Batch, Collator, Example};
use crate::distill::DistillSettings;
use crate::lora::LoraConfig;
use crate::loss::masked_cross_entropy;
use crate::model::{LoadOptions, Model};
use crate::optim::{accumulate, clip_grad_norm, learning_rate, scale_grads, AdamW, AdamWConfig};
use crate::plot::{line_chart, Series};
use crate::tokenizer;
use crate::TrainerError;

fn default_dtype() -> String {
    "f32".into()
}

/// A stage's YAML config (`configs/sft.yaml`, `configs/distill_gkd.yaml`): the loop's settings,
/// shared by every stage, plus the distillation section only `train distill` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub base_model: PathBuf,
    pub output_dir: PathBuf,
    pub train_data: PathBuf,
    pub eval_data: PathBuf,
    pub max_steps: usize,
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    pub learning_rate: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default = "tenth")]
    pub min_lr_ratio: f64,
    #[serde(default = "one_f")]
    pub max_grad_norm: f64,
    pub max_len: usize,
    #[serde(default = "fifty")]
    pub eval_every: usize,
    /// Held-out batches per evaluation (0 = all).
    #[serde(default)]
    pub eval_batches: usize,
    #[serde(default = "hundred")]
    pub save_every: usize,
    #[serde(default)]
    pub seed: u64,
    /// `f32`, `bf16` or `f16`.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    #[serde(default)]
    pub full_finetune: bool,
    #[serde(default)]
    pub quantize_base: bool,
    #[serde(default)]
    pub lora: LoraConfig,
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Continue from the latest checkpoint in `output_dir`.
    #[serde(default)]
    pub resume: bool,
    /// End this invocation after this step (writing a checkpoint), to continue later with
    /// `resume: true`; the schedule still runs to `max_steps`.
    #[serde(default)]
    pub stop_at: Option<usize>,
    /// Show a progress bar.
    #[serde(default = "yes")]
    pub progress: bool,
    /// Chance that a training example's prompt shows a semantics-preserving variant of its code
    /// (renamed locals, perturbed comments) instead of the code itself; 0 turns it off.
    #[serde(default)]
    pub augment_variants: f64,
    /// Also write the merged model (base + adapter) in Hugging Face layout. Full fine-tuning
    /// always writes it (there is no adapter).
    #[serde(default = "yes")]
    pub save_merged: bool,
    /// The teacher checkpoint of `train distill` (absent: the data's `teacher_logprobs`).
    #[serde(default)]
    pub teacher_model: Option<PathBuf>,
    /// Loss weights and settings of `train distill`.
    #[serde(default)]
    pub distill: DistillSettings,
}

fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn tenth() -> f64 {
    0.1
}
fn fifty() -> usize {
    50
}
fn hundred() -> usize {
    100
}
fn yes() -> bool {
    true
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub grad_norm: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// The stage's own figures: `ce`, `jsd`, `rkl` every step; `teacher_top1_agreement` and
    /// others at eval steps.
    #[serde(flatten)]
    pub parts: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub steps: usize,
    pub first_eval_loss: f64,
    pub final_eval_loss: f64,
    /// The evaluation's other figures before and after training.
    pub first_eval: BTreeMap<String, f64>,
    pub final_eval: BTreeMap<String, f64>,
    pub trainable_parameters: usize,
    pub output_dir: PathBuf,
}

pub fn parse_dtype(name: &str) -> Result<DType, TrainerError> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(TrainerError::Config(format!(
            "dtype `{other}`: expected f32, bf16 or f16"
        ))),
    }
}

fn checkpoint_dir(output: &Path, step: usize) -> PathBuf {
    output.join(format!("checkpoint-{step:06}"))
}

fn latest_checkpoint(output: &Path) -> Option<(PathBuf, usize)> {
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |e| TrainerError::Io(path.display().to_string(), e)
}

fn save_trainable(
    model: &Model,
    config: &StageConfig,
    dir: &Path,
    optimizer: &AdamW,
    step: usize,
) -> Result<(), TrainerError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let trainable: std::collections::HashMap<String, Tensor> = model
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

/// Write the final model: merged weights in Hugging Face layout (unless `save_merged` is off and
/// there is an adapter), the tokenizer, and (with LoRA) the PEFT adapter.
fn save_final(
    model: &Model,
    config: &StageConfig,
    tokenizer: &tokenizers::Tokenizer,
) -> Result<(), TrainerError> {
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

/// Named figures a stage reports (`ce`, `jsd`, `teacher_top1_agreement`, …).
pub type Figures = Vec<(&'static str, f64)>;

/// One micro-batch's contribution: the loss to differentiate, its target tokens, and named
/// parts to log (averaged over the step's micro-batches).
pub struct MicroLoss {
    pub loss: Tensor,
    pub tokens: usize,
    pub parts: Figures,
}

/// A held-out evaluation: the loss stages compare, and other named figures.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub loss: f64,
    pub parts: BTreeMap<String, f64>,
}

/// A stage's loss for one micro-batch; the stream is seeded per micro-batch (on-policy draws).
pub type MicroLossFn<'a> =
    dyn FnMut(&[Example], &mut SplitMix64) -> Result<MicroLoss, TrainerError> + 'a;

/// What a stage brings to the loop.
pub struct Stage<'a> {
    /// `sft`, `distill`: the progress bar and the plot's title.
    pub name: &'a str,
    pub config: &'a StageConfig,
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub train_set: &'a [Example],
}

/// Run the optimisation loop: `micro_loss` for each micro-batch, `evaluate` on held-out data.
pub fn run(
    stage: Stage,
    micro_loss: &mut MicroLossFn,
    evaluate: &mut dyn FnMut() -> Result<Evaluation, TrainerError>,
) -> Result<StageSummary, TrainerError> {
    let Stage {
        name,
        config,
        model,
        tokenizer,
        train_set,
    } = stage;
    let device = model.device();
    let params = model.trainable().to_vec();
    if params.is_empty() {
        return Err(TrainerError::Config(
            "nothing to train: enable LoRA target modules or full_finetune".into(),
        ));
    }
    let trainable_parameters = params.iter().map(|(_, v)| v.elem_count()).sum();
    let mut optimizer = AdamW::new(params.clone(), config.adamw.clone())?;

    let mut start_step = 0;
    if config.resume {
        if let Some((dir, step)) = latest_checkpoint(&config.output_dir) {
            let saved = candle_core::safetensors::load(dir.join("trainable.safetensors"), device)?;
            for (name, var) in &params {
                let value = saved.get(name).ok_or_else(|| {
                    TrainerError::Config(format!("{} lacks {name}", dir.display()))
                })?;
                var.set(&value.to_dtype(var.dtype())?)?;
            }
            optimizer.load(&dir.join("optimizer.safetensors"))?;
            start_step = step;
            tracing::info!(step, "resumed from {}", dir.display());
        }
    }
    std::fs::create_dir_all(&config.output_dir).map_err(io(&config.output_dir))?;
    let metrics_path = config.output_dir.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(io(&metrics_path))?;
    if start_step == 0 {
        metrics.set_len(0).map_err(io(&metrics_path))?;
    }

    let first_eval = evaluate()?;
    let mut last_eval = first_eval.clone();
    let progress = if config.progress {
        indicatif::ProgressBar::new(config.max_steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{name} {{bar:30}} {{pos}}/{{len}} steps  loss {{msg}}  {{elapsed}}<{{eta}}"
        ))
        .expect("template"),
    );
    progress.set_position(start_step as u64);

    // A deterministic order of micro-batches: epoch e shuffles with seed + e. With augmentation,
    // each drawn example may show a variant of its code, also by seed. Each micro-batch also
    // hands the stage its own seeded stream (for on-policy sampling).
    let micro_batches_per_epoch = train_set.len().div_ceil(config.batch_size.max(1));
    let micro_batch = |index: usize| -> (Vec<Example>, SplitMix64) {
        let epoch = index / micro_batches_per_epoch;
        let mut order: Vec<usize> = (0..train_set.len()).collect();
        SplitMix64::new(config.seed.wrapping_add(epoch as u64)).shuffle(&mut order);
        let start = (index % micro_batches_per_epoch) * config.batch_size;
        let mut draw = SplitMix64::new(config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
        let examples = order[start..(start + config.batch_size).min(order.len())]
            .iter()
            .map(|&i| {
                let example = &train_set[i];
                let seed = draw.next_u64();
                (draw.uniform() < config.augment_variants)
                    .then(|| with_code_variant(example, Some(tokenizer), seed))
                    .flatten()
                    .unwrap_or_else(|| example.clone())
            })
            .collect();
        (examples, draw)
    };

    let accum = config.grad_accum.max(1);
    let end = config
        .stop_at
        .unwrap_or(config.max_steps)
        .min(config.max_steps);
    for step in start_step..end {
        let started = Instant::now();
        let mut grads = None;
        let mut loss_sum = 0.0;
        let mut tokens = 0usize;
        let mut parts: BTreeMap<String, f64> = BTreeMap::new();
        for micro in 0..accum {
            let (examples, mut rng) = micro_batch(step * accum + micro);
            let out = micro_loss(&examples, &mut rng)?;
            loss_sum += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            tokens += out.tokens;
            for (key, value) in out.parts {
                *parts.entry(key.to_string()).or_default() += value / accum as f64;
            }
            accumulate(&mut grads, out.loss.backward()?, &params)?;
        }
        let mut grads = grads.expect("at least one micro-batch");
        scale_grads(&mut grads, &params, 1.0 / accum as f64)?;
        let grad_norm = clip_grad_norm(&mut grads, &params, config.max_grad_norm)?;
        let lr = learning_rate(
            step,
            config.learning_rate,
            config.warmup_steps,
            config.max_steps,
            config.min_lr_ratio,
        );
        optimizer.step(&grads, lr)?;
        let loss = loss_sum / accum as f64;
        let done = step + 1;
        let eval_loss = if done % config.eval_every.max(1) == 0 || done == config.max_steps {
            last_eval = evaluate()?;
            parts.extend(last_eval.parts.clone());
            Some(last_eval.loss)
        } else {
            None
        };
        let line = StepMetrics {
            step: done,
            loss,
            lr,
            tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64(),
            grad_norm,
            eval_loss,
            parts,
        };
        writeln!(
            metrics,
            "{}",
            serde_json::to_string(&line).expect("metrics serialise")
        )
        .map_err(io(&metrics_path))?;
        if done % config.save_every.max(1) == 0 || done == end {
            save_trainable(
                model,
                config,
                &checkpoint_dir(&config.output_dir, done),
                &optimizer,
                done,
            )?;
        }
        progress.set_message(format!("{loss:.3} (eval {:.3})", last_eval.loss));
        progress.inc(1);
    }
    progress.finish_and_clear();
    if end == config.max_steps {
        save_final(model, config, tokenizer)?;
    }
    let title = name.to_uppercase();
    plot_metrics(
        &metrics_path,
        &config.output_dir.join("loss_curve.png"),
        &title,
    )?;
    Ok(StageSummary {
        steps: end,
        first_eval_loss: first_eval.loss,
        final_eval_loss: last_eval.loss,
        first_eval: first_eval.parts,
        final_eval: last_eval.parts,
        trainable_parameters,
        output_dir: config.output_dir.clone(),
    })
}

/// Draw the training loss (line) and eval loss (points) of a metrics file into a PNG.
pub fn plot_metrics(metrics: &Path, png: &Path, stage: &str) -> Result<(), TrainerError> {
    let lines = read_metrics(metrics)?;
    let train = lines.iter().map(|m| (m.step as f64, m.loss)).collect();
    let eval = lines
        .iter()
        .filter_map(|m| Some((m.step as f64, m.eval_loss?)))
        .collect();
    line_chart(
        png,
        &format!("{stage} loss"),
        &[
            Series {
                name: "train loss",
                points: train,
                markers: false,
            },
            Series {
                name: "eval loss",
                points: eval,
                markers: true,
            },
        ],
    )
}

/// Read `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>, TrainerError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| TrainerError::Data(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// One pass over `limit` held-out batches (all if 0): the masked cross-entropy, and the named
/// figures `extra` computes from each batch and its logits; every figure is a mean per target
/// token (each batch weighted by its target tokens).
pub fn held_out(
    model: &Model,
    collator: &Collator,
    examples: &[Example],
    batch_size: usize,
    limit: usize,
    extra: &mut dyn FnMut(&Batch, &Tensor) -> Result<Figures, TrainerError>,
) -> Result<Evaluation, TrainerError> {
    let mut loss = 0.0;
    let mut parts: BTreeMap<String, f64> = BTreeMap::new();
    let mut tokens = 0usize;
    for (index, chunk) in examples.chunks(batch_size.max(1)).enumerate() {
        if limit > 0 && index >= limit {
            break;
        }
        let batch = collator.collate(&chunk.iter().collect::<Vec<_>>(), model.device())?;
        let logits = model.forward(&batch.input_ids, 0, None, false)?;
        let weight = batch.target_tokens as f64;
        loss += masked_cross_entropy(&logits, &batch.targets, &batch.mask)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            * weight;
        for (key, value) in extra(&batch, &logits)? {
            *parts.entry(key.to_string()).or_default() += value * weight;
        }
        tokens += batch.target_tokens;
    }
    let per_token = |sum: f64| sum / tokens.max(1) as f64;
    Ok(Evaluation {
        loss: per_token(loss),
        parts: parts.into_iter().map(|(k, v)| (k, per_token(v))).collect(),
    })
}

/// What every stage starts from: the tokenizer, its end token, the datasets and the model being
/// trained (LoRA, QLoRA or full, as the config says).
pub struct Student {
    pub tokenizer: Tokenizer,
    pub end_id: u32,
    pub train_set: Vec<Example>,
    pub eval_set: Vec<Example>,
    pub model: Model,
    pub collator: Collator,
}

/// Load `config.base_model` for training, and the datasets.
pub fn load_student(config: &StageConfig, device: &Device) -> Result<Student, TrainerError> {
    let dtype = crate::device::usable_dtype(device, parse_dtype(&config.dtype)?);
    let tokenizer = tokenizer::load(&config.base_model.join("tokenizer.json"))?;
    let end_id = tokenizer::end_token(&tokenizer)?;
    let train_set = load_jsonl(&config.train_data, Some(&tokenizer))?;
    let eval_set = load_jsonl(&config.eval_data, Some(&tokenizer))?;
    let options = LoadOptions {
        dtype,
        lora: (!config.full_finetune).then(|| config.lora.clone()),
        quantize_base: config.quantize_base,
        full_finetune: config.full_finetune,
        seed: config.seed,
    };
    let model = Model::load(&config.base_model, device, &options, &VarMap::new())?;
    let collator = Collator::new(tokenizer.clone(), config.max_len, end_id, end_id);
    Ok(Student {
        tokenizer,
        end_id,
        train_set,
        eval_set,
        model,
        collator,
    })
}
