//! The training loop every stage shares and what it needs: the stage configuration, checkpoints,
//! AdamW, the losses, the student a stage starts from, frozen models beside it, and the held-out
//! cross-entropy pass. Nothing here knows a stage.

pub mod checkpoint;
pub mod frozen;
pub mod loss;
pub mod optim;
pub mod probe;
pub mod stage_config;
pub mod student;
pub mod supervised;
pub mod train_loop;
