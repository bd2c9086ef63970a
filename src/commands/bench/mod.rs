//! `unitforge bench …`: figures printed side by side with a reference in one run, never
//! asserted. One file per bench (`score`, `oneshot`, `serve`, `train`), the references they
//! print beside unitforge (`reference`: mutmut, a cold pytest), and the shipped pairs they load.

mod oneshot;
mod pairs;
mod reference;
mod score;
mod serve;
mod train;

use anyhow::Result;

use crate::cli::BenchCommand;

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Score(args) => score::bench_score(args).await,
        BenchCommand::Serve(args) => serve::bench_serve(args).await,
        BenchCommand::Train(args) => tokio::task::block_in_place(|| train::bench_train(args)),
        BenchCommand::Oneshot(args) => tokio::task::block_in_place(|| oneshot::bench_oneshot(args)),
    }
}
