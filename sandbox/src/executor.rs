//! Choosing and starting an executor: Docker (the default) or local processes (development).
//!
//! Everything that starts a worker pool goes through [`start_pool`], so the CLI, the service,
//! the benchmarks and the tests all get the same hardening and the same image checks.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::docker::{remove_stale_containers, ContainerLimits, DockerLauncher};
use crate::image::{ensure_image, sandbox_image_tag, ImageError};
use crate::local::{discover_python, LocalLauncher};
use crate::worker::{InfraError, Launcher, WorkerPool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Hardened containers; untrusted code never runs on the host.
    #[default]
    Docker,
    /// Runner processes on the host: for development and benchmarks only.
    Local,
}

impl ExecutorKind {
    /// `docker` or `local`, as flags, reports and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::Local => "local",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub kind: ExecutorKind,
    /// Workers (containers or processes) serving runs in parallel.
    pub workers: usize,
    /// Replace a worker after this many runs.
    pub recycle_after: u64,
    /// Local executor: the Python with pytest (default: see `discover_python`).
    pub python: Option<PathBuf>,
    /// Docker executor: the image (default: the tag derived from this build's runner).
    pub image: Option<String>,
    pub container: ContainerLimits,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            kind: ExecutorKind::Docker,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            recycle_after: 500,
            python: None,
            image: None,
            container: ContainerLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot reach the Docker engine ({0}); is it running? `unitforge doctor` checks")]
    Engine(bollard::errors::Error),
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// What a started pool runs on, for reports and cache keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecutorIdentity {
    pub kind: ExecutorKind,
    /// Docker: the image id; local: the Python path.
    pub runtime: String,
}

/// Start a worker pool of the chosen kind. For Docker, stale sandbox containers are removed and
/// the image is built if missing (`progress` gets the build's lines).
pub async fn start_pool(
    options: &ExecutorOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Arc<WorkerPool>, ExecutorIdentity), ExecutorError> {
    let (launcher, identity): (Arc<dyn Launcher>, ExecutorIdentity) = match options.kind {
        ExecutorKind::Local => {
            let python = discover_python(options.python.as_deref());
            let identity = ExecutorIdentity {
                kind: ExecutorKind::Local,
                runtime: python.display().to_string(),
            };
            (Arc::new(LocalLauncher::new(python)?), identity)
        }
        ExecutorKind::Docker => {
            let docker =
                bollard::Docker::connect_with_local_defaults().map_err(ExecutorError::Engine)?;
            docker.ping().await.map_err(ExecutorError::Engine)?;
            match remove_stale_containers(&docker).await {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(removed, "removed sandbox containers left by earlier runs")
                }
                Err(err) => tracing::warn!(%err, "could not list stale sandbox containers"),
            }
            let tag = options.image.clone().unwrap_or_else(sandbox_image_tag);
            let image_id = ensure_image(&docker, &tag, progress).await?;
            let identity = ExecutorIdentity {
                kind: ExecutorKind::Docker,
                runtime: image_id,
            };
            (
                Arc::new(DockerLauncher::new(docker, tag, options.container.clone())),
                identity,
            )
        }
    };
    let pool = Arc::new(WorkerPool::new(
        launcher,
        options.workers,
        options.recycle_after,
    ));
    Ok((pool, identity))
}
