//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use unitforge_sandbox::rng::SplitMix64;
use unitforge_trainer::model::config::ModelConfig;
use unitforge_trainer::model::decoder::Model;
use unitforge_trainer::model::lora::LoraConfig;

/// Deterministic normal samples (candle's CPU device cannot be seeded), f64.
pub fn randn(seed: u64, shape: &[usize], scale: f64) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count).map(|_| scale * rng.normal()).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Largest absolute element of a float tensor, in float64 (exact for f32 and f64 tensors).
pub fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Largest absolute element-wise difference of two tensors (subtracted in their own dtype).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b).unwrap())
}

/// A small Qwen2-shaped config: 2 layers, 32 wide, 96 tokens.
pub fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "qwen2", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": false, "sliding_window": 64, "max_window_layers": 2,
        "use_sliding_window": false, "hidden_act": "silu"
    })
}

/// Random weights in Hugging Face layout, as `dtype`.
pub fn random_weights(config: &ModelConfig, seed: u64, dtype: DType) -> HashMap<String, Tensor> {
    let mut weights = HashMap::new();
    let mut counter = seed * 1000;
    let mut put = |name: String, shape: &[usize], around_one: bool| {
        counter += 1;
        let noise = randn(counter, shape, if around_one { 0.1 } else { 0.2 });
        let value = if around_one {
            (noise + 1.0).unwrap()
        } else {
            noise
        };
        weights.insert(name, value.to_dtype(dtype).unwrap());
    };
    let (h, i, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim(),
    );
    let (q, kv) = (config.num_attention_heads * hd, config.kv_heads() * hd);
    put(
        "model.embed_tokens.weight".into(),
        &[config.vocab_size, h],
        false,
    );
    put("lm_head.weight".into(), &[config.vocab_size, h], false);
    put("model.norm.weight".into(), &[h], true);
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", [q, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, q]),
            ("mlp.gate_proj", [i, h]),
            ("mlp.up_proj", [i, h]),
            ("mlp.down_proj", [h, i]),
        ] {
            put(format!("{p}.{name}.weight"), &shape, false);
        }
        for (name, size) in [
            ("self_attn.q_proj", q),
            ("self_attn.k_proj", kv),
            ("self_attn.v_proj", kv),
        ] {
            put(format!("{p}.{name}.bias"), &[size], false);
        }
        put(format!("{p}.input_layernorm.weight"), &[h], true);
        put(format!("{p}.post_attention_layernorm.weight"), &[h], true);
    }
    weights
}

pub fn write_checkpoint(dir: &Path, weights: &HashMap<String, Tensor>) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&tiny_config()).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).unwrap();
}

/// LoRA of `rank` with alpha = 2·rank (scale 2) and no dropout, so runs are deterministic.
pub fn lora(rank: usize) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        ..LoraConfig::default()
    }
}

/// Set every LoRA B to small random values (a fresh B is zero, which zeroes A's gradient).
pub fn randomise_b(model: &Model, seed: u64) {
    for (index, (name, var)) in model.trainable().iter().enumerate() {
        if name.contains("lora_B") {
            let noise = randn(seed * 1000 + index as u64, var.dims(), 0.1)
                .to_dtype(var.dtype())
                .unwrap();
            var.set(&noise).unwrap();
        }
    }
}

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first `train + eval` rows of the shipped corpus, split into `dir/train.jsonl` and
/// `dir/eval.jsonl`, and a 2-layer, 32-wide model (`dir/student`) with a 400-token tokenizer
/// trained on those rows; the init config comes back too, for a teacher of the same vocabulary.
pub fn small_student(
    dir: &Path,
    train: usize,
    eval: usize,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
    unitforge_trainer::new_model::init::InitConfig,
) {
    use unitforge_trainer::new_model::init::{init_model, read_init_config};
    let text = std::fs::read_to_string(repo_root().join("data/corpus/train.jsonl")).unwrap();
    let rows: Vec<&str> = text.lines().take(train + eval).collect();
    let (train_path, eval_path) = (dir.join("train.jsonl"), dir.join("eval.jsonl"));
    std::fs::write(&train_path, rows[..train].join("\n")).unwrap();
    std::fs::write(&eval_path, rows[train..].join("\n")).unwrap();
    let mut init = read_init_config(&repo_root().join("configs/model_tiny.yaml")).unwrap();
    init.tokenizer.corpus = vec![train_path.clone()];
    init.tokenizer.vocab_size = 400;
    init.hidden_size = 32;
    init.intermediate_size = 64;
    init.num_hidden_layers = 2;
    let student = dir.join("student");
    init_model(&init, &student).unwrap();
    (student, train_path, eval_path, init)
}

/// The reward backend on the local executor (processes on this machine; `make venv` sets up
/// the Python it runs).
pub fn local_backend() -> unitforge_sandbox::backend::BlockingBackend {
    use unitforge_sandbox::backend::{BackendOptions, BlockingBackend};
    use unitforge_sandbox::executor::{ExecutorKind, ExecutorOptions};
    let options = BackendOptions {
        executor: ExecutorOptions {
            kind: ExecutorKind::Local,
            workers: 2,
            ..ExecutorOptions::default()
        },
        servers: Vec::new(),
        concurrency: 4,
    };
    BlockingBackend::start(&options, &|_| {}).expect("local sandbox (make venv)")
}
