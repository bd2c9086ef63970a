//! Training rows for the fix and diagnose templates, synthesised from validated pairs: a correct
//! suite is corrupted the ways a small model gets suites wrong — a wrong expected value, a wrong
//! exception class, a wrong imported name, an argument off by one — the corrupted suite is run in
//! the sandbox for its real failure text, and only a corruption that really fails becomes a row:
//! the fix row asks to repair it (target: the original suite), the diagnose row asks why it
//! fails (target: a templated explanation naming the test, the two values and the side at
//! fault — always the test here, since the module is the one its reference suite passed on).

use serde::Serialize;
use unitforge_sandbox::backend::BlockingBackend;
use unitforge_sandbox::prune::FailingTests;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::rng::SplitMix64;
use unitforge_sandbox::score::ScoreInput;
use unitforge_sandbox::source::{visit, PythonSource};
use unitforge_sandbox::tree_sitter::Node;

use crate::data::prompts::Task;
use crate::deliver::{failing_tests, failure_text};

/// How a suite was broken.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CorruptionKind {
    WrongValue,
    WrongException,
    WrongImport,
    OffByOneArgument,
}

/// A broken copy of a suite, and what was changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Corruption {
    pub kind: CorruptionKind,
    pub tests: String,
    /// The text that was there, and what replaced it.
    pub old: String,
    pub new: String,
    /// The test function it is in (empty for an import).
    pub test: String,
}

const KINDS: [CorruptionKind; 4] = [
    CorruptionKind::WrongValue,
    CorruptionKind::WrongException,
    CorruptionKind::WrongImport,
    CorruptionKind::OffByOneArgument,
];

/// Break `tests` one way, chosen by `seed` among the ways that apply (`None`: none applies).
pub fn corrupt(tests: &str, seed: u64) -> Option<Corruption> {
    let source = PythonSource::parse("tests", tests).ok()?;
    let mut rng = SplitMix64::new(seed);
    let start = (rng.next_u64() % KINDS.len() as u64) as usize;
    (0..KINDS.len())
        .map(|k| KINDS[(start + k) % KINDS.len()])
        .find_map(|kind| {
            let sites = sites(&source, kind);
            if sites.is_empty() {
                return None;
            }
            let (node_range, old, new, test) =
                sites[(rng.next_u64() % sites.len() as u64) as usize].clone();
            let mut broken = String::with_capacity(tests.len() + 8);
            broken.push_str(&tests[..node_range.0]);
            broken.push_str(&new);
            broken.push_str(&tests[node_range.1..]);
            Some(Corruption {
                kind,
                tests: broken,
                old,
                new,
                test,
            })
        })
}

type Site = ((usize, usize), String, String, String);

/// Every place `kind` could break, with its replacement.
fn sites(source: &PythonSource, kind: CorruptionKind) -> Vec<Site> {
    let mut found = Vec::new();
    let mut test = String::new();
    visit(source.root(), &mut |node| {
        if node.kind() == "function_definition" {
            if let Some(name) = node.child_by_field_name("name") {
                test = source.node_text(name).to_string();
            }
        }
        let site = |target: Node<'_>, new: String| {
            (
                (target.start_byte(), target.end_byte()),
                source.node_text(target).to_string(),
                new,
                test.clone(),
            )
        };
        match kind {
            CorruptionKind::WrongValue if node.kind() == "assert_statement" => {
                let expected = node
                    .named_child(0)
                    .filter(|c| c.kind() == "comparison_operator" && c.named_child_count() == 2)
                    .and_then(|c| c.named_child(1));
                if let Some(new) = expected.and_then(|e| changed_literal(source, e)) {
                    found.push(site(expected.unwrap(), new));
                }
            }
            CorruptionKind::WrongException if node.kind() == "call" => {
                let function = node
                    .child_by_field_name("function")
                    .map(|f| source.node_text(f));
                if matches!(function, Some("pytest.raises" | "raises")) {
                    let class = node
                        .child_by_field_name("arguments")
                        .and_then(|a| a.named_child(0))
                        .filter(|a| a.kind() == "identifier");
                    if let Some(class) = class {
                        let other = other_exception(source.node_text(class));
                        found.push(site(class, other.to_string()));
                    }
                }
            }
            CorruptionKind::WrongImport if node.kind() == "import_from_statement" => {
                let module = node
                    .child_by_field_name("module_name")
                    .map(|m| source.node_text(m));
                if module.is_some_and(|m| m != "pytest" && !m.starts_with('_')) {
                    let name = node
                        .child_by_field_name("name")
                        .filter(|n| n.kind() == "dotted_name");
                    if let Some(name) = name {
                        let text = source.node_text(name);
                        found.push(site(name, format!("{text}s")));
                    }
                }
            }
            CorruptionKind::OffByOneArgument if node.kind() == "assert_statement" => {
                let mut first_integer = None;
                visit(node, &mut |inner| {
                    if first_integer.is_none()
                        && inner.kind() == "integer"
                        && inner.parent().is_some_and(|p| p.kind() == "argument_list")
                    {
                        first_integer = Some(inner);
                    }
                    first_integer.is_none()
                });
                if let Some(integer) = first_integer {
                    if let Ok(value) = source.node_text(integer).parse::<i64>() {
                        found.push(site(integer, (value + 1).to_string()));
                    }
                }
            }
            _ => {}
        }
        true
    });
    found
}

/// A literal changed so that it no longer equals itself: n → n + 1, x.y → x.y + 1, a string
/// with a character more, a boolean flipped.
fn changed_literal(source: &PythonSource, node: Node<'_>) -> Option<String> {
    let text = source.node_text(node);
    match node.kind() {
        "integer" => text.parse::<i64>().ok().map(|v| (v + 1).to_string()),
        "float" => text.parse::<f64>().ok().map(|v| format!("{:?}", v + 1.0)),
        "true" => Some("False".into()),
        "false" => Some("True".into()),
        "string" if !text.starts_with(['f', 'F', 'b', 'B']) && text.len() >= 2 => {
            let quote = text.chars().last()?;
            Some(format!("{}x{quote}", &text[..text.len() - 1]))
        }
        _ => None,
    }
}

fn other_exception(name: &str) -> &'static str {
    match name {
        "ValueError" => "TypeError",
        "TypeError" => "ValueError",
        "KeyError" => "IndexError",
        "IndexError" => "KeyError",
        "ZeroDivisionError" => "ValueError",
        _ => "RuntimeError",
    }
}

/// A fix or diagnose row (`load_jsonl` reads `prompt` as the user message and `chosen` as the
/// target).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FixRow {
    pub task: &'static str,
    pub module: String,
    pub code: String,
    pub prompt: String,
    pub chosen: String,
    /// The broken suite (fix rows' evaluation scores the answer against `code`).
    pub tests: String,
    pub corruption: CorruptionKind,
}

/// A validated pair a row is made from.
pub struct Pair<'a> {
    pub module: &'a str,
    pub code: &'a str,
    pub tests: &'a str,
}

/// What synthesis made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FixRowsSummary {
    pub pairs: usize,
    /// Corruptions that still passed (a change no test notices): dropped.
    pub still_passing: usize,
    pub not_corruptible: usize,
    pub excluded: usize,
    pub fix_rows: usize,
    pub diagnose_rows: usize,
}

/// One fix row and one diagnose row per pair whose corruption fails in the sandbox.
pub fn fix_rows(
    pairs: &[Pair<'_>],
    backend: &BlockingBackend,
    config: &RewardConfig,
    seed: u64,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> (Vec<FixRow>, FixRowsSummary) {
    let mut summary = FixRowsSummary {
        pairs: pairs.len(),
        ..FixRowsSummary::default()
    };
    let corrupted: Vec<(usize, Corruption)> = pairs
        .iter()
        .enumerate()
        .filter_map(|(i, pair)| {
            let c = corrupt(
                pair.tests,
                seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            if c.is_none() {
                summary.not_corruptible += 1;
            }
            c.map(|c| (i, c))
        })
        .collect();
    let inputs: Vec<ScoreInput> = corrupted
        .iter()
        .map(|(i, c)| ScoreInput {
            module: pairs[*i].module.to_string(),
            code: pairs[*i].code.to_string(),
            tests: c.tests.clone(),
        })
        .collect();
    let strict = RewardConfig {
        failing_tests: FailingTests::Invalidate,
        // Only the baseline matters: the failure text.
        ..config.clone()
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = inputs.len();
    let scored = backend.score_all(&inputs, &strict, &|_| {
        progress(
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1,
            total,
        )
    });
    let mut rows = Vec::new();
    for ((i, corruption), scored) in corrupted.into_iter().zip(scored) {
        let pair = &pairs[i];
        let report = match scored.result {
            Ok(report) => report,
            Err(_) => {
                summary.excluded += 1;
                continue;
            }
        };
        if report.valid {
            summary.still_passing += 1;
            continue;
        }
        let failures = failing_tests(&report);
        let failure = if failures.is_empty() {
            report.invalid_reason.clone().unwrap_or_default()
        } else {
            failure_text(&failures)
        };
        let fix = Task::Fix {
            module: pair.module,
            code: pair.code,
            tests: &corruption.tests,
            failure: &failure,
        };
        let diagnose = Task::Diagnose {
            module: pair.module,
            code: pair.code,
            tests: &corruption.tests,
            failure: &failure,
        };
        let row = |task: &'static str, prompt: String, chosen: String| FixRow {
            task,
            module: pair.module.to_string(),
            code: pair.code.to_string(),
            prompt,
            chosen,
            tests: corruption.tests.clone(),
            corruption: corruption.kind,
        };
        rows.push(row("fix", fix.user_message(), pair.tests.to_string()));
        rows.push(row(
            "diagnose",
            diagnose.user_message(),
            explanation(&corruption, pair.module),
        ));
        summary.fix_rows += 1;
        summary.diagnose_rows += 1;
    }
    (rows, summary)
}

/// The diagnose target: which test, what it expects, what the code does, which side is wrong.
fn explanation(c: &Corruption, module: &str) -> String {
    let (old, new, test) = (&c.old, &c.new, &c.test);
    match c.kind {
        CorruptionKind::WrongValue => format!(
            "The test `{test}` is wrong: it expects {new}, but the code returns {old}. The module is right; the expected value in the test must be {old}."
        ),
        CorruptionKind::WrongException => format!(
            "The test `{test}` is wrong: it expects {new}, but the code raises {old}. The module is right; the test must expect {old}."
        ),
        CorruptionKind::WrongImport => format!(
            "The test file is wrong: it imports `{new}` from `{module}`, which defines no such name; the function is `{old}`. The module is right; the import must name `{old}`."
        ),
        CorruptionKind::OffByOneArgument => format!(
            "The test `{test}` is wrong: it passes {new} where its expected value belongs to {old}. The module is right; the argument must be {old}."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = "import pytest\nfrom m import clip\n\n\ndef test_inside():\n    assert clip(5, 0, 9) == 5\n\n\ndef test_name():\n    assert clip('a', 'a', 'b') == 'a'\n\n\ndef test_bad():\n    with pytest.raises(ValueError):\n        clip(0, 9, 1)\n";

    #[test]
    fn each_corruption_changes_one_place_and_still_parses() {
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let c = corrupt(SUITE, seed).expect("this suite can be broken");
            assert!(PythonSource::parse("t", &c.tests).is_ok());
            assert_ne!(c.tests, SUITE);
            // One edit: the texts differ only where old became new.
            let reverted = (0..c.tests.len()).any(|p| {
                c.tests.is_char_boundary(p)
                    && c.tests[p..].starts_with(&c.new)
                    && format!("{}{}{}", &c.tests[..p], c.old, &c.tests[p + c.new.len()..]) == SUITE
            });
            assert!(reverted, "{c:?}");
            kinds.insert(format!("{:?}", c.kind));
            match c.kind {
                CorruptionKind::WrongException => {
                    assert_eq!(
                        (c.old.as_str(), c.new.as_str()),
                        ("ValueError", "TypeError")
                    )
                }
                CorruptionKind::WrongImport => assert_eq!(c.new, "clips"),
                CorruptionKind::WrongValue => {
                    assert!(["5", "'a'"].contains(&c.old.as_str()), "{c:?}");
                    assert!(["6", "'ax'"].contains(&c.new.as_str()), "{c:?}");
                }
                CorruptionKind::OffByOneArgument => {
                    assert!(c.new.parse::<i64>().unwrap() == c.old.parse::<i64>().unwrap() + 1)
                }
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        // The same seed breaks it the same way.
        assert_eq!(corrupt(SUITE, 7), corrupt(SUITE, 7));
    }
}
