//! The reward service scaled out on this machine (deploy/compose/scale.yaml): service replicas
//! and `unitforge runner` containers, no Docker socket, driven by the balancing Rust client. A
//! bounded load of 520 requests (a fifth of them hostile suites) while a service replica and a
//! runner are killed mid-run: every request answered, every score equal to a serial reference.
//! Also prints the throughput of one replica beside two (not asserted: on 2 cores it is flat).

#[path = "../sandbox/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fingerprint;
use futures::StreamExt;
use unitforge_sandbox::api::ScoreRequest;
use unitforge_sandbox::client::{Client, ClientOptions};
use unitforge_sandbox::rewards::RewardConfig;

const COMPOSE_FILE: &str = "deploy/compose/scale.yaml";

/// One compose project, taken down (with its volumes) when dropped.
struct Stack {
    project: String,
}

fn compose_command() -> Vec<String> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

impl Stack {
    fn compose(&self, args: &[&str]) {
        let command = compose_command();
        let output = Command::new(&command[0])
            .args(&command[1..])
            .args(["-f", COMPOSE_FILE, "-p", &self.project])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("COMPOSE_HTTP_TIMEOUT", "600")
            .output()
            .expect("docker compose runs");
        assert!(
            output.status.success(),
            "compose {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn up(&self, services: usize, runners: usize) {
        self.compose(&[
            "up",
            "-d",
            "--no-recreate",
            "--scale",
            &format!("service={services}"),
            "--scale",
            &format!("runner={runners}"),
        ]);
    }

    /// Container names of one compose service, sorted.
    fn containers(&self, service: &str) -> Vec<String> {
        let output = Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The base URL of each running service replica, on the frontend network.
    fn service_urls(&self) -> Vec<String> {
        self.containers("service")
            .iter()
            .map(|name| {
                let template = format!(
                    "{{{{(index .NetworkSettings.Networks \"{}_frontend\").IPAddress}}}}",
                    self.project
                );
                let output = Command::new("docker")
                    .args(["inspect", "-f", &template, name])
                    .output()
                    .unwrap();
                format!(
                    "http://{}:8080",
                    String::from_utf8_lossy(&output.stdout).trim()
                )
            })
            .collect()
    }

    fn kill(&self, container: &str) {
        let status = Command::new("docker")
            .args(["kill", container])
            .output()
            .unwrap()
            .status;
        assert!(status.success(), "docker kill {container}");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let command = compose_command();
        let _ = Command::new(&command[0])
            .args(&command[1..])
            .args([
                "-f",
                COMPOSE_FILE,
                "-p",
                &self.project,
                "down",
                "-v",
                "-t",
                "1",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
    }
}

async fn wait_healthy(urls: &[String]) {
    for url in urls {
        let client = Client::new(vec![url.clone()], ClientOptions::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while client.health().await.is_err() {
            assert!(Instant::now() < deadline, "{url} never became healthy");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A light config: a score is a handful of runs, so 520 of them fit a test.
fn light(seed: u64) -> RewardConfig {
    let mut config = RewardConfig::default();
    config.mutants.max_mutants = 3;
    config.mutants.seed = seed;
    config.runs = 1;
    config.variants.count = 1;
    config.timeouts.baseline_s = 5.0;
    config
}

/// 40 shipped pairs' suites and 12 hostile suites (each against `clamp`), every one computed
/// afresh (no cache), with `seed` in the config.
fn requests(seed: u64) -> Vec<ScoreRequest> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(root.join("data/pairs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let pair = |name: &str| {
        let dir = root.join("data/pairs").join(name);
        ScoreRequest {
            id: Some(name.to_string()),
            module: name.to_string(),
            code: std::fs::read_to_string(dir.join(format!("{name}.py"))).unwrap(),
            tests: std::fs::read_to_string(dir.join(format!("test_{name}.py"))).unwrap(),
            config: Some(light(seed)),
            no_cache: true,
        }
    };
    let mut all: Vec<ScoreRequest> = names.iter().cycle().take(40).map(|n| pair(n)).collect();
    for (i, request) in all.iter_mut().enumerate() {
        // Repeated pairs get another mutant sample, so that every request is its own content.
        request.id = Some(format!("{}-{i}", request.id.as_deref().unwrap()));
        if let Some(config) = request.config.as_mut() {
            config.mutants.seed = seed + i as u64;
        }
    }
    for hostile in [
        "read_cut_source",
        "read_host_files",
        "environment_secrets",
        "proc_environ",
        "write_outside",
        "conftest_injection",
        "patch_test_report",
        "sys_exit_in_test",
        "kill_pid1",
        "fork_exec_daemon",
        "open_socket",
        "os_exit_at_import",
    ] {
        let tests = std::fs::read_to_string(
            root.join("sandbox/tests/adversarial")
                .join(format!("{hostile}.py")),
        )
        .unwrap();
        all.push(ScoreRequest {
            id: Some(format!("hostile-{hostile}")),
            tests,
            ..pair("clamp")
        });
    }
    all
}

fn client(urls: Vec<String>, concurrency: usize) -> Client {
    Client::new(
        urls,
        ClientOptions {
            concurrency,
            attempts: 8,
            deadline: Duration::from_secs(300),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// Score every request with `concurrency` in flight; requests per second.
async fn throughput(client: &Client, requests: &[ScoreRequest], concurrency: usize) -> f64 {
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(requests)
        .map(|r| client.score(r))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    assert!(
        results.iter().all(Result::is_ok),
        "a throughput request failed"
    );
    requests.len() as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_and_a_runner_mid_load_loses_nothing_and_changes_no_score() {
    let stack = Stack {
        project: format!("ufscale{}", std::process::id()),
    };
    stack.up(1, 4);
    let one = stack.service_urls();
    assert_eq!(one.len(), 1);
    wait_healthy(&one).await;

    // The serial reference, through the stack itself, one request at a time.
    let distinct = requests(0);
    let serial = client(one.clone(), 1);
    let mut reference = BTreeMap::new();
    for request in &distinct {
        let scored = serial.score(request).await.unwrap();
        reference.insert(request.id.clone().unwrap(), fingerprint(&scored.report));
    }

    // Throughput: one replica, then two (printed, not asserted).
    let one_replica = throughput(&client(one.clone(), 8), &requests(1000), 8).await;
    stack.up(2, 4);
    let urls = stack.service_urls();
    assert_eq!(urls.len(), 2);
    wait_healthy(&urls).await;
    let two_replicas = throughput(&client(urls.clone(), 8), &requests(2000), 8).await;
    eprintln!(
        "throughput on this machine ({} cores, 4 runners): 1 replica {one_replica:.2} scores/s, 2 replicas {two_replicas:.2} scores/s",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // The load: every distinct request ten times over, 16 in flight; after 120 answers one
    // service replica and one runner are killed.
    let load: Vec<ScoreRequest> = (0..10).flat_map(|_| distinct.clone()).collect();
    let hostile = load
        .iter()
        .filter(|r| r.id.as_deref().unwrap().starts_with("hostile-"))
        .count();
    assert!(load.len() >= 500 && hostile * 10 >= load.len());
    let client = Arc::new(client(urls.clone(), 16));
    let answered = Arc::new(AtomicUsize::new(0));
    let victims = (
        stack.containers("service")[1].clone(),
        stack.containers("runner")[1].clone(),
    );
    let killer = {
        let answered = answered.clone();
        let project = stack.project.clone();
        tokio::spawn(async move {
            while answered.load(Ordering::SeqCst) < 120 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let stack = Stack { project };
            stack.kill(&victims.0);
            stack.kill(&victims.1);
            std::mem::forget(stack); // the test's own Stack takes it down
        })
    };
    let results: Vec<(String, Result<_, _>)> = futures::stream::iter(load)
        .map(|request| {
            let client = client.clone();
            let answered = answered.clone();
            async move {
                let result = client.score(&request).await;
                answered.fetch_add(1, Ordering::SeqCst);
                (request.id.unwrap(), result)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    killer.await.unwrap();

    let mut failed = Vec::new();
    let mut differing = Vec::new();
    for (id, result) in &results {
        match result {
            Ok(scored) => {
                if fingerprint(&scored.report) != reference[id] {
                    differing.push(id.clone());
                }
            }
            Err(err) => failed.push(format!("{id}: {err}")),
        }
    }
    assert_eq!(results.len(), 520);
    assert!(failed.is_empty(), "requests lost: {failed:?}");
    assert!(
        differing.is_empty(),
        "scores differ from the serial reference: {differing:?}"
    );
    // The client saw the killed replica fail and took it out of its choices.
    let replicas = client.replicas();
    assert!(
        replicas.iter().any(|(_, _, ejected)| *ejected),
        "the killed replica was never ejected: {replicas:?}"
    );
}
