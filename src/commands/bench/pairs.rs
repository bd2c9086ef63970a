//! The shipped pairs the scoring benches run (`<name>/<name>.py` + `<name>/test_<name>.py`)
//! and the per-pair table they print.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use unitforge_sandbox::score::ScoreInput;

use crate::commands::read_source;

pub(super) struct Pair {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) input: ScoreInput,
}

pub(super) fn load_pairs(dir: &Path) -> Result<Vec<Pair>> {
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

/// A bench's `--json` output: its summary and its per-pair rows, in one object.
pub(super) fn print_summary_and_pairs(
    summary: &serde_json::Value,
    rows: &impl serde::Serialize,
) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "summary": summary, "pairs": rows }))?
    );
    Ok(())
}
