//! Pruned scoring: what to do with the tests of a suite that fail on the code under test.
//!
//! Under `failing_tests: invalidate` (the default) one failing test makes the whole suite
//! invalid. Under `failing_tests: prune` each test case (each `parametrize` case on its own) that
//! fails, errors, skips or is flaky on the original is removed, a test function whose body repeats
//! an earlier one's counts once, and the rest — the kept suite — is scored as a suite of its own:
//! every later run selects only the kept node ids, so a pruned test never runs on a mutant or a
//! variant. The composite is then discounted by the share kept, with a floor on the count
//! ([`prune_discount`]): a suite of one test cannot earn more than a third of a full one.
//!
//! Pruning never forgives what makes the file untrustworthy: a test file that does not parse or
//! collect, a run that crashed, timed out as a whole, contradicted itself or tampered with pytest,
//! and any sandbox violation by any test still invalidate the whole suite, as does a suite with
//! nothing left. Formulas and anchors: `docs/rewards.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::outcome::{summary_line, JudgedRun, Verdict};
use crate::protocol::{function_name, RunReply, TestOutcome, TestReport};
use crate::source::PythonSource;
use crate::suite::{test_function_texts, without_cases, without_tests, CaseRemovals};

/// What a test that fails on the code under test does to its suite.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailingTests {
    /// The whole suite is invalid (composite = `invalid_composite`).
    #[default]
    Invalidate,
    /// The test is removed, and the rest is scored with a discount.
    Prune,
}

impl FailingTests {
    pub fn is_invalidate(&self) -> bool {
        *self == FailingTests::Invalidate
    }
}

/// Why a test case was removed from the kept suite.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PruneReason {
    /// Failed on the code under test.
    Failed,
    /// Errored (a fixture or setup raised).
    Error,
    /// Skipped, xfailed or xpassed: not a pass.
    NotRun,
    /// Passed once, then failed in a shuffled, reseeded run on the same code.
    Flaky,
    /// Its test function's body (parameters, decorators and code) repeats an earlier one's.
    Duplicate,
}

/// One removed test case, with the evidence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrunedTest {
    /// The node id (`test_m.py::test_x[2-3]`).
    pub name: String,
    pub reason: PruneReason,
    /// The failure's summary line, or the test it duplicates.
    pub detail: String,
    /// For a case of a parametrized test: its place among the function's collected cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseOf>,
}

/// Where a parametrized case stands among its function's cases, in pytest's collection order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaseOf {
    /// 0-based.
    pub index: usize,
    /// Cases the function collected.
    pub of: usize,
}

impl CaseOf {
    /// The place of `nodeid` (`test_m.py::test_x[2-3]`) among the cases in `order` that share
    /// its function; `None` for a test that is not parametrized or not in `order`.
    pub fn locate(order: &[String], nodeid: &str) -> Option<Self> {
        let (function, _) = nodeid.split_once('[')?;
        let mut index = None;
        let mut of = 0;
        for other in order {
            if other.split_once('[').is_some_and(|(f, _)| f == function) {
                if other == nodeid {
                    index = Some(of);
                }
                of += 1;
            }
        }
        Some(Self { index: index?, of })
    }
}

/// The tests that failed in a run, when that is all that is wrong with it: the session finished,
/// collected every test function the file defines, imported the code under test, and the report
/// agrees with the exit status. `None` when the run failed as a whole (or passed).
pub fn failing_cases<'a>(reply: &'a RunReply, judged: &JudgedRun) -> Option<Vec<&'a TestReport>> {
    if judged.verdict != Verdict::Failed || !judged.violations.is_empty() {
        return None;
    }
    let report = reply.report.as_ref()?;
    let sound = report.finished
        && report.cut_error.is_none()
        && report.session_error.is_none()
        && report.collect_errors.is_empty()
        && report.tampered.is_empty()
        && !report.tests.is_empty()
        && reply.exit_code == Some(1);
    let failing: Vec<&TestReport> = report
        .tests
        .iter()
        .filter(|t| t.outcome != TestOutcome::Passed)
        .collect();
    // A failed verdict with every reported test passing is a test function that never ran.
    (sound && !failing.is_empty()).then_some(failing)
}

fn reason_of(outcome: TestOutcome) -> PruneReason {
    match outcome {
        TestOutcome::Failed | TestOutcome::Timeout => PruneReason::Failed,
        TestOutcome::Error => PruneReason::Error,
        TestOutcome::Passed
        | TestOutcome::Skipped
        | TestOutcome::Xfailed
        | TestOutcome::Xpassed => PruneReason::NotRun,
    }
}

/// The cases a baseline run's failures remove, with their reasons.
pub fn failed_at_baseline(failing: &[&TestReport]) -> Vec<PrunedTest> {
    failing
        .iter()
        .map(|t| PrunedTest {
            name: t.nodeid.clone(),
            reason: reason_of(t.outcome),
            detail: summary(&t.message),
            case: None,
        })
        .collect()
}

/// The cases of `kept` that did not pass in a later run on the same code: flaky.
pub fn flaky_in(kept: &[String], run: &JudgedRun) -> Vec<PrunedTest> {
    kept.iter()
        .filter_map(|nodeid| match run.tests.get(nodeid) {
            Some(TestOutcome::Passed) => None,
            Some(outcome) => Some(PrunedTest {
                name: nodeid.clone(),
                reason: PruneReason::Flaky,
                detail: format!(
                    "passed on the first run, {} in a shuffled one",
                    outcome_word(*outcome)
                ),
                case: None,
            }),
            // Not reported in a sound run with a selection: the selection lost it; not the test.
            None => None,
        })
        .collect()
}

fn outcome_word(outcome: TestOutcome) -> &'static str {
    match outcome {
        TestOutcome::Passed => "passed",
        TestOutcome::Failed => "failed",
        TestOutcome::Error => "errored",
        TestOutcome::Skipped => "skipped",
        TestOutcome::Xfailed => "xfailed",
        TestOutcome::Xpassed => "xpassed",
        TestOutcome::Timeout => "timed out",
    }
}

/// Test functions whose text, less their name, repeats an earlier function's: each maps to the
/// first one with that text. Whitespace and comments do not count.
pub fn duplicate_functions(tests: &PythonSource) -> BTreeMap<String, String> {
    let mut first_with: HashMap<String, String> = HashMap::new();
    let mut duplicates = BTreeMap::new();
    for (name, text) in test_function_texts(tests) {
        match first_with.get(&text) {
            Some(first) => {
                duplicates.insert(name, first.clone());
            }
            None => {
                first_with.insert(text, name);
            }
        }
    }
    duplicates
}

/// The cases of duplicated functions among `kept` (their function repeats an earlier one).
pub fn duplicates_in(kept: &[String], duplicates: &BTreeMap<String, String>) -> Vec<PrunedTest> {
    kept.iter()
        .filter_map(|nodeid| {
            let first = duplicates.get(function_name(nodeid))?;
            Some(PrunedTest {
                name: nodeid.clone(),
                reason: PruneReason::Duplicate,
                detail: format!("the same test as {first}"),
                case: None,
            })
        })
        .collect()
}

/// Whether the baseline ran any of `pruned` (all but the flaky ones, which later runs ran too).
pub fn pruned_at_baseline(pruned: &[PrunedTest]) -> bool {
    pruned.iter().any(|p| p.reason != PruneReason::Flaky)
}

/// What pruning left: the kept node ids in the baseline's order, and what it removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pruning {
    /// Test cases the baseline collected.
    pub collected: usize,
    pub kept: Vec<String>,
    pub pruned: Vec<PrunedTest>,
    /// Every collected node id in the baseline's order (where each pruned case stands).
    order: Vec<String>,
}

impl Pruning {
    /// Start from every case the baseline collected.
    pub fn of(baseline_cases: &[TestReport]) -> Self {
        Self {
            collected: baseline_cases.len(),
            kept: baseline_cases.iter().map(|t| t.nodeid.clone()).collect(),
            pruned: Vec::new(),
            order: baseline_cases.iter().map(|t| t.nodeid.clone()).collect(),
        }
    }

    /// Remove `cases` (which must be kept ones; others are ignored).
    pub fn remove(&mut self, cases: Vec<PrunedTest>) {
        let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        self.kept.retain(|nodeid| !names.contains(nodeid.as_str()));
        let order = &self.order;
        self.pruned.extend(cases.into_iter().map(|mut case| {
            case.case = CaseOf::locate(order, &case.name);
            case
        }));
    }

    /// Whether the baseline ran cases that are not kept (anything pruned but the flaky ones,
    /// which later runs still ran).
    pub fn pruned_at_baseline(&self) -> bool {
        pruned_at_baseline(&self.pruned)
    }

    /// Kept cases / collected cases.
    pub fn pass_fraction(&self) -> f64 {
        if self.collected == 0 {
            0.0
        } else {
            self.kept.len() as f64 / self.collected as f64
        }
    }

    /// The test functions the kept cases belong to (every one of them must run).
    pub fn kept_functions(&self) -> BTreeSet<String> {
        self.kept
            .iter()
            .map(|n| function_name(n).to_string())
            .collect()
    }

    /// The node ids a run selects: `None` (every test) while nothing is pruned, so that such a
    /// suite is run exactly as under `invalidate`.
    pub fn selection(&self) -> Option<Vec<String>> {
        (!self.pruned.is_empty()).then(|| self.kept.clone())
    }
}

/// The factor a pruned suite's composite is multiplied by: kept / max(collected, floor). With
/// nothing pruned and at least `floor` cases it is 1; a single kept test earns at most 1/floor.
pub fn prune_discount(kept: usize, collected: usize, floor: usize) -> f64 {
    let denominator = collected.max(floor).max(1);
    (kept as f64 / denominator as f64).min(1.0)
}

/// The test file a user keeps: `tests` less every pruned case — the entry of a parametrize list
/// that produced it where that is certain (`suite::without_cases`), else its whole test function
/// with its decorators. `None` when nothing would be left of it, or the file does not parse.
pub fn kept_file(tests: &str, pruned: &[PrunedTest]) -> Option<String> {
    let source = PythonSource::parse("tests", tests).ok()?;
    let mut whole: BTreeSet<String> = BTreeSet::new();
    let mut cases: CaseRemovals = BTreeMap::new();
    for test in pruned {
        let function = function_name(&test.name).to_string();
        match test.case {
            Some(CaseOf { index, of }) if !whole.contains(&function) => {
                let entry = cases.entry(function).or_insert((BTreeSet::new(), of));
                entry.0.insert(index);
            }
            _ => {
                cases.remove(&function);
                whole.insert(function);
            }
        }
    }
    let (text, not_edited) = without_cases(&source, &cases);
    whole.extend(not_edited);
    let source = PythonSource::parse("tests", &text).ok()?;
    let kept = without_tests(&source, &whole);
    let left = PythonSource::parse("tests", &kept).ok()?;
    (!crate::suite::suite_facts(&left).tests.is_empty()).then_some(kept)
}

/// A failure message's one useful line (its exception line), capped at 300 characters.
fn summary(message: &str) -> String {
    summary_line(message).chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pruned(name: &str) -> PrunedTest {
        PrunedTest {
            name: name.to_string(),
            reason: PruneReason::Failed,
            detail: String::new(),
            case: None,
        }
    }

    /// A pruned case located in `order`, as `Pruning::remove` records it.
    fn pruned_in(order: &[&str], name: &str) -> PrunedTest {
        let order: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        PrunedTest {
            case: CaseOf::locate(&order, name),
            ..pruned(name)
        }
    }

    #[test]
    fn cases_are_located_among_their_own_functions_cases() {
        let order = [
            "t.py::test_a[1]",
            "t.py::test_b",
            "t.py::test_a[2]",
            "t.py::TestK::test_a[3]",
            "t.py::test_a[3]",
        ]
        .map(String::from);
        assert_eq!(
            CaseOf::locate(&order, "t.py::test_a[3]"),
            Some(CaseOf { index: 2, of: 3 })
        );
        assert_eq!(
            CaseOf::locate(&order, "t.py::TestK::test_a[3]"),
            Some(CaseOf { index: 0, of: 1 })
        );
        assert_eq!(CaseOf::locate(&order, "t.py::test_b"), None);
        assert_eq!(CaseOf::locate(&order, "t.py::test_a[9]"), None);
    }

    #[test]
    fn the_kept_file_drops_single_cases_of_a_parametrize_list() {
        let order = [
            "test_m.py::test_grade[87-A]",
            "test_m.py::test_grade[77-C]",
            "test_m.py::test_grade[0-F]",
            "test_m.py::test_inline[1-1]",
            "test_m.py::test_inline[2-5]",
            "test_m.py::test_inline[3-3]",
            "test_m.py::test_two",
        ];
        let tests = "import pytest\nfrom m import grade, f\n\n\n@pytest.mark.parametrize(\n    \"score, expected\",\n    [\n        (87, \"A\"),\n        (77, \"C\"),  # wrong\n        (0, \"F\"),\n    ],\n)\ndef test_grade(score, expected):\n    assert grade(score) == expected\n\n\n@pytest.mark.parametrize('x, y', [(1, 1), (2, 5), (3, 3)])\ndef test_inline(x, y):\n    assert f(x) == y\n\n\ndef test_two():\n    assert f(2) == 3\n";
        let kept = kept_file(
            tests,
            &[
                pruned_in(&order, "test_m.py::test_grade[77-C]"),
                pruned_in(&order, "test_m.py::test_inline[2-5]"),
                pruned_in(&order, "test_m.py::test_two"),
            ],
        )
        .unwrap();
        assert_eq!(
            kept,
            "import pytest\nfrom m import grade, f\n\n\n@pytest.mark.parametrize(\n    \"score, expected\",\n    [\n        (87, \"A\"),\n        (0, \"F\"),\n    ],\n)\ndef test_grade(score, expected):\n    assert grade(score) == expected\n\n\n@pytest.mark.parametrize('x, y', [(1, 1), (3, 3)])\ndef test_inline(x, y):\n    assert f(x) == y\n"
        );
        // The last entries of an inline list, and every case but one.
        let kept = kept_file(
            tests,
            &[
                pruned_in(&order, "test_m.py::test_inline[2-5]"),
                pruned_in(&order, "test_m.py::test_inline[3-3]"),
                pruned_in(&order, "test_m.py::test_grade[87-A]"),
                pruned_in(&order, "test_m.py::test_grade[77-C]"),
            ],
        )
        .unwrap();
        assert!(kept.contains("[(1, 1)])\ndef test_inline"), "{kept}");
        assert!(
            kept.contains("    [\n        (0, \"F\"),\n    ],\n"),
            "{kept}"
        );
        // Every case pruned: the function goes as a whole.
        let all: Vec<PrunedTest> = order[3..6]
            .iter()
            .map(|name| pruned_in(&order, name))
            .collect();
        let kept = kept_file(tests, &all).unwrap();
        assert!(!kept.contains("test_inline"), "{kept}");
        assert!(kept.contains("def test_grade"), "{kept}");
    }

    #[test]
    fn cases_whose_entry_is_uncertain_take_their_function_with_them() {
        // Stacked decorators (a product), a tuple of values, a count that disagrees with the
        // list (a parametrized fixture doubles the cases): each function goes whole.
        let tests = "import pytest\nfrom m import f\n\n\n@pytest.mark.parametrize('x', [1, 2])\n@pytest.mark.parametrize('y', [3, 4])\ndef test_product(x, y):\n    assert f(x) == y\n\n\n@pytest.mark.parametrize('x', ((1,), (2,)))\ndef test_tuple(x):\n    assert f(x)\n\n\n@pytest.mark.parametrize('x', [1, 2])\ndef test_fixture(x, doubled):\n    assert f(x)\n\n\ndef test_kept():\n    assert f(1) == 1\n";
        let with_case = |name: &str, index: usize, of: usize| PrunedTest {
            case: Some(CaseOf { index, of }),
            ..pruned(name)
        };
        let kept = kept_file(
            tests,
            &[
                with_case("test_m.py::test_product[3-1]", 0, 4),
                with_case("test_m.py::test_tuple[x0]", 0, 2),
                with_case("test_m.py::test_fixture[1-a]", 0, 4),
            ],
        )
        .unwrap();
        assert_eq!(
            kept,
            "import pytest\nfrom m import f\n\n\ndef test_kept():\n    assert f(1) == 1\n"
        );
    }

    #[test]
    fn the_kept_file_drops_each_pruned_function_once_and_nothing_else() {
        let tests = "import pytest\nfrom m import f\n\n\n@pytest.mark.parametrize('x, y', [(1, 1), (2, 5)])\ndef test_table(x, y):\n    assert f(x) == y\n\n\ndef test_one():\n    assert f(1) == 1\n\n\ndef test_two():\n    assert f(2) == 3\n";
        // One parametrize case and one plain test pruned (the case's id names the function).
        let kept = kept_file(
            tests,
            &[
                pruned("test_m.py::test_table[2-5]"),
                pruned("test_m.py::test_two"),
            ],
        )
        .unwrap();
        assert_eq!(
            kept,
            "import pytest\nfrom m import f\n\n\ndef test_one():\n    assert f(1) == 1\n"
        );
        // Nothing pruned: the file as written.
        assert_eq!(kept_file(tests, &[]).unwrap(), tests);
        // Everything pruned: nothing to keep.
        let all = [
            "test_m.py::test_table[1-1]",
            "test_m.py::test_one",
            "test_m.py::test_two",
        ];
        assert_eq!(kept_file(tests, &all.map(pruned)), None);
    }

    #[test]
    fn the_discount_has_a_floor_on_the_count() {
        // Three right, one wrong: three quarters of the three alone.
        assert_eq!(prune_discount(3, 4, 3), 0.75);
        assert_eq!(prune_discount(3, 3, 3), 1.0);
        // One passing test alone earns at most a third.
        assert!((prune_discount(1, 1, 3) - 1.0 / 3.0).abs() < 1e-12);
        // One kept among ten.
        assert_eq!(prune_discount(1, 10, 3), 0.1);
        assert_eq!(prune_discount(0, 0, 3), 0.0);
        assert_eq!(prune_discount(5, 5, 0), 1.0);
    }

    #[test]
    fn pruning_keeps_the_baseline_order_and_selects_nothing_until_it_prunes() {
        let case = |nodeid: &str| TestReport {
            nodeid: nodeid.into(),
            outcome: TestOutcome::Passed,
            duration_s: 0.0,
            message: String::new(),
            evidence: None,
        };
        let mut pruning = Pruning::of(&[
            case("t.py::test_a[1]"),
            case("t.py::test_a[2]"),
            case("t.py::test_b"),
        ]);
        assert_eq!(pruning.selection(), None);
        pruning.remove(vec![PrunedTest {
            name: "t.py::test_a[2]".into(),
            reason: PruneReason::Failed,
            detail: String::new(),
            case: None,
        }]);
        // The removed case's place is recorded, for the kept file.
        assert_eq!(pruning.pruned[0].case, Some(CaseOf { index: 1, of: 2 }));
        assert_eq!(
            pruning.selection(),
            Some(vec![
                "t.py::test_a[1]".to_string(),
                "t.py::test_b".to_string()
            ])
        );
        assert!((pruning.pass_fraction() - 2.0 / 3.0).abs() < 1e-12);
        let functions: Vec<String> = pruning.kept_functions().into_iter().collect();
        assert_eq!(functions, vec!["test_a", "test_b"]);
    }

    #[test]
    fn duplicates_ignore_names_whitespace_and_comments_but_not_parameters() {
        let source = PythonSource::parse(
            "tests",
            "from m import f\n\ndef test_a():\n    assert f(1) == 2\n\ndef test_b():\n    # again\n    assert f(1)  ==  2\n\n@pytest.mark.parametrize('x', [1])\ndef test_c(x):\n    assert f(1) == 2\n\nclass TestK:\n    def test_d(self):\n        assert f(1) == 2\n",
        )
        .unwrap();
        let duplicates = duplicate_functions(&source);
        assert_eq!(duplicates.get("test_b").map(String::as_str), Some("test_a"));
        assert!(!duplicates.contains_key("test_a"));
        assert!(!duplicates.contains_key("test_c"), "{duplicates:?}");
        // A method takes `self`: other parameters, not a duplicate.
        assert!(!duplicates.contains_key("TestK::test_d"), "{duplicates:?}");
    }

    #[test]
    fn summaries_pick_the_exception_line_and_are_capped() {
        let message = "Traceback (most recent call last):\n  File \"t.py\", line 4\nAssertionError: assert 2 == 3\n  where 2 = f(1)";
        assert_eq!(summary(message), "AssertionError: assert 2 == 3");
        assert_eq!(summary(&"x".repeat(400)).len(), 300);
    }
}
