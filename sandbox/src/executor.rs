//! Choosing and starting an executor: Docker (the default), remote runner hosts (a cluster with
//! no Docker socket: `unitforge runner` pods) or local processes (development).
//!
//! Everything that starts a worker pool goes through [`start_pool`], so the CLI, the service,
//! the benchmarks and the tests all get the same hardening and the same image checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::docker::{remove_stale_containers, ContainerLimits, DockerLauncher};
use crate::image::{ensure_image, sandbox_image_tag, ImageError};
use crate::local::{discover_python, LocalLauncher};
use crate::remote::RemoteLauncher;
use crate::worker::{InfraError, Launcher, WorkerPool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Hardened containers; untrusted code never runs on the host.
    #[default]
    Docker,
    /// Runner processes on the host: for development and benchmarks only.
    Local,
    /// Runners leased from `unitforge runner` hosts over TCP (remote.rs): each host is its own
    /// sandbox (a hardened pod), so nothing here needs a Docker socket.
    Remote,
}

impl ExecutorKind {
    /// `docker`, `local` or `remote`, as flags, reports and JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::Local => "local",
            ExecutorKind::Remote => "remote",
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
    /// Remote executor: the runner hosts, `host:port` each (a name may resolve to many).
    pub runners: Vec<String>,
    /// Remote executor: how long a lease waits for a free runner.
    pub lease_timeout: Duration,
}

/// A remote worker idle this long gives its runner back, so that an idle replica of the service
/// does not hold runners that another one needs.
pub const REMOTE_IDLE_RELEASE: Duration = Duration::from_secs(2);

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            kind: ExecutorKind::Docker,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            recycle_after: 500,
            python: None,
            image: None,
            container: ContainerLimits::default(),
            runners: Vec::new(),
            lease_timeout: Duration::from_secs(60),
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
    /// Docker: the image id; local: the Python path; remote: the runners' Python and pytest.
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
        ExecutorKind::Remote => {
            let launcher = RemoteLauncher::new(options.runners.clone(), options.lease_timeout)?;
            let pool = WorkerPool::new(Arc::new(launcher), options.workers, options.recycle_after)
                .with_idle_release(REMOTE_IDLE_RELEASE);
            // The runners' greeting names the runtime in cache keys. Warming up is what the
            // scorer does first anyway; here it also checks the runners' protocol version.
            let hello = pool.warm_up().await?;
            let identity = ExecutorIdentity {
                kind: ExecutorKind::Remote,
                runtime: format!(
                    "remote: python {} pytest {} protocol v{}",
                    hello.python, hello.pytest, hello.v
                ),
            };
            return Ok((Arc::new(pool), identity));
        }
    };
    let pool = Arc::new(WorkerPool::new(
        launcher,
        options.workers,
        options.recycle_after,
    ));
    Ok((pool, identity))
}
