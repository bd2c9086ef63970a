//! Workers and the worker pool: long-lived runner processes that serve runs one at a time.
//!
//! A worker is one runner (the Python fork server) reached through a byte stream; a
//! [`Launcher`] says how to start one (a local process here, a container in the Docker
//! executor). The pool keeps up to `size` workers, hands each run to an idle one, replaces a
//! worker that fails (protocol error, death, hang) and retries the run once on a fresh worker.
//! A run that fails twice is an infrastructure error, which callers must never score as a kill.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

use crate::protocol::{
    EquivalenceReply, EquivalenceRequest, Hello, RunReply, RunRequest, PROTOCOL_VERSION,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure of the machinery, not of the code or tests being run.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InfraError {
    #[error("could not start a worker: {0}")]
    Launch(String),
    #[error("worker protocol error: {0}")]
    Protocol(String),
    #[error("worker exited unexpectedly{0}")]
    WorkerDied(String),
    #[error("worker did not answer within {0:?}")]
    Unresponsive(Duration),
    #[error("runner error: {0}")]
    Runner(String),
}

/// The two ends of a started worker and whatever keeps it alive (dropping it stops the worker).
pub struct WorkerIo {
    pub input: Box<dyn AsyncWrite + Send + Unpin>,
    pub output: Box<dyn AsyncRead + Send + Unpin>,
    pub keepalive: Box<dyn Send + Sync>,
    /// Recent stderr lines of the worker, for error messages.
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// How to start a worker.
pub trait Launcher: Send + Sync + 'static {
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<WorkerIo, InfraError>>;
    /// Short name for reports: `local`, `docker`.
    fn name(&self) -> &'static str;
    /// Stop and clean up every worker this launcher started (graceful shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

struct Worker {
    input: Box<dyn AsyncWrite + Send + Unpin>,
    output: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    _keepalive: Box<dyn Send + Sync>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    hello: Hello,
    jobs: u64,
    /// When the worker last answered; an idle worker is health-checked before reuse.
    last_answer: std::time::Instant,
}

impl Worker {
    async fn start(launcher: &dyn Launcher, slot: usize) -> Result<Self, InfraError> {
        let io = launcher.launch(slot).await?;
        let mut worker = Worker {
            input: io.input,
            output: BufReader::new(io.output),
            _keepalive: io.keepalive,
            stderr_tail: io.stderr_tail,
            hello: Hello {
                v: 0,
                pid: 0,
                python: String::new(),
                pytest: String::new(),
            },
            jobs: 0,
            last_answer: std::time::Instant::now(),
        };
        // Importing and configuring pytest takes ~0.2 s; allow for a loaded machine.
        let hello: Hello =
            worker
                .read_reply(Duration::from_secs(60))
                .await
                .map_err(|err| match err {
                    // Already carries the worker's last stderr lines.
                    InfraError::WorkerDied(_) => InfraError::Launch(err.to_string()),
                    other => InfraError::Launch(format!("{other}{}", worker.stderr_summary())),
                })?;
        if hello.v != PROTOCOL_VERSION {
            return Err(InfraError::Launch(format!(
                "runner speaks protocol v{}, this build needs v{PROTOCOL_VERSION}",
                hello.v
            )));
        }
        worker.hello = hello;
        Ok(worker)
    }

    fn stderr_summary(&self) -> String {
        let tail = self.stderr_tail.lock().expect("stderr tail lock");
        if tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
            format!("; worker stderr: {}", lines.join(" | "))
        }
    }

    async fn request<T: DeserializeOwned>(
        &mut self,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, InfraError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| InfraError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let write = async {
            self.input.write_all(&line).await?;
            self.input.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                return Err(InfraError::WorkerDied(format!(
                    ": {err}{}",
                    self.stderr_summary()
                )))
            }
            Err(_) => return Err(InfraError::Unresponsive(timeout)),
        }
        self.jobs += 1;
        let reply = self.read_reply(timeout).await;
        if reply.is_ok() {
            self.last_answer = std::time::Instant::now();
        }
        reply
    }

    /// Whether the worker still answers: a `hello` round trip.
    async fn is_healthy(&mut self) -> bool {
        self.jobs = self.jobs.saturating_sub(1); // a health check is not a job
        let reply: Result<Hello, _> = self
            .request(&serde_json::json!({"op": "hello"}), HEALTH_CHECK_TIMEOUT)
            .await;
        reply.is_ok()
    }

    async fn read_reply<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<T, InfraError> {
        let mut line = String::new();
        match tokio::time::timeout(timeout, self.output.read_line(&mut line)).await {
            Err(_) => return Err(InfraError::Unresponsive(timeout)),
            Ok(Err(err)) => return Err(InfraError::WorkerDied(format!(": {err}"))),
            Ok(Ok(0)) => return Err(InfraError::WorkerDied(self.stderr_summary())),
            Ok(Ok(_)) => {}
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| InfraError::Protocol(format!("{e} in {:.200}", line)))?;
        if value.get("op").and_then(|op| op.as_str()) == Some("error") {
            let message = value
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("unknown");
            return Err(InfraError::Runner(message.to_string()));
        }
        serde_json::from_value(value).map_err(|e| InfraError::Protocol(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PoolStats {
    pub workers_started: u64,
    pub workers_replaced: u64,
    pub runs: u64,
    pub retries: u64,
    pub infra_errors: u64,
}

/// Up to `size` workers serving requests concurrently.
pub struct WorkerPool {
    launcher: Arc<dyn Launcher>,
    idle: Arc<Mutex<Vec<Worker>>>,
    permits: Semaphore,
    size: usize,
    recycle_after: u64,
    health_check_after: Duration,
    /// Drop a worker idle this long (a remote lease given back); `None`: keep it.
    idle_release: Option<Duration>,
    next_slot: AtomicUsize,
    started: AtomicU64,
    replaced: AtomicU64,
    runs: AtomicU64,
    retries: AtomicU64,
    infra_errors: AtomicU64,
}

/// An idle worker is health-checked before reuse after this long without answering.
const IDLE_BEFORE_HEALTH_CHECK: Duration = Duration::from_secs(10);
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Time the runner gets beyond a run's own timeout: fork, report, cleanup.
const RUN_GRACE: Duration = Duration::from_secs(15);
const COMPILE_TIMEOUT: Duration = Duration::from_secs(60);

impl WorkerPool {
    /// A pool of `size` workers (at least 1) started lazily by `launcher`; each worker is
    /// replaced after `recycle_after` runs so that no state can build up in it.
    pub fn new(launcher: Arc<dyn Launcher>, size: usize, recycle_after: u64) -> Self {
        let size = size.max(1);
        Self {
            launcher,
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Semaphore::new(size),
            size,
            recycle_after: recycle_after.max(1),
            health_check_after: IDLE_BEFORE_HEALTH_CHECK,
            idle_release: None,
            next_slot: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            infra_errors: AtomicU64::new(0),
        }
    }

    /// Health-check an idle worker before reuse once it has been idle this long (default 10 s).
    pub fn with_health_check_after(mut self, idle: Duration) -> Self {
        self.health_check_after = idle;
        self
    }

    /// Stop a worker once it has been idle this long, rather than keep it for the next run: a
    /// remote worker holds a runner that other services may need.
    pub fn with_idle_release(mut self, idle: Duration) -> Self {
        self.idle_release = Some(idle);
        self
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn executor_name(&self) -> &'static str {
        self.launcher.name()
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            workers_started: self.started.load(Ordering::Relaxed),
            workers_replaced: self.replaced.load(Ordering::Relaxed),
            runs: self.runs.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            infra_errors: self.infra_errors.load(Ordering::Relaxed),
        }
    }

    /// Start every worker now and return one greeting (python and pytest versions).
    pub async fn warm_up(&self) -> Result<Hello, InfraError> {
        // All at once: a worker spends most of its start importing pytest, so starting them one
        // after the other made a one-shot score wait for each in turn.
        let started = futures::future::join_all((0..self.size).map(|_| self.checkout()))
            .await
            .into_iter()
            .collect::<Result<Vec<Worker>, InfraError>>()?;
        let hello = started[0].hello.clone();
        self.idle.lock().expect("idle lock").extend(started);
        Ok(hello)
    }

    async fn checkout(&self) -> Result<Worker, InfraError> {
        loop {
            let Some(mut worker) = self.idle.lock().expect("idle lock").pop() else {
                break;
            };
            // A worker idle for a while may have been killed meanwhile (OOM, `docker kill`, an
            // engine restart): check it, so that no run is spent finding out.
            if worker.last_answer.elapsed() < self.health_check_after || worker.is_healthy().await {
                return Ok(worker);
            }
            tracing::warn!("an idle worker failed its health check; replacing it");
            self.replaced.fetch_add(1, Ordering::Relaxed);
        }
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let worker = Worker::start(self.launcher.as_ref(), slot).await?;
        self.started.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            slot,
            pid = worker.hello.pid,
            executor = self.launcher.name(),
            "worker started"
        );
        Ok(worker)
    }

    fn give_back(&self, worker: Worker) {
        if worker.jobs >= self.recycle_after {
            return; // dropped: the next checkout starts a fresh one
        }
        self.idle.lock().expect("idle lock").push(worker);
        if let Some(linger) = self.idle_release {
            let idle = Arc::downgrade(&self.idle);
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                if let Some(idle) = idle.upgrade() {
                    // Dropped outside the lock: dropping a worker closes its connection.
                    let expired: Vec<Worker> = {
                        let mut workers = idle.lock().expect("idle lock");
                        let (expired, kept) = std::mem::take(&mut *workers)
                            .into_iter()
                            .partition(|w| w.last_answer.elapsed() >= linger);
                        *workers = kept;
                        expired
                    };
                    drop(expired);
                }
            });
        }
    }

    /// Send one request to an idle worker; on an infrastructure failure replace the worker and
    /// try once more on a fresh one.
    async fn call<T: DeserializeOwned>(
        &self,
        request: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, InfraError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| InfraError::Launch("the worker pool is shut down".into()))?;
        let mut last_error = None;
        for attempt in 0..2 {
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            let mut worker = match self.checkout().await {
                Ok(worker) => worker,
                Err(err) => {
                    last_error = Some(err);
                    continue;
                }
            };
            match worker.request(request, timeout).await {
                Ok(reply) => {
                    self.give_back(worker);
                    return Ok(reply);
                }
                Err(err) => {
                    tracing::warn!(%err, attempt, "worker failed; replacing it");
                    self.replaced.fetch_add(1, Ordering::Relaxed);
                    last_error = Some(err);
                    drop(worker);
                }
            }
        }
        self.infra_errors.fetch_add(1, Ordering::Relaxed);
        Err(last_error.expect("two attempts were made"))
    }

    /// Wait for the runs in flight (up to `grace`), then stop every worker.
    pub async fn shutdown(&self, grace: Duration) {
        let all_idle = async {
            if let Ok(permits) = self.permits.acquire_many(self.size as u32).await {
                permits.forget();
            }
        };
        if tokio::time::timeout(grace, all_idle).await.is_err() {
            tracing::warn!("runs still in flight after {grace:?}; stopping their workers");
        }
        self.permits.close();
        self.idle.lock().expect("idle lock").clear();
        self.launcher.shutdown().await;
    }

    /// Run one pytest session.
    pub async fn run(&self, request: &RunRequest) -> Result<RunReply, InfraError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let timeout = Duration::from_secs_f64(request.timeout_s) + RUN_GRACE;
        self.call(request, timeout).await
    }

    /// Which mutant sources compile, and which compile to the original's bytecode.
    pub async fn equivalence(
        &self,
        original: &str,
        mutants: Vec<String>,
    ) -> Result<EquivalenceReply, InfraError> {
        let request = EquivalenceRequest {
            op: "equivalent",
            id: "equivalence".into(),
            original: original.to_string(),
            mutants,
        };
        self.call(&request, COMPILE_TIMEOUT).await
    }
}
