//! unitforge's candle trainer: the model with its LoRA/QLoRA layers, tokenizer, data and corpus,
//! the shared training loop with the SFT and GKD-distillation stages, and generation (see
//! ARCHITECTURE.md).

pub mod blocks;
pub mod checkpoint;
pub mod config;
pub mod corpus;
pub mod data;
pub mod device;
pub mod distill;
pub mod eval;
pub mod eval_report;
pub mod fast_exp;
pub mod frozen;
pub mod frozen_matmul;
pub mod fused;
pub mod fused_attention;
pub mod fused_head_logprobs;
pub mod fused_linear;
pub mod fused_logprobs;
pub mod fused_lora;
pub mod fused_repeat_kv;
pub mod fused_rms_norm;
pub mod fused_rope;
pub mod fused_swiglu;
pub mod generate;
pub mod gguf_import;
pub mod grpo;
pub mod init;
pub mod lora;
pub mod loss;
pub mod model;
pub mod optim;
pub mod pareto;
pub mod plot;
pub mod policy_loss;
pub mod prompts;
pub mod prune;
pub mod quant;
pub mod recompute;
pub mod reward_source;
pub mod sft;
pub mod slice_gemm;
pub mod stage;
pub mod stage_config;
pub mod student;
pub mod supervised;
pub mod tokenizer;
pub mod train_loop;

/// Errors of the trainer library.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("bad data: {0}")]
    Data(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
