//! The reward service against the real Docker engine: cache, bounded load, faults.
//!
//! The load and fault tests send bounded numbers of requests to a service on 127.0.0.1 only and
//! stop by themselves. Figures (latency percentiles) are printed, never asserted.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{docker_scorer, fingerprint, is_running, own_containers, DOCKER};
use futures::stream::{self, StreamExt};
use unitforge_sandbox::api::{ErrorKind, ScoreRequest};
use unitforge_sandbox::bollard::query_parameters::KillContainerOptionsBuilder;
use unitforge_sandbox::cache::{CacheOutcome, ResultCache};
use unitforge_sandbox::client::{Client, ClientError, ClientOptions};
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreReport;
use unitforge_sandbox::service::{Service, ServiceLimits};

struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("service task").expect("service ran");
    }
}

async fn start_service(cache: Option<&Path>, workers: usize) -> Running {
    let limits = ServiceLimits {
        active_scores: workers * 2,
        ..ServiceLimits::default()
    };
    start_service_with(cache, workers, limits).await
}

async fn start_service_with(
    cache: Option<&Path>,
    workers: usize,
    limits: ServiceLimits,
) -> Running {
    let (scorer, identity) = docker_scorer(workers).await;
    let cache = cache
        .map(|dir| ResultCache::open(Some(&dir.join("scores.redb")), 1000).expect("cache opens"));
    run_service(Service::new(
        scorer,
        identity,
        cache,
        RewardConfig::default(),
        limits,
    ))
    .await
}

/// Serve `service` on a loopback port until `Running::stop`.
async fn run_service(service: Service) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));
    Running { url, stop, task }
}

fn pair(name: &str) -> ScoreRequest {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data/pairs")
        .join(name);
    ScoreRequest {
        id: Some(name.into()),
        module: name.into(),
        code: std::fs::read_to_string(root.join(format!("{name}.py"))).unwrap(),
        tests: std::fs::read_to_string(root.join(format!("test_{name}.py"))).unwrap(),
        config: None,
        no_cache: false,
    }
}

fn hostile(name: &str) -> ScoreRequest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/adversarial")
        .join(format!("{name}.py"));
    ScoreRequest {
        id: Some(format!("hostile-{name}")),
        tests: std::fs::read_to_string(path).unwrap(),
        ..pair("clamp")
    }
}

fn light(mut request: ScoreRequest) -> ScoreRequest {
    let mut config = RewardConfig::default();
    config.mutants.max_mutants = 4;
    config.runs = 2;
    config.variants.count = 1;
    config.timeouts.baseline_s = 5.0;
    config.limits.memory_mb = 512;
    request.config = Some(config);
    request
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_come_from_the_cache_also_after_a_restart() {
    let _one = DOCKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(Some(dir.path()), 2).await;
    let client = Client::new(vec![service.url.clone()], ClientOptions::default()).unwrap();
    let request = pair("roman");
    let first = client.score(&request).await.unwrap();
    assert_eq!(first.cache, CacheOutcome::Miss);
    let second = client.score(&request).await.unwrap();
    assert_eq!(second.cache, CacheOutcome::MemoryHit);
    assert_eq!(
        second.report, first.report,
        "a cache hit returns the identical result"
    );
    let metrics = reqwest::get(format!("{}/metrics", service.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("unitforge_cache_hits_total{layer=\"memory\"} 1"),
        "{metrics}"
    );

    // Identical requests in flight are computed once.
    let other = pair("vowels");
    let (a, b) = tokio::join!(client.score(&other), client.score(&other));
    let outcomes = [a.unwrap().cache, b.unwrap().cache];
    assert!(
        outcomes.contains(&CacheOutcome::Miss) && outcomes.contains(&CacheOutcome::Shared),
        "{outcomes:?}"
    );

    service.stop().await;
    let restarted = start_service(Some(dir.path()), 2).await;
    let client = Client::new(vec![restarted.url.clone()], ClientOptions::default()).unwrap();
    let third = client.score(&request).await.unwrap();
    assert_eq!(third.cache, CacheOutcome::DiskHit);
    assert_eq!(third.report, first.report);
    let fresh = client
        .score(&ScoreRequest {
            no_cache: true,
            ..request
        })
        .await
        .unwrap();
    assert_eq!(fresh.cache, CacheOutcome::Miss);
    assert_eq!(fingerprint(&fresh.report), fingerprint(&first.report));
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_requests_lose_nothing_and_match_a_serial_reference() {
    let _one = DOCKER.lock().await;
    let names: Vec<String> = {
        let mut names: Vec<String> =
            std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/pairs"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
        names.sort();
        names
    };
    let hostile_names = [
        "fork_bomb",
        "open_socket",
        "read_host_files",
        "os_exit_at_import",
        "patch_call_and_report",
        "kill_pid1",
        "memory_bomb",
        "fork_exec_daemon",
        "read_cut_source",
        "endless_stdout",
    ];
    let distinct: Vec<ScoreRequest> = names
        .iter()
        .map(|n| light(pair(n)))
        .chain(hostile_names.iter().map(|n| light(hostile(n))))
        .collect();

    let service = start_service(None, 2).await;
    let serial = Client::new(
        vec![service.url.clone()],
        ClientOptions {
            concurrency: 1,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let mut reference = BTreeMap::new();
    for request in &distinct {
        let response = serial.score(request).await.unwrap();
        reference.insert(request.id.clone().unwrap(), fingerprint(&response.report));
    }

    const TOTAL: usize = 1000;
    const CONCURRENCY: usize = 32;
    let requests: Vec<ScoreRequest> = (0..TOTAL)
        .map(|i| {
            if i % 10 == 0 {
                distinct[names.len() + (i / 10) % hostile_names.len()].clone()
            } else {
                distinct[i % names.len()].clone()
            }
        })
        .collect();
    let hostile_share = requests
        .iter()
        .filter(|r| r.id.as_ref().unwrap().starts_with("hostile"))
        .count() as f64
        / TOTAL as f64;
    assert!(hostile_share >= 0.10);
    let client = Arc::new(
        Client::new(
            vec![service.url.clone()],
            ClientOptions {
                concurrency: CONCURRENCY,
                ..ClientOptions::default()
            },
        )
        .unwrap(),
    );
    let started = Instant::now();
    let results: Vec<(String, Result<ScoreReport, ClientError>, f64)> = stream::iter(requests)
        .map(|request| {
            let client = client.clone();
            async move {
                let sent = Instant::now();
                let result = client.score(&request).await.map(|r| r.report);
                (
                    request.id.unwrap(),
                    result,
                    sent.elapsed().as_secs_f64() * 1000.0,
                )
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(results.len(), TOTAL, "lost results");
    let mut latencies: Vec<f64> = results.iter().map(|r| r.2).collect();
    latencies.sort_by(f64::total_cmp);
    let mut differing = Vec::new();
    for (id, result, _) in &results {
        let report = result.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        if fingerprint(report) != reference[id] {
            differing.push(id.clone());
        }
    }
    println!(
        "load: {TOTAL} requests ({:.0}% hostile) at concurrency {CONCURRENCY} in {wall:.1} s: {:.1} scores/s, latency p50 {:.0} ms, p99 {:.0} ms",
        hostile_share * 100.0,
        TOTAL as f64 / wall,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    assert!(
        differing.is_empty(),
        "scores differing from the serial reference: {differing:?}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_containers_give_correct_results_or_explicit_infra_errors() {
    let _one = DOCKER.lock().await;
    let service = start_service(None, 2).await;
    let names = [
        "roman",
        "collatz",
        "inventory",
        "grades",
        "leap_year",
        "discount",
    ];
    let (serial, reference) = serial_reference(&service.url, &names).await;

    // Kill a sandbox container a second (a fresh one takes ~0.5 s to start) while 40 requests
    // are scored, so kills land in the middle of runs; but never twice before another reply
    // came back, so that on a loaded machine, where a score takes longer, the kills cannot
    // outpace every request.
    let docker = unitforge_sandbox::bollard::Docker::connect_with_local_defaults().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (docker, done, answered) = (docker.clone(), done.clone(), answered.clone());
        tokio::spawn(async move {
            let mut kills = 0;
            let mut turn = 0usize;
            let mut answered_at_last_kill = usize::MAX;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                if answered.load(Ordering::SeqCst) == answered_at_last_kill {
                    continue;
                }
                let containers: Vec<String> = own_containers(&docker)
                    .await
                    .into_iter()
                    .filter(is_running)
                    .filter_map(|c| c.id)
                    .collect();
                if let Some(id) = containers.get(turn % containers.len().max(1)) {
                    let options = KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build();
                    if docker.kill_container(id, Some(options)).await.is_ok() {
                        kills += 1;
                        answered_at_last_kill = answered.load(Ordering::SeqCst);
                    }
                }
                turn += 1;
            }
            kills
        })
    };
    let client = Arc::new(
        Client::new(
            vec![service.url.clone()],
            ClientOptions {
                concurrency: 8,
                attempts: 2,
                ..ClientOptions::default()
            },
        )
        .unwrap(),
    );
    let results = score_uncached(
        client.clone(),
        names.iter().map(|n| n.to_string()).collect(),
        40,
        8,
        answered,
    )
    .await;
    done.store(true, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    assert!(kills >= 3, "only {kills} containers were killed");
    let (correct, infra) = check_under_faults(&results, &reference);
    println!("faults: {kills} containers killed during 40 requests: {correct} correct scores, {infra} explicit infrastructure errors");
    assert_eq!(results.len(), 40);
    assert!(correct > 0);
    // The service is healthy afterwards and scores as before.
    let after = serial
        .score(&ScoreRequest {
            no_cache: true,
            ..pair("roman")
        })
        .await
        .unwrap();
    assert_eq!(fingerprint(&after.report), reference["roman"]);
    service.stop().await;
}

/// A one-at-a-time client, and each pair's score fingerprint computed through it.
async fn serial_reference(url: &str, names: &[&str]) -> (Client, BTreeMap<String, String>) {
    let serial = Client::new(
        vec![url.to_string()],
        ClientOptions {
            concurrency: 1,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let mut reference = BTreeMap::new();
    for name in names {
        reference.insert(
            name.to_string(),
            fingerprint(&serial.score(&pair(name)).await.unwrap().report),
        );
    }
    (serial, reference)
}

/// `count` uncached requests cycling over `names`, `concurrency` at a time.
/// Score `count` requests over `names`, `concurrency` at a time; `answered` counts the replies
/// as they come.
async fn score_uncached(
    client: Arc<Client>,
    names: Vec<String>,
    count: usize,
    concurrency: usize,
    answered: Arc<AtomicUsize>,
) -> Vec<(String, Result<ScoreReport, ClientError>)> {
    stream::iter((0..count).map(|i| names[i % names.len()].clone()))
        .map(|name| {
            let (client, answered) = (client.clone(), answered.clone());
            async move {
                let request = ScoreRequest {
                    no_cache: true,
                    ..pair(&name)
                };
                let result = client.score(&request).await.map(|r| r.report);
                answered.fetch_add(1, Ordering::SeqCst);
                (name, result)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Every result under faults is either the reference score or an explicit infrastructure error;
/// returns (correct, infra) counts.
fn check_under_faults(
    results: &[(String, Result<ScoreReport, ClientError>)],
    reference: &BTreeMap<String, String>,
) -> (usize, usize) {
    let (mut correct, mut infra) = (0, 0);
    for (name, result) in results {
        match result {
            Ok(report) if report.infra_errors == 0 => {
                assert_eq!(
                    fingerprint(report),
                    reference[name],
                    "{name}: a wrong score under faults"
                );
                correct += 1;
            }
            // Runs lost twice are excluded and reported, never scored as kills.
            Ok(report) => {
                assert!(
                    report.exclusions.iter().any(|e| e.contains("excluded")),
                    "{name}: {:?}",
                    report.exclusions
                );
                for result in report
                    .mutants
                    .results
                    .iter()
                    .filter(|r| r.status == unitforge_sandbox::outcome::MutantStatus::Excluded)
                {
                    assert!(!result.status.is_killed());
                }
                infra += 1;
            }
            Err(ClientError::Refused {
                kind: ErrorKind::Infra,
                ..
            })
            | Err(ClientError::Unavailable { .. }) => infra += 1,
            Err(other) => panic!("{name}: {other}"),
        }
    }
    (correct, infra)
}

/// Stop the Docker engine, start it again, and wait until it answers.
async fn restart_engine() {
    let pid = std::fs::read_to_string("/var/run/docker.pid")
        .expect("dockerd writes its pid file")
        .trim()
        .to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for _ in 0..300 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log =
        std::fs::File::create(std::env::temp_dir().join("unitforge-dockerd-restart.log")).unwrap();
    // `setsid -f` forks the engine into its own session and returns at once, so the engine
    // outlives this test like the one it replaces.
    let started = std::process::Command::new("setsid")
        .args(["-f", "/usr/sbin/dockerd"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("setsid runs");
    assert!(started.success());
    for _ in 0..600 {
        if let Ok(docker) = unitforge_sandbox::bollard::Docker::connect_with_local_defaults() {
            if docker.ping().await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Docker engine did not come back within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_restarted_under_the_service() {
    let _one = DOCKER.lock().await;
    if !Path::new("/usr/sbin/dockerd").exists() || !Path::new("/var/run/docker.pid").exists() {
        panic!("this test restarts the local Docker engine and needs /usr/sbin/dockerd and its pid file");
    }
    let service = start_service(None, 2).await;
    let names = ["roman", "inventory", "grades"];
    let (serial, reference) = serial_reference(&service.url, &names).await;
    let client = Arc::new(
        Client::new(
            vec![service.url.clone()],
            ClientOptions {
                concurrency: 4,
                attempts: 2,
                ..ClientOptions::default()
            },
        )
        .unwrap(),
    );
    let requests = tokio::spawn(score_uncached(
        client.clone(),
        names.iter().map(|n| n.to_string()).collect(),
        16,
        4,
        Arc::new(AtomicUsize::new(0)),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    restart_engine().await;
    let results = requests.await.unwrap();
    let (correct, infra) = check_under_faults(&results, &reference);
    println!("engine restart: 16 requests in flight: {correct} correct scores, {infra} explicit infrastructure errors");
    assert_eq!(results.len(), 16);
    // Afterwards the pool starts fresh containers on the restarted engine and scores as before.
    let after = serial
        .score(&ScoreRequest {
            no_cache: true,
            ..pair("roman")
        })
        .await
        .unwrap();
    assert_eq!(fingerprint(&after.report), reference["roman"]);
    let health: serde_json::Value = reqwest::get(format!("{}/healthz", service.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_backpressure_and_the_batch_stream() {
    let _one = DOCKER.lock().await;
    let limits = ServiceLimits {
        queue_limit: 2,
        active_scores: 1,
        max_code_chars: 4096,
        max_body_bytes: 64 << 10,
        max_batch: 3,
        ..ServiceLimits::default()
    };
    let service = start_service_with(None, 1, limits).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", service.url))
            .json(&body)
            .send()
    };
    let request = |name: &str| serde_json::to_value(pair(name)).unwrap();

    // Over a limit: a clear 4xx, never a score.
    let big =
        serde_json::json!({"code": "x = 1\n".repeat(1000), "tests": "def test_x():\n    pass\n"});
    let response = post("/v1/score", big).await.unwrap();
    // Longer than the schema's maxLength (this service's is 4096): 422, as any schema violation.
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "limit");
    // A body over the transport limit: 413.
    let huge = serde_json::json!({"code": "x".repeat(100 << 10), "tests": ""});
    assert_eq!(post("/v1/score", huge).await.unwrap().status(), 413);
    let mut too_many_runs = request("clamp");
    too_many_runs["config"] = serde_json::json!({"runs": 50});
    assert_eq!(
        post("/v1/score", too_many_runs).await.unwrap().status(),
        400
    );

    // A full queue: 429 with Retry-After, and nothing is lost for those admitted.
    let burst: Vec<_> = [
        "roman",
        "grades",
        "leap_year",
        "collatz",
        "discount",
        "histogram",
    ]
    .iter()
    .map(|n| post("/v1/score", request(n)))
    .collect();
    let responses = futures::future::join_all(burst).await;
    let statuses: Vec<u16> = responses
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    for response in &responses {
        let response = response.as_ref().unwrap();
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
    }

    // The batch endpoint streams one line per item.
    let batch = serde_json::json!({"items": [request("vowels"), request("stack")]});
    let text = post("/v1/score/batch", batch)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let mut indices: Vec<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
    indices.sort();
    assert_eq!(indices, vec![0, 1]);
    assert!(
        lines
            .iter()
            .all(|l| l["response"]["report"]["validity"] == 1.0),
        "{text}"
    );
    let oversized = serde_json::json!({"items": [request("vowels"), request("vowels"), request("vowels"), request("vowels")]});
    assert_eq!(
        post("/v1/score/batch", oversized).await.unwrap().status(),
        422
    );

    let openapi: serde_json::Value = reqwest::get(format!("{}/openapi.json", service.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/v1/score"]["post"].is_object());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_fails_readiness_and_sends_new_requests_elsewhere() {
    let _one = DOCKER.lock().await;
    let (scorer, identity) = docker_scorer(1).await;
    let limits = ServiceLimits::default();
    let service = Service::new(scorer, identity, None, RewardConfig::default(), limits)
        .with_drain(Duration::from_secs(3));
    let Running { url, stop, task } = run_service(service).await;
    let http = reqwest::Client::new();
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Draining: still answering, but not ready, and new scores go elsewhere (503, retryable).
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let refused = http
        .post(format!("{url}/v1/score"))
        .json(&light(pair("clamp")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "shutting_down");
    // After the drain the listener closes.
    task.await.unwrap().unwrap();
    assert!(http.get(format!("{url}/healthz")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_routes_around_a_dead_replica_and_ejects_it() {
    let _one = DOCKER.lock().await;
    let service = start_service(None, 2).await;
    let dead = "http://127.0.0.1:9".to_string();
    let client = Client::new(
        vec![dead.clone(), service.url.clone()],
        ClientOptions {
            initial_backoff: Duration::from_millis(10),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    // Twenty distinct requests: about half rank the dead replica first (rendezvous), so it
    // fails far more than the three times in a row that eject it.
    for seed in 0..20 {
        let mut request = light(pair("clamp"));
        if let Some(config) = request.config.as_mut() {
            config.mutants.seed = seed;
        }
        let response = client.score(&request).await.unwrap();
        assert_eq!(response.report.validity, 1.0, "seed {seed}");
    }
    let replicas = client.replicas();
    let (_, _, ejected) = replicas.iter().find(|(url, _, _)| *url == dead).unwrap();
    assert!(*ejected, "{replicas:?}");
    service.stop().await;
}
