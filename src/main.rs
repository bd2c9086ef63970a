//! `unitforge`: the command-line front end. Parses arguments, calls the libraries, prints.
//!
//! Everything of substance lives in the `unitforge-sandbox` and `unitforge-trainer` crates;
//! this binary only wires them to files, flags, progress bars and exit codes.

mod bench;
mod bench_train;
mod data;
mod render;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use unitforge_sandbox::api::ScoreRequest;
use unitforge_sandbox::cache::ResultCache;
use unitforge_sandbox::client::{Client, ClientOptions};
use unitforge_sandbox::executor::{start_pool, ExecutorKind, ExecutorOptions};
use unitforge_sandbox::mutant::{generate_mutants, MutantConfig};
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::{ScoreInput, ScoreReport, Scorer};
use unitforge_sandbox::service::{Service, ServiceLimits};
use unitforge_sandbox::source::PythonSource;
use unitforge_sandbox::variant::{generate_variants, VariantConfig};

#[derive(Parser)]
#[command(
    name = "unitforge",
    version,
    about = "Train models to write pytest unit tests, and judge tests by running them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a pytest suite against a code under test: validity, mutant kill rate, speed,
    /// stability, robustness and the composite reward.
    ///
    /// Exit status 0 whenever scoring ran, whatever the score; non-zero for unusable input
    /// (missing file, syntax error in the code under test, bad config).
    Score(ScoreArgs),
    /// Run the reward service: JSON over HTTP in front of a warm sandbox pool, with a cache.
    Serve(ServeArgs),
    /// Write a randomly initialised model in Hugging Face layout (config.json,
    /// model.safetensors) with a BPE tokenizer (tokenizer.json) trained on the project's data.
    InitModel {
        /// Model shape, initialisation and tokenizer settings.
        #[arg(long, default_value = "configs/model_tiny.yaml")]
        config: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "models/tiny")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Precompute the offline teacher field: add `teacher_logprobs` (the teacher's log-prob of
    /// each target token, end token included) to every row of a JSONL dataset.
    TeacherLogprobs {
        /// The teacher checkpoint (Hugging Face layout; it must share the student's tokenizer).
        #[arg(long)]
        teacher: PathBuf,
        /// Input JSONL (the SFT format).
        #[arg(long)]
        data: PathBuf,
        /// Output JSONL: the input rows, each with `teacher_logprobs` added.
        #[arg(long)]
        out: PathBuf,
        /// Token budget of prompt + target, as in the distillation config (at least its max_len).
        #[arg(long, default_value_t = 512)]
        max_len: usize,
        #[arg(long)]
        json: bool,
    },
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
    Data(data::DataCommand),
    /// List the mutants of a Python module.
    Mutants(MutantsArgs),
    /// Show semantics-preserving variants of a Python module (used for the robustness reward).
    Variants(VariantsArgs),
    /// The sandbox image: show its tag and state, or build it (offline, with mmdebstrap).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Check the Docker engine, the sandbox image, and which protections hold inside a probe
    /// container.
    Doctor {
        /// The image to probe (default: the tag derived from this build).
        #[arg(long, value_name = "TAG")]
        image: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures side by side with a reference.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Args)]
struct GenerateArgs {
    /// Model directory (Hugging Face layout: config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// A PEFT adapter directory to apply on top of --model.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// The code under test; its file stem is the module name in the prompt. Repeat for several
    /// modules: all their prompts are generated as one batch.
    #[arg(long, value_name = "FILE", required = true)]
    code: Vec<PathBuf>,
    /// Completions to sample per module.
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON: each completion and the test file extracted from it.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Greedy samples for held-out prompts: the fraction that is syntactically valid pytest
    /// (parses, defines a test) and that imports the module under test. Nothing is run.
    Samples(EvalSamplesArgs),
}

#[derive(Args)]
struct EvalSamplesArgs {
    /// Model directory (Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// A PEFT adapter directory to apply on top of --model.
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// Held-out JSONL (the SFT format).
    #[arg(long, default_value = "data/corpus/eval.jsonl")]
    data: PathBuf,
    /// Prompts to sample (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, default_value_t = 384)]
    max_new_tokens: usize,
    /// Also run each valid sample in the sandbox against its code: the share that passes, and
    /// the mean kill rate (default reward config).
    #[arg(long)]
    score: bool,
    /// Pairs scored at once (with --score).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    executor: ExecutorArgs,
    /// Print the whole report, every sample included, as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Stage 1: supervised fine-tuning (LoRA, QLoRA or full) on (prompt, tests) pairs.
    Sft(StageArgs),
    /// Stage 2: GKD distillation from a teacher (online checkpoint, or the data's
    /// teacher_logprobs): CE + λ_jsd·JSD + λ_rkl·RKL, optionally on the student's own samples.
    Distill(StageArgs),
}

/// `--config FILE` and `--set key=value` overrides, shared by every stage.
#[derive(Args)]
struct StageArgs {
    /// The stage's YAML config (top-level keys include base_model, output_dir, max_steps,
    /// train_data, eval_data); unknown keys are an error.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Override a config value; dotted keys reach nested fields (`--set lora.rank=16`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Print the image tag this build uses and whether the engine has it.
    Status,
    /// Build the image if the engine does not have it (images/sandbox/build-offline.sh).
    Build,
}

/// Options that choose and size the executor.
#[derive(Args, Clone)]
pub(crate) struct ExecutorArgs {
    /// Where tests run: `docker` (hardened containers, the default) or `local` (processes on
    /// this machine, for development only: untrusted code then runs on the host).
    #[arg(long, value_enum, default_value = "docker")]
    executor: ExecutorChoice,
    /// Docker executor: the sandbox image (default: the tag derived from this build's runner,
    /// built offline if missing).
    #[arg(long, value_name = "TAG")]
    image: Option<String>,
    /// Local executor: Python interpreter with pytest installed (default: $UNITFORGE_PYTHON,
    /// else the nearest .venv/bin/python, else python3).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Workers (containers or processes) running tests in parallel (default: number of CPUs).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Replace a worker after this many runs.
    #[arg(long, value_name = "N", default_value_t = 500)]
    recycle_after: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExecutorChoice {
    Docker,
    Local,
}

impl ExecutorArgs {
    fn options(&self) -> ExecutorOptions {
        let defaults = ExecutorOptions::default();
        ExecutorOptions {
            kind: match self.executor {
                ExecutorChoice::Docker => ExecutorKind::Docker,
                ExecutorChoice::Local => ExecutorKind::Local,
            },
            workers: self.workers.unwrap_or(defaults.workers),
            recycle_after: self.recycle_after,
            python: self.python.clone(),
            image: self.image.clone(),
            container: defaults.container,
        }
    }
}

#[derive(Args)]
struct ScoreArgs {
    /// The code under test (a Python module; its file stem is the module name the tests import).
    #[arg(long, value_name = "FILE", required_unless_present = "batch")]
    code: Option<PathBuf>,
    /// The pytest file to score.
    #[arg(long, value_name = "FILE", required_unless_present = "batch")]
    tests: Option<PathBuf>,
    /// Module name of the code under test, if not the file stem of --code.
    #[arg(long, value_name = "NAME")]
    module: Option<String>,
    /// Reward config (YAML); defaults are documented in docs/rewards.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Score many pairs from a JSONL file: one object per line with `code`, `tests`, and
    /// optional `id` and `module`. Writes one JSON result per line.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["code", "tests"])]
    batch: Option<PathBuf>,
    /// Pairs scored at the same time in --batch mode.
    #[arg(long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    /// Where --batch writes its JSONL results (default: standard output).
    #[arg(long, value_name = "FILE", requires = "batch")]
    out: Option<PathBuf>,
    /// Score through a running `unitforge serve` instead of a local pool (repeat for several
    /// endpoints; requests are spread over them).
    #[arg(long, value_name = "URL")]
    server: Vec<String>,
    #[command(flatten)]
    executor: ExecutorArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Default reward config for requests that carry none.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the persistent result cache lives.
    #[arg(long, value_name = "DIR", default_value = ".unitforge-cache")]
    cache_dir: PathBuf,
    /// Keep no cache: every request is computed.
    #[arg(long)]
    no_cache: bool,
    /// Scores held in the in-memory cache.
    #[arg(long, default_value_t = 10_000)]
    cache_entries: usize,
    /// Scores admitted at once (in progress or waiting); more get 429 with Retry-After.
    #[arg(long, default_value_t = 512)]
    queue: usize,
    #[command(flatten)]
    executor: ExecutorArgs,
}

#[derive(Args)]
struct MutantsArgs {
    /// The Python module to mutate.
    file: PathBuf,
    /// At most this many mutants (sampled deterministically by --seed).
    #[arg(long, default_value_t = usize::MAX)]
    max: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON (with each mutant's full source under `source`).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VariantsArgs {
    /// The Python module to rewrite.
    file: PathBuf,
    #[arg(long, default_value_t = 2)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UNITFORGE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(args) => runtime().and_then(|rt| rt.block_on(score(args))),
        Command::Mutants(args) => mutants(args),
        Command::Train(TrainCommand::Sft(args)) => train_stage("sft", &args),
        Command::Eval(EvalCommand::Samples(args)) => eval_samples(&args),
        Command::Train(TrainCommand::Distill(args)) => train_stage("distill", &args),
        Command::TeacherLogprobs {
            teacher,
            data,
            out,
            max_len,
            json,
        } => teacher_logprobs(&teacher, &data, &out, max_len, json),
        Command::Generate(args) => generate(&args),
        Command::Data(command) => data::run(command),
        Command::InitModel { config, out, json } => init_model(&config, &out, json),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve(args))),
        Command::Variants(args) => variants(args),
        Command::Bench(command) => runtime().and_then(|rt| rt.block_on(bench::run(command))),
        Command::Image(command) => runtime().and_then(|rt| rt.block_on(image(command))),
        Command::Doctor { image, json } => {
            runtime().and_then(|rt| rt.block_on(doctor(image, json)))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) fn read_source(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn module_name(path: &Path, explicit: Option<&str>) -> Result<String> {
    if let Some(name) = explicit {
        return Ok(name.to_string());
    }
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
        .with_context(|| format!("cannot take a module name from {}", path.display()))
}

fn load_config(path: Option<&Path>) -> Result<RewardConfig> {
    Ok(match path {
        Some(path) => RewardConfig::from_yaml_file(path)?,
        None => RewardConfig::default(),
    })
}

/// A started scorer whose workers (containers) are stopped when it goes out of scope, on every
/// path out of a command, errors included.
pub struct ScorerHandle(Scorer);

impl std::ops::Deref for ScorerHandle {
    type Target = Scorer;
    fn deref(&self) -> &Scorer {
        &self.0
    }
}

impl Drop for ScorerHandle {
    fn drop(&mut self) {
        let pool = self.0.pool();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(pool.shutdown(std::time::Duration::from_secs(5)))
        });
    }
}

/// A scorer on the chosen executor, warmed up and calibrated.
pub(crate) async fn start_scorer(args: &ExecutorArgs) -> Result<ScorerHandle> {
    let options = args.options();
    if options.kind == ExecutorKind::Local {
        eprintln!("WARNING: --executor local runs untrusted test code directly on this machine, guarded only by");
        eprintln!("WARNING: rlimits and an audit hook. Use it for development and benchmarks, never for model output.");
    }
    let progress = |line: &str| eprintln!("  {line}");
    let (pool, _identity) = start_pool(&options, &progress).await?;
    let started = Scorer::new(pool.clone()).await;
    if started.is_err() {
        pool.shutdown(std::time::Duration::ZERO).await;
    }
    started.map(ScorerHandle).context(match options.kind {
        ExecutorKind::Local => {
            "cannot start the pytest runner (is pytest installed in that Python? `make venv`)"
        }
        ExecutorKind::Docker => {
            "cannot start a sandbox container (`unitforge doctor` checks the engine and image)"
        }
    })
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let cache = if args.no_cache {
        None
    } else {
        Some(ResultCache::open(
            Some(&args.cache_dir.join("scores.redb")),
            args.cache_entries,
        )?)
    };
    let options = args.executor.options();
    if options.kind == ExecutorKind::Local {
        eprintln!(
            "WARNING: --executor local: untrusted test code will run directly on this machine."
        );
    }
    let progress = |line: &str| eprintln!("  {line}");
    let (pool, identity) = start_pool(&options, &progress).await?;
    let scorer = Scorer::new(pool)
        .await
        .context("cannot start the sandbox workers (`unitforge doctor` checks)")?;
    let limits = ServiceLimits {
        queue_limit: args.queue,
        active_scores: (options.workers * 2).max(2),
        ..ServiceLimits::default()
    };
    eprintln!(
        "unitforge serve: listening on http://{} ({} executor, {} workers, cache {})",
        listener.local_addr()?,
        scorer.pool().executor_name(),
        scorer.pool().size(),
        if cache.is_some() {
            args.cache_dir.display().to_string()
        } else {
            "off".into()
        }
    );
    let service = Service::new(scorer, identity, cache, config, limits);
    service.run(listener, shutdown_signal()).await?;
    eprintln!("unitforge serve: stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}

/// Where `unitforge score` computes: a local pool, or a running service.
enum Backend {
    Pool(ScorerHandle),
    Service(Client),
}

impl Backend {
    async fn start(args: &ScoreArgs) -> Result<Self> {
        Ok(if args.server.is_empty() {
            Backend::Pool(start_scorer(&args.executor).await?)
        } else {
            let options = ClientOptions {
                concurrency: args.jobs.max(1),
                ..ClientOptions::default()
            };
            Backend::Service(Client::new(args.server.clone(), options)?)
        })
    }

    async fn score(&self, input: ScoreInput, config: &RewardConfig) -> Result<ScoreReport> {
        Ok(match self {
            Backend::Pool(scorer) => scorer.score(&input, config).await?,
            Backend::Service(client) => {
                // The config always travels, so the server scores exactly as a local run would.
                let request = ScoreRequest {
                    id: None,
                    module: input.module,
                    code: input.code,
                    tests: input.tests,
                    config: Some(config.clone()),
                    no_cache: false,
                };
                client.score(&request).await?.report
            }
        })
    }
}

async fn score(args: ScoreArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    if let Some(batch) = &args.batch {
        return score_batch(&args, batch, &config).await;
    }
    let (code_path, tests_path) = (
        args.code.as_ref().expect("clap requires --code"),
        args.tests.as_ref().expect("clap requires --tests"),
    );
    let input = ScoreInput {
        module: module_name(code_path, args.module.as_deref())?,
        code: read_source(code_path)?,
        tests: read_source(tests_path)?,
    };
    let backend = Backend::start(&args).await?;
    let report = backend.score(input, &config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::score_table(&report, code_path, tests_path));
    }
    Ok(())
}

#[derive(Deserialize)]
struct BatchRow {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    module: Option<String>,
    code: String,
    tests: String,
}

#[derive(Serialize)]
struct BatchResult {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<ScoreReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn score_batch(args: &ScoreArgs, batch: &Path, config: &RewardConfig) -> Result<()> {
    let text = read_source(batch)?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: BatchRow = serde_json::from_str(line).with_context(|| {
            format!("{}:{}: not a candidate object", batch.display(), index + 1)
        })?;
        rows.push((
            row.id.clone().unwrap_or_else(|| format!("{}", index + 1)),
            row,
        ));
    }
    if rows.is_empty() {
        bail!("{} holds no candidates", batch.display());
    }
    let backend = Backend::start(args).await?;
    let progress = ProgressBar::new(rows.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pairs  {elapsed} elapsed, ~{eta} left")
            .expect("valid template"),
    );
    let mut out: Box<dyn std::io::Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let backend = &backend;
    let mut results = stream::iter(rows)
        .map(|(id, row)| async move {
            let input = ScoreInput {
                module: row.module.unwrap_or_else(|| "solution".into()),
                code: row.code,
                tests: row.tests,
            };
            match backend.score(input, config).await {
                Ok(report) => BatchResult {
                    id,
                    report: Some(report),
                    error: None,
                },
                Err(err) => BatchResult {
                    id,
                    report: None,
                    error: Some(err.to_string()),
                },
            }
        })
        .buffer_unordered(args.jobs.max(1));
    while let Some(result) = results.next().await {
        serde_json::to_writer(&mut out, &result)?;
        writeln!(out)?;
        progress.inc(1);
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(())
}

use std::io::Write;

fn connect_docker() -> Result<unitforge_sandbox::bollard::Docker> {
    unitforge_sandbox::bollard::Docker::connect_with_local_defaults()
        .context("cannot reach the Docker engine")
}

async fn image(command: ImageCommand) -> Result<()> {
    let docker = connect_docker()?;
    let tag = unitforge_sandbox::image::sandbox_image_tag();
    match command {
        ImageCommand::Status => match unitforge_sandbox::image::image_id(&docker, &tag).await? {
            Some(id) => println!("{tag}  present  {id}"),
            None => println!("{tag}  missing  (`unitforge image build` builds it)"),
        },
        ImageCommand::Build => {
            let progress = |line: &str| eprintln!("  {line}");
            let id = unitforge_sandbox::image::ensure_image(&docker, &tag, &progress).await?;
            println!("{tag}  {id}");
        }
    }
    Ok(())
}

async fn doctor(image: Option<String>, json: bool) -> Result<()> {
    let docker = connect_docker()?;
    let report = unitforge_sandbox::doctor::diagnose(&docker, image.as_deref()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let unknown = || "unknown".to_string();
    println!(
        "Docker engine     {} (API {})",
        report.engine_version.clone().unwrap_or_else(unknown),
        report.engine_api.clone().unwrap_or_else(unknown)
    );
    println!(
        "cgroup version    {}",
        report.cgroup_version.clone().unwrap_or_else(unknown)
    );
    println!(
        "storage driver    {}",
        report.storage_driver.clone().unwrap_or_else(unknown)
    );
    println!("security options  {}", report.security_options.join(", "));
    println!(
        "sandbox image     {}  {}",
        report.image_tag,
        report.image_id.as_deref().unwrap_or("MISSING")
    );
    if let Some(error) = &report.probe_error {
        println!("\nprobe: {error}");
    } else {
        println!("\nInside a probe container with the sandbox's hardening:");
        for (protection, holds) in &report.probe {
            println!(
                "  {}  {protection}",
                if *holds { "ok  " } else { "MISSING" }
            );
        }
    }
    Ok(())
}

fn generate(args: &GenerateArgs) -> Result<()> {
    use unitforge_trainer::{generate, model::Model, prompts, tokenizer};
    let device = unitforge_trainer::device::select()?;
    let tokenizer = tokenizer::load(&args.model.join("tokenizer.json"))?;
    let end = tokenizer::end_token(&tokenizer)?;
    let model = Model::load_for_inference(&args.model, args.adapter.as_deref(), &device)?;
    // Every file's prompt n times, all generated as one batch.
    let mut prompt_texts = Vec::new();
    for path in &args.code {
        let code = read_source(path)?;
        let module = module_name(path, None)?;
        let prompt = prompts::render(
            &prompts::Task::Generate {
                module: &module,
                code: &code,
            },
            Some(&tokenizer),
        );
        prompt_texts.extend(std::iter::repeat_n(format!("{prompt}\n"), args.n.max(1)));
    }
    let config = generate::SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let completions = generate::generate(&model, &tokenizer, &prompt_texts, end, &config)?;
    let per_file = args.n.max(1);
    if args.json {
        let rows: Vec<serde_json::Value> = completions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "code": args.code[i / per_file].display().to_string(),
                    "completion": c,
                    "tests": prompts::extract_tests(c),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (index, completion) in completions.iter().enumerate() {
            println!(
                "# --- {}: completion {} of {} ---\n{}",
                args.code[index / per_file].display(),
                index % per_file + 1,
                per_file,
                prompts::extract_tests(completion)
            );
        }
    }
    Ok(())
}

fn train_stage(stage: &str, args: &StageArgs) -> Result<()> {
    let config: unitforge_trainer::train_loop::StageConfig =
        unitforge_trainer::stage_config::load(&args.config, &args.overrides)?;
    let device = unitforge_trainer::device::select()?;
    let summary = match stage {
        "sft" => unitforge_trainer::sft::train(&config, &device)?,
        _ => unitforge_trainer::distill::train(&config, &device)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{stage}: {} steps, held-out loss {:.3} → {:.3}, {} trainable parameters; model, adapter, metrics.jsonl and loss_curve.png in {}",
            summary.steps,
            summary.first_eval_loss,
            summary.final_eval_loss,
            summary.trainable_parameters,
            summary.output_dir.display()
        );
        for (key, before) in &summary.first_eval {
            if let Some(after) = summary.final_eval.get(key) {
                println!("  {key}: {before:.3} → {after:.3}");
            }
        }
    }
    Ok(())
}

/// What the sandbox made of the samples (`eval samples --score`).
#[derive(Serialize)]
struct SampleScores {
    scored: usize,
    /// Samples whose tests pass on their code (a valid suite), over all prompts.
    passing: usize,
    passing_fraction: f64,
    /// Mean kill rate over all prompts (0 for a sample that is invalid or fails).
    mean_kill_rate: f64,
}

fn eval_samples(args: &EvalSamplesArgs) -> Result<()> {
    use unitforge_trainer::{data::load_jsonl, eval, model::Model, tokenizer};
    let device = unitforge_trainer::device::select()?;
    let tok = tokenizer::load(&args.model.join("tokenizer.json"))?;
    let end = tokenizer::end_token(&tok)?;
    let model = Model::load_for_inference(&args.model, args.adapter.as_deref(), &device)?;
    let examples = load_jsonl(&args.data, Some(&tok))?;
    let total = if args.limit == 0 {
        examples.len()
    } else {
        args.limit.min(examples.len())
    };
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} prompts  {elapsed} elapsed, ~{eta} left",
        )
        .expect("valid template"),
    );
    let report = eval::sample_report(
        &model,
        &tok,
        end,
        &examples,
        args.limit,
        args.max_new_tokens,
        &progress,
    )?;
    progress.finish_and_clear();
    let scores = if args.score {
        Some(runtime()?.block_on(score_samples(args, &examples, &report))?)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["scores"] = serde_json::to_value(&scores)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let pct = |n: usize| 100.0 * n as f64 / report.prompts.max(1) as f64;
    println!(
        "{} greedy samples from {} on {}",
        report.prompts,
        args.model.display(),
        args.data.display()
    );
    println!(
        "  valid pytest     {:>4}  ({:.1}%)  parses and defines a test",
        report.valid_pytest,
        pct(report.valid_pytest)
    );
    println!(
        "  parses           {:>4}  ({:.1}%)",
        report.parses,
        pct(report.parses)
    );
    println!(
        "  imports module   {:>4}  ({:.1}%)",
        report.imports_module,
        pct(report.imports_module)
    );
    println!("  tests per sample {:.2}", report.mean_test_functions);
    if let Some(scores) = scores {
        println!(
            "  pass on the code {:>4}  ({:.1}%)  in the sandbox; mean kill rate {:.3}",
            scores.passing,
            pct(scores.passing),
            scores.mean_kill_rate
        );
    }
    Ok(())
}

/// Score every valid sample against its example's code.
async fn score_samples(
    args: &EvalSamplesArgs,
    examples: &[unitforge_trainer::data::Example],
    report: &unitforge_trainer::eval::SampleReport,
) -> Result<SampleScores> {
    let scorer = start_scorer(&args.executor).await?;
    let config = RewardConfig::default();
    let inputs: Vec<ScoreInput> = report
        .samples
        .iter()
        .zip(examples)
        .filter(|(sample, example)| sample.valid_pytest() && example.code.is_some())
        .map(|(sample, example)| ScoreInput {
            module: example.module.clone().unwrap_or_else(|| "solution".into()),
            code: example.code.clone().unwrap_or_default(),
            tests: sample.tests.clone(),
        })
        .collect();
    let (scorer, config) = (&scorer, &config);
    let reports: Vec<ScoreReport> = stream::iter(&inputs)
        .map(|input| async move { scorer.score(input, config).await })
        .buffer_unordered(args.jobs.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let passing = reports.iter().filter(|r| r.valid).count();
    let prompts = report.prompts.max(1) as f64;
    Ok(SampleScores {
        scored: reports.len(),
        passing,
        passing_fraction: passing as f64 / prompts,
        mean_kill_rate: reports.iter().map(|r| r.mutant_kill).sum::<f64>() / prompts,
    })
}

fn teacher_logprobs(
    teacher: &Path,
    data: &Path,
    out: &Path,
    max_len: usize,
    json: bool,
) -> Result<()> {
    let device = unitforge_trainer::device::select()?;
    let summary =
        unitforge_trainer::distill::teacher_logprobs(teacher, data, out, max_len, &device)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "wrote {}: {} rows, {} target tokens, teacher's mean log-prob {:.3}",
            out.display(),
            summary.rows,
            summary.tokens,
            summary.mean_logprob
        );
    }
    Ok(())
}

fn init_model(config: &Path, out: &Path, json: bool) -> Result<()> {
    let init = unitforge_trainer::init::read_init_config(config)?;
    let summary = unitforge_trainer::init::init_model(&init, out)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "wrote {}: {} parameters, vocabulary of {} tokens trained on {} files",
            out.display(),
            summary.parameters,
            summary.vocab_size,
            summary.corpus_files
        );
    }
    Ok(())
}

fn mutants(args: MutantsArgs) -> Result<()> {
    let text = read_source(&args.file)?;
    let source = PythonSource::parse(&args.file.display().to_string(), &text)?;
    let config = MutantConfig {
        max_mutants: args.max,
        seed: args.seed,
        operators: vec![],
    };
    let (mutants, census) = generate_mutants(&source, &config);
    if args.json {
        let rows: Vec<serde_json::Value> = mutants
            .iter()
            .map(|m| {
                let mut value = serde_json::to_value(m).expect("mutants serialise");
                value["source"] = serde_json::Value::String(m.apply(&text));
                value
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "census": census, "mutants": rows })
            )?
        );
    } else {
        print!("{}", render::mutant_list(&mutants, &census));
    }
    Ok(())
}

fn variants(args: VariantsArgs) -> Result<()> {
    let text = read_source(&args.file)?;
    let source = PythonSource::parse(&args.file.display().to_string(), &text)?;
    let variants = generate_variants(
        &source,
        &VariantConfig {
            count: args.count,
            seed: args.seed,
        },
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&variants)?);
    } else {
        for variant in &variants {
            let rewrites: Vec<String> = variant.rewrites.iter().map(|r| format!("{r:?}")).collect();
            println!("=== variant {} ({})", variant.id, rewrites.join(", "));
            for rename in &variant.renamed {
                println!("    renamed {rename}");
            }
            println!("{}", variant.source);
        }
    }
    Ok(())
}
