//! `unitforge bench score`: warm scoring throughput over the shipped pairs, one pair at a time
//! and with several in flight, with coverage guidance and without (`--full-runs`), beside
//! mutmut's run of the same pairs (`--mutmut`).

use std::time::Instant;

use anyhow::{Context, Result};
use futures::StreamExt;
use unitforge_sandbox::local::discover_python;
use unitforge_sandbox::rewards::{median, RewardConfig};
use unitforge_sandbox::score::{ScoreReport, Scorer};

use super::pairs::{load_pairs, print_summary_and_pairs, Pair};
use super::reference::{cold_pytest_ms, run_mutmut, MutmutFigures};
use crate::cli::BenchScoreArgs;
use crate::commands::{load_reward_config, start_backend};

#[derive(serde::Serialize)]
pub(super) struct PairFigures {
    name: String,
    mutants: usize,
    scored: usize,
    kill_rate: f64,
    composite: f64,
    runs: usize,
    not_covered: usize,
    wall_ms: f64,
    /// With coverage guidance off (`--full-runs`): wall time, and mutants whose verdict (killed
    /// or not) differs from the guided score's.
    full_runs_wall_ms: Option<f64>,
    verdicts_differing: Option<usize>,
    mutmut: Option<MutmutFigures>,
}

pub(super) async fn bench_score(args: BenchScoreArgs) -> Result<()> {
    let config = load_reward_config(args.config.as_deref())?;
    let pairs = load_pairs(&args.pairs)?;
    let backend = start_backend(&args.executor.backend(&[], 1)).await?;
    let scorer = backend
        .scorer()
        .expect("an in-process backend has a scorer");
    let python = discover_python(args.executor.python.as_deref());
    let cold_pytest_ms = cold_pytest_ms(&python, &pairs[0])?;
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut full_config = config.clone();
    full_config.mutants.coverage_guided = false;
    for pair in &pairs {
        let repeat = args.repeat.max(1);
        let (wall_ms, report) = timed_score(scorer, pair, &config, repeat).await?;
        let full = if args.full_runs {
            let (full_ms, full) = timed_score(scorer, pair, &full_config, repeat).await?;
            Some((
                full_ms,
                verdicts_differing(&killed_flags(&report), &killed_flags(&full)),
            ))
        } else {
            None
        };
        verdicts.push(killed_flags(&report));
        let m = &report.mutants;
        // Every pytest run the score made: baseline, stability, variants, the traced coverage
        // run, each mutant that ran (not-covered ones run only when selection did not pay) and
        // the controls that confirmed kills.
        let coverage_run = usize::from(report.valid && config.mutants.coverage_guided);
        let uncovered_ran = if m.selected_by_coverage {
            0
        } else {
            m.not_covered
        };
        let runs = 1
            + report.stability_runs.len()
            + report.variants.len()
            + coverage_run
            + m.killed
            + m.timeout
            + m.survived
            + uncovered_ran
            + m.unconfirmed
            + m.excluded
            + m.controls;
        let mutmut = if args.mutmut {
            Some(run_mutmut(&python, pair)?)
        } else {
            None
        };
        rows.push(PairFigures {
            name: pair.name.clone(),
            mutants: m.generated,
            scored: m.scored,
            kill_rate: report.mutant_kill,
            composite: report.composite,
            runs,
            not_covered: m.not_covered,
            wall_ms,
            full_runs_wall_ms: full.map(|f| f.0),
            verdicts_differing: full.map(|f| f.1),
            mutmut,
        });
    }
    let walls: Vec<f64> = rows.iter().map(|r| r.wall_ms).collect();
    let total_wall_s: f64 = walls.iter().sum::<f64>() / 1000.0;
    let total_mutants: usize = rows.iter().map(|r| r.scored).sum();
    let total_runs: usize = rows.iter().map(|r| r.runs).sum();
    let full_walls: Vec<f64> = rows.iter().filter_map(|r| r.full_runs_wall_ms).collect();
    let in_flight = if args.in_flight > 1 {
        Some(score_in_flight(scorer, &pairs, &config, args.in_flight, &verdicts).await?)
    } else {
        None
    };
    let summary = serde_json::json!({
        "pairs": rows.len(),
        "workers": scorer.pool().size(),
        "per_run_overhead_cpu_ms": scorer.overhead_ms(),
        "cold_pytest_per_run_ms": cold_pytest_ms,
        "median_wall_ms_per_pair": median(&walls),
        "max_wall_ms_per_pair": walls.iter().cloned().fold(0.0, f64::max),
        "mean_kill_rate": rows.iter().map(|r| r.kill_rate).sum::<f64>() / rows.len() as f64,
        "mutants_per_second": total_mutants as f64 / total_wall_s,
        "runs_per_second": total_runs as f64 / total_wall_s,
        "not_covered": rows.iter().map(|r| r.not_covered).sum::<usize>(),
        "full_runs_median_wall_ms_per_pair": args.full_runs.then(|| median(&full_walls)),
        "full_runs_mutants_per_second": args.full_runs.then(|| total_mutants as f64 / (full_walls.iter().sum::<f64>() / 1000.0)),
        "verdicts_differing": args.full_runs.then(|| rows.iter().filter_map(|r| r.verdicts_differing).sum::<usize>()),
        "in_flight": args.in_flight,
        "in_flight_mutants_per_second": in_flight.map(|f| f.mutants_per_second),
        "in_flight_verdicts_differing": in_flight.map(|f| f.verdicts_differing),
        "mutmut_median_wall_ms_per_pair": args.mutmut.then(|| median(&rows.iter().filter_map(|r| r.mutmut.as_ref().map(|m| m.wall_ms)).collect::<Vec<_>>()))});
    if args.json {
        return print_summary_and_pairs(&summary, &rows);
    }
    println!(
        "unitforge bench score: {} pairs from {}, {} workers ({} executor)\n",
        rows.len(),
        args.pairs.display(),
        scorer.pool().size(),
        scorer.environment().executor
    );
    let mutmut_header = if args.mutmut {
        "   mutmut: mutants  killed    wall"
    } else {
        ""
    };
    let full_header = if args.full_runs {
        "  full-run ms  differ"
    } else {
        ""
    };
    println!(
        "{:<18} {:>7} {:>6} {:>8} {:>9} {:>9} {:>5} {:>9}{full_header}{mutmut_header}",
        "pair", "mutants", "scored", "not cov", "kill rate", "composite", "runs", "wall ms"
    );
    for row in &rows {
        let full = match (row.full_runs_wall_ms, row.verdicts_differing) {
            (Some(ms), Some(differing)) => format!("  {ms:>11.0}  {differing:>6}"),
            _ => String::new(),
        };
        let mutmut = row.mutmut.as_ref().map_or(String::new(), |m| {
            format!(
                "          {:>7} {:>7} {:>7.0}",
                m.mutants, m.killed, m.wall_ms
            )
        });
        println!(
            "{:<18} {:>7} {:>6} {:>8} {:>9.3} {:>9.3} {:>5} {:>9.0}{full}{mutmut}",
            row.name,
            row.mutants,
            row.scored,
            row.not_covered,
            row.kill_rate,
            row.composite,
            row.runs,
            row.wall_ms
        );
    }
    println!();
    println!("per-run overhead (CPU, one-test suite)   {:>8.1} ms   reference: cold `python -m pytest` per run {:.0} ms", scorer.overhead_ms(), cold_pytest_ms);
    println!(
        "wall time per pair, median / max         {:>8.0} / {:.0} ms",
        median(&walls),
        walls.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "mutants scored per second                {:>8.1}",
        total_mutants as f64 / total_wall_s
    );
    println!(
        "pytest runs per second                   {:>8.1}",
        total_runs as f64 / total_wall_s
    );
    if args.full_runs {
        let full_wall_s = full_walls.iter().sum::<f64>() / 1000.0;
        println!(
            "with every mutant running the whole suite {:>7.1} mutants/s, median {:.0} ms per pair   (coverage-guided: {:.2}×); verdicts differing: {}",
            total_mutants as f64 / full_wall_s,
            median(&full_walls),
            full_wall_s / total_wall_s,
            summary["verdicts_differing"]
        );
    }
    if let Some(f) = in_flight {
        println!(
            "with {} pairs in flight                  {:>8.1} mutants/s   ({:.2}× one pair at a time); verdicts differing: {}",
            args.in_flight,
            f.mutants_per_second,
            f.mutants_per_second / (total_mutants as f64 / total_wall_s),
            f.verdicts_differing
        );
    }
    println!(
        "mean kill rate                           {:>8.3}",
        summary["mean_kill_rate"].as_f64().unwrap_or(0.0)
    );
    if let Some(mutmut_ms) = summary["mutmut_median_wall_ms_per_pair"].as_f64() {
        println!(
            "mutmut wall time per pair, median        {:>8.0} ms   ({:.1}× unitforge)",
            mutmut_ms,
            mutmut_ms / median(&walls)
        );
    }
    Ok(())
}

/// Score `pair` `repeat` times: the median wall time in ms, and the last report.
pub(super) async fn timed_score(
    scorer: &Scorer,
    pair: &Pair,
    config: &RewardConfig,
    repeat: usize,
) -> Result<(f64, ScoreReport)> {
    let mut walls = Vec::new();
    let mut last = None;
    for _ in 0..repeat {
        let started = Instant::now();
        let report = scorer
            .score(&pair.input, config)
            .await
            .with_context(|| format!("scoring {}", pair.name))?;
        walls.push(started.elapsed().as_secs_f64() * 1000.0);
        last = Some(report);
    }
    Ok((median(&walls), last.expect("at least one repeat")))
}

/// Killed or not, per mutant in report order.
pub(super) fn killed_flags(report: &ScoreReport) -> Vec<bool> {
    report
        .mutants
        .results
        .iter()
        .map(|r| r.status.is_killed())
        .collect()
}

/// Mutants killed in one score and not in the other (a mutant missing from one counts too).
pub(super) fn verdicts_differing(a: &[bool], b: &[bool]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

#[derive(Clone, Copy)]
pub(super) struct InFlightFigures {
    mutants_per_second: f64,
    /// Mutants whose verdict differs from the one-pair-at-a-time score of the same pair.
    verdicts_differing: usize,
}

/// Every pair scored with `in_flight` pairs at a time over the same warm workers: the
/// throughput a trainer's batch sees, where one pair's serial steps (baseline, then the traced
/// coverage run, then its mutants) no longer leave a worker idle.
pub(super) async fn score_in_flight(
    scorer: &Scorer,
    pairs: &[Pair],
    config: &RewardConfig,
    in_flight: usize,
    one_at_a_time: &[Vec<bool>],
) -> Result<InFlightFigures> {
    let started = Instant::now();
    let reports: Vec<Result<ScoreReport>> =
        futures::stream::iter(pairs.iter().map(|pair| async move {
            scorer
                .score(&pair.input, config)
                .await
                .with_context(|| format!("scoring {}", pair.name))
        }))
        .buffered(in_flight)
        .collect()
        .await;
    let wall_s = started.elapsed().as_secs_f64();
    let mut mutants = 0;
    let mut differing = 0;
    for (report, reference) in reports.into_iter().zip(one_at_a_time) {
        let report = report?;
        mutants += report.mutants.scored;
        differing += verdicts_differing(&killed_flags(&report), reference);
    }
    Ok(InFlightFigures {
        mutants_per_second: mutants as f64 / wall_s,
        verdicts_differing: differing,
    })
}
