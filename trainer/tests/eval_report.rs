//! Held-out evaluation against the real sandbox (local executor): the rows' own reference suites
//! pass, the trivial suite earns nothing, the figures follow from the per-suite scores, and a
//! repeated evaluation gives the same report (CPU times apart, which are measured).

mod common;

use std::path::PathBuf;

use unitforge_sandbox::rewards::RewardConfig;
use unitforge_trainer::data::dataset::{load_jsonl, Targets};
use unitforge_trainer::data::prompts::PromptFormat;
use unitforge_trainer::eval::report::{score_suites, EvalOptions, EvalReport, TRIVIAL_SUITE};

/// The report without what the clock decides (CPU times, the speed reward, and the composite
/// that includes it).
fn untimed(report: &EvalReport) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                // The composite has a speed term, measured like the CPU time.
                map.retain(|k, _| {
                    !k.contains("cpu_ms") && !k.contains("speed") && !k.contains("composite")
                });
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

#[test]
fn references_pass_the_trivial_suite_earns_nothing_and_reports_repeat() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/corpus/eval.jsonl");
    let examples = load_jsonl(&data, &PromptFormat::Plain, Targets::Optional).unwrap();
    let examples = &examples[..3];
    // Per row, as if a model wrote them: the reference itself, and the reference with one wrong
    // test more (invalid as written; pruned, the reference again).
    let generated: Vec<Vec<String>> = examples
        .iter()
        .map(|e| {
            let reference = e.target.clone().unwrap();
            vec![
                reference.clone(),
                format!("{reference}\n\ndef test_wrong():\n    assert 1 == 2\n"),
            ]
        })
        .collect();
    let options = EvalOptions {
        samples: 2,
        ..EvalOptions::default()
    };
    let mut config = RewardConfig::default();
    config.mutants.max_mutants = 8;
    let backend = common::local_backend();
    let report = score_suites(
        examples,
        generated.clone(),
        &options,
        &backend,
        &config,
        ("hand-written", "eval"),
        &|_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.rows, 3);
    assert_eq!(report.reference.pass_rate, 1.0, "{:?}", report.reference);
    assert!(report.reference.mean_kill_rate > 0.5);
    assert_eq!(report.trivial.pass_rate, 1.0);
    assert_eq!(report.trivial.mean_composite, 0.0);
    assert_eq!(report.trivial.mean_kill_rate, 0.0);
    assert_eq!(report.per_row[0].tests[0], generated[0][0]);
    assert!(report.per_row.iter().all(|r| r.trivial.scored.is_some()));
    // The model's figures, by hand from its per-suite scores: half the suites are the
    // references (they pass, with the references' kill rates), half fail.
    let f = &report.figures;
    assert_eq!((f.suites, f.passing), (6, 3));
    assert_eq!(f.pass_rate, 0.5);
    let reference_kills: Vec<f64> = report
        .per_row
        .iter()
        .map(|r| {
            r.reference
                .as_ref()
                .unwrap()
                .scored
                .as_ref()
                .unwrap()
                .mutant_kill
        })
        .collect();
    let mean = reference_kills.iter().sum::<f64>() / 3.0;
    assert!((f.mean_kill_rate - mean / 2.0).abs() < 1e-12);
    assert!((f.best_of_k_kill_rate - mean).abs() < 1e-12);
    assert_eq!(TRIVIAL_SUITE.lines().count(), 2);
    // Each mean has an interval over rows that holds it.
    let ci = f.mean_kill_rate_ci.unwrap();
    assert!(
        ci.low <= f.mean_kill_rate && f.mean_kill_rate <= ci.high,
        "{ci:?}"
    );
    // Pruned, the wrong test goes and the reference's kills remain: every suite kept.
    let pruned = report.pruned.as_ref().unwrap();
    assert_eq!(pruned.figures.pass_rate, 1.0, "{:?}", pruned.figures);
    assert!((pruned.figures.mean_kill_rate - mean).abs() < 1e-12);
    assert_eq!(pruned.trivial.mean_composite, 0.0);
    assert!(pruned.figures.mean_composite > f.mean_composite);

    let again = score_suites(
        examples,
        generated,
        &options,
        &backend,
        &config,
        ("hand-written", "eval"),
        &|_, _, _| {},
    )
    .unwrap();
    assert_eq!(untimed(&report), untimed(&again));
}
