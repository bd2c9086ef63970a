//! `unitforge data …`: build the SFT datasets the project ships.
//!
//! `from-pairs` turns the hand-written pairs in `data/pairs` into JSONL rows; `generate` writes
//! the synthetic corpus (trainer::corpus) and keeps only the pairs whose reference tests the
//! scorer finds valid on their code, recording each pair's kill rate; `raft` keeps the best
//! suites a model wrote, less their pruned tests, as the rows of a further SFT round; `fix-rows`
//! breaks validated suites and keeps what really fails as fix and diagnose rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use unitforge_sandbox::score::ScoreInput;
use unitforge_trainer::data::corpus::{family_names, generate_corpus, GeneratedPair};

use super::{load_reward_config, progress_bar, read_source, runtime, start_backend};
use crate::cli::{DataCommand, FixRowsArgs, FromPairsArgs, GenerateDataArgs, RaftArgs};

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::FromPairs(FromPairsArgs { pairs, out, eval }) => {
            from_pairs(&pairs, &out, eval)
        }
        DataCommand::Generate(args) => runtime()?.block_on(generate(&args)),
        DataCommand::Raft(args) => raft(&args),
        DataCommand::FixRows(args) => fix_rows(&args),
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
    let config = load_reward_config(args.config.as_deref())?;
    let wanted = args.train + args.held_out;
    // Some candidates fail validation or share code with the training split; make enough extra.
    let candidates = generate_corpus(wanted + wanted / 5 + 50, args.seed);
    let backend = start_backend(&args.executor.backend(&[], args.jobs)).await?;
    let inputs: Vec<ScoreInput> = candidates
        .iter()
        .map(|pair| ScoreInput {
            module: pair.module.clone(),
            code: pair.code.clone(),
            tests: pair.tests.clone(),
        })
        .collect();
    let progress = progress_bar(inputs.len(), "reference suites scored");
    let scored = backend
        .score_all(&inputs, &config, &|_| progress.inc(1))
        .await;
    progress.finish_and_clear();
    let executor = backend.name().to_string();
    drop(backend);
    // Per candidate: its kill rate, or why it was rejected and whether the machinery failed.
    let outcomes = scored.into_iter().map(|scored| match scored.result {
        Ok(report) if report.valid && report.infra_errors == 0 => {
            (scored.index, Ok(report.mutant_kill), false)
        }
        Ok(report) => {
            let why = report
                .invalid_reason
                .unwrap_or_else(|| format!("{} infrastructure errors", report.infra_errors));
            (scored.index, Err(why), report.infra_errors > 0)
        }
        Err(err) => {
            let infra = err.is_infrastructure();
            (scored.index, Err(err.to_string()), infra)
        }
    });

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

fn raft(args: &RaftArgs) -> Result<()> {
    use unitforge_sandbox::backend::BlockingBackend;
    use unitforge_trainer::data::dataset::{load_jsonl, Targets};
    use unitforge_trainer::data::prompts::PromptFormat;
    use unitforge_trainer::eval::raft::{filtered_rows, FilterOptions};
    use unitforge_trainer::eval::report::read_report;

    let report = read_report(&args.report)?;
    // Only each row's code and module are read: the prompt format does not matter here.
    let examples = load_jsonl(&args.data, &PromptFormat::Plain, Targets::Optional)?;
    let config = load_reward_config(args.config.as_deref())?;
    let backend = BlockingBackend::start(
        &args.executor.backend(&args.server, args.jobs),
        &super::notice,
    )?;
    let bar = progress_bar(0, "suites scored");
    let (rows, summary) = filtered_rows(
        &report,
        &examples,
        &backend,
        &config,
        &FilterOptions {
            candidates: args.candidates,
            min_kill: args.min_kill,
            oracle_repair: args.oracle_repair,
        },
        &|phase, done, total| {
            bar.set_message(phase.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    super::write_jsonl(&args.out, &rows)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} of {} rows kept ({} suites, {} tried, {} rows with no suite that kills, \
             {} kept files rejected, {} excluded, {} repaired files tried, {} rows repaired); \
             kept files: mean kill rate {:.3}, mean composite {:.3} → {}",
            summary.rows_kept,
            summary.rows,
            summary.suites,
            summary.candidates,
            summary.rows_without_candidate,
            summary.kept_files_rejected,
            summary.excluded,
            summary.repaired_files,
            summary.rows_repaired,
            summary.mean_kill_rate,
            summary.mean_composite,
            args.out.display()
        );
    }
    if rows.is_empty() {
        bail!(
            "no row kept: nothing in {} passes and kills once pruned",
            args.report.display()
        );
    }
    Ok(())
}

fn fix_rows(args: &FixRowsArgs) -> Result<()> {
    use unitforge_sandbox::backend::BlockingBackend;
    use unitforge_trainer::data::dataset::{load_jsonl, Targets};
    use unitforge_trainer::data::prompts::PromptFormat;
    use unitforge_trainer::deliver::fix_rows::{fix_rows, Pair};

    let examples = load_jsonl(&args.data, &PromptFormat::Plain, Targets::Required)?;
    let count = if args.limit == 0 {
        examples.len()
    } else {
        args.limit.min(examples.len())
    };
    let pairs: Vec<Pair<'_>> = examples[..count]
        .iter()
        .filter_map(|e| {
            Some(Pair {
                module: &e.module,
                code: e.code.as_deref()?,
                tests: e.target.as_deref()?,
            })
        })
        .collect();
    let config = load_reward_config(args.config.as_deref())?;
    let backend = BlockingBackend::start(
        &args.executor.backend(&args.server, args.jobs),
        &super::notice,
    )?;
    let bar = progress_bar(pairs.len(), "broken suites run");
    let (rows, summary) = fix_rows(&pairs, &backend, &config, args.seed, &|done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    super::write_jsonl(&args.out, &rows)?;
    println!(
        "{} fix and {} diagnose rows from {} pairs ({} corruptions still passed, {} pairs had \
         nothing to break, {} excluded) → {}",
        summary.fix_rows,
        summary.diagnose_rows,
        summary.pairs,
        summary.still_passing,
        summary.not_corruptible,
        summary.excluded,
        args.out.display()
    );
    Ok(())
}
