//! The reward service's Rust client, for the trainer and `unitforge score --server`.
//!
//! Async; spreads requests over the service's replicas (balance.rs: each URL's host resolved to
//! every replica, the two rendezvous choices for the pair's content, the less loaded of them, a
//! cap per replica, failing replicas ejected until `/healthz` answers); caps the requests in
//! flight; retries what is worth retrying — connection errors, timeouts, 429 with its
//! `Retry-After`, 503 — on a *different* replica, with exponential backoff and jitter, within an
//! overall deadline; never retries input errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::api::{ErrorKind, ErrorResponse, Health, ScoreRequest, ScoreResponse};
use crate::balance::{content_key, BalanceOptions, Replicas};
use crate::rng::SplitMix64;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("the service refused the request ({kind:?}, HTTP {status}): {message}")]
    Refused {
        status: u16,
        kind: ErrorKind,
        message: String,
    },
    #[error("the service did not answer after {attempts} attempts: {last}")]
    Unavailable { attempts: usize, last: String },
    #[error("unexpected answer from {endpoint}: {message}")]
    Protocol { endpoint: String, message: String },
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Requests in flight at once, over all replicas.
    pub concurrency: usize,
    /// Attempts per request, the first included.
    pub attempts: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-attempt timeout (a score with long limits can take a while).
    pub timeout: Duration,
    /// Every attempt of one request, waits included, ends within this.
    pub deadline: Duration,
    /// How replicas are chosen, capped, ejected and found again.
    pub balance: BalanceOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(600),
            deadline: Duration::from_secs(900),
            balance: BalanceOptions::default(),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    /// The URLs as given: `/healthz` asks the first.
    endpoints: Vec<String>,
    replicas: Replicas,
    next: AtomicUsize,
    permits: Semaphore,
    options: ClientOptions,
}

/// What one attempt came to.
enum Attempt {
    Scored(Box<ScoreResponse>),
    /// Worth another try elsewhere, after at least this long; `unhealthy`: counts towards
    /// ejecting the replica (a 429 is load, not ill health).
    Retry {
        why: String,
        wait: Option<Duration>,
        unhealthy: bool,
    },
    Refused(ClientError),
}

impl Client {
    /// `endpoints`: base URLs such as `http://127.0.0.1:8080` (a host name stands for every
    /// address it resolves to).
    pub fn new(endpoints: Vec<String>, options: ClientOptions) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let protocol = |message: String| ClientError::Protocol {
            endpoint: endpoints[0].clone(),
            message,
        };
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .pool_max_idle_per_host(options.concurrency)
            .build()
            .map_err(|e| protocol(e.to_string()))?;
        let replicas = Replicas::new(&endpoints, options.balance.clone()).map_err(protocol)?;
        Ok(Self {
            http,
            endpoints: endpoints
                .into_iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            replicas,
            next: AtomicUsize::new(0),
            permits: Semaphore::new(options.concurrency.max(1)),
            options,
        })
    }

    /// The replicas as this client sees them now (URL, requests outstanding, ejected).
    pub fn replicas(&self) -> Vec<(String, usize, bool)> {
        self.replicas
            .snapshot()
            .iter()
            .map(|r| (r.url.clone(), r.outstanding(), r.is_ejected()))
            .collect()
    }

    /// Score one pair, retrying what is worth retrying on another replica.
    pub async fn score(&self, request: &ScoreRequest) -> Result<ScoreResponse, ClientError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("client semaphore is never closed");
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol {
            endpoint: self.endpoints[0].clone(),
            message: e.to_string(),
        })?;
        let key = content_key(&body);
        let deadline = Instant::now() + self.options.deadline;
        let mut backoff = self.options.initial_backoff;
        let mut jitter =
            SplitMix64::new(self.next.fetch_add(1, Ordering::Relaxed) as u64 ^ u64::from(key[0]));
        let mut tried: Vec<String> = Vec::new();
        let mut last = String::new();
        let mut attempts = 0;
        while attempts < self.options.attempts.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = format!("the deadline of {:?} passed; {last}", self.options.deadline);
                break;
            }
            attempts += 1;
            self.replicas.refresh_if_due().await;
            let held = self.replicas.choose(&key, &tried).await;
            let endpoint = held.replica.url.clone();
            tried.push(endpoint.clone());
            let wait = match self.attempt(&endpoint, &body, left).await {
                Attempt::Scored(scored) => {
                    self.replicas.succeeded(&held.replica);
                    return Ok(*scored);
                }
                Attempt::Refused(err) => {
                    self.replicas.succeeded(&held.replica);
                    return Err(err);
                }
                Attempt::Retry {
                    why,
                    wait,
                    unhealthy,
                } => {
                    if unhealthy {
                        self.replicas.failed(&held.replica, &self.http);
                    }
                    last = format!("{endpoint}: {why}");
                    wait.unwrap_or(backoff).max(backoff)
                }
            };
            drop(held);
            if attempts < self.options.attempts {
                let jittered = wait.mul_f64(0.5 + (jitter.below(1000) as f64) / 1000.0);
                let jittered = jittered.min(deadline.saturating_duration_since(Instant::now()));
                tracing::debug!(attempts, ?jittered, %last, "retrying a score request elsewhere");
                tokio::time::sleep(jittered).await;
                backoff = (backoff * 2).min(self.options.max_backoff);
            }
        }
        Err(ClientError::Unavailable { attempts, last })
    }

    async fn attempt(&self, endpoint: &str, body: &[u8], left: Duration) -> Attempt {
        let sent = self
            .http
            .post(format!("{endpoint}/v1/score"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .timeout(self.options.timeout.min(left))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                return Attempt::Retry {
                    why: err.to_string(),
                    wait: None,
                    unhealthy: true,
                }
            }
        };
        let status = response.status();
        if status.is_success() {
            return match response.json().await {
                Ok(scored) => Attempt::Scored(Box::new(scored)),
                // A body cut off mid-way: the replica went away while answering.
                Err(err) => Attempt::Retry {
                    why: format!("incomplete answer: {err}"),
                    wait: None,
                    unhealthy: true,
                },
            };
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Option<ErrorResponse> = response.json().await.ok();
        let (kind, message) = body.map_or((ErrorKind::Infra, format!("HTTP {status}")), |b| {
            (b.error.kind, b.error.message)
        });
        match kind {
            ErrorKind::Overloaded | ErrorKind::Infra | ErrorKind::ShuttingDown => Attempt::Retry {
                why: format!("HTTP {status}: {message}"),
                wait: retry_after,
                unhealthy: kind != ErrorKind::Overloaded,
            },
            _ => Attempt::Refused(ClientError::Refused {
                status: status.as_u16(),
                kind,
                message,
            }),
        }
    }

    /// The first endpoint's `/healthz` (one attempt: a health check must not wait).
    pub async fn health(&self) -> Result<Health, ClientError> {
        let endpoint = self.endpoints[0].clone();
        let unavailable = |e: reqwest::Error| ClientError::Unavailable {
            attempts: 1,
            last: format!("{endpoint}: {e}"),
        };
        let response = self
            .http
            .get(format!("{endpoint}/healthz"))
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        let health: Health = response.json().await.map_err(|e| ClientError::Protocol {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(ClientError::Unavailable {
                attempts: 1,
                last: format!("{endpoint}: HTTP {status}, status {}", health.status),
            });
        }
        Ok(health)
    }
}
