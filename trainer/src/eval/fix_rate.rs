//! The held-out fix success rate (`unitforge eval fix`): on fix rows (`data fix-rows` over held-out
//! pairs: a broken suite, its real failure text, the original as the answer), the share of broken
//! suites the model repairs in one round — its greedy answer to the fix prompt, scored as written
//! on the row's code, passes — with a 95 % bootstrap interval over rows, and the mean kill rate
//! of the answers (0 for one that fails).

use serde::{Deserialize, Serialize};
use unitforge_sandbox::backend::BlockingBackend;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;

use crate::data::dataset::Example;
use crate::data::prompts::extract_tests;
use crate::deliver::Writer;
use crate::eval::interval::{bootstrap_mean, Interval};
use crate::TrainerError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixRateReport {
    pub model: String,
    pub rows: usize,
    pub excluded: usize,
    pub fix_success_rate: f64,
    pub fix_success_rate_ci: Option<Interval>,
    pub mean_kill_rate: f64,
    pub mean_kill_rate_ci: Option<Interval>,
    /// Per row: the answer's kill rate, `None` when it does not pass.
    pub per_row: Vec<Option<f64>>,
    /// Per row: the test file taken from the model's answer, as scored — what to read when the
    /// rate is low (a fresh suite instead of an edit, a truncated copy, the broken line kept).
    #[serde(default)]
    pub answers: Vec<String>,
}

/// Fix success rate of `writer` on `rows` (fix rows: `prompt` the fix request, `code` the module).
pub fn fix_success_rate(
    writer: &mut dyn Writer,
    rows: &[Example],
    backend: &BlockingBackend,
    config: &RewardConfig,
    model_label: &str,
    progress: &dyn Fn(usize, usize),
) -> Result<FixRateReport, TrainerError> {
    let mut inputs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let code = row
            .code
            .clone()
            .ok_or_else(|| TrainerError::Data(format!("fix row {} has no `code`", row.row + 1)))?;
        let answer = writer.write_greedy(&row.prompt)?;
        inputs.push(ScoreInput {
            module: row.module.clone(),
            code,
            tests: extract_tests(&answer),
        });
        progress(i + 1, rows.len());
    }
    let scored = backend.score_all(&inputs, config, &|_| {});
    let answers = inputs.into_iter().map(|input| input.tests).collect();
    let mut excluded = 0;
    let per_row: Vec<Option<Option<f64>>> = scored
        .into_iter()
        .map(|s| match s.result {
            Ok(report) => Some(report.valid.then_some(report.mutant_kill)),
            Err(_) => {
                excluded += 1;
                None
            }
        })
        .collect();
    let kept: Vec<Option<f64>> = per_row.iter().flatten().copied().collect();
    let success: Vec<f64> = kept.iter().map(|k| k.map_or(0.0, |_| 1.0)).collect();
    let kill: Vec<f64> = kept.iter().map(|k| k.unwrap_or(0.0)).collect();
    let split = |v: &[f64]| bootstrap_mean(v).map_or((0.0, None), |(m, ci)| (m, Some(ci)));
    let (fix_success_rate, fix_success_rate_ci) = split(&success);
    let (mean_kill_rate, mean_kill_rate_ci) = split(&kill);
    Ok(FixRateReport {
        model: model_label.to_string(),
        rows: kept.len(),
        excluded,
        fix_success_rate,
        fix_success_rate_ci,
        mean_kill_rate,
        mean_kill_rate_ci,
        per_row: per_row.into_iter().map(|r| r.flatten()).collect(),
        answers,
    })
}
