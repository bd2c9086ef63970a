//! Stage 1 on the tiny model: real gradients, falling held-out loss, checkpoints that resume
//! exactly, and an output directory the next stage can load.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use common::max_abs_diff;
use unitforge_trainer::model::decoder::{LoadOptions, Model};
use unitforge_trainer::new_model::init::{init_model, read_init_config};
use unitforge_trainer::stages::sft::train;
use unitforge_trainer::train::stage_config::StageConfig;
use unitforge_trainer::train::train_loop::read_metrics;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A small model and the shipped pairs as (code → tests) examples: 28 to train, 6 held out.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut init = read_init_config(&root().join("configs/model_tiny.yaml")).unwrap();
    init.tokenizer.corpus = vec![root().join("data/pairs")];
    init.hidden_size = 64;
    init.intermediate_size = 128;
    init.num_hidden_layers = 2;
    let model = dir.join("base");
    init_model(&init, &model).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(root().join("data/pairs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let rows: Vec<String> = names
        .iter()
        .map(|name| {
            let pair = root().join("data/pairs").join(name);
            serde_json::json!({
                "module": name,
                "code": std::fs::read_to_string(pair.join(format!("{name}.py"))).unwrap(),
                "chosen": std::fs::read_to_string(pair.join(format!("test_{name}.py"))).unwrap(),
            })
            .to_string()
        })
        .collect();
    let (train_rows, eval_rows) = rows.split_at(28);
    let (train_path, eval_path) = (dir.join("train.jsonl"), dir.join("eval.jsonl"));
    std::fs::write(&train_path, train_rows.join("\n")).unwrap();
    std::fs::write(&eval_path, eval_rows.join("\n")).unwrap();
    (model, train_path, eval_path)
}

fn config(
    model: &Path,
    train_data: &Path,
    eval_data: &Path,
    output: &Path,
    steps: usize,
) -> StageConfig {
    let yaml = format!(
        "base_model: {}\noutput_dir: {}\ntrain_data: {}\neval_data: {}\nmax_steps: {steps}\nbatch_size: 4\nlearning_rate: 0.03\nwarmup_steps: 2\nmax_len: 200\neval_every: 10\nsave_every: 10\nprogress: false\nlora: {{rank: 8, alpha: 16, dropout: 0.0}}\n",
        model.display(),
        output.display(),
        train_data.display(),
        eval_data.display()
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

#[test]
fn sft_learns_checkpoints_resume_exactly_and_the_output_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train_data, eval_data) = setup(dir.path());
    let device = Device::Cpu;

    // Full fine-tuning of the random tiny model learns: the held-out loss falls well below its
    // start. (LoRA on a random base barely can: its frozen, tied, std-0.02 embeddings and norms
    // keep every logit near zero; adapters are for pretrained bases.)
    let full = dir.path().join("full");
    let mut full_config = config(&model, &train_data, &eval_data, &full, 40);
    full_config.full_finetune = true;
    full_config.learning_rate = 0.01;
    let summary = train(&full_config, &device).unwrap();
    assert!(
        summary.final_eval["eval_loss"] < 0.7 * summary.first_eval["eval_loss"],
        "{summary:?}"
    );
    assert!(!full.join("adapter_model.safetensors").exists());

    let straight = dir.path().join("straight");
    train(
        &config(&model, &train_data, &eval_data, &straight, 40),
        &device,
    )
    .unwrap();
    let metrics = read_metrics(&straight.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 40);
    assert!(metrics
        .iter()
        .all(|m| m.loss.is_finite() && m.lr > 0.0 && m.tokens_per_s > 0.0 && m.grad_norm > 0.0));
    assert_eq!(
        metrics
            .iter()
            .filter(|m| m.parts.contains_key("eval_loss"))
            .count(),
        4
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "adapter_model.safetensors",
        "adapter_config.json",
        "loss_curve.png",
    ] {
        assert!(straight.join(file).is_file(), "{file}");
    }
    let adapter: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(straight.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["peft_type"], "LORA");
    let adapter_weights =
        candle_core::safetensors::load(straight.join("adapter_model.safetensors"), &device)
            .unwrap();
    assert!(adapter_weights
        .contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));

    // Augmented prompts (every one a variant of its code) train as well; without the merged
    // model only the adapter is written.
    let adapter_only = dir.path().join("adapter-only");
    let mut augmented = config(&model, &train_data, &eval_data, &adapter_only, 3);
    augmented.augment_variants = 1.0;
    augmented.save_merged = false;
    train(&augmented, &device).unwrap();
    assert!(adapter_only.join("adapter_model.safetensors").is_file());
    assert!(!adapter_only.join("model.safetensors").exists());
    assert!(read_metrics(&adapter_only.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .all(|m| m.loss.is_finite()));

    // A 40-step run stopped after step 33 and resumed: the same weights as the uninterrupted run.
    let resumed = dir.path().join("resumed");
    let mut first = config(&model, &train_data, &eval_data, &resumed, 40);
    first.stop_at = Some(33);
    assert_eq!(train(&first, &device).unwrap().steps, 33);
    assert!(
        !resumed.join("model.safetensors").exists(),
        "a stopped run writes only its checkpoint"
    );
    let mut second = config(&model, &train_data, &eval_data, &resumed, 40);
    second.resume = true;
    train(&second, &device).unwrap();
    let a = candle_core::safetensors::load(straight.join("model.safetensors"), &device).unwrap();
    let b = candle_core::safetensors::load(resumed.join("model.safetensors"), &device).unwrap();
    for (name, tensor) in &a {
        let diff = max_abs_diff(tensor, &b[name]);
        assert!(diff < 1e-6, "{name}: {diff}");
    }
    let resumed_metrics = read_metrics(&resumed.join("metrics.jsonl")).unwrap();
    assert_eq!(
        resumed_metrics.iter().map(|m| m.step).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );

    // The output is a plain checkpoint: loaded without adapters, it computes what the base with
    // the saved PEFT adapter computes.
    let merged = Model::load(&straight, &device, &LoadOptions::default(), &VarMap::new()).unwrap();
    let with_adapter = Model::load_for_inference(&model, Some(&straight), &device).unwrap();
    let ids = Tensor::new(&[[5u32, 9, 200, 17, 3]], &device).unwrap();
    let a = merged.forward(&ids, 0, None, false).unwrap();
    let b = with_adapter.forward(&ids, 0, None, false).unwrap();
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 1e-4, "merged vs base + adapter: {diff}");
}

/// `gradient_checkpointing: true` changes what the step keeps, not what it computes: the same
/// run's losses and gradient norms, step by step, with LoRA and in full fine-tuning.
#[test]
fn gradient_checkpointing_trains_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train_data, eval_data) = setup(dir.path());
    for full_finetune in [false, true] {
        let run = |checkpointing: bool| {
            let out = dir
                .path()
                .join(format!("run-{full_finetune}-{checkpointing}"));
            let mut stage = config(&model, &train_data, &eval_data, &out, 6);
            stage.full_finetune = full_finetune;
            stage.gradient_checkpointing = checkpointing;
            train(&stage, &Device::Cpu).unwrap();
            read_metrics(&out.join("metrics.jsonl")).unwrap()
        };
        let (plain, checkpointed) = (run(false), run(true));
        assert_eq!(plain.len(), 6);
        for (a, b) in plain.iter().zip(&checkpointed) {
            assert!(
                (a.loss - b.loss).abs() <= 1e-5 * a.loss.abs()
                    && (a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm.abs(),
                "full fine-tuning {full_finetune}, step {}: loss {} vs {}, grad norm {} vs {}",
                a.step,
                a.loss,
                b.loss,
                a.grad_norm,
                b.grad_norm
            );
        }
    }
}
