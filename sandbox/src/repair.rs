//! Oracle repair: a failing test whose only fault is its expected value is rewritten to expect
//! what the code under test actually does (MuTAP's "intended behaviour repair"; the regression
//! oracles Pynguin and EvoSuite write).
//!
//! The evidence comes from the runner (`protocol::FailureEvidence`): the failing comparison's
//! two sides as Python literals — `repr` of the real values, kept only when it reads back as an
//! equal value of the same type — and the builtin exception that escaped a test. This module
//! only edits text: in an `assert ACTUAL == EXPECTED` (either order) whose expected side is a
//! literal, that literal becomes the actual side's literal; in `assert ACTUAL == PARAM` of a
//! parametrized test, PARAM's literal in the failing case's entry of the parametrize list does;
//! in `== pytest.approx(EXPECTED)` the approximated number does; in `with
//! pytest.raises(EXPECTED):` the class becomes the builtin exception that was raised. Nothing
//! the model wrote is evaluated on the host, and a repair is a proposal: the repaired file counts
//! only once it passes in the sandbox. A value that is not a literal (an object without a
//! readable `repr`, a NaN) is left alone, and so is a line two failing cases of one parametrized
//! test disagree about.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tree_sitter::Node;

use crate::protocol::{TestOutcome, TestReport};
use crate::prune::CaseOf;
use crate::source::{visit, PythonSource};
use crate::suite::parametrize_table;

/// What a repair rewrote.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RepairKind {
    /// The literal an `==` compares with.
    ExpectedValue,
    /// The number inside `pytest.approx(…)`.
    ApproxValue,
    /// The exception class `pytest.raises` expects.
    ExceptionType,
    /// The expected value in one case's entry of a `parametrize` list.
    CaseValue,
}

/// One rewritten expectation: the model expected `old`, the code does `new`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Repair {
    /// The failing test case's node id.
    pub test: String,
    /// 1-based line of the test file.
    pub line: usize,
    pub kind: RepairKind,
    pub old: String,
    pub new: String,
}

/// The test file with every repairable failing test's expectation rewritten, and the repairs.
/// `failing` are the baseline's test reports in the run's order (passing ones are not repaired,
/// but they place a parametrized case among its function's cases).
pub fn oracle_repair(tests: &str, failing: &[TestReport]) -> (String, Vec<Repair>) {
    let Ok(source) = PythonSource::parse("tests", tests) else {
        return (tests.to_string(), Vec::new());
    };
    // Where each parametrized case stands among its function's cases (in the run's order).
    let order: Vec<String> = failing.iter().map(|r| r.nodeid.clone()).collect();
    // Proposed edits by byte range; a range two cases disagree about is dropped.
    let mut edits: BTreeMap<(usize, usize), Option<Repair>> = BTreeMap::new();
    for report in failing.iter().filter(|r| r.outcome != TestOutcome::Passed) {
        let Some(evidence) = &report.evidence else {
            continue;
        };
        let case = CaseOf::locate(&order, &report.nodeid);
        let proposal = evidence
            .compared
            .as_ref()
            .filter(|c| c.op == "==")
            .and_then(|c| {
                let line = c.line.or(evidence.line)?;
                let (left, right) = (c.left.as_deref(), c.right.as_deref());
                comparison_edit(&source, line, left, right)
                    .or_else(|| case_edit(&source, line, case?, left, right))
            })
            .or_else(|| {
                let raised = evidence.raised.as_deref()?;
                exception_edit(&source, evidence.line?, raised)
            });
        let Some((node_range, kind, old, new)) = proposal else {
            continue;
        };
        let repair = Repair {
            test: report.nodeid.clone(),
            line: source.text()[..node_range.0].matches('\n').count() + 1,
            kind,
            old,
            new,
        };
        edits
            .entry(node_range)
            .and_modify(|existing| {
                if existing.as_ref().is_none_or(|e| e.new != repair.new) {
                    *existing = None;
                }
            })
            .or_insert(Some(repair));
    }
    let mut repaired = String::with_capacity(tests.len());
    let mut at = 0;
    let mut repairs = Vec::new();
    for ((start, end), repair) in edits {
        let Some(repair) = repair else { continue };
        if start < at {
            continue;
        }
        repaired.push_str(&tests[at..start]);
        repaired.push_str(&repair.new);
        at = end;
        repairs.push(repair);
    }
    repaired.push_str(&tests[at..]);
    (repaired, repairs)
}

type Edit = ((usize, usize), RepairKind, String, String);

/// The edit for a failing `assert a == b` on `line`: its expected (literal) side rewritten to
/// the other side's literal.
fn comparison_edit(
    source: &PythonSource,
    line: usize,
    left: Option<&str>,
    right: Option<&str>,
) -> Option<Edit> {
    let (a, b) = equality_on(source, line)?;
    let edit = |expected: Node<'_>, actual: Node<'_>, value: Option<&str>| -> Option<Edit> {
        let value = value.filter(|v| is_literal_text(v))?;
        if is_literal(source, expected) && !is_literal(source, actual) {
            let old = source.node_text(expected);
            return (old != value).then(|| {
                (
                    (expected.start_byte(), expected.end_byte()),
                    RepairKind::ExpectedValue,
                    old.to_string(),
                    value.to_string(),
                )
            });
        }
        // `== pytest.approx(NUMBER, …)`: the number, when the actual value is one.
        let number = approx_argument(source, expected)?;
        let is_number = value.trim_start_matches('-').parse::<f64>().is_ok();
        let old = source.node_text(number);
        (is_number && old != value).then(|| {
            (
                (number.start_byte(), number.end_byte()),
                RepairKind::ApproxValue,
                old.to_string(),
                value.to_string(),
            )
        })
    };
    edit(b, a, left).or_else(|| edit(a, b, right))
}

/// The two sides of the `assert a == b` on 1-based `line`.
fn equality_on(source: &PythonSource, line: usize) -> Option<(Node<'_>, Node<'_>)> {
    let assertion = innermost(source, line, "assert_statement")?;
    let comparison = assertion.named_child(0)?;
    if comparison.kind() != "comparison_operator" || comparison.named_child_count() != 2 {
        return None;
    }
    let mut cursor = comparison.walk();
    let operators: Vec<&str> = comparison
        .children(&mut cursor)
        .filter(|c| !c.is_named())
        .map(|c| source.node_text(c))
        .collect();
    if operators != ["=="] {
        return None;
    }
    Some((comparison.named_child(0)?, comparison.named_child(1)?))
}

/// The edit for a failing `assert ACTUAL == PARAM` (either order) in one case of a parametrized
/// test: PARAM's literal in that case's entry of the parametrize list becomes the actual side's
/// literal — when the entry is certain (`suite::parametrize_table`, as many entries as cases)
/// and the actual side does not read PARAM (changing it would change what is computed).
fn case_edit(
    source: &PythonSource,
    line: usize,
    case: CaseOf,
    left: Option<&str>,
    right: Option<&str>,
) -> Option<Edit> {
    let (a, b) = equality_on(source, line)?;
    let mut function = a.parent()?;
    while function.kind() != "function_definition" {
        function = function.parent()?;
    }
    let table = parametrize_table(source, function.parent()?)?;
    if table.entries.len() != case.of {
        return None;
    }
    let entry = *table.entries.get(case.index)?;
    let edit = |expected: Node<'_>, actual: Node<'_>, value: Option<&str>| -> Option<Edit> {
        let value = value.filter(|v| is_literal_text(v))?;
        if expected.kind() != "identifier" {
            return None;
        }
        let name = source.node_text(expected);
        if reads(source, actual, name) {
            return None;
        }
        let position = table.names.iter().position(|n| n == name)?;
        let target = if table.names.len() == 1 {
            entry
        } else {
            if !matches!(entry.kind(), "tuple" | "list") {
                return None;
            }
            let mut cursor = entry.walk();
            let elements: Vec<Node<'_>> = entry
                .named_children(&mut cursor)
                .filter(|n| n.kind() != "comment")
                .collect();
            if elements.len() != table.names.len() {
                return None;
            }
            elements[position]
        };
        let old = source.node_text(target);
        (is_literal(source, target) && old != value).then(|| {
            (
                (target.start_byte(), target.end_byte()),
                RepairKind::CaseValue,
                old.to_string(),
                value.to_string(),
            )
        })
    };
    edit(b, a, left).or_else(|| edit(a, b, right))
}

/// Whether `node` reads the name `name` anywhere.
fn reads(source: &PythonSource, node: Node<'_>, name: &str) -> bool {
    let mut found = false;
    visit(node, &mut |n| {
        found |= n.kind() == "identifier" && source.node_text(n) == name;
        !found
    });
    found
}

/// The edit for a builtin exception `raised` escaping `with pytest.raises(OTHER):` around
/// `line`: the expected class becomes the raised one.
fn exception_edit(source: &PythonSource, line: usize, raised: &str) -> Option<Edit> {
    let row = line.checked_sub(1)?;
    let mut found = None;
    visit(source.root(), &mut |node| {
        if node.kind() == "with_statement"
            && node.start_position().row < row
            && node.end_position().row >= row
        {
            let mut cursor = node.walk();
            for clause in node.named_children(&mut cursor) {
                if clause.kind() != "with_clause" {
                    continue;
                }
                let mut items = clause.walk();
                for item in clause.named_children(&mut items) {
                    let mut call = item.child_by_field_name("value").unwrap_or(item);
                    // `with pytest.raises(X) as caught:`
                    if call.kind() == "as_pattern" {
                        call = call.named_child(0).unwrap_or(call);
                    }
                    if let Some(expected) = raises_argument(source, call) {
                        found = Some(expected);
                    }
                }
            }
        }
        true
    });
    let expected = found?;
    let old = source.node_text(expected);
    (old != raised).then(|| {
        (
            (expected.start_byte(), expected.end_byte()),
            RepairKind::ExceptionType,
            old.to_string(),
            raised.to_string(),
        )
    })
}

/// The innermost node of `kind` spanning 1-based `line`.
fn innermost<'t>(source: &'t PythonSource, line: usize, kind: &str) -> Option<Node<'t>> {
    let row = line.checked_sub(1)?;
    let mut found = None;
    visit(source.root(), &mut |node| {
        let spans = node.start_position().row <= row && node.end_position().row >= row;
        if spans && node.kind() == kind {
            found = Some(node);
        }
        spans
    });
    found
}

/// Whether `call` calls `pytest.<name>` or a bare `<name>`.
fn calls(source: &PythonSource, call: Node<'_>, name: &str) -> bool {
    if call.kind() != "call" {
        return false;
    }
    let Some(function) = call.child_by_field_name("function") else {
        return false;
    };
    let text = source.node_text(function);
    text == name || text == format!("pytest.{name}")
}

fn first_argument<'t>(call: Node<'t>) -> Option<Node<'t>> {
    let arguments = call.child_by_field_name("arguments")?;
    let first = arguments.named_child(0)?;
    (first.kind() != "keyword_argument").then_some(first)
}

/// The number `pytest.approx(NUMBER, …)` approximates.
fn approx_argument<'t>(source: &PythonSource, node: Node<'t>) -> Option<Node<'t>> {
    if !calls(source, node, "approx") {
        return None;
    }
    let number = first_argument(node)?;
    let numeric = |n: Node<'_>| matches!(n.kind(), "integer" | "float");
    let is_number = numeric(number)
        || (number.kind() == "unary_operator" && number.named_child(0).is_some_and(numeric));
    is_number.then_some(number)
}

/// The class `pytest.raises(CLASS, …)` expects, when it is a plain name.
fn raises_argument<'t>(source: &PythonSource, node: Node<'t>) -> Option<Node<'t>> {
    if !calls(source, node, "raises") {
        return None;
    }
    first_argument(node).filter(|n| n.kind() == "identifier")
}

/// A Python literal: numbers, strings without interpolation, bytes, `True`, `False`, `None`,
/// and lists, tuples, sets and dicts of those.
fn is_literal(source: &PythonSource, node: Node<'_>) -> bool {
    let all_literal = |node: Node<'_>| {
        let mut cursor = node.walk();
        let all = node
            .named_children(&mut cursor)
            .filter(|c| c.kind() != "comment")
            .all(|c| is_literal(source, c));
        all
    };
    match node.kind() {
        "integer" | "float" | "true" | "false" | "none" => true,
        "string" => {
            let mut cursor = node.walk();
            let interpolated = node
                .named_children(&mut cursor)
                .any(|c| c.kind() == "interpolation");
            !interpolated
        }
        "concatenated_string" => all_literal(node),
        "unary_operator" => {
            let operator = node
                .child_by_field_name("operator")
                .map(|o| source.node_text(o));
            matches!(operator, Some("-" | "+"))
                && node
                    .child_by_field_name("argument")
                    .is_some_and(|a| matches!(a.kind(), "integer" | "float"))
        }
        "list" | "tuple" | "set" | "parenthesized_expression" => all_literal(node),
        "dictionary" => {
            let mut cursor = node.walk();
            let all = node
                .named_children(&mut cursor)
                .filter(|c| c.kind() != "comment")
                .all(|pair| pair.kind() == "pair" && all_literal(pair));
            all
        }
        _ => false,
    }
}

/// Whether `text` (a value's `repr` from the runner) is one Python literal expression.
fn is_literal_text(text: &str) -> bool {
    if text.contains('\n') {
        return false;
    }
    let Ok(source) = PythonSource::parse("value", &format!("_ = {text}\n")) else {
        return false;
    };
    let Some(statement) = source.root().named_child(0) else {
        return false;
    };
    let assignment = statement.named_child(0);
    source.root().named_child_count() == 1
        && assignment.is_some_and(|a| {
            a.kind() == "assignment"
                && a.child_by_field_name("right")
                    .is_some_and(|r| is_literal(&source, r))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Comparison, FailureEvidence};

    fn report(nodeid: &str, outcome: TestOutcome, evidence: Option<FailureEvidence>) -> TestReport {
        TestReport {
            nodeid: nodeid.to_string(),
            outcome,
            duration_s: 0.0,
            message: String::new(),
            evidence,
        }
    }

    fn failing(nodeid: &str, evidence: FailureEvidence) -> TestReport {
        report(nodeid, TestOutcome::Failed, Some(evidence))
    }

    fn passing(nodeid: &str) -> TestReport {
        report(nodeid, TestOutcome::Passed, None)
    }

    fn compared(line: usize, left: Option<&str>, right: Option<&str>) -> FailureEvidence {
        FailureEvidence {
            line: Some(line),
            compared: Some(Comparison {
                op: "==".into(),
                line: Some(line),
                left: left.map(str::to_string),
                right: right.map(str::to_string),
            }),
            raised: None,
        }
    }

    #[test]
    fn rewrites_only_the_expected_literal_on_either_side() {
        let tests = "from m import f, g\n\n\ndef test_a():\n    assert f(2) == 5  # doubled\n\n\ndef test_b():\n    assert [1, 2] == g()\n";
        let (repaired, repairs) = oracle_repair(
            tests,
            &[
                failing("t.py::test_a", compared(5, Some("4"), Some("5"))),
                failing("t.py::test_b", compared(9, Some("[1, 2]"), Some("[2, 1]"))),
            ],
        );
        assert_eq!(
            repaired,
            "from m import f, g\n\n\ndef test_a():\n    assert f(2) == 4  # doubled\n\n\ndef test_b():\n    assert [2, 1] == g()\n"
        );
        assert_eq!(repairs.len(), 2);
        assert_eq!(
            (repairs[0].old.as_str(), repairs[0].new.as_str()),
            ("5", "4")
        );
        assert_eq!(repairs[0].kind, RepairKind::ExpectedValue);
        assert_eq!(repairs[1].line, 9);
    }

    #[test]
    fn containers_strings_and_approximate_floats() {
        let tests = "import pytest\nfrom m import f\n\ndef test_d():\n    assert f('x') == {'a': (1, 'b')}\n\ndef test_s():\n    assert f('y') == 'Y'\n\ndef test_f():\n    assert f(0.1) == pytest.approx(0.3, rel=1e-9)\n";
        let (repaired, repairs) = oracle_repair(
            tests,
            &[
                failing("t.py::test_d", compared(5, Some("{'a': (2, 'b')}"), None)),
                failing("t.py::test_s", compared(8, Some("'y'"), Some("'Y'"))),
                // pytest.approx's repr is no literal: only the left side is evidence.
                failing(
                    "t.py::test_f",
                    compared(11, Some("0.30000000000000004"), None),
                ),
            ],
        );
        assert!(repaired.contains("== {'a': (2, 'b')}"), "{repaired}");
        assert!(repaired.contains("f('y') == 'y'"), "{repaired}");
        assert!(
            repaired.contains("pytest.approx(0.30000000000000004, rel=1e-9)"),
            "{repaired}"
        );
        assert_eq!(repairs[2].kind, RepairKind::ApproxValue);
    }

    #[test]
    fn wrong_builtin_exception_class_is_replaced() {
        let tests = "import pytest\nfrom m import parse\n\ndef test_empty():\n    with pytest.raises(TypeError):\n        parse('')\n";
        let evidence = FailureEvidence {
            line: Some(6),
            compared: None,
            raised: Some("ValueError".into()),
        };
        let (repaired, repairs) = oracle_repair(tests, &[failing("t.py::test_empty", evidence)]);
        assert!(
            repaired.contains("pytest.raises(ValueError):"),
            "{repaired}"
        );
        assert_eq!(repairs[0].kind, RepairKind::ExceptionType);
        assert_eq!(repairs[0].old, "TypeError");
    }

    #[test]
    fn leaves_alone_what_is_not_a_wrong_literal() {
        let tests = "import pytest\nfrom m import f, make\n\n@pytest.mark.parametrize('x, y', [(1, 2), (2, 3)])\ndef test_p(x, y):\n    assert f(x) == y\n\ndef test_obj():\n    assert make() == 3\n\ndef test_lit():\n    assert 1 + 1 == 3\n\ndef test_lt():\n    assert f(1) < 0\n";
        let (repaired, repairs) = oracle_repair(
            tests,
            &[
                // The expected side is a parameter, and nothing places its case: the run
                // reported one case of the two entries.
                failing("t.py::test_p[1-2]", compared(6, Some("5"), Some("2"))),
                // An unprintable value: no literal from the runner.
                failing("t.py::test_obj", compared(9, None, Some("3"))),
                // Not a literal from the runner's side either: a computed `repr` of code.
                failing(
                    "t.py::test_lit",
                    compared(12, Some("__import__('os')"), Some("3")),
                ),
                failing(
                    "t.py::test_lt",
                    FailureEvidence {
                        line: Some(15),
                        compared: Some(Comparison {
                            op: "<".into(),
                            line: Some(15),
                            left: Some("1".into()),
                            right: Some("0".into()),
                        }),
                        raised: None,
                    },
                ),
            ],
        );
        assert_eq!(repaired, tests);
        assert!(repairs.is_empty(), "{repairs:?}");
    }

    #[test]
    fn a_wrong_case_of_a_parametrize_table_gets_the_value_the_code_returns() {
        let tests = "import pytest\nfrom m import grade, f\n\n\n@pytest.mark.parametrize(\n    \"score, expected\",\n    [\n        (87, \"A\"),\n        (77, \"C\"),\n        (0, \"F\"),\n    ],\n)\ndef test_grade(score, expected):\n    assert grade(score) == expected\n\n\n@pytest.mark.parametrize('x', [1, 2])\ndef test_one_name(x):\n    assert x == f(x)\n\n\n@pytest.mark.parametrize('x', [3, 4])\ndef test_single(x):\n    assert f(2) == x\n";
        let (repaired, repairs) = oracle_repair(
            tests,
            &[
                passing("t.py::test_grade[87-A]"),
                failing(
                    "t.py::test_grade[77-C]",
                    compared(14, Some("'B'"), Some("'C'")),
                ),
                passing("t.py::test_grade[0-F]"),
                // The parameter is read by the computed side too: left alone.
                failing("t.py::test_one_name[1]", compared(19, Some("1"), Some("5"))),
                passing("t.py::test_one_name[2]"),
                passing("t.py::test_single[3]"),
                failing("t.py::test_single[4]", compared(24, Some("3"), Some("4"))),
            ],
        );
        assert_eq!(
            repaired,
            tests
                .replace("(77, \"C\")", "(77, 'B')")
                .replace("[3, 4]", "[3, 3]")
        );
        assert_eq!(repairs.len(), 2, "{repairs:?}");
        assert_eq!(repairs[0].kind, RepairKind::CaseValue);
        assert_eq!(repairs[0].line, 9, "the entry's line");
        assert_eq!(
            (repairs[0].old.as_str(), repairs[0].new.as_str()),
            ("\"C\"", "'B'")
        );
    }

    #[test]
    fn cases_that_disagree_about_one_literal_leave_it() {
        let tests = "import pytest\nfrom m import f\n\n@pytest.mark.parametrize('x', [1, 2])\ndef test_p(x):\n    assert f(x) == 9\n";
        let (repaired, repairs) = oracle_repair(
            tests,
            &[
                failing("t.py::test_p[1]", compared(6, Some("1"), Some("9"))),
                failing("t.py::test_p[2]", compared(6, Some("4"), Some("9"))),
            ],
        );
        assert_eq!(repaired, tests);
        assert!(repairs.is_empty());
    }
}
