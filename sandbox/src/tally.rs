//! Turning judged runs into a report's sections and rewards: stability and speed from the
//! reseeded runs, robustness from the variant runs, the kill rate from the mutant runs. A run
//! the infrastructure failed is excluded and counted here, never scored.

use std::collections::BTreeSet;

use crate::mutant::Mutant;
use crate::outcome::{judge_run, JudgedRun, MutantStatus};
use crate::protocol::RunReply;
use crate::protocol::TestOutcome;
use crate::prune::Pruning;
use crate::report::{BaselineRun, MutantResult, ScoreReport, StabilityRun, VariantResult};
use crate::rewards::{median, speed_reward, RewardConfig};
use crate::variant::Variant;
use crate::worker::InfraError;

/// What `run_mutants` found: per mutant (status, detail, wall ms), in order.
pub(crate) struct MutantOutcomes {
    pub(crate) outcomes: Vec<(MutantStatus, String, f64)>,
    pub(crate) timeout_s: f64,
    /// Control runs made to confirm kills.
    pub(crate) controls: usize,
    pub(crate) selected_by_coverage: bool,
    pub(crate) notes: Vec<String>,
}

/// Stability and speed from the baseline and the reseeded, shuffled runs (judged). With `kept`
/// (a pruned suite), a run matches when every kept case passed in it, and the baseline's CPU
/// time counts only when it ran nothing but kept cases (or no other run could be timed).
pub(crate) fn tally_stability(
    report: &mut ScoreReport,
    baseline: &JudgedRun,
    runs: Vec<(u64, Result<JudgedRun, InfraError>)>,
    kept: Option<&Pruning>,
    overhead_ms: f64,
    config: &RewardConfig,
) {
    let mut cpu = Vec::new();
    let mut matching = 1usize;
    for (seed, run) in runs {
        match run {
            Ok(run) => {
                let matches_first = match kept {
                    Some(pruning) => pruning
                        .kept
                        .iter()
                        .all(|nodeid| run.tests.get(nodeid) == Some(&TestOutcome::Passed)),
                    None => run.verdict == baseline.verdict && run.tests == baseline.tests,
                };
                matching += usize::from(matches_first);
                cpu.push(run.cpu_ms);
                report.stability_runs.push(StabilityRun {
                    seed,
                    shuffled: true,
                    verdict: run.verdict,
                    matches_first,
                    cpu_ms: run.cpu_ms,
                });
            }
            Err(err) => {
                report.infra_errors += 1;
                report
                    .exclusions
                    .push(format!("stability run {seed} excluded: {err}"));
            }
        }
    }
    let runs_counted = cpu.len() + 1;
    if kept.is_none_or(|p| !p.pruned_at_baseline()) || cpu.is_empty() {
        cpu.insert(0, baseline.cpu_ms);
    }
    report.stability = matching as f64 / runs_counted as f64;
    report.timing.suite_cpu_ms = (median(&cpu) - overhead_ms).max(0.0);
    report.speed = speed_reward(report.timing.suite_cpu_ms, config.speed.reference_ms);
}

/// Robustness: the share of variants on which the suite passes.
pub(crate) fn tally_variants(
    report: &mut ScoreReport,
    variants: &[Variant],
    replies: Vec<Result<RunReply, InfraError>>,
    static_tests: &BTreeSet<String>,
) {
    for (variant, reply) in variants.iter().zip(replies) {
        match reply.and_then(|r| judge_run(&r, static_tests)) {
            Ok(run) => report.variants.push(VariantResult {
                id: variant.id.clone(),
                rewrites: variant.rewrites.clone(),
                renamed: variant.renamed.clone(),
                passed: run.passed(),
                detail: run.detail,
            }),
            Err(err) => {
                report.infra_errors += 1;
                report
                    .exclusions
                    .push(format!("variant {} excluded: {err}", variant.id));
            }
        }
    }
    report.robustness = if report.variants.is_empty() {
        report
            .exclusions
            .push("no variant could be run; robustness counts as 1".into());
        1.0
    } else {
        report.variants.iter().filter(|v| v.passed).count() as f64 / report.variants.len() as f64
    };
}

/// Mutant counts and the kill rate.
pub(crate) fn tally_mutants(report: &mut ScoreReport, mutants: Vec<Mutant>, found: MutantOutcomes) {
    report.exclusions.extend(found.notes);
    let summary = &mut report.mutants;
    summary.timeout_s = found.timeout_s;
    summary.controls = found.controls;
    summary.selected_by_coverage = found.selected_by_coverage;
    for (mutant, (status, detail, wall_ms)) in mutants.into_iter().zip(found.outcomes) {
        match status {
            MutantStatus::Killed => summary.killed += 1,
            MutantStatus::Timeout => summary.timeout += 1,
            MutantStatus::Survived => summary.survived += 1,
            MutantStatus::NotCovered => summary.not_covered += 1,
            MutantStatus::Unconfirmed => summary.unconfirmed += 1,
            MutantStatus::Equivalent => summary.equivalent += 1,
            MutantStatus::Unviable => summary.unviable += 1,
            MutantStatus::Excluded => {
                summary.excluded += 1;
                report.infra_errors += 1;
                report.exclusions.push(format!(
                    "mutant {} excluded after a retry: {detail}",
                    mutant.id
                ));
            }
        }
        summary.results.push(MutantResult {
            mutant,
            status,
            detail,
            wall_ms,
        });
    }
    summary.scored = summary.killed
        + summary.timeout
        + summary.survived
        + summary.not_covered
        + summary.unconfirmed;
    report.mutant_kill = if summary.scored == 0 {
        report
            .exclusions
            .push("no mutant could be scored; mutant_kill counts as 0".into());
        0.0
    } else {
        (summary.killed + summary.timeout) as f64 / summary.scored as f64
    };
}

pub(crate) fn baseline_summary(reply: &RunReply, judged: &JudgedRun) -> BaselineRun {
    BaselineRun {
        verdict: judged.verdict,
        detail: judged.detail.clone(),
        tests: reply
            .report
            .as_ref()
            .map(|r| r.tests.clone())
            .unwrap_or_default(),
        violations: judged.violations.clone(),
        cpu_ms: judged.cpu_ms,
        wall_ms: judged.wall_ms,
        output: reply.output.clone(),
    }
}
