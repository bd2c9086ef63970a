//! unitforge's candle trainer: SFT, GKD distillation and GRPO for models that write pytest
//! suites. Empty until the trainer issues land; the workspace member exists so that the
//! layout in ARCHITECTURE.md holds from the first commit.
