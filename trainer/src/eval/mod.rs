//! Held-out figures of a checkpoint: greedy samples checked for valid pytest (`samples`), suites
//! scored in the sandbox beside the reference and trivial suites (`report`) with intervals over
//! rows (`interval`), paired comparisons of two checkpoints (`compare`), the Pareto front
//! of the checkpoints (`pareto`), and the reward-filtered rows of a further SFT round, the best
//! suites a model wrote less their pruned tests (`raft`), what delivery hands a user, step by
//! step (`delivered`), and the share of broken suites a model repairs in one round
//! (`fix_rate`). It imports neither the loop nor a stage.

pub mod compare;
pub mod delivered;
pub mod fix_rate;
pub mod interval;
pub mod pareto;
pub mod raft;
pub mod report;
pub mod samples;
