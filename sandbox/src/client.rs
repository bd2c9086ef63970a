//! The reward service's Rust client, for the trainer and `unitforge score --server`.
//!
//! Async; spreads requests round-robin over several endpoints (scale-out); caps the requests in
//! flight; retries with exponential backoff and jitter what is worth retrying (connection
//! errors, 429 with its `Retry-After`, 503), and never retries input errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::api::{ErrorKind, ErrorResponse, Health, ScoreRequest, ScoreResponse};
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
    /// Requests in flight at once, over all endpoints.
    pub concurrency: usize,
    /// Attempts per request, the first included.
    pub attempts: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-attempt timeout (a score with long limits can take a while).
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(600),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    next: AtomicUsize,
    permits: Semaphore,
    options: ClientOptions,
}

impl Client {
    /// `endpoints`: base URLs such as `http://127.0.0.1:8080`.
    pub fn new(endpoints: Vec<String>, options: ClientOptions) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .pool_max_idle_per_host(options.concurrency)
            .build()
            .map_err(|e| ClientError::Protocol {
                endpoint: endpoints[0].clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            endpoints: endpoints
                .into_iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            next: AtomicUsize::new(0),
            permits: Semaphore::new(options.concurrency.max(1)),
            options,
        })
    }

    fn endpoint(&self) -> &str {
        &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len()]
    }

    /// Score one pair, retrying what is worth retrying.
    pub async fn score(&self, request: &ScoreRequest) -> Result<ScoreResponse, ClientError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("client semaphore is never closed");
        let mut backoff = self.options.initial_backoff;
        let mut jitter = SplitMix64::new(self.next.load(Ordering::Relaxed) as u64);
        let mut last = String::new();
        for attempt in 1..=self.options.attempts.max(1) {
            let endpoint = self.endpoint().to_string();
            let mut wait = backoff;
            match self
                .http
                .post(format!("{endpoint}/v1/score"))
                .json(request)
                .send()
                .await
            {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return response.json().await.map_err(|e| ClientError::Protocol {
                            endpoint,
                            message: e.to_string(),
                        });
                    }
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body: Option<ErrorResponse> = response.json().await.ok();
                    let (kind, message) = body
                        .map_or((ErrorKind::Infra, format!("HTTP {status}")), |b| {
                            (b.error.kind, b.error.message)
                        });
                    let retryable = matches!(
                        kind,
                        ErrorKind::Overloaded | ErrorKind::Infra | ErrorKind::ShuttingDown
                    );
                    if !retryable {
                        return Err(ClientError::Refused {
                            status: status.as_u16(),
                            kind,
                            message,
                        });
                    }
                    last = format!("{endpoint}: HTTP {status}: {message}");
                    wait = retry_after.unwrap_or(backoff).max(backoff);
                }
                Err(err) => last = format!("{endpoint}: {err}"),
            }
            if attempt < self.options.attempts {
                let jittered = wait.mul_f64(0.5 + (jitter.below(1000) as f64) / 1000.0);
                tracing::debug!(attempt, ?jittered, %last, "retrying a score request");
                tokio::time::sleep(jittered).await;
                backoff = (backoff * 2).min(self.options.max_backoff);
            }
        }
        Err(ClientError::Unavailable {
            attempts: self.options.attempts,
            last,
        })
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
