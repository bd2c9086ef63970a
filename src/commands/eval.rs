//! Inference commands: `generate` (offline test generation) and `eval samples` (how many greedy
//! samples are valid pytest, and with `--score` how they fare in the sandbox).

use anyhow::Result;
use serde::Serialize;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;
use unitforge_trainer::data::dataset::{load_jsonl, Example, Targets};
use unitforge_trainer::data::prompts;
use unitforge_trainer::data::tokenizer::ModelTokenizer;
use unitforge_trainer::eval::samples::{sample_report, SampleReport};
use unitforge_trainer::model::decoder::Model;
use unitforge_trainer::model::generate::{self, SamplingConfig};

use unitforge_sandbox::backend::BlockingBackend;
use unitforge_trainer::eval::compare::compare;
use unitforge_trainer::eval::pareto::write_pareto;
use unitforge_trainer::eval::report::{evaluate_model, read_report, EvalOptions, EvalReport};

use super::{
    load_reward_config, module_name, notice, progress_bar, read_source, runtime, start_backend,
};
use crate::cli::{
    CompareArgs, EvalCommand, EvalDeliverArgs, EvalFixArgs, EvalFocus, EvalRunArgs,
    EvalSamplesArgs, GenerateArgs, ParetoArgs,
};
use crate::render;

/// The tokenizer and model the commands here generate with — every one of them only generates:
/// the model on the selected device, its adapter, if any, merged in once
/// (`Model::merged_for_generation`), so that no generation call (a delivery makes several a row)
/// merges it again.
fn load_for_generation(
    dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
) -> Result<(ModelTokenizer, Model)> {
    let device = unitforge_trainer::device::select()?;
    let text = ModelTokenizer::load(dir)?;
    let model = Model::load_for_inference(dir, adapter, &device)?;
    let model = model.merged_for_generation()?.unwrap_or(model);
    Ok((text, model))
}

pub fn generate(args: &GenerateArgs) -> Result<()> {
    if args.deliver {
        return deliver(args);
    }
    let (text, model) = load_for_generation(&args.model, args.adapter.as_deref())?;
    // Every file's prompt n times, all generated as one batch.
    let mut prompt_texts = Vec::new();
    for path in &args.code {
        let code = read_source(path)?;
        let module = module_name(path, None)?;
        let prompt = prompts::render(
            &prompts::Task::Generate {
                module: &module,
                code: &code,
            },
            &text.format,
        );
        prompt_texts.extend(std::iter::repeat_n(prompt, args.n.max(1)));
    }
    let config = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let completions =
        generate::generate(&model, &text.tokenizer, &prompt_texts, text.end_id, &config)?;
    let per_file = args.n.max(1);
    if args.json {
        let rows: Vec<serde_json::Value> = completions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "code": args.code[i / per_file].display().to_string(),
                    "completion": c,
                    "tests": prompts::extract_tests(c),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (index, completion) in completions.iter().enumerate() {
            println!(
                "# --- {}: completion {} of {} ---\n{}",
                args.code[index / per_file].display(),
                index % per_file + 1,
                per_file,
                prompts::extract_tests(completion)
            );
        }
    }
    Ok(())
}

/// `generate --deliver`: one checked test file for one module (trainer::deliver).
fn deliver(args: &GenerateArgs) -> Result<()> {
    use unitforge_trainer::deliver::{self, DeliverOptions, ModelWriter};
    let [path] = args.code.as_slice() else {
        anyhow::bail!("--deliver writes one test file: give exactly one --code");
    };
    let out = args
        .out
        .as_ref()
        .expect("clap requires --out with --deliver");
    let code = read_source(path)?;
    let module = module_name(path, args.module.as_deref())?;
    let config = load_reward_config(args.config.as_deref())?;
    let backend = BlockingBackend::start(&args.executor.backend(&args.server, args.jobs), &notice)?;
    let (text, model) = load_for_generation(&args.model, args.adapter.as_deref())?;
    let mut writer = ModelWriter {
        model: &model,
        text: &text,
        sampling: SamplingConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    let options = DeliverOptions {
        n: args.n.max(1),
        oracle_repair: args.oracle_repair,
        fix_rounds: args.fix_rounds,
        diagnose: args.diagnose,
        seed: args.seed,
    };
    let delivery = deliver::deliver(
        &mut writer,
        &module,
        &code,
        &backend,
        &config,
        &options,
        &|step| notice(step),
    )?;
    if let Some(tests) = &delivery.tests {
        super::write_file(out, tests)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&delivery)?);
    } else {
        print!("{}", render::delivery(&delivery, out));
    }
    if delivery.tests.is_none() {
        anyhow::bail!(
            "no suite kept a passing test: nothing written to {} (try a larger --n, \
             --oracle-repair or --fix-rounds)",
            out.display()
        );
    }
    Ok(())
}

/// What the sandbox made of the samples (`eval samples --score`).
#[derive(Serialize)]
struct SampleScores {
    scored: usize,
    /// Samples whose tests pass on their code (a valid suite), over all prompts.
    passing: usize,
    passing_fraction: f64,
    /// Mean kill rate over all prompts (0 for a sample that is invalid or fails).
    mean_kill_rate: f64,
    /// Samples the sandbox could not score (infrastructure failures, unusable code): left out.
    excluded: usize,
}

pub fn eval_samples(args: &EvalSamplesArgs) -> Result<()> {
    let (text, model) = load_for_generation(&args.model, args.adapter.as_deref())?;
    let examples = load_jsonl(&args.data, &text.format, Targets::Optional)?;
    let total = if args.limit == 0 {
        examples.len()
    } else {
        args.limit.min(examples.len())
    };
    let progress = progress_bar(total, "prompts");
    let report = sample_report(
        &model,
        &text.tokenizer,
        text.end_id,
        &examples,
        args.limit,
        args.max_new_tokens,
        &progress,
    )?;
    progress.finish_and_clear();
    let scores = if args.score {
        Some(runtime()?.block_on(score_samples(args, &examples, &report))?)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["scores"] = serde_json::to_value(&scores)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let pct = |n: usize| 100.0 * n as f64 / report.prompts.max(1) as f64;
    println!(
        "{} greedy samples from {} on {}",
        report.prompts,
        args.model.display(),
        args.data.display()
    );
    println!(
        "  valid pytest     {:>4}  ({:.1}%)  parses and defines a test",
        report.valid_pytest,
        pct(report.valid_pytest)
    );
    println!(
        "  parses           {:>4}  ({:.1}%)",
        report.parses,
        pct(report.parses)
    );
    println!(
        "  imports module   {:>4}  ({:.1}%)",
        report.imports_module,
        pct(report.imports_module)
    );
    println!("  tests per sample {:.2}", report.mean_test_functions);
    if let Some(scores) = scores {
        println!(
            "  pass on the code {:>4}  ({:.1}%)  in the sandbox; mean kill rate {:.3}",
            scores.passing,
            pct(scores.passing),
            scores.mean_kill_rate
        );
        if scores.excluded > 0 {
            println!(
                "  excluded         {:>4}  (could not be scored)",
                scores.excluded
            );
        }
    }
    Ok(())
}

/// Score every valid sample against its example's code.
async fn score_samples(
    args: &EvalSamplesArgs,
    examples: &[Example],
    report: &SampleReport,
) -> Result<SampleScores> {
    let backend = start_backend(&args.executor.backend(&[], args.jobs)).await?;
    let inputs: Vec<ScoreInput> = report
        .samples
        .iter()
        .zip(examples)
        .filter(|(sample, example)| sample.valid_pytest() && example.code.is_some())
        .map(|(sample, example)| ScoreInput {
            module: example.module.clone(),
            code: example.code.clone().unwrap_or_default(),
            tests: sample.tests.clone(),
        })
        .collect();
    let scored = backend
        .score_all(&inputs, &RewardConfig::default(), &|_| {})
        .await;
    let reports: Vec<_> = scored
        .iter()
        .filter_map(|s| s.result.as_ref().ok())
        .collect();
    let passing = reports.iter().filter(|r| r.valid).count();
    let prompts = report.prompts.max(1) as f64;
    Ok(SampleScores {
        scored: reports.len(),
        passing,
        passing_fraction: passing as f64 / prompts,
        mean_kill_rate: reports.iter().map(|r| r.mutant_kill).sum::<f64>() / prompts,
        excluded: scored.len() - reports.len(),
    })
}

pub fn run(command: &EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Samples(args) => eval_samples(args),
        EvalCommand::Mutation(args) => eval_run(args, EvalFocus::Mutation),
        EvalCommand::Speed(args) => eval_run(args, EvalFocus::Speed),
        EvalCommand::All(args) => eval_run(args, EvalFocus::All),
        EvalCommand::Pareto(args) => pareto(args),
        EvalCommand::Compare(args) => compare_reports(args),
        EvalCommand::Deliver(args) => eval_deliver(args),
        EvalCommand::Fix(args) => eval_fix(args),
    }
}

/// The report file `eval … --out RUN_DIR/eval_report.json` writes and `eval pareto` looks for.
pub const EVAL_REPORT: &str = "eval_report.json";

fn eval_run(args: &EvalRunArgs, focus: EvalFocus) -> Result<()> {
    let (text, model) = load_for_generation(&args.model, args.adapter.as_deref())?;
    let examples = load_jsonl(&args.data, &text.format, Targets::Optional)?;
    let config = load_reward_config(args.config.as_deref())?;
    let backend = BlockingBackend::start(&args.executor.backend(&args.server, args.jobs), &notice)?;
    let options = EvalOptions {
        samples: args.samples,
        limit: args.limit,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        seed: args.seed,
        ..EvalOptions::default()
    };
    let rows = if args.limit == 0 {
        examples.len()
    } else {
        args.limit.min(examples.len())
    };
    let generation = progress_bar(rows, "rows generated");
    let scoring = progress_bar(0, "suites scored");
    let report = evaluate_model(
        &model,
        &text,
        &examples,
        &options,
        &backend,
        &config,
        (
            &args.model.display().to_string(),
            &args.data.display().to_string(),
        ),
        &|phase, done, total| match phase {
            "generated" => generation.set_position(done as u64),
            _ => {
                generation.finish_and_clear();
                scoring.set_length(total as u64);
                scoring.set_position(done as u64);
            }
        },
    )?;
    scoring.finish_and_clear();
    if let Some(out) = &args.out {
        super::write_json(out, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            render::eval_table(
                &report,
                focus == EvalFocus::Mutation || focus == EvalFocus::All,
                focus != EvalFocus::Mutation
            )
        );
    }
    Ok(())
}

/// A report named on the command line (a file, or a run directory holding `eval_report.json`)
/// with its label: the run directory's name.
fn labelled_report(path: &std::path::Path) -> Result<(String, EvalReport)> {
    let file = if path.is_dir() {
        path.join(EVAL_REPORT)
    } else {
        path.to_path_buf()
    };
    let label = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(path)
    }
    .file_name()
    .map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((label, read_report(&file)?))
}

fn compare_reports(args: &CompareArgs) -> Result<()> {
    let (base_label, base) = labelled_report(&args.base)?;
    let mut comparisons = Vec::new();
    for path in &args.others {
        let (label, other) = labelled_report(path)?;
        comparisons.push(compare((&base_label, &base), (&label, &other))?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparisons)?);
    } else {
        print!("{}", render::comparison_table(&comparisons));
    }
    Ok(())
}

fn pareto(args: &ParetoArgs) -> Result<()> {
    let mut reports = Vec::new();
    for path in &args.reports {
        reports.push(labelled_report(path)?);
    }
    let report = write_pareto(&reports, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wrote {}/pareto.png, report.md and report.json: {} checkpoints, on the front: {}",
            args.out.display(),
            report.points.len(),
            report
                .points
                .iter()
                .filter(|p| p.on_front)
                .map(|p| p.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn eval_deliver(args: &EvalDeliverArgs) -> Result<()> {
    use unitforge_trainer::deliver::{DeliverOptions, ModelWriter};
    use unitforge_trainer::eval::delivered::{
        evaluate_delivery, DeliveryJournal, DeliverySettings,
    };
    let (text, model) = load_for_generation(&args.model, args.adapter.as_deref())?;
    let examples = load_jsonl(&args.data, &text.format, Targets::Optional)?;
    let config = load_reward_config(args.config.as_deref())?;
    let backend = BlockingBackend::start(&args.executor.backend(&args.server, args.jobs), &notice)?;
    let mut writer = ModelWriter {
        model: &model,
        text: &text,
        sampling: SamplingConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: 0,
            top_p: 1.0,
            seed: args.seed,
        },
    };
    let options = DeliverOptions {
        n: args.n.max(1),
        oracle_repair: true,
        fix_rounds: args.fix_rounds,
        diagnose: false,
        seed: args.seed,
    };
    let rows = if args.limit == 0 {
        examples.len()
    } else {
        args.limit.min(examples.len())
    };
    let label = model_label(&args.model, args.adapter.as_deref());
    let (mut journal, done) = match &args.journal {
        Some(path) => {
            let settings = DeliverySettings {
                model: label.clone(),
                data: args.data.display().to_string(),
                samples: options.n,
                fix_rounds: options.fix_rounds,
                max_new_tokens: args.max_new_tokens,
                temperature: args.temperature,
                seed: args.seed,
            };
            let (journal, done) = DeliveryJournal::open(path, &settings)?;
            (Some(journal), done)
        }
        None => (None, Vec::new()),
    };
    let bar = progress_bar(rows, "rows delivered");
    let report = evaluate_delivery(
        &mut writer,
        &examples,
        args.limit,
        &backend,
        &config,
        &options,
        &label,
        &done,
        &mut |row, finished, count| {
            if let Some(journal) = journal.as_mut() {
                journal.record(row)?;
            }
            bar.set_position(finished as u64);
            if bar.is_hidden() {
                // No terminal (a log file, a container): a line a row instead of the bar.
                let kill = row
                    .delivered
                    .map_or("no suite".to_string(), |k| format!("kill {k:.3}"));
                eprintln!(
                    "row {finished}/{count} ({}): delivered {kill}; {:.0} s generating, {:.0} s in the sandbox",
                    row.module, row.generation_s, row.sandbox_s
                );
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        super::write_json(out, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::delivered_table(&report));
    }
    Ok(())
}

fn eval_fix(args: &EvalFixArgs) -> Result<()> {
    use unitforge_trainer::deliver::ModelWriter;
    use unitforge_trainer::eval::fix_rate::fix_success_rate;
    use unitforge_trainer::eval::interval::with_interval;
    let (text, model) = load_for_generation(&args.model, args.adapter.as_deref())?;
    // Only the fix rows: their `task` field says so.
    let raw = std::fs::read_to_string(&args.data)?;
    let fix_lines: Vec<&str> = raw
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v.get("task").and_then(|t| t.as_str()) == Some("fix"))
        })
        .collect();
    if fix_lines.is_empty() {
        anyhow::bail!(
            "{} holds no fix rows (`data fix-rows` writes them)",
            args.data.display()
        );
    }
    let mut rows = unitforge_trainer::data::dataset::parse_jsonl(
        &fix_lines.join("\n"),
        &args.data,
        &text.format,
        Targets::Required,
    )?;
    if args.limit > 0 {
        rows.truncate(args.limit);
    }
    let config = load_reward_config(args.config.as_deref())?;
    let backend = BlockingBackend::start(&args.executor.backend(&args.server, args.jobs), &notice)?;
    let mut writer = ModelWriter {
        model: &model,
        text: &text,
        sampling: SamplingConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        },
    };
    let bar = progress_bar(rows.len(), "fixes written");
    let label = model_label(&args.model, args.adapter.as_deref());
    let report = fix_success_rate(&mut writer, &rows, &backend, &config, &label, &|done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        super::write_json(out, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: fix success rate {} % over {} broken suites ({} excluded); mean kill rate of the fixes {}",
            report.model,
            with_interval(report.fix_success_rate, report.fix_success_rate_ci, 100.0, 1),
            report.rows,
            report.excluded,
            with_interval(report.mean_kill_rate, report.mean_kill_rate_ci, 1.0, 3)
        );
    }
    Ok(())
}

/// A model named in a report: its directory, and the adapter on top of it.
fn model_label(model: &std::path::Path, adapter: Option<&std::path::Path>) -> String {
    match adapter {
        Some(adapter) => format!("{} + {}", model.display(), adapter.display()),
        None => model.display().to_string(),
    }
}
