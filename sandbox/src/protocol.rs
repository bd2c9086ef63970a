//! The job protocol between Rust and the Python runner (version [`PROTOCOL_VERSION`]).
//!
//! Newline-delimited JSON over the runner's stdin/stdout, one request answered by one reply, in
//! order. The runner greets with [`Hello`]. Described for humans in `docs/protocol.md`; the
//! runner's side is `runner/unitforge_runner.py`. Bump the version on any incompatible change:
//! it is part of every cache key and of the sandbox image tag.

use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 3;

/// Resource limits applied to each forked run (rlimits in the child).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunLimits {
    pub memory_mb: u64,
    pub file_size_mb: u64,
    pub open_files: u64,
    /// RLIMIT_NPROC; 0 leaves it unset (it does not bind root, so it matters in containers).
    pub processes: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            memory_mb: 1024,
            file_size_mb: 16,
            open_files: 256,
            processes: 0,
        }
    }
}

/// Run one pytest session of `tests` against `source` installed as module `module`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRequest {
    pub op: &'static str,
    pub id: String,
    pub module: String,
    pub source: String,
    pub tests: String,
    pub test_file: String,
    pub seed: u64,
    pub shuffle: bool,
    pub timeout_s: f64,
    /// Full tracebacks (baseline run) or one-line failures (mutant runs, ~8× cheaper).
    pub tracebacks: bool,
    /// Stop at the first failing test (pytest's `maxfail=1`): enough to kill a mutant.
    pub stop_on_first_failure: bool,
    /// Node ids to run first, in this order (the fastest baseline tests, for mutant runs).
    pub run_first: Vec<String>,
    /// Run only these node ids (a coverage-guided mutant run, a kill's control run); `None`:
    /// every collected test.
    pub only: Option<Vec<String>>,
    /// Record which lines of the code under test each test runs (see [`LineCoverage`]).
    pub coverage: bool,
    /// Check that nothing replaced pytest's or the runner's functions (after each test and at
    /// the end). Off only in mutant runs and their controls: a forged pass there only costs the
    /// suite a kill, and a failure counts only once its control passes on the original.
    pub tamper_checks: bool,
    /// Time budget of each test's call phase; a test past it is stopped and reported `timeout`.
    pub test_budget_s: Option<f64>,
    pub limits: RunLimits,
}

/// Compile the original and each mutant and compare their bytecode.
#[derive(Debug, Clone, Serialize)]
pub struct EquivalenceRequest {
    pub op: &'static str,
    pub id: String,
    pub original: String,
    pub mutants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Hello {
    pub v: u32,
    pub pid: u32,
    pub python: String,
    pub pytest: String,
}

/// How a run ended, as the runner (the trusted parent) saw it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The child sent a report and exited.
    Completed,
    /// The wall timeout passed; the child's process group was killed.
    Timeout,
    /// The child exited without a readable report (crash, `os._exit`, killed by a limit).
    NoReport,
    /// The runner refused the request.
    BadRequest,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RunReply {
    pub status: RunStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub cpu_s: Option<f64>,
    pub wall_s: f64,
    #[serde(default)]
    pub max_rss_kb: Option<u64>,
    #[serde(default)]
    pub report: Option<ChildReport>,
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub output_truncated: bool,
    /// Container executor: processes still alive after the child was reaped (then killed).
    #[serde(default)]
    pub stray_processes: Option<u32>,
}

/// What the child said about its session. Untrusted: it was written by a process that ran the
/// tests, so `outcome.rs` checks it before believing it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct ChildReport {
    #[serde(default)]
    pub tests: Vec<TestReport>,
    #[serde(default)]
    pub collect_errors: Vec<CollectError>,
    #[serde(default)]
    pub cut_error: Option<String>,
    #[serde(default)]
    pub session_error: Option<String>,
    #[serde(default)]
    pub finished: bool,
    #[serde(default)]
    pub violations: Vec<String>,
    #[serde(default)]
    pub tampered: Vec<String>,
    /// Present in a coverage run.
    #[serde(default)]
    pub coverage: Option<LineCoverage>,
}

/// The lines of the code under test a coverage run saw run, 1-based. Untrusted like the rest of
/// the report: it only narrows which tests a mutant run includes, and every kill is confirmed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct LineCoverage {
    /// False when the run started a thread (threads are not traced).
    pub complete: bool,
    /// Lines any test may depend on: the import, collection, wider fixtures, teardown.
    pub shared: Vec<usize>,
    /// Lines run while each test was set up or called, by node id.
    pub tests: std::collections::BTreeMap<String, Vec<usize>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
    Xfailed,
    Xpassed,
    /// Stopped after its per-test time budget.
    Timeout,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TestReport {
    pub nodeid: String,
    pub outcome: TestOutcome,
    #[serde(default)]
    pub duration_s: f64,
    /// What failed, as the test's author needs it: the test file's and the code under test's
    /// frames and the exception with pytest's explanation (never the runner's frames).
    #[serde(default)]
    pub message: String,
    /// A failing test's evidence for oracle repair (runs with tracebacks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<FailureEvidence>,
}

/// What a failing test's run showed, for oracle repair (`repair.rs`): where in the test file it
/// failed, the failing comparison's two sides where they are Python literals, and the builtin
/// exception that escaped. Reported by the child, so a hint and nothing more: a repaired suite
/// counts only once it passes in the sandbox.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct FailureEvidence {
    /// The innermost line of the test file in the failure's traceback.
    #[serde(default)]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared: Option<Comparison>,
    /// The type of the exception that ended the test, when it is a builtin one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised: Option<String>,
}

/// A failing `assert left OP right`: each side's `repr` when it reads back as an equal literal.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Comparison {
    pub op: String,
    #[serde(default)]
    pub line: Option<usize>,
    #[serde(default)]
    pub left: Option<String>,
    #[serde(default)]
    pub right: Option<String>,
}

impl TestReport {
    /// `test_x` or `TestClass::test_x`, without the file and the parametrize id.
    pub fn function_name(&self) -> &str {
        function_name(&self.nodeid)
    }
}

/// The test function a node id names: `test_x` or `TestClass::test_x`, without the file and the
/// parametrize id.
pub fn function_name(nodeid: &str) -> &str {
    let without_file = nodeid.split_once("::").map_or(nodeid, |(_, rest)| rest);
    without_file.split('[').next().unwrap_or(without_file)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CollectError {
    pub nodeid: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EquivalenceResult {
    pub compiles: bool,
    pub equivalent: bool,
    /// Lines of the original whose instructions the mutant changes; `None` when the change
    /// cannot be pinned to lines (then every test is a candidate to kill it).
    #[serde(default)]
    pub lines: Option<Vec<usize>>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EquivalenceReply {
    #[serde(default)]
    pub results: Vec<EquivalenceResult>,
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_name_strips_file_and_params() {
        let report = |nodeid: &str| TestReport {
            nodeid: nodeid.into(),
            outcome: TestOutcome::Passed,
            duration_s: 0.0,
            message: String::new(),
            evidence: None,
        };
        assert_eq!(report("test_m.py::test_a[1-2]").function_name(), "test_a");
        assert_eq!(
            report("test_m.py::TestX::test_b").function_name(),
            "TestX::test_b"
        );
        assert_eq!(report("test_m.py::test_c[a::b]").function_name(), "test_c");
    }
}
