//! Held-out figures of a checkpoint: greedy samples checked for valid pytest (`samples`), suites
//! scored in the sandbox beside the reference and trivial suites (`report`), and the Pareto front
//! of the checkpoints (`pareto`). It imports neither the loop nor a stage.

pub mod pareto;
pub mod report;
pub mod samples;
