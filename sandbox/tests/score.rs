//! End-to-end scoring: real runner processes, real pytest, the shipped pairs and hostile suites.
//!
//! Needs a Python with pytest 8.4 (the README's test command makes `.venv`).

use std::sync::Arc;

use unitforge_sandbox::local::{discover_python, LocalLauncher};
use unitforge_sandbox::outcome::{MutantStatus, Verdict};
use unitforge_sandbox::prune::{kept_file, CaseOf, FailingTests, PruneReason};
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::{ScoreError, ScoreInput, ScoreReport, Scorer};
use unitforge_sandbox::worker::WorkerPool;

async fn scorer() -> Scorer {
    let launcher = LocalLauncher::new(discover_python(None)).expect("launcher");
    let pool = Arc::new(WorkerPool::new(Arc::new(launcher), 2, 500));
    Scorer::new(pool)
        .await
        .expect("runner starts (is .venv set up? see README)")
}

const CLAMP: &str = include_str!("../../data/pairs/clamp/clamp.py");
const CLAMP_TESTS: &str = include_str!("../../data/pairs/clamp/test_clamp.py");

fn input(code: &str, tests: &str) -> ScoreInput {
    ScoreInput {
        module: "clamp".into(),
        code: code.into(),
        tests: tests.into(),
    }
}

async fn score_with(code: &str, tests: &str, config: &RewardConfig) -> ScoreReport {
    scorer()
        .await
        .score(&input(code, tests), config)
        .await
        .expect("scoring runs")
}

async fn score(code: &str, tests: &str) -> ScoreReport {
    score_with(code, tests, &RewardConfig::default()).await
}

fn runtime_only() -> RewardConfig {
    // Switch off the static reach check, to prove the runtime defences hold on their own.
    RewardConfig {
        deny_reaches_invalidate: false,
        ..RewardConfig::default()
    }
}

/// `config` with failing tests pruned instead of invalidating the suite.
fn pruned(config: RewardConfig) -> RewardConfig {
    RewardConfig {
        failing_tests: FailingTests::Prune,
        ..config
    }
}

fn assert_no_credit(report: &ScoreReport, why: &str) {
    assert_eq!(report.validity, 0.0, "{why}: {:?}", report.invalid_reason);
    assert_eq!(report.composite, 0.0, "{why}");
    assert_eq!(report.mutant_kill, 0.0, "{why}");
    assert!(report.invalid_reason.is_some(), "{why}");
}

#[tokio::test]
async fn strong_suite_is_valid_and_kills_most_mutants() {
    let report = score(CLAMP, CLAMP_TESTS).await;
    assert_eq!(report.validity, 1.0, "{:?}", report.invalid_reason);
    assert!(
        report.mutant_kill >= 0.7,
        "kill rate {}",
        report.mutant_kill
    );
    assert_eq!(report.stability, 1.0);
    assert_eq!(report.robustness, 1.0);
    assert!(report.composite > 0.6 && report.composite <= 1.0);
    let m = &report.mutants;
    assert_eq!(m.scored, m.killed + m.timeout + m.survived);
    assert_eq!(m.results.len(), m.generated);
    assert_eq!(report.baseline.as_ref().unwrap().tests.len(), 4);
}

#[tokio::test]
async fn trivial_suites_kill_nothing_and_score_zero() {
    let assert_true = "import clamp\n\ndef test_nothing():\n    assert True\n";
    let report = score(CLAMP, assert_true).await;
    assert_eq!(report.validity, 1.0);
    assert_eq!(report.mutant_kill, 0.0);
    assert_eq!(
        report.composite, 0.0,
        "fast and stable must not pay without kills"
    );
    assert!(report.speed > 0.5 && report.stability == 1.0);

    let always_equal = "from clamp import clamp\n\nclass Anything:\n    def __eq__(self, other):\n        return True\n\ndef test_eq():\n    assert Anything() == clamp(5, 0, 10)\n    assert Anything() == clamp(50, 0, 10)\n";
    let report = score(CLAMP, always_equal).await;
    assert_eq!(report.validity, 1.0);
    // It still kills the mutants that make `clamp` raise; speed, stability and robustness
    // pay only in proportion to that, so the composite never exceeds the kill rate.
    assert!(
        report.mutant_kill <= 0.2,
        "kill rate {}",
        report.mutant_kill
    );
    assert!(
        report.composite <= report.mutant_kill,
        "{} > {}",
        report.composite,
        report.mutant_kill
    );
    let strong = score(CLAMP, CLAMP_TESTS).await;
    assert!(strong.composite > 3.0 * report.composite);
}

#[tokio::test]
async fn a_suite_failing_on_the_cut_is_invalid() {
    let wrong = "from clamp import clamp\n\ndef test_wrong():\n    assert clamp(20, 0, 10) == 20\n";
    let report = score(CLAMP, wrong).await;
    assert_no_credit(&report, "failing suite");
    assert_eq!(report.baseline.as_ref().unwrap().verdict, Verdict::Failed);
    assert!(report.invalid_reason.unwrap().contains("test_wrong"));
}

const HOSTILE: &[(&str, &str)] = &[
    ("inspect.getsource", "import inspect\nimport clamp\n\ndef test_source():\n    assert 'value < low' in inspect.getsource(clamp)\n"),
    ("reads the CUT file", "import clamp\n\ndef test_source():\n    assert 'value < low' in open(clamp.__file__).read()\n"),
    ("os._exit at import", "import os\nos._exit(0)\n\ndef test_x():\n    assert False\n"),
    ("patches TestReport", "from _pytest.reports import TestReport\nTestReport.passed = property(lambda self: True)\n\ndef test_x():\n    assert False\n"),
    ("patches reporting", "import _pytest.runner\n_orig = _pytest.runner.call_and_report\ndef fake(item, when, log=True, **kw):\n    report = _orig(item, when, log=False, **kw)\n    report.outcome = 'passed'\n    item.ihook.pytest_runtest_logreport(report=report)\n    return report\n_pytest.runner.call_and_report = fake\n\ndef test_x():\n    assert False\n"),
    ("SystemExit before asserts", "from clamp import clamp\n\ndef test_x():\n    raise SystemExit(0)\n    assert clamp(1, 0, 2) == 1\n"),
    ("sys.exit before asserts", "import sys\nfrom clamp import clamp\n\ndef test_x():\n    sys.exit(0)\n    assert clamp(1, 0, 2) == 1\n"),
    ("collection fails", "from clamp import does_not_exist\n\ndef test_x():\n    assert True\n"),
    ("sleeps forever", "import time\n\ndef test_x():\n    time.sleep(10_000)\n"),
    ("pytest.exit", "import pytest\n\ndef test_x():\n    pytest.exit('done', returncode=0)\n"),
    ("all skipped", "import pytest\n\n@pytest.mark.skip\ndef test_x():\n    assert False\n"),
    ("xfail", "import pytest\n\n@pytest.mark.xfail\ndef test_x():\n    assert False\n"),
    ("no tests", "from clamp import clamp\n\nX = clamp(1, 0, 2)\n"),
    ("syntax error", "def test_x(:\n    pass\n"),
    ("empty", ""),
    ("fork bomb", "import os\n\ndef test_x():\n    while True:\n        os.fork()\n"),
    ("opens a socket", "import socket\n\ndef test_x():\n    socket.create_connection(('127.0.0.1', 9))\n"),
    ("reads host files", "def test_x():\n    assert open('/etc/hostname').read() is not None\n"),
    ("writes outside", "def test_x():\n    open('/tmp/unitforge-escape', 'w').write('x')\n"),
    ("swallows a violation", "def test_x():\n    try:\n        open('/etc/hostname').read()\n    except Exception:\n        pass\n"),
];

#[tokio::test]
async fn hostile_suites_get_no_credit() {
    let scorer = scorer().await;
    let mut timeouts = RewardConfig::default();
    timeouts.timeouts.baseline_s = 3.0;
    let runtime = RewardConfig {
        deny_reaches_invalidate: false,
        ..timeouts.clone()
    };
    for config in [
        timeouts.clone(),
        pruned(timeouts),
        runtime.clone(),
        pruned(runtime),
    ] {
        for (name, tests) in HOSTILE {
            let report = scorer
                .score(&input(CLAMP, tests), &config)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_no_credit(&report, name);
        }
    }
    assert!(!std::path::Path::new("/tmp/unitforge-escape").exists());
    // And the pool still scores a good suite exactly as before.
    let report = scorer
        .score(&input(CLAMP, CLAMP_TESTS), &RewardConfig::default())
        .await
        .unwrap();
    assert_eq!(report.validity, 1.0);
    assert_eq!(scorer.pool().stats().infra_errors, 0);
}

#[tokio::test]
async fn runtime_defences_alone_catch_source_reading() {
    let report = score_with(CLAMP, HOSTILE[0].1, &runtime_only()).await;
    assert_no_credit(&report, "getsource at run time");
    let detail = &report.baseline.as_ref().unwrap().detail;
    assert!(detail.contains("test_source"), "{detail}");
}

/// The adversarial corpus's white-box cases: tests that read the CUT's code objects, defaults or
/// frames, each spelled statically and with computed names.
fn white_box_corpus() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adversarial");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with("white_box_") && name.ends_with(".py")
        })
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    cases.sort();
    cases
}

#[tokio::test]
async fn white_box_suites_earn_nothing_at_run_time() {
    let cases = white_box_corpus();
    assert!(cases.len() >= 8, "{} white-box cases", cases.len());
    let scorer = scorer().await;
    for (name, tests) in &cases {
        for config in [
            runtime_only(),
            RewardConfig::default(),
            pruned(runtime_only()),
            pruned(RewardConfig::default()),
        ] {
            let report = scorer
                .score(&input(CLAMP, tests), &config)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_no_credit(&report, name);
        }
        // With the static check off, the runtime refusal is what made it invalid.
        let report = scorer
            .score(&input(CLAMP, tests), &runtime_only())
            .await
            .unwrap();
        let violations = &report.baseline.as_ref().unwrap().violations;
        assert!(
            violations
                .iter()
                .any(|v| v.contains("of the code under test")),
            "{name}: {violations:?}"
        );
    }
}

/// A CUT that looks at itself: it formats its own traceback and logs it, and has a generator.
const SELF_AWARE_CUT: &str = r#"import logging
import traceback

log = logging.getLogger(__name__)


def clamp(value, low, high):
    if low > high:
        raise ValueError("low must not exceed high")
    return min(max(value, low), high)


def parse(text):
    try:
        return int(text)
    except ValueError:
        log.exception("not a number: %s", text)
        return -len(traceback.format_exc().splitlines())


def evens(n):
    for i in range(n):
        yield 2 * i
"#;

/// Ordinary pytest machinery, some of which reads code objects and frames itself.
const ORDINARY_MACHINERY: &str = r#"import collections
import dataclasses

import pytest

import clamp as cut
from clamp import clamp, evens, parse


@pytest.fixture
def bounds():
    return (0, 10)


@pytest.mark.parametrize("value, expected", [(-1, 0), (5, 5), (11, 10)])
def test_parametrize_and_fixture(value, expected, bounds):
    assert clamp(value, *bounds) == expected


def test_raises():
    with pytest.raises(ValueError, match="exceed") as info:
        clamp(1, 5, 0)
    assert info.type is ValueError and "low" in str(info.value)


def test_monkeypatch(monkeypatch):
    monkeypatch.setattr(cut, "clamp", lambda value, low, high: 42)
    assert cut.clamp(1, 2, 3) == 42


def test_approx():
    assert clamp(0.1 + 0.2, 0, 1) == pytest.approx(0.3)


def test_the_cut_logs_its_own_traceback(caplog):
    assert parse("7") == 7
    assert parse("x") < 0
    assert "not a number: x" in caplog.text


def test_generator():
    assert list(evens(3)) == [0, 2, 4]


def test_own_code_and_generated_classes():
    def helper(a=3):
        return a

    Point = collections.namedtuple("Point", "x y")

    @dataclasses.dataclass
    class Box:
        size: int = 1

    assert helper.__code__.co_argcount == 1 and helper.__defaults__ == (3,)
    assert Point(1, 2).x == 1 and Box().size == 1
"#;

#[tokio::test]
async fn ordinary_pytest_machinery_keeps_working() {
    let report = score_with(SELF_AWARE_CUT, ORDINARY_MACHINERY, &runtime_only()).await;
    assert_eq!(report.validity, 1.0, "{:?}", report.invalid_reason);
    let baseline = report.baseline.as_ref().unwrap();
    assert!(baseline.violations.is_empty(), "{:?}", baseline.violations);
    assert_eq!(baseline.tests.len(), 9);
    assert!(report.mutant_kill > 0.3, "kill rate {}", report.mutant_kill);
}

#[tokio::test]
async fn a_failing_comparison_reports_its_diff() {
    // pytest's explanation of `assert [..] == [..]` asks for the (disabled) terminal reporter.
    let tests = "from clamp import clamp\n\ndef test_list():\n    assert [clamp(5, 0, 3)] == [5]\n";
    let report = score(CLAMP, tests).await;
    let baseline = report.baseline.as_ref().unwrap();
    let message = &baseline.tests[0].message;
    assert!(message.contains("At index 0 diff: 3 != 5"), "{message}");
    // The one-line detail is the assertion, not the explanation's last line.
    assert!(
        baseline
            .detail
            .contains("AssertionError: assert [3] == [5]"),
        "{}",
        baseline.detail
    );
}

#[tokio::test]
async fn a_failure_names_the_tests_frames_and_values_never_the_runners() {
    let code = "def parse(text):\n    if not text:\n        raise ValueError('empty')\n    return int(text)\n\n\ndef make():\n    return object()\n";
    let tests = "import pytest\nfrom m import parse, make\n\n\ndef test_value():\n    assert parse('12') == 13\n\n\ndef test_raises():\n    with pytest.raises(TypeError):\n        parse('')\n\n\ndef test_object():\n    assert make() == 3\n";
    let report = scorer()
        .await
        .score(
            &ScoreInput {
                module: "m".into(),
                code: code.into(),
                tests: tests.into(),
            },
            &RewardConfig::default(),
        )
        .await
        .unwrap();
    let baseline = report.baseline.as_ref().unwrap();
    let test = |name: &str| {
        baseline
            .tests
            .iter()
            .find(|t| t.nodeid.ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {:?}", baseline.tests))
    };
    for t in &baseline.tests {
        for internal in ["unitforge_runner", "pluggy", "_pytest", "_multicall"] {
            assert!(!t.message.contains(internal), "{internal} in {}", t.message);
        }
    }
    let value = test("test_value");
    assert_eq!(
        value.message,
        "test_m.py:6: in test_value\n    assert parse('12') == 13\nAssertionError: assert 12 == 13\n +  where 12 = parse('12')"
    );
    let compared = value.evidence.as_ref().unwrap().compared.as_ref().unwrap();
    assert_eq!((compared.op.as_str(), compared.line), ("==", Some(6)));
    assert_eq!(
        (compared.left.as_deref(), compared.right.as_deref()),
        (Some("12"), Some("13"))
    );
    let raises = test("test_raises");
    assert!(
        raises.message.contains("m.py:3: in parse"),
        "{}",
        raises.message
    );
    assert!(
        raises.message.ends_with("ValueError: empty"),
        "{}",
        raises.message
    );
    let evidence = raises.evidence.as_ref().unwrap();
    assert_eq!(
        (evidence.line, evidence.raised.as_deref()),
        (Some(11), Some("ValueError"))
    );
    // An object without a literal repr is no evidence.
    let compared = test("test_object")
        .evidence
        .as_ref()
        .unwrap()
        .compared
        .clone()
        .unwrap();
    assert_eq!(
        (compared.left, compared.right.as_deref()),
        (None, Some("3"))
    );
}

#[tokio::test]
async fn cut_syntax_error_is_a_clear_error() {
    let err = scorer()
        .await
        .score(
            &input("def clamp(x:\n    return x\n", CLAMP_TESTS),
            &RewardConfig::default(),
        )
        .await
        .unwrap_err();
    match err {
        ScoreError::Source(source) => assert!(source.to_string().contains("line 1"), "{source}"),
        other => panic!("expected a source error, got {other}"),
    }
}

#[tokio::test]
async fn cut_import_error_is_a_clear_error() {
    let err = scorer()
        .await
        .score(
            &input("raise RuntimeError('boom')\n", CLAMP_TESTS),
            &RewardConfig::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScoreError::CutImport(ref m) if m.contains("boom")),
        "{err}"
    );
}

#[tokio::test]
async fn a_mutant_that_loops_forever_is_a_timeout_kill() {
    let code = include_str!("../../data/pairs/gcd_lcm/gcd_lcm.py");
    let tests = include_str!("../../data/pairs/gcd_lcm/test_gcd_lcm.py");
    let report = scorer()
        .await
        .score(
            &ScoreInput {
                module: "gcd_lcm".into(),
                code: code.into(),
                tests: tests.into(),
            },
            &RewardConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.validity, 1.0);
    let timeouts: Vec<_> = report
        .mutants
        .results
        .iter()
        .filter(|r| r.status == MutantStatus::Timeout)
        .collect();
    assert!(
        !timeouts.is_empty(),
        "`while b:` → `while not (b):` or `a % b` → `a * b` must loop"
    );
    assert!(timeouts.iter().all(|r| r.status.is_killed()
        && (r.detail.contains("time budget") || r.detail.contains("timed out"))));
    assert!(
        report.mutants.timeout_s < 2.0,
        "derived from the baseline, not a fixed 10 s"
    );
    let m = &report.mutants;
    assert_eq!(
        report.mutant_kill,
        (m.killed + m.timeout) as f64 / m.scored as f64
    );
}

#[tokio::test]
async fn equivalent_mutants_are_not_scored() {
    // `if False:` code is compiled away, so mutating it leaves the bytecode unchanged.
    let code = "def f(x):\n    if False:\n        x = x + 1\n    return x * 2\n";
    let tests = "from clamp import f\n\ndef test_f():\n    assert f(3) == 6\n";
    let report = score(code, tests).await;
    assert!(
        report.mutants.equivalent >= 1,
        "{:?}",
        report.mutants.results
    );
    assert!(report
        .mutants
        .results
        .iter()
        .filter(|r| r.status == MutantStatus::Equivalent)
        .all(|r| r.mutant.line == 3 || r.mutant.line == 2));
}

#[tokio::test]
async fn flaky_suite_loses_stability() {
    let code = "def f():\n    return 1\n";
    // Order-dependent: passes only when test_a runs before test_b, which shuffling breaks.
    let tests = "from clamp import f\nSTATE = []\n\ndef test_a():\n    STATE.append(f())\n\ndef test_b():\n    assert STATE == [1]\n\ndef test_c():\n    assert f() == 1\n\ndef test_d():\n    assert f() == 1\n";
    let config = RewardConfig {
        runs: 6,
        ..RewardConfig::default()
    };
    let report = score_with(code, tests, &config).await;
    assert_eq!(report.validity, 1.0);
    assert!(report.stability < 1.0, "{:?}", report.stability_runs);
}

#[tokio::test]
async fn a_suite_depending_on_the_cut_s_text_loses_robustness() {
    let code = "def total(xs):\n    \"\"\"Sum xs.\"\"\"\n    acc = 0\n    for x in xs:\n        acc += x\n    return acc\n";
    // The docstring is public, but a variant rewrites it: the suite fails there.
    let tests = "from clamp import total\n\ndef test_total():\n    assert total([1, 2]) == 3\n    assert total.__doc__ == 'Sum xs.'\n";
    let report = score_with(code, tests, &runtime_only()).await;
    assert_eq!(report.validity, 1.0);
    assert!(report.robustness < 1.0, "{:?}", report.variants);
    // Local names live in the code object, which tests may not read at all.
    let tests = "from clamp import total\n\ndef test_total():\n    assert total([1, 2]) == 3\n    assert total.__code__.co_varnames[1] == 'acc'\n";
    let report = score_with(code, tests, &runtime_only()).await;
    assert_no_credit(&report, "reads co_varnames");
}

/// Runs a mutant with differs from the baseline in how it is run (one-line tracebacks, the
/// fastest tests first, a selection of tests, stopping at the first failure): a test that fails
/// because of that, not because of the mutant, must earn nothing. Each kill is confirmed by the
/// same tests, run the same way, passing on the original.
#[tokio::test]
async fn a_test_that_fails_only_as_mutant_runs_are_run_kills_nothing() {
    let tests = "from clamp import clamp\n\ndef test_detects_mutant_runs(request):\n    clamp(5, 0, 10)\n    assert request.config.option.tbstyle == 'native'\n";
    for guided in [true, false] {
        let mut config = runtime_only();
        config.mutants.coverage_guided = guided;
        let report = score_with(CLAMP, tests, &config).await;
        assert_eq!(report.validity, 1.0, "{:?}", report.invalid_reason);
        assert_eq!(
            report.mutant_kill, 0.0,
            "guided {guided}: {:?}",
            report.mutants
        );
        assert!(report.mutants.unconfirmed > 0, "guided {guided}");
        let unconfirmed = report
            .mutants
            .results
            .iter()
            .find(|r| r.status == MutantStatus::Unconfirmed)
            .unwrap();
        assert!(
            unconfirmed.detail.contains("the original fails too"),
            "{}",
            unconfirmed.detail
        );
    }
    // Tests that read how they are run: the selection (`session.items`: a control of only the
    // tests that ran would hold fewer) and the runner's plugin (tamper checks on or off).
    let slow = "import time\nfrom clamp import clamp\n\ndef test_slow():\n    time.sleep(0.02)\n    assert clamp(5, 0, 10) == 5\n";
    let selection = "def test_cheat(request):\n    clamp(5, 0, 10)\n    items = request.session.items\n    assert len(items) == 1 or items[0].name == 'test_slow'\n";
    let plugin = "def test_cheat(request):\n    clamp(5, 0, 10)\n    plugins = request.config.pluginmanager.get_plugins()\n    assert all(getattr(p, 'policy', 1) is not None for p in plugins)\n";
    let honest = score_with(CLAMP, slow, &runtime_only()).await;
    for cheat in [selection, plugin] {
        let tests = format!("{slow}\n{cheat}");
        let report = score_with(CLAMP, &tests, &runtime_only()).await;
        assert_eq!(report.validity, 1.0, "{:?}", report.invalid_reason);
        assert!(
            report.mutant_kill <= honest.mutant_kill,
            "{cheat}: {} > {} without it",
            report.mutant_kill,
            honest.mutant_kill
        );
    }
    // Order dependence: test_b passes only after test_a, which is slower, so mutant runs (the
    // fastest tests first) run test_b first.
    let tests = "import time\nfrom clamp import clamp\nSTATE = []\n\ndef test_a():\n    time.sleep(0.02)\n    STATE.append(clamp(5, 0, 10))\n\ndef test_b():\n    clamp(-1, 0, 10)\n    assert STATE == [5]\n";
    let report = score_with(CLAMP, tests, &runtime_only()).await;
    assert_eq!(report.validity, 1.0, "{:?}", report.invalid_reason);
    for result in &report.mutants.results {
        assert!(
            !(result.status.is_killed() && result.detail.contains("test_b")),
            "{}: {:?} {}",
            result.mutant.diff,
            result.status,
            result.detail
        );
    }
}

/// A mutant on lines no test runs is not covered: reported as such, never run, and it counts
/// as a survivor exactly as a full run would find it.
#[tokio::test]
async fn a_mutant_no_test_reaches_is_not_covered() {
    let tests = "from clamp import clamp\n\ndef test_inside():\n    assert clamp(5, 0, 10) == 5\n";
    let guided = score(CLAMP, tests).await;
    let mut full_config = RewardConfig::default();
    full_config.mutants.coverage_guided = false;
    let full = score_with(CLAMP, tests, &full_config).await;
    assert_eq!(guided.mutant_kill, full.mutant_kill);
    assert!(guided.mutants.not_covered > 0, "{:?}", guided.mutants);
    for result in &guided.mutants.results {
        if result.status == MutantStatus::NotCovered {
            // Lines 4 (the raise), 6 (return low) and 8 (return high) are never run.
            assert!([4, 6, 8].contains(&result.mutant.line), "{result:?}");
            assert_eq!(result.wall_ms, 0.0);
            assert!(
                result.detail.starts_with("no test runs line"),
                "{}",
                result.detail
            );
        }
    }
}

/// The runner places a mutant's change on the lines the compiler gives it: a constant folded
/// into a tuple over several lines lands on the tuple's first line (which the import runs), and
/// a change that moves lines cannot be placed at all.
#[tokio::test]
async fn the_runner_places_each_change_on_its_compiled_lines() {
    let original = "TABLE = (\n    (1, 'a'),\n    (2, 'b'),\n)\n\ndef f(x):\n    if x > 0:\n        return x + 1\n    return -x\n";
    let mutants = vec![
        original.replace("x + 1", "x - 1"),
        original.replace("(2, 'b')", "(3, 'b')"),
        original.replace("return -x", "return x"),
        original.replace("x > 0", "x >= 0"),
        original.replace("return -x", "\n    return -x"),
    ];
    let reply = scorer()
        .await
        .pool()
        .equivalence(original, mutants)
        .await
        .unwrap();
    let lines: Vec<Option<Vec<usize>>> = reply.results.into_iter().map(|r| r.lines).collect();
    assert_eq!(
        lines,
        vec![
            Some(vec![8]),
            Some(vec![1]),
            Some(vec![9]),
            Some(vec![7]),
            None
        ]
    );
}

/// The clamp pair's four right tests and one wrong one.
fn with_a_wrong_test() -> String {
    format!("{CLAMP_TESTS}\n\ndef test_wrong():\n    assert clamp(20, 0, 10) == 20\n")
}

fn pruned_names(report: &ScoreReport) -> Vec<(String, PruneReason)> {
    let pruned = report.pruned_tests.as_ref().expect("a pruned report");
    pruned
        .iter()
        .map(|p| (p.name.rsplit("::").next().unwrap().to_string(), p.reason))
        .collect()
}

#[tokio::test]
async fn pruning_scores_the_right_tests_below_the_right_tests_alone() {
    let scorer = scorer().await;
    let prune = pruned(RewardConfig::default());
    let wrong = with_a_wrong_test();
    let strict = scorer
        .score(&input(CLAMP, &wrong), &RewardConfig::default())
        .await
        .unwrap();
    assert_no_credit(&strict, "strict mode, one wrong test");
    // Strict reports carry none of the pruning fields: byte for byte what they were.
    let json = serde_json::to_string(&strict).unwrap();
    for key in ["kept_tests", "pruned_tests", "pass_fraction"] {
        assert!(!json.contains(key), "{key} in a strict report");
    }

    let kept = scorer.score(&input(CLAMP, &wrong), &prune).await.unwrap();
    let alone = scorer
        .score(&input(CLAMP, CLAMP_TESTS), &prune)
        .await
        .unwrap();
    assert!(kept.valid, "{:?}", kept.invalid_reason);
    assert_eq!(
        pruned_names(&kept),
        vec![("test_wrong".to_string(), PruneReason::Failed)]
    );
    let detail = &kept.pruned_tests.as_ref().unwrap()[0].detail;
    assert!(detail.contains("assert 10 == 20"), "{detail}");
    assert_eq!(kept.kept_tests.as_ref().unwrap().len(), 4);
    assert_eq!(kept.pass_fraction, Some(0.8));
    // The kept suite is the right tests: the same kills; only the discount differs (4/5).
    assert_eq!(kept.mutant_kill, alone.mutant_kill);
    assert!(kept.composite > 0.0 && kept.composite < alone.composite);
    assert!((kept.composite - 0.8 * alone.composite).abs() < 0.05 * alone.composite);
    // With nothing to prune, the prune score is the strict one.
    let strict_alone = scorer
        .score(&input(CLAMP, CLAMP_TESTS), &RewardConfig::default())
        .await
        .unwrap();
    // (Equal but for the speed reward, which is measured CPU time.)
    assert_eq!(alone.mutant_kill, strict_alone.mutant_kill);
    assert!((alone.composite - strict_alone.composite).abs() < 0.02);
    assert_eq!(alone.pass_fraction, Some(1.0));
}

#[tokio::test]
async fn each_parametrize_case_is_pruned_on_its_own() {
    let tests = "import pytest\nfrom clamp import clamp\n\n@pytest.mark.parametrize('value, expected', [(-1, 0), (5, 5), (11, 11), (11, 10)])\ndef test_cases(value, expected):\n    assert clamp(value, 0, 10) == expected\n";
    let report = score_with(CLAMP, tests, &pruned(RewardConfig::default())).await;
    assert!(report.valid, "{:?}", report.invalid_reason);
    let pruned = report.pruned_tests.as_ref().unwrap();
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert!(pruned[0].name.ends_with("test_cases[11-11]"), "{pruned:?}");
    assert_eq!(report.kept_tests.as_ref().unwrap().len(), 3);
    assert!(report.mutant_kill > 0.3, "kill rate {}", report.mutant_kill);
    // The file a user keeps drops that one entry, and passes as written with the other three.
    assert_eq!(pruned[0].case, Some(CaseOf { index: 2, of: 4 }));
    let kept = kept_file(tests, pruned).expect("a kept file");
    assert!(
        kept.contains("[(-1, 0), (5, 5), (11, 10)])"),
        "the kept file: {kept}"
    );
    let strict = score_with(CLAMP, &kept, &RewardConfig::default()).await;
    assert!(strict.valid, "{:?}", strict.invalid_reason);
    assert_eq!(strict.baseline.as_ref().unwrap().tests.len(), 3);
}

#[tokio::test]
async fn repeated_tests_count_once() {
    let once = "from clamp import clamp\n\ndef test_above():\n    assert clamp(42, 0, 10) == 10\n";
    let thrice = format!("{once}\ndef test_above_again():\n    # the same, again\n    assert clamp(42, 0,  10) == 10\n\ndef test_above_once_more():\n    assert clamp(42, 0, 10) == 10\n");
    let scorer = scorer().await;
    let prune = pruned(RewardConfig::default());
    let single = scorer.score(&input(CLAMP, once), &prune).await.unwrap();
    let repeated = scorer.score(&input(CLAMP, &thrice), &prune).await.unwrap();
    assert_eq!(
        pruned_names(&repeated),
        vec![
            ("test_above_again".to_string(), PruneReason::Duplicate),
            ("test_above_once_more".to_string(), PruneReason::Duplicate)
        ]
    );
    assert_eq!(repeated.mutant_kill, single.mutant_kill);
    // One test, repeated or not, earns at most a third: the floor on the count. (The two
    // differ only by the speed reward's measured CPU time.)
    assert!(repeated.composite <= single.composite + 0.02);
    assert!(single.composite <= single.mutant_kill / 3.0 + 1e-12);
}

#[tokio::test]
async fn a_flaky_test_that_passes_once_is_pruned() {
    // Each run reseeds `random` (0 for the baseline, then 1, 2, …): 0.844 passes, 0.134 fails.
    let flaky = "import random\nfrom clamp import clamp\n\ndef test_right():\n    assert clamp(42, 0, 10) == 10\n\ndef test_once():\n    assert random.random() > 0.5 and clamp(-1, 0, 10) == 0\n";
    let report = score_with(CLAMP, flaky, &pruned(RewardConfig::default())).await;
    assert!(report.valid, "{:?}", report.invalid_reason);
    assert_eq!(
        pruned_names(&report),
        vec![("test_once".to_string(), PruneReason::Flaky)]
    );
    assert_eq!(report.stability, 1.0);
}

#[tokio::test]
async fn a_suite_with_nothing_kept_is_invalid() {
    let tests = "from clamp import clamp\n\ndef test_a():\n    assert clamp(20, 0, 10) == 20\n\ndef test_b():\n    assert clamp(-5, 0, 10) == -5\n";
    let report = score_with(CLAMP, tests, &pruned(RewardConfig::default())).await;
    assert_no_credit(&report, "every test wrong");
    assert!(report
        .invalid_reason
        .as_ref()
        .unwrap()
        .contains("all 2 pruned"));
    assert_eq!(report.kept_tests.as_deref(), Some(&[][..]));
    assert_eq!(report.pass_fraction, Some(0.0));
}

/// Suites built to profit from pruning: none may earn more than a trivial suite (0).
#[tokio::test]
async fn pruning_cannot_be_gamed() {
    let trivial = "import clamp\n\ndef test_nothing():\n    assert True\n";
    let mut wrong_around_trivial = trivial.to_string();
    for i in 0..8 {
        wrong_around_trivial.push_str(&format!(
            "\ndef test_wrong_{i}():\n    assert clamp.clamp({i}, 0, 10) == {}\n",
            i + 100
        ));
    }
    let cases = [
        ("many failing tests around one trivial one", wrong_around_trivial),
        // Fails on the original, so it is pruned; were it run on mutants, it would "kill" them.
        (
            "fails only to be pruned",
            format!("{trivial}\ndef test_differs():\n    assert clamp.clamp(5, 0, 10) != 5\n"),
        ),
        // Its side effect makes a trivial-looking test pass: pruned, the effect is gone.
        (
            "a pruned test props another up",
            "from clamp import clamp\nSTATE = []\n\ndef test_fill():\n    STATE.append(clamp(5, 0, 10))\n    assert False\n\ndef test_reads():\n    assert STATE == [5]\n".to_string(),
        ),
        (
            "one trivial body, repeated",
            format!("{trivial}\ndef test_again():\n    assert True\n\ndef test_more():\n    assert True\n"),
        ),
        (
            "a flaky test that passes once",
            "import random\nimport clamp\n\ndef test_once():\n    assert random.random() > 0.5 and clamp.clamp(-1, 0, 10) == 0\n\ndef test_nothing():\n    assert True\n".to_string(),
        ),
    ];
    let scorer = scorer().await;
    for config in [pruned(RewardConfig::default()), pruned(runtime_only())] {
        let baseline = scorer.score(&input(CLAMP, trivial), &config).await.unwrap();
        assert_eq!(baseline.composite, 0.0);
        for (name, tests) in &cases {
            let report = scorer.score(&input(CLAMP, tests), &config).await.unwrap();
            assert!(
                report.composite <= baseline.composite,
                "{name}: {} ({:?}, pruned {:?})",
                report.composite,
                report.invalid_reason,
                report.pruned_tests
            );
            assert_eq!(
                report.mutant_kill, 0.0,
                "{name}: {:?}",
                report.mutants.results
            );
        }
    }
}
