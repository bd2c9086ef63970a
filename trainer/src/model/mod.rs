//! The model: its shape (`config`), the decoder and its blocks, LoRA and trainable linear layers,
//! activation checkpointing, log-probabilities of chosen tokens, and batched generation. It
//! imports only the kernels.

pub mod blocks;
pub mod config;
pub mod decoder;
pub mod generate;
pub mod logprobs;
pub mod lora;
pub mod recompute;
