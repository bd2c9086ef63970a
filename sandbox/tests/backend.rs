//! The reward backend every caller scores through: results in input order with their index,
//! unusable input told apart from infrastructure failure, the blocking wrapper and its
//! background scoring, and a service backend giving exactly what the in-process pool gives.
//!
//! Local executor (the `.venv` pytest that `make test` sets up); the service runs on 127.0.0.1.

mod common;

use common::fingerprint;
use futures::StreamExt;
use unitforge_sandbox::backend::{
    start_scorer, BackendError, BackendOptions, BlockingBackend, RewardBackend,
};
use unitforge_sandbox::executor::{ExecutorKind, ExecutorOptions};
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;
use unitforge_sandbox::service::{Service, ServiceLimits};

const CLAMP: &str = include_str!("../../data/pairs/clamp/clamp.py");
const CLAMP_TESTS: &str = include_str!("../../data/pairs/clamp/test_clamp.py");
const GCD: &str = include_str!("../../data/pairs/gcd_lcm/gcd_lcm.py");
const GCD_TESTS: &str = include_str!("../../data/pairs/gcd_lcm/test_gcd_lcm.py");

fn local(workers: usize) -> ExecutorOptions {
    ExecutorOptions {
        kind: ExecutorKind::Local,
        workers,
        ..ExecutorOptions::default()
    }
}

fn options(servers: Vec<String>) -> BackendOptions {
    BackendOptions {
        executor: local(2),
        servers,
        concurrency: 3,
    }
}

/// A valid pair, a suite that fails, a CUT that does not parse, and another valid pair.
fn candidates() -> Vec<ScoreInput> {
    let pair = |module: &str, code: &str, tests: &str| ScoreInput {
        module: module.into(),
        code: code.into(),
        tests: tests.into(),
    };
    vec![
        pair("clamp", CLAMP, CLAMP_TESTS),
        pair(
            "clamp",
            CLAMP,
            "from clamp import clamp\n\ndef test_wrong():\n    assert clamp(5, 0, 1) == 5\n",
        ),
        pair("clamp", "def clamp(:\n", CLAMP_TESTS),
        pair("gcd_lcm", GCD, GCD_TESTS),
    ]
}

/// Lighter than the defaults: the figures do not matter here, only that both paths agree.
fn config() -> RewardConfig {
    let mut config = RewardConfig::default();
    config.mutants.max_mutants = 6;
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn many_candidates_come_back_by_index_with_input_errors_apart() {
    let notices = std::sync::Mutex::new(Vec::new());
    let backend = RewardBackend::start(&options(vec![]), &|line: &str| {
        notices.lock().unwrap().push(line.to_string())
    })
    .await
    .expect("local backend starts (is .venv set up? see README)");
    assert!(
        notices
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("WARNING")),
        "the local executor warns"
    );
    assert_eq!(backend.name(), "local");
    let inputs = candidates();
    let config = config();
    let streamed: Vec<usize> = backend
        .score_many(&inputs, &config)
        .map(|scored| scored.index)
        .collect()
        .await;
    let mut sorted = streamed.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3], "every candidate exactly once");

    let seen = std::sync::atomic::AtomicUsize::new(0);
    let all = backend
        .score_all(&inputs, &config, &|_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
    assert_eq!(
        seen.into_inner(),
        4,
        "the progress hook sees every candidate"
    );
    assert_eq!(
        all.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let valid = all[0].result.as_ref().unwrap();
    assert!(valid.valid && valid.mutant_kill > 0.5, "{valid:?}");
    let failing = all[1].result.as_ref().unwrap();
    assert!(!failing.valid && failing.composite == 0.0);
    match &all[2].result {
        Err(err @ BackendError::Input(message)) => {
            assert!(!err.is_infrastructure());
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("a CUT that does not parse is unusable input: {other:?}"),
    }
    assert!(all[3].result.as_ref().unwrap().valid);
    assert!(all.iter().all(|s| s.seconds >= 0.0));
    backend.shutdown().await;
}

#[test]
fn the_blocking_backend_scores_in_the_background_and_agrees() {
    let backend = BlockingBackend::start(&options(vec![]), &|_| {}).unwrap();
    let inputs = candidates();
    let config = std::sync::Arc::new(config());
    let waited = backend.score_all(&inputs, &config, &|_| {});
    let pending = backend.submit(inputs.clone(), config.clone());
    assert_eq!(pending.len(), 4);
    // The caller is free while the runtime scores; collecting waits only for what is missing.
    let background = pending.wait();
    for (a, b) in waited.iter().zip(&background) {
        assert_eq!(a.index, b.index);
        match (&a.result, &b.result) {
            (Ok(x), Ok(y)) => assert_eq!(fingerprint(x), fingerprint(y)),
            (Err(x), Err(y)) => assert_eq!(x, y),
            other => panic!("the two paths disagree: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_backend_gives_what_the_in_process_pool_gives() {
    let (scorer, identity) = start_scorer(&local(2), &|_| {}).await.unwrap();
    let service = Service::new(
        scorer,
        identity,
        None,
        RewardConfig::default(),
        ServiceLimits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));

    let remote = RewardBackend::start(&options(vec![url]), &|_| {})
        .await
        .unwrap();
    assert_eq!(remote.name(), "service");
    assert!(remote.scorer().is_none());
    let in_process = RewardBackend::start(&options(vec![]), &|_| {})
        .await
        .unwrap();
    let inputs = candidates();
    let config = config();
    let a = in_process.score_all(&inputs, &config, &|_| {}).await;
    let b = remote.score_all(&inputs, &config, &|_| {}).await;
    for (x, y) in a.iter().zip(&b) {
        match (&x.result, &y.result) {
            (Ok(x), Ok(y)) => assert_eq!(fingerprint(x), fingerprint(y)),
            (Err(x), Err(y)) => {
                assert!(
                    !x.is_infrastructure() && !y.is_infrastructure(),
                    "{x} / {y}"
                );
            }
            other => panic!("service and pool disagree: {other:?}"),
        }
    }
    in_process.shutdown().await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_service_is_an_infrastructure_failure() {
    // Port 9 on loopback: nothing listens (discard), so every attempt is refused at once.
    let mut unreachable = options(vec!["http://127.0.0.1:9".into()]);
    unreachable.concurrency = 1;
    let backend = RewardBackend::start(&unreachable, &|_| {}).await.unwrap();
    let input = &candidates()[0];
    let err = backend.score(input, &config()).await.unwrap_err();
    assert!(err.is_infrastructure(), "{err}");
}
