//! Scoring one (code under test, test file) pair: every reward, with the evidence behind it.
//!
//! The steps, in order: parse both files and read the suite's facts; run the suite once on the
//! original (the baseline, which decides validity); then, concurrently over the worker pool,
//! the stability runs (shuffled, reseeded), the runs on each variant, and — after the runner
//! has compiled the mutants to drop equivalent and unviable ones, and one coverage run has said
//! which tests run which lines — one run per mutant, with only the tests that run a line it
//! changes, and a time limit derived from the baseline. A failing mutant run is a kill only
//! once the same request with the original's source passes (a control run, one per distinct
//! selection of tests): tests that fail because of their order, their selection or how they are
//! run earn nothing. Nothing a run does can make this function fail: bad tests give an invalid
//! score, and only unusable input or a broken machine give an error.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use serde::{Deserialize, Serialize};

use crate::coverage::{selection_pays, Reach, TestCoverage};
use crate::mutant::{generate_mutants, Mutant};
use crate::outcome::{judge_run, mutant_status, JudgedRun, MutantStatus, Verdict};
// The report types live in report.rs (tally.rs fills them in too); a score returns them.
use crate::protocol::{
    function_name, RunLimits, RunReply, RunRequest, TestReport, PROTOCOL_VERSION,
};
use crate::prune::{
    duplicate_functions, duplicates_in, failed_at_baseline, failing_cases, flaky_in,
    prune_discount, FailingTests, Pruning,
};
pub use crate::report::{
    BaselineRun, Environment, MutantResult, MutantSummary, ScoreReport, StabilityRun, Timing,
    VariantResult,
};
use crate::rewards::{composite_reward, median, RewardConfig};
use crate::source::{PythonSource, SourceError};
use crate::suite::{suite_facts, SuiteFacts};
use crate::tally::{
    baseline_summary, tally_mutants, tally_stability, tally_variants, MutantOutcomes,
};
use crate::variant::generate_variants;
use crate::worker::{InfraError, WorkerPool};

/// Input that cannot be scored at all (as opposed to tests that score badly).
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("`{0}` cannot be used as the module name of the code under test: {1}")]
    ModuleName(String, &'static str),
    #[error("the code under test raised while being imported: {0}")]
    CutImport(String),
    #[error("the sandbox failed: {0}")]
    Infra(#[from] InfraError),
}

/// The module name of a code under test when none is given.
pub const DEFAULT_MODULE: &str = "solution";

/// One pair to score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreInput {
    /// Module name the tests import the code under test by (`from <module> import …`).
    pub module: String,
    pub code: String,
    pub tests: String,
}

/// Module names the runner itself needs.
const RESERVED_MODULES: [&str; 6] = [
    "pytest",
    "_pytest",
    "pluggy",
    "unitforge_runner",
    "conftest",
    "py",
];

/// Whether `name` can be the module the tests import the code under test by.
pub fn check_module_name(name: &str) -> Result<(), ScoreError> {
    let valid_identifier = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_identifier {
        return Err(ScoreError::ModuleName(
            name.into(),
            "not a Python identifier",
        ));
    }
    if RESERVED_MODULES.contains(&name) || name.starts_with("test_") {
        return Err(ScoreError::ModuleName(
            name.into(),
            "reserved by pytest or the runner",
        ));
    }
    Ok(())
}

/// Scores pairs on a worker pool. Cheap to share: clone the `Arc`.
pub struct Scorer {
    pool: Arc<WorkerPool>,
    overhead_ms: f64,
    environment: Environment,
}

const CALIBRATION_RUNS: usize = 5;

impl Scorer {
    /// Start the pool's workers and measure the runner's per-run CPU overhead (a one-test suite
    /// that does nothing), which the speed reward subtracts.
    pub async fn new(pool: Arc<WorkerPool>) -> Result<Self, InfraError> {
        let hello = pool.warm_up().await?;
        let mut scorer = Self {
            environment: Environment {
                executor: pool.executor_name().to_string(),
                protocol: PROTOCOL_VERSION,
                python: hello.python,
                pytest: hello.pytest,
            },
            pool,
            overhead_ms: 0.0,
        };
        let calibration = ScoreInput {
            module: "unitforge_calibration".into(),
            code: "VALUE = 1\n".into(),
            tests: "from unitforge_calibration import VALUE\n\ndef test_value():\n    assert VALUE == 1\n".into(),
        };
        let limits = RunLimits::default();
        let mut cpu = Vec::new();
        for seed in 0..CALIBRATION_RUNS as u64 {
            let request = RunRequest {
                id: format!("calibrate-{seed}"),
                shuffle: false,
                ..run_request(&calibration, &limits, calibration.code.clone(), seed, 30.0)
            };
            let reply = scorer.pool.run(&request).await?;
            cpu.push(reply.cpu_s.unwrap_or(0.0) * 1000.0);
        }
        scorer.overhead_ms = median(&cpu);
        tracing::debug!(
            overhead_ms = scorer.overhead_ms,
            "runner overhead calibrated"
        );
        Ok(scorer)
    }

    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    pub fn overhead_ms(&self) -> f64 {
        self.overhead_ms
    }

    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// Score one pair under `config`.
    pub async fn score(
        &self,
        input: &ScoreInput,
        config: &RewardConfig,
    ) -> Result<ScoreReport, ScoreError> {
        let started = Instant::now();
        check_module_name(&input.module)?;
        let cut = PythonSource::parse("code under test", &input.code)?;
        let (mutants, census) = generate_mutants(&cut, &config.mutants);
        let mut report = ScoreReport {
            validity: 0.0,
            mutant_kill: 0.0,
            speed: 0.0,
            stability: 0.0,
            robustness: 0.0,
            composite: config.invalid_composite,
            valid: false,
            invalid_reason: None,
            module: input.module.clone(),
            suite: SuiteFacts::default(),
            baseline: None,
            mutants: MutantSummary {
                generated: mutants.len(),
                census,
                ..MutantSummary::default()
            },
            stability_runs: Vec::new(),
            variants: Vec::new(),
            exclusions: Vec::new(),
            infra_errors: 0,
            timing: Timing {
                overhead_ms: self.overhead_ms,
                ..Timing::default()
            },
            environment: self.environment.clone(),
            kept_tests: None,
            pruned_tests: None,
            pass_fraction: None,
        };
        let finish = |mut report: ScoreReport| {
            report.timing.total_ms = started.elapsed().as_secs_f64() * 1000.0;
            Ok(report)
        };

        // The test file: model output, so its problems make the suite invalid, not an error.
        let tests = match PythonSource::parse("test file", &input.tests) {
            Ok(tests) => tests,
            Err(err) => {
                report.invalid_reason = Some(err.to_string());
                return finish(report);
            }
        };
        report.suite = suite_facts(&tests);
        let denied: Vec<String> = report
            .suite
            .denied()
            .map(|r| format!("{} (line {})", r.what, r.line))
            .collect();
        if config.deny_reaches_invalidate && !denied.is_empty() {
            report.invalid_reason = Some(format!(
                "the test file reaches for what tests may not use: {}",
                denied.join(", ")
            ));
            return finish(report);
        }
        if report.suite.tests.is_empty() {
            report.invalid_reason = Some("the test file defines no test functions".into());
            return finish(report);
        }
        let static_tests: BTreeSet<String> =
            report.suite.tests.iter().map(|t| t.name.clone()).collect();

        // Baseline: decides validity, and is the first stability run.
        let mut request = run_request(
            input,
            &config.limits,
            input.code.clone(),
            0,
            config.timeouts.baseline_s,
        );
        request.tracebacks = true;
        let reply = self.pool.run(&request).await?;
        let baseline = judge_run(&reply, &static_tests)?;
        report.baseline = Some(baseline_summary(&reply, &baseline));
        if baseline.verdict == Verdict::CutError {
            return Err(ScoreError::CutImport(baseline.detail));
        }
        // Under `prune`, what is kept of the suite; every later run selects only that.
        let mut pruning = match config.failing_tests {
            FailingTests::Invalidate => {
                if let Some(reason) = strict_invalid_reason(&baseline) {
                    report.invalid_reason = Some(reason);
                    return finish(report);
                }
                None
            }
            FailingTests::Prune => match prune_baseline(&reply, &baseline, &tests) {
                Ok(pruning) => Some(pruning),
                Err(reason) => {
                    report.invalid_reason = Some(reason);
                    return finish(report);
                }
            },
        };
        if pruning.as_ref().is_some_and(|p| p.kept.is_empty()) {
            return finish(invalid_when_all_pruned(report, pruning));
        }

        // Stability runs, variant runs and mutant runs, all at once over the pool; a pruned
        // suite runs its stability runs first, to prune the tests that only pass sometimes.
        let variants = generate_variants(&cut, &config.variants);
        let selected = |pruning: &Option<Pruning>| {
            let selection = pruning.as_ref().and_then(Pruning::selection);
            let functions = pruning
                .as_ref()
                .map_or_else(|| static_tests.clone(), Pruning::kept_functions);
            (selection, functions)
        };
        let (selection, functions) = selected(&pruning);
        let stability_futures = (1..config.runs as u64).map(|seed| {
            let request = RunRequest {
                only: selection.clone(),
                ..run_request(
                    input,
                    &config.limits,
                    input.code.clone(),
                    seed,
                    config.timeouts.baseline_s,
                )
            };
            let functions = &functions;
            async move {
                let judged = self.pool.run(&request).await.and_then(|reply| {
                    let run = judge_run(&reply, functions)?;
                    let sound = run.passed() || failing_cases(&reply, &run).is_some();
                    Ok((run, sound))
                });
                (seed, judged)
            }
        });
        let (stability_first, stability_beside) = match pruning {
            Some(_) => (Some(stability_futures), None),
            None => (None, Some(stability_futures)),
        };
        let stability_runs = match (&mut pruning, stability_first) {
            (Some(kept), Some(futures)) => {
                let runs = join_all(futures).await;
                for (_, run) in &runs {
                    if let Ok((run, true)) = run {
                        let flaky = flaky_in(&kept.kept, run);
                        kept.remove(flaky);
                    }
                }
                if kept.kept.is_empty() {
                    return finish(invalid_when_all_pruned(report, pruning));
                }
                runs
            }
            _ => Vec::new(),
        };
        let (selection, functions) = selected(&pruning);
        let variant_futures = variants.iter().map(|variant| {
            let request = RunRequest {
                only: selection.clone(),
                ..run_request(
                    input,
                    &config.limits,
                    variant.source.clone(),
                    0,
                    config.timeouts.baseline_s,
                )
            };
            async move { self.pool.run(&request).await }
        });
        let baseline_run = report.baseline.as_ref().expect("baseline ran");
        let mutant_suite = MutantSuite {
            selection: &selection,
            functions: &functions,
        };
        let (stability_runs, variant_replies, mutant_outcomes) = tokio::join!(
            async {
                match stability_beside {
                    Some(futures) => join_all(futures).await,
                    None => stability_runs,
                }
            },
            join_all(variant_futures),
            self.run_mutants(input, config, &mutants, baseline_run, mutant_suite)
        );
        let stability_runs = stability_runs
            .into_iter()
            .map(|(seed, run)| (seed, run.map(|(run, _)| run)))
            .collect();
        tally_stability(
            &mut report,
            &baseline,
            stability_runs,
            pruning.as_ref(),
            self.overhead_ms,
            config,
        );
        tally_variants(&mut report, &variants, variant_replies, &functions);
        tally_mutants(&mut report, mutants, mutant_outcomes);

        report.valid = true;
        report.validity = 1.0;
        report.composite = composite_reward(
            config,
            true,
            report.mutant_kill,
            report.speed,
            report.stability,
            report.robustness,
        );
        if let Some(pruning) = pruning {
            report.composite *= prune_discount(
                pruning.kept.len(),
                pruning.collected,
                config.prune_min_tests,
            );
            record_pruning(&mut report, pruning);
        }
        finish(report)
    }

    /// One run, judged. A timeout that looks like starvation (little CPU for its wall time) is
    /// run once more, so that a loaded machine does not turn a surviving mutant into a kill (or
    /// a control into a failure); a mutant that really loops times out again, on the CPU.
    async fn run_judged(
        &self,
        request: &RunRequest,
        static_tests: &BTreeSet<String>,
    ) -> Result<JudgedRun, InfraError> {
        let run = judge_run(&self.pool.run(request).await?, static_tests)?;
        if timeout_needs_confirmation(&run) {
            tracing::debug!(
                cpu_ms = run.cpu_ms,
                wall_ms = run.wall_ms,
                "a run timed out with little CPU; running it again"
            );
            return judge_run(&self.pool.run(request).await?, static_tests);
        }
        Ok(run)
    }

    /// Which lines each test runs, from one traced run of the suite on the original; `Ok(None)`
    /// when the configuration does not guide mutant runs by coverage.
    async fn line_coverage(
        &self,
        input: &ScoreInput,
        config: &RewardConfig,
        kept_cases: &[&TestReport],
        suite: MutantSuite<'_>,
    ) -> Result<Option<TestCoverage>, String> {
        if !config.mutants.coverage_guided {
            return Ok(None);
        }
        let request = RunRequest {
            coverage: true,
            only: suite.selection.clone(),
            ..run_request(
                input,
                &config.limits,
                input.code.clone(),
                0,
                config.timeouts.baseline_s,
            )
        };
        let reply = self.pool.run(&request).await.map_err(|e| e.to_string())?;
        let run = judge_run(&reply, suite.functions).map_err(|e| e.to_string())?;
        if !run.passed() {
            return Err(format!("the traced run did not pass: {}", run.detail));
        }
        let coverage = reply
            .report
            .and_then(|r| r.coverage)
            .ok_or("the traced run reported no coverage")?;
        let order: Vec<String> = kept_cases.iter().map(|t| t.nodeid.clone()).collect();
        TestCoverage::from_run(&coverage, &order).map(Some)
    }

    /// Compile the mutants (dropping equivalent and unviable ones) while a coverage run finds
    /// which tests run which lines; then run each mutant with the tests that reach it, with a
    /// limit derived from the baseline, stopping at the first failing test, fastest baseline
    /// tests first; then confirm each kill with a control run on the original. Returns each
    /// mutant's status, detail and wall time, in order.
    async fn run_mutants(
        &self,
        input: &ScoreInput,
        config: &RewardConfig,
        mutants: &[Mutant],
        baseline: &BaselineRun,
        suite: MutantSuite<'_>,
    ) -> MutantOutcomes {
        let static_tests = suite.functions;
        // The baseline's cases that are scored (all, unless the suite was pruned).
        let kept_cases: Vec<&TestReport> = baseline
            .tests
            .iter()
            .filter(|t| {
                suite
                    .selection
                    .as_ref()
                    .is_none_or(|kept| kept.contains(&t.nodeid))
            })
            .collect();
        let sources: Vec<String> = mutants.iter().map(|m| m.apply(&input.code)).collect();
        let mut notes = Vec::new();
        let (equivalence, coverage) = tokio::join!(
            self.pool.equivalence(&input.code, sources.clone()),
            self.line_coverage(input, config, &kept_cases, suite)
        );
        let prechecks = match equivalence {
            Ok(reply) if reply.error.is_none() && reply.results.len() == mutants.len() => {
                Some(reply.results)
            }
            Ok(reply) => {
                notes.push(format!(
                    "equivalence check failed ({}); all mutants run",
                    reply.error.unwrap_or_default()
                ));
                None
            }
            Err(err) => {
                notes.push(format!("equivalence check failed ({err}); all mutants run"));
                None
            }
        };
        let coverage = coverage.unwrap_or_else(|why| {
            notes.push(format!(
                "coverage could not guide the mutant runs ({why}); each ran the whole suite"
            ));
            None
        });
        let timeout_s = config.timeouts.mutant_timeout_s(baseline.wall_ms / 1000.0);
        let mut fastest_first = kept_cases;
        fastest_first.sort_by(|a, b| a.duration_s.total_cmp(&b.duration_s));
        let slowest_test_s = fastest_first.last().map_or(0.0, |t| t.duration_s);
        // No tamper checks: a forged pass only costs the suite a kill, and a failure counts only
        // once its control — the same request, so also unchecked — passes on the original.
        let whole_suite = RunRequest {
            stop_on_first_failure: true,
            tamper_checks: false,
            run_first: fastest_first.iter().map(|t| t.nodeid.clone()).collect(),
            test_budget_s: Some(config.timeouts.test_budget_s(slowest_test_s)),
            only: suite.selection.clone(),
            ..run_request(input, &config.limits, String::new(), 0, timeout_s)
        };
        let needs_run = |index: usize| {
            prechecks
                .as_ref()
                .is_none_or(|p| p[index].compiles && !p[index].equivalent)
        };
        let reaches: Vec<Reach> = (0..sources.len())
            .map(|index| match (&coverage, &prechecks) {
                (Some(coverage), Some(checks)) if needs_run(index) => {
                    coverage.reach(checks[index].lines.as_deref())
                }
                _ => Reach::Everything,
            })
            .collect();
        let to_run: Vec<Reach> = (0..sources.len())
            .filter(|&index| needs_run(index))
            .map(|index| reaches[index].clone())
            .collect();
        let selecting = coverage.is_some() && selection_pays(&to_run);
        let runs = sources
            .into_iter()
            .zip(reaches)
            .enumerate()
            .map(|(index, (source, reach))| {
                let precheck = prechecks.as_ref().map(|p| &p[index]);
                // Not selecting, a mutant no test reaches still runs, and is labelled if it survives.
                let uncovered = reach == Reach::Nothing;
                let reach = if selecting { reach } else { Reach::Everything };
                let whole_suite = &whole_suite;
                async move {
                    let settled = |status, detail: String| MutantRun::Settled(status, detail, 0.0);
                    match precheck {
                        Some(check) if !check.compiles => {
                            return settled(
                                MutantStatus::Unviable,
                                check.error.clone().unwrap_or_default(),
                            )
                        }
                        Some(check) if check.equivalent => {
                            return settled(
                                MutantStatus::Equivalent,
                                "same bytecode as the original".into(),
                            )
                        }
                        _ => {}
                    }
                    let lines = precheck.and_then(|c| c.lines.as_deref()).unwrap_or(&[]);
                    let only = match reach {
                        Reach::Nothing => {
                            return settled(MutantStatus::NotCovered, not_covered_detail(lines))
                        }
                        Reach::Tests(selected) => Some(selected),
                        Reach::Everything => whole_suite.only.clone(),
                    };
                    let tests = selected_functions(&only, static_tests);
                    let request = RunRequest {
                        source,
                        only,
                        ..whole_suite.clone()
                    };
                    match self.run_judged(&request, &tests).await {
                        Ok(run) => {
                            let status = mutant_status(&run);
                            if status == MutantStatus::Survived && uncovered {
                                MutantRun::Settled(
                                    MutantStatus::NotCovered,
                                    not_covered_detail(lines),
                                    run.wall_ms,
                                )
                            } else if status.is_killed() {
                                MutantRun::Kill {
                                    status,
                                    detail: run.detail,
                                    wall_ms: run.wall_ms,
                                    only: request.only,
                                }
                            } else {
                                MutantRun::Settled(status, run.detail, run.wall_ms)
                            }
                        }
                        Err(err) => settled(MutantStatus::Excluded, err.to_string()),
                    }
                }
            });
        let runs = join_all(runs).await;
        let original = RunRequest {
            source: input.code.clone(),
            ..whole_suite
        };
        let (outcomes, controls) = self.confirm_kills(runs, &original, static_tests).await;
        MutantOutcomes {
            outcomes,
            controls,
            selected_by_coverage: selecting,
            timeout_s,
            notes,
        }
    }

    /// Run each distinct control once — `original`, the mutant runs' request with the
    /// original's source, restricted to a kill's selection: nothing but the code under test
    /// differs, so a test cannot tell a control from a mutant run (a control of only the tests
    /// that ran would have a shorter `request.session.items`; one with tamper checks, another
    /// runner plugin state). A kill stands if its control passes, is `Unconfirmed` if the
    /// original fails too, and is excluded if the control could not run.
    async fn confirm_kills(
        &self,
        runs: Vec<MutantRun>,
        original: &RunRequest,
        static_tests: &BTreeSet<String>,
    ) -> (Vec<(MutantStatus, String, f64)>, usize) {
        let mut selections: Vec<&Option<Vec<String>>> = Vec::new();
        let mut index_of: HashMap<&Option<Vec<String>>, usize> = HashMap::new();
        for run in &runs {
            if let MutantRun::Kill { only, .. } = run {
                index_of.entry(only).or_insert_with(|| {
                    selections.push(only);
                    selections.len() - 1
                });
            }
        }
        let verdicts = join_all(selections.iter().map(|&only| async move {
            let control = RunRequest {
                only: only.clone(),
                ..original.clone()
            };
            self.run_judged(&control, &selected_functions(only, static_tests))
                .await
        }))
        .await;
        let outcomes = runs
            .iter()
            .map(|run| match run {
                MutantRun::Settled(status, detail, wall_ms) => (*status, detail.clone(), *wall_ms),
                MutantRun::Kill {
                    status,
                    detail,
                    wall_ms,
                    only,
                } => match &verdicts[index_of[only]] {
                    Ok(original) if original.passed() => (*status, detail.clone(), *wall_ms),
                    Ok(original) => (
                        MutantStatus::Unconfirmed,
                        format!(
                            "{detail}; not credited: run the same way, the original fails too \
                             ({})",
                            original.detail
                        ),
                        *wall_ms,
                    ),
                    Err(err) => (
                        MutantStatus::Excluded,
                        format!("{detail}; the kill could not be confirmed: {err}"),
                        *wall_ms,
                    ),
                },
            })
            .collect();
        (outcomes, selections.len())
    }
}

/// The suite the mutant runs use: the node ids selected (`None`: every test) and the test
/// functions a run of them must see run.
#[derive(Clone, Copy)]
struct MutantSuite<'a> {
    selection: &'a Option<Vec<String>>,
    functions: &'a BTreeSet<String>,
}

/// Why a baseline makes a suite invalid under `failing_tests: invalidate`, if it does.
fn strict_invalid_reason(baseline: &JudgedRun) -> Option<String> {
    if !baseline.passed() {
        return Some(format!(
            "the tests do not pass on the code under test: {}",
            baseline.detail
        ));
    }
    if !baseline.violations.is_empty() {
        return Some(format!(
            "the tests attempted what the sandbox forbids: {}",
            baseline.violations.join(", ")
        ));
    }
    None
}

/// Under `failing_tests: prune`: the baseline's failing cases and repeated tests removed, or
/// why the whole suite is invalid (a violation, or a run that failed as a whole).
fn prune_baseline(
    reply: &RunReply,
    baseline: &JudgedRun,
    tests: &PythonSource,
) -> Result<Pruning, String> {
    if !baseline.violations.is_empty() {
        return Err(format!(
            "the tests attempted what the sandbox forbids: {}",
            baseline.violations.join(", ")
        ));
    }
    let cases = reply.report.as_ref().map_or(&[][..], |r| &r.tests[..]);
    let mut pruning = Pruning::of(cases);
    if !baseline.passed() {
        let failing = failing_cases(reply, baseline).ok_or_else(|| {
            format!(
                "the tests do not pass on the code under test: {}",
                baseline.detail
            )
        })?;
        pruning.remove(failed_at_baseline(&failing));
    }
    let repeats = duplicates_in(&pruning.kept, &duplicate_functions(tests));
    pruning.remove(repeats);
    Ok(pruning)
}

/// A pruned suite with nothing left: invalid, with what was pruned and why.
fn invalid_when_all_pruned(mut report: ScoreReport, pruning: Option<Pruning>) -> ScoreReport {
    let pruning = pruning.expect("a pruned suite");
    let reasons: Vec<String> = pruning
        .pruned
        .iter()
        .take(3)
        .map(|p| format!("{} ({})", p.name, p.detail))
        .collect();
    report.invalid_reason = Some(format!(
        "no test passes reliably on the code under test: all {} pruned, e.g. {}",
        pruning.collected,
        reasons.join("; ")
    ));
    record_pruning(&mut report, pruning);
    report
}

fn record_pruning(report: &mut ScoreReport, pruning: Pruning) {
    report.pass_fraction = Some(pruning.pass_fraction());
    report.kept_tests = Some(pruning.kept);
    report.pruned_tests = Some(pruning.pruned);
}

/// A mutant's run before its kill, if any, is confirmed.
enum MutantRun {
    /// Status, detail, wall ms: final.
    Settled(MutantStatus, String, f64),
    /// A failing run and its selection (`None`: the whole suite), whose run on the original
    /// must pass for it to count.
    Kill {
        status: MutantStatus,
        detail: String,
        wall_ms: f64,
        only: Option<Vec<String>>,
    },
}

/// The test functions a run of `only` (node ids; `None`: the whole suite) must see run.
fn selected_functions(
    only: &Option<Vec<String>>,
    static_tests: &BTreeSet<String>,
) -> BTreeSet<String> {
    match only {
        Some(nodeids) => nodeids
            .iter()
            .map(|nodeid| function_name(nodeid).to_string())
            .collect(),
        None => static_tests.clone(),
    }
}

fn not_covered_detail(lines: &[usize]) -> String {
    let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
    match lines.as_slice() {
        [line] => format!("no test runs line {line}"),
        _ => format!("no test runs lines {}", lines.join(", ")),
    }
}

/// A timed-out run that spent less than this share of its wall time on the CPU was starved (a
/// loaded machine), not looping: a mutant that loops burns CPU for as long as it runs.
const STARVED_CPU_SHARE: f64 = 0.5;

/// Whether a timeout may be the machine's load rather than the mutant: it must be seen again
/// before it counts as a kill.
fn timeout_needs_confirmation(run: &JudgedRun) -> bool {
    run.verdict == Verdict::TimedOut && run.cpu_ms < STARVED_CPU_SHARE * run.wall_ms
}

/// A run of `source` (the original, a variant or a mutant) under `input`'s tests; seed 0 keeps
/// the file's test order, any other seed shuffles it.
fn run_request(
    input: &ScoreInput,
    limits: &RunLimits,
    source: String,
    seed: u64,
    timeout_s: f64,
) -> RunRequest {
    RunRequest {
        op: "run",
        id: String::new(),
        module: input.module.clone(),
        source,
        tests: input.tests.clone(),
        test_file: format!("test_{}.py", input.module),
        seed,
        shuffle: seed != 0,
        timeout_s,
        tracebacks: false,
        stop_on_first_failure: false,
        run_first: Vec::new(),
        only: None,
        coverage: false,
        tamper_checks: true,
        test_budget_s: None,
        limits: limits.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_starved_timeout_is_run_again() {
        let run = |verdict, cpu_ms, wall_ms| JudgedRun {
            verdict,
            detail: String::new(),
            tests: Default::default(),
            violations: Vec::new(),
            cpu_ms,
            wall_ms,
        };
        // A loop burns CPU for as long as it runs: a kill at once.
        assert!(!timeout_needs_confirmation(&run(
            Verdict::TimedOut,
            240.0,
            260.0
        )));
        // 5 ms of CPU in 300 ms of wall time: the machine was busy elsewhere.
        assert!(timeout_needs_confirmation(&run(
            Verdict::TimedOut,
            5.0,
            300.0
        )));
        assert!(!timeout_needs_confirmation(&run(
            Verdict::Failed,
            5.0,
            300.0
        )));
        assert!(!timeout_needs_confirmation(&run(
            Verdict::Passed,
            5.0,
            300.0
        )));
    }

    #[test]
    fn module_names() {
        assert!(check_module_name("calc").is_ok());
        assert!(check_module_name("_private2").is_ok());
        for bad in ["2x", "a-b", "", "pytest", "test_calc", "a.b"] {
            assert!(check_module_name(bad).is_err(), "{bad}");
        }
    }
}
