//! The sandbox's commands: `score` (one pair, or a JSONL batch), `serve`, `mutants`,
//! `variants`, `image` and `doctor`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use unitforge_sandbox::backend::start_scorer;
use unitforge_sandbox::cache::ResultCache;
use unitforge_sandbox::client::{Client, ClientOptions};
use unitforge_sandbox::mutant::{generate_mutants, MutantConfig};
use unitforge_sandbox::prune::FailingTests;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::runner_host::{self, RunnerExit, RunnerHostOptions};
use unitforge_sandbox::score::{ScoreInput, ScoreReport, DEFAULT_MODULE};
use unitforge_sandbox::service::{Service, ServiceLimits};
use unitforge_sandbox::source::PythonSource;
use unitforge_sandbox::variant::{generate_variants, VariantConfig};

use super::{
    connect_docker, load_reward_config, module_name, notice, progress_bar, read_source,
    start_backend,
};
use crate::cli::{
    DoctorArgs, HealthArgs, ImageCommand, MutantsArgs, RunnerArgs, ScoreArgs, ServeArgs,
    VariantsArgs,
};
use crate::render;

pub async fn score(args: ScoreArgs) -> Result<()> {
    let mut config = load_reward_config(args.config.as_deref())?;
    match args.failing_tests.as_deref() {
        Some("prune") => config.failing_tests = FailingTests::Prune,
        Some(_) => config.failing_tests = FailingTests::Invalidate,
        None => {}
    }
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
    let no_daemon = args.no_daemon
        || std::env::var("UNITFORGE_NO_DAEMON").is_ok_and(|v| !matches!(v.as_str(), "" | "0"));
    let through_daemon = if args.server.is_empty() && !no_daemon {
        super::daemon::score_through_daemon(
            &args.executor,
            args.daemon_idle_timeout,
            &input,
            &config,
        )
        .await?
    } else {
        None
    };
    let report = match through_daemon {
        Some(result) => result?,
        None => {
            let backend = start_backend(&args.executor.backend(&args.server, args.jobs)).await?;
            backend.score(&input, &config).await?
        }
    };
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
    let mut ids = Vec::new();
    let mut inputs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: BatchRow = serde_json::from_str(line).with_context(|| {
            format!("{}:{}: not a candidate object", batch.display(), index + 1)
        })?;
        ids.push(row.id.unwrap_or_else(|| format!("{}", index + 1)));
        inputs.push(ScoreInput {
            module: row.module.unwrap_or_else(|| DEFAULT_MODULE.into()),
            code: row.code,
            tests: row.tests,
        });
    }
    if inputs.is_empty() {
        bail!("{} holds no candidates", batch.display());
    }
    let backend = start_backend(&args.executor.backend(&args.server, args.jobs)).await?;
    let progress = progress_bar(inputs.len(), "pairs");
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut results = backend.score_many(&inputs, config);
    while let Some(scored) = results.next().await {
        let (report, error) = match scored.result {
            Ok(report) => (Some(report), None),
            Err(err) => (None, Some(err.to_string())),
        };
        let line = BatchResult {
            id: ids[scored.index].clone(),
            report,
            error,
        };
        serde_json::to_writer(&mut out, &line)?;
        writeln!(out)?;
        progress.inc(1);
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(())
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let stop = stop_signals()?;
    let config = load_reward_config(args.config.as_deref())?;
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
    let (scorer, identity) = start_scorer(&options, &notice).await?;
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
    let service = Service::new(scorer, identity, cache, config, limits)
        .with_drain(std::time::Duration::from_secs_f64(args.drain.max(0.0)));
    let stop_file = args.stop_file.clone();
    service
        .run(listener, async move {
            tokio::select! {
                _ = stop => {},
                _ = file_appears(stop_file) => eprintln!("unitforge serve: the stop file appeared"),
            }
        })
        .await?;
    eprintln!("unitforge serve: stopped");
    Ok(())
}

/// `unitforge runner`: serve leases until SIGTERM/Ctrl-C; exit 3 after a tainted lease.
pub async fn runner(args: RunnerArgs) -> Result<()> {
    let stop = stop_signals()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let options = RunnerHostOptions {
        python: unitforge_sandbox::local::discover_python(args.python.as_deref()),
        work_dir: args.work_dir.clone(),
        max_leases: args.max_leases,
    };
    eprintln!(
        "unitforge runner: listening on {} (python {}, work dir {})",
        listener.local_addr()?,
        options.python.display(),
        options.work_dir.display()
    );
    let exit = runner_host::serve(listener, options, stop).await?;
    match &exit {
        RunnerExit::Tainted(reason) => {
            eprintln!("unitforge runner: tainted, exiting for a fresh start: {reason}");
            std::process::exit(exit.status());
        }
        RunnerExit::Shutdown => eprintln!("unitforge runner: stopped"),
        RunnerExit::LeasesServed(n) => eprintln!("unitforge runner: {n} leases served"),
    }
    Ok(())
}

/// Resolves once `path` is written after now (never without one): a stop file left by an
/// earlier run does not stop this one.
async fn file_appears(path: Option<PathBuf>) {
    let Some(path) = path else {
        return std::future::pending().await;
    };
    let started = std::time::SystemTime::now();
    loop {
        let written = std::fs::metadata(&path).and_then(|m| m.modified());
        if written.is_ok_and(|at| at >= started) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub async fn health(args: HealthArgs) -> Result<()> {
    let client = Client::new(
        vec![args.url.clone()],
        ClientOptions {
            timeout: std::time::Duration::from_secs(5),
            ..ClientOptions::default()
        },
    )?;
    let health = client.health().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        println!(
            "{}: {} ({} executor, {} workers, queue {})",
            args.url, health.status, health.executor, health.workers, health.queue_depth
        );
    }
    Ok(())
}

/// SIGTERM or Ctrl-C (SIGINT), their handlers registered now, not when the future is first
/// polled: an orchestrator may send SIGTERM the moment the process starts, and a signal with no
/// handler yet would kill it without its cleanup (a runner's lease, a service's drain).
fn stop_signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
    })
}

pub fn mutants(args: MutantsArgs) -> Result<()> {
    let text = read_source(&args.file)?;
    let source = PythonSource::parse(&args.file.display().to_string(), &text)?;
    let config = MutantConfig {
        max_mutants: args.max,
        seed: args.seed,
        ..MutantConfig::default()
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

pub fn variants(args: VariantsArgs) -> Result<()> {
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

pub async fn image(command: ImageCommand) -> Result<()> {
    let docker = connect_docker()?;
    let tag = unitforge_sandbox::image::sandbox_image_tag();
    match command {
        ImageCommand::Status => match unitforge_sandbox::image::image_id(&docker, &tag).await? {
            Some(id) => println!("{tag}  present  {id}"),
            None => println!("{tag}  missing  (`unitforge image build` builds it)"),
        },
        ImageCommand::Build => {
            let id = unitforge_sandbox::image::ensure_image(&docker, &tag, &notice).await?;
            println!("{tag}  {id}");
        }
    }
    Ok(())
}

pub async fn doctor(args: DoctorArgs) -> Result<()> {
    let docker = connect_docker()?;
    let report = unitforge_sandbox::doctor::diagnose(&docker, args.image.as_deref()).await;
    if args.json {
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
