//! `unitforge bench grpo`: a few GRPO steps of a config on a model, and where each step's time
//! goes — generation, waiting for the sandbox's scores, the reference's log-probs, forward,
//! backward, optimiser — read from the run's own `metrics.jsonl`. Beside it, in the same run, the
//! generator's greedy batch-8 throughput on the model's shape (`bench train`'s probe, random
//! weights, a process of its own): the step's generation tokens/s set against what the
//! generator does when nothing else is in the way. With `--llama-cpp`, llama.cpp's batched
//! decoding of the steps' shape after them (`llama_cpp.rs`).

use anyhow::{Context, Result};
use serde::Serialize;
use unitforge_trainer::stages::StageKind;
use unitforge_trainer::train::probe::{Probe, ProbeFigures};
use unitforge_trainer::train::stage_config::StageConfig;
use unitforge_trainer::train::train_loop::{read_metrics, StepMetrics};

use super::llama_cpp::{self, LlamaCppFigures, StepShape};
use super::train::spawn_probe;
use crate::cli::BenchGrpoArgs;

/// One GRPO step's split, in seconds, and its generation figures.
#[derive(Debug, Serialize)]
struct StepSplit {
    step: usize,
    step_s: f64,
    gen_s: f64,
    reward_wait_s: f64,
    /// The sandbox's time scoring the step's completions (summed over them; it runs beside
    /// generation on the same cores, so it is not a part of the step's sum).
    reward_s: f64,
    logprob_s: f64,
    forward_s: f64,
    backward_s: f64,
    optimizer_s: f64,
    completions: usize,
    /// The groups' mean prompt tokens.
    prompt_tokens: f64,
    completion_tokens: f64,
    gen_tokens_per_s: f64,
}

#[derive(Serialize)]
struct GrpoBench {
    config: String,
    model: String,
    steps: Vec<StepSplit>,
    mean: StepSplit,
    reference_shape: String,
    reference_gen_tokens_per_s_b8: Option<f64>,
    /// Mean generation tokens/s of the steps ÷ the reference's batch-8 figure.
    gen_ratio: Option<f64>,
    /// llama.cpp on the steps' mean shape (`--llama-cpp`).
    llama_cpp: Option<LlamaCppFigures>,
}

fn split(metrics: &StepMetrics, completions: usize) -> StepSplit {
    let part = |key: &str| metrics.parts.get(key).copied().unwrap_or(0.0);
    let tokens = part("completion_len") * completions as f64;
    StepSplit {
        step: metrics.step,
        step_s: part("step_s"),
        gen_s: part("gen_s"),
        reward_wait_s: part("reward_wait_s"),
        reward_s: part("reward_s"),
        logprob_s: part("logprob_s"),
        forward_s: part("forward_s"),
        backward_s: part("backward_s"),
        optimizer_s: part("optimizer_s"),
        completions,
        prompt_tokens: part("prompt_len"),
        completion_tokens: tokens,
        gen_tokens_per_s: tokens / part("gen_s").max(1e-9),
    }
}

fn mean(steps: &[StepSplit]) -> StepSplit {
    let n = steps.len().max(1) as f64;
    let avg = |f: fn(&StepSplit) -> f64| steps.iter().map(f).sum::<f64>() / n;
    let tokens = avg(|s| s.completion_tokens);
    let gen_s = avg(|s| s.gen_s);
    StepSplit {
        step: 0,
        step_s: avg(|s| s.step_s),
        gen_s,
        reward_wait_s: avg(|s| s.reward_wait_s),
        reward_s: avg(|s| s.reward_s),
        logprob_s: avg(|s| s.logprob_s),
        forward_s: avg(|s| s.forward_s),
        backward_s: avg(|s| s.backward_s),
        optimizer_s: avg(|s| s.optimizer_s),
        completions: steps.first().map_or(0, |s| s.completions),
        prompt_tokens: avg(|s| s.prompt_tokens),
        completion_tokens: tokens,
        gen_tokens_per_s: tokens / gen_s.max(1e-9),
    }
}

pub(super) fn bench_grpo(args: BenchGrpoArgs) -> Result<()> {
    // A llama.cpp that is not there fails before the steps, not after them.
    let llama_program = args
        .llama_cpp
        .as_deref()
        .map(llama_cpp::program)
        .transpose()?;
    eprintln!(
        "  measuring the generator on the {} shape (batch 1 and 8, {} tokens) …",
        args.shape, args.gen_tokens
    );
    let reference: ProbeFigures = spawn_probe(&Probe {
        shape: args.shape.clone(),
        mode: "generate".into(),
        batch: 1,
        seq_len: 16,
        steps: 0,
        gen_tokens: args.gen_tokens,
        device: "cpu".into(),
        fused: true,
    });
    if let Some(error) = &reference.error {
        eprintln!("  the generation reference failed: {error}");
    }

    let scratch = tempfile::tempdir()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| scratch.path().join("grpo"));
    let steps = args.steps.max(1);
    // Only the steps: no held-out evaluation, one checkpoint at the end, no merged model.
    let mut overrides = vec![
        format!("base_model={}", args.model.display()),
        format!("output_dir={}", out.display()),
        format!("max_steps={steps}"),
        format!("eval_every={steps}"),
        format!("save_every={steps}"),
        "grpo.eval_prompts=0".into(),
        "save_merged=false".into(),
        "resume=false".into(),
    ];
    overrides.extend(args.overrides.iter().cloned());
    let config: StageConfig =
        unitforge_trainer::train::stage_config::load(&args.config, &overrides)?;
    let completions = config.grpo.prompts_per_step * config.grpo.num_generations;
    eprintln!(
        "  {steps} GRPO steps of {} on {} ({} prompts × {} samples, up to {} tokens) …",
        args.config.display(),
        args.model.display(),
        config.grpo.prompts_per_step,
        config.grpo.num_generations,
        config.grpo.max_completion_length
    );
    let device = unitforge_trainer::device::select()?;
    unitforge_trainer::stages::train(StageKind::Grpo, &config, &device)?;
    let metrics = read_metrics(&out.join("metrics.jsonl")).context("reading the run's metrics")?;
    let steps: Vec<StepSplit> = metrics.iter().map(|m| split(m, completions)).collect();
    let mean = mean(&steps);
    let reference_b8 = reference.gen_tokens_per_s_b8;
    let llama_cpp = match &llama_program {
        Some(program) => {
            let shape = StepShape {
                prompts: config.grpo.prompts_per_step,
                sequences: completions,
                prompt_tokens: mean.prompt_tokens.round() as usize,
                completion_tokens: (mean.completion_tokens / completions.max(1) as f64).round()
                    as usize,
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            eprintln!(
                "  llama.cpp: {} rows sharing a {}-token prompt, {} new tokens each …",
                shape.sequences, shape.prompt_tokens, shape.completion_tokens
            );
            Some(llama_cpp::measure(
                program,
                &args.llama_cpp_model,
                shape,
                threads,
            )?)
        }
        None => None,
    };
    let report = GrpoBench {
        config: args.config.display().to_string(),
        model: args.model.display().to_string(),
        gen_ratio: reference_b8.map(|b8| mean.gen_tokens_per_s / b8),
        steps,
        mean,
        reference_shape: args.shape.clone(),
        reference_gen_tokens_per_s_b8: reference_b8,
        llama_cpp,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "GRPO steps of {} on {}: {} completions a step",
        report.config, report.model, completions
    );
    println!(
        "{:>5} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "step",
        "step s",
        "gen s",
        "wait s",
        "logp s",
        "fwd s",
        "bwd s",
        "optim s",
        "tokens",
        "gen tok/s"
    );
    for s in report.steps.iter().chain(std::iter::once(&report.mean)) {
        let label = if s.step == 0 {
            "mean".to_string()
        } else {
            s.step.to_string()
        };
        println!(
            "{label:>5} {:>8.1} {:>8.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.0} {:>9.1}",
            s.step_s,
            s.gen_s,
            s.reward_wait_s,
            s.logprob_s,
            s.forward_s,
            s.backward_s,
            s.optimizer_s,
            s.completion_tokens,
            s.gen_tokens_per_s
        );
    }
    match (report.reference_gen_tokens_per_s_b8, report.gen_ratio) {
        (Some(b8), Some(ratio)) => println!(
            "generator alone on the {} shape: {:.1} tokens/s at batch 8 ({:.1} at batch 1); the steps' generation: {:.2}× that",
            report.reference_shape,
            b8,
            reference.gen_tokens_per_s_b1.unwrap_or(f64::NAN),
            ratio
        ),
        _ => println!("generator alone: no figure (see the error above)"),
    }
    if let Some(llama) = &report.llama_cpp {
        println!(
            "llama.cpp ({}, {} threads): {} rows sharing a {}-token prompt, {} new tokens each: prefill {:.2} s a prompt, decoding {:.1} tokens/s; a step's generation at its speed {:.1} s ({:.1} tokens/s), the steps' own {:.1} s",
            llama.gguf,
            llama.threads,
            llama.shape.sequences,
            llama.shape.prompt_tokens,
            llama.shape.completion_tokens,
            llama.prefill_s,
            llama.decode_tokens_per_s,
            llama.step_generation_s,
            llama.step_tokens_per_s,
            report.mean.gen_s
        );
    }
    Ok(())
}
