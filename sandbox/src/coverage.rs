//! Coverage-guided mutant runs: which tests can possibly kill a mutant.
//!
//! One extra run of the suite on the original records the lines of the code under test each
//! test runs ([`LineCoverage`], from the runner). The runner also says which lines a mutant
//! changes (it compares the two compilations). A test that runs none of those lines cannot see
//! the mutant, so a mutant run needs only the tests that do ([`Reach::Tests`]); a mutant no test
//! reaches is not covered and never run ([`Reach::Nothing`]). Lines every test may depend on —
//! the import of the code under test, collection, fixtures wider than one test, teardown — make
//! every test a candidate ([`Reach::Everything`]), as does anything the coverage cannot vouch
//! for: a thread in the run, a test it did not see, a change not pinned to lines.
//!
//! What this cannot see is a test that observes the code under test only through state another
//! test left behind (a module-level list one test fills and another reads without calling the
//! code under test): such a test is not credited with the mutants only the other test's calls
//! reach. Selection only ever leaves tests out, and every kill is confirmed on the original
//! (`score.rs`), so coverage can cost a suite kills but never give it one.
//!
//! Selection is used only where it saves runs ([`selection_pays`]): each distinct selection
//! that kills needs its own control run, so on a suite whose tests each cover most lines,
//! running every mutant with the whole suite (one control in all) is cheaper.

use std::collections::BTreeSet;

use crate::protocol::LineCoverage;

/// The tests that can see a mutant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Any test may: run the whole suite.
    Everything,
    /// Only these node ids run a changed line (in the baseline's order; never all of them).
    Tests(Vec<String>),
    /// No test runs a changed line: the mutant survives without a run.
    Nothing,
}

/// Which lines each test of a suite runs, checked against the baseline's tests.
#[derive(Debug, Clone)]
pub struct TestCoverage {
    shared: BTreeSet<usize>,
    /// Every baseline test with its lines, in the baseline's order.
    tests: Vec<(String, BTreeSet<usize>)>,
}

impl TestCoverage {
    /// The coverage of `baseline_tests` (node ids, in order) from a coverage run, or why it
    /// cannot guide mutant runs.
    pub fn from_run(coverage: &LineCoverage, baseline_tests: &[String]) -> Result<Self, String> {
        if !coverage.complete {
            return Err("the suite started a thread, which coverage does not follow".into());
        }
        let mut tests = Vec::with_capacity(baseline_tests.len());
        for nodeid in baseline_tests {
            let Some(lines) = coverage.tests.get(nodeid) else {
                return Err(format!("the coverage run did not run {nodeid}"));
            };
            tests.push((nodeid.clone(), lines.iter().copied().collect()));
        }
        Ok(Self {
            shared: coverage.shared.iter().copied().collect(),
            tests,
        })
    }

    /// The tests that run any of `changed` (lines of the original); `None` or no lines: a change
    /// that could not be placed, which any test may see.
    pub fn reach(&self, changed: Option<&[usize]>) -> Reach {
        let changed = match changed {
            Some(lines) if !lines.is_empty() => lines,
            _ => return Reach::Everything,
        };
        if changed.iter().any(|line| self.shared.contains(line)) {
            return Reach::Everything;
        }
        let reaching: Vec<String> = self
            .tests
            .iter()
            .filter(|(_, lines)| changed.iter().any(|line| lines.contains(line)))
            .map(|(nodeid, _)| nodeid.clone())
            .collect();
        if reaching.is_empty() {
            Reach::Nothing
        } else if reaching.len() == self.tests.len() {
            Reach::Everything
        } else {
            Reach::Tests(reaching)
        }
    }
}

/// Whether running the mutants that need a run with their reaches takes fewer runs than
/// running each with the whole suite, counting one control per distinct selection (an upper
/// bound: only selections that kill need one): reached mutants + selections < mutants + 1.
pub fn selection_pays(reaches: &[Reach]) -> bool {
    let mut selections: BTreeSet<Option<&[String]>> = BTreeSet::new();
    let mut reached = 0;
    for reach in reaches {
        match reach {
            Reach::Nothing => continue,
            Reach::Everything => selections.insert(None),
            Reach::Tests(tests) => selections.insert(Some(tests.as_slice())),
        };
        reached += 1;
    }
    reached + selections.len() < reaches.len() + usize::from(!reaches.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_pays_only_when_it_saves_runs() {
        let tests = |names: &[&str]| Reach::Tests(names.iter().map(|n| n.to_string()).collect());
        // Four mutants, whole suite: 4 runs + 1 control.
        // Two not covered, two sharing one selection: 2 runs + 1 control.
        assert!(selection_pays(&[
            Reach::Nothing,
            Reach::Nothing,
            tests(&["a"]),
            tests(&["a"]),
        ]));
        // Every mutant a different selection: 4 runs + 4 controls.
        assert!(!selection_pays(&[
            tests(&["a"]),
            tests(&["b"]),
            tests(&["a", "b"]),
            tests(&["c"]),
        ]));
        // One not covered among selections: 3 runs + 3 controls > 4 + 1.
        assert!(!selection_pays(&[
            Reach::Nothing,
            tests(&["a"]),
            tests(&["b"]),
            Reach::Everything,
        ]));
        assert!(!selection_pays(&[Reach::Everything, Reach::Everything]));
        assert!(selection_pays(&[Reach::Nothing]));
        assert!(!selection_pays(&[]));
    }

    fn coverage(complete: bool) -> LineCoverage {
        LineCoverage {
            complete,
            shared: vec![1, 2, 8],
            tests: [
                ("t::a".to_string(), vec![9, 10]),
                ("t::b".to_string(), vec![9, 11, 12]),
                ("t::c".to_string(), vec![]),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn order() -> Vec<String> {
        ["t::a", "t::b", "t::c"].map(String::from).to_vec()
    }

    #[test]
    fn a_mutant_reaches_the_tests_that_run_its_lines() {
        let c = TestCoverage::from_run(&coverage(true), &order()).unwrap();
        assert_eq!(c.reach(Some(&[10])), Reach::Tests(vec!["t::a".into()]));
        assert_eq!(
            c.reach(Some(&[10, 12])),
            Reach::Tests(vec!["t::a".into(), "t::b".into()])
        );
        // Line 9 is run by a and b but not c: still a selection.
        assert_eq!(
            c.reach(Some(&[9])),
            Reach::Tests(vec!["t::a".into(), "t::b".into()])
        );
        assert_eq!(c.reach(Some(&[13])), Reach::Nothing);
    }

    #[test]
    fn shared_lines_and_unplaced_changes_reach_every_test() {
        let c = TestCoverage::from_run(&coverage(true), &order()).unwrap();
        assert_eq!(c.reach(Some(&[8])), Reach::Everything);
        assert_eq!(c.reach(Some(&[13, 2])), Reach::Everything);
        assert_eq!(c.reach(None), Reach::Everything);
        assert_eq!(c.reach(Some(&[])), Reach::Everything);
    }

    #[test]
    fn incomplete_coverage_guides_nothing() {
        assert!(TestCoverage::from_run(&coverage(false), &order()).is_err());
        let mut more = order();
        more.push("t::d".into());
        let err = TestCoverage::from_run(&coverage(true), &more).unwrap_err();
        assert!(err.contains("t::d"), "{err}");
    }

    #[test]
    fn a_selection_of_every_test_is_the_whole_suite() {
        let mut all = coverage(true);
        all.tests.insert("t::c".into(), vec![10]);
        let c = TestCoverage::from_run(&all, &order()).unwrap();
        assert_eq!(c.reach(Some(&[9, 10])), Reach::Everything);
    }
}
