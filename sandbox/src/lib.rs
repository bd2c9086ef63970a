//! unitforge's reward sandbox: runs untrusted pytest suites against Python code and turns what
//! happens into rewards.
//!
//! The pieces, in the order a score flows through them: [`source`] parses Python;
//! [`mutant`] (with [`operator`]) and [`variant`] rewrite the code under test; [`suite`] reads
//! the test file statically; [`worker`] drives the Python fork-server runner over the
//! [`protocol`]; [`outcome`] classifies each run; [`timeouts`] derives mutant time limits;
//! [`rewards`] holds the formulas; [`score`] orchestrates one score; [`backend`] is how every
//! caller scores many (an in-process pool or the [`service`] through the [`client`]); [`daemon`]
//! keeps a warm pool behind a Unix socket between one-shot `unitforge score` calls.

pub mod api;
pub mod backend;
pub mod balance;
pub mod cache;
pub mod client;
pub mod completion;
pub mod coverage;
pub mod daemon;
pub mod docker;
pub mod doctor;
pub mod executor;
pub mod image;
pub mod local;
pub mod mutant;
pub mod operator;
pub mod outcome;
pub mod protocol;
pub mod prune;
pub mod remote;
pub mod repair;
pub mod report;
pub mod rewards;
pub mod rng;
pub mod runner_host;
pub mod score;
pub mod service;
pub mod source;
pub mod suite;
pub mod tally;
pub mod timeouts;
pub mod variant;
pub mod worker;

/// The Docker client library, re-exported so callers use the same version.
pub use bollard;
/// The tree type `source::PythonSource` hands out, for callers that walk it.
pub use tree_sitter;
