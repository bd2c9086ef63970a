//! The optimisation loop every training stage shares. It knows no stage: a stage is a
//! [`StageLogic`] — the loss of one micro-batch, an optional preparation before each step, and
//! a held-out evaluation — plus a few names ([`Stage`]).
//!
//! Each optimiser step: the stage prepares (GRPO samples and scores here), then `grad_accum`
//! micro-batches (the stage computes each one's loss), gradients summed and averaged, clipped to
//! `max_grad_norm`, one AdamW update at the warmup + cosine learning rate. Every `eval_every`
//! steps the stage evaluates on held-out data; every `save_every` steps a checkpoint is written,
//! from which `resume: true` continues exactly. Ctrl-C finishes the step, writes a checkpoint
//! and stops. At the end the output directory holds the merged model in Hugging Face layout
//! (what the next stage names as `base_model`), the PEFT adapter, `metrics.jsonl` (one line per
//! step) and the curves PNG.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use unitforge_sandbox::rng::SplitMix64;

use crate::data::dataset::{with_code_variant, Example};
use crate::data::tokenizer::ModelTokenizer;
use crate::model::decoder::Model;
use crate::plot::{line_chart, Series};
use crate::train::checkpoint::{self, io};
use crate::train::optim::{accumulate, clip_grad_norm, learning_rate, scale_grads, AdamW};
use crate::train::stage_config::StageConfig;
use crate::TrainerError;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub grad_norm: f64,
    /// The stage's own figures (`ce`, `jsd`, `reward`, `kl`, …) every step, and the held-out
    /// evaluation's (`eval_loss`, `eval_reward`, …) at eval steps.
    #[serde(flatten)]
    pub parts: BTreeMap<String, f64>,
}

impl StepMetrics {
    /// A figure by its name in the JSON line.
    pub fn get(&self, key: &str) -> Option<f64> {
        match key {
            "step" => Some(self.step as f64),
            "loss" => Some(self.loss),
            "lr" => Some(self.lr),
            "tokens_per_s" => Some(self.tokens_per_s),
            "grad_norm" => Some(self.grad_norm),
            other => self.parts.get(other).copied(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub steps: usize,
    /// The evaluation figure that sums the stage up (`eval_loss`; GRPO: `eval_reward`).
    pub headline: String,
    /// Every evaluation figure before and after training.
    pub first_eval: BTreeMap<String, f64>,
    pub final_eval: BTreeMap<String, f64>,
    pub trainable_parameters: usize,
    pub output_dir: PathBuf,
    /// The curves PNG.
    pub plot: PathBuf,
}

/// Named figures a stage reports (`ce`, `jsd`, `reward`, …).
pub type StepFigures = Vec<(&'static str, f64)>;

/// A held-out evaluation: named figures, the stage's headline among them.
pub type Evaluation = BTreeMap<String, f64>;

/// One micro-batch's contribution: the loss to differentiate, the tokens it covers, and named
/// parts to log (averaged over the step's micro-batches).
pub struct MicroLoss {
    pub loss: Tensor,
    pub tokens: usize,
    pub parts: StepFigures,
}

/// The examples of one micro-batch, and a stream seeded for it (for on-policy draws).
pub struct MicroBatch {
    pub examples: Vec<Example>,
    pub rng: SplitMix64,
}

/// What a stage brings to the loop.
pub trait StageLogic {
    /// Before the micro-batches of optimiser step `step` (0-based): figures to log with it.
    fn prepare_step(
        &mut self,
        _step: usize,
        _batches: &mut [MicroBatch],
    ) -> Result<StepFigures, TrainerError> {
        Ok(StepFigures::new())
    }

    /// The loss of micro-batch `index` of the step.
    fn micro_loss(
        &mut self,
        index: usize,
        batch: &mut MicroBatch,
    ) -> Result<MicroLoss, TrainerError>;

    /// The held-out evaluation after `step` optimiser steps; it holds the stage's headline
    /// figure.
    fn evaluate(&mut self, step: usize) -> Result<Evaluation, TrainerError>;

    /// Whether a checkpoint after `done` steps lets a resumed run continue exactly (a stage
    /// that reuses one step's samples over several steps can only stop between them).
    fn can_stop_after(&self, _done: usize) -> bool {
        true
    }

    /// State of the stage's own (beyond the weights and the optimiser) that a resumed run
    /// needs to continue exactly; saved with each checkpoint as `stage_state.json`.
    fn state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restore what [`StageLogic::state`] saved in the checkpoint a run resumes from.
    fn restore_state(&mut self, _state: serde_json::Value) -> Result<(), TrainerError> {
        Ok(())
    }
}

/// The file in a checkpoint directory that holds [`StageLogic::state`].
const STAGE_STATE: &str = "stage_state.json";

/// Write a checkpoint of `done` steps, with the stage's own state.
fn save_checkpoint(
    model: &Model,
    config: &StageConfig,
    optimizer: &AdamW,
    logic: &dyn StageLogic,
    done: usize,
) -> Result<(), TrainerError> {
    let dir = checkpoint::checkpoint_dir(&config.output_dir, done);
    checkpoint::save(model, config, &dir, optimizer, done)?;
    if let Some(state) = logic.state() {
        let path = dir.join(STAGE_STATE);
        std::fs::write(&path, state.to_string()).map_err(io(&path))?;
    }
    Ok(())
}

/// A curve of the plot: the metric's key in `metrics.jsonl` and its label.
pub struct Curve {
    pub metric: &'static str,
    pub label: &'static str,
    /// Points instead of a line (sparse figures such as evaluations).
    pub markers: bool,
}

/// The stage's names and data.
pub struct Stage<'a> {
    /// `sft`, `distill`, `grpo`: the progress bar and the plot's title.
    pub name: &'a str,
    pub config: &'a StageConfig,
    pub model: &'a Model,
    pub tokenizer: &'a ModelTokenizer,
    pub train_set: &'a [Example],
    /// The evaluation figure that sums the stage up.
    pub headline: &'static str,
    /// StepFigures of each step shown on the progress bar beside the loss (`reward`, `kl`).
    pub progress_figures: &'static [&'static str],
    pub plot: Plot,
}

/// The PNG written beside `metrics.jsonl`, and what it draws.
pub struct Plot {
    pub file: &'static str,
    pub title: String,
    /// What the vertical axis measures.
    pub y_label: &'static str,
    pub curves: Vec<Curve>,
}

impl Plot {
    /// `loss_curve.png`: training loss and held-out loss, as the supervised stages draw them.
    pub fn losses(stage: &str) -> Self {
        Self {
            file: "loss_curve.png",
            title: format!("{} loss", stage.to_uppercase()),
            y_label: "loss (nats per token)",
            curves: vec![
                Curve {
                    metric: "loss",
                    label: "train loss",
                    markers: false,
                },
                Curve {
                    metric: "eval_loss",
                    label: "eval loss",
                    markers: true,
                },
            ],
        }
    }
}

/// Set by Ctrl-C, or by SIGTERM / SIGHUP as `docker stop`, Kubernetes and Slurm send them:
/// finish the step, write a checkpoint, stop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn watch_for_interrupt() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130); // a second Ctrl-C stops at once
            }
            eprintln!("\ninterrupted: finishing this step and writing a checkpoint (interrupt again to stop now)");
        });
        if let Err(err) = installed {
            tracing::debug!(%err, "no Ctrl-C handler");
        }
    });
}

/// Run the optimisation loop for `stage`, asking `logic` for each loss and evaluation.
pub fn run(stage: Stage, logic: &mut dyn StageLogic) -> Result<StageSummary, TrainerError> {
    let Stage {
        name,
        config,
        model,
        tokenizer,
        train_set,
        headline,
        progress_figures,
        plot,
    } = stage;
    let params = model.trainable().to_vec();
    if params.is_empty() {
        return Err(TrainerError::Config(
            "nothing to train: enable LoRA target modules or full_finetune".into(),
        ));
    }
    let trainable_parameters = params.iter().map(|(_, v)| v.elem_count()).sum();
    let mut optimizer = AdamW::new(params.clone(), config.adamw.clone())?;
    let start_step = if config.resume {
        checkpoint::restore(model, config, &mut optimizer)?
    } else {
        0
    };
    if start_step > 0 {
        let path = checkpoint::checkpoint_dir(&config.output_dir, start_step).join(STAGE_STATE);
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let state = serde_json::from_str(&text)
                .map_err(|e| TrainerError::Data(format!("{}: {e}", path.display())))?;
            logic.restore_state(state)?;
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
    watch_for_interrupt();

    let first_eval = logic.evaluate(start_step)?;
    let mut last_eval = first_eval.clone();
    let headline_of = |eval: &Evaluation| eval.get(headline).copied().unwrap_or(f64::NAN);
    let progress = if config.progress {
        indicatif::ProgressBar::new(config.max_steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{name} {{bar:30}} {{pos}}/{{len}} steps  {{msg}}  {{elapsed}}<{{eta}}"
        ))
        .expect("template"),
    );
    progress.set_position(start_step as u64);

    // A deterministic order of micro-batches: epoch e shuffles with seed + e. With augmentation,
    // each drawn example may show a variant of its code, also by seed. Each micro-batch also
    // hands the stage its own seeded stream (for on-policy sampling).
    let micro_batches_per_epoch = train_set.len().div_ceil(config.batch_size.max(1));
    let micro_batch = |index: usize| -> MicroBatch {
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
                    .then(|| with_code_variant(example, &tokenizer.format, seed))
                    .flatten()
                    .unwrap_or_else(|| example.clone())
            })
            .collect();
        MicroBatch {
            examples,
            rng: draw,
        }
    };

    let accum = config.grad_accum.max(1);
    let end = config
        .stop_at
        .unwrap_or(config.max_steps)
        .min(config.max_steps);
    let mut last_done = start_step;
    for step in start_step..end {
        let started = Instant::now();
        let mut batches: Vec<MicroBatch> = (0..accum)
            .map(|micro| micro_batch(step * accum + micro))
            .collect();
        let mut parts: BTreeMap<String, f64> = BTreeMap::new();
        let prepared = match logic.prepare_step(step, &mut batches) {
            Err(TrainerError::RewardsUnavailable(why)) => {
                // Keep what was learned: a resumed run starts with this step.
                if step > start_step && logic.can_stop_after(step) {
                    save_checkpoint(model, config, &optimizer, logic, step)?;
                }
                progress.finish_and_clear();
                return Err(TrainerError::RewardsUnavailable(format!(
                    "{why}; stopped before step {}, checkpoint of {step} steps in {} (resume: true continues)",
                    step + 1,
                    config.output_dir.display()
                )));
            }
            other => other?,
        };
        for (key, value) in prepared {
            parts.insert(key.to_string(), value);
        }
        let training = Instant::now();
        let mut grads = None;
        let mut loss_sum = 0.0;
        let mut tokens = 0usize;
        let (mut forward_s, mut backward_s) = (0.0, 0.0);
        for (index, batch) in batches.iter_mut().enumerate() {
            let forward = Instant::now();
            let out = logic.micro_loss(index, batch)?;
            loss_sum += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            forward_s += forward.elapsed().as_secs_f64();
            tokens += out.tokens;
            for (key, value) in out.parts {
                *parts.entry(key.to_string()).or_default() += value / accum as f64;
            }
            let backward = Instant::now();
            let micro_grads = crate::model::recompute::backward(&out.loss)?;
            backward_s += backward.elapsed().as_secs_f64();
            accumulate(&mut grads, micro_grads, &params)?;
        }
        let update = Instant::now();
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
        if tokens > 0 {
            optimizer.step(&grads, lr)?;
        } else {
            // Nothing to learn from (every sample excluded): the weights stay as they are, and
            // AdamW's moments do not drift them on an empty gradient.
            parts.insert("update_skipped".into(), 1.0);
        }
        // Forward, backward and update (a stage's preparation, such as sampling, not included),
        // and its three parts (train_s also holds summing the micro-batches' gradients).
        parts.insert("train_s".into(), training.elapsed().as_secs_f64());
        parts.insert("forward_s".into(), forward_s);
        parts.insert("backward_s".into(), backward_s);
        parts.insert("optimizer_s".into(), update.elapsed().as_secs_f64());
        // The whole step, the stage's preparation included (its evaluation not).
        parts.insert("step_s".into(), started.elapsed().as_secs_f64());
        let loss = loss_sum / accum as f64;
        let done = step + 1;
        last_done = done;
        if done % config.eval_every.max(1) == 0 || done == config.max_steps {
            last_eval = logic.evaluate(done)?;
            parts.extend(last_eval.clone());
        }
        let line = StepMetrics {
            step: done,
            loss,
            lr,
            tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64(),
            grad_norm,
            parts,
        };
        let written = serde_json::to_string(&line).expect("metrics serialise");
        writeln!(metrics, "{written}").map_err(io(&metrics_path))?;
        let interrupted = INTERRUPTED.load(Ordering::SeqCst) && logic.can_stop_after(done);
        if done % config.save_every.max(1) == 0 || done == end || interrupted {
            save_checkpoint(model, config, &optimizer, logic, done)?;
        }
        let shown: String = progress_figures
            .iter()
            .filter_map(|key| Some(format!("  {key} {:.3}", line.parts.get(*key)?)))
            .collect();
        progress.set_message(format!(
            "loss {loss:.3}{shown}  eval {} {:.3}",
            headline.trim_start_matches("eval_"),
            headline_of(&last_eval)
        ));
        progress.inc(1);
        if interrupted {
            break;
        }
    }
    progress.finish_and_clear();
    if last_done == config.max_steps {
        checkpoint::save_final(model, config, &tokenizer.tokenizer)?;
    }
    let png = config.output_dir.join(plot.file);
    plot_metrics(&metrics_path, &png, &plot)?;
    Ok(StageSummary {
        steps: last_done,
        headline: headline.to_string(),
        first_eval,
        final_eval: last_eval,
        trainable_parameters,
        output_dir: config.output_dir.clone(),
        plot: png,
    })
}

/// Draw `curves` of a metrics file into a PNG.
pub fn plot_metrics(metrics: &Path, png: &Path, plot: &Plot) -> Result<(), TrainerError> {
    let lines = read_metrics(metrics)?;
    let series: Vec<Series> = plot
        .curves
        .iter()
        .map(|curve| Series {
            name: curve.label,
            points: lines
                .iter()
                .filter_map(|m| Some((m.step as f64, m.get(curve.metric)?)))
                .filter(|(_, v)| v.is_finite())
                .collect(),
            markers: curve.markers,
        })
        .collect();
    line_chart(png, &plot.title, plot.y_label, &series)
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
