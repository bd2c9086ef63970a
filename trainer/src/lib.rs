//! unitforge's candle trainer: the model and its LoRA/QLoRA layers today; data, SFT, GKD, GRPO,
//! evaluation and generation follow (see ARCHITECTURE.md).

pub mod config;
pub mod init;
pub mod lora;
pub mod model;
pub mod optim;
pub mod quant;
pub mod tokenizer;

/// Errors of the trainer library.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
