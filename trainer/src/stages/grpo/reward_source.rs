//! Where GRPO's rewards come from: the sandbox (through the one reward backend — an in-process
//! pool or the reward service), or a plain function (tests, custom objectives).
//!
//! A group's completions are submitted as soon as they are generated and scored in the
//! background; the trainer collects them when it needs them. A completion that cannot be scored
//! — the infrastructure failed, or the code under test itself is unusable — is `Excluded` with
//! its reason: it is left out of its group, never given a reward of 0.

use std::sync::Arc;

use serde::Serialize;
use unitforge_sandbox::backend::{BackendOptions, BlockingBackend, PendingScores};
use unitforge_sandbox::executor::ExecutorOptions;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::{ScoreInput, ScoreReport};

use super::test_credit::TestVerdicts;
use crate::data::dataset::Example;
use crate::train::stage_config::RewardSettings;
use crate::TrainerError;

/// The reward of one completion, with its components.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Reward {
    /// What the policy maximises: the composite under the branch's weights.
    pub reward: f64,
    pub validity: f64,
    pub mutant_kill: f64,
    pub speed: f64,
    pub stability: f64,
    pub robustness: f64,
    /// The suite's own CPU time (ms; 0 for an invalid suite).
    pub suite_cpu_ms: f64,
}

impl Reward {
    /// The components of a sandbox score.
    pub fn from_report(report: &ScoreReport) -> Self {
        Self {
            reward: report.composite,
            validity: report.validity,
            mutant_kill: report.mutant_kill,
            speed: report.speed,
            stability: report.stability,
            robustness: report.robustness,
            suite_cpu_ms: if report.valid {
                report.timing.suite_cpu_ms
            } else {
                0.0
            },
        }
    }

    /// A reward with no components (for objectives that are not test suites).
    pub fn plain(reward: f64) -> Self {
        Self {
            reward,
            ..Self::default()
        }
    }
}

/// What became of one submitted completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Scored(Reward),
    /// Not scored; `infrastructure` says whether the machinery failed (otherwise the code under
    /// test was unusable).
    Excluded {
        reason: String,
        infrastructure: bool,
    },
}

impl Outcome {
    /// The reward, when the completion was scored (an excluded one has none, never 0).
    pub fn reward(&self) -> Option<&Reward> {
        match self {
            Outcome::Scored(reward) => Some(reward),
            Outcome::Excluded { .. } => None,
        }
    }

    /// Why the completion was left out, when it was.
    pub fn exclusion(&self) -> Option<&str> {
        match self {
            Outcome::Scored(_) => None,
            Outcome::Excluded { reason, .. } => Some(reason),
        }
    }
}

/// One outcome per submitted completion, and the scoring time they took together.
pub struct Collected {
    pub outcomes: Vec<Outcome>,
    /// Each completion's per-test verdicts, where its score was pruned (`test_credit.rs`).
    pub verdicts: Vec<Option<TestVerdicts>>,
    /// Sum over the completions of the time each one's score took.
    pub scoring_s: f64,
}

/// A plain reward function: the example a completion answers, and the test file extracted from
/// it, to a reward (or `None` to exclude it).
pub type RewardFn = dyn Fn(&Example, &str) -> Option<Reward> + Send + Sync;

/// Where rewards come from.
pub enum RewardSource {
    Sandbox {
        backend: BlockingBackend,
        config: Arc<RewardConfig>,
    },
    Function(Box<RewardFn>),
}

/// Rewards being computed.
pub enum Pending {
    Sandbox(PendingScores),
    Ready(Vec<Outcome>),
}

impl RewardSource {
    /// The sandbox as `settings` describe it: an in-process pool (Docker by default) or, with
    /// `server`, the reward service.
    pub fn sandbox(settings: &RewardSettings) -> Result<Self, TrainerError> {
        let defaults = ExecutorOptions::default();
        let options = BackendOptions {
            executor: ExecutorOptions {
                kind: settings.executor,
                workers: settings.workers.unwrap_or(defaults.workers),
                runners: settings.runners.clone(),
                ..defaults
            },
            servers: settings.server.iter().cloned().collect(),
            concurrency: settings.concurrency.max(1),
        };
        let notice = |line: &str| eprintln!("  {line}");
        let backend = BlockingBackend::start(&options, &notice)
            .map_err(|e| TrainerError::Config(format!("the reward sandbox did not start: {e}")))?;
        Ok(Self::Sandbox {
            backend,
            config: Arc::new(settings.scoring.clone()),
        })
    }

    /// `docker`, `local`, `service` or `function`.
    pub fn name(&self) -> &'static str {
        match self {
            RewardSource::Sandbox { backend, .. } => backend.backend().name(),
            RewardSource::Function(_) => "function",
        }
    }

    /// Start scoring `tests` (extracted test files) written for `example`.
    pub fn submit(&self, example: &Example, tests: &[String]) -> Pending {
        match self {
            RewardSource::Sandbox { backend, config } => {
                let code = example.code.clone().unwrap_or_default();
                let inputs = tests
                    .iter()
                    .map(|tests| ScoreInput {
                        module: example.module.clone(),
                        code: code.clone(),
                        tests: tests.clone(),
                    })
                    .collect();
                Pending::Sandbox(backend.submit(inputs, Arc::clone(config)))
            }
            RewardSource::Function(function) => Pending::Ready(
                tests
                    .iter()
                    .map(|tests| match function(example, tests) {
                        Some(reward) => Outcome::Scored(reward),
                        None => Outcome::Excluded {
                            reason: "the reward function gave no reward".into(),
                            infrastructure: false,
                        },
                    })
                    .collect(),
            ),
        }
    }
}

impl Pending {
    /// Whether scoring has begun (always, for a function).
    pub fn started(&self) -> bool {
        match self {
            Pending::Sandbox(pending) => pending.started(),
            Pending::Ready(_) => true,
        }
    }

    /// Wait for every outcome, in submission order.
    pub fn collect(self) -> Collected {
        match self {
            Pending::Ready(outcomes) => Collected {
                verdicts: vec![None; outcomes.len()],
                outcomes,
                scoring_s: 0.0,
            },
            Pending::Sandbox(pending) => {
                let scored = pending.wait();
                Collected {
                    scoring_s: scored.iter().map(|s| s.seconds).sum(),
                    verdicts: scored
                        .iter()
                        .map(|s| s.result.as_ref().ok().and_then(TestVerdicts::from_report))
                        .collect(),
                    outcomes: scored
                        .into_iter()
                        .map(|s| match s.result {
                            Ok(report) => Outcome::Scored(Reward::from_report(&report)),
                            Err(err) => Outcome::Excluded {
                                infrastructure: err.is_infrastructure(),
                                reason: err.to_string(),
                            },
                        })
                        .collect(),
                }
            }
        }
    }
}
