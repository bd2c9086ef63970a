//! Reward-filtered rows against the real sandbox (local executor): from an evaluation report's
//! suites to proven supervised targets — the kept file less its pruned cases, and with oracle
//! repair the same suite with its wrong expectations rewritten to what the code returns.

mod common;

use unitforge_sandbox::rewards::RewardConfig;
use unitforge_trainer::data::dataset::Example;
use unitforge_trainer::eval::raft::{filtered_rows, FilterOptions};
use unitforge_trainer::eval::report::{EvalReport, RowResult, SuiteResult, SuiteScore};

const GRADE: &str = "def grade(score):\n    if score >= 90:\n        return 'A'\n    if score >= 80:\n        return 'B'\n    return 'C'\n";

/// Two right tests, a table with one wrong case and a test whose expected value is wrong.
const SUITE: &str = "import pytest\nfrom grade import grade\n\n\ndef test_a():\n    assert grade(95) == 'A'\n\n\ndef test_c():\n    assert grade(10) == 'C'\n\n\n@pytest.mark.parametrize(\n    'score, expected',\n    [\n        (91, 'A'),\n        (85, 'C'),\n        (20, 'C'),\n    ],\n)\ndef test_table(score, expected):\n    assert grade(score) == expected\n\n\ndef test_edge():\n    assert grade(80) == 'C'\n";

/// Nothing passes: every expectation is wrong.
const ALL_WRONG: &str = "from grade import grade\n\n\ndef test_top():\n    assert grade(99) == 'B'\n\n\ndef test_low():\n    assert grade(3) == 'A'\n";

fn score(passed: bool, kill: f64) -> Option<SuiteScore> {
    Some(SuiteScore {
        passed,
        mutant_kill: kill,
        composite: kill / 2.0,
        speed: 1.0,
        stability: 1.0,
        suite_cpu_ms: 1.0,
    })
}

fn report(suites: &[(&str, bool)]) -> EvalReport {
    let sample = |passed: bool| SuiteResult {
        valid_pytest: true,
        scored: score(false, 0.0),
        excluded: None,
        pruned: score(passed, if passed { 0.5 } else { 0.0 }),
    };
    EvalReport {
        model: "scripted".into(),
        data: "rows".into(),
        rows: 1,
        samples_per_row: suites.len(),
        seed: 0,
        executor: "local".into(),
        figures: Default::default(),
        reference: Default::default(),
        trivial: Default::default(),
        pruned: None,
        per_row: vec![RowResult {
            row: 0,
            module: "grade".into(),
            samples: suites.iter().map(|(_, passed)| sample(*passed)).collect(),
            reference: None,
            trivial: sample(true),
            tests: suites.iter().map(|(tests, _)| tests.to_string()).collect(),
        }],
    }
}

fn examples() -> Vec<Example> {
    vec![Example {
        row: 0,
        prompt: String::new(),
        target: None,
        teacher_logprobs: None,
        code: Some(GRADE.into()),
        module: "grade".into(),
        reference_tests: None,
        prompt_from_code: false,
    }]
}

fn filter(
    report: &EvalReport,
    oracle_repair: bool,
) -> Vec<unitforge_trainer::eval::raft::FilteredRow> {
    let options = FilterOptions {
        candidates: 4,
        min_kill: 0.0,
        oracle_repair,
    };
    let (rows, summary) = filtered_rows(
        report,
        &examples(),
        &common::local_backend(),
        &RewardConfig::default(),
        &options,
        &|_, _, _| {},
    )
    .unwrap();
    assert_eq!(summary.excluded, 0);
    rows
}

#[test]
fn a_row_keeps_the_right_tests_and_cases_of_its_suite() {
    let rows = filter(&report(&[(SUITE, true)]), false);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    // The wrong test and the wrong case's entry go; everything else stays byte for byte.
    let expected = SUITE.replace("        (85, 'C'),\n", "").replace(
        "\n\n\ndef test_edge():\n    assert grade(80) == 'C'\n",
        "\n",
    );
    assert_eq!(row.chosen, expected);
    assert_eq!((row.pruned_cases, row.repairs), (2, 0));
    assert!(row.mutant_kill > 0.0 && row.composite > 0.0, "{row:?}");
    assert_eq!(row.code, GRADE);
}

#[test]
fn oracle_repair_keeps_the_tests_whose_only_fault_was_the_expected_value() {
    let rows = filter(&report(&[(SUITE, true)]), true);
    let row = &rows[0];
    assert_eq!(
        row.chosen,
        SUITE
            .replace("(85, 'C')", "(85, 'B')")
            .replace("grade(80) == 'C'", "grade(80) == 'B'")
    );
    assert_eq!((row.pruned_cases, row.repairs), (0, 2));
    let unrepaired = filter(&report(&[(SUITE, true)]), false);
    assert!(
        row.mutant_kill >= unrepaired[0].mutant_kill && row.rank > unrepaired[0].rank,
        "the repaired suite kills at least as much and ranks higher: {row:?} {unrepaired:?}"
    );
    // A suite with nothing kept is mended too, and only with repair.
    let mended = filter(&report(&[(ALL_WRONG, false)]), true);
    assert_eq!(
        mended[0].chosen,
        ALL_WRONG
            .replace("grade(99) == 'B'", "grade(99) == 'A'")
            .replace("grade(3) == 'A'", "grade(3) == 'C'")
    );
    assert!(filter(&report(&[(ALL_WRONG, false)]), false).is_empty());
}
