//! Helpers shared by the end-to-end tests that drive the Docker engine.
#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;

use unitforge_sandbox::bollard::models::ContainerSummary;
use unitforge_sandbox::bollard::query_parameters::ListContainersOptionsBuilder;
use unitforge_sandbox::bollard::Docker;
use unitforge_sandbox::docker::POOL_LABEL;
use unitforge_sandbox::executor::{start_pool, ExecutorIdentity, ExecutorKind, ExecutorOptions};
use unitforge_sandbox::score::{ScoreReport, Scorer};

/// The Docker tests of one binary run one at a time: they count and kill this process's
/// containers, and two pools at once would also halve each one's CPU.
pub static DOCKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Everything about a score that does not depend on timing. How a mutant was killed (a failing
/// test or a timeout, whichever comes first) is left out too: it follows the test order, which
/// follows measured baseline durations.
pub fn fingerprint(report: &ScoreReport) -> String {
    let statuses: BTreeMap<_, _> = report
        .mutants
        .results
        .iter()
        .map(|r| {
            (
                r.mutant.id.clone(),
                if r.status.is_killed() {
                    "killed".to_string()
                } else {
                    format!("{:?}", r.status)
                },
            )
        })
        .collect();
    format!(
        "{} {} {} {} {:?}",
        report.validity, report.mutant_kill, report.stability, report.robustness, statuses
    )
}

/// Sandbox containers (running or not) started by this test process.
pub async fn own_containers(docker: &Docker) -> Vec<ContainerSummary> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![POOL_LABEL.to_string()])]);
    let prefix = format!("{}-", std::process::id());
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(POOL_LABEL))
                .is_some_and(|v| v.starts_with(&prefix))
        })
        .collect()
}

pub fn is_running(container: &ContainerSummary) -> bool {
    container
        .state
        .as_ref()
        .is_some_and(|s| format!("{s:?}").to_lowercase().contains("running"))
}

/// A warmed-up scorer on `workers` sandbox containers, and what it runs on (the image id).
pub async fn docker_scorer(workers: usize) -> (Scorer, ExecutorIdentity) {
    let options = ExecutorOptions {
        kind: ExecutorKind::Docker,
        workers,
        ..ExecutorOptions::default()
    };
    let (pool, identity) = start_pool(&options, &|line| eprintln!("{line}"))
        .await
        .expect("Docker engine and sandbox image (make test builds it)");
    assert!(identity.runtime.starts_with("sha256:"));
    (
        Scorer::new(pool).await.expect("sandbox containers start"),
        identity,
    )
}
