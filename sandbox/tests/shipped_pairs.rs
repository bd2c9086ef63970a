//! Every shipped pair: its mutants and variants parse and compile, and its suite is valid.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use unitforge_sandbox::local::{discover_python, LocalLauncher};
use unitforge_sandbox::mutant::{generate_mutants, MutantConfig};
use unitforge_sandbox::outcome::MutantStatus;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::{ScoreInput, Scorer};
use unitforge_sandbox::source::{parses_cleanly, PythonSource};
use unitforge_sandbox::variant::{generate_variants, VariantConfig};
use unitforge_sandbox::worker::WorkerPool;

fn pairs() -> Vec<(String, String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/pairs");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let code =
                std::fs::read_to_string(root.join(&name).join(format!("{name}.py"))).unwrap();
            let tests =
                std::fs::read_to_string(root.join(&name).join(format!("test_{name}.py"))).unwrap();
            (name, code, tests)
        })
        .collect()
}

/// A scorer over two local runner processes.
async fn local_scorer() -> Scorer {
    let launcher = LocalLauncher::new(discover_python(None)).unwrap();
    Scorer::new(Arc::new(WorkerPool::new(Arc::new(launcher), 2, 500)))
        .await
        .unwrap()
}

#[test]
fn at_least_thirty_pairs_ship() {
    assert!(pairs().len() >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutant_and_variant_parses_and_compiles() {
    let launcher = LocalLauncher::new(discover_python(None)).unwrap();
    let pool = WorkerPool::new(Arc::new(launcher), 1, 1000);
    let mut operators_seen = BTreeSet::new();
    for (name, code, _) in pairs() {
        let source = PythonSource::parse(&name, &code).unwrap();
        let (mutants, _) = generate_mutants(
            &source,
            &MutantConfig {
                max_mutants: usize::MAX,
                ..MutantConfig::default()
            },
        );
        let mut sources: Vec<String> = mutants.iter().map(|m| m.apply(&code)).collect();
        operators_seen.extend(mutants.iter().map(|m| m.operator));
        let variants = generate_variants(&source, &VariantConfig { count: 4, seed: 5 });
        assert!(!variants.is_empty(), "{name} has no variant");
        sources.extend(variants.into_iter().map(|v| v.source));
        assert!(sources.iter().all(|s| parses_cleanly(s)), "{name}");
        let reply = pool.equivalence(&code, sources).await.unwrap();
        for result in &reply.results {
            assert!(result.compiles, "{name}: {:?}", result.error);
        }
    }
    assert!(
        operators_seen.len() >= 14,
        "operators exercised by the shipped pairs: {operators_seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_suite_is_valid_and_kills_mutants() {
    let scorer = local_scorer().await;
    let config = RewardConfig::default();
    for (name, code, tests) in pairs() {
        let report = scorer
            .score(
                &ScoreInput {
                    module: name.clone(),
                    code,
                    tests,
                },
                &config,
            )
            .await
            .unwrap();
        assert_eq!(report.validity, 1.0, "{name}: {:?}", report.invalid_reason);
        assert_eq!(report.robustness, 1.0, "{name}: {:?}", report.variants);
        assert_eq!(report.stability, 1.0, "{name}");
        assert!(
            report.mutant_kill >= 0.5,
            "{name}: kill rate {}",
            report.mutant_kill
        );
        assert_eq!(
            report.mutants.excluded, 0,
            "{name}: {:?}",
            report.exclusions
        );
    }
}

/// The suite with only its first test function: the others are renamed so that pytest and the
/// static facts no longer see them. A weak suite leaves lines unrun, as model output often does.
fn first_test_only(tests: &str) -> String {
    let mut seen = false;
    tests
        .lines()
        .map(|line| {
            let is_test = line.trim_start().starts_with("def test_");
            if is_test && seen {
                line.replacen("def test_", "def dropped_", 1)
            } else {
                seen |= is_test;
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Coverage-guided mutant runs decide every mutant as running the whole suite does: on every
/// shipped pair, with its full suite and with its first test only (where many mutants are not
/// covered and the rest run a selection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_guided_runs_decide_every_mutant_as_full_runs_do() {
    let scorer = local_scorer().await;
    let guided = RewardConfig::default();
    assert!(guided.mutants.coverage_guided, "the default");
    let mut full = RewardConfig::default();
    full.mutants.coverage_guided = false;
    let (mut not_covered, mut compared, mut selecting) = (0, 0, 0);
    for (name, code, tests) in pairs() {
        for (suite, tests) in [("full", tests.clone()), ("first", first_test_only(&tests))] {
            let input = ScoreInput {
                module: name.clone(),
                code: code.clone(),
                tests,
            };
            let with = scorer.score(&input, &guided).await.unwrap();
            let without = scorer.score(&input, &full).await.unwrap();
            assert_eq!(with.valid, without.valid, "{name} ({suite})");
            assert_eq!(with.mutant_kill, without.mutant_kill, "{name} ({suite})");
            assert_eq!(
                with.mutants.unconfirmed + with.mutants.excluded,
                0,
                "{name}"
            );
            assert!(!without.mutants.selected_by_coverage, "{name}");
            selecting += usize::from(with.mutants.selected_by_coverage);
            for (a, b) in with.mutants.results.iter().zip(&without.mutants.results) {
                assert_eq!(a.mutant.id, b.mutant.id);
                let survived = |s: MutantStatus| {
                    matches!(s, MutantStatus::Survived | MutantStatus::NotCovered)
                };
                assert!(
                    a.status.is_killed() == b.status.is_killed()
                        && survived(a.status) == survived(b.status),
                    "{name} ({suite}) {}: guided {:?} ({}), full {:?} ({})",
                    b.mutant.diff,
                    a.status,
                    a.detail,
                    b.status,
                    b.detail
                );
                compared += 1;
                not_covered += usize::from(a.status == MutantStatus::NotCovered);
            }
        }
    }
    assert!(compared > 1000, "{compared} mutants compared");
    assert!(not_covered > 50, "{not_covered} mutants not covered");
    assert!(selecting > 10, "selection was used on {selecting} suites");
    eprintln!("{compared} mutants compared, {not_covered} not covered, selection used on {selecting} suites");
}
