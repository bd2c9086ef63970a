//! unitforge's candle trainer: the model and its LoRA/QLoRA layers today; data, SFT, GKD, GRPO,
//! evaluation and generation follow (see ARCHITECTURE.md).

pub mod config;
pub mod corpus;
pub mod data;
pub mod device;
pub mod generate;
pub mod init;
pub mod lora;
pub mod loss;
pub mod model;
pub mod optim;
pub mod plot;
pub mod prompts;
pub mod quant;
pub mod sft;
pub mod stage_config;
pub mod tokenizer;

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
