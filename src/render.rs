//! Human-readable tables for the CLI. JSON output never goes through here.

use std::fmt::Write;
use std::path::Path;

use unitforge_sandbox::mutant::{Mutant, MutantCensus};
use unitforge_sandbox::outcome::MutantStatus;
use unitforge_sandbox::prune::pruned_at_baseline;
use unitforge_sandbox::score::ScoreReport;
use unitforge_trainer::deliver::{Delivery, Origin};
use unitforge_trainer::eval::compare::Comparison;
use unitforge_trainer::eval::delivered::DeliveredReport;
use unitforge_trainer::eval::interval::with_interval;
use unitforge_trainer::eval::report::{EvalReport, SuiteFigures};

pub fn score_table(report: &ScoreReport, code: &Path, tests: &Path) -> String {
    let mut out = String::new();
    let env = &report.environment;
    let _ = writeln!(
        out,
        "unitforge score  {} ← {}   ({} executor, Python {}, pytest {})\n",
        code.display(),
        tests.display(),
        env.executor,
        env.python,
        env.pytest
    );
    let m = &report.mutants;
    let test_count = report.baseline.as_ref().map_or(0, |b| b.tests.len());
    let validity_note = match (&report.invalid_reason, &report.kept_tests) {
        (Some(reason), _) => format!("INVALID: {reason}"),
        (None, Some(kept)) => format!(
            "{} of {test_count} tests kept (pass fraction {:.3}); the composite is discounted for the rest",
            kept.len(),
            report.pass_fraction.unwrap_or(0.0)
        ),
        (None, None) => format!("the suite passes on the code under test ({test_count} tests)"),
    };
    let rows = [
        ("validity", report.validity, validity_note),
        (
            "mutant_kill",
            report.mutant_kill,
            format!(
                "{}/{} scored mutants killed ({} by timeout); {} not covered, {} unconfirmed; {} equivalent, {} unviable, {} excluded",
                m.killed + m.timeout,
                m.scored,
                m.timeout,
                m.not_covered,
                m.unconfirmed,
                m.equivalent,
                m.unviable,
                m.excluded
            ),
        ),
        (
            "speed",
            report.speed,
            format!(
                "suite CPU {:.1} ms (median of {} runs, runner overhead {:.1} ms removed)",
                report.timing.suite_cpu_ms,
                timed_runs(report),
                report.timing.overhead_ms
            ),
        ),
        (
            "stability",
            report.stability,
            format!(
                "{}/{} runs agree with the first (shuffled order, new seeds)",
                1 + report.stability_runs.iter().filter(|r| r.matches_first).count(),
                1 + report.stability_runs.len()
            ),
        ),
        (
            "robustness",
            report.robustness,
            format!(
                "{}/{} variants of the code under test pass",
                report.variants.iter().filter(|v| v.passed).count(),
                report.variants.len()
            ),
        ),
        ("composite", report.composite, String::new()),
    ];
    for (name, value, note) in rows {
        let _ = writeln!(out, "  {name:<12} {value:>6.3}   {note}");
    }
    if let Some(pruned) = report.pruned_tests.as_ref().filter(|p| !p.is_empty()) {
        let _ = writeln!(out, "\nPruned tests ({}), not scored:", pruned.len());
        for test in pruned {
            let reason = serde_json::to_value(test.reason)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let _ = writeln!(out, "  {reason:<9} {}  {}", test.name, test.detail);
        }
    } else if let Some(baseline) = &report.baseline {
        let failing: Vec<_> = baseline
            .tests
            .iter()
            .filter(|t| t.outcome != unitforge_sandbox::protocol::TestOutcome::Passed)
            .collect();
        if !failing.is_empty() {
            let _ = writeln!(out, "\nTests not passing on the code under test:");
            for test in failing {
                let last = test
                    .message
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                let _ = writeln!(out, "  {:?}  {}  {}", test.outcome, test.nodeid, last);
            }
        }
    }
    let survivors: Vec<_> = m
        .results
        .iter()
        .filter(|r| r.status.is_scored() && !r.status.is_killed())
        .collect();
    if !survivors.is_empty() {
        let _ = writeln!(
            out,
            "\nSurviving mutants ({}): strengthen the tests to catch these",
            survivors.len()
        );
        for result in survivors {
            let mutant = &result.mutant;
            let why = match result.status {
                MutantStatus::NotCovered => "  (no test runs this line)",
                MutantStatus::Unconfirmed => "  (failed, but the original fails the same way)",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  {}  line {:>3}:{:<3} {:<22} {}{why}",
                mutant.id,
                mutant.line,
                mutant.column,
                mutant.operator.name(),
                mutant.diff
            );
        }
    }
    let failed_variants: Vec<_> = report.variants.iter().filter(|v| !v.passed).collect();
    if !failed_variants.is_empty() {
        let _ = writeln!(
            out,
            "\nVariants the suite fails on (it depends on names or text, not behaviour):"
        );
        for variant in failed_variants {
            let _ = writeln!(out, "  {}  {}", variant.id, variant.detail);
        }
    }
    if !report.exclusions.is_empty() {
        let _ = writeln!(out, "\nExclusions:");
        for exclusion in &report.exclusions {
            let _ = writeln!(out, "  {exclusion}");
        }
    }
    let _ = writeln!(out, "\nscored in {:.0} ms", report.timing.total_ms);
    out
}

/// Runs the speed figure is the median of: a pruned suite's baseline ran tests it does not keep,
/// so it counts only when no other run was timed (see `tally.rs`).
fn timed_runs(report: &ScoreReport) -> usize {
    let baseline_ran_pruned = report
        .pruned_tests
        .as_deref()
        .is_some_and(pruned_at_baseline);
    let later = report.stability_runs.len();
    later + usize::from(!baseline_ran_pruned || later == 0)
}

pub fn mutant_list(mutants: &[Mutant], census: &MutantCensus) -> String {
    let mut out = String::new();
    for mutant in mutants {
        let _ = writeln!(
            out,
            "{}  line {:>3}:{:<3} {:<22} {}",
            mutant.id,
            mutant.line,
            mutant.column,
            mutant.operator.name(),
            mutant.diff
        );
    }
    let _ = writeln!(
        out,
        "\n{} mutants ({} candidates; dropped {} unparsable, {} duplicate, {} over the cap)",
        mutants.len(),
        census.candidates,
        census.unparsable,
        census.duplicates,
        census.sampled_out
    );
    out
}

/// The table of `eval mutation | speed | all`: the model's suites beside the reference and
/// trivial baselines, as written and pruned, each mean with its 95 % interval over rows.
pub fn eval_table(report: &EvalReport, mutation: bool, speed: bool) -> String {
    let mut out = format!(
        "unitforge eval  {} on {} ({} rows, {} suite{} per row, {} executor)\n\n",
        report.model,
        report.data,
        report.rows,
        report.samples_per_row,
        if report.samples_per_row == 1 { "" } else { "s" },
        report.executor
    );
    let strict = [&report.figures, &report.reference, &report.trivial];
    let table = |columns: [&SuiteFigures; 3], out: &mut String, mutation: bool, speed: bool| {
        let row = |name: &str, value: &dyn Fn(&SuiteFigures) -> String| {
            let cells: Vec<String> = columns
                .iter()
                .map(|f| format!("{:>24}", value(f)))
                .collect();
            format!("  {name:<26}{}\n", cells.join(""))
        };
        let pct = |v: f64| format!("{:.1} %", 100.0 * v);
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or("–".to_string(), |v| format!("{v:.digits$}"))
        };
        out.push_str(&row("suites scored", &|f| {
            if f.excluded > 0 {
                format!("{} (+{} out)", f.suites, f.excluded)
            } else {
                f.suites.to_string()
            }
        }));
        if mutation {
            out.push_str(&row("valid pytest", &|f| pct(f.valid_pytest_rate)));
            out.push_str(&row("pass on their code, %", &|f| {
                with_interval(f.pass_rate, f.pass_rate_ci, 100.0, 1)
            }));
            out.push_str(&row("mean kill rate", &|f| {
                with_interval(f.mean_kill_rate, f.mean_kill_rate_ci, 1.0, 3)
            }));
            out.push_str(&row("median kill rate", &|f| {
                format!("{:.3}", f.median_kill_rate)
            }));
            out.push_str(&row("best-of-K kill rate", &|f| {
                format!("{:.3}", f.best_of_k_kill_rate)
            }));
            out.push_str(&row("mean composite", &|f| {
                with_interval(f.mean_composite, f.mean_composite_ci, 1.0, 3)
            }));
        }
        if speed {
            out.push_str(&row("passing suites", &|f| f.passing.to_string()));
            out.push_str(&row("suite CPU ms, mean", &|f| opt(f.mean_suite_cpu_ms, 2)));
            out.push_str(&row("suite CPU ms, median", &|f| {
                opt(f.median_suite_cpu_ms, 2)
            }));
            out.push_str(&row("speed reward", &|f| opt(f.mean_speed, 3)));
            out.push_str(&row("stability", &|f| opt(f.mean_stability, 3)));
            out.push_str(&row("flaky fraction", &|f| opt(f.flaky_fraction, 3)));
        }
    };
    let header: Vec<String> = ["model", "reference", "trivial"]
        .iter()
        .map(|n| format!("{n:>24}"))
        .collect();
    out.push_str(&format!("  {:<26}{}\n", "as written", header.join("")));
    table(strict, &mut out, mutation, speed);
    if let Some(pruned) = &report.pruned {
        out.push_str(&format!("\n  {:<26}{}\n", "pruned", header.join("")));
        out.push_str(
            "  (failing, flaky and repeated tests removed; \"pass\": something was kept)\n",
        );
        table(
            [&pruned.figures, &pruned.reference, &pruned.trivial],
            &mut out,
            mutation,
            false,
        );
    }
    out.push_str("\n  [low, high]: 95 % bootstrap interval over rows\n");
    out
}

/// The paired comparison of checkpoints on the same held-out rows (`eval compare`): each
/// other report's per-row means less the base's, with 95 % intervals.
pub fn comparison_table(rows: &[Comparison]) -> String {
    let mut out = String::new();
    for comparison in rows {
        let _ = writeln!(
            out,
            "{} − {}  ({} rows in common)",
            comparison.other, comparison.base, comparison.rows
        );
        for figure in &comparison.figures {
            let _ = writeln!(
                out,
                "  {:<28} {:>+8.4}  [{:+.4}, {:+.4}]{}",
                figure.name,
                figure.difference,
                figure.interval.low,
                figure.interval.high,
                if figure.interval.excludes_zero() {
                    "  (excludes 0)"
                } else {
                    ""
                }
            );
        }
    }
    out
}

/// The report of `generate --deliver`: what was written, what was kept, pruned and repaired,
/// the disagreements between the model and the code, and the survivors.
pub fn delivery(delivery: &Delivery, out: &Path) -> String {
    let mut text = String::new();
    let tried = delivery.candidates.len();
    let Some(score) = &delivery.score else {
        text += &format!(
            "No suite for `{}` kept a passing test ({tried} tried); nothing written.\n",
            delivery.module
        );
        for (i, c) in delivery.candidates.iter().enumerate() {
            let why = c
                .invalid
                .clone()
                .or_else(|| c.excluded.clone())
                .unwrap_or_else(|| "every test failed".into());
            text += &format!("  candidate {i} ({}): {why}\n", origin(&c.origin));
        }
        return text;
    };
    let chosen = delivery.chosen.expect("a delivery has its candidate");
    let kept = score.suite.tests.len();
    text += &format!(
        "Wrote {} — {kept} tests for `{}`, passing as written; kill rate {:.1} % ({} of {} mutants), composite {:.3}.\n",
        out.display(),
        delivery.module,
        100.0 * score.mutant_kill,
        score.mutants.killed + score.mutants.timeout,
        score.mutants.scored,
        score.composite,
    );
    text += &format!(
        "From candidate {chosen} of {tried} ({}); generation {:.1} s, sandbox {:.1} s.\n",
        origin(&delivery.candidates[chosen].origin),
        delivery.generation_s,
        delivery.sandbox_s
    );
    if !delivery.pruned.is_empty() {
        text += "\nPruned (removed from the file):\n";
        for p in &delivery.pruned {
            let detail = if p.detail.is_empty() {
                String::new()
            } else {
                format!(" — {}", p.detail)
            };
            text += &format!("  {} [{:?}]{detail}\n", p.name, p.reason);
        }
    }
    if !delivery.disagreements.is_empty() {
        text += "\nRepaired: the model expected one thing, the code does another (a wrong test, or a bug):\n";
        for d in &delivery.disagreements {
            text += &format!(
                "  {} line {}: the model expected {}, the code returns {}\n",
                d.repair.test, d.repair.line, d.repair.old, d.repair.new
            );
            if let Some(diagnosis) = &d.diagnosis {
                for line in diagnosis.lines().take(8) {
                    text += &format!("      model: {line}\n");
                }
            }
        }
    }
    if !delivery.survivors.is_empty() {
        text += &format!(
            "\nSurviving mutants ({}): changes no test notices\n",
            delivery.survivors.len()
        );
        for s in delivery.survivors.iter().take(10) {
            text += &format!("  {s}\n");
        }
        if delivery.survivors.len() > 10 {
            text += &format!("  … and {} more\n", delivery.survivors.len() - 10);
        }
    }
    text
}

fn origin(origin: &Origin) -> String {
    match origin {
        Origin::Sampled { sample } => format!("sample {}", sample + 1),
        Origin::Repaired { of } => format!("oracle repair of candidate {of}"),
        Origin::Fixed { of, round } => format!("fix round {round} of candidate {of}"),
    }
}

/// `eval deliver`: each step's share of rows with a valid suite and mean kill rate.
pub fn delivered_table(report: &DeliveredReport) -> String {
    let mut text = format!(
        "Delivered figures: {} ({} rows, {} samples, {} fix rounds; 95 % intervals over rows)\n\n",
        report.model, report.rows, report.samples, report.fix_rounds
    );
    text += "| step | rows with a valid suite | mean kill rate |\n|---|---|---|\n";
    for step in &report.steps {
        text += &format!(
            "| {} | {} % | {} |\n",
            step.step,
            with_interval(step.valid_rows, step.valid_rows_ci, 100.0, 1),
            with_interval(step.mean_kill_rate, step.mean_kill_rate_ci, 1.0, 3)
        );
    }
    text += &format!(
        "\nPer row: generation {:.1} s, sandbox {:.1} s.\n",
        report.mean_generation_s, report.mean_sandbox_s
    );
    text
}
