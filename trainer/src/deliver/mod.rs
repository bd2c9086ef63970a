//! Delivery: from a model to a test file a user keeps (`unitforge generate --deliver`).
//!
//! For one code under test: N suites sampled in one batch, each scored in the sandbox under
//! `failing_tests: prune` (which tests fail, which are flaky or repeated); optionally **oracle
//! repair** (`unitforge_sandbox::repair`: an expected value or exception class that is wrong
//! rewritten to what the code does, from the runner's evidence) and up to R **fix rounds** (the
//! fix template with the failing tests' own failure text, for the suites that still fail); then
//! the best suite by pruned composite less its pruned tests (`prune::kept_file`), scored once
//! more as written — the file is delivered only when it passes as it stands. Every suite runs
//! only in the sandbox. Where oracle repair changed an expectation, the delivery says so ("the
//! model expected X, the code returns Y": the model or the code is wrong) and, with
//! `diagnose`, asks the model which, with the diagnose template.
//!
//! The model is reached through [`Writer`], so the steps after sampling are the same whatever
//! writes the suites (and tests can give fixed suites with the real sandbox).

pub mod fix_rows;

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;
use unitforge_sandbox::backend::{BlockingBackend, Scored};
use unitforge_sandbox::protocol::{function_name, TestOutcome};
use unitforge_sandbox::prune::{kept_file, FailingTests, PrunedTest};
use unitforge_sandbox::repair::{oracle_repair, Repair};
use unitforge_sandbox::report::ScoreReport;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;

use crate::data::prompts::{extract_tests, render, PromptFormat, Task};
use crate::data::tokenizer::ModelTokenizer;
use crate::model::decoder::Model;
use crate::model::generate::{generate_groups, GroupRequest, SamplingConfig};
use crate::TrainerError;

/// What writes the suites: `n` completions for one rendered prompt.
pub trait Writer {
    fn write(&mut self, prompt: &str, n: usize, seed: u64) -> Result<Vec<String>, TrainerError>;
    /// One greedy completion (the raw answer a user without delivery gets).
    fn write_greedy(&mut self, prompt: &str) -> Result<String, TrainerError> {
        Ok(self
            .write(prompt, 1, 0)?
            .into_iter()
            .next()
            .unwrap_or_default())
    }
    /// One completion of each `(prompt, seed)`, in order: what `write(prompt, 1, seed)` gives
    /// for each in turn. A model decodes them together, as one batch.
    fn write_each(&mut self, prompts: &[(String, u64)]) -> Result<Vec<String>, TrainerError> {
        prompts
            .iter()
            .map(|(prompt, seed)| {
                Ok(self
                    .write(prompt, 1, *seed)?
                    .into_iter()
                    .next()
                    .unwrap_or_default())
            })
            .collect()
    }
    /// How prompts are rendered for it.
    fn format(&self) -> &PromptFormat;
}

/// A model with its tokenizer, sampling with the KV cache (each prompt prefilled once, its
/// samples — and the completions of several prompts — decoded as one batch).
pub struct ModelWriter<'m> {
    pub model: &'m Model,
    pub text: &'m ModelTokenizer,
    pub sampling: SamplingConfig,
}

impl ModelWriter<'_> {
    /// The completions of each `(prompt, samples, seed)`, decoded together (`generate_groups`:
    /// a group's completions are those of generating it alone); none for a prompt longer than
    /// the model takes.
    fn complete(&self, requests: &[(&str, usize, u64)]) -> Result<Vec<Vec<String>>, TrainerError> {
        let groups = requests
            .iter()
            .map(|&(prompt, samples, seed)| {
                Ok(GroupRequest {
                    prompt: self
                        .text
                        .tokenizer
                        .encode(prompt, false)
                        .map_err(|e| TrainerError::Data(e.to_string()))?
                        .get_ids()
                        .to_vec(),
                    samples,
                    seed,
                })
            })
            .collect::<Result<Vec<_>, TrainerError>>()?;
        // A batch stops where its longest prompt runs out of positions, so the prompts with
        // room for every new token decode together and the others one at a time (each gets the
        // completion it gets alone); a prompt longer than the model takes gets none.
        let limit = self.model.config().max_position_embeddings;
        let (fitting, too_long): (Vec<usize>, Vec<usize>) =
            (0..groups.len()).partition(|&g| (1..limit).contains(&groups[g].prompt.len()));
        for &g in &too_long {
            tracing::warn!(
                tokens = groups[g].prompt.len(),
                limit,
                "a prompt longer than the model takes: no completion"
            );
        }
        let (roomy, tight): (Vec<usize>, Vec<usize>) = fitting
            .into_iter()
            .partition(|&g| groups[g].prompt.len() + self.sampling.max_new_tokens <= limit);
        let mut out = vec![Vec::new(); groups.len()];
        let batches = std::iter::once(roomy).chain(tight.into_iter().map(|g| vec![g]));
        for batch in batches.filter(|b| !b.is_empty()) {
            let requests: Vec<GroupRequest> = batch.iter().map(|&g| groups[g].clone()).collect();
            generate_groups(
                self.model,
                &requests,
                self.text.end_id,
                &self.sampling,
                &mut |k, completions, _| {
                    out[batch[k]] = completions
                        .iter()
                        .map(|ids| {
                            self.text
                                .tokenizer
                                .decode(ids, false)
                                .map_err(|e| TrainerError::Data(e.to_string()))
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(())
                },
            )?;
        }
        Ok(out)
    }
}

impl Writer for ModelWriter<'_> {
    fn write(&mut self, prompt: &str, n: usize, seed: u64) -> Result<Vec<String>, TrainerError> {
        Ok(self.complete(&[(prompt, n, seed)])?.remove(0))
    }

    fn write_each(&mut self, prompts: &[(String, u64)]) -> Result<Vec<String>, TrainerError> {
        let requests: Vec<(&str, usize, u64)> = prompts
            .iter()
            .map(|(prompt, seed)| (prompt.as_str(), 1, *seed))
            .collect();
        Ok(self
            .complete(&requests)?
            .into_iter()
            .map(|mut one| one.pop().unwrap_or_default())
            .collect())
    }

    fn write_greedy(&mut self, prompt: &str) -> Result<String, TrainerError> {
        let sampling = self.sampling.clone();
        self.sampling.temperature = 0.0;
        let out = self.write(prompt, 1, 0);
        self.sampling = sampling;
        Ok(out?.into_iter().next().unwrap_or_default())
    }

    fn format(&self) -> &PromptFormat {
        &self.text.format
    }
}

#[derive(Debug, Clone)]
pub struct DeliverOptions {
    /// Suites sampled at first.
    pub n: usize,
    pub oracle_repair: bool,
    pub fix_rounds: usize,
    /// Ask the model, with the diagnose template, about each changed expectation.
    pub diagnose: bool,
    pub seed: u64,
}

impl Default for DeliverOptions {
    fn default() -> Self {
        Self {
            n: 4,
            oracle_repair: true,
            fix_rounds: 0,
            diagnose: false,
            seed: 0,
        }
    }
}

/// Where a candidate suite came from.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Origin {
    Sampled {
        sample: usize,
    },
    /// Oracle repair of candidate `of`.
    Repaired {
        of: usize,
    },
    /// The model's answer to the fix prompt for candidate `of`.
    Fixed {
        of: usize,
        round: usize,
    },
}

/// One suite tried, and what the sandbox made of it under prune.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub origin: Origin,
    pub tests: String,
    /// Pruned composite (0 when nothing is kept or it could not be scored).
    pub composite: f64,
    pub mutant_kill: f64,
    pub kept_tests: usize,
    pub collected: usize,
    pub pruned: Vec<PrunedTest>,
    /// The repairs behind this suite (its own and its ancestors').
    pub repairs: Vec<Repair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// Why it is not usable (the whole file invalid under prune), when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Each failing test's failure text (for a fix prompt).
    #[serde(skip)]
    failures: Vec<(String, String)>,
    #[serde(skip)]
    report: Option<ScoreReport>,
}

/// A changed expectation: the model and the code disagree.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub repair: Repair,
    /// The failure before the repair.
    pub failure: String,
    /// The model's answer to the diagnose prompt (with `diagnose`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
}

/// What `deliver` hands the user.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub module: String,
    /// The delivered test file: passes as written on the code. `None` when no suite kept a test.
    pub tests: Option<String>,
    /// The candidate it came from.
    pub chosen: Option<usize>,
    /// The delivered file's score as written (`failing_tests: invalidate`).
    pub score: Option<ScoreReport>,
    /// Tests removed from the chosen suite, and why.
    pub pruned: Vec<PrunedTest>,
    pub disagreements: Vec<Disagreement>,
    /// Mutants the delivered suite does not kill (one-line diffs).
    pub survivors: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub generation_s: f64,
    pub sandbox_s: f64,
}

/// Sample, score, repair, fix, choose and verify a suite for `code` (importable as `module`).
pub fn deliver(
    writer: &mut dyn Writer,
    module: &str,
    code: &str,
    backend: &BlockingBackend,
    config: &RewardConfig,
    options: &DeliverOptions,
    progress: &dyn Fn(&str),
) -> Result<Delivery, TrainerError> {
    let pruned_config = RewardConfig {
        failing_tests: FailingTests::Prune,
        ..config.clone()
    };
    let mut generation_s = 0.0;
    let mut sandbox_s = 0.0;
    let mut score = |suites: &[String]| -> Vec<Scored> {
        let started = Instant::now();
        let inputs: Vec<ScoreInput> = suites
            .iter()
            .map(|tests| ScoreInput {
                module: module.to_string(),
                code: code.to_string(),
                tests: tests.clone(),
            })
            .collect();
        let scored = backend.score_all(&inputs, &pruned_config, &|_| {});
        sandbox_s += started.elapsed().as_secs_f64();
        scored
    };

    progress(&format!("sampling {} suites", options.n.max(1)));
    let prompt = render(&Task::Generate { module, code }, writer.format());
    let completions = timed(&mut generation_s, || {
        writer.write(&prompt, options.n.max(1), options.seed)
    })?;
    let mut candidates: Vec<Candidate> = Vec::new();
    let fresh: Vec<(Origin, String, Vec<Repair>)> = completions
        .iter()
        .enumerate()
        .map(|(sample, c)| (Origin::Sampled { sample }, extract_tests(c), Vec::new()))
        .collect();
    progress("scoring the samples in the sandbox");
    let mut latest = add_scored(&mut candidates, fresh, &mut score);
    for round in 0..=options.fix_rounds {
        if options.oracle_repair {
            let repaired: Vec<(Origin, String, Vec<Repair>)> = latest
                .iter()
                .filter_map(|&i| {
                    let candidate = &candidates[i];
                    let report = candidate.report.as_ref()?;
                    let baseline = report.baseline.as_ref()?;
                    let (tests, repairs) = oracle_repair(&candidate.tests, &baseline.tests);
                    (!repairs.is_empty()).then(|| {
                        let mut all = candidate.repairs.clone();
                        all.extend(repairs);
                        (Origin::Repaired { of: i }, tests, all)
                    })
                })
                .collect();
            if !repaired.is_empty() {
                progress(&format!("scoring {} repaired suites", repaired.len()));
                latest.extend(add_scored(&mut candidates, repaired, &mut score));
            }
        }
        if round == options.fix_rounds {
            break;
        }
        // A fix round for the suites of the last step that still have failing tests, best
        // first, at most n of them.
        let mut failing: Vec<usize> = latest
            .iter()
            .copied()
            .filter(|&i| !candidates[i].failures.is_empty())
            .collect();
        failing.sort_by(|&a, &b| candidates[b].composite.total_cmp(&candidates[a].composite));
        failing.truncate(options.n.max(1));
        if failing.is_empty() {
            break;
        }
        progress(&format!(
            "fix round {}: {} suites with failing tests",
            round + 1,
            failing.len()
        ));
        // The round's fix prompts, decoded together.
        let prompts: Vec<(String, u64)> = failing
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let candidate = &candidates[i];
                let failure = failure_text(&candidate.failures);
                let task = Task::Fix {
                    module,
                    code,
                    tests: &candidate.tests,
                    failure: &failure,
                };
                let seed = options.seed ^ ((round as u64 + 1) << 32) ^ k as u64;
                (render(&task, writer.format()), seed)
            })
            .collect();
        let answers = timed(&mut generation_s, || writer.write_each(&prompts))?;
        let fixed = failing
            .iter()
            .zip(answers)
            .map(|(&i, answer)| {
                (
                    Origin::Fixed {
                        of: i,
                        round: round + 1,
                    },
                    extract_tests(&answer),
                    candidates[i].repairs.clone(),
                )
            })
            .collect();
        latest = add_scored(&mut candidates, fixed, &mut score);
    }

    // The best candidates by pruned composite, each less its pruned tests, until one passes as
    // written.
    let mut ranked: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].kept_tests > 0 && candidates[i].invalid.is_none())
        .collect();
    ranked.sort_by(|&a, &b| {
        candidates[b]
            .composite
            .total_cmp(&candidates[a].composite)
            .then(a.cmp(&b))
    });
    let mut delivery = Delivery {
        module: module.to_string(),
        tests: None,
        chosen: None,
        score: None,
        pruned: Vec::new(),
        disagreements: Vec::new(),
        survivors: Vec::new(),
        candidates: Vec::new(),
        generation_s: 0.0,
        sandbox_s: 0.0,
    };
    progress("checking the chosen suite as written");
    for &i in ranked.iter().take(3) {
        let candidate = &candidates[i];
        let Some(file) = kept_file(&candidate.tests, &candidate.pruned) else {
            continue;
        };
        let started = Instant::now();
        let scored = backend.score_all(
            &[ScoreInput {
                module: module.to_string(),
                code: code.to_string(),
                tests: file.clone(),
            }],
            &RewardConfig {
                failing_tests: FailingTests::Invalidate,
                ..config.clone()
            },
            &|_| {},
        );
        sandbox_s += started.elapsed().as_secs_f64();
        let Some(Ok(report)) = scored.into_iter().next().map(|s| s.result) else {
            continue;
        };
        if !report.valid {
            continue;
        }
        let removed: BTreeSet<&str> = candidate
            .pruned
            .iter()
            .map(|p| function_name(&p.name))
            .collect();
        delivery.disagreements = candidate
            .repairs
            .iter()
            .filter(|r| !removed.contains(function_name(&r.test)))
            .map(|r| Disagreement {
                repair: r.clone(),
                failure: failure_before(&candidates, i, &r.test),
                diagnosis: None,
            })
            .collect();
        delivery.survivors = report
            .mutants
            .results
            .iter()
            .filter(|m| {
                matches!(
                    m.status,
                    unitforge_sandbox::outcome::MutantStatus::Survived
                        | unitforge_sandbox::outcome::MutantStatus::NotCovered
                )
            })
            .map(|m| format!("line {}: {}", m.mutant.line, m.mutant.diff))
            .collect();
        delivery.tests = Some(file);
        delivery.chosen = Some(i);
        delivery.pruned = candidate.pruned.clone();
        delivery.score = Some(report);
        break;
    }
    if options.diagnose && !delivery.disagreements.is_empty() {
        progress("asking the model about each disagreement");
        let tests = delivery.tests.clone().unwrap_or_default();
        let prompts: Vec<(String, u64)> = delivery
            .disagreements
            .iter()
            .enumerate()
            .map(|(k, disagreement)| {
                let failure = format!(
                    "{}\n(the test expected {}; the code returns {})",
                    disagreement.failure, disagreement.repair.old, disagreement.repair.new
                );
                let task = Task::Diagnose {
                    module,
                    code,
                    tests: &tests,
                    failure: &failure,
                };
                (
                    render(&task, writer.format()),
                    options.seed ^ (0xD1A6 + k as u64),
                )
            })
            .collect();
        let answers = timed(&mut generation_s, || writer.write_each(&prompts))?;
        for (disagreement, answer) in delivery.disagreements.iter_mut().zip(answers) {
            disagreement.diagnosis = Some(answer.trim().to_string());
        }
    }
    delivery.generation_s = generation_s;
    delivery.sandbox_s = sandbox_s;
    delivery.candidates = candidates;
    Ok(delivery)
}

/// `work`, its seconds added to `clock`.
fn timed<T>(clock: &mut f64, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = work();
    *clock += started.elapsed().as_secs_f64();
    out
}

/// Score `fresh` suites under prune and append them; the indices of the new candidates.
fn add_scored(
    candidates: &mut Vec<Candidate>,
    fresh: Vec<(Origin, String, Vec<Repair>)>,
    score: &mut dyn FnMut(&[String]) -> Vec<Scored>,
) -> Vec<usize> {
    let suites: Vec<String> = fresh.iter().map(|(_, t, _)| t.clone()).collect();
    let scored = score(&suites);
    let first = candidates.len();
    for ((origin, tests, repairs), scored) in fresh.into_iter().zip(scored) {
        candidates.push(candidate(origin, tests, repairs, scored));
    }
    (first..candidates.len()).collect()
}

fn candidate(origin: Origin, tests: String, repairs: Vec<Repair>, scored: Scored) -> Candidate {
    let mut candidate = Candidate {
        origin,
        tests,
        composite: 0.0,
        mutant_kill: 0.0,
        kept_tests: 0,
        collected: 0,
        pruned: Vec::new(),
        repairs,
        excluded: None,
        invalid: None,
        failures: Vec::new(),
        report: None,
    };
    match scored.result {
        Err(err) => candidate.excluded = Some(err.to_string()),
        Ok(report) => {
            candidate.composite = report.composite;
            candidate.mutant_kill = report.mutant_kill;
            candidate.kept_tests = report.kept_tests.as_ref().map_or(0, Vec::len);
            candidate.pruned = report.pruned_tests.clone().unwrap_or_default();
            candidate.collected = report
                .baseline
                .as_ref()
                .map_or(0, |b| b.tests.len())
                .max(candidate.kept_tests);
            if !report.valid {
                candidate.invalid = report.invalid_reason.clone();
            }
            candidate.failures = failing_tests(&report);
            // A file the sandbox rejected as a whole (a syntax error, a collection error): its
            // reason is the failure a fix prompt carries.
            if !report.valid && candidate.failures.is_empty() {
                if let Some(reason) = &report.invalid_reason {
                    candidate
                        .failures
                        .push(("the test file".into(), reason.clone()));
                }
            }
            candidate.report = Some(report);
        }
    }
    candidate
}

/// Each test that failed, errored or timed out in a score's baseline run, with its message.
pub(crate) fn failing_tests(report: &ScoreReport) -> Vec<(String, String)> {
    report
        .baseline
        .iter()
        .flat_map(|b| &b.tests)
        .filter(|t| {
            matches!(
                t.outcome,
                TestOutcome::Failed | TestOutcome::Error | TestOutcome::Timeout
            )
        })
        .map(|t| (t.nodeid.clone(), t.message.clone()))
        .collect()
}

/// The failure text a fix prompt carries: each failing test's own message, at most ~1,500
/// characters in all (a small model's prompt is short).
pub(crate) fn failure_text(failures: &[(String, String)]) -> String {
    let mut text = String::new();
    for (nodeid, message) in failures {
        let entry = format!("{nodeid}\n{}\n\n", message.trim());
        if !text.is_empty() && text.len() + entry.len() > 1500 {
            break;
        }
        text.push_str(&entry);
    }
    text.chars()
        .take(1500)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The failure of `test` before it was repaired: from the nearest ancestor of candidate `i`
/// where it failed.
fn failure_before(candidates: &[Candidate], mut i: usize, test: &str) -> String {
    loop {
        if let Some((_, message)) = candidates[i].failures.iter().find(|(n, _)| n == test) {
            return message.clone();
        }
        match candidates[i].origin {
            Origin::Repaired { of } | Origin::Fixed { of, .. } => i = of,
            Origin::Sampled { .. } => return String::new(),
        }
    }
}
