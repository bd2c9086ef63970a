//! Held-out evaluation of a model by running what it writes (`unitforge eval mutation | speed |
//! all`): for each held-out row, K suites generated (greedy when K = 1), each scored once in the
//! sandbox through the reward backend, beside two baselines scored the same way — the row's own
//! reference tests (the "human" suites) and a trivial suite — so a reader sees where the model
//! stands.
//!
//! Mutation figures: valid-pytest rate (parses, defines a test), pass rate (the suite passes on
//! its code), mean and median kill rate (a suite that does not pass kills nothing), best-of-K
//! kill rate (each row's best sample), mean composite. Speed figures, over the suites that pass:
//! mean and median suite CPU time, mean speed reward, mean stability, and the flaky fraction
//! (suites whose reruns disagree). Each suite is scored twice: as written (`failing_tests:
//! invalidate`, one wrong assertion and it passes nothing) and pruned (`prune`: what is left once
//! failing, flaky and repeated tests are removed — the suite a user would keep), and each mean
//! has a 95 % bootstrap interval over rows (`interval.rs`). The same rows, seed and model give
//! the same samples and the same mutation figures; CPU times are measured, so they vary a little
//! from run to run.

use std::path::Path;

use serde::{Deserialize, Serialize};
use unitforge_sandbox::backend::{BlockingBackend, Scored};
use unitforge_sandbox::prune::FailingTests;
use unitforge_sandbox::rewards::{median, RewardConfig};
use unitforge_sandbox::score::{ScoreInput, ScoreReport};

use crate::data::dataset::Example;
use crate::data::prompts::extract_tests;
use crate::data::tokenizer::ModelTokenizer;
use crate::eval::interval::{bootstrap_mean, Interval};
use crate::eval::samples::check_tests;
use crate::model::decoder::Model;
use crate::model::generate::{generate_groups, GroupRequest, SamplingConfig};
use crate::TrainerError;

/// The trivial baseline: a suite that passes on anything and checks nothing.
pub const TRIVIAL_SUITE: &str = "def test_nothing():\n    assert True\n";

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Suites per row (K); 1 is greedy.
    pub samples: usize,
    /// Rows to evaluate (0 = all).
    pub limit: usize,
    pub max_new_tokens: usize,
    /// Sampling temperature when K > 1.
    pub temperature: f64,
    pub seed: u64,
    /// Prompts generated together.
    pub batch: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            samples: 1,
            limit: 0,
            max_new_tokens: 384,
            temperature: 0.8,
            seed: 0,
            batch: 8,
        }
    }
}

/// What the sandbox made of one suite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuiteResult {
    /// Parses and defines at least one test (checked without running it).
    pub valid_pytest: bool,
    /// `None` when the suite could not be scored (then it is left out of every figure).
    pub scored: Option<SuiteScore>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// The same suite scored under `failing_tests: prune` (`passed`: something was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<SuiteScore>,
}

impl SuiteResult {
    /// This suite as its pruned score sees it.
    fn pruned_view(&self) -> SuiteResult {
        SuiteResult {
            valid_pytest: self.valid_pytest,
            scored: self.pruned.clone(),
            excluded: self
                .pruned
                .is_none()
                .then(|| "not scored under prune".to_string()),
            pruned: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuiteScore {
    pub passed: bool,
    pub mutant_kill: f64,
    pub composite: f64,
    pub speed: f64,
    pub stability: f64,
    pub suite_cpu_ms: f64,
}

/// One held-out row: the model's K suites and the two baselines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowResult {
    pub row: usize,
    pub module: String,
    pub samples: Vec<SuiteResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<SuiteResult>,
    pub trivial: SuiteResult,
    /// The model's suites as extracted from its completions.
    pub tests: Vec<String>,
}

/// The figures of one kind of suite (the model's, the references', the trivial one's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SuiteFigures {
    pub suites: usize,
    pub excluded: usize,
    pub valid_pytest_rate: f64,
    pub pass_rate: f64,
    pub mean_kill_rate: f64,
    pub median_kill_rate: f64,
    pub best_of_k_kill_rate: f64,
    pub mean_composite: f64,
    /// Over the suites that pass.
    pub passing: usize,
    pub mean_suite_cpu_ms: Option<f64>,
    pub median_suite_cpu_ms: Option<f64>,
    pub mean_speed: Option<f64>,
    pub mean_stability: Option<f64>,
    pub flaky_fraction: Option<f64>,
    /// 95 % bootstrap intervals over rows of the pass rate, mean kill rate and mean composite
    /// (`interval.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_rate_ci: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_kill_rate_ci: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_composite_ci: Option<Interval>,
}

impl SuiteFigures {
    /// SuiteFigures over `rows`, each a row's suites (several for best-of-K).
    pub fn of(rows: &[Vec<&SuiteResult>]) -> Self {
        let all: Vec<&SuiteResult> = rows.iter().flatten().copied().collect();
        let scored: Vec<&SuiteScore> = all.iter().filter_map(|s| s.scored.as_ref()).collect();
        let passing: Vec<&&SuiteScore> = scored.iter().filter(|s| s.passed).collect();
        let mean = |values: &[f64]| {
            if values.is_empty() {
                0.0
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            }
        };
        let over_passing = |f: fn(&SuiteScore) -> f64| -> Option<f64> {
            (!passing.is_empty()).then(|| mean(&passing.iter().map(|s| f(s)).collect::<Vec<_>>()))
        };
        let kills: Vec<f64> = scored.iter().map(|s| s.mutant_kill).collect();
        let best: Vec<f64> = rows
            .iter()
            .filter_map(|row| {
                row.iter()
                    .filter_map(|s| s.scored.as_ref().map(|s| s.mutant_kill))
                    .max_by(f64::total_cmp)
            })
            .collect();
        let cpu: Vec<f64> = passing.iter().map(|s| s.suite_cpu_ms).collect();
        let interval = |f: fn(&SuiteScore) -> f64| {
            bootstrap_mean(&row_means(rows.iter().map(|r| r.as_slice()), f)).map(|(_, ci)| ci)
        };
        Self {
            pass_rate_ci: interval(|s| f64::from(u8::from(s.passed))),
            mean_kill_rate_ci: interval(|s| s.mutant_kill),
            mean_composite_ci: interval(|s| s.composite),
            suites: scored.len(),
            excluded: all.len() - scored.len(),
            valid_pytest_rate: all.iter().filter(|s| s.valid_pytest).count() as f64
                / all.len().max(1) as f64,
            pass_rate: passing.len() as f64 / scored.len().max(1) as f64,
            mean_kill_rate: mean(&kills),
            median_kill_rate: if kills.is_empty() {
                0.0
            } else {
                median(&kills)
            },
            best_of_k_kill_rate: mean(&best),
            mean_composite: mean(&scored.iter().map(|s| s.composite).collect::<Vec<_>>()),
            passing: passing.len(),
            mean_suite_cpu_ms: over_passing(|s| s.suite_cpu_ms),
            median_suite_cpu_ms: (!cpu.is_empty()).then(|| median(&cpu)),
            mean_speed: over_passing(|s| s.speed),
            mean_stability: over_passing(|s| s.stability),
            flaky_fraction: over_passing(|s| f64::from(u8::from(s.stability < 1.0))),
        }
    }
}

/// Each row's mean of `f` over its scored suites (rows with none left out).
fn row_means<'a>(
    rows: impl Iterator<Item = &'a [&'a SuiteResult]>,
    f: fn(&SuiteScore) -> f64,
) -> Vec<f64> {
    rows.filter_map(|row| {
        let values: Vec<f64> = row
            .iter()
            .filter_map(|s| s.scored.as_ref().map(f))
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    })
    .collect()
}

/// The figures of the same suites scored under `failing_tests: prune`: the suite a user keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrunedFigures {
    pub figures: SuiteFigures,
    pub reference: SuiteFigures,
    pub trivial: SuiteFigures,
}

/// Which score of a suite: as written, or pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    Strict,
    Pruned,
}

impl EvalReport {
    /// The model's per-row mean of `f` under `scoring`, by row number (rows with no scored
    /// suite left out): what paired comparisons of two checkpoints resample.
    pub fn row_means(
        &self,
        scoring: Scoring,
        f: fn(&SuiteScore) -> f64,
    ) -> std::collections::BTreeMap<usize, f64> {
        self.per_row
            .iter()
            .filter_map(|row| {
                let values: Vec<f64> = row
                    .samples
                    .iter()
                    .filter_map(|s| match scoring {
                        Scoring::Strict => s.scored.as_ref(),
                        Scoring::Pruned => s.pruned.as_ref(),
                    })
                    .map(f)
                    .collect();
                (!values.is_empty())
                    .then(|| (row.row, values.iter().sum::<f64>() / values.len() as f64))
            })
            .collect()
    }
}

/// A whole evaluation, as `eval … --out` writes it and `eval pareto` reads it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    /// What was evaluated (a model directory, or a baseline's name).
    pub model: String,
    pub data: String,
    pub rows: usize,
    pub samples_per_row: usize,
    pub seed: u64,
    pub executor: String,
    pub figures: SuiteFigures,
    pub reference: SuiteFigures,
    pub trivial: SuiteFigures,
    /// The same suites under `failing_tests: prune` (absent in reports from before pruning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PrunedFigures>,
    pub per_row: Vec<RowResult>,
}

fn suite_score(report: &ScoreReport) -> SuiteScore {
    SuiteScore {
        passed: report.valid,
        mutant_kill: report.mutant_kill,
        composite: report.composite,
        speed: report.speed,
        stability: report.stability,
        suite_cpu_ms: report.timing.suite_cpu_ms,
    }
}

fn suite_result(tests: &str, module: &str, strict: Scored, pruned: Scored) -> SuiteResult {
    let valid_pytest = check_tests(tests, module).valid_pytest();
    let pruned = pruned.result.ok().map(|report| suite_score(&report));
    match strict.result {
        Ok(report) => SuiteResult {
            valid_pytest,
            scored: Some(suite_score(&report)),
            excluded: None,
            pruned,
        },
        Err(err) => SuiteResult {
            valid_pytest,
            scored: None,
            excluded: Some(err.to_string()),
            pruned,
        },
    }
}

/// Generate K suites per row with `model`, then score them and both baselines in one pass.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_model(
    model: &Model,
    text: &ModelTokenizer,
    examples: &[Example],
    options: &EvalOptions,
    backend: &BlockingBackend,
    config: &RewardConfig,
    labels: (&str, &str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<EvalReport, TrainerError> {
    let count = if options.limit == 0 {
        examples.len()
    } else {
        options.limit.min(examples.len())
    };
    let examples = &examples[..count];
    if let Some(example) = examples.iter().find(|e| e.code.is_none()) {
        return Err(TrainerError::Data(format!(
            "row {} has no `code` to run the suites against",
            example.row + 1
        )));
    }
    let k = options.samples.max(1);
    let sampling = SamplingConfig {
        max_new_tokens: options.max_new_tokens,
        temperature: if k == 1 { 0.0 } else { options.temperature },
        top_k: 0,
        top_p: 1.0,
        seed: options.seed,
    };
    // Each batch of rows decoded together: a row's prompt prefilled once and shared by its K
    // samples, a finished sample leaving the batch (`generate_groups`).
    let mut generated: Vec<Vec<String>> = Vec::with_capacity(count);
    for (index, batch) in examples.chunks(options.batch.max(1)).enumerate() {
        let requests = batch
            .iter()
            .enumerate()
            .map(|(row, example)| {
                Ok(GroupRequest {
                    prompt: text
                        .tokenizer
                        .encode(example.prompt.as_str(), false)
                        .map_err(|e| TrainerError::Data(e.to_string()))?
                        .get_ids()
                        .to_vec(),
                    samples: k,
                    seed: options
                        .seed
                        .wrapping_add(index as u64)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        ^ row as u64,
                })
            })
            .collect::<Result<Vec<_>, TrainerError>>()?;
        let mut suites: Vec<Vec<String>> = vec![Vec::new(); batch.len()];
        generate_groups(
            model,
            &requests,
            text.end_id,
            &sampling,
            &mut |row, completions, _| {
                suites[row] = completions
                    .iter()
                    .map(|ids| {
                        text.tokenizer
                            .decode(ids, false)
                            .map(|completion| extract_tests(&completion))
                            .map_err(|e| TrainerError::Data(e.to_string()))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(())
            },
        )?;
        generated.extend(suites);
        progress("generated", generated.len(), count);
    }
    score_suites(
        examples, generated, options, backend, config, labels, progress,
    )
}

/// Score the given suites (one list per row) and both baselines in one pass.
pub fn score_suites(
    examples: &[Example],
    generated: Vec<Vec<String>>,
    options: &EvalOptions,
    backend: &BlockingBackend,
    config: &RewardConfig,
    (model_label, data_label): (&str, &str),
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<EvalReport, TrainerError> {
    // Every suite of every row, then each row's reference and trivial suite, in one batch.
    let mut inputs = Vec::new();
    for (example, suites) in examples.iter().zip(&generated) {
        let code = example.code.clone().unwrap_or_default();
        let mut push = |tests: &str| {
            inputs.push(ScoreInput {
                module: example.module.clone(),
                code: code.clone(),
                tests: tests.to_string(),
            })
        };
        suites.iter().for_each(|t| push(t));
        if let Some(reference) = &example.target {
            push(reference);
        }
        push(TRIVIAL_SUITE);
    }
    // Each suite twice: as written (`invalidate`) and pruned.
    let total = 2 * inputs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let tick = |_: &Scored| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        progress("scored", n, total);
    };
    let under = |failing_tests| RewardConfig {
        failing_tests,
        ..config.clone()
    };
    let mut scored = backend
        .score_all(&inputs, &under(FailingTests::Invalidate), &tick)
        .into_iter();
    let mut pruned = backend
        .score_all(&inputs, &under(FailingTests::Prune), &tick)
        .into_iter();
    let mut next = || {
        (
            scored.next().expect("one score per input"),
            pruned.next().expect("one pruned score per input"),
        )
    };
    let mut per_row = Vec::with_capacity(examples.len());
    for (example, suites) in examples.iter().zip(generated) {
        let module = &example.module;
        let mut result = |tests: &str| {
            let (strict, pruned) = next();
            suite_result(tests, module, strict, pruned)
        };
        let samples = suites.iter().map(|t| result(t)).collect();
        let reference = example.target.as_ref().map(|t| result(t));
        let trivial = result(TRIVIAL_SUITE);
        per_row.push(RowResult {
            row: example.row,
            module: module.clone(),
            samples,
            reference,
            trivial,
            tests: suites,
        });
    }
    let model_rows: Vec<Vec<&SuiteResult>> =
        per_row.iter().map(|r| r.samples.iter().collect()).collect();
    let reference_rows: Vec<Vec<&SuiteResult>> = per_row
        .iter()
        .filter_map(|r| r.reference.as_ref().map(|s| vec![s]))
        .collect();
    let trivial_rows: Vec<Vec<&SuiteResult>> = per_row.iter().map(|r| vec![&r.trivial]).collect();
    let pruned_figures = |rows: &[Vec<&SuiteResult>]| {
        let views: Vec<Vec<SuiteResult>> = rows
            .iter()
            .map(|row| row.iter().map(|s| s.pruned_view()).collect())
            .collect();
        let refs: Vec<Vec<&SuiteResult>> = views.iter().map(|r| r.iter().collect()).collect();
        SuiteFigures::of(&refs)
    };
    let pruned = PrunedFigures {
        figures: pruned_figures(&model_rows),
        reference: pruned_figures(&reference_rows),
        trivial: pruned_figures(&trivial_rows),
    };
    Ok(EvalReport {
        model: model_label.to_string(),
        data: data_label.to_string(),
        rows: per_row.len(),
        samples_per_row: options.samples.max(1),
        seed: options.seed,
        executor: backend.backend().name().to_string(),
        figures: SuiteFigures::of(&model_rows),
        reference: SuiteFigures::of(&reference_rows),
        trivial: SuiteFigures::of(&trivial_rows),
        pruned: Some(pruned),
        per_row,
    })
}

/// Read a report `eval … --out` wrote.
pub fn read_report(path: &Path) -> Result<EvalReport, TrainerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainerError::Io(path.display().to_string(), e))?;
    serde_json::from_str(&text).map_err(|e| TrainerError::Data(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(valid: bool, score: Option<(bool, f64, f64)>) -> SuiteResult {
        SuiteResult {
            valid_pytest: valid,
            scored: score.map(|(passed, kill, cpu)| SuiteScore {
                passed,
                mutant_kill: kill,
                composite: kill * 0.9,
                speed: 1.0 / (1.0 + cpu),
                stability: if cpu > 5.0 { 0.5 } else { 1.0 },
                suite_cpu_ms: cpu,
            }),
            excluded: score.is_none().then(|| "infrastructure".into()),
            pruned: None,
        }
    }

    #[test]
    fn figures_by_hand() {
        // Row 1: a passing suite (kill 0.8, 2 ms) and a failing one. Row 2: a passing suite
        // (kill 0.4, 10 ms, flaky) and one that could not be scored. Row 3: an invalid file.
        let rows = [
            vec![
                suite(true, Some((true, 0.8, 2.0))),
                suite(true, Some((false, 0.0, 0.0))),
            ],
            vec![suite(true, Some((true, 0.4, 10.0))), suite(true, None)],
            vec![suite(false, Some((false, 0.0, 0.0)))],
        ];
        let refs: Vec<Vec<&SuiteResult>> = rows.iter().map(|r| r.iter().collect()).collect();
        let f = SuiteFigures::of(&refs);
        assert_eq!((f.suites, f.excluded, f.passing), (4, 1, 2));
        assert_eq!(f.valid_pytest_rate, 4.0 / 5.0);
        assert_eq!(f.pass_rate, 2.0 / 4.0);
        assert!((f.mean_kill_rate - 1.2 / 4.0).abs() < 1e-12);
        assert!(
            (f.median_kill_rate - 0.2).abs() < 1e-12,
            "median of 0, 0, 0.4, 0.8"
        );
        assert!((f.best_of_k_kill_rate - (0.8 + 0.4 + 0.0) / 3.0).abs() < 1e-12);
        assert!((f.mean_composite - 0.9 * 1.2 / 4.0).abs() < 1e-12);
        assert_eq!(f.mean_suite_cpu_ms, Some(6.0));
        assert_eq!(f.median_suite_cpu_ms, Some(6.0));
        assert_eq!(f.mean_stability, Some(0.75));
        assert_eq!(f.flaky_fraction, Some(0.5));
        // Nothing passes: no speed figures, not zeros.
        let none = [vec![suite(true, Some((false, 0.0, 0.0)))]];
        let refs: Vec<Vec<&SuiteResult>> = none.iter().map(|r| r.iter().collect()).collect();
        let f = SuiteFigures::of(&refs);
        assert_eq!((f.mean_suite_cpu_ms, f.flaky_fraction), (None, None));
    }
}
