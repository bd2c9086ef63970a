//! `unitforge`: the command-line front end. Parses arguments, calls the libraries, prints.
//!
//! Everything of substance lives in the `unitforge-sandbox` and `unitforge-trainer` crates;
//! this binary only wires them to files, flags, progress bars and exit codes. A reader starts
//! here: `cli.rs` lists every command and flag, and each command's body is in `commands/`:
//!
//! - `commands/sandbox.rs` — score, serve, health, mutants, variants, image, doctor
//! - `commands/daemon.rs` — the background scorer `score` starts and reuses: daemon status, stop
//! - `commands/train.rs` — train (sft, distill, grpo), init-model, import-gguf, adapter,
//!   teacher-logprobs
//! - `commands/eval.rs` — generate, eval
//! - `commands/data.rs` — data from-pairs, data generate
//! - `commands/bench/` — bench score, serve, oneshot, train, grpo (one file each)
//!
//! `render.rs` draws the human tables. Exit status: 0 on success, 2 with a message on stderr
//! for anything that stopped a command.

mod cli;
mod commands;
mod render;

use clap::Parser;

use cli::{BenchCommand, Cli, Command};
use commands::{bench, daemon, data, eval, runtime, sandbox, train};

fn main() -> std::process::ExitCode {
    // Before any thread exists: the variables are read once, by candle's and rayon's first use.
    unitforge_trainer::device::settle_cpu_threads();
    unitforge_trainer::device::keep_freed_memory_for_reuse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UNITFORGE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    // `bench grpo` trains: it keeps the training loop's stop (finish the step, checkpoint), as
    // `train grpo` does; a process has one signal handler.
    let trains = matches!(command, Command::Bench(BenchCommand::Grpo(_)));
    if matches!(
        command,
        Command::Eval(_) | Command::Generate(_) | Command::Data(_) | Command::Bench(_)
    ) && !trains
    {
        commands::remove_sandboxes_when_stopped();
    }
    let result = match command {
        Command::Score(args) => runtime().and_then(|rt| rt.block_on(sandbox::score(args))),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(sandbox::serve(args))),
        Command::Runner(args) => runtime().and_then(|rt| rt.block_on(sandbox::runner(args))),
        Command::Health(args) => runtime().and_then(|rt| rt.block_on(sandbox::health(args))),
        Command::Mutants(args) => sandbox::mutants(args),
        Command::Variants(args) => sandbox::variants(args),
        Command::Image(command) => runtime().and_then(|rt| rt.block_on(sandbox::image(command))),
        Command::Daemon(command) => runtime().and_then(|rt| rt.block_on(daemon::run(command))),
        Command::Doctor(args) => runtime().and_then(|rt| rt.block_on(sandbox::doctor(args))),
        Command::InitModel(args) => train::init_model(&args),
        Command::ImportGguf(args) => train::import_gguf(&args),
        Command::Adapter(command) => train::adapter(&command),
        Command::Train(command) => train::train(&command),
        Command::TeacherLogprobs(args) => train::teacher_logprobs(&args),
        Command::Generate(args) => eval::generate(&args),
        Command::Eval(command) => eval::run(&command),
        Command::Data(command) => data::run(command),
        Command::Bench(command) => bench::run(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
