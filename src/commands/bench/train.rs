//! `unitforge bench train`: training and generation throughput of the candle trainer.
//!
//! Each configuration runs in a child process of its own (`--probe`, the trainer's
//! `train::probe`), so its peak resident memory (VmHWM) is its own: random weights, a few timed
//! SFT steps (masked NLL, backward, AdamW) or greedy generation at batch 1 and 8. Achieved FLOP/s are set against this CPU's f32 matmul peak,
//! measured here with candle. With `--python` pointing at an interpreter that has torch +
//! transformers (+ peft), benches/train_reference.py measures the same shapes for comparison.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use unitforge_trainer::train::probe::{
    matmul_peak_gflops, ops_name, probe_device, run_probe, shape, Probe, ProbeFigures,
};

use crate::cli::BenchTrainArgs;

pub(super) fn spawn_probe(probe: &Probe) -> ProbeFigures {
    let run = || -> Result<ProbeFigures> {
        let output = Command::new(std::env::current_exe()?)
            .args(["bench", "train", "--probe", &serde_json::to_string(probe)?])
            .output()
            .context("cannot start the probe process")?;
        if !output.status.success() {
            bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    };
    run().unwrap_or_else(|e| ProbeFigures {
        shape: probe.shape.clone(),
        mode: probe.mode.clone(),
        ops: ops_name(probe.fused).into(),
        error: Some(format!("{e:#}")),
        ..ProbeFigures::default()
    })
}

#[derive(Serialize)]
struct Report {
    matmul_peak_gflops: f64,
    candle: Vec<ProbeFigures>,
    pytorch: Option<serde_json::Value>,
    pytorch_note: Option<String>,
}

pub fn bench_train(args: BenchTrainArgs) -> Result<()> {
    if let Some(spec) = &args.probe {
        let probe: Probe = serde_json::from_str(spec)?;
        println!("{}", serde_json::to_string(&run_probe(&probe)?)?);
        return Ok(());
    }
    const MODES: [&str; 11] = [
        "full",
        "lora",
        "lora-bf16",
        "qlora",
        "full-ckpt",
        "lora-ckpt",
        "qlora-ckpt",
        "generate",
        "generate-lora",
        "generate-bf16",
        "generate-nf4",
    ];
    if let Some(unknown) = args.modes.iter().find(|m| !MODES.contains(&m.as_str())) {
        bail!("unknown mode `{unknown}` (one of {})", MODES.join(", "));
    }
    let peak = matmul_peak_gflops(&probe_device(&args.device)?)?;
    let mut candle = Vec::new();
    for shape_name in &args.shapes {
        shape(shape_name)?;
        let defaults: &[&str] = if shape_name == "tiny" {
            &["full", "lora", "qlora", "generate"]
        } else {
            &[
                "lora",
                "lora-bf16",
                "qlora",
                "lora-ckpt",
                "qlora-ckpt",
                "generate",
            ]
        };
        let modes: Vec<&str> = if args.modes.is_empty() {
            defaults.to_vec()
        } else {
            args.modes.iter().map(String::as_str).collect()
        };
        for mode in &modes {
            let steps = if *mode == "lora-bf16" { 1 } else { args.steps };
            // The composed reference right after the fused run, so both see the same machine.
            let settings: &[bool] = if args.compare_unfused {
                &[true, false]
            } else {
                &[true]
            };
            for &fused in settings {
                eprintln!("  measuring {shape_name} {mode} ({}) …", ops_name(fused));
                candle.push(spawn_probe(&Probe {
                    shape: shape_name.clone(),
                    mode: mode.to_string(),
                    batch: args.batch,
                    seq_len: args.seq_len,
                    steps,
                    gen_tokens: args.gen_tokens,
                    device: args.device.clone(),
                    fused,
                }));
            }
        }
    }
    let (pytorch, pytorch_note) = pytorch_reference(&args);
    let report = Report {
        matmul_peak_gflops: peak,
        candle,
        pytorch,
        pytorch_note,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "bench train: batch {} × {} tokens, {} timed steps; f32 matmul peak {:.1} GFLOP/s (candle, 1024³)",
        args.batch, args.seq_len, args.steps, peak
    );
    println!(
        "{:<7} {:<10} {:<8} {:>9} {:>10} {:>10} {:>9} {:>7} {:>13} {:>10} {:>11} {:>11}",
        "shape",
        "mode",
        "ops",
        "params",
        "step s",
        "tokens/s",
        "GFLOP/s",
        "% peak",
        "decoder MB",
        "peak RSS",
        "gen tok/s 1",
        "gen tok/s 8"
    );
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |x| format!("{x:.digits$}"));
    for f in &report.candle {
        if let Some(error) = &f.error {
            println!(
                "{:<7} {:<10} {:<8} failed: {}",
                f.shape,
                f.mode,
                f.ops,
                error.lines().last().unwrap_or("")
            );
            continue;
        }
        println!(
            "{:<7} {:<10} {:<8} {:>8.1}M {:>10} {:>10} {:>9} {:>7} {:>13.1} {:>8.0}MB {:>11} {:>11}",
            f.shape,
            f.mode,
            f.ops,
            f.parameters as f64 / 1e6,
            opt(f.step_s, 3),
            opt(f.tokens_per_s, 0),
            opt(f.achieved_gflops, 1),
            opt(f.achieved_gflops.map(|g| 100.0 * g / peak), 0),
            f.decoder_linear_mb,
            f.peak_rss_mb,
            opt(f.gen_tokens_per_s_b1, 1),
            opt(f.gen_tokens_per_s_b8, 1),
        );
    }
    match (&report.pytorch, &report.pytorch_note) {
        (Some(figures), _) => println!(
            "PyTorch reference (benches/train_reference.py):\n{}",
            serde_json::to_string_pretty(figures)?
        ),
        (None, Some(note)) => println!("PyTorch reference: not measured ({note})"),
        _ => {}
    }
    Ok(())
}

/// Run benches/train_reference.py with `--python` if torch imports there.
fn pytorch_reference(args: &BenchTrainArgs) -> (Option<serde_json::Value>, Option<String>) {
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    let has_torch = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        return (
            None,
            Some(format!(
                "{} cannot import torch and transformers",
                python.display()
            )),
        );
    }
    let output = Command::new(&python)
        .arg("benches/train_reference.py")
        .args(["--shapes", &args.shapes.join(",")])
        .args([
            "--batch",
            &args.batch.to_string(),
            "--seq-len",
            &args.seq_len.to_string(),
        ])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--gen-tokens",
            &args.gen_tokens.to_string(),
        ])
        .output();
    match output {
        Ok(o) if o.status.success() => match serde_json::from_slice(&o.stdout) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("unreadable output: {e}"))),
        },
        Ok(o) => (
            None,
            Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        ),
        Err(e) => (None, Some(e.to_string())),
    }
}
