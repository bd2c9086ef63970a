//! The bodies of the `unitforge` commands, one file per family, and the few helpers they share
//! (reading inputs, progress bars, the async runtime). Each body parses nothing and decides
//! nothing a library should own: it reads files, calls the sandbox or trainer, and prints.

pub mod bench;
pub mod daemon;
pub mod data;
pub mod eval;
pub mod sandbox;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use unitforge_sandbox::backend::{BackendOptions, RewardBackend};
use unitforge_sandbox::rewards::RewardConfig;

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn read_source(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `explicit`, else the file stem of `path` (the name tests import a module file by).
pub fn module_name(path: &Path, explicit: Option<&str>) -> Result<String> {
    if let Some(name) = explicit {
        return Ok(name.to_string());
    }
    path.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string)
        .with_context(|| format!("cannot take a module name from {}", path.display()))
}

/// The reward config in `path`, or the built-in defaults (docs/rewards.md).
pub fn load_reward_config(path: Option<&Path>) -> Result<RewardConfig> {
    Ok(match path {
        Some(path) => RewardConfig::from_yaml_file(path)?,
        None => RewardConfig::default(),
    })
}

/// Lines a backend has to say while starting (image build progress, the local executor's
/// warning) go to standard error, so standard output stays the command's result.
pub fn notice(line: &str) {
    eprintln!("  {line}");
}

/// Start a reward backend, with its start-up lines on standard error.
pub async fn start_backend(options: &BackendOptions) -> Result<RewardBackend> {
    Ok(RewardBackend::start(options, &notice).await?)
}

/// A progress bar on standard error over `len` items called `items`.
pub fn progress_bar(len: usize, items: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {items}  {{elapsed}} elapsed, ~{{eta}} left"
        ))
        .expect("valid template"),
    );
    bar
}

pub fn connect_docker() -> Result<unitforge_sandbox::bollard::Docker> {
    unitforge_sandbox::bollard::Docker::connect_with_local_defaults()
        .context("cannot reach the Docker engine")
}

/// For the commands that hold sandbox containers without a stop path of their own (eval,
/// generate, data, bench): on Ctrl-C, SIGTERM or SIGHUP, remove this process's sandbox
/// containers, then end with status 130. Otherwise a stopped run's warm containers stay up until
/// the next start reaps them as stale. Training has its own handler (finish the step, write a
/// checkpoint, shut the pool down); the service and the scorer drain on their own signals.
pub fn remove_sandboxes_when_stopped() {
    let installed = ctrlc::set_handler(|| {
        eprintln!("\nstopped: removing this run's sandbox containers");
        let removed = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .and_then(|runtime| {
                let docker = connect_docker().ok()?;
                runtime
                    .block_on(unitforge_sandbox::docker::stop_process_containers(&docker))
                    .ok()
            });
        match removed {
            Some(count) => eprintln!("removed {count} sandbox containers"),
            None => eprintln!("could not reach the Docker engine; the next start removes them"),
        }
        std::process::exit(130);
    });
    if let Err(err) = installed {
        tracing::debug!(%err, "no stop-signal handler");
    }
}

/// Build the sandbox image `image` (default: this build's tag) if the engine lacks it.
pub async fn ensure_sandbox_image(image: Option<&str>) -> Result<()> {
    let docker = connect_docker()?;
    let tag = image.map_or_else(unitforge_sandbox::image::sandbox_image_tag, str::to_string);
    unitforge_sandbox::image::ensure_image(&docker, &tag, &notice).await?;
    Ok(())
}

/// Write `text` to `path`, creating its folder.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Write `rows` as JSON lines to `path`.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut text = String::new();
    for row in rows {
        text += &serde_json::to_string(row)?;
        text.push('\n');
    }
    write_file(path, &text)
}

/// Write `value` as pretty JSON to `path`.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_file(path, &(serde_json::to_string_pretty(value)? + "\n"))
}
