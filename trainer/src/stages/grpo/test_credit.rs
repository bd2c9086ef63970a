//! Per-test credit: the sandbox's verdict on each test function, handed to the tokens that wrote it.
//!
//! A completion's advantage says how its whole suite compared with its group's; under
//! `failing_tests: prune` the sandbox also says which test cases passed on the code under test
//! and which were pruned (failed, errored, flaky, repeated). With `grpo.test_credit` = λ > 0 each
//! token inside a test function's definition (decorators included) gets, on top of its
//! completion's advantage, λ · (p_f − p̄): p_f the share of the function's collected cases that
//! were kept, p̄ the mean of p_f over every test function the group wrote. The baseline p̄ makes
//! the term cancel on what right and wrong tests share (`def test_`, `assert f(`), so that the
//! signal lands on what differs — the inputs and expected values — and it does not, by itself,
//! push the policy towards writing fewer tests or more. Tokens outside test functions (imports,
//! helpers) get the completion's advantage alone, as do completions whose suite has no per-test
//! verdicts (a file that does not parse, a sandbox violation) or whose test functions cannot be
//! found in the completion's text. The sandbox's verdicts, not the model's text, decide p_f; the
//! text only locates each function (docs/grpo.md).

use std::collections::BTreeMap;
use std::ops::Range;

use tokenizers::Tokenizer;
use unitforge_sandbox::protocol::function_name;
use unitforge_sandbox::prune::PrunedTest;
use unitforge_sandbox::report::ScoreReport;
use unitforge_sandbox::source::PythonSource;
use unitforge_sandbox::suite::test_function_spans;

/// Kept and collected cases of each test function of a pruned score (`TestClass::test_x` or
/// `test_x`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestVerdicts {
    cases: BTreeMap<String, (usize, usize)>,
}

impl TestVerdicts {
    /// The verdicts of a score made under `failing_tests: prune`; `None` under `invalidate` or
    /// when the suite was rejected before any test ran.
    pub fn from_report(report: &ScoreReport) -> Option<Self> {
        let kept = report.kept_tests.as_ref()?;
        Self::from_pruning(kept, report.pruned_tests.as_deref().unwrap_or_default())
    }

    /// From the kept node ids and the pruned cases; `None` when there is no test at all.
    pub fn from_pruning(kept: &[String], pruned: &[PrunedTest]) -> Option<Self> {
        let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for nodeid in kept {
            let entry = cases.entry(function_name(nodeid).to_string()).or_default();
            entry.0 += 1;
            entry.1 += 1;
        }
        for test in pruned {
            cases
                .entry(function_name(&test.name).to_string())
                .or_default()
                .1 += 1;
        }
        (!cases.is_empty()).then_some(Self { cases })
    }

    /// From (function, kept, collected) triples.
    pub fn from_counts<'a>(counts: impl IntoIterator<Item = (&'a str, usize, usize)>) -> Self {
        Self {
            cases: counts
                .into_iter()
                .map(|(name, kept, collected)| (name.to_string(), (kept, collected)))
                .collect(),
        }
    }

    /// The share of a function's collected cases that were kept (`None`: no verdict on it).
    pub fn pass_share(&self, function: &str) -> Option<f64> {
        self.cases
            .get(function)
            .filter(|(_, collected)| *collected > 0)
            .map(|(kept, collected)| *kept as f64 / *collected as f64)
    }

    /// Every function's pass share.
    pub fn shares(&self) -> impl Iterator<Item = f64> + '_ {
        self.cases.keys().filter_map(|f| self.pass_share(f))
    }
}

/// p̄: the mean pass share over every test function of a group's verdicts (`None`: none).
pub fn group_baseline<'a>(verdicts: impl IntoIterator<Item = &'a TestVerdicts>) -> Option<f64> {
    let shares: Vec<f64> = verdicts
        .into_iter()
        .flat_map(TestVerdicts::shares)
        .collect();
    (!shares.is_empty()).then(|| shares.iter().sum::<f64>() / shares.len() as f64)
}

/// The byte range of `text` each of `ids`' tokens produced: token k ends where the decoded
/// prefix `ids[..=k]` stops agreeing with `text` (a token that ends inside a multi-byte
/// character ends where the last whole character did). `text` is the decoding of all of `ids`.
pub fn token_ranges(tokenizer: &Tokenizer, ids: &[u32], text: &str) -> Option<Vec<Range<usize>>> {
    let mut ranges = Vec::with_capacity(ids.len());
    let mut start = 0;
    for k in 0..ids.len() {
        let prefix = tokenizer.decode(&ids[..=k], false).ok()?;
        let agreed = prefix
            .bytes()
            .zip(text.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let end = agreed.max(start);
        ranges.push(start..end);
        start = end;
    }
    Some(ranges)
}

/// Where each test function of `tests` (the file extracted from `completion`) lies in
/// `completion`: found in order, each at or after the end of the one before. Functions whose
/// text the completion does not hold as written are left out.
pub fn function_ranges(completion: &str, tests: &str) -> Vec<(String, Range<usize>)> {
    let Ok(source) = PythonSource::parse("tests", tests) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut from = 0;
    for (name, span) in test_function_spans(&source) {
        let body = &tests[span];
        if let Some(at) = completion[from..].find(body) {
            let start = from + at;
            found.push((name, start..start + body.len()));
            from = start + body.len();
        }
    }
    found
}

/// Each completion token's credit: λ · (p_f − p̄) for a token inside test function f's text
/// (one that overlaps it), 0 elsewhere. `None` when no token lies in a function with a verdict.
pub fn token_credit(
    tokens: &[Range<usize>],
    functions: &[(String, Range<usize>)],
    verdicts: &TestVerdicts,
    baseline: f64,
    weight: f64,
) -> Option<Vec<f32>> {
    let mut credit = vec![0f32; tokens.len()];
    let mut any = false;
    for (name, span) in functions {
        let Some(share) = verdicts.pass_share(name) else {
            continue;
        };
        let value = (weight * (share - baseline)) as f32;
        for (slot, token) in credit.iter_mut().zip(tokens) {
            if token.start < span.end && span.start < token.end {
                *slot = value;
                any = true;
            }
        }
    }
    any.then_some(credit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::train_bpe;
    use unitforge_sandbox::prune::PruneReason;

    const SUITE: &str = "import pytest\nfrom m import f\n\n\
                         def test_right():\n    assert f(1) == 2\n\n\
                         @pytest.mark.parametrize('x, y', [(1, 2), (2, 5)])\n\
                         def test_table(x, y):\n    assert f(x) == y\n\n\
                         def test_wrong():\n    assert f(3) == 7\n";

    fn verdicts_of(kept: &[&str], pruned: &[&str]) -> Option<TestVerdicts> {
        let kept: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
        let pruned: Vec<PrunedTest> = pruned
            .iter()
            .map(|name| PrunedTest {
                name: name.to_string(),
                reason: PruneReason::Failed,
                detail: String::new(),
                case: None,
            })
            .collect();
        TestVerdicts::from_pruning(&kept, &pruned)
    }

    #[test]
    fn verdicts_count_each_parametrize_case() {
        let verdicts = verdicts_of(
            &[
                "test_m.py::test_right",
                "test_m.py::test_table[1-2]",
                "test_m.py::TestK::test_k",
            ],
            &["test_m.py::test_table[2-5]", "test_m.py::test_wrong"],
        )
        .unwrap();
        assert_eq!(verdicts.pass_share("test_right"), Some(1.0));
        assert_eq!(verdicts.pass_share("test_table"), Some(0.5));
        assert_eq!(verdicts.pass_share("test_wrong"), Some(0.0));
        assert_eq!(verdicts.pass_share("TestK::test_k"), Some(1.0));
        assert_eq!(verdicts.pass_share("test_absent"), None);
        assert_eq!(verdicts_of(&[], &[]), None);
        // Four functions: 1, 0.5, 0, 1 → 0.625; with a second suite's one kept function, 0.7.
        assert_eq!(group_baseline([&verdicts]), Some(0.625));
        let other = TestVerdicts::from_counts([("test_x", 1, 1)]);
        assert_eq!(group_baseline([&verdicts, &other]), Some(0.7));
        assert_eq!(group_baseline([]), None);
    }

    #[test]
    fn functions_are_found_in_the_completion_around_the_extracted_file() {
        let completion = format!("Here are the tests:\n```python\n{SUITE}```\nDone.");
        let found = function_ranges(&completion, SUITE);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["test_right", "test_table", "test_wrong"]);
        assert!(completion[found[1].1.clone()].starts_with("@pytest.mark.parametrize"));
        assert!(completion[found[1].1.clone()].ends_with("assert f(x) == y"));
        assert_eq!(
            &completion[found[2].1.clone()],
            "def test_wrong():\n    assert f(3) == 7"
        );
        // A function the extraction rewrote is left out; the others are still found.
        let rewritten = SUITE.replace("f(3) == 7", "f(3) == 8");
        let found = function_ranges(&completion, &rewritten);
        assert_eq!(found.len(), 2);
        assert!(function_ranges(&completion, "def test_(:\n").is_empty());
    }

    #[test]
    fn token_ranges_tile_the_text_and_credit_lands_on_each_functions_tokens() {
        let texts: Vec<String> = (0..40).map(|i| format!("{SUITE}# é {i}\n")).collect();
        let tokenizer = train_bpe(&texts, 400).unwrap();
        let text = format!("{SUITE}# é ü\n");
        let ids = tokenizer
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        let ranges = token_ranges(&tokenizer, &ids, &text).unwrap();
        assert_eq!(ranges.len(), ids.len());
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, text.len());
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        // Every token's bytes decode to what it produced on its own (ASCII part).
        for (range, id) in ranges.iter().zip(&ids) {
            let piece = tokenizer.decode(&[*id], false).unwrap();
            if text[range.clone()].is_ascii() && piece.is_ascii() {
                assert_eq!(&text[range.clone()], piece);
            }
        }

        let verdicts = TestVerdicts::from_counts([
            ("test_right", 1, 1),
            ("test_table", 1, 2),
            ("test_wrong", 0, 1),
        ]);
        let functions = function_ranges(&text, SUITE);
        let credit = token_credit(&ranges, &functions, &verdicts, 0.5, 0.2).unwrap();
        for ((range, value), id) in ranges.iter().zip(&credit).zip(&ids) {
            let inside = functions
                .iter()
                .find(|(_, span)| range.start < span.end && span.start < range.end);
            let expected = match inside.map(|(name, _)| name.as_str()) {
                Some("test_right") => 0.1,
                Some("test_table") => 0.0,
                Some("test_wrong") => -0.1,
                _ => 0.0,
            };
            assert!(
                (value - expected).abs() < 1e-6,
                "token {id} at {range:?} ({:?}): {value} ≠ {expected}",
                &text[range.clone()]
            );
        }
        // The imports get none; the wrong test's value tokens get the negative credit.
        let import_end = text.find("\n\n").unwrap();
        assert!(ranges
            .iter()
            .zip(&credit)
            .filter(|(r, _)| r.end <= import_end)
            .all(|(_, c)| *c == 0.0));
        let seven = text.rfind('7').unwrap();
        let at_seven = ranges.iter().position(|r| r.contains(&seven)).unwrap();
        assert!((credit[at_seven] + 0.1).abs() < 1e-6);
        // No function with a verdict: no credit.
        assert_eq!(
            token_credit(&ranges, &functions, &TestVerdicts::default(), 0.5, 0.2),
            None
        );
    }
}
