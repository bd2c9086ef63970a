//! `unitforge data …`: build the SFT datasets the project ships.
//!
//! `from-pairs` turns the hand-written pairs in `data/pairs` into JSONL rows; `generate` writes
//! the synthetic corpus (trainer::corpus) and keeps only the pairs whose reference tests the
//! scorer finds valid on their code, recording each pair's kill rate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;
use unitforge_trainer::corpus::{family_names, generate_corpus, GeneratedPair};

use crate::{read_source, runtime, start_scorer, ExecutorArgs};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Turn a directory of pairs (<name>/<name>.py + <name>/test_<name>.py) into SFT JSONL rows
    /// (`module`, `code`, `chosen`), split into train.jsonl and eval.jsonl.
    FromPairs {
        #[arg(long, default_value = "data/pairs")]
        pairs: PathBuf,
        #[arg(long, default_value = "data/sft")]
        out: PathBuf,
        /// Pairs held out for evaluation (the last ones in name order).
        #[arg(long, default_value_t = 6)]
        eval: usize,
    },
    /// Generate the synthetic corpus: (module → pytest file) pairs from varied function families,
    /// each reference suite scored in the sandbox; only suites valid on their code are kept.
    /// Writes train.jsonl, eval.jsonl (held out: no code also in train.jsonl) and report.json.
    Generate(GenerateDataArgs),
}

#[derive(Args)]
pub struct GenerateDataArgs {
    /// Output directory.
    #[arg(long, default_value = "data/corpus")]
    out: PathBuf,
    /// Validated training pairs to write.
    #[arg(long, default_value_t = 2000)]
    train: usize,
    /// Validated held-out pairs to write (none of their modules' code appears in training).
    #[arg(long, default_value_t = 120)]
    held_out: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pairs scored at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Reward config the reference suites are scored with (default: the built-in one).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    executor: ExecutorArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::FromPairs { pairs, out, eval } => from_pairs(&pairs, &out, eval),
        DataCommand::Generate(args) => runtime()?.block_on(generate(&args)),
    }
}

fn from_pairs(pairs: &Path, out: &Path, eval: usize) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(pairs)
        .with_context(|| format!("cannot read {}", pairs.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut rows = Vec::new();
    for name in &names {
        let dir = pairs.join(name);
        let code = read_source(&dir.join(format!("{name}.py")))?;
        let tests = read_source(&dir.join(format!("test_{name}.py")))?;
        rows.push(serde_json::json!({"module": name, "code": code, "chosen": tests}).to_string());
    }
    if rows.len() <= eval {
        bail!("{} pairs cannot leave {eval} for evaluation", rows.len());
    }
    let (train, held_out) = rows.split_at(rows.len() - eval);
    write_split(out, train, held_out)
}

fn write_split(out: &Path, train: &[String], held_out: &[String]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("train.jsonl"), train.join("\n") + "\n")?;
    std::fs::write(out.join("eval.jsonl"), held_out.join("\n") + "\n")?;
    eprintln!(
        "wrote {} training and {} evaluation rows to {}",
        train.len(),
        held_out.len(),
        out.display()
    );
    Ok(())
}

/// One validated pair, as a JSONL row.
#[derive(Serialize)]
struct CorpusRow<'a> {
    family: &'a str,
    module: &'a str,
    code: &'a str,
    chosen: &'a str,
    /// The reference suite's mutant-kill rate under the scoring config.
    reference_kill_rate: f64,
}

/// What `data generate` did, also written as report.json.
#[derive(Serialize, Default)]
struct CorpusReport {
    seed: u64,
    candidates: usize,
    valid: usize,
    /// Pairs whose reference tests the scorer did not find valid, and why (first per family).
    rejected: usize,
    rejected_examples: BTreeMap<String, String>,
    infra_errors: usize,
    train: usize,
    held_out: usize,
    families: BTreeMap<String, usize>,
    mean_kill_rate_train: f64,
    mean_kill_rate_held_out: f64,
    executor: String,
}

async fn generate(args: &GenerateDataArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => RewardConfig::from_yaml_file(path)?,
        None => RewardConfig::default(),
    };
    let wanted = args.train + args.held_out;
    // Some candidates fail validation or share code with the training split; make enough extra.
    let candidates = generate_corpus(wanted + wanted / 5 + 50, args.seed);
    let scorer = start_scorer(&args.executor).await?;
    let progress = ProgressBar::new(candidates.len() as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} reference suites scored  {elapsed} elapsed, ~{eta} left",
        )
        .expect("valid template"),
    );
    let scorer_ref = &scorer;
    let config_ref = &config;
    let mut outcomes: Vec<(usize, Result<f64, String>, bool)> =
        stream::iter(candidates.iter().enumerate())
            .map(|(index, pair)| async move {
                let input = ScoreInput {
                    module: pair.module.clone(),
                    code: pair.code.clone(),
                    tests: pair.tests.clone(),
                };
                match scorer_ref.score(&input, config_ref).await {
                    Ok(report) if report.valid && report.infra_errors == 0 => {
                        (index, Ok(report.mutant_kill), false)
                    }
                    Ok(report) => {
                        let why = report.invalid_reason.unwrap_or_else(|| {
                            format!("{} infrastructure errors", report.infra_errors)
                        });
                        (index, Err(why), report.infra_errors > 0)
                    }
                    Err(err) => (index, Err(err.to_string()), true),
                }
            })
            .buffer_unordered(args.jobs.max(1))
            .inspect(|_| progress.inc(1))
            .collect()
            .await;
    progress.finish_and_clear();
    outcomes.sort_by_key(|(index, _, _)| *index);
    let executor = scorer.environment().executor.clone();
    drop(scorer);

    let mut report = CorpusReport {
        seed: args.seed,
        candidates: candidates.len(),
        executor,
        ..CorpusReport::default()
    };
    let mut valid: Vec<(&GeneratedPair, f64)> = Vec::new();
    for (index, outcome, infra) in outcomes {
        let pair = &candidates[index];
        match outcome {
            Ok(kill) => valid.push((pair, kill)),
            Err(why) => {
                report.rejected += 1;
                report.infra_errors += usize::from(infra);
                report
                    .rejected_examples
                    .entry(pair.family.to_string())
                    .or_insert(why);
            }
        }
    }
    report.valid = valid.len();
    if report.infra_errors > 0 {
        bail!(
            "{} reference suites could not be scored (infrastructure errors); nothing written",
            report.infra_errors
        );
    }

    // Held out: from the end, pairs whose code occurs once in the whole valid set, so no
    // held-out module is also a training module.
    let mut code_count: HashMap<&str, usize> = HashMap::new();
    for (pair, _) in &valid {
        *code_count.entry(pair.code.as_str()).or_default() += 1;
    }
    let mut held_out = Vec::new();
    let mut train = Vec::new();
    for (pair, kill) in valid.iter().rev() {
        if held_out.len() < args.held_out && code_count[pair.code.as_str()] == 1 {
            held_out.push((*pair, *kill));
        } else {
            train.push((*pair, *kill));
        }
    }
    train.reverse();
    held_out.reverse();
    if held_out.len() < args.held_out || train.len() < args.train {
        bail!(
            "only {} training and {} held-out pairs validated (wanted {} and {}); try more candidates or another seed",
            train.len(),
            held_out.len(),
            args.train,
            args.held_out
        );
    }
    train.truncate(args.train);
    let rows = |pairs: &[(&GeneratedPair, f64)]| -> Result<Vec<String>> {
        pairs
            .iter()
            .map(|(p, kill)| {
                Ok(serde_json::to_string(&CorpusRow {
                    family: p.family,
                    module: &p.module,
                    code: &p.code,
                    chosen: &p.tests,
                    reference_kill_rate: *kill,
                })?)
            })
            .collect()
    };
    let mean = |pairs: &[(&GeneratedPair, f64)]| {
        pairs.iter().map(|(_, k)| k).sum::<f64>() / pairs.len().max(1) as f64
    };
    report.train = train.len();
    report.held_out = held_out.len();
    report.mean_kill_rate_train = mean(&train);
    report.mean_kill_rate_held_out = mean(&held_out);
    for name in family_names() {
        let n = train
            .iter()
            .chain(&held_out)
            .filter(|(p, _)| p.family == name)
            .count();
        report.families.insert(name.to_string(), n);
    }
    write_split(&args.out, &rows(&train)?, &rows(&held_out)?)?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.out.join("report.json"), format!("{json}\n"))?;
    if args.json {
        println!("{json}");
    } else {
        println!(
            "{} candidates from {} families: {} valid, {} rejected; wrote {} training + {} held-out pairs to {}",
            report.candidates,
            report.families.len(),
            report.valid,
            report.rejected,
            report.train,
            report.held_out,
            args.out.display()
        );
        println!(
            "reference suites' mean kill rate: {:.3} (train), {:.3} (held out)",
            report.mean_kill_rate_train, report.mean_kill_rate_held_out
        );
        for (family, why) in &report.rejected_examples {
            println!("  rejected {family}: {why}");
        }
    }
    Ok(())
}
