//! The scoring daemon: a warm worker pool that outlives one `unitforge score`.
//!
//! A one-shot `unitforge score` spends most of its time starting workers (a container, Python,
//! pytest's imports) and calibrating them; the scoring itself is a fraction of a second. So the
//! first call starts a daemon in the background, as sccache and Gradle do, and later calls send
//! their pair to it over a Unix socket and pay only the scoring. The daemon scores with the same
//! [`Scorer`] an in-process call uses, so the report is the same.
//!
//! One daemon per configuration: the socket's name is a hash of this build's version and binary
//! (size, modification time), the sandbox image tag (which covers the runner and the protocol)
//! and the executor options, so a new build or other options never talk to an old daemon. The socket lives in a directory only
//! its user can enter (`$XDG_RUNTIME_DIR/unitforge`, else `/tmp/unitforge-<uid>`, mode 0700,
//! refused if anyone else owns it or can enter it), and the daemon also checks each peer's uid.
//! It exits after an idle timeout, on `unitforge daemon stop`, or on SIGTERM, and removes its
//! socket. The wire format is one JSON request line and one JSON reply line per connection.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::backend::BackendError;
use crate::executor::{ExecutorKind, ExecutorOptions};
use crate::image::sandbox_image_tag;
use crate::rewards::RewardConfig;
use crate::score::{ScoreInput, ScoreReport, Scorer};

/// How long a daemon waits for work before it exits.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Requests are a pair and a config: far below this; anything longer is not ours.
const MAX_REQUEST_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the daemon directory {0}: {1}")]
    Directory(PathBuf, String),
    #[error("no daemon answers on {0}")]
    NotRunning(PathBuf),
    #[error("the daemon on {0} broke off: {1}")]
    Protocol(PathBuf, String),
    #[error("the daemon did not start within {0:?} (its log: {1})")]
    StartTimeout(Duration, PathBuf),
}

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DaemonRequest {
    Score {
        input: ScoreInput,
        config: Box<RewardConfig>,
    },
    Status,
    Stop,
}

/// What a daemon answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum DaemonReply {
    Report {
        report: Box<ScoreReport>,
    },
    /// The score failed: `infrastructure` tells an infrastructure failure from unusable input.
    Error {
        infrastructure: bool,
        message: String,
    },
    Status {
        status: DaemonStatus,
    },
    Stopping,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonStatus {
    pub pid: u32,
    pub socket: PathBuf,
    pub version: String,
    pub executor: String,
    /// Docker: the sandbox image tag; local: the Python.
    pub runtime: String,
    pub workers: usize,
    pub started_unix_s: u64,
    pub scored: usize,
    pub idle_s: f64,
    pub idle_timeout_s: f64,
}

/// The directory holding this user's daemon sockets, created 0700 if missing, refused if another
/// user owns it or can enter it.
pub fn socket_dir() -> Result<PathBuf, DaemonError> {
    let uid = current_uid()?;
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("unitforge"),
        _ => std::env::temp_dir().join(format!("unitforge-{uid}")),
    };
    let fail = |why: String| DaemonError::Directory(dir.clone(), why);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(fail(err.to_string())),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(fail(format!(
            "must be a directory owned by uid {uid} with mode 0700 (found uid {}, mode {:o})",
            meta.uid(),
            meta.permissions().mode() & 0o7777
        )));
    }
    Ok(dir)
}

/// The socket of the daemon for `options` (see the module docs for what the name covers).
pub fn socket_path(options: &ExecutorOptions) -> Result<PathBuf, DaemonError> {
    let mut hasher = Sha256::new();
    // The local executor's Python as it resolves from here (the nearest .venv by default).
    let python = (options.kind == ExecutorKind::Local).then(|| {
        let python = crate::local::discover_python(options.python.as_deref());
        std::fs::canonicalize(&python)
            .unwrap_or(python)
            .display()
            .to_string()
    });
    // The running binary itself (size and modification time): a rebuilt `unitforge` with other
    // scoring code must not be answered by a daemon of the old one.
    let binary = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| format!("{}:{}", m.len(), m.mtime()))
        .unwrap_or_default();
    let identity = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "binary": binary,
        "image": options.image.clone().unwrap_or_else(sandbox_image_tag),
        "kind": format!("{:?}", options.kind),
        "workers": options.workers,
        "recycle_after": options.recycle_after,
        "python": python,
        "container": format!("{:?}", options.container),
        "runners": options.runners,
    });
    hasher.update(identity.to_string().as_bytes());
    let digest = hex::encode(hasher.finalize());
    Ok(socket_dir()?.join(format!("score-{}.sock", &digest[..16])))
}

/// Every daemon socket of this user (running daemons, or stale files of dead ones).
pub fn sockets() -> Result<Vec<PathBuf>, DaemonError> {
    let dir = socket_dir()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| DaemonError::Directory(dir.clone(), e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "sock"))
        .collect();
    found.sort();
    Ok(found)
}

fn current_uid() -> Result<u32, DaemonError> {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| DaemonError::Directory(PathBuf::from("/proc/self"), e.to_string()))
}

/// Send one request and read its reply.
pub async fn request(socket: &Path, request: &DaemonRequest) -> Result<DaemonReply, DaemonError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|_| DaemonError::NotRunning(socket.to_path_buf()))?;
    let broken = |e: std::io::Error| DaemonError::Protocol(socket.to_path_buf(), e.to_string());
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    write.write_all(&line).await.map_err(broken)?;
    let mut reply = String::new();
    BufReader::new(read)
        .read_line(&mut reply)
        .await
        .map_err(broken)?;
    serde_json::from_str(&reply)
        .map_err(|e| DaemonError::Protocol(socket.to_path_buf(), format!("unreadable reply: {e}")))
}

/// Score through the daemon on `socket`; a failure to reach it is a `DaemonError`, a failed score
/// the same [`BackendError`] an in-process score gives.
pub async fn score(
    socket: &Path,
    input: &ScoreInput,
    config: &RewardConfig,
) -> Result<Result<ScoreReport, BackendError>, DaemonError> {
    let reply = request(
        socket,
        &DaemonRequest::Score {
            input: input.clone(),
            config: Box::new(config.clone()),
        },
    )
    .await?;
    match reply {
        DaemonReply::Report { report } => Ok(Ok(*report)),
        DaemonReply::Error {
            infrastructure: true,
            message,
        } => Ok(Err(BackendError::Infrastructure(message))),
        DaemonReply::Error { message, .. } => Ok(Err(BackendError::Input(message))),
        other => Err(DaemonError::Protocol(
            socket.to_path_buf(),
            format!("unexpected reply {other:?}"),
        )),
    }
}

/// Whether a daemon answers on `socket`; it binds only once its pool is warm, so an answer also
/// means it is ready to score.
pub async fn answers(socket: &Path) -> bool {
    matches!(
        request(socket, &DaemonRequest::Status).await,
        Ok(DaemonReply::Status { .. })
    )
}

/// The daemon's side: serve `listener` with `scorer` until stopped or idle for `idle_timeout`.
/// The listener must already be bound to `socket`, which is removed on the way out.
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    scorer: Scorer,
    executor: ExecutorKind,
    runtime: String,
    idle_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let uid = current_uid().ok();
    let workers = scorer.pool().size();
    let state = Arc::new(State {
        scorer,
        started: Instant::now(),
        last_active_ms: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        scored: AtomicUsize::new(0),
        stop: Notify::new(),
        fixed: DaemonStatus {
            pid: std::process::id(),
            socket: socket.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            executor: executor.name().to_string(),
            runtime,
            workers,
            started_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            scored: 0,
            idle_s: 0.0,
            idle_timeout_s: idle_timeout.as_secs_f64(),
        },
    });
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // Only this user's processes may score here (the directory is 0700 as well).
                let peer = stream.peer_cred().ok().map(|c| c.uid());
                if uid.is_none() || peer != uid {
                    tracing::warn!("daemon: refused a connection from uid {peer:?}");
                    continue;
                }
                tokio::spawn(handle(stream, state.clone()));
            }
            _ = ticker.tick() => {
                if state.active.load(Ordering::SeqCst) == 0 && state.idle() >= idle_timeout {
                    tracing::info!("daemon: idle for {idle_timeout:?}; exiting");
                    break;
                }
            }
            _ = state.stop.notified() => break,
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    state.scorer.pool().shutdown(Duration::from_secs(5)).await;
}

struct State {
    scorer: Scorer,
    started: Instant,
    /// Milliseconds after `started` of the last request.
    last_active_ms: AtomicU64,
    active: AtomicUsize,
    scored: AtomicUsize,
    stop: Notify,
    /// What never changes while it runs; `status()` adds the counters.
    fixed: DaemonStatus,
}

impl State {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_active_ms.fetch_max(now, Ordering::SeqCst);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::SeqCst));
        self.started.elapsed().saturating_sub(last)
    }

    fn status(&self) -> DaemonStatus {
        DaemonStatus {
            scored: self.scored.load(Ordering::SeqCst),
            idle_s: self.idle().as_secs_f64(),
            ..self.fixed.clone()
        }
    }
}

async fn handle(stream: UnixStream, state: Arc<State>) {
    state.active.fetch_add(1, Ordering::SeqCst);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64);
    let reply = match reader.read_line(&mut line).await {
        Err(err) => DaemonReply::Error {
            infrastructure: false,
            message: format!("unreadable request: {err}"),
        },
        Ok(_) => match serde_json::from_str::<DaemonRequest>(&line) {
            Err(err) => DaemonReply::Error {
                infrastructure: false,
                message: format!("unreadable request: {err}"),
            },
            Ok(DaemonRequest::Status) => DaemonReply::Status {
                status: state.status(),
            },
            Ok(DaemonRequest::Stop) => {
                state.stop.notify_one();
                DaemonReply::Stopping
            }
            Ok(DaemonRequest::Score { input, config }) => {
                let result = state.scorer.score(&input, &config).await;
                state.scored.fetch_add(1, Ordering::SeqCst);
                // Only scoring counts as activity: `daemon status` must not keep it alive.
                state.touch();
                match result.map_err(BackendError::from) {
                    Ok(report) => DaemonReply::Report {
                        report: Box::new(report),
                    },
                    Err(err) => DaemonReply::Error {
                        infrastructure: err.is_infrastructure(),
                        message: match err {
                            BackendError::Input(m) | BackendError::Infrastructure(m) => m,
                        },
                    },
                }
            }
        },
    };
    let mut bytes = serde_json::to_vec(&reply).expect("replies serialise");
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
    state.active.fetch_sub(1, Ordering::SeqCst);
}
