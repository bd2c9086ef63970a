//! The Docker executor: each worker is a long-lived, hardened container running the runner as
//! a fork server, reached over the container's attached stdin/stdout.
//!
//! Hardening applied to every container: no network, read-only root filesystem, size-capped
//! tmpfs for the work dir and /tmp, memory limit with swap equal to memory, pids limit, CPU
//! quota, every capability dropped, no-new-privileges, the engine's default seccomp profile,
//! a non-root uid, an init process to reap orphans, and ulimits. Inside, the runner applies its
//! per-run rlimits and wall timeout and, after every run, kills every other process of the
//! sandbox uid and wipes the work dir. A container that misbehaves (dies, hangs, breaks the
//! protocol, is OOM-killed) is dropped by the pool, which removes it and starts a fresh one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::worker::{BoxFuture, InfraError, Launcher, WorkerIo};

/// The label every sandbox container carries, with the launcher's instance id as value.
pub const POOL_LABEL: &str = "org.unitforge.pool";
/// The label naming the host (the UTS namespace: a container's is its short id) whose process
/// owns a sandbox container, so that stale-container cleanup judges only owners it can see.
pub const OWNER_HOST_LABEL: &str = "org.unitforge.owner-host";

/// This process's host name (a container's short id inside a container).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// Container-level limits (the runner's per-run rlimits come from the reward config).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerLimits {
    /// Memory of the whole container; keep it above the per-run address-space limit plus the
    /// runner (~60 MiB) so that a memory bomb hits its rlimit, not the OOM killer.
    pub memory_mb: i64,
    pub pids: i64,
    /// CPU quota in CPUs.
    pub cpus: f64,
    pub work_tmpfs_mb: u64,
    pub tmp_tmpfs_mb: u64,
    pub open_files: i64,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            memory_mb: 1536,
            pids: 64,
            cpus: 1.0,
            work_tmpfs_mb: 64,
            tmp_tmpfs_mb: 16,
            open_files: 512,
        }
    }
}

/// The hardened container configuration for `image`.
pub fn container_config(
    image: &str,
    limits: &ContainerLimits,
    instance: &str,
) -> ContainerCreateBody {
    let tmpfs = HashMap::from([
        // Owned by the sandbox user: `/work` exists in the image, and the engine keeps the image
        // directory's owner and mode over a `mode=` option.
        (
            "/work".to_string(),
            format!(
                "rw,nosuid,nodev,noexec,size={}m,uid=10001,gid=10001,mode=0700",
                limits.work_tmpfs_mb
            ),
        ),
        (
            "/tmp".to_string(),
            format!(
                "rw,nosuid,nodev,noexec,size={}m,mode=1777",
                limits.tmp_tmpfs_mb
            ),
        ),
    ]);
    let memory = limits.memory_mb << 20;
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["--container".into(), "/work".into()]),
        user: Some("10001:10001".into()),
        working_dir: Some("/work".into()),
        env: Some(vec!["LANG=C.UTF-8".into()]),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(false),
        tty: Some(false),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            (POOL_LABEL.to_string(), instance.to_string()),
            (OWNER_HOST_LABEL.to_string(), host_name()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            memory: Some(memory),
            memory_swap: Some(memory),
            pids_limit: Some(limits.pids),
            nano_cpus: Some((limits.cpus * 1e9) as i64),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            init: Some(true),
            ulimits: Some(vec![
                ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(limits.open_files),
                    hard: Some(limits.open_files),
                },
                ResourcesUlimits {
                    name: Some("core".into()),
                    soft: Some(0),
                    hard: Some(0),
                },
            ]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Starts worker containers from one image.
pub struct DockerLauncher {
    docker: Docker,
    image: String,
    limits: ContainerLimits,
    instance: String,
    started: AtomicU64,
    live: Arc<Mutex<HashSet<String>>>,
}

impl DockerLauncher {
    pub fn new(docker: Docker, image: String, limits: ContainerLimits) -> Self {
        let instance = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        Self {
            docker,
            image,
            limits,
            instance,
            started: AtomicU64::new(0),
            live: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    pub fn image(&self) -> &str {
        &self.image
    }

    /// Ids of the containers this launcher started and has not removed yet.
    pub fn live_containers(&self) -> Vec<String> {
        self.live
            .lock()
            .expect("live lock")
            .iter()
            .cloned()
            .collect()
    }

    async fn start_container(&self, slot: usize) -> Result<WorkerIo, InfraError> {
        // Counted before the check, so that a stop either sees this launch or stops it.
        LAUNCHING.fetch_add(1, Ordering::SeqCst);
        let _launch = LaunchUnderWay;
        if STOPPING.load(Ordering::SeqCst) {
            return Err(InfraError::Launch(
                "this process is stopping: no new sandbox container".into(),
            ));
        }
        let serial = self.started.fetch_add(1, Ordering::Relaxed);
        let name = format!("unitforge-{}-{slot}-{serial}", self.instance);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(
                Some(options),
                container_config(&self.image, &self.limits, &self.instance),
            )
            .await
            .map_err(|e| {
                InfraError::Launch(format!(
                    "creating a sandbox container from {}: {e}",
                    self.image
                ))
            })?;
        let id = created.id;
        self.live.lock().expect("live lock").insert(id.clone());
        let guard = ContainerGuard {
            docker: self.docker.clone(),
            id: id.clone(),
            live: self.live.clone(),
        };
        // Attach before starting, so not a byte of the greeting is missed.
        let attach = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = self
            .docker
            .attach_container(&id, Some(attach))
            .await
            .map_err(|e| InfraError::Launch(format!("attaching to {name}: {e}")))?;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| InfraError::Launch(format!("starting {name}: {e}")))?;
        let (reader, mut writer) = tokio::io::duplex(1 << 20);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        let mut output = attached.output;
        tokio::spawn(async move {
            // Demultiplex the attach stream: stdout carries the protocol, stderr is logged.
            while let Some(frame) = output.next().await {
                match frame {
                    Ok(bollard::container::LogOutput::StdOut { message }) => {
                        if writer.write_all(&message).await.is_err() {
                            break;
                        }
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        for line in String::from_utf8_lossy(&message).lines() {
                            tracing::debug!(target: "unitforge::runner", container = %name, "{line}");
                            let mut tail = tail.lock().expect("stderr tail lock");
                            if tail.len() == 8 {
                                tail.pop_front();
                            }
                            tail.push_back(line.chars().take(300).collect());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(WorkerIo {
            input: Box::new(PinnedWriter(attached.input)),
            output: Box::new(reader),
            keepalive: Box::new(guard),
            stderr_tail,
        })
    }

    /// Remove every container this launcher started (graceful shutdown).
    pub async fn remove_all(&self) {
        for id in self.live_containers() {
            remove_container(&self.docker, &id).await;
            self.live.lock().expect("live lock").remove(&id);
        }
    }
}

/// `AsyncWrite` for bollard's pinned, boxed writer.
struct PinnedWriter(std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>);

impl tokio::io::AsyncWrite for PinnedWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

pub async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        // Already gone.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        // Another removal of it is under way (a dropped worker's guard): wait for it to end, so
        // that a shutdown that returns has really removed its containers.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            for _ in 0..REMOVAL_POLLS {
                let filters = HashMap::from([("id".to_string(), vec![id.to_string()])]);
                let listed = docker
                    .list_containers(Some(
                        ListContainersOptionsBuilder::default()
                            .all(true)
                            .filters(&filters)
                            .build(),
                    ))
                    .await;
                if listed.map_or(true, |found| found.is_empty()) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            tracing::warn!(container = id, "a sandbox container's removal did not end");
        }
        Err(err) => {
            tracing::warn!(container = id, %err, "could not remove a sandbox container");
        }
    }
}

/// How many times (100 ms apart) a removal under way elsewhere is checked for its end.
const REMOVAL_POLLS: usize = 100;

/// Removes its container when the worker is dropped (replaced, recycled or shut down).
struct ContainerGuard {
    docker: Docker,
    id: String,
    live: Arc<Mutex<HashSet<String>>>,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let (docker, id, live) = (self.docker.clone(), self.id.clone(), self.live.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                remove_container(&docker, &id).await;
                live.lock().expect("live lock").remove(&id);
            });
        }
    }
}

impl Launcher for DockerLauncher {
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<WorkerIo, InfraError>> {
        Box::pin(self.start_container(slot))
    }

    fn name(&self) -> &'static str {
        "docker"
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.remove_all())
    }
}

/// A sandbox container and its owner, from its labels: the pid of the process whose pool
/// started it and that process's host name (absent on containers of older builds).
struct OwnedContainer {
    id: String,
    owner_pid: Option<u32>,
    owner_host: Option<String>,
}

/// Every sandbox container, running or not, with its owner.
async fn sandbox_containers(
    docker: &Docker,
) -> Result<Vec<OwnedContainer>, bollard::errors::Error> {
    let filters = HashMap::from([("label".to_string(), vec![POOL_LABEL.to_string()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    Ok(docker
        .list_containers(Some(options))
        .await?
        .into_iter()
        .filter_map(|container| {
            let labels = container.labels.unwrap_or_default();
            Some(OwnedContainer {
                id: container.id?,
                owner_pid: labels
                    .get(POOL_LABEL)
                    .and_then(|instance| instance.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok()),
                owner_host: labels.get(OWNER_HOST_LABEL).cloned(),
            })
        })
        .collect())
}

/// Remove sandbox containers left behind by processes that no longer exist (a crash, a kill -9):
/// an owner on this host whose pid is gone, or an owner inside a container that no longer runs.
/// Owners this process cannot see (another host's, another live container's) are left alone, so
/// a containerised service and the host's own scorers never remove each other's containers.
pub async fn remove_stale_containers(docker: &Docker) -> Result<usize, bollard::errors::Error> {
    let sandboxes = sandbox_containers(docker).await?;
    // Owners in another host namespace are judged by whether their container still runs.
    let running: Vec<String> = docker
        .list_containers(Some(ListContainersOptionsBuilder::default().build()))
        .await?
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    let here = host_name();
    let mut removed = 0;
    for container in sandboxes {
        let owner_alive = match container.owner_host.as_ref().filter(|h| **h != here) {
            // Another namespace: a container whose id starts with the host name, still
            // running; a host name that is no container id we cannot judge, so it stays.
            Some(host) => {
                let container_id = host.len() >= 12 && host.chars().all(|c| c.is_ascii_hexdigit());
                !container_id || running.iter().any(|id| id.starts_with(host.as_str()))
            }
            None => container
                .owner_pid
                .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()),
        };
        if !owner_alive {
            remove_container(docker, &container.id).await;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Set once this process is stopping: no sandbox container is started after it.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Container launches under way in this process.
static LAUNCHING: AtomicUsize = AtomicUsize::new(0);

/// Marks one launch under way for as long as it lives.
struct LaunchUnderWay;

impl Drop for LaunchUnderWay {
    fn drop(&mut self) {
        LAUNCHING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stop this process's sandbox containers for good, for a stop signal's handler just before
/// the process ends: no new container is started (a pool would replace the removed ones), the
/// launches under way are waited for (up to 10 s), and every sandbox container this process
/// started (its pid and host name on the labels) is removed, whichever pool started it; how
/// many. The pools' own shutdown (the backend's `Drop`, a worker's guard) never runs when a
/// signal ends the process, and the containers would otherwise stay up until another start
/// reaps them as stale.
pub async fn stop_process_containers(docker: &Docker) -> Result<usize, bollard::errors::Error> {
    STOPPING.store(true, Ordering::SeqCst);
    for _ in 0..REMOVAL_POLLS {
        if LAUNCHING.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (pid, here) = (std::process::id(), host_name());
    let mine: Vec<OwnedContainer> = sandbox_containers(docker)
        .await?
        .into_iter()
        .filter(|c| c.owner_pid == Some(pid) && c.owner_host.as_ref().is_none_or(|h| *h == here))
        .collect();
    for container in &mine {
        remove_container(docker, &container.id).await;
    }
    Ok(mine.len())
}
