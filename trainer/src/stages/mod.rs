//! The training stages — SFT, GKD distillation, GRPO — and their dispatch by name: what
//! `unitforge train <stage>` runs. Each stage hands the shared loop (`train::train_loop`) its
//! micro-batch loss, preparation and evaluation.

pub mod distill;
pub mod grpo;
pub mod sft;

use candle_core::Device;
use serde::Serialize;

use crate::train::stage_config::StageConfig;
use crate::train::train_loop::StageSummary;
use crate::TrainerError;

/// A training stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Stage 1: supervised fine-tuning.
    Sft,
    /// Stage 2: GKD distillation from a teacher.
    Distill,
    /// Stage 3: GRPO against the sandbox's rewards.
    Grpo,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Sft => "sft",
            StageKind::Distill => "distill",
            StageKind::Grpo => "grpo",
        }
    }
}

/// Run `kind` with `config` on `device`.
pub fn train(
    kind: StageKind,
    config: &StageConfig,
    device: &Device,
) -> Result<StageSummary, TrainerError> {
    match kind {
        StageKind::Sft => crate::stages::sft::train(config, device),
        StageKind::Distill => crate::stages::distill::train(config, device),
        StageKind::Grpo => crate::stages::grpo::train(config, device),
    }
}
