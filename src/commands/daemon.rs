//! `unitforge daemon status|stop` and the hidden `daemon run`, and the client half that
//! `unitforge score` uses: reach the background scorer for this configuration, or start it and
//! wait until its pool is warm. The daemon itself is `unitforge_sandbox::daemon`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use unitforge_sandbox::backend::{start_scorer, BackendError};
use unitforge_sandbox::daemon::{self, DaemonError, DaemonReply, DaemonRequest};
use unitforge_sandbox::executor::ExecutorKind;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::{ScoreInput, ScoreReport};

use super::notice;
use crate::cli::{DaemonCommand, DaemonRunArgs, ExecutorArgs, ExecutorChoice};

/// How long a client waits for a new daemon's pool to be warm before scoring in-process.
const START_LIMIT: Duration = Duration::from_secs(120);

pub async fn run(command: DaemonCommand) -> Result<()> {
    match command {
        DaemonCommand::Status { json } => status(json).await,
        DaemonCommand::Stop => stop().await,
        DaemonCommand::Run(args) => be_the_daemon(args).await,
    }
}

async fn status(json: bool) -> Result<()> {
    let mut running = Vec::new();
    for socket in daemon::sockets()? {
        match daemon::request(&socket, &DaemonRequest::Status).await {
            Ok(DaemonReply::Status { status }) => running.push(status),
            // A socket nobody answers on is left by a daemon that was killed.
            _ => {
                let _ = std::fs::remove_file(&socket);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&running)?);
        return Ok(());
    }
    if running.is_empty() {
        println!("no background scorer is running (the next `unitforge score` starts one)");
        return Ok(());
    }
    println!(
        "{:>8} {:<7} {:>7} {:>7} {:>9} {:>9}  socket",
        "pid", "kind", "workers", "scored", "idle s", "timeout s"
    );
    for s in &running {
        println!(
            "{:>8} {:<7} {:>7} {:>7} {:>9.0} {:>9.0}  {}",
            s.pid,
            s.executor,
            s.workers,
            s.scored,
            s.idle_s,
            s.idle_timeout_s,
            s.socket.display()
        );
    }
    Ok(())
}

async fn stop() -> Result<()> {
    let stopped = stop_daemons(daemon::sockets()?).await;
    println!("stopped {stopped} background scorer(s)");
    Ok(())
}

/// Ask the daemons behind `sockets` to stop and wait until each has removed its socket; a socket
/// nobody answers on is removed. Returns how many stopped.
pub async fn stop_daemons(sockets: impl IntoIterator<Item = std::path::PathBuf>) -> usize {
    let mut stopped = 0;
    for socket in sockets {
        if let Ok(DaemonReply::Stopping) = daemon::request(&socket, &DaemonRequest::Stop).await {
            stopped += 1;
            // Wait for it to stop its workers and remove its socket.
            let deadline = Instant::now() + Duration::from_secs(15);
            while socket.exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            let _ = std::fs::remove_file(&socket);
        }
    }
    stopped
}

/// The daemon process: warm a pool, then bind the socket (so a client that reaches it never
/// waits for workers) and serve until idle, stopped or signalled.
async fn be_the_daemon(args: DaemonRunArgs) -> Result<()> {
    if daemon::answers(&args.socket).await {
        eprintln!("another daemon already serves {}", args.socket.display());
        return Ok(());
    }
    let options = args.executor.options();
    let (scorer, identity) = start_scorer(&options, &notice).await?;
    let _ = std::fs::remove_file(&args.socket);
    let listener = match tokio::net::UnixListener::bind(&args.socket) {
        Ok(listener) => listener,
        Err(err) => {
            // Another daemon for the same configuration won the race.
            scorer.pool().shutdown(Duration::ZERO).await;
            return Err(err).with_context(|| format!("cannot bind {}", args.socket.display()));
        }
    };
    let runtime = match options.kind {
        ExecutorKind::Docker => options
            .image
            .clone()
            .unwrap_or_else(unitforge_sandbox::image::sandbox_image_tag),
        ExecutorKind::Local | ExecutorKind::Remote => identity.runtime.clone(),
    };
    eprintln!(
        "unitforge daemon {}: {} workers ({:?}), socket {}, idle timeout {} s",
        std::process::id(),
        scorer.pool().size(),
        options.kind,
        args.socket.display(),
        args.idle_timeout
    );
    daemon::serve(
        listener,
        args.socket.clone(),
        scorer,
        options.kind,
        runtime,
        Duration::from_secs(args.idle_timeout),
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await;
    eprintln!("unitforge daemon {}: stopped", std::process::id());
    Ok(())
}

/// Score through the background scorer for `executor`'s configuration, starting it if none
/// runs. `Ok(None)` when no daemon could be reached or started: the caller scores in-process.
pub async fn score_through_daemon(
    executor: &ExecutorArgs,
    idle_timeout_s: u64,
    input: &ScoreInput,
    config: &RewardConfig,
) -> Result<Option<Result<ScoreReport, BackendError>>> {
    let socket = match daemon::socket_path(&executor.options()) {
        Ok(socket) => socket,
        Err(err) => {
            notice(&format!(
                "no background scorer ({err}); scoring in this process"
            ));
            return Ok(None);
        }
    };
    match daemon::score(&socket, input, config).await {
        Ok(result) => return Ok(Some(result)),
        Err(DaemonError::NotRunning(_)) => {}
        Err(err) => {
            notice(&format!("{err}; scoring in this process"));
            return Ok(None);
        }
    }
    if matches!(executor.executor, ExecutorChoice::Docker) {
        // A missing image is built here, in the foreground, where its progress shows.
        super::ensure_sandbox_image(executor.image.as_deref()).await?;
    }
    let log = socket.with_extension("log");
    let mut child = match spawn(&socket, &log, executor, idle_timeout_s) {
        Ok(child) => child,
        Err(err) => {
            notice(&format!("{err:#}; scoring in this process"));
            return Ok(None);
        }
    };
    notice(&format!(
        "started a background scorer (pid {}; later `unitforge score` calls reuse it; `unitforge daemon stop` ends it)",
        child.id()
    ));
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if daemon::answers(&socket).await {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            // It lost a race to another daemon of the same configuration, or failed to start.
            if daemon::answers(&socket).await {
                break;
            }
            notice(&format!(
                "the background scorer exited ({status}): {}; scoring in this process",
                last_line(&log)
            ));
            return Ok(None);
        }
        if Instant::now() > deadline {
            notice(&format!(
                "{}; scoring in this process",
                DaemonError::StartTimeout(START_LIMIT, log.clone())
            ));
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match daemon::score(&socket, input, config).await {
        Ok(result) => Ok(Some(result)),
        Err(err) => {
            notice(&format!("{err}; scoring in this process"));
            Ok(None)
        }
    }
}

/// Start `unitforge daemon run` detached from this terminal's process group (Ctrl-C here does not
/// reach it), its output in `log`.
fn spawn(socket: &Path, log: &Path, executor: &ExecutorArgs, idle_timeout_s: u64) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log_file = std::fs::File::create(log)
        .with_context(|| format!("cannot create the daemon log {}", log.display()))?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["daemon", "run", "--socket"])
        .arg(socket)
        .args(["--idle-timeout", &idle_timeout_s.to_string()])
        .args(executor.flags())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0);
    command
        .spawn()
        .context("cannot start `unitforge daemon run`")
}

fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("see {}", log.display()))
}
