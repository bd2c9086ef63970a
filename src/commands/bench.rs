//! `unitforge bench …`: figures printed side by side with a reference, never asserted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use unitforge_sandbox::api::ScoreRequest;
use unitforge_sandbox::backend::start_scorer;
use unitforge_sandbox::cache::ResultCache;
use unitforge_sandbox::client::{Client, ClientOptions};
use unitforge_sandbox::executor::{ExecutorKind, ExecutorOptions};
use unitforge_sandbox::local::discover_python;
use unitforge_sandbox::rewards::{median, RewardConfig};
use unitforge_sandbox::score::{ScoreInput, ScoreReport, Scorer};
use unitforge_sandbox::service::{Service, ServiceLimits};

use super::{load_reward_config, notice, read_source, start_backend};
use crate::cli::{BenchCommand, BenchOneshotArgs, BenchScoreArgs, BenchServeArgs};

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Score(args) => bench_score(args).await,
        BenchCommand::Serve(args) => bench_serve(args).await,
        BenchCommand::Train(args) => {
            tokio::task::block_in_place(|| super::bench_train::bench_train(args))
        }
        BenchCommand::Oneshot(args) => tokio::task::block_in_place(|| bench_oneshot(args)),
    }
}

struct Pair {
    name: String,
    dir: PathBuf,
    input: ScoreInput,
}

fn load_pairs(dir: &Path) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for pair_dir in dirs {
        let name = pair_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let code = pair_dir.join(format!("{name}.py"));
        let tests = pair_dir.join(format!("test_{name}.py"));
        if !code.is_file() || !tests.is_file() {
            continue;
        }
        pairs.push(Pair {
            input: ScoreInput {
                module: name.clone(),
                code: read_source(&code)?,
                tests: read_source(&tests)?,
            },
            name,
            dir: pair_dir,
        });
    }
    if pairs.is_empty() {
        bail!(
            "no pairs (<name>/<name>.py + <name>/test_<name>.py) under {}",
            dir.display()
        );
    }
    Ok(pairs)
}

#[derive(serde::Serialize)]
struct PairFigures {
    name: String,
    mutants: usize,
    scored: usize,
    kill_rate: f64,
    composite: f64,
    runs: usize,
    not_covered: usize,
    wall_ms: f64,
    /// With coverage guidance off (`--full-runs`): wall time, and mutants whose verdict (killed
    /// or not) differs from the guided score's.
    full_runs_wall_ms: Option<f64>,
    verdicts_differing: Option<usize>,
    mutmut: Option<MutmutFigures>,
}

#[derive(serde::Serialize, Clone)]
struct MutmutFigures {
    mutants: usize,
    killed: usize,
    wall_ms: f64,
}

async fn bench_score(args: BenchScoreArgs) -> Result<()> {
    let config = load_reward_config(args.config.as_deref())?;
    let pairs = load_pairs(&args.pairs)?;
    let backend = start_backend(&args.executor.backend(&[], 1)).await?;
    let scorer = backend
        .scorer()
        .expect("an in-process backend has a scorer");
    let python = discover_python(args.executor.python.as_deref());
    let cold_pytest_ms = cold_pytest_ms(&python, &pairs[0])?;
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut full_config = config.clone();
    full_config.mutants.coverage_guided = false;
    for pair in &pairs {
        let repeat = args.repeat.max(1);
        let (wall_ms, report) = timed_score(scorer, pair, &config, repeat).await?;
        let full = if args.full_runs {
            let (full_ms, full) = timed_score(scorer, pair, &full_config, repeat).await?;
            Some((
                full_ms,
                verdicts_differing(&killed_flags(&report), &killed_flags(&full)),
            ))
        } else {
            None
        };
        verdicts.push(killed_flags(&report));
        let m = &report.mutants;
        // Every pytest run the score made: baseline, stability, variants, the traced coverage
        // run, each mutant that ran (not-covered ones run only when selection did not pay) and
        // the controls that confirmed kills.
        let coverage_run = usize::from(report.valid && config.mutants.coverage_guided);
        let uncovered_ran = if m.selected_by_coverage {
            0
        } else {
            m.not_covered
        };
        let runs = 1
            + report.stability_runs.len()
            + report.variants.len()
            + coverage_run
            + m.killed
            + m.timeout
            + m.survived
            + uncovered_ran
            + m.unconfirmed
            + m.excluded
            + m.controls;
        let mutmut = if args.mutmut {
            Some(run_mutmut(&python, pair)?)
        } else {
            None
        };
        rows.push(PairFigures {
            name: pair.name.clone(),
            mutants: m.generated,
            scored: m.scored,
            kill_rate: report.mutant_kill,
            composite: report.composite,
            runs,
            not_covered: m.not_covered,
            wall_ms,
            full_runs_wall_ms: full.map(|f| f.0),
            verdicts_differing: full.map(|f| f.1),
            mutmut,
        });
    }
    let walls: Vec<f64> = rows.iter().map(|r| r.wall_ms).collect();
    let total_wall_s: f64 = walls.iter().sum::<f64>() / 1000.0;
    let total_mutants: usize = rows.iter().map(|r| r.scored).sum();
    let total_runs: usize = rows.iter().map(|r| r.runs).sum();
    let full_walls: Vec<f64> = rows.iter().filter_map(|r| r.full_runs_wall_ms).collect();
    let in_flight = if args.in_flight > 1 {
        Some(score_in_flight(scorer, &pairs, &config, args.in_flight, &verdicts).await?)
    } else {
        None
    };
    let summary = serde_json::json!({
        "pairs": rows.len(),
        "workers": scorer.pool().size(),
        "per_run_overhead_cpu_ms": scorer.overhead_ms(),
        "cold_pytest_per_run_ms": cold_pytest_ms,
        "median_wall_ms_per_pair": median(&walls),
        "max_wall_ms_per_pair": walls.iter().cloned().fold(0.0, f64::max),
        "mean_kill_rate": rows.iter().map(|r| r.kill_rate).sum::<f64>() / rows.len() as f64,
        "mutants_per_second": total_mutants as f64 / total_wall_s,
        "runs_per_second": total_runs as f64 / total_wall_s,
        "not_covered": rows.iter().map(|r| r.not_covered).sum::<usize>(),
        "full_runs_median_wall_ms_per_pair": args.full_runs.then(|| median(&full_walls)),
        "full_runs_mutants_per_second": args.full_runs.then(|| total_mutants as f64 / (full_walls.iter().sum::<f64>() / 1000.0)),
        "verdicts_differing": args.full_runs.then(|| rows.iter().filter_map(|r| r.verdicts_differing).sum::<usize>()),
        "in_flight": args.in_flight,
        "in_flight_mutants_per_second": in_flight.map(|f| f.mutants_per_second),
        "in_flight_verdicts_differing": in_flight.map(|f| f.verdicts_differing),
        "mutmut_median_wall_ms_per_pair": args.mutmut.then(|| median(&rows.iter().filter_map(|r| r.mutmut.as_ref().map(|m| m.wall_ms)).collect::<Vec<_>>())),
    });
    if args.json {
        return print_summary_and_pairs(&summary, &rows);
    }
    println!(
        "unitforge bench score: {} pairs from {}, {} workers ({} executor)\n",
        rows.len(),
        args.pairs.display(),
        scorer.pool().size(),
        scorer.environment().executor
    );
    let mutmut_header = if args.mutmut {
        "   mutmut: mutants  killed    wall"
    } else {
        ""
    };
    let full_header = if args.full_runs {
        "  full-run ms  differ"
    } else {
        ""
    };
    println!(
        "{:<18} {:>7} {:>6} {:>8} {:>9} {:>9} {:>5} {:>9}{full_header}{mutmut_header}",
        "pair", "mutants", "scored", "not cov", "kill rate", "composite", "runs", "wall ms"
    );
    for row in &rows {
        let full = match (row.full_runs_wall_ms, row.verdicts_differing) {
            (Some(ms), Some(differing)) => format!("  {ms:>11.0}  {differing:>6}"),
            _ => String::new(),
        };
        let mutmut = row.mutmut.as_ref().map_or(String::new(), |m| {
            format!(
                "          {:>7} {:>7} {:>7.0}",
                m.mutants, m.killed, m.wall_ms
            )
        });
        println!(
            "{:<18} {:>7} {:>6} {:>8} {:>9.3} {:>9.3} {:>5} {:>9.0}{full}{mutmut}",
            row.name,
            row.mutants,
            row.scored,
            row.not_covered,
            row.kill_rate,
            row.composite,
            row.runs,
            row.wall_ms
        );
    }
    println!();
    println!("per-run overhead (CPU, one-test suite)   {:>8.1} ms   reference: cold `python -m pytest` per run {:.0} ms", scorer.overhead_ms(), cold_pytest_ms);
    println!(
        "wall time per pair, median / max         {:>8.0} / {:.0} ms",
        median(&walls),
        walls.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "mutants scored per second                {:>8.1}",
        total_mutants as f64 / total_wall_s
    );
    println!(
        "pytest runs per second                   {:>8.1}",
        total_runs as f64 / total_wall_s
    );
    if args.full_runs {
        let full_wall_s = full_walls.iter().sum::<f64>() / 1000.0;
        println!(
            "with every mutant running the whole suite {:>7.1} mutants/s, median {:.0} ms per pair   (coverage-guided: {:.2}×); verdicts differing: {}",
            total_mutants as f64 / full_wall_s,
            median(&full_walls),
            full_wall_s / total_wall_s,
            summary["verdicts_differing"]
        );
    }
    if let Some(f) = in_flight {
        println!(
            "with {} pairs in flight                  {:>8.1} mutants/s   ({:.2}× one pair at a time); verdicts differing: {}",
            args.in_flight,
            f.mutants_per_second,
            f.mutants_per_second / (total_mutants as f64 / total_wall_s),
            f.verdicts_differing
        );
    }
    println!(
        "mean kill rate                           {:>8.3}",
        summary["mean_kill_rate"].as_f64().unwrap_or(0.0)
    );
    if let Some(mutmut_ms) = summary["mutmut_median_wall_ms_per_pair"].as_f64() {
        println!(
            "mutmut wall time per pair, median        {:>8.0} ms   ({:.1}× unitforge)",
            mutmut_ms,
            mutmut_ms / median(&walls)
        );
    }
    Ok(())
}

/// Score `pair` `repeat` times: the median wall time in ms, and the last report.
async fn timed_score(
    scorer: &Scorer,
    pair: &Pair,
    config: &RewardConfig,
    repeat: usize,
) -> Result<(f64, ScoreReport)> {
    let mut walls = Vec::new();
    let mut last = None;
    for _ in 0..repeat {
        let started = Instant::now();
        let report = scorer
            .score(&pair.input, config)
            .await
            .with_context(|| format!("scoring {}", pair.name))?;
        walls.push(started.elapsed().as_secs_f64() * 1000.0);
        last = Some(report);
    }
    Ok((median(&walls), last.expect("at least one repeat")))
}

/// Killed or not, per mutant in report order.
fn killed_flags(report: &ScoreReport) -> Vec<bool> {
    report
        .mutants
        .results
        .iter()
        .map(|r| r.status.is_killed())
        .collect()
}

/// Mutants killed in one score and not in the other (a mutant missing from one counts too).
fn verdicts_differing(a: &[bool], b: &[bool]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

#[derive(Clone, Copy)]
struct InFlightFigures {
    mutants_per_second: f64,
    /// Mutants whose verdict differs from the one-pair-at-a-time score of the same pair.
    verdicts_differing: usize,
}

/// Every pair scored with `in_flight` pairs at a time over the same warm workers: the
/// throughput a trainer's batch sees, where one pair's serial steps (baseline, then the traced
/// coverage run, then its mutants) no longer leave a worker idle.
async fn score_in_flight(
    scorer: &Scorer,
    pairs: &[Pair],
    config: &RewardConfig,
    in_flight: usize,
    one_at_a_time: &[Vec<bool>],
) -> Result<InFlightFigures> {
    let started = Instant::now();
    let reports: Vec<Result<ScoreReport>> =
        futures::stream::iter(pairs.iter().map(|pair| async move {
            scorer
                .score(&pair.input, config)
                .await
                .with_context(|| format!("scoring {}", pair.name))
        }))
        .buffered(in_flight)
        .collect()
        .await;
    let wall_s = started.elapsed().as_secs_f64();
    let mut mutants = 0;
    let mut differing = 0;
    for (report, reference) in reports.into_iter().zip(one_at_a_time) {
        let report = report?;
        mutants += report.mutants.scored;
        differing += verdicts_differing(&killed_flags(&report), reference);
    }
    Ok(InFlightFigures {
        mutants_per_second: mutants as f64 / wall_s,
        verdicts_differing: differing,
    })
}

#[derive(serde::Serialize)]
struct OneshotFigures {
    name: String,
    /// `unitforge score` as typed: through the background scorer a previous call started.
    unitforge_wall_ms: f64,
    /// `unitforge score --no-daemon`: workers started, calibrated and stopped in the process.
    in_process_wall_ms: f64,
    composite: f64,
    mutmut: Option<MutmutFigures>,
}

/// `unitforge score` in a fresh process per pair, as a user types it (the background scorer a
/// first, untimed call started), and with `--no-daemon`, beside mutmut's fresh run.
fn bench_oneshot(args: BenchOneshotArgs) -> Result<()> {
    let mut pairs = load_pairs(&args.pairs)?;
    pairs.truncate(args.limit.unwrap_or(usize::MAX));
    let exe = std::env::current_exe()?;
    let executor = args.executor.options().kind.name();
    // The very first run may build the sandbox image: not a user's steady state, so one run
    // goes untimed.
    let score = |pair: &Pair, extra: &[&str]| -> Result<(f64, f64)> {
        let mut command = std::process::Command::new(&exe);
        command
            .arg("score")
            .arg("--code")
            .arg(pair.dir.join(format!("{}.py", pair.name)))
            .arg("--tests")
            .arg(pair.dir.join(format!("test_{}.py", pair.name)))
            .arg("--json")
            .args(args.executor.flags())
            .args(extra)
            .env_remove("UNITFORGE_NO_DAEMON");
        let started = Instant::now();
        let output = command.stdin(Stdio::null()).output()?;
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        if !output.status.success() {
            bail!(
                "unitforge score failed on {}: {}",
                pair.name,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("unitforge score's JSON on {}", pair.name))?;
        Ok((wall_ms, report["composite"].as_f64().unwrap_or(f64::NAN)))
    };
    // The background scorer this bench starts is stopped at the end; one the user already had
    // keeps running.
    let daemons_before: std::collections::HashSet<_> =
        unitforge_sandbox::daemon::sockets()?.into_iter().collect();
    score(&pairs[0], &[])?;
    let mut rows = Vec::new();
    for pair in &pairs {
        eprintln!("  {} …", pair.name);
        let (unitforge_wall_ms, composite) = score(pair, &[])?;
        let (in_process_wall_ms, _) = score(pair, &["--no-daemon"])?;
        let mutmut = match &args.mutmut_python {
            Some(python) => Some(run_mutmut(python, pair)?),
            None => None,
        };
        rows.push(OneshotFigures {
            name: pair.name.clone(),
            unitforge_wall_ms,
            in_process_wall_ms,
            composite,
            mutmut,
        });
    }
    let started_here: Vec<_> = unitforge_sandbox::daemon::sockets()?
        .into_iter()
        .filter(|socket| !daemons_before.contains(socket))
        .collect();
    tokio::runtime::Handle::current().block_on(super::daemon::stop_daemons(started_here));
    let ours: Vec<f64> = rows.iter().map(|r| r.unitforge_wall_ms).collect();
    let in_process: Vec<f64> = rows.iter().map(|r| r.in_process_wall_ms).collect();
    let theirs: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.mutmut.as_ref().map(|m| m.wall_ms))
        .collect();
    let slower = rows
        .iter()
        .filter(|r| {
            r.mutmut
                .as_ref()
                .is_some_and(|m| r.unitforge_wall_ms > m.wall_ms)
        })
        .count();
    let summary = serde_json::json!({
        "pairs": rows.len(),
        "executor": executor,
        "unitforge_median_wall_ms": median(&ours),
        "unitforge_max_wall_ms": ours.iter().cloned().fold(0.0, f64::max),
        "in_process_median_wall_ms": median(&in_process),
        "mutmut_median_wall_ms": (!theirs.is_empty()).then(|| median(&theirs)),
        "pairs_where_unitforge_is_slower": args.mutmut_python.as_ref().map(|_| slower),
    });
    if args.json {
        return print_summary_and_pairs(&summary, &rows);
    }
    println!(
        "unitforge bench oneshot: {} pairs from {}, a fresh `unitforge score` process per pair ({executor} executor)\n",
        rows.len(),
        args.pairs.display()
    );
    println!(
        "{:<18} {:>9} {:>12} {:>14} {:>10} {:>8}",
        "pair", "composite", "unitforge ms", "--no-daemon ms", "mutmut ms", "ratio"
    );
    for row in &rows {
        let (mutmut_ms, ratio) = row
            .mutmut
            .as_ref()
            .map_or((String::new(), String::new()), |m| {
                (
                    format!("{:.0}", m.wall_ms),
                    format!("{:.2}×", row.unitforge_wall_ms / m.wall_ms),
                )
            });
        println!(
            "{:<18} {:>9.3} {:>12.0} {:>14.0} {:>10} {:>8}",
            row.name,
            row.composite,
            row.unitforge_wall_ms,
            row.in_process_wall_ms,
            mutmut_ms,
            ratio
        );
    }
    println!();
    println!(
        "unitforge score, median / max            {:>6.0} / {:.0} ms   (target: median ≤ 1000 ms)",
        median(&ours),
        ours.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "unitforge score --no-daemon, median      {:>6.0} ms",
        median(&in_process)
    );
    if !theirs.is_empty() {
        println!(
            "mutmut run, median                       {:>6.0} ms        (unitforge/mutmut {:.2}×)",
            median(&theirs),
            median(&ours) / median(&theirs)
        );
        println!(
            "pairs where unitforge is slower          {slower:>6} of {}",
            rows.len()
        );
    } else {
        println!("mutmut: not measured (--mutmut-python, or `make bench-oneshot`)");
    }
    Ok(())
}

/// A bench's `--json` output: its summary and its per-pair rows, in one object.
fn print_summary_and_pairs(
    summary: &serde_json::Value,
    rows: &impl serde::Serialize,
) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "summary": summary, "pairs": rows }))?
    );
    Ok(())
}

/// Wall time of a cold `python -m pytest -q` on one pair: the cost every run would pay
/// without a fork server (median of 3).
fn cold_pytest_ms(python: &Path, pair: &Pair) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = std::process::Command::new(python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(format!("test_{}.py", pair.name))
            .current_dir(&pair.dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", python.display()))?;
        if !status.success() {
            bail!("cold pytest reference run failed on {}", pair.name);
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&times))
}

/// Run mutmut 3 on a copy of the pair and read its result counts.
fn run_mutmut(python: &Path, pair: &Pair) -> Result<MutmutFigures> {
    let mutmut = python.with_file_name("mutmut");
    if !mutmut.is_file() {
        bail!(
            "--mutmut needs mutmut next to {} (pip install mutmut==3.*)",
            python.display()
        );
    }
    // It runs in a temporary directory: a relative path would no longer lead to it.
    let mutmut = std::fs::canonicalize(&mutmut)?;
    let work = tempfile::tempdir()?;
    let src = work.path().join("src");
    let tests = work.path().join("tests");
    std::fs::create_dir_all(&src)?;
    std::fs::create_dir_all(&tests)?;
    std::fs::write(src.join(format!("{}.py", pair.name)), &pair.input.code)?;
    std::fs::write(
        tests.join(format!("test_{}.py", pair.name)),
        &pair.input.tests,
    )?;
    std::fs::write(
        work.path().join("setup.cfg"),
        format!("[mutmut]\npaths_to_mutate=src/{}.py\ntests_dir=tests/\npytest_add_cli_args_test_selection=tests/\n\n[tool:pytest]\npythonpath = src\n", pair.name),
    )?;
    let bin_dir = mutmut.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let output = std::process::Command::new(&mutmut)
        .arg("run")
        .current_dir(work.path())
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run mutmut")?;
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let results = std::process::Command::new(&mutmut)
        .args(["results", "--all", "true"])
        .current_dir(work.path())
        .env("PATH", &path)
        .output()
        .context("cannot run mutmut results")?;
    let text = String::from_utf8_lossy(&results.stdout);
    let statuses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.rsplit(':').next())
        .map(str::trim)
        .collect();
    let killed = statuses
        .iter()
        .filter(|s| matches!(**s, "killed" | "timeout"))
        .count();
    if statuses.is_empty() {
        bail!(
            "mutmut produced no results for {}: {}",
            pair.name,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(MutmutFigures {
        mutants: statuses.len(),
        killed,
        wall_ms,
    })
}

#[derive(serde::Serialize)]
struct ServeFigures {
    mode: &'static str,
    candidates: usize,
    candidates_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Send every request through a fresh in-process service on `options`' pool and time it;
/// with `repeat_cached`, send them all once more and time the cache hits too.
async fn serve_round(
    mode: &'static str,
    options: &ExecutorOptions,
    requests: &[ScoreRequest],
    concurrency: usize,
    repeat_cached: bool,
) -> Result<Vec<ServeFigures>> {
    let (scorer, identity) = start_scorer(options, &notice).await?;
    let cache = ResultCache::open(None, 100_000)?;
    let service = Service::new(
        scorer,
        identity,
        Some(cache),
        RewardConfig::default(),
        ServiceLimits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(listener, async {
        let _ = stopped.await;
    }));
    let client = Client::new(
        vec![url],
        ClientOptions {
            concurrency,
            ..ClientOptions::default()
        },
    )?;
    let mut figures = Vec::new();
    let rounds: &[&'static str] = if repeat_cached {
        &[mode, "cache hit"]
    } else {
        &[mode]
    };
    for &round in rounds {
        let started = Instant::now();
        let latencies: Vec<Result<f64>> = futures::stream::iter(requests)
            .map(|request| {
                let client = &client;
                async move {
                    let sent = Instant::now();
                    client.score(request).await?;
                    Ok(sent.elapsed().as_secs_f64() * 1000.0)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let wall = started.elapsed().as_secs_f64();
        let mut latencies = latencies.into_iter().collect::<Result<Vec<f64>>>()?;
        latencies.sort_by(f64::total_cmp);
        let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        figures.push(ServeFigures {
            mode: round,
            candidates: latencies.len(),
            candidates_per_second: latencies.len() as f64 / wall,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        });
    }
    let _ = stop.send(());
    task.await??;
    Ok(figures)
}

async fn bench_serve(args: BenchServeArgs) -> Result<()> {
    let pairs = load_pairs(&args.pairs)?;
    let requests: Vec<ScoreRequest> = pairs
        .into_iter()
        .take(args.limit.max(1))
        .map(|pair| ScoreRequest {
            id: Some(pair.name),
            module: pair.input.module,
            code: pair.input.code,
            tests: pair.input.tests,
            config: None,
            no_cache: false,
        })
        .collect();
    let base = ExecutorOptions {
        workers: args.workers,
        ..ExecutorOptions::default()
    };
    let mut figures = Vec::new();
    eprintln!("warm container pool …");
    figures.extend(
        serve_round(
            "warm pool (docker)",
            &base,
            &requests,
            args.concurrency,
            true,
        )
        .await?,
    );
    eprintln!("a fresh container per run …");
    let fresh = ExecutorOptions {
        recycle_after: 1,
        ..base.clone()
    };
    figures.extend(
        serve_round(
            "fresh container per run",
            &fresh,
            &requests,
            args.concurrency,
            false,
        )
        .await?,
    );
    eprintln!("local executor …");
    let local = ExecutorOptions {
        kind: ExecutorKind::Local,
        ..base.clone()
    };
    figures
        .extend(serve_round("local executor", &local, &requests, args.concurrency, false).await?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    println!("\nunitforge bench serve: {} pairs through the service, {} workers, {} requests in flight\n", requests.len(), args.workers, args.concurrency);
    println!(
        "{:<26} {:>12} {:>10} {:>10}",
        "mode", "candidates/s", "p50 ms", "p99 ms"
    );
    for row in &figures {
        println!(
            "{:<26} {:>12.2} {:>10.0} {:>10.0}",
            row.mode, row.candidates_per_second, row.p50_ms, row.p99_ms
        );
    }
    let rate = |mode: &str| {
        figures
            .iter()
            .find(|f| f.mode.starts_with(mode))
            .map_or(f64::NAN, |f| f.candidates_per_second)
    };
    println!(
        "\nwarm pool vs local executor: {:.2}× the local time; warm pool vs a fresh container per run: {:.1}× faster",
        rate("local") / rate("warm"),
        rate("warm") / rate("fresh")
    );
    Ok(())
}
