//! The reward service: the scorer behind JSON over HTTP (axum).
//!
//! `POST /v1/score`, `POST /v1/score/batch` (newline-delimited JSON, streamed as scores
//! finish), `GET /healthz`, `GET /metrics` (Prometheus text), `GET /openapi.json`. Every limit
//! gives a clear 4xx; the queue is bounded (429 with `Retry-After` when full), so memory is too;
//! scores in progress are capped so queued ones wait in order; shutdown stops accepting, lets
//! requests in flight finish (or fail cleanly) and removes the containers.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;

use crate::api::{BatchLine, BatchRequest, ErrorKind, Health, ScoreRequest};
use crate::cache::ResultCache;
use crate::executor::ExecutorIdentity;
use crate::protocol::PROTOCOL_VERSION;
use crate::rewards::RewardConfig;
use crate::score::Scorer;

mod admission;
mod openrlhf;

pub use admission::ServiceLimits;
use admission::{check_limits, error_response, failure, score_one, AppState, Metrics, BUCKETS};

pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// A configured service, ready to serve on a listener.
#[derive(Clone)]
pub struct Service {
    state: Arc<AppState>,
    drain: Duration,
}

impl Service {
    /// `cache: None` disables caching (`--no-cache`).
    pub fn new(
        scorer: Scorer,
        identity: ExecutorIdentity,
        cache: Option<ResultCache>,
        default_config: RewardConfig,
        limits: ServiceLimits,
    ) -> Self {
        let state = AppState {
            scorer,
            identity,
            cache,
            default_config,
            queue: Arc::new(Semaphore::new(limits.queue_limit.max(1))),
            active: Semaphore::new(limits.active_scores.max(1)),
            limits,
            metrics: Metrics::default(),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        };
        Self {
            state: Arc::new(state),
            drain: Duration::ZERO,
        }
    }

    /// After the shutdown signal, keep answering for `drain` — 503 to new scores, 503 from
    /// `/healthz` (readiness fails) — before the listener closes, so that a load balancer or a
    /// Kubernetes Service stops routing here first; requests in flight finish either way.
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/score", post(score_handler))
            .route("/v1/score/batch", post(batch_handler))
            .route("/get_reward", post(openrlhf::get_reward_handler))
            .route("/healthz", get(health_handler))
            .route("/metrics", get(metrics_handler))
            .route(
                "/openapi.json",
                get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
            )
            .layer(DefaultBodyLimit::max(self.state.limits.max_body_bytes))
            .with_state(self.state.clone())
    }

    /// Serve until `shutdown` resolves; then finish the requests in flight and stop the workers.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let drain = self.drain;
        let signal = async move {
            shutdown.await;
            state.shutting_down.store(true, Ordering::SeqCst);
            if !drain.is_zero() {
                tracing::info!(?drain, "draining: new requests get 503, /healthz fails");
                tokio::time::sleep(drain).await;
            }
            tracing::info!("shutting down: finishing requests in flight");
        };
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(signal)
            .await;
        self.state
            .scorer
            .pool()
            .shutdown(Duration::from_secs(30))
            .await;
        result
    }
}

async fn score_handler(
    State(state): State<Arc<AppState>>,
    body: Result<Json<ScoreRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let response = match body {
        Err(rejection) => error_response(failure(
            rejection.status(),
            ErrorKind::Input,
            rejection.body_text(),
        )),
        Ok(Json(request)) => match score_one(&state, request).await {
            Ok(scored) => Json(scored).into_response(),
            Err(failure) => error_response(failure),
        },
    };
    state.metrics.request("score", response.status());
    response
}

async fn batch_handler(
    State(state): State<Arc<AppState>>,
    body: Result<Json<BatchRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let batch = match body {
        Err(rejection) => {
            state.metrics.request("batch", rejection.status());
            return error_response(failure(
                rejection.status(),
                ErrorKind::Input,
                rejection.body_text(),
            ));
        }
        Ok(Json(batch)) => batch,
    };
    if batch.items.len() > state.limits.max_batch {
        state
            .metrics
            .request("batch", StatusCode::UNPROCESSABLE_ENTITY);
        return error_response(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Limit,
            format!(
                "{} items; the limit is {}",
                batch.items.len(),
                state.limits.max_batch
            ),
        ));
    }
    // A malformed item (a config over the limits or invalid) rejects the whole batch before
    // anything is scored; unusable code is reported on the item's own line.
    for (index, item) in batch.items.iter().enumerate() {
        let config = item.config.as_ref().unwrap_or(&state.default_config);
        if let Err((status, mut body)) = check_limits(&state.limits, item, config) {
            state.metrics.request("batch", status);
            body.message = format!("item {index}: {}", body.message);
            return error_response((status, body));
        }
    }
    state.metrics.request("batch", StatusCode::OK);
    let pending: FuturesUnordered<_> = batch
        .items
        .into_iter()
        .enumerate()
        .map(|(index, request)| {
            let state = state.clone();
            async move {
                let id = request.id.clone();
                let line = match score_one(&state, request).await {
                    Ok(response) => BatchLine {
                        index,
                        id,
                        response: Some(response),
                        error: None,
                    },
                    Err((_, error)) => BatchLine {
                        index,
                        id,
                        response: None,
                        error: Some(error),
                    },
                };
                let mut bytes = serde_json::to_vec(&line).expect("batch lines serialise");
                bytes.push(b'\n');
                Ok::<_, std::convert::Infallible>(bytes)
            }
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pending),
    )
        .into_response()
}

async fn health_handler(State(state): State<Arc<AppState>>) -> Response {
    let queue_depth = state.limits.queue_limit - state.queue.available_permits();
    let shutting_down = state.shutting_down.load(Ordering::SeqCst);
    let health = Health {
        status: if shutting_down { "shutting_down" } else { "ok" }.into(),
        executor: state.scorer.pool().executor_name().into(),
        runtime: state.identity.runtime.clone(),
        workers: state.scorer.pool().size(),
        queue_depth,
        protocol: PROTOCOL_VERSION,
    };
    let status = if shutting_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(health)).into_response()
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write;
    let mut out = String::new();
    let m = &state.metrics;
    let _ = writeln!(out, "# HELP unitforge_requests_total HTTP requests by endpoint and status code.\n# TYPE unitforge_requests_total counter");
    for ((endpoint, code), count) in m.requests.lock().expect("metrics lock").iter() {
        let _ = writeln!(
            out,
            "unitforge_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}} {count}"
        );
    }
    let queue_depth = state.limits.queue_limit - state.queue.available_permits();
    let _ = writeln!(out, "# HELP unitforge_queue_depth Scores admitted and not yet finished.\n# TYPE unitforge_queue_depth gauge\nunitforge_queue_depth {queue_depth}");
    let scores = m.scores.load(Ordering::Relaxed);
    let uptime = state.started.elapsed().as_secs_f64();
    let _ = writeln!(out, "# HELP unitforge_scores_total Scores computed or served.\n# TYPE unitforge_scores_total counter\nunitforge_scores_total {scores}");
    let _ = writeln!(out, "# HELP unitforge_scores_per_second Scores per second since start.\n# TYPE unitforge_scores_per_second gauge\nunitforge_scores_per_second {:.3}", scores as f64 / uptime.max(1e-9));
    let _ = writeln!(out, "# HELP unitforge_score_latency_seconds Time to answer one score.\n# TYPE unitforge_score_latency_seconds histogram");
    for (bucket, bound) in m.latency_buckets.iter().zip(BUCKETS) {
        let _ = writeln!(
            out,
            "unitforge_score_latency_seconds_bucket{{le=\"{bound}\"}} {}",
            bucket.load(Ordering::Relaxed)
        );
    }
    let count = m.latency_count.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "unitforge_score_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "unitforge_score_latency_seconds_sum {:.6}",
        m.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "unitforge_score_latency_seconds_count {count}");
    if let Some(cache) = &state.cache {
        let stats = cache.stats();
        let _ = writeln!(out, "# HELP unitforge_cache_hits_total Scores served from the cache.\n# TYPE unitforge_cache_hits_total counter");
        let _ = writeln!(out, "unitforge_cache_hits_total{{layer=\"memory\"}} {}\nunitforge_cache_hits_total{{layer=\"disk\"}} {}", stats.memory_hits, stats.disk_hits);
        let _ = writeln!(
            out,
            "# TYPE unitforge_cache_misses_total counter\nunitforge_cache_misses_total {}",
            stats.misses
        );
        let _ = writeln!(out, "# TYPE unitforge_cache_shared_in_flight_total counter\nunitforge_cache_shared_in_flight_total {}", stats.shared_in_flight);
        let _ = writeln!(
            out,
            "# TYPE unitforge_cache_entries gauge\nunitforge_cache_entries {}",
            stats.entries_in_memory
        );
    }
    let pool = state.scorer.pool().stats();
    let _ = writeln!(out, "# HELP unitforge_runs_total pytest runs sent to workers.\n# TYPE unitforge_runs_total counter\nunitforge_runs_total {}", pool.runs);
    let _ = writeln!(out, "# HELP unitforge_infra_errors_total Runs that failed for infrastructure reasons after a retry.\n# TYPE unitforge_infra_errors_total counter\nunitforge_infra_errors_total {}", pool.infra_errors);
    let _ = writeln!(
        out,
        "# TYPE unitforge_run_retries_total counter\nunitforge_run_retries_total {}",
        pool.retries
    );
    let _ = writeln!(
        out,
        "# TYPE unitforge_workers_started_total counter\nunitforge_workers_started_total {}",
        pool.workers_started
    );
    let _ = writeln!(
        out,
        "# TYPE unitforge_workers_replaced_total counter\nunitforge_workers_replaced_total {}",
        pool.workers_replaced
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
