//! unitforge's candle trainer, in layers (ARCHITECTURE.md has the map and the import rules a test
//! enforces): `kernels` (the CPU ops with their own backward), `model` (the decoder, its LoRA
//! layers and generation), `data` (rows, tokenizer, prompts, the synthetic corpus), `new_model`
//! (initialising, pruning and importing models), `train` (the loop every stage shares and what it
//! needs), `stages` (SFT, GKD distillation, GRPO), `deliver` (from a model to a test file a user
//! keeps: sampled, scored, repaired, fixed, verified) and `eval` (held-out figures and the Pareto
//! picture); `device` and `plot` serve them all.

pub mod data;
pub mod deliver;
pub mod device;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod new_model;
pub mod plot;
pub mod stages;
pub mod train;

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
    /// The rewards a stage trains on could not be had (the reward backend stayed down): the
    /// loop writes a checkpoint of the steps done before it returns this.
    #[error("no rewards: {0}")]
    RewardsUnavailable(String),
}
