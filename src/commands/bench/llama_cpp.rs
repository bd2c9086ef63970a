//! llama.cpp's batched decoding as a reference beside `bench grpo`: `llama-batched-bench` run
//! on a GRPO step's shape, its one JSON line read back.
//!
//! A step decodes `completions` sequences (groups of samples, each group sharing its prompt) up
//! to the longest sample. llama.cpp's bench decodes `sequences` rows that share one prompt of
//! `prompt_tokens` (`-pps`), each for exactly `completion_tokens` tokens, on random token ids.
//! So its time for a step's generation is one prompt's prefill per group plus that decoding:
//! the same tokens and rows, without the step's tail (rows that outlive the others), its
//! sampling, or the sandbox scoring beside it — llama.cpp's best case for the step's work.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The program inside a llama.cpp build folder.
const PROGRAM: &str = "llama-batched-bench";

/// What llama.cpp is asked to decode.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct StepShape {
    /// Groups of a step: prompts prefilled.
    pub prompts: usize,
    /// Rows decoded together: a step's completions.
    pub sequences: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// The fields of `llama-batched-bench --output-format jsonl` read here.
#[derive(Debug, Deserialize)]
struct BatchedBenchLine {
    pp: usize,
    tg: usize,
    pl: usize,
    /// Seconds to prefill the prompt (one, with `-pps`).
    t_pp: f64,
    /// Seconds to decode `tg` tokens in each of `pl` rows.
    t_tg: f64,
    speed_tg: f64,
}

/// llama.cpp's figures for a step's shape.
#[derive(Debug, Serialize)]
pub(super) struct LlamaCppFigures {
    pub shape: StepShape,
    pub gguf: String,
    pub threads: usize,
    /// One prompt's prefill.
    pub prefill_s: f64,
    pub decode_s: f64,
    pub decode_tokens_per_s: f64,
    /// A step's generation at llama.cpp's speed: a prefill per prompt, then the decoding.
    pub step_generation_s: f64,
    /// The step's completion tokens ÷ `step_generation_s`.
    pub step_tokens_per_s: f64,
}

/// The `llama-batched-bench` of `build`: the program itself, or `bin/` (CMake's output) or the
/// folder itself holding it.
pub(super) fn program(build: &Path) -> Result<PathBuf> {
    let candidates = [
        build.to_path_buf(),
        build.join("bin").join(PROGRAM),
        build.join(PROGRAM),
    ];
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "no {PROGRAM} at {} (nor in its bin/): pass a llama.cpp build folder or the program; `make llama-cpp` builds one in .llama-cpp",
                build.display()
            )
        })
}

/// Run `program` on `gguf` for `shape` with `threads` threads.
pub(super) fn measure(
    program: &Path,
    gguf: &Path,
    shape: StepShape,
    threads: usize,
) -> Result<LlamaCppFigures> {
    if !gguf.is_file() {
        bail!(
            "no GGUF weights at {} for llama.cpp (`make model` writes SmolLM2's; or pass --llama-cpp-model)",
            gguf.display()
        );
    }
    let (prompt, completion, rows) = (
        shape.prompt_tokens.max(1),
        shape.completion_tokens.max(1),
        shape.sequences.max(1),
    );
    // Without a unified cache each row holds its own copy of the prompt and its tokens.
    let context = rows * (prompt + completion) + 64;
    let output = Command::new(program)
        .arg("-m")
        .arg(gguf)
        .args(["-c", &context.to_string()])
        .args(["-b", "2048", "-ub", "512"])
        .args(["-npp", &prompt.to_string()])
        .args(["-ntg", &completion.to_string()])
        .args(["-npl", &rows.to_string()])
        .arg("-pps")
        .args(["-t", &threads.to_string(), "-tb", &threads.to_string()])
        .args(["--output-format", "jsonl"])
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            program.display(),
            output.status,
            tail(&stderr)
        );
    }
    let line = parse(&stdout)
        .or_else(|_| parse(&stderr))
        .with_context(|| format!("{PROGRAM} printed no result: {}", tail(&stderr)))?;
    if (line.pp, line.tg, line.pl) != (prompt, completion, rows) {
        bail!(
            "{PROGRAM} measured {} prompt tokens, {} new tokens, {} rows; asked for {prompt}, {completion}, {rows}",
            line.pp,
            line.tg,
            line.pl
        );
    }
    let step_generation_s = shape.prompts.max(1) as f64 * line.t_pp + line.t_tg;
    Ok(LlamaCppFigures {
        shape,
        gguf: gguf.display().to_string(),
        threads,
        prefill_s: line.t_pp,
        decode_s: line.t_tg,
        decode_tokens_per_s: line.speed_tg,
        step_generation_s,
        step_tokens_per_s: (rows * completion) as f64 / step_generation_s.max(1e-9),
    })
}

/// The last JSON object line of `text` that reads as a result.
fn parse(text: &str) -> Result<BatchedBenchLine> {
    text.lines()
        .rev()
        .filter(|line| line.trim_start().starts_with('{'))
        .find_map(|line| serde_json::from_str(line.trim()).ok())
        .context("no result line")
}

/// The last lines of a program's output, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as llama.cpp's batched-bench prints it (its `LOG` format, `-pps`, 2 threads).
    const LINE: &str = r#"{"n_kv_max": 7232, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 1, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 300, "tg": 140, "pl": 16, "n_kv": 7040, "t_pp": 0.912000, "speed_pp": 328.947357, "t_tg": 14.100000, "speed_tg": 158.865250, "t": 15.012000, "speed": 169.184647}"#;

    #[test]
    fn the_result_line_is_read_among_the_logs() {
        let text = format!("llama_model_loader: loaded meta data\n\n{LINE}\n\nllama_perf_context_print: load time = 1 ms\n");
        let line = parse(&text).unwrap();
        assert_eq!((line.pp, line.tg, line.pl), (300, 140, 16));
        assert!((line.t_pp - 0.912).abs() < 1e-9 && (line.t_tg - 14.1).abs() < 1e-9);
        assert!((line.speed_tg - 158.86525).abs() < 1e-6);
        assert!(parse("no result here\n{not json}\n").is_err());
    }

    #[test]
    fn a_folder_without_the_program_is_named_with_how_to_build_one() {
        let dir = tempfile::tempdir().unwrap();
        let error = program(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(PROGRAM) && error.contains("make llama-cpp"),
            "{error}"
        );
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join(PROGRAM), "").unwrap();
        assert_eq!(program(dir.path()).unwrap(), bin.join(PROGRAM));
    }
}
