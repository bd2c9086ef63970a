//! `unitforge init-model`: a randomly initialised model in Hugging Face layout, with a BPE
//! tokenizer trained on the project's data, so tests and the demo need no download.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;
use unitforge_sandbox::rng::SplitMix64;

use crate::model::config::ModelConfig;
use crate::TrainerError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSpec {
    #[serde(default)]
    pub vocab_size: usize,
    /// Files, or directories whose `.py` files (recursively), and `.jsonl` rows that train the
    /// tokenizer.
    #[serde(default)]
    pub corpus: Vec<PathBuf>,
    /// Copy this `tokenizer.json` instead of training one (a teacher must share its student's).
    #[serde(default)]
    pub from: Option<PathBuf>,
}

/// `configs/model_tiny.yaml`: the model's shape, its initialisation and its tokenizer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation of matrices (Hugging Face's 0.02).
    pub init_std: f64,
    pub seed: u64,
    pub tokenizer: TokenizerSpec,
}

/// What `init_model` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitSummary {
    pub parameters: usize,
    pub vocab_size: usize,
    pub corpus_files: usize,
}

fn corpus_texts(roots: &[PathBuf]) -> Result<(Vec<String>, usize), TrainerError> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else if path.extension().is_some_and(|e| e == "py" || e == "jsonl") {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for root in roots.iter().filter(|r| r.is_file()) {
        files.push(root.clone());
    }
    for root in roots.iter().filter(|r| !r.is_file()) {
        walk(root, &mut files).map_err(|e| TrainerError::Io(root.display().to_string(), e))?;
    }
    files.sort();
    let mut texts = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| TrainerError::Io(file.display().to_string(), e))?;
        if file.extension().is_some_and(|e| e == "jsonl") {
            // Train on the string fields of each row (prompts, code, tests), not on JSON syntax.
            for line in text.lines() {
                if let Ok(serde_json::Value::Object(row)) = serde_json::from_str(line) {
                    texts.extend(row.values().filter_map(|v| v.as_str().map(str::to_string)));
                }
            }
        } else {
            texts.push(text);
        }
    }
    if texts.is_empty() {
        return Err(TrainerError::Config("the tokenizer corpus is empty".into()));
    }
    Ok((texts, files.len()))
}

/// Random weights for `config`, in Hugging Face names: matrices N(0, std²), biases 0, norms 1.
pub fn random_weights(
    config: &ModelConfig,
    std: f64,
    seed: u64,
) -> Result<HashMap<String, Tensor>, TrainerError> {
    let device = Device::Cpu;
    let mut rng = SplitMix64::new(seed);
    let mut weights = HashMap::new();
    let mut matrix = |name: String, rows: usize, cols: usize| -> Result<(), TrainerError> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| (rng.normal() * std) as f32)
            .collect();
        weights.insert(name, Tensor::from_vec(values, (rows, cols), &device)?);
        Ok(())
    };
    let (h, i, hd) = (
        config.hidden_size,
        config.intermediate_size,
        config.head_dim(),
    );
    let (q, kv) = (config.num_attention_heads * hd, config.kv_heads() * hd);
    matrix("model.embed_tokens.weight".into(), config.vocab_size, h)?;
    if !config.tie_word_embeddings {
        matrix("lm_head.weight".into(), config.vocab_size, h)?;
    }
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, rows, cols) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            matrix(format!("{p}.{name}.weight"), rows, cols)?;
        }
    }
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        if config.qkv_bias() {
            for (name, size) in [
                ("self_attn.q_proj", q),
                ("self_attn.k_proj", kv),
                ("self_attn.v_proj", kv),
            ] {
                weights.insert(
                    format!("{p}.{name}.bias"),
                    Tensor::zeros(size, candle_core::DType::F32, &device)?,
                );
            }
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            weights.insert(
                format!("{p}.{norm}.weight"),
                Tensor::ones(h, candle_core::DType::F32, &device)?,
            );
        }
    }
    weights.insert(
        "model.norm.weight".into(),
        Tensor::ones(h, candle_core::DType::F32, &device)?,
    );
    Ok(weights)
}

/// Train the tokenizer, initialise the weights and write `config.json`, `model.safetensors` and
/// `tokenizer.json` to `out`.
pub fn init_model(config: &InitConfig, out: &Path) -> Result<InitSummary, TrainerError> {
    let (tokenizer, corpus_files) = match &config.tokenizer.from {
        Some(path) => (crate::data::tokenizer::load(path)?, 0),
        None => {
            let (texts, files) = corpus_texts(&config.tokenizer.corpus)?;
            (
                crate::data::tokenizer::train_bpe(&texts, config.tokenizer.vocab_size)?,
                files,
            )
        }
    };
    let vocab_size = tokenizer.get_vocab_size(true);
    let eos = crate::data::tokenizer::token_id(&tokenizer, crate::data::tokenizer::END_OF_TEXT)?;
    let mut extra = serde_json::Map::new();
    extra.insert(
        "architectures".into(),
        serde_json::json!([if config.model_type == "llama" {
            "LlamaForCausalLM"
        } else {
            "Qwen2ForCausalLM"
        }]),
    );
    extra.insert("hidden_act".into(), "silu".into());
    extra.insert("torch_dtype".into(), "float32".into());
    extra.insert("bos_token_id".into(), eos.into());
    extra.insert("eos_token_id".into(), eos.into());
    extra.insert("pad_token_id".into(), eos.into());
    extra.insert("use_sliding_window".into(), false.into());
    extra.insert(
        "sliding_window".into(),
        config.max_position_embeddings.into(),
    );
    extra.insert("max_window_layers".into(), config.num_hidden_layers.into());
    let model_config = ModelConfig {
        model_type: config.model_type.clone(),
        vocab_size,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        num_hidden_layers: config.num_hidden_layers,
        num_attention_heads: config.num_attention_heads,
        num_key_value_heads: Some(config.num_key_value_heads),
        max_position_embeddings: config.max_position_embeddings,
        rope_theta: config.rope_theta,
        rms_norm_eps: config.rms_norm_eps,
        tie_word_embeddings: config.tie_word_embeddings,
        attention_bias: None,
        extra,
    };
    if !config
        .hidden_size
        .is_multiple_of(config.num_attention_heads)
        || !config
            .num_attention_heads
            .is_multiple_of(config.num_key_value_heads)
    {
        return Err(TrainerError::Config(
            "hidden_size must divide into heads, and heads into key/value heads".into(),
        ));
    }
    let weights = random_weights(&model_config, config.init_std, config.seed)?;
    let parameters = weights.values().map(|t| t.elem_count()).sum();
    std::fs::create_dir_all(out).map_err(|e| TrainerError::Io(out.display().to_string(), e))?;
    let config_json = serde_json::to_string_pretty(&model_config).expect("configs serialise");
    std::fs::write(out.join("config.json"), config_json)
        .map_err(|e| TrainerError::Io(out.display().to_string(), e))?;
    candle_core::safetensors::save(&weights, out.join("model.safetensors"))?;
    crate::data::tokenizer::save(&tokenizer, &out.join("tokenizer.json"))?;
    Ok(InitSummary {
        parameters,
        vocab_size,
        corpus_files,
    })
}

pub fn read_init_config(path: &Path) -> Result<InitConfig, TrainerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainerError::Io(path.display().to_string(), e))?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| TrainerError::Config(format!("{}: {e}", path.display())))
}
