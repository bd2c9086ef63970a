//! The reward backend: the one way every caller scores candidates — `unitforge score`, corpus
//! validation, the benchmarks, GRPO and evaluation.
//!
//! A backend is either an in-process pool (Docker containers by default, local processes for
//! development) or a running reward service reached through [`crate::client`]. Both give the
//! same [`ScoreReport`] for the same input and config, so callers never care which. Many
//! candidates are scored with bounded concurrency and come back in completion order, each with
//! its index; a failure is a [`BackendError`] that says whether the input was unusable or the
//! infrastructure failed, because the two must be treated differently (an infrastructure
//! failure is never a zero reward). [`BlockingBackend`] owns its own async runtime for callers
//! that have none (the trainer), and can score in the background while the caller works.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, Stream, StreamExt};

use crate::api::ScoreRequest;
use crate::client::{Client, ClientError, ClientOptions};
use crate::executor::{start_pool, ExecutorError, ExecutorIdentity, ExecutorKind, ExecutorOptions};
use crate::rewards::RewardConfig;
use crate::score::{ScoreError, ScoreInput, ScoreReport, Scorer};

/// Printed (through the notice callback) whenever a backend runs tests as host processes.
pub const LOCAL_EXECUTOR_WARNING: &str = "WARNING: the local executor runs untrusted test code directly on this machine, guarded only by rlimits and an audit hook; use it for development and benchmarks, never for model output.";

/// Why a candidate got no score.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BackendError {
    /// The candidate cannot be scored as given (a syntax error in the code under test, a bad
    /// module name, a code under test that raises on import, a request over a service limit).
    #[error("unusable input: {0}")]
    Input(String),
    /// The sandbox or the service failed; the candidate says nothing about the tests.
    #[error("infrastructure failure: {0}")]
    Infrastructure(String),
}

impl BackendError {
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, BackendError::Infrastructure(_))
    }
}

impl From<ScoreError> for BackendError {
    fn from(err: ScoreError) -> Self {
        match err {
            ScoreError::Infra(_) => BackendError::Infrastructure(err.to_string()),
            ScoreError::Source(_) | ScoreError::ModuleName(..) | ScoreError::CutImport(_) => {
                BackendError::Input(err.to_string())
            }
        }
    }
}

impl From<ClientError> for BackendError {
    fn from(err: ClientError) -> Self {
        use crate::api::ErrorKind;
        match &err {
            ClientError::Refused {
                kind: ErrorKind::Input | ErrorKind::Limit,
                ..
            } => BackendError::Input(err.to_string()),
            _ => BackendError::Infrastructure(err.to_string()),
        }
    }
}

/// Where scores are computed.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// The in-process pool, used when `servers` is empty.
    pub executor: ExecutorOptions,
    /// Base URLs of running reward services (`http://host:port`); requests are spread over them.
    pub servers: Vec<String>,
    /// Candidates scored at the same time.
    pub concurrency: usize,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            executor: ExecutorOptions::default(),
            servers: Vec::new(),
            concurrency: 4,
        }
    }
}

enum Engine {
    Pool(Scorer),
    Service(Box<Client>),
}

/// A started backend. Dropping an in-process one stops its workers (containers included).
pub struct RewardBackend {
    engine: Engine,
    concurrency: usize,
    /// Set once the workers are stopped, so dropping does not stop them again.
    stopped: AtomicBool,
}

/// One finished candidate of a `score_many` call.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Position of the candidate in the submitted list.
    pub index: usize,
    pub result: Result<ScoreReport, BackendError>,
    /// Wall time this candidate's score took (queueing in the backend included).
    pub seconds: f64,
}

impl RewardBackend {
    /// Start the pool (warmed up and calibrated) or connect to the services. `notice` receives
    /// the image build's progress lines and the local executor's warning.
    pub async fn start(
        options: &BackendOptions,
        notice: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, BackendError> {
        let concurrency = options.concurrency.max(1);
        if !options.servers.is_empty() {
            let client_options = ClientOptions {
                concurrency,
                ..ClientOptions::default()
            };
            let client = Client::new(options.servers.clone(), client_options)?;
            return Ok(Self {
                engine: Engine::Service(Box::new(client)),
                concurrency,
                stopped: AtomicBool::new(false),
            });
        }
        let (scorer, _identity) = start_scorer(&options.executor, notice).await?;
        Ok(Self {
            engine: Engine::Pool(scorer),
            concurrency,
            stopped: AtomicBool::new(false),
        })
    }

    /// The in-process scorer, when this backend has one (for figures such as the runner's
    /// per-run overhead); `None` for a service.
    pub fn scorer(&self) -> Option<&Scorer> {
        match &self.engine {
            Engine::Pool(scorer) => Some(scorer),
            Engine::Service(_) => None,
        }
    }

    /// `docker`, `local` or `service`.
    pub fn name(&self) -> &'static str {
        match &self.engine {
            Engine::Pool(scorer) => scorer.pool().executor_name(),
            Engine::Service(_) => "service",
        }
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Score one candidate.
    pub async fn score(
        &self,
        input: &ScoreInput,
        config: &RewardConfig,
    ) -> Result<ScoreReport, BackendError> {
        match &self.engine {
            Engine::Pool(scorer) => Ok(scorer.score(input, config).await?),
            Engine::Service(client) => {
                // The config always travels, so the server scores exactly as a local run would.
                let request = ScoreRequest {
                    id: None,
                    module: input.module.clone(),
                    code: input.code.clone(),
                    tests: input.tests.clone(),
                    config: Some(config.clone()),
                    no_cache: false,
                };
                Ok(client.score(&request).await?.report)
            }
        }
    }

    /// Score every candidate, `concurrency` at a time, yielding each as it finishes.
    pub fn score_many<'a>(
        &'a self,
        inputs: &'a [ScoreInput],
        config: &'a RewardConfig,
    ) -> impl Stream<Item = Scored> + 'a {
        stream::iter(inputs.iter().enumerate())
            .map(move |(index, input)| async move {
                let started = Instant::now();
                let result = self.score(input, config).await;
                Scored {
                    index,
                    result,
                    seconds: started.elapsed().as_secs_f64(),
                }
            })
            .buffer_unordered(self.concurrency)
    }

    /// Score every candidate and return the results in input order; `progress` is called once
    /// per finished candidate, in completion order.
    pub async fn score_all(
        &self,
        inputs: &[ScoreInput],
        config: &RewardConfig,
        progress: &(dyn Fn(&Scored) + Sync),
    ) -> Vec<Scored> {
        let mut done: Vec<Scored> = self
            .score_many(inputs, config)
            .inspect(|scored| progress(scored))
            .collect()
            .await;
        done.sort_by_key(|scored| scored.index);
        done
    }

    /// Stop the workers now (a service backend has none).
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Engine::Pool(scorer) = &self.engine {
            scorer.pool().shutdown(Duration::from_secs(5)).await;
        }
    }
}

impl Drop for RewardBackend {
    fn drop(&mut self) {
        let Engine::Pool(scorer) = &self.engine else {
            return;
        };
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Stop the containers on every path out of a command, errors included. Blocking here
        // needs a multi-threaded runtime; without one the next start removes them as stale.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            let pool = scorer.pool();
            tokio::task::block_in_place(|| handle.block_on(pool.shutdown(Duration::from_secs(5))));
        }
    }
}

/// Start a pool of the chosen executor and a scorer on it, warmed up and calibrated; what it
/// runs on comes with it (for cache keys). The one way a pool is started for scoring: the
/// backend, the service and the benchmarks all come here. `notice` receives the image build's
/// progress lines and the local executor's warning.
pub async fn start_scorer(
    options: &ExecutorOptions,
    notice: &(dyn Fn(&str) + Sync),
) -> Result<(Scorer, ExecutorIdentity), BackendError> {
    if options.kind == ExecutorKind::Local {
        notice(LOCAL_EXECUTOR_WARNING);
    }
    let (pool, identity) = start_pool(options, notice)
        .await
        .map_err(|err: ExecutorError| BackendError::Infrastructure(err.to_string()))?;
    match Scorer::new(pool.clone()).await {
        Ok(scorer) => Ok((scorer, identity)),
        Err(err) => {
            pool.shutdown(Duration::ZERO).await;
            let hint = match options.kind {
                ExecutorKind::Local => {
                    "cannot start the pytest runner (is pytest installed in that Python? `make venv`)"
                }
                ExecutorKind::Docker => {
                    "cannot start a sandbox container (`unitforge doctor` checks the engine and image)"
                }
                ExecutorKind::Remote => {
                    "cannot lease a runner (are `unitforge runner` hosts listening at --runner?)"
                }
            };
            Err(BackendError::Infrastructure(format!("{hint}: {err}")))
        }
    }
}

/// A backend for callers without an async runtime: it owns one, scores on it, and can score in
/// the background (see [`BlockingBackend::submit`]) while the caller computes.
pub struct BlockingBackend {
    backend: Option<Arc<RewardBackend>>,
    runtime: tokio::runtime::Runtime,
}

impl BlockingBackend {
    pub fn start(
        options: &BackendOptions,
        notice: &(dyn Fn(&str) + Sync),
    ) -> Result<Self, BackendError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| BackendError::Infrastructure(format!("cannot start a runtime: {e}")))?;
        let backend = runtime.block_on(RewardBackend::start(options, notice))?;
        Ok(Self {
            backend: Some(Arc::new(backend)),
            runtime,
        })
    }

    pub fn backend(&self) -> &RewardBackend {
        self.backend.as_ref().expect("present until dropped")
    }

    /// Score every candidate and wait; results in input order.
    pub fn score_all(
        &self,
        inputs: &[ScoreInput],
        config: &RewardConfig,
        progress: &(dyn Fn(&Scored) + Sync),
    ) -> Vec<Scored> {
        self.runtime
            .block_on(self.backend().score_all(inputs, config, progress))
    }

    /// Start scoring `inputs` in the background and return at once; [`PendingScores::wait`]
    /// collects the results.
    pub fn submit(&self, inputs: Vec<ScoreInput>, config: Arc<RewardConfig>) -> PendingScores {
        let backend = Arc::clone(self.backend.as_ref().expect("present until dropped"));
        let (sender, receiver) = std::sync::mpsc::channel();
        let started = Arc::new(AtomicBool::new(false));
        let count = inputs.len();
        let flag = Arc::clone(&started);
        self.runtime.spawn(async move {
            flag.store(true, Ordering::SeqCst);
            let mut results = backend.score_many(&inputs, &config);
            while let Some(scored) = results.next().await {
                if sender.send(scored).is_err() {
                    break; // nobody waits for these any more
                }
            }
        });
        PendingScores {
            receiver,
            count,
            started,
        }
    }
}

impl Drop for BlockingBackend {
    fn drop(&mut self) {
        if let Some(backend) = self.backend.take() {
            self.runtime.block_on(backend.shutdown());
            // Background scores still holding the backend end with the runtime.
        }
    }
}

/// Scores under way in the background.
pub struct PendingScores {
    receiver: std::sync::mpsc::Receiver<Scored>,
    count: usize,
    started: Arc<AtomicBool>,
}

impl PendingScores {
    /// Candidates submitted.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the backend has begun scoring these.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Block until every candidate is scored; results in input order. A candidate whose task
    /// vanished (the runtime stopped) is an infrastructure failure.
    pub fn wait(self) -> Vec<Scored> {
        let mut done: Vec<Option<Scored>> = vec![None; self.count];
        for scored in self.receiver.iter().take(self.count) {
            let index = scored.index;
            done[index] = Some(scored);
        }
        done.into_iter()
            .enumerate()
            .map(|(index, scored)| {
                scored.unwrap_or(Scored {
                    index,
                    result: Err(BackendError::Infrastructure(
                        "the scoring task stopped before this candidate was scored".into(),
                    )),
                    seconds: 0.0,
                })
            })
            .collect()
    }
}
