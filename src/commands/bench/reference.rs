//! The references the scoring benches print beside unitforge: a fresh mutmut run of a pair
//! (its own mutants, killed or not, wall time) and a cold pytest run of its suite.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use unitforge_sandbox::rewards::median;

use super::pairs::Pair;

#[derive(serde::Serialize, Clone)]
pub(super) struct MutmutFigures {
    pub(super) mutants: usize,
    pub(super) killed: usize,
    pub(super) wall_ms: f64,
}

/// Run mutmut 3 on a copy of the pair and read its result counts.
pub(super) fn run_mutmut(python: &Path, pair: &Pair) -> Result<MutmutFigures> {
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

/// Wall time of a cold `python -m pytest -q` on one pair: the cost every run would pay
/// without a fork server (median of 3).
pub(super) fn cold_pytest_ms(python: &Path, pair: &Pair) -> Result<f64> {
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
