//! The Docker executor against the adversarial corpus (`tests/adversarial/*.py`).
//!
//! Each case states its expected classification on its first line (`# expect: …`). After each
//! case the same pool must score a good suite exactly as a fresh pool does, and at the end no
//! sandbox container may be left behind. Needs the Docker engine and the sandbox image, which
//! `make test` builds.

mod common;

use common::{docker_scorer, fingerprint, is_running, own_containers, DOCKER};
use std::path::PathBuf;
use std::time::Duration;

use unitforge_sandbox::executor::{start_pool, ExecutorKind, ExecutorOptions};
use unitforge_sandbox::outcome::Verdict;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::{ScoreInput, ScoreReport, Scorer};

const CLAMP: &str = include_str!("../../data/pairs/clamp/clamp.py");
const CLAMP_TESTS: &str = include_str!("../../data/pairs/clamp/test_clamp.py");

fn input(tests: &str) -> ScoreInput {
    ScoreInput {
        module: "clamp".into(),
        code: CLAMP.into(),
        tests: tests.into(),
    }
}

fn corpus() -> Vec<(String, String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/adversarial");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "py"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
                .trim()
                .to_string();
            (
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                expect,
                text,
            )
        })
        .collect();
    cases.sort();
    cases
}

fn classification(report: &ScoreReport) -> String {
    let baseline = report.baseline.as_ref();
    if baseline.is_some_and(|b| !b.violations.is_empty()) {
        return "violation".into();
    }
    match baseline.map(|b| b.verdict) {
        Some(Verdict::TimedOut) => "timed_out",
        Some(Verdict::Crashed) => "crashed",
        Some(Verdict::Untrustworthy) => "untrustworthy",
        Some(Verdict::Failed) => "failed",
        Some(Verdict::Passed) => "passed",
        Some(Verdict::CutError) => "cut_error",
        None => "not_run",
    }
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_corpus_gets_no_credit_and_leaves_no_trace() {
    let _one_at_a_time = DOCKER.lock().await;
    let cases = corpus();
    assert!(cases.len() >= 20, "the corpus has {} cases", cases.len());
    let fresh = docker_scorer(2).await.0;
    let reference = fresh
        .score(&input(CLAMP_TESTS), &RewardConfig::default())
        .await
        .unwrap();
    assert_eq!(reference.validity, 1.0);
    fresh.pool().shutdown(Duration::from_secs(5)).await;

    let scorer = docker_scorer(2).await.0;
    let mut hostile = RewardConfig {
        deny_reaches_invalidate: false,
        ..RewardConfig::default()
    };
    hostile.timeouts.baseline_s = 3.0;
    hostile.limits.memory_mb = 512;
    let mut wrong = Vec::new();
    for (name, expect, tests) in &cases {
        let report = scorer
            .score(&input(tests), &hostile)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = classification(&report);
        if report.validity != 0.0 || report.composite != 0.0 || &got != expect {
            wrong.push(format!(
                "{name}: expected {expect}, got {got} (validity {}, {:?})",
                report.validity, report.invalid_reason
            ));
        }
        let after = scorer
            .score(&input(CLAMP_TESTS), &RewardConfig::default())
            .await
            .unwrap_or_else(|e| panic!("after {name}: {e}"));
        assert_eq!(
            fingerprint(&after),
            fingerprint(&reference),
            "the pool scored differently after {name}"
        );
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    assert_eq!(
        scorer.pool().stats().infra_errors,
        0,
        "{:?}",
        scorer.pool().stats()
    );

    // The static check alone also refuses the cases that reach for forbidden things.
    let report = scorer
        .score(
            &input(&cases.iter().find(|c| c.0 == "read_cut_source").unwrap().2),
            &RewardConfig::default(),
        )
        .await
        .unwrap();
    assert!(report.invalid_reason.unwrap().contains("reaches for"));

    scorer.pool().shutdown(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let docker = unitforge_sandbox::bollard::Docker::connect_with_local_defaults().unwrap();
    let mine: Vec<_> = own_containers(&docker)
        .await
        .into_iter()
        .filter(is_running)
        .collect();
    assert!(mine.is_empty(), "containers left running: {mine:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_and_local_executors_agree() {
    let _one_at_a_time = DOCKER.lock().await;
    let docker = docker_scorer(2).await.0;
    let options = ExecutorOptions {
        kind: ExecutorKind::Local,
        workers: 2,
        ..ExecutorOptions::default()
    };
    let (pool, _) = start_pool(&options, &|_| {}).await.unwrap();
    let local = Scorer::new(pool).await.unwrap();
    for pair in ["roman", "inventory", "collatz"] {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../data/pairs")
            .join(pair);
        let input = ScoreInput {
            module: pair.into(),
            code: std::fs::read_to_string(root.join(format!("{pair}.py"))).unwrap(),
            tests: std::fs::read_to_string(root.join(format!("test_{pair}.py"))).unwrap(),
        };
        let a = docker
            .score(&input, &RewardConfig::default())
            .await
            .unwrap();
        let b = local.score(&input, &RewardConfig::default()).await.unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b), "{pair}");
        assert_eq!(a.environment.executor, "docker");
    }
    docker.pool().shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_container_killed_meanwhile_is_replaced_before_use() {
    let _one_at_a_time = DOCKER.lock().await;
    let docker = unitforge_sandbox::bollard::Docker::connect_with_local_defaults().unwrap();
    let launcher = unitforge_sandbox::docker::DockerLauncher::new(
        docker.clone(),
        sandbox_image(&docker).await,
        Default::default(),
    );
    let pool = unitforge_sandbox::worker::WorkerPool::new(std::sync::Arc::new(launcher), 1, 500)
        .with_health_check_after(Duration::ZERO);
    let scorer = Scorer::new(std::sync::Arc::new(pool)).await.unwrap();
    let before = scorer.pool().stats();
    for container in own_containers(&docker).await.into_iter().filter(is_running) {
        let id = container.id.expect("listed containers have ids");
        docker
            .kill_container(
                &id,
                None::<unitforge_sandbox::bollard::query_parameters::KillContainerOptions>,
            )
            .await
            .unwrap();
    }
    let report = scorer
        .score(&input(CLAMP_TESTS), &RewardConfig::default())
        .await
        .unwrap();
    assert_eq!(report.validity, 1.0);
    let after = scorer.pool().stats();
    assert_eq!(
        after.retries, before.retries,
        "the dead worker was found by its health check, not by a run"
    );
    assert!(after.workers_replaced > before.workers_replaced);
    assert_eq!(report.infra_errors, 0);
    scorer.pool().shutdown(Duration::from_secs(5)).await;
}

/// The sandbox image's tag, built first if the engine lacks it (a test run alone, before any
/// other test started a pool, must not depend on one having built it).
async fn sandbox_image(docker: &unitforge_sandbox::bollard::Docker) -> String {
    let tag = unitforge_sandbox::image::sandbox_image_tag();
    unitforge_sandbox::image::ensure_image(docker, &tag, &|line| eprintln!("{line}"))
        .await
        .expect("the sandbox image is present or builds");
    tag
}

/// A stopped sandbox-labelled container owned by `instance` on `host` (never started).
async fn labelled_container(
    docker: &unitforge_sandbox::bollard::Docker,
    instance: &str,
    host: &str,
) -> String {
    use unitforge_sandbox::bollard::models::ContainerCreateBody;
    use unitforge_sandbox::docker::{OWNER_HOST_LABEL, POOL_LABEL};
    let body = ContainerCreateBody {
        image: Some(sandbox_image(docker).await),
        network_disabled: Some(true),
        labels: Some(std::collections::HashMap::from([
            (POOL_LABEL.to_string(), instance.to_string()),
            (OWNER_HOST_LABEL.to_string(), host.to_string()),
        ])),
        ..Default::default()
    };
    docker
        .create_container(
            None::<unitforge_sandbox::bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .expect("create a labelled container")
        .id
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_cleanup_removes_only_containers_whose_owner_is_gone() {
    let _lock = DOCKER.lock().await;
    let docker = unitforge_sandbox::bollard::Docker::connect_with_local_defaults().unwrap();
    let here = unitforge_sandbox::docker::host_name();
    // Owners: a dead process on this host; a container (by its id-like host name) that no
    // longer runs; a host this process cannot see; this very process.
    let dead_here = labelled_container(&docker, "4194304-1", &here).await;
    let gone_container = labelled_container(&docker, "1-1", "0123456789ab").await;
    let elsewhere = labelled_container(&docker, "1-1", "another-machine").await;
    let ours = labelled_container(&docker, &format!("{}-1", std::process::id()), &here).await;
    unitforge_sandbox::docker::remove_stale_containers(&docker)
        .await
        .unwrap();
    let exists = |id: String| {
        let docker = docker.clone();
        async move {
            docker
                .inspect_container(
                    &id,
                    None::<unitforge_sandbox::bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .is_ok()
        }
    };
    assert!(
        !exists(dead_here).await,
        "a dead local owner's container goes"
    );
    assert!(
        !exists(gone_container).await,
        "a gone container's sandboxes go"
    );
    assert!(
        exists(elsewhere.clone()).await,
        "an owner we cannot see keeps its own"
    );
    assert!(exists(ours.clone()).await, "a live owner keeps its own");
    for id in [elsewhere, ours] {
        unitforge_sandbox::docker::remove_container(&docker, &id).await;
    }
}
