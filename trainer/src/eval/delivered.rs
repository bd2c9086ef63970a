//! Delivered figures (`unitforge eval deliver`): what a user of `generate --deliver` gets, held
//! out. For each row: (a) the greedy suite as written; then one delivery (`deliver::deliver`,
//! N samples, oracle repair, R fix rounds) read at each of its steps — (b) the best sampled suite
//! once pruned, (c) the best of those and their oracle repairs, (d) the best of everything,
//! fix rounds included — and the file actually delivered (checked as written). For each: the
//! share of rows that get a valid suite and the mean kill rate over rows (0 for a row without
//! one), with 95 % bootstrap intervals over rows; beside them the rows' human reference suites
//! and the trivial suite, and the generation and sandbox seconds per row.

use serde::{Deserialize, Serialize};
use unitforge_sandbox::backend::BlockingBackend;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;

use crate::data::dataset::Example;
use crate::data::prompts::{extract_tests, render, Task};
use crate::deliver::{deliver, Candidate, DeliverOptions, Origin, Writer};
use crate::eval::interval::{bootstrap_mean, Interval};
use crate::eval::report::TRIVIAL_SUITE;
use crate::TrainerError;

/// One way of getting a suite, over the rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveredStep {
    pub step: String,
    /// Rows that got a valid suite.
    pub valid_rows: f64,
    pub valid_rows_ci: Option<Interval>,
    /// Mean kill rate over rows (0 for a row without a valid suite).
    pub mean_kill_rate: f64,
    pub mean_kill_rate_ci: Option<Interval>,
}

/// One row's outcome at each step: the kill rate of its suite, `None` when it got none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveredRow {
    pub row: usize,
    pub module: String,
    pub greedy: Option<f64>,
    pub best_of_n: Option<f64>,
    pub repaired: Option<f64>,
    pub fixed: Option<f64>,
    pub delivered: Option<f64>,
    pub reference: Option<f64>,
    pub trivial: Option<f64>,
    pub generation_s: f64,
    pub sandbox_s: f64,
    /// Rows whose scores the backend could not give are left out of every figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveredReport {
    pub model: String,
    pub rows: usize,
    pub samples: usize,
    pub fix_rounds: usize,
    pub steps: Vec<DeliveredStep>,
    pub mean_generation_s: f64,
    pub mean_sandbox_s: f64,
    pub per_row: Vec<DeliveredRow>,
}

/// The best pruned kill rate among `candidates` that `allowed` admits (`None`: nothing kept).
fn best(candidates: &[Candidate], allowed: impl Fn(&Candidate) -> bool) -> Option<f64> {
    candidates
        .iter()
        .filter(|c| allowed(c) && c.kept_tests > 0 && c.invalid.is_none() && c.excluded.is_none())
        .max_by(|a, b| a.composite.total_cmp(&b.composite))
        .map(|c| c.mutant_kill)
}

/// Delivered figures of `writer` on `examples` (the first `limit`; 0 = all).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_delivery(
    writer: &mut dyn Writer,
    examples: &[Example],
    limit: usize,
    backend: &BlockingBackend,
    config: &RewardConfig,
    options: &DeliverOptions,
    model_label: &str,
    progress: &dyn Fn(usize, usize),
) -> Result<DeliveredReport, TrainerError> {
    let count = if limit == 0 {
        examples.len()
    } else {
        limit.min(examples.len())
    };
    let mut per_row = Vec::with_capacity(count);
    for (index, example) in examples[..count].iter().enumerate() {
        let code = example
            .code
            .clone()
            .ok_or_else(|| TrainerError::Data(format!("row {} has no `code`", example.row + 1)))?;
        let module = example.module.as_str();
        // (a) greedy, as written; and the two baselines, as written.
        let started = std::time::Instant::now();
        let greedy = writer.write_greedy(&render(
            &Task::Generate {
                module,
                code: &code,
            },
            writer.format(),
        ))?;
        let greedy_s = started.elapsed().as_secs_f64();
        let mut suites = vec![extract_tests(&greedy), TRIVIAL_SUITE.to_string()];
        if let Some(reference) = &example.target {
            suites.push(reference.clone());
        }
        let inputs: Vec<ScoreInput> = suites
            .iter()
            .map(|tests| ScoreInput {
                module: module.to_string(),
                code: code.clone(),
                tests: tests.clone(),
            })
            .collect();
        let started = std::time::Instant::now();
        let scored = backend.score_all(&inputs, config, &|_| {});
        let baseline_s = started.elapsed().as_secs_f64();
        let mut excluded = None;
        let kills: Vec<Option<f64>> = scored
            .into_iter()
            .map(|s| match s.result {
                Ok(report) => report.valid.then_some(report.mutant_kill),
                Err(err) => {
                    excluded = Some(err.to_string());
                    None
                }
            })
            .collect();
        let delivery = deliver(writer, module, &code, backend, config, options, &|_| {})?;
        let candidates = &delivery.candidates;
        let sampled_lineage = |c: &Candidate| match c.origin {
            Origin::Sampled { .. } => true,
            Origin::Repaired { of } => matches!(candidates[of].origin, Origin::Sampled { .. }),
            Origin::Fixed { .. } => false,
        };
        if let Some(c) = candidates.iter().find(|c| c.excluded.is_some()) {
            excluded = c.excluded.clone();
        }
        per_row.push(DeliveredRow {
            row: example.row,
            module: module.to_string(),
            greedy: kills[0],
            best_of_n: best(candidates, |c| matches!(c.origin, Origin::Sampled { .. })),
            repaired: best(candidates, sampled_lineage),
            fixed: best(candidates, |_| true),
            delivered: delivery.score.as_ref().map(|s| s.mutant_kill),
            trivial: kills[1],
            reference: kills.get(2).copied().flatten(),
            generation_s: greedy_s + delivery.generation_s,
            sandbox_s: baseline_s + delivery.sandbox_s,
            excluded,
        });
        progress(index + 1, count);
    }
    let kept: Vec<&DeliveredRow> = per_row.iter().filter(|r| r.excluded.is_none()).collect();
    let step = |name: &str, of: &dyn Fn(&DeliveredRow) -> Option<f64>| {
        let valid: Vec<f64> = kept.iter().map(|r| of(r).map_or(0.0, |_| 1.0)).collect();
        let kill: Vec<f64> = kept.iter().map(|r| of(r).unwrap_or(0.0)).collect();
        let (valid_rows, valid_rows_ci) =
            bootstrap_mean(&valid).map_or((0.0, None), |(m, ci)| (m, Some(ci)));
        let (mean_kill_rate, mean_kill_rate_ci) =
            bootstrap_mean(&kill).map_or((0.0, None), |(m, ci)| (m, Some(ci)));
        DeliveredStep {
            step: name.to_string(),
            valid_rows,
            valid_rows_ci,
            mean_kill_rate,
            mean_kill_rate_ci,
        }
    };
    let steps = vec![
        step("(a) greedy, as written", &|r| r.greedy),
        step("(b) best of N, pruned", &|r| r.best_of_n),
        step("(c) + oracle repair", &|r| r.repaired),
        step("(d) + fix rounds", &|r| r.fixed),
        step("delivered (checked as written)", &|r| r.delivered),
        step("human reference suites", &|r| r.reference),
        step("trivial suite", &|r| r.trivial),
    ];
    let mean = |f: &dyn Fn(&DeliveredRow) -> f64| {
        if kept.is_empty() {
            0.0
        } else {
            kept.iter().map(|r| f(r)).sum::<f64>() / kept.len() as f64
        }
    };
    Ok(DeliveredReport {
        model: model_label.to_string(),
        rows: kept.len(),
        samples: options.n,
        fix_rounds: options.fix_rounds,
        steps,
        mean_generation_s: mean(&|r| r.generation_s),
        mean_sandbox_s: mean(&|r| r.sandbox_s),
        per_row,
    })
}
