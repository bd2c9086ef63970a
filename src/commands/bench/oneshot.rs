//! `unitforge bench oneshot`: one-shot latency, a fresh `unitforge score` process per pair as a
//! user types it (through the background scorer, and `--no-daemon`), beside a fresh mutmut run.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use unitforge_sandbox::rewards::median;

use super::pairs::{load_pairs, print_summary_and_pairs, Pair};
use super::reference::{run_mutmut, MutmutFigures};
use crate::cli::BenchOneshotArgs;

#[derive(serde::Serialize)]
pub(super) struct OneshotFigures {
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
pub(super) fn bench_oneshot(args: BenchOneshotArgs) -> Result<()> {
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
    tokio::runtime::Handle::current().block_on(crate::commands::daemon::stop_daemons(started_here));
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
        "pairs_where_unitforge_is_slower": args.mutmut_python.as_ref().map(|_| slower)});
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
