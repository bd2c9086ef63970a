//! Delivery against the real sandbox (local executor), with the model's side scripted: the
//! suites a model would write are given, so what is checked is everything after sampling —
//! pruning, oracle repair (only the expected value changes), fix rounds carrying the failing
//! tests' own failure text, the disagreements, and that what is delivered passes as written.

mod common;

use std::cell::RefCell;

use unitforge_sandbox::repair::RepairKind;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_trainer::data::prompts::PromptFormat;
use unitforge_trainer::data::tokenizer::ModelTokenizer;
use unitforge_trainer::deliver::{deliver, DeliverOptions, Delivery, ModelWriter, Origin, Writer};
use unitforge_trainer::model::decoder::Model;
use unitforge_trainer::model::generate::SamplingConfig;
use unitforge_trainer::TrainerError;

/// Answers generate prompts with `samples`, fix prompts with `fixes` in turn, and diagnose
/// prompts with a fixed sentence; keeps every prompt it was given.
struct Scripted {
    samples: Vec<String>,
    fixes: RefCell<Vec<String>>,
    prompts: RefCell<Vec<String>>,
    format: PromptFormat,
}

impl Scripted {
    fn new(samples: &[&str], fixes: &[&str]) -> Self {
        Self {
            samples: samples.iter().map(|s| s.to_string()).collect(),
            fixes: RefCell::new(fixes.iter().rev().map(|s| s.to_string()).collect()),
            prompts: RefCell::new(Vec::new()),
            format: PromptFormat::Plain,
        }
    }
}

impl Writer for Scripted {
    fn write(&mut self, prompt: &str, n: usize, _seed: u64) -> Result<Vec<String>, TrainerError> {
        self.prompts.borrow_mut().push(prompt.to_string());
        let answer = if prompt.contains("Fix the tests") {
            vec![self.fixes.borrow_mut().pop().unwrap_or_default()]
        } else if prompt.contains("Explain in a few sentences") {
            vec!["The test is wrong: grade(100) is an A.".to_string()]
        } else {
            self.samples.clone()
        };
        Ok(answer.into_iter().cycle().take(n).collect())
    }

    fn format(&self) -> &PromptFormat {
        &self.format
    }
}

const GRADE: &str = "def grade(score):\n    if score >= 90:\n        return 'A'\n    if score >= 80:\n        return 'B'\n    return 'C'\n\n\ndef parse(text):\n    if not text:\n        raise ValueError('empty')\n    return int(text)\n\n\ndef ratio(a, b):\n    return a / b\n\n\ndef letters(scores):\n    return [grade(s) for s in scores]\n\n\ndef make():\n    return object()\n";

fn options(oracle_repair: bool, fix_rounds: usize) -> DeliverOptions {
    DeliverOptions {
        n: 1,
        oracle_repair,
        fix_rounds,
        diagnose: true,
        seed: 0,
    }
}

/// A delivery for `GRADE` (scripted writer, local sandbox, default rewards).
fn deliver_grade(writer: &mut Scripted, oracle_repair: bool, fix_rounds: usize) -> Delivery {
    deliver(
        writer,
        "grade",
        GRADE,
        &common::local_backend(),
        &RewardConfig::default(),
        &options(oracle_repair, fix_rounds),
        &|_| {},
    )
    .unwrap()
}

fn fenced(tests: &str) -> String {
    format!("```python\n{tests}```\n")
}

#[test]
fn oracle_repair_changes_only_the_expected_values_and_reports_each() {
    let suite = "import pytest\nfrom grade import grade, parse, ratio, letters, make\n\n\ndef test_a():\n    assert grade(95) == 'A'\n\n\ndef test_top():\n    assert grade(100) == 'B'\n\n\ndef test_empty():\n    with pytest.raises(TypeError):\n        parse('')\n\n\ndef test_ratio():\n    assert ratio(1, 3) == pytest.approx(0.3)\n\n\ndef test_letters():\n    assert letters([95, 85, 10]) == ['A', 'A', 'C']\n\n\ndef test_object():\n    assert make() == 3\n\n\n@pytest.mark.parametrize('score, expected', [(95, 'A'), (85, 'C'), (10, 'C')])\ndef test_table(score, expected):\n    assert grade(score) == expected\n";
    let mut writer = Scripted::new(&[&fenced(suite)], &[]);
    let delivery = deliver_grade(&mut writer, true, 0);
    let tests = delivery.tests.as_deref().expect("a delivered file");
    // Exactly the wrong expectations changed; the unprintable one pruned with its test.
    let expected = suite
        .replace("grade(100) == 'B'", "grade(100) == 'A'")
        .replace("pytest.raises(TypeError)", "pytest.raises(ValueError)")
        .replace("pytest.approx(0.3)", "pytest.approx(0.3333333333333333)")
        .replace("== ['A', 'A', 'C']", "== ['A', 'B', 'C']")
        .replace("(85, 'C')", "(85, 'B')")
        .replace("def test_object():\n    assert make() == 3\n\n\n", "");
    assert_eq!(tests, expected);
    let score = delivery.score.as_ref().unwrap();
    assert!(score.valid && score.mutant_kill > 0.0, "{score:?}");
    let mut changes: Vec<(RepairKind, &str, &str)> = delivery
        .disagreements
        .iter()
        .map(|d| (d.repair.kind, d.repair.old.as_str(), d.repair.new.as_str()))
        .collect();
    changes.sort_by_key(|c| c.1.to_string());
    assert_eq!(
        changes,
        vec![
            (RepairKind::ExpectedValue, "'B'", "'A'"),
            (RepairKind::CaseValue, "'C'", "'B'"),
            (RepairKind::ApproxValue, "0.3", "0.3333333333333333"),
            (RepairKind::ExceptionType, "TypeError", "ValueError"),
            (
                RepairKind::ExpectedValue,
                "['A', 'A', 'C']",
                "['A', 'B', 'C']"
            ),
        ]
    );
    // Each disagreement carries the failure it came from and, asked, the model's diagnosis.
    let top = delivery
        .disagreements
        .iter()
        .find(|d| d.repair.test.ends_with("test_top"))
        .unwrap();
    assert!(top.failure.contains("assert 'A' == 'B'"), "{}", top.failure);
    assert!(top.diagnosis.as_deref().unwrap().contains("test is wrong"));
    assert!(delivery
        .pruned
        .iter()
        .any(|p| p.name.ends_with("test_object")));
    assert!(matches!(
        delivery.candidates[delivery.chosen.unwrap()].origin,
        Origin::Repaired { of: 0 }
    ));
}

#[test]
fn without_repair_the_failing_tests_are_pruned_and_the_rest_delivered() {
    let suite = "import pytest\nfrom grade import grade\n\n\ndef test_a():\n    assert grade(95) == 'A'\n\n\ndef test_b():\n    assert grade(85) == 'B'\n\n\ndef test_top():\n    assert grade(100) == 'B'\n\n\n@pytest.mark.parametrize(\n    'score, expected',\n    [\n        (95, 'A'),\n        (85, 'C'),  # wrong\n        (10, 'C'),\n    ],\n)\ndef test_table(score, expected):\n    assert grade(score) == expected\n";
    let mut writer = Scripted::new(&[&fenced(suite)], &[]);
    let delivery = deliver_grade(&mut writer, false, 0);
    // The wrong test goes, and so does the wrong case's entry of the table; its right cases stay.
    assert_eq!(
        delivery.tests.as_deref().unwrap(),
        "import pytest\nfrom grade import grade\n\n\ndef test_a():\n    assert grade(95) == 'A'\n\n\ndef test_b():\n    assert grade(85) == 'B'\n\n\n@pytest.mark.parametrize(\n    'score, expected',\n    [\n        (95, 'A'),\n        (10, 'C'),\n    ],\n)\ndef test_table(score, expected):\n    assert grade(score) == expected\n"
    );
    assert!(delivery.disagreements.is_empty());
    assert_eq!(delivery.pruned.len(), 2);
}

#[test]
fn a_fix_round_gets_the_tests_own_failure_and_its_answer_is_delivered() {
    // Every test fails (a wrong import name), so nothing can be kept; the fix answers right.
    let broken = "from grade import grade\n\n\ndef test_a():\n    assert grade(95) == 'B'\n\n\ndef test_c():\n    assert grade(5) == 'B'\n";
    let fixed = "from grade import grade\n\n\ndef test_a():\n    assert grade(95) == 'A'\n\n\ndef test_c():\n    assert grade(5) == 'C'\n";
    let mut writer = Scripted::new(&[&fenced(broken)], &[&fenced(fixed)]);
    let delivery = deliver_grade(&mut writer, false, 1);
    assert_eq!(delivery.tests.as_deref(), Some(fixed));
    assert!(matches!(
        delivery.candidates[delivery.chosen.unwrap()].origin,
        Origin::Fixed { of: 0, round: 1 }
    ));
    let prompts = writer.prompts.borrow();
    let fix_prompt = prompts
        .iter()
        .find(|p| p.contains("Fix the tests"))
        .unwrap();
    assert!(fix_prompt.contains("assert 'A' == 'B'"), "{fix_prompt}");
    assert!(
        fix_prompt.contains("test_grade.py:5: in test_a"),
        "{fix_prompt}"
    );
    for internal in ["unitforge_runner", "pluggy", "_pytest"] {
        assert!(!fix_prompt.contains(internal), "{internal} in {fix_prompt}");
    }
}

#[test]
fn nothing_is_delivered_when_no_test_passes() {
    let broken = "from grade import grade\n\n\ndef test_a():\n    assert grade(95) == 'B'\n";
    let mut writer = Scripted::new(&[&fenced(broken)], &[&fenced(broken)]);
    let delivery = deliver_grade(&mut writer, false, 1);
    assert!(delivery.tests.is_none() && delivery.score.is_none());
    assert_eq!(delivery.candidates.len(), 2);
}

#[test]
fn delivered_figures_follow_each_step_of_the_delivery() {
    use unitforge_trainer::data::dataset::Example;
    use unitforge_trainer::eval::delivered::evaluate_delivery;
    // Right about 95 and 85, wrong about 100: as written it fails; pruned it keeps two tests;
    // repaired it keeps all three.
    let suite = "from grade import grade\n\n\ndef test_a():\n    assert grade(95) == 'A'\n\n\ndef test_b():\n    assert grade(85) == 'B'\n\n\ndef test_top():\n    assert grade(100) == 'B'\n";
    let example = Example {
        row: 0,
        prompt: String::new(),
        target: Some("from grade import grade\n\n\ndef test_all():\n    assert [grade(s) for s in (90, 89, 80, 79)] == ['A', 'B', 'B', 'C']\n".into()),
        teacher_logprobs: None,
        code: Some(GRADE.into()),
        module: "grade".into(),
        reference_tests: None,
        prompt_from_code: true,
    };
    let mut writer = Scripted::new(&[&fenced(suite)], &[]);
    let report = evaluate_delivery(
        &mut writer,
        std::slice::from_ref(&example),
        0,
        &common::local_backend(),
        &RewardConfig::default(),
        &options(true, 0),
        "scripted",
        &[],
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    let row = &report.per_row[0];
    assert_eq!(row.greedy, None, "as written the suite fails");
    let (pruned, repaired) = (row.best_of_n.unwrap(), row.repaired.unwrap());
    assert!(pruned > 0.0 && repaired >= pruned, "{row:?}");
    assert_eq!(row.fixed, row.repaired);
    assert!(row.delivered.unwrap() > 0.0);
    assert!(row.reference.unwrap() > row.delivered.unwrap(), "{row:?}");
    assert_eq!(row.trivial, Some(0.0));
    let valid: Vec<f64> = report.steps.iter().map(|s| s.valid_rows).collect();
    assert_eq!(valid, vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);

    // Resumed from a journal holding the row: it is taken as it is, nothing is written.
    let mut idle = Scripted::new(&[], &[]);
    let mut finished = 0;
    let resumed = evaluate_delivery(
        &mut idle,
        &[example],
        0,
        &common::local_backend(),
        &RewardConfig::default(),
        &options(true, 0),
        "scripted",
        &report.per_row,
        &mut |_, _, _| {
            finished += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(resumed, report);
    assert!(idle.prompts.borrow().is_empty() && finished == 0);
}

/// A 2-layer model of random weights with its tokenizer, for `ModelWriter` (the folder holds it).
fn small_model() -> (tempfile::TempDir, Model, ModelTokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let (student, ..) = common::small_student(dir.path(), 6, 1);
    let model = Model::load_for_inference(&student, None, &candle_core::Device::Cpu).unwrap();
    let text = ModelTokenizer::load(&student).unwrap();
    (dir, model, text)
}

#[test]
fn a_model_writes_several_prompts_together_as_it_writes_each_alone() {
    let (_dir, model, text) = small_model();
    let mut writer = ModelWriter {
        model: &model,
        text: &text,
        sampling: SamplingConfig {
            max_new_tokens: 24,
            temperature: 1.2,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        },
    };
    // Prompts of different lengths (the shorter ones left-padded when decoded together).
    let prompts: Vec<(String, u64)> = [
        "def add(a, b):\n    return a + b\n",
        "x = 1",
        "def test_add():\n    assert add(1, 2) == 3\n    assert add(0, 0) == 0\n",
    ]
    .iter()
    .enumerate()
    .map(|(k, p)| (p.to_string(), 40 + k as u64))
    .collect();
    let together = writer.write_each(&prompts).unwrap();
    let alone: Vec<String> = prompts
        .iter()
        .map(|(prompt, seed)| writer.write(prompt, 1, *seed).unwrap().remove(0))
        .collect();
    assert_eq!(together, alone);
    assert!(
        together
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "different prompts and seeds give different completions: {together:?}"
    );
}

#[test]
fn prompts_without_room_go_alone_and_one_the_model_cannot_take_gets_nothing() {
    let (_dir, model, text) = small_model();
    let limit = model.config().max_position_embeddings;
    let tokens = |prompt: &str| text.tokenizer.encode(prompt, false).unwrap().len();
    let short = "x = 1".to_string();
    let medium = "def add(a, b):\n    return a + b\n".repeat(3);
    let long = "def add(a, b):\n    return a + b\n".repeat(limit);
    assert!(tokens(&long) >= limit && tokens(&medium) > tokens(&short));
    let mut writer = ModelWriter {
        model: &model,
        text: &text,
        sampling: SamplingConfig {
            // Room for every new token after the short prompt only: the medium one has less.
            max_new_tokens: limit - tokens(&short),
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        },
    };
    let prompts: Vec<(String, u64)> = [short, long, medium]
        .into_iter()
        .enumerate()
        .map(|(k, p)| (p, 7 + k as u64))
        .collect();
    let together = writer.write_each(&prompts).unwrap();
    assert_eq!(
        together[1], "",
        "no completion for a prompt the model cannot take"
    );
    for k in [0, 2] {
        let (prompt, seed) = &prompts[k];
        assert_eq!(
            together[k],
            writer.write(prompt, 1, *seed).unwrap().remove(0)
        );
    }
    assert!(writer.write(&prompts[1].0, 2, 0).unwrap().is_empty());
}
