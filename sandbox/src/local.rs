//! The local executor: runner processes on this machine, for development and benchmarks.
//!
//! It applies everything the runner itself enforces (rlimits, audit hooks, process-group kill,
//! hidden CUT source) but not the container boundary, so untrusted model output should go to
//! the Docker executor. Also here: finding a Python that has pytest, and the runner script,
//! which is compiled into the binary and written out at start so an installed `unitforge`
//! needs no source tree.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::worker::{BoxFuture, InfraError, Launcher, WorkerIo};

/// The runner, as shipped with this crate.
pub const RUNNER_SOURCE: &str = include_str!("../runner/unitforge_runner.py");
pub const RUNNER_FILE_NAME: &str = "unitforge_runner.py";

/// Where to find a Python with pytest: `explicit`, else `$UNITFORGE_PYTHON`, else the nearest
/// `.venv/bin/python` in this directory or a parent, else `python3` on the PATH.
pub fn discover_python(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = std::env::var_os("UNITFORGE_PYTHON") {
        return PathBuf::from(path);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join(".venv/bin/python");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from("python3")
}

/// Starts runner processes with a cleared environment, each in its own scratch directory.
pub struct LocalLauncher {
    python: PathBuf,
    scratch: tempfile::TempDir,
    runner: PathBuf,
}

impl LocalLauncher {
    pub fn new(python: PathBuf) -> Result<Self, InfraError> {
        let scratch = tempfile::Builder::new()
            .prefix("unitforge-local-")
            .tempdir()
            .map_err(|e| InfraError::Launch(format!("cannot create a scratch directory: {e}")))?;
        let runner = scratch.path().join(RUNNER_FILE_NAME);
        std::fs::write(&runner, RUNNER_SOURCE)
            .map_err(|e| InfraError::Launch(format!("cannot write the runner: {e}")))?;
        Ok(Self {
            python,
            scratch,
            runner,
        })
    }

    pub fn python(&self) -> &Path {
        &self.python
    }
}

/// Keep the last lines a worker wrote to stderr, and log them.
pub fn forward_stderr(
    stderr: impl tokio::io::AsyncRead + Send + Unpin + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "unitforge::runner", "{line}");
            let mut tail = tail.lock().expect("stderr tail lock");
            if tail.len() == 8 {
                tail.pop_front();
            }
            tail.push_back(line.chars().take(300).collect());
        }
    });
}

impl Launcher for LocalLauncher {
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<WorkerIo, InfraError>> {
        Box::pin(async move {
            let root = tempfile::Builder::new()
                .prefix(&format!("worker-{slot}-"))
                .tempdir_in(self.scratch.path())
                .map_err(|e| {
                    InfraError::Launch(format!("cannot create a worker directory: {e}"))
                })?;
            let mut child = Command::new(&self.python)
                .arg("-I")
                .arg("-B")
                .arg(&self.runner)
                .arg(root.path())
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("LANG", "C.UTF-8")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    InfraError::Launch(format!("cannot start {}: {e}", self.python.display()))
                })?;
            let input = child.stdin.take().expect("stdin is piped");
            let output = child.stdout.take().expect("stdout is piped");
            let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
            forward_stderr(
                child.stderr.take().expect("stderr is piped"),
                stderr_tail.clone(),
            );
            Ok(WorkerIo {
                input: Box::new(input),
                output: Box::new(output),
                keepalive: Box::new((child, root)),
                stderr_tail,
            })
        })
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
