//! Reward-filtered rows (RAFT, reward-ranked fine-tuning): the best suite a model wrote for each
//! row, less its pruned tests, as a supervised row a further SFT round trains on.
//!
//! The model's suites come from an evaluation report (`eval all --data …`, which keeps every
//! suite it scored with its pruned score). For each row, the best few by pruned composite that
//! kill at least one mutant are scored under `prune` again (the service's cache answers a suite
//! it has seen) to learn which tests were pruned; each becomes its **kept file** — the suite less
//! those tests (a parametrize list's single entries where certain, byte for byte otherwise:
//! `prune::kept_file`) — and the kept file is scored as
//! written (`invalidate`): only a kept file that passes on its code as it stands, and kills,
//! becomes a row. Each row's target is its best such file by that score, discounted as the
//! pruned reward discounts a suite of fewer than `prune_min_tests` cases. So a round trains on
//! suites the model can write and the sandbox has proven, never on a test that fails.
//!
//! With oracle repair (`FilterOptions::oracle_repair`), each candidate is also offered with its
//! wrong expectations rewritten to what the code returns (`repair::oracle_repair`, the regression
//! oracle of delivery): the model's own inputs and structure, the code's own answers. A test
//! whose only fault was its expected value then stays in the target instead of being pruned, so
//! the round does not teach shorter suites; the repaired file is proven as written like any.

use std::collections::BTreeSet;

use serde::Serialize;
use unitforge_sandbox::backend::{BlockingBackend, Scored};
use unitforge_sandbox::prune::{kept_file, prune_discount, FailingTests, PrunedTest};
use unitforge_sandbox::repair::oracle_repair;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;

use crate::data::dataset::Example;
use crate::eval::report::EvalReport;
use crate::TrainerError;

/// How rows are filtered.
#[derive(Debug, Clone)]
pub struct FilterOptions {
    /// Suites per row tried, best first by pruned composite.
    pub candidates: usize,
    /// A kept file must kill more than this share of the mutants.
    pub min_kill: f64,
    /// Also offer each candidate with its wrong expectations rewritten to what the code does
    /// (`repair::oracle_repair`), less the tests still failing: a suite keeps the tests whose
    /// only fault was the expected value. Suites with nothing kept become candidates too.
    pub oracle_repair: bool,
}

impl Default for FilterOptions {
    fn default() -> Self {
        Self {
            candidates: 2,
            min_kill: 0.0,
            oracle_repair: false,
        }
    }
}

/// One supervised row: the dataset row's code and module, and the kept file as its target
/// (`chosen`, the field `load_jsonl` reads).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FilteredRow {
    pub module: String,
    pub code: String,
    pub chosen: String,
    /// The dataset row it came from.
    pub source_row: usize,
    /// The kept file's scores as written.
    pub mutant_kill: f64,
    pub composite: f64,
    /// What the row was chosen by: the composite × the pruned reward's discount for a file of
    /// fewer than `prune_min_tests` cases.
    pub rank: f64,
    /// Test cases pruned from the suite the model wrote.
    pub pruned_cases: usize,
    /// Expectations oracle repair rewrote (0: the model's own file, less its pruned tests).
    pub repairs: usize,
}

/// What the filter saw and kept.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FilterSummary {
    pub rows: usize,
    pub suites: usize,
    /// Suites tried (the best few of each row that killed something once pruned).
    pub candidates: usize,
    /// Rows with no suite that killed anything.
    pub rows_without_candidate: usize,
    /// Kept files that did not pass as written, or killed nothing (a pruned test that other
    /// tests needed, or a flaky one that passed in the pruned score's runs).
    pub kept_files_rejected: usize,
    /// Scores the backend could not give (infrastructure): left out, never counted as a failure.
    pub excluded: usize,
    /// Repaired kept files tried, and rows whose chosen file is one.
    pub repaired_files: usize,
    pub rows_repaired: usize,
    pub rows_kept: usize,
    pub mean_kill_rate: f64,
    pub mean_composite: f64,
}

/// The reward-filtered rows of `report`, whose rows index `examples`.
pub fn filtered_rows(
    report: &EvalReport,
    examples: &[Example],
    backend: &BlockingBackend,
    config: &RewardConfig,
    options: &FilterOptions,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Vec<FilteredRow>, FilterSummary), TrainerError> {
    let mut summary = FilterSummary {
        rows: report.per_row.len(),
        suites: report.per_row.iter().map(|r| r.tests.len()).sum(),
        ..FilterSummary::default()
    };
    // (row's place in the report, the suite) for each candidate, best first within a row.
    let mut candidates: Vec<(usize, &str)> = Vec::new();
    for (place, row) in report.per_row.iter().enumerate() {
        let mut ranked: Vec<(f64, &str)> = row
            .samples
            .iter()
            .zip(&row.tests)
            .filter_map(|(sample, tests)| {
                let pruned = sample.pruned.as_ref()?;
                let kills = pruned.passed && pruned.mutant_kill > options.min_kill;
                // Repair may mend a suite none of whose tests passed.
                let mendable = options.oracle_repair && sample.valid_pytest;
                (kills || mendable).then_some((pruned.composite, tests.as_str()))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut seen = BTreeSet::new();
        ranked.retain(|(_, tests)| seen.insert(*tests));
        if ranked.is_empty() {
            summary.rows_without_candidate += 1;
        }
        candidates.extend(
            ranked
                .into_iter()
                .take(options.candidates.max(1))
                .map(|(_, tests)| (place, tests)),
        );
    }
    summary.candidates = candidates.len();
    let example_of = |place: usize| -> Result<&Example, TrainerError> {
        let row = report.per_row[place].row;
        examples
            .get(row)
            .filter(|e| e.module == report.per_row[place].module && e.code.is_some())
            .ok_or_else(|| {
                TrainerError::Data(format!(
                    "the report's row {row} ({}) is not in the dataset with its code: \
                     give the --data the report was made from",
                    report.per_row[place].module
                ))
            })
    };
    let input = |place: usize, tests: &str| -> Result<ScoreInput, TrainerError> {
        let example = example_of(place)?;
        Ok(ScoreInput {
            module: example.module.clone(),
            code: example.code.clone().unwrap_or_default(),
            tests: tests.to_string(),
        })
    };
    let under = |failing_tests| RewardConfig {
        failing_tests,
        ..config.clone()
    };

    // Which tests each candidate loses.
    let inputs = candidates
        .iter()
        .map(|(place, tests)| input(*place, tests))
        .collect::<Result<Vec<_>, _>>()?;
    let count = |phase: &'static str, total: usize| {
        let done = std::sync::atomic::AtomicUsize::new(0);
        move |_: &Scored| {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            progress(phase, n, total);
        }
    };
    let pruned_scores = backend.score_all(
        &inputs,
        &under(FailingTests::Prune),
        &count("pruned", inputs.len()),
    );
    // (row's place, kept file, cases pruned, expectations repaired)
    let mut kept: Vec<(usize, String, usize, usize)> = Vec::new();
    for ((place, tests), scored) in candidates.iter().zip(pruned_scores) {
        let report = match scored.result {
            Ok(report) => report,
            Err(_) => {
                summary.excluded += 1;
                continue;
            }
        };
        let pruned = report.pruned_tests.clone().unwrap_or_default();
        match kept_file(tests, &pruned) {
            Some(file) if report.valid => {
                kept.push((*place, file, pruned.len(), 0));
            }
            // A suite with nothing kept, tried only for repair, has no kept file to reject.
            _ if !report.valid && options.oracle_repair => {}
            _ => summary.kept_files_rejected += 1,
        }
        if !options.oracle_repair {
            continue;
        }
        let Some(baseline) = report.baseline.as_ref() else {
            continue;
        };
        let (repaired, repairs) = oracle_repair(tests, &baseline.tests);
        if repairs.is_empty() {
            continue;
        }
        // The repaired tests stay; the rest of what was pruned goes. The file as written
        // proves it below.
        let mended: BTreeSet<&str> = repairs.iter().map(|r| r.test.as_str()).collect();
        let still: Vec<PrunedTest> = pruned
            .into_iter()
            .filter(|p| !mended.contains(p.name.as_str()))
            .collect();
        if let Some(file) = kept_file(&repaired, &still) {
            summary.repaired_files += 1;
            kept.push((*place, file, still.len(), repairs.len()));
        }
    }

    // Each kept file as written: it must pass and kill on its own.
    let inputs = kept
        .iter()
        .map(|(place, file, ..)| input(*place, file))
        .collect::<Result<Vec<_>, _>>()?;
    let strict_scores = backend.score_all(
        &inputs,
        &under(FailingTests::Invalidate),
        &count("kept", inputs.len()),
    );
    let mut best: Vec<Option<FilteredRow>> = vec![None; report.per_row.len()];
    for ((place, file, removed, repairs), scored) in kept.into_iter().zip(strict_scores) {
        let report_row = &report.per_row[place];
        let score = match scored.result {
            Ok(score) => score,
            Err(_) => {
                summary.excluded += 1;
                continue;
            }
        };
        if !score.valid || score.mutant_kill <= options.min_kill {
            summary.kept_files_rejected += 1;
            continue;
        }
        // Ranked as the pruned reward ranks suites: a file of fewer than `prune_min_tests`
        // cases earns that share, so a round does not teach one-test suites.
        let cases = score.baseline.as_ref().map_or(0, |b| b.tests.len());
        let rank = score.composite * prune_discount(cases, cases, config.prune_min_tests);
        let example = example_of(place)?;
        let candidate = FilteredRow {
            module: example.module.clone(),
            code: example.code.clone().unwrap_or_default(),
            chosen: file,
            source_row: report_row.row,
            mutant_kill: score.mutant_kill,
            composite: score.composite,
            rank,
            pruned_cases: removed,
            repairs,
        };
        let slot = &mut best[place];
        if slot.as_ref().is_none_or(|b| candidate.rank > b.rank) {
            *slot = Some(candidate);
        }
    }
    let rows: Vec<FilteredRow> = best.into_iter().flatten().collect();
    summary.rows_kept = rows.len();
    summary.rows_repaired = rows.iter().filter(|r| r.repairs > 0).count();
    if !rows.is_empty() {
        let n = rows.len() as f64;
        summary.mean_kill_rate = rows.iter().map(|r| r.mutant_kill).sum::<f64>() / n;
        summary.mean_composite = rows.iter().map(|r| r.composite).sum::<f64>() / n;
    }
    Ok((rows, summary))
}
