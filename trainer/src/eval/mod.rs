//! Held-out figures of a checkpoint: greedy samples checked for valid pytest (`samples`), suites
//! scored in the sandbox beside the reference and trivial suites (`report`) with intervals over
//! rows (`interval`), paired comparisons of two checkpoints (`compare`), and the Pareto front
//! of the checkpoints (`pareto`). It imports neither the loop nor a stage.

pub mod compare;
pub mod interval;
pub mod pareto;
pub mod report;
pub mod samples;
