//! The model's shape, read from (and written as) a Hugging Face `config.json`.
//!
//! Qwen2 and Llama checkpoints share this shape; they differ in whether q/k/v projections carry
//! a bias (Qwen2 yes, Llama no, or as `attention_bias` says). Fields this trainer does not use
//! are kept, so a config written back out is still the checkpoint's own.

use serde::{Deserialize, Serialize};

fn default_model_type() -> String {
    "qwen2".into()
}

fn default_rope_theta() -> f64 {
    10_000.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    /// Everything else the checkpoint's config says, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Whether q/k/v projections have a bias.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    pub fn from_json_file(path: &std::path::Path) -> Result<Self, crate::TrainerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::TrainerError::Io(path.display().to_string(), e))?;
        serde_json::from_str(&text)
            .map_err(|e| crate::TrainerError::Config(format!("{}: {e}", path.display())))
    }
}
