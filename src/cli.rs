//! Every command, flag and help text of the `unitforge` binary (clap definitions), and nothing
//! else: each command's body lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use unitforge_sandbox::backend::BackendOptions;
use unitforge_sandbox::daemon::DEFAULT_IDLE_TIMEOUT;
use unitforge_sandbox::executor::{ExecutorKind, ExecutorOptions};
use unitforge_trainer::stages::StageKind;

#[derive(Parser)]
#[command(
    name = "unitforge",
    version,
    about = "Train models to write pytest unit tests, and judge tests by running them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Score a pytest suite against a code under test: validity, mutant kill rate, speed,
    /// stability, robustness and the composite reward.
    ///
    /// Exit status 0 whenever scoring ran, whatever the score; non-zero for unusable input
    /// (missing file, syntax error in the code under test, bad config).
    Score(ScoreArgs),
    /// Run the reward service: JSON over HTTP in front of a warm sandbox pool, with a cache.
    Serve(ServeArgs),
    /// Serve the pytest runner to one reward service at a time over TCP, as a container's own
    /// process (a Kubernetes pod; `serve --executor remote --runner HOST:PORT` leases it). Exits
    /// with status 3 after a lease that something outlived (the orchestrator restarts it).
    Runner(RunnerArgs),
    /// Ask a running reward service whether it is healthy (exit 0) or not (exit 2): for
    /// health checks, as in compose.yaml.
    Health(HealthArgs),
    /// Write a randomly initialised model in Hugging Face layout (config.json,
    /// model.safetensors) with a BPE tokenizer (tokenizer.json) trained on the project's data;
    /// or, with --from and --keep-layers, a student made of evenly spaced layers of a teacher.
    InitModel(InitModelArgs),
    /// Import a Llama-architecture GGUF file (llama.cpp's format: F32, F16, BF16, Q4_0, Q4_1,
    /// Q5_*, Q8_0, K-quants) into the Hugging Face layout the trainer loads: config.json,
    /// model.safetensors, tokenizer.json, tokenizer_config.json (chat template),
    /// generation_config.json.
    ImportGguf(ImportGgufArgs),
    /// LoRA adapters: export one (PEFT files, in bf16 to publish it) or merge one into its
    /// base model (a Hugging Face model directory another adapter can be trained or applied on).
    #[command(subcommand)]
    Adapter(AdapterCommand),
    /// Precompute the offline teacher field: add `teacher_logprobs` (the teacher's log-prob of
    /// each target token, end token included) to every row of a JSONL dataset.
    TeacherLogprobs(TeacherLogprobsArgs),
    /// Generate pytest files for a module with a trained model (offline inference).
    Generate(GenerateArgs),
    /// Training stages.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// List the mutants of a Python module.
    Mutants(MutantsArgs),
    /// Show semantics-preserving variants of a Python module (used for the robustness reward).
    Variants(VariantsArgs),
    /// The sandbox image: show its tag and state, or build it (offline, with mmdebstrap).
    #[command(subcommand)]
    Image(ImageCommand),
    /// The background scorer `unitforge score` starts and reuses: a warm worker pool behind a
    /// Unix socket only this user can reach, one per configuration, gone after an idle timeout.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Check the Docker engine, the sandbox image, and which protections hold inside a probe
    /// container.
    Doctor(DoctorArgs),
    /// Benchmarks that print figures side by side with a reference.
    #[command(subcommand)]
    Bench(BenchCommand),
}

// ---------------------------------------------------------------------------------------------
// Where tests run.

/// Options that choose and size the executor.
#[derive(Args, Clone)]
pub struct ExecutorArgs {
    /// Where tests run: `docker` (hardened containers, the default), `remote` (`unitforge
    /// runner` hosts at --runner, e.g. pods on a cluster: no Docker socket needed) or `local`
    /// (processes on this machine, for development only: untrusted code then runs on the host).
    #[arg(long, value_enum, default_value = "docker")]
    pub executor: ExecutorChoice,
    /// Remote executor: a runner host, HOST:PORT (repeat for several; a name that resolves to
    /// many addresses, such as a headless Service, stands for all of them).
    #[arg(long = "runner", value_name = "HOST:PORT")]
    pub runners: Vec<String>,
    /// Remote executor: seconds a run may wait for a free runner before it fails as
    /// infrastructure.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub lease_timeout: f64,
    /// Docker executor: the sandbox image (default: the tag derived from this build's runner,
    /// built offline if missing).
    #[arg(long, value_name = "TAG")]
    pub image: Option<String>,
    /// Local executor: Python interpreter with pytest installed (default: $UNITFORGE_PYTHON,
    /// else the nearest .venv/bin/python, else python3).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Workers (containers or processes) running tests in parallel (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Replace a worker after this many runs.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub recycle_after: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExecutorChoice {
    Docker,
    Local,
    Remote,
}

impl ExecutorArgs {
    pub fn options(&self) -> ExecutorOptions {
        let defaults = ExecutorOptions::default();
        ExecutorOptions {
            kind: match self.executor {
                ExecutorChoice::Docker => ExecutorKind::Docker,
                ExecutorChoice::Local => ExecutorKind::Local,
                ExecutorChoice::Remote => ExecutorKind::Remote,
            },
            workers: self.workers.unwrap_or(defaults.workers),
            recycle_after: self.recycle_after,
            python: self.python.clone(),
            image: self.image.clone(),
            container: defaults.container,
            runners: self.runners.clone(),
            lease_timeout: std::time::Duration::from_secs_f64(self.lease_timeout.max(0.0)),
        }
    }

    /// The flags that recreate these arguments on another `unitforge` command line.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--executor".to_string(),
            self.options().kind.name().to_string(),
            "--recycle-after".to_string(),
            self.recycle_after.to_string(),
        ];
        let optional = [
            ("--image", self.image.clone()),
            (
                "--python",
                self.python.as_ref().map(|p| p.display().to_string()),
            ),
            ("--workers", self.workers.map(|w| w.to_string())),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                flags.extend([flag.to_string(), value]);
            }
        }
        for runner in &self.runners {
            flags.extend(["--runner".to_string(), runner.clone()]);
        }
        if !self.runners.is_empty() {
            flags.extend([
                "--lease-timeout".to_string(),
                self.lease_timeout.to_string(),
            ]);
        }
        flags
    }

    /// A reward backend on this executor, or on `servers` when any are given.
    pub fn backend(&self, servers: &[String], concurrency: usize) -> BackendOptions {
        BackendOptions {
            executor: self.options(),
            servers: servers.to_vec(),
            concurrency,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sandbox's commands.

#[derive(Args)]
pub struct ScoreArgs {
    /// The code under test (a Python module; its file stem is the module name the tests import).
    #[arg(long, value_name = "FILE", required_unless_present = "batch")]
    pub code: Option<PathBuf>,
    /// The pytest file to score.
    #[arg(long, value_name = "FILE", required_unless_present = "batch")]
    pub tests: Option<PathBuf>,
    /// Module name of the code under test, if not the file stem of --code.
    #[arg(long, value_name = "NAME")]
    pub module: Option<String>,
    /// Reward config (YAML); defaults are documented in docs/rewards.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What a test failing on the code under test does (overrides the config's
    /// `failing_tests`): `invalidate` the suite (the default), or `prune` it — failing, flaky
    /// and repeated tests are removed and the rest is scored, discounted by the share kept.
    #[arg(long, value_name = "RULE", value_parser = ["invalidate", "prune"])]
    pub failing_tests: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Score many pairs from a JSONL file: one object per line with `code`, `tests`, and
    /// optional `id` and `module`. Writes one JSON result per line.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["code", "tests"])]
    pub batch: Option<PathBuf>,
    /// Pairs scored at the same time in --batch mode.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Where --batch writes its JSONL results (default: standard output).
    #[arg(long, value_name = "FILE", requires = "batch")]
    pub out: Option<PathBuf>,
    /// Score through a running `unitforge serve` instead of a local pool (repeat for several
    /// endpoints; requests are spread over them).
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    /// Score in this process (start the workers, score, stop them) instead of through the
    /// background scorer that one `unitforge score` starts and later ones reuse (`unitforge
    /// daemon`). The report is the same either way. Also set by UNITFORGE_NO_DAEMON=1.
    #[arg(long)]
    pub no_daemon: bool,
    /// Seconds the background scorer waits for the next pair before it exits.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub daemon_idle_timeout: u64,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Subcommand)]
pub enum DaemonCommand {
    /// List the running background scorers: pid, executor, workers, pairs scored, idle time.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every background scorer of this user (their workers stop with them).
    Stop,
    /// Internal: be the background scorer on SOCKET (`unitforge score` starts this).
    #[command(hide = true)]
    Run(DaemonRunArgs),
}

#[derive(Args)]
pub struct DaemonRunArgs {
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Default reward config for requests that carry none.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the persistent result cache lives.
    #[arg(long, value_name = "DIR", default_value = ".unitforge-cache")]
    pub cache_dir: PathBuf,
    /// Keep no cache: every request is computed.
    #[arg(long)]
    pub no_cache: bool,
    /// Scores held in the in-memory cache.
    #[arg(long, default_value_t = 10_000)]
    pub cache_entries: usize,
    /// Scores admitted at once (in progress or waiting); more get 429 with Retry-After.
    #[arg(long, default_value_t = 512)]
    pub queue: usize,
    /// Stop gracefully once this file exists (a pipeline's last stage creates it, so the
    /// service ends with the pipeline).
    #[arg(long, value_name = "PATH")]
    pub stop_file: Option<PathBuf>,
    /// On SIGTERM, answer 503 to new requests and fail /healthz for this many seconds before
    /// closing (requests in flight always finish), so that load balancers stop sending first.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub drain: f64,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Args)]
pub struct RunnerArgs {
    /// Address to listen on for leases.
    #[arg(long, default_value = "0.0.0.0:7070")]
    pub listen: String,
    /// The Python with pytest that runs the tests (default: $UNITFORGE_PYTHON, else the nearest
    /// .venv/bin/python, else python3; the runner image sets /usr/bin/python3).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// The work directory, wiped between leases (in a pod: an in-memory emptyDir).
    #[arg(long, value_name = "DIR", default_value = "/work")]
    pub work_dir: PathBuf,
    /// Exit after this many leases (the orchestrator starts a fresh runner).
    #[arg(long, value_name = "N")]
    pub max_leases: Option<u64>,
}

#[derive(Args)]
pub struct HealthArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct MutantsArgs {
    /// The Python module to mutate.
    pub file: PathBuf,
    /// At most this many mutants (sampled deterministically by --seed).
    #[arg(long, default_value_t = usize::MAX)]
    pub max: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON (with each mutant's full source under `source`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VariantsArgs {
    /// The Python module to rewrite.
    pub file: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Print the image tag this build uses and whether the engine has it.
    Status,
    /// Build the image if the engine does not have it (images/sandbox/build-offline.sh).
    Build,
}

#[derive(Args)]
pub struct DoctorArgs {
    /// The image to probe (default: the tag derived from this build).
    #[arg(long, value_name = "TAG")]
    pub image: Option<String>,
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------------------------
// Models: initialise, train, generate, evaluate.

#[derive(Args)]
pub struct InitModelArgs {
    /// Model shape, initialisation and tokenizer settings.
    #[arg(
        long,
        default_value = "configs/model_tiny.yaml",
        conflicts_with = "from"
    )]
    pub config: PathBuf,
    /// A teacher checkpoint (Hugging Face layout) to prune instead: the student keeps
    /// --keep-layers of its layers, evenly spaced, first and last included, and its tokenizer.
    #[arg(long, value_name = "DIR", requires = "keep_layers")]
    pub from: Option<PathBuf>,
    /// Layers of the --from model to keep.
    #[arg(long, value_name = "N", requires = "from")]
    pub keep_layers: Option<usize>,
    /// Output directory.
    #[arg(long, default_value = "models/tiny")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AdapterCommand {
    /// Copy a run's PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`) to
    /// --out, its weights stored as --dtype.
    Export {
        /// A training run's output directory (or any directory holding the two PEFT files).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: WeightDtype,
    },
    /// Write --model with --adapter merged into its weights (model.safetensors, config.json,
    /// the tokenizer files) to --out.
    Merge {
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        #[arg(long, value_name = "DIR")]
        adapter: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct ImportGgufArgs {
    /// The GGUF file.
    #[arg(long, value_name = "FILE")]
    pub gguf: PathBuf,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Dtype of the written weights (they are dequantised).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: WeightDtype,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum WeightDtype {
    F32,
    Bf16,
}

#[derive(Args)]
pub struct TeacherLogprobsArgs {
    /// The teacher checkpoint (Hugging Face layout; it must share the student's tokenizer).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Input JSONL (the SFT format).
    #[arg(long)]
    pub data: PathBuf,
    /// Output JSONL: the input rows, each with `teacher_logprobs` added.
    #[arg(long)]
    pub out: PathBuf,
    /// Token budget of prompt + target, as in the distillation config (at least its max_len).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Stage 1: supervised fine-tuning (LoRA, QLoRA or full) on (prompt, tests) pairs.
    Sft(StageArgs),
    /// Stage 2: GKD distillation from a teacher (online checkpoint, or the data's
    /// teacher_logprobs): CE + λ_jsd·JSD + λ_rkl·RKL, optionally on the student's own samples.
    Distill(StageArgs),
    /// Stage 3: GRPO. Groups of completions per prompt, each scored in the sandbox (the reward
    /// config under `reward:`), advantage = reward − group mean, clipped policy loss, KL to the
    /// starting weights, optional online JSD to a teacher. Writes metrics.jsonl,
    /// completions.jsonl, eval.jsonl and reward_curve.png beside the model.
    Grpo(GrpoArgs),
}

impl TrainCommand {
    /// The stage, and its config overrides (a GRPO command's flags become `reward.*` ones).
    pub fn stage(&self) -> (StageKind, &StageArgs, Vec<String>) {
        match self {
            TrainCommand::Sft(args) => (StageKind::Sft, args, args.overrides.clone()),
            TrainCommand::Distill(args) => (StageKind::Distill, args, args.overrides.clone()),
            TrainCommand::Grpo(grpo) => {
                let mut overrides = grpo.stage.overrides.clone();
                if let Some(executor) = grpo.executor {
                    let name = match executor {
                        ExecutorChoice::Docker => "docker",
                        ExecutorChoice::Local => "local",
                        ExecutorChoice::Remote => "remote",
                    };
                    overrides.push(format!("reward.executor={name}"));
                }
                if let Some(server) = &grpo.server {
                    overrides.push(format!("reward.server={server}"));
                }
                (StageKind::Grpo, &grpo.stage, overrides)
            }
        }
    }
}

#[derive(Args)]
pub struct GrpoArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Where the completions' tests run (overrides `reward.executor`): `docker` (hardened
    /// containers, the default) or `local` (host processes, development only).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorChoice>,
    /// Score through a running `unitforge serve` (overrides `reward.server`); its cache makes
    /// repeated completions free.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// `--config FILE` and `--set key=value` overrides, shared by every stage.
#[derive(Args)]
pub struct StageArgs {
    /// The stage's YAML config (top-level keys include base_model, output_dir, max_steps,
    /// train_data, eval_data); unknown keys are an error.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config value; dotted keys reach nested fields (`--set lora.rank=16`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Model directory (Hugging Face layout: config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A PEFT adapter directory to apply on top of --model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// The code under test; its file stem is the module name in the prompt. Repeat for several
    /// modules: all their prompts are generated as one batch.
    #[arg(long, value_name = "FILE", required = true)]
    pub code: Vec<PathBuf>,
    /// Completions to sample per module.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON: each completion and the test file extracted from it (with --deliver: the
    /// delivery report).
    #[arg(long)]
    pub json: bool,
    /// Deliver one checked test file instead of raw samples: the --n suites are scored in the
    /// sandbox, failing, flaky and repeated tests pruned, optionally repaired and fixed, and
    /// the best suite that passes as written goes to --out with a report. One --code only.
    #[arg(long, requires = "out")]
    pub deliver: bool,
    /// Where the delivered test file goes (with --deliver).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The module name the tests import (default: the --code file's stem).
    #[arg(long, value_name = "NAME")]
    pub module: Option<String>,
    /// Oracle repair: an `assert f(x) == EXPECTED` (or `pytest.approx`, or `pytest.raises`)
    /// that fails only because of its expected value is rewritten to what the code does, from
    /// the sandbox's evidence; the report lists each such disagreement.
    #[arg(long, requires = "deliver")]
    pub oracle_repair: bool,
    /// Fix rounds: suites that still fail are sent back to the model with the fix template and
    /// their failure text, up to this many times.
    #[arg(long, default_value_t = 0, requires = "deliver")]
    pub fix_rounds: usize,
    /// Ask the model (diagnose template) whether the test or the code is wrong, for each
    /// expectation oracle repair changed.
    #[arg(long, requires = "oracle_repair")]
    pub diagnose: bool,
    /// Reward config (YAML) for the scores.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Score through a running `unitforge serve` instead of a local pool.
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    /// Suites scored at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Greedy samples for held-out prompts: the fraction that is syntactically valid pytest
    /// (parses, defines a test) and that imports the module under test. Nothing is run.
    Samples(EvalSamplesArgs),
    /// K suites per held-out row, scored in the sandbox: valid-pytest rate, pass rate, mean and
    /// median kill rate, best-of-K kill rate, mean composite; beside the rows' own reference
    /// suites and a trivial suite.
    Mutation(EvalRunArgs),
    /// The same scoring, speed figures: mean / median suite CPU time, speed reward, stability
    /// and the flaky fraction of the passing suites.
    Speed(EvalRunArgs),
    /// Mutation and speed figures from one scoring pass (each suite is scored once).
    All(EvalRunArgs),
    /// Several checkpoints' reports side by side: pareto.png (kill rate against suite CPU
    /// time, the non-dominated front), report.md and report.json.
    Pareto(ParetoArgs),
    /// Paired comparison on the same held-out rows: each other report's per-row means less the
    /// base's (pruned and as-written composite and kill rate, pass rate), with 95 % bootstrap
    /// intervals over rows.
    Compare(CompareArgs),
    /// Delivered figures held out: for each row, the greedy suite as written, then one delivery
    /// (N samples, oracle repair, fix rounds) read step by step — best of N once pruned, + oracle
    /// repair, + fix rounds, and the file delivered — as the share of rows with a valid suite
    /// and the mean kill rate (95 % intervals over rows), beside the human and trivial suites.
    Deliver(EvalDeliverArgs),
    /// Fix success rate: on fix rows (`data fix-rows`), the share of broken suites whose greedy
    /// fix passes as written, with a 95 % interval over rows.
    Fix(EvalFixArgs),
}

#[derive(Args)]
pub struct EvalFixArgs {
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Fix rows (rows whose `task` is not `fix` are skipped).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 384)]
    pub max_new_tokens: usize,
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalDeliverArgs {
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    #[arg(long, default_value = "data/corpus/eval.jsonl")]
    pub data: PathBuf,
    /// Rows to evaluate (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Suites sampled per row.
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    #[arg(long, default_value_t = 1)]
    pub fix_rounds: usize,
    #[arg(long, default_value_t = 320)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Write the report (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Keep each finished row in FILE (JSON lines) and, when FILE holds rows of a run with
    /// the same settings, take them instead of delivering them again: a run over every
    /// held-out row takes hours and resumes where it was stopped.
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

#[derive(Args)]
pub struct CompareArgs {
    /// The report the others are compared with: a file, or a run directory holding
    /// `eval_report.json`.
    #[arg(value_name = "BASE")]
    pub base: PathBuf,
    /// The reports compared with it.
    #[arg(required = true, value_name = "OTHER")]
    pub others: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Which figures `eval mutation | speed | all` prints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EvalFocus {
    Mutation,
    Speed,
    All,
}

#[derive(Args)]
pub struct EvalRunArgs {
    /// Model directory (Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A PEFT adapter directory to apply on top of --model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Held-out JSONL (rows with `code`; their `chosen` tests are the reference baseline).
    #[arg(long, default_value = "data/corpus/eval.jsonl")]
    pub data: PathBuf,
    /// Suites generated per row (K); 1 is greedy.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Rows to evaluate (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 384)]
    pub max_new_tokens: usize,
    /// Sampling temperature when --samples > 1.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Reward config (YAML); default: the built-in one (docs/rewards.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Suites scored at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Score through a running `unitforge serve` instead of a local pool.
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Write the whole report (every row and suite) as JSON here; `eval pareto` reads it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ParetoArgs {
    /// Evaluation reports: files, or run directories holding `eval_report.json`; each is a
    /// checkpoint, labelled by its directory name.
    #[arg(required = true, value_name = "RUN_DIR|REPORT")]
    pub reports: Vec<PathBuf>,
    /// Where pareto.png, report.md and report.json go.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalSamplesArgs {
    /// Model directory (Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A PEFT adapter directory to apply on top of --model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Held-out JSONL (the SFT format).
    #[arg(long, default_value = "data/corpus/eval.jsonl")]
    pub data: PathBuf,
    /// Prompts to sample (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 384)]
    pub max_new_tokens: usize,
    /// Also run each valid sample in the sandbox against its code: the share that passes, and
    /// the mean kill rate (default reward config).
    #[arg(long)]
    pub score: bool,
    /// Pairs scored at once (with --score).
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Print the whole report, every sample included, as JSON.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------------------------
// Datasets.

#[derive(Subcommand)]
pub enum DataCommand {
    /// Turn a directory of pairs (<name>/<name>.py + <name>/test_<name>.py) into SFT JSONL rows
    /// (`module`, `code`, `chosen`), split into train.jsonl and eval.jsonl.
    FromPairs(FromPairsArgs),
    /// Generate the synthetic corpus: (module → pytest file) pairs from varied function families,
    /// each reference suite scored in the sandbox; only suites valid on their code are kept.
    /// Writes train.jsonl, eval.jsonl (held out: no code also in train.jsonl) and report.json.
    Generate(GenerateDataArgs),
    /// Reward-filtered SFT rows (RAFT) from what a model wrote: given an `eval all` report on
    /// training rows (`--data data/corpus/train.jsonl`), each row's best suites by pruned
    /// composite become their kept files (the suite less its pruned tests), each kept file is
    /// scored as written, and the best that passes and kills becomes the row's target. Train a
    /// further SFT round on --out (`train sft --set train_data=FILE`).
    Raft(RaftArgs),
    /// Fix and diagnose rows for training the repair: each validated pair's suite broken one way
    /// (a wrong expected value, a wrong exception class, a wrong imported name, an argument off
    /// by one), run in the sandbox for its real failure text, and kept only if it fails; the fix
    /// row's target is the original suite, the diagnose row's a templated explanation.
    FixRows(FixRowsArgs),
}

#[derive(Args)]
pub struct FixRowsArgs {
    /// Validated pairs (module, code, chosen).
    #[arg(long, default_value = "data/corpus/train.jsonl")]
    pub data: PathBuf,
    /// Where the rows go (JSONL: task, module, code, prompt, chosen, tests, corruption).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Pairs to use (the first N; 0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Args)]
pub struct RaftArgs {
    /// The report of `eval all --data <training rows> --samples K --out FILE`: the model's
    /// suites with their pruned scores.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// The dataset the report was made from (its rows give each suite's code).
    #[arg(long, default_value = "data/corpus/train.jsonl")]
    pub data: PathBuf,
    /// Where the rows go (JSONL: module, code, chosen, and the kept file's scores).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Suites tried per row, best first by pruned composite.
    #[arg(long, default_value_t = 2)]
    pub candidates: usize,
    /// A kept file must kill more than this share of the mutants.
    #[arg(long, default_value_t = 0.0)]
    pub min_kill: f64,
    /// Also try each suite with its wrong expected values rewritten to what the code returns
    /// (oracle repair, as `generate --deliver` does), so that a test whose only fault was its
    /// expectation stays in the row instead of being pruned.
    #[arg(long)]
    pub oracle_repair: bool,
    /// Reward config (YAML); the report's own config keeps the service's cache warm.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Suites scored at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Score through a running `unitforge serve` (repeat for several) instead of a local pool.
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct FromPairsArgs {
    #[arg(long, default_value = "data/pairs")]
    pub pairs: PathBuf,
    #[arg(long, default_value = "data/sft")]
    pub out: PathBuf,
    /// Pairs held out for evaluation (the last ones in name order).
    #[arg(long, default_value_t = 6)]
    pub eval: usize,
}

#[derive(Args)]
pub struct GenerateDataArgs {
    /// Output directory.
    #[arg(long, default_value = "data/corpus")]
    pub out: PathBuf,
    /// Validated training pairs to write.
    #[arg(long, default_value_t = 2000)]
    pub train: usize,
    /// Validated held-out pairs to write (none of their modules' code appears in training).
    #[arg(long, default_value_t = 120)]
    pub held_out: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pairs scored at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Reward config the reference suites are scored with (default: the built-in one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Score every shipped pair and print mutants, kill rate, per-run overhead, wall time per
    /// pair and mutants per second; with mutmut 3 in the venv, mutmut's figures beside them.
    Score(BenchScoreArgs),
    /// Serve the shipped pairs through the reward service and print candidates per second and
    /// p50/p99 latency for: a warm container pool, a fresh container per run, the local
    /// executor, and cache hits.
    Serve(BenchServeArgs),
    /// Time SFT steps (full, LoRA, QLoRA) and generation on the tiny and a 0.5B-shaped model:
    /// tokens/s, achieved FLOP/s against this CPU's matmul peak, peak memory (bf16 vs 4-bit
    /// base); with torch installed, PyTorch's figures beside them.
    Train(BenchTrainArgs),
    /// One-shot latency as a user meets it: `unitforge score` on each pair in a fresh process
    /// (through the background scorer, and with --no-daemon: pool start-up included), and
    /// mutmut on the same pair in a fresh process, side by side, with the ratio and medians.
    Oneshot(BenchOneshotArgs),
    /// Run a few GRPO steps of a config on a model (SmolLM2 by default) and print where each
    /// step's time goes — generation, waiting for scores, log-probs, forward, backward,
    /// optimiser — with the generation throughput beside the generator's own batch-8 figure on
    /// the model's shape, measured in the same run.
    Grpo(BenchGrpoArgs),
}

#[derive(Args)]
pub struct BenchGrpoArgs {
    /// The GRPO stage config.
    #[arg(long, default_value = "configs/smollm2/grpo_mutant_max.yaml")]
    pub config: PathBuf,
    /// The model the steps start from (its `base_model`).
    #[arg(long, default_value = "models/smollm2-135m-instruct")]
    pub model: PathBuf,
    /// Timed GRPO steps.
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// The shape of the batch-8 generation reference (`bench train`'s probe on random weights):
    /// `smollm2`, `tiny` or `0.5b`.
    #[arg(long, default_value = "smollm2")]
    pub shape: String,
    /// Tokens each reference probe generates.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// Further `key=value` overrides of the config (repeatable), e.g.
    /// `--set grpo.prompts_per_step=4 --set reward.executor=local`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Keep the run's output directory here (default: a temporary directory, removed).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A llama.cpp build (its folder, with `bin/llama-batched-bench`, or that program itself;
    /// `make llama-cpp` builds one in `.llama-cpp`): after the steps, llama.cpp decodes the
    /// steps' shape — as many sequences as a step has completions, sharing one prompt of the
    /// steps' mean prompt length, each decoding their mean completion length — and its time
    /// for a step's generation is printed beside the step's own.
    #[arg(long, value_name = "PATH")]
    pub llama_cpp: Option<PathBuf>,
    /// The GGUF weights llama.cpp decodes with (`make model` writes SmolLM2's Q4_1).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub llama_cpp_model: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchOneshotArgs {
    /// Directory of pairs: one folder per pair holding `<name>.py` and `test_<name>.py`.
    #[arg(long, default_value = "data/pairs")]
    pub pairs: PathBuf,
    /// Only the first N pairs (in name order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Python of a virtual environment with mutmut 3 (`make bench-oneshot` makes
    /// .venv-mutmut); without it only unitforge is timed.
    #[arg(long, value_name = "PATH")]
    pub mutmut_python: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Args)]
pub struct BenchScoreArgs {
    /// Directory of pairs: one folder per pair holding `<name>.py` and `test_<name>.py`.
    #[arg(long, default_value = "data/pairs")]
    pub pairs: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Score each pair this many times and report the median wall time.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Also run mutmut on each pair (needs mutmut 3 next to the Python used).
    #[arg(long)]
    pub mutmut: bool,
    /// Also score each pair with coverage guidance off (every mutant runs the whole suite), in
    /// the same run: the reference for coverage-guided runs, with every mutant's verdict
    /// compared.
    #[arg(long)]
    pub full_runs: bool,
    /// Also score every pair again with this many pairs in flight at once, as a trainer's batch
    /// reaches the service (the workers stay busy while one pair waits on its baseline or its
    /// coverage run), and print that throughput beside the one-pair-at-a-time figure.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub in_flight: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

#[derive(Args)]
pub struct BenchServeArgs {
    #[arg(long, default_value = "data/pairs")]
    pub pairs: PathBuf,
    /// Use the first N pairs (a fresh container per run is slow).
    #[arg(long, default_value_t = 8)]
    pub limit: usize,
    /// Workers per pool.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Model shapes: `tiny` (configs/model_tiny.yaml), `0.5b` (Qwen2-0.5B's shape) and
    /// `smollm2` (SmolLM2-135M-Instruct's shape; random weights, the same arithmetic).
    #[arg(long, value_delimiter = ',', default_value = "tiny,0.5b")]
    pub shapes: Vec<String>,
    /// Only these modes (`full`, `lora`, `lora-bf16`, `qlora`, `generate`, and `full-ckpt`,
    /// `lora-ckpt`, `qlora-ckpt`: with activation checkpointing, LoRA without dropout;
    /// `generate-lora`: generation with LoRA adapters, as GRPO's policy generates;
    /// `generate-bf16`, `generate-nf4`: generation from a bf16 or a 4-bit NF4 base); default:
    /// tiny full/lora/qlora/generate, the others lora/lora-bf16/qlora/lora-ckpt/qlora-ckpt/generate.
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Measure every configuration twice, with the fused CPU ops (RMSNorm, attention
    /// probabilities, chosen-token log-probabilities) and with their compositions from
    /// autograd's primitives, one right after the other: what the fused ops buy, in one run.
    #[arg(long)]
    pub compare_unfused: bool,
    /// Timed training steps per configuration (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Tokens generated per measurement.
    #[arg(long, default_value_t = 32)]
    pub gen_tokens: usize,
    /// Python with torch + transformers (+ peft) for the PyTorch reference (skipped if absent).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Where candle runs: `cpu`, or `cuda` (the first GPU; needs a `--features cuda` build).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    #[arg(long)]
    pub json: bool,
    /// Internal: run one configuration (JSON) and print its figures.
    #[arg(long, hide = true)]
    pub probe: Option<String>,
}
