//! The score report: every reward with the evidence behind it — the baseline run, each mutant's
//! status, the stability and variant runs, timings, the environment, what was excluded and,
//! under pruned scoring, which tests were kept.
//! `score.rs` fills it in through `tally.rs`; the CLI, the service and the cache read it.

use serde::{Deserialize, Serialize};

use crate::mutant::{Mutant, MutantCensus};
use crate::outcome::{MutantStatus, Verdict};
use crate::protocol::TestReport;
use crate::prune::PrunedTest;
use crate::suite::SuiteFacts;
use crate::variant::Rewrite;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MutantResult {
    #[serde(flatten)]
    pub mutant: Mutant,
    pub status: MutantStatus,
    pub detail: String,
    pub wall_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MutantSummary {
    pub generated: usize,
    pub scored: usize,
    pub killed: usize,
    pub timeout: usize,
    pub survived: usize,
    /// Survivors found by coverage: no test runs a line they change (never run).
    #[serde(default)]
    pub not_covered: usize,
    /// Failing runs not credited: the same tests also fail on the original run the same way.
    #[serde(default)]
    pub unconfirmed: usize,
    /// Runs of the original that confirmed (or refuted) kills, one per distinct selection.
    #[serde(default)]
    pub controls: usize,
    /// Whether mutants ran with only the tests that reach them (coverage-guided and cheaper
    /// here), or each with the whole suite.
    #[serde(default)]
    pub selected_by_coverage: bool,
    pub equivalent: usize,
    pub unviable: usize,
    pub excluded: usize,
    /// Time limit of each mutant run, derived from the baseline.
    pub timeout_s: f64,
    pub census: MutantCensus,
    pub results: Vec<MutantResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineRun {
    pub verdict: Verdict,
    pub detail: String,
    pub tests: Vec<TestReport>,
    pub violations: Vec<String>,
    pub cpu_ms: f64,
    pub wall_ms: f64,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StabilityRun {
    pub seed: u64,
    pub shuffled: bool,
    pub verdict: Verdict,
    pub matches_first: bool,
    pub cpu_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VariantResult {
    pub id: String,
    pub rewrites: Vec<Rewrite>,
    pub renamed: Vec<String>,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Timing {
    /// Median CPU time of the runs on the original, less the runner's per-run overhead.
    pub suite_cpu_ms: f64,
    pub overhead_ms: f64,
    /// Wall time of the whole score.
    pub total_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Environment {
    pub executor: String,
    pub protocol: u32,
    pub python: String,
    pub pytest: String,
}

/// A score and everything that went into it. The six rewards are the top-level numbers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreReport {
    pub validity: f64,
    pub mutant_kill: f64,
    pub speed: f64,
    pub stability: f64,
    pub robustness: f64,
    pub composite: f64,
    pub valid: bool,
    pub invalid_reason: Option<String>,
    pub module: String,
    pub suite: SuiteFacts,
    pub baseline: Option<BaselineRun>,
    pub mutants: MutantSummary,
    pub stability_runs: Vec<StabilityRun>,
    pub variants: Vec<VariantResult>,
    /// What was left out of a reward, and why.
    pub exclusions: Vec<String>,
    /// Runs excluded because the infrastructure failed twice (such a score is never cached).
    pub infra_errors: usize,
    pub timing: Timing,
    pub environment: Environment,
    /// Under `failing_tests: prune` only (absent otherwise): the node ids scored, in the
    /// baseline's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_tests: Option<Vec<String>>,
    /// Under `prune`: the test cases removed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_tests: Option<Vec<PrunedTest>>,
    /// Under `prune`: kept cases / collected cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_fraction: Option<f64>,
}
