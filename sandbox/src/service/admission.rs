//! Admission to the reward service: what one request may ask for (`ServiceLimits`), the shared
//! state behind every handler, the bounded queue and the cap on scores in progress, the
//! metrics they count, and the scoring of one admitted request (through the cache). The
//! service's handlers and OpenRLHF's `/get_reward` both score through `score_one`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::api::{ErrorBody, ErrorKind, ErrorResponse, ScoreRequest, ScoreResponse};
use crate::cache::{cache_key, CacheOutcome, ResultCache};
use crate::executor::ExecutorIdentity;
use crate::rewards::RewardConfig;
use crate::score::{check_module_name, ScoreError, Scorer};

/// What one request may ask for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceLimits {
    pub max_body_bytes: usize,
    /// Characters (not bytes: the schema's `maxLength` counts characters, so the two agree).
    pub max_code_chars: usize,
    pub max_tests_chars: usize,
    pub max_mutants: usize,
    pub max_variants: usize,
    pub max_runs: usize,
    pub max_baseline_s: f64,
    pub max_batch: usize,
    /// Scores admitted (in progress or waiting); beyond it requests get 429.
    pub queue_limit: usize,
    /// Scores computed at the same time; the rest wait in order.
    pub active_scores: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_code_chars: 256 << 10,
            max_tests_chars: 256 << 10,
            max_mutants: 200,
            max_variants: 8,
            max_runs: 10,
            max_baseline_s: 60.0,
            max_batch: 1000,
            queue_limit: 512,
            active_scores: 8,
        }
    }
}

/// Latency histogram bucket bounds, in seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) requests: Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    pub(crate) scores: AtomicU64,
    pub(crate) latency_buckets: [AtomicU64; BUCKETS.len()],
    pub(crate) latency_count: AtomicU64,
    pub(crate) latency_sum_micros: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, endpoint: &'static str, status: StatusCode) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((endpoint, status.as_u16()))
            .or_default() += 1;
    }

    fn latency(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

pub(crate) struct AppState {
    pub(crate) scorer: Scorer,
    pub(crate) identity: ExecutorIdentity,
    pub(crate) cache: Option<ResultCache>,
    pub(crate) default_config: RewardConfig,
    pub(crate) limits: ServiceLimits,
    pub(crate) queue: Arc<Semaphore>,
    pub(crate) active: Semaphore,
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    pub(crate) shutting_down: AtomicBool,
}

pub(crate) type Failure = (StatusCode, ErrorBody);

pub(crate) fn failure(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Failure {
    (
        status,
        ErrorBody {
            kind,
            message: message.into(),
        },
    )
}

pub(crate) fn error_response((status, body): Failure) -> Response {
    let mut response = (status, Json(ErrorResponse { error: body })).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

pub(crate) fn check_limits(
    limits: &ServiceLimits,
    request: &ScoreRequest,
    config: &RewardConfig,
) -> Result<(), Failure> {
    // What the schema says of every request, checked before any work (a batch item too).
    if request.code.is_empty() {
        return Err(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Input,
            "code under test is empty",
        ));
    }
    if let Err(err) = check_module_name(&request.module) {
        return Err(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Input,
            err.to_string(),
        ));
    }
    let too = |what: String| {
        Err(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Limit,
            what,
        ))
    };
    let (code_chars, tests_chars) = (request.code.chars().count(), request.tests.chars().count());
    if code_chars > limits.max_code_chars {
        return too(format!(
            "code is {code_chars} characters; the limit is {}",
            limits.max_code_chars
        ));
    }
    if tests_chars > limits.max_tests_chars {
        return too(format!(
            "tests are {tests_chars} characters; the limit is {}",
            limits.max_tests_chars
        ));
    }
    let over = |what: &str, asked: String, limit: String| {
        Err(failure(
            StatusCode::BAD_REQUEST,
            ErrorKind::Limit,
            format!("{what} {asked} exceeds this service's limit of {limit}"),
        ))
    };
    if config.mutants.max_mutants > limits.max_mutants {
        return over(
            "mutants.max_mutants",
            config.mutants.max_mutants.to_string(),
            limits.max_mutants.to_string(),
        );
    }
    if config.variants.count > limits.max_variants {
        return over(
            "variants.count",
            config.variants.count.to_string(),
            limits.max_variants.to_string(),
        );
    }
    if config.runs > limits.max_runs {
        return over("runs", config.runs.to_string(), limits.max_runs.to_string());
    }
    if config.timeouts.baseline_s > limits.max_baseline_s {
        return over(
            "timeouts.baseline_s",
            config.timeouts.baseline_s.to_string(),
            limits.max_baseline_s.to_string(),
        );
    }
    config
        .validate()
        .map_err(|message| failure(StatusCode::BAD_REQUEST, ErrorKind::Input, message))
}

/// Admit, queue and score one request.
pub(crate) async fn score_one(
    state: &AppState,
    request: ScoreRequest,
) -> Result<ScoreResponse, Failure> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ShuttingDown,
            "the service is shutting down",
        ));
    }
    let config = request
        .config
        .clone()
        .unwrap_or_else(|| state.default_config.clone());
    check_limits(&state.limits, &request, &config)?;
    let _queued = state.queue.clone().try_acquire_owned().map_err(|_| {
        failure(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Overloaded,
            format!(
                "the queue is full ({} scores admitted)",
                state.limits.queue_limit
            ),
        )
    })?;
    let _active = state.active.acquire().await.map_err(|_| {
        failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ShuttingDown,
            "the service is shutting down",
        )
    })?;
    let started = Instant::now();
    let input = request.input();
    let compute = || async { state.scorer.score(&input, &config).await };
    let result = match &state.cache {
        Some(cache) => {
            let key = cache_key(&state.identity.runtime, &config, &input);
            cache
                .get_or_compute(&key, request.no_cache, compute)
                .await
                .map(|(report, outcome)| ((*report).clone(), outcome))
        }
        None => compute().await.map(|report| (report, CacheOutcome::Miss)),
    };
    state.metrics.latency(started.elapsed());
    state.metrics.scores.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok((report, cache)) => Ok(ScoreResponse { cache, report }),
        Err(ScoreError::Infra(err)) => Err(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Infra,
            err.to_string(),
        )),
        Err(err) => Err(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Input,
            err.to_string(),
        )),
    }
}
