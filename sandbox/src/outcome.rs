//! Outcomes: what one run of a suite means, and what became of each mutant.
//!
//! The child's report is written by a process that ran untrusted code, so [`judge_run`] only
//! believes a pass when everything agrees: the runner saw the child finish, the report says the
//! session finished, nothing tampered with pytest or the runner, the exit status matches the
//! report, and every test function found statically actually ran. Skipped, xfailed, errored
//! and zero-collected tests are never passes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::protocol::{RunReply, RunStatus, TestOutcome};
use crate::worker::InfraError;

/// SIGXCPU: the child used up its CPU-time limit, which is a timeout by another clock.
const SIGXCPU: i32 = 24;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every test ran and passed, and the report is consistent.
    Passed,
    /// Some test failed, errored, was skipped or xfailed, or collection failed.
    Failed,
    /// The run hit its wall-clock or CPU limit.
    TimedOut,
    /// The child ended without a report (crash, `os._exit`, a limit's signal).
    Crashed,
    /// The code under test raised while being imported.
    CutError,
    /// The report cannot be believed: tampering, or a contradiction with what was observed.
    Untrustworthy,
}

/// One judged run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgedRun {
    pub verdict: Verdict,
    /// Why, in a sentence, when the verdict is not `Passed`.
    pub detail: String,
    /// Per-test outcomes as reported (empty without a report).
    pub tests: BTreeMap<String, TestOutcome>,
    /// Sandbox policy violations the tests attempted.
    pub violations: Vec<String>,
    pub cpu_ms: f64,
    pub wall_ms: f64,
}

impl JudgedRun {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }
}

/// Judge a runner reply against the test functions the suite statically contains.
pub fn judge_run(
    reply: &RunReply,
    static_tests: &BTreeSet<String>,
) -> Result<JudgedRun, InfraError> {
    let mut judged = JudgedRun {
        verdict: Verdict::Passed,
        detail: String::new(),
        tests: BTreeMap::new(),
        violations: Vec::new(),
        cpu_ms: reply.cpu_s.unwrap_or(0.0) * 1000.0,
        wall_ms: reply.wall_s * 1000.0,
    };
    let mut set = |verdict, detail: String| {
        judged.verdict = verdict;
        judged.detail = detail;
    };
    if let Some(stray @ 1..) = reply.stray_processes {
        // Only a process started without an audit event can outlive its run; whatever the
        // report says, this run cannot be trusted.
        set(
            Verdict::Untrustworthy,
            format!("the run left {stray} process(es) running"),
        );
        return Ok(judged);
    }
    match reply.status {
        RunStatus::BadRequest => {
            return Err(InfraError::Runner("the runner refused the request".into()))
        }
        RunStatus::Timeout => {
            set(
                Verdict::TimedOut,
                format!("timed out after {:.2} s", reply.wall_s),
            );
            return Ok(judged);
        }
        RunStatus::NoReport => {
            let (verdict, detail) = match reply.exit_code {
                Some(code) if code == -SIGXCPU => {
                    (Verdict::TimedOut, "CPU time limit exceeded".to_string())
                }
                Some(code) if code < 0 => (Verdict::Crashed, format!("killed by signal {}", -code)),
                Some(code) => (
                    Verdict::Crashed,
                    format!("exited with status {code} before reporting"),
                ),
                None => (Verdict::Crashed, "ended without a report".to_string()),
            };
            set(verdict, detail);
            return Ok(judged);
        }
        RunStatus::Completed => {}
    }
    let Some(report) = &reply.report else {
        set(Verdict::Crashed, "completed without a report".into());
        return Ok(judged);
    };
    judged.tests = report
        .tests
        .iter()
        .map(|t| (t.nodeid.clone(), t.outcome))
        .collect();
    judged.violations = report.violations.clone();
    let all_passed = report.finished
        && report.cut_error.is_none()
        && report.collect_errors.is_empty()
        && !report.tests.is_empty()
        && report
            .tests
            .iter()
            .all(|t| t.outcome == TestOutcome::Passed);
    let ran: BTreeSet<&str> = report.tests.iter().map(|t| t.function_name()).collect();
    let never_ran: Vec<&str> = static_tests
        .iter()
        .map(String::as_str)
        .filter(|name| !ran.contains(name))
        .collect();
    let verdict = if !report.tampered.is_empty() {
        (
            Verdict::Untrustworthy,
            format!(
                "tests modified pytest or the runner: {}",
                report.tampered.join(", ")
            ),
        )
    } else if reply.exit_code != Some(if all_passed { 0 } else { 1 }) {
        (
            Verdict::Untrustworthy,
            format!(
                "the report contradicts the exit status {:?}",
                reply.exit_code
            ),
        )
    } else if let Some(error) = &report.cut_error {
        (
            Verdict::CutError,
            format!("importing the code under test failed: {error}"),
        )
    } else if let Some(error) = &report.session_error {
        (
            Verdict::Failed,
            format!("the session did not finish: {error}"),
        )
    } else if !report.finished {
        (Verdict::Failed, "the session did not finish".into())
    } else if let Some(error) = report.collect_errors.first() {
        (
            Verdict::Failed,
            format!("collection failed: {}", first_line(&error.message)),
        )
    } else if report.tests.is_empty() {
        (Verdict::Failed, "no tests were collected".into())
    } else if let Some(slow) = report
        .tests
        .iter()
        .find(|t| t.outcome == TestOutcome::Timeout)
    {
        (
            Verdict::TimedOut,
            format!("{} ran past its time budget", slow.nodeid),
        )
    } else if let Some(bad) = report
        .tests
        .iter()
        .find(|t| t.outcome != TestOutcome::Passed)
    {
        let outcome = serde_json::to_value(bad.outcome)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        (
            Verdict::Failed,
            format!("{} {outcome}: {}", bad.nodeid, summary_line(&bad.message)),
        )
    } else if !never_ran.is_empty() {
        (
            Verdict::Failed,
            format!("tests in the file never ran: {}", never_ran.join(", ")),
        )
    } else {
        (Verdict::Passed, String::new())
    };
    set(verdict.0, verdict.1);
    Ok(judged)
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// The most useful single line of a traceback: its exception line (`AssertionError: assert 3
/// == 5`), which pytest's explanation lines (`At index 0 diff …`, `Use -v …`) may follow; else
/// the last non-empty line.
pub(crate) fn summary_line(text: &str) -> &str {
    let mut lines = text.lines().rev().filter(|l| !l.trim().is_empty());
    let last = lines.clone().next().unwrap_or("").trim();
    lines
        .find(|line| is_exception_line(line))
        .map_or(last, str::trim)
}

/// `ValueError: …`, `module.SomeError: …`, `KeyboardInterrupt`: an unindented dotted name ending
/// in Error, Exception, Exit or Interrupt, alone or before a colon.
fn is_exception_line(line: &str) -> bool {
    let name = line.split(':').next().unwrap_or("");
    !line.starts_with(char::is_whitespace)
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && ["Error", "Exception", "Exit", "Interrupt"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// What became of one mutant (cargo-mutants' words where they fit).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum MutantStatus {
    /// A test failed or errored, the session broke, or the mutant crashed the run.
    Killed,
    /// The mutant ran past its time limit: killed, by the usual convention.
    Timeout,
    /// Every test passed on the mutant.
    Survived,
    /// No test runs a line the mutant changes (coverage-guided runs): a survivor, never run.
    NotCovered,
    /// A test failed on the mutant, but the same tests run the same way also fail on the
    /// original (order- or run-dependent tests): scored, and not a kill.
    Unconfirmed,
    /// Compiles to the original's bytecode: not scored.
    Equivalent,
    /// Does not compile: not scored.
    Unviable,
    /// The infrastructure failed twice: not scored, and never a kill.
    Excluded,
}

impl MutantStatus {
    pub fn is_scored(self) -> bool {
        matches!(
            self,
            MutantStatus::Killed
                | MutantStatus::Timeout
                | MutantStatus::Survived
                | MutantStatus::NotCovered
                | MutantStatus::Unconfirmed
        )
    }

    pub fn is_killed(self) -> bool {
        matches!(self, MutantStatus::Killed | MutantStatus::Timeout)
    }
}

/// A mutant's status from its judged run. Tampering that shows up only on a mutant means the
/// tests behaved differently there, so it counts as a kill like any other failure.
pub fn mutant_status(run: &JudgedRun) -> MutantStatus {
    match run.verdict {
        Verdict::Passed => MutantStatus::Survived,
        Verdict::TimedOut => MutantStatus::Timeout,
        Verdict::Failed | Verdict::Crashed | Verdict::CutError | Verdict::Untrustworthy => {
            MutantStatus::Killed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChildReport, TestReport};

    #[test]
    fn the_summary_line_is_the_exception_not_pytest_s_explanation() {
        let diff = "Traceback (most recent call last):\n  File \"t.py\", line 4, in test_list\n    assert [3] == [5]\nAssertionError: assert [3] == [5]\n  \n  At index 0 diff: 3 != 5\n  Use -v to get more diff\n";
        assert_eq!(summary_line(diff), "AssertionError: assert [3] == [5]");
        let raised = "  File \"m.py\", line 3, in f\nmodule.BadInput: x\n";
        assert_eq!(summary_line(raised), "module.BadInput: x");
        // A one-line (`--tb=line`) message, or nothing like an exception: the last line.
        assert_eq!(
            summary_line("/w/test_m.py:5: assert 1 == 2\n"),
            "/w/test_m.py:5: assert 1 == 2"
        );
        assert_eq!(summary_line("a\nlast words\n\n"), "last words");
        assert_eq!(summary_line(""), "");
    }

    fn reply(exit: i32, outcomes: &[(&str, TestOutcome)]) -> RunReply {
        RunReply {
            status: RunStatus::Completed,
            exit_code: Some(exit),
            cpu_s: Some(0.01),
            wall_s: 0.02,
            max_rss_kb: None,
            report: Some(ChildReport {
                tests: outcomes
                    .iter()
                    .map(|(id, outcome)| TestReport {
                        nodeid: format!("test_m.py::{id}"),
                        outcome: *outcome,
                        duration_s: 0.0,
                        message: String::new(),
                        evidence: None,
                    })
                    .collect(),
                finished: true,
                ..ChildReport::default()
            }),
            output: String::new(),
            output_truncated: false,
            stray_processes: None,
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn consistent_pass() {
        let judged = judge_run(
            &reply(
                0,
                &[
                    ("test_a[1]", TestOutcome::Passed),
                    ("test_a[2]", TestOutcome::Passed),
                ],
            ),
            &names(&["test_a"]),
        )
        .unwrap();
        assert_eq!(judged.verdict, Verdict::Passed);
    }

    #[test]
    fn skipped_and_xfailed_are_not_passes() {
        for outcome in [
            TestOutcome::Skipped,
            TestOutcome::Xfailed,
            TestOutcome::Error,
        ] {
            let judged = judge_run(
                &reply(1, &[("test_a", TestOutcome::Passed), ("test_b", outcome)]),
                &names(&["test_a", "test_b"]),
            )
            .unwrap();
            assert_eq!(judged.verdict, Verdict::Failed, "{outcome:?}");
        }
    }

    #[test]
    fn a_pass_report_with_a_failing_exit_status_is_untrustworthy() {
        let judged = judge_run(
            &reply(1, &[("test_a", TestOutcome::Passed)]),
            &names(&["test_a"]),
        )
        .unwrap();
        assert_eq!(judged.verdict, Verdict::Untrustworthy);
    }

    #[test]
    fn tests_that_never_ran_fail_the_run() {
        let judged = judge_run(
            &reply(0, &[("test_a", TestOutcome::Passed)]),
            &names(&["test_a", "test_b"]),
        )
        .unwrap();
        assert_eq!(judged.verdict, Verdict::Failed);
        assert!(judged.detail.contains("test_b"));
    }

    #[test]
    fn zero_collected_is_not_a_pass() {
        let judged = judge_run(&reply(1, &[]), &names(&[])).unwrap();
        assert_eq!(judged.verdict, Verdict::Failed);
    }

    #[test]
    fn a_test_past_its_budget_times_the_run_out() {
        let judged = judge_run(
            &reply(
                1,
                &[
                    ("test_a", TestOutcome::Passed),
                    ("test_b", TestOutcome::Timeout),
                ],
            ),
            &names(&["test_a", "test_b"]),
        )
        .unwrap();
        assert_eq!(judged.verdict, Verdict::TimedOut);
        assert_eq!(mutant_status(&judged), MutantStatus::Timeout);
    }

    #[test]
    fn stray_processes_make_a_run_untrustworthy() {
        let mut r = reply(0, &[("test_a", TestOutcome::Passed)]);
        r.stray_processes = Some(0);
        assert_eq!(
            judge_run(&r, &names(&["test_a"])).unwrap().verdict,
            Verdict::Passed
        );
        r.stray_processes = Some(2);
        assert_eq!(
            judge_run(&r, &names(&["test_a"])).unwrap().verdict,
            Verdict::Untrustworthy
        );
    }

    #[test]
    fn tampering_is_untrustworthy() {
        let mut r = reply(0, &[("test_a", TestOutcome::Passed)]);
        r.report.as_mut().unwrap().tampered = vec!["_pytest.runner.call_and_report".into()];
        assert_eq!(
            judge_run(&r, &names(&["test_a"])).unwrap().verdict,
            Verdict::Untrustworthy
        );
    }

    #[test]
    fn no_report_and_timeouts() {
        let mut r = reply(0, &[]);
        r.status = RunStatus::NoReport;
        r.report = None;
        assert_eq!(
            judge_run(&r, &names(&[])).unwrap().verdict,
            Verdict::Crashed
        );
        r.exit_code = Some(-24);
        assert_eq!(
            judge_run(&r, &names(&[])).unwrap().verdict,
            Verdict::TimedOut
        );
        r.status = RunStatus::Timeout;
        assert_eq!(
            mutant_status(&judge_run(&r, &names(&[])).unwrap()),
            MutantStatus::Timeout
        );
    }

    #[test]
    fn scored_and_killed() {
        assert!(MutantStatus::Timeout.is_killed() && MutantStatus::Timeout.is_scored());
        assert!(!MutantStatus::Excluded.is_scored() && !MutantStatus::Excluded.is_killed());
        assert!(!MutantStatus::Equivalent.is_scored());
    }
}
