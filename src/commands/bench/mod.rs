//! `unitforge bench …`: figures printed side by side with a reference in one run, never
//! asserted. One file per bench (`score`, `oneshot`, `serve`, `train`), the references they
//! print beside unitforge (`reference`: mutmut, a cold pytest), and the shipped pairs they load.

mod grpo;
mod llama_cpp;
mod oneshot;
mod pairs;
mod reference;
mod score;
mod serve;
mod train;

use anyhow::Result;

use super::runtime;
use crate::cli::BenchCommand;

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Score(args) => runtime()?.block_on(score::bench_score(args)),
        BenchCommand::Serve(args) => runtime()?.block_on(serve::bench_serve(args)),
        // The oneshot bench stops the background scorers it started through the runtime.
        BenchCommand::Oneshot(args) => runtime()?
            .block_on(async { tokio::task::block_in_place(|| oneshot::bench_oneshot(args)) }),
        BenchCommand::Train(args) => train::bench_train(args),
        // GRPO's reward backend runs a runtime of its own.
        BenchCommand::Grpo(args) => grpo::bench_grpo(args),
    }
}
