//! `unitforge runner`: the fork-server runner as a container's own process, leased over TCP.
//!
//! Where no Docker socket may be mounted (a Kubernetes pod), the sandbox is the pod itself and
//! this host is its main process. It keeps one runner (`runner/unitforge_runner.py`) started
//! and waiting, and hands it to one client at a time: a **lease** is one TCP connection, which
//! first reads a [`LeaseLine`] and then speaks the ordinary runner protocol (docs/protocol.md)
//! until it closes. A client that connects while a lease is held (or while the host resets) reads
//! `{"op":"busy"}` and goes to another runner. Between leases the host resets: the runner's whole
//! process tree killed, every process that outlived it (one that left the tree: `setsid`, a
//! double fork) killed, the work directory wiped, a fresh runner started. A lease after which
//! anything outlived the runner, or whose directory could not be wiped, is **tainted**: the host
//! cleans up and exits ([`RunnerExit::Tainted`], status 3), so that the orchestrator restarts the
//! pod rather than trust it again.
//!
//! As PID 1 (a container's own process) the runner starts with `--container`, which after every
//! run kills every process but itself and init; orphans are reparented to this host, which reaps
//! them. Elsewhere (tests, a host process) the host makes itself the child subreaper, so that an
//! escaped process is still found among its children.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::local::{RUNNER_FILE_NAME, RUNNER_SOURCE};

/// The first line of every connection to a runner host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LeaseLine {
    /// The connection holds the runner: the runner's `hello` follows.
    Lease { lease: u64 },
    /// Another lease holds it, or it is resetting: try another runner.
    Busy,
}

#[derive(Debug, Clone)]
pub struct RunnerHostOptions {
    /// The Python with pytest that runs the runner.
    pub python: PathBuf,
    /// Wiped between leases; the runner script and the jobs' files live here (in a pod: an
    /// in-memory `emptyDir`).
    pub work_dir: PathBuf,
    /// Exit after this many leases (the orchestrator starts a fresh pod); `None`: never.
    pub max_leases: Option<u64>,
}

/// Why the host stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerExit {
    /// Asked to stop (SIGTERM): the lease in progress finished first.
    Shutdown,
    /// `max_leases` leases served.
    LeasesServed(u64),
    /// Something outlived a lease or its files would not go: do not trust this host again.
    Tainted(String),
}

impl RunnerExit {
    /// The process exit status `unitforge runner` ends with.
    pub fn status(&self) -> i32 {
        match self {
            RunnerExit::Shutdown | RunnerExit::LeasesServed(_) => 0,
            RunnerExit::Tainted(_) => 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerHostError {
    #[error("cannot prepare the work directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the runner with {python}: {source}")]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
}

/// How a lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LeaseEnd {
    Clean,
    Tainted(String),
}

/// Serve leases on `listener` until `shutdown` resolves, a lease is tainted, or `max_leases`.
pub async fn serve(
    listener: TcpListener,
    options: RunnerHostOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunnerExit, RunnerHostError> {
    let in_container = std::process::id() == 1;
    if !in_container {
        become_subreaper();
    }
    // Ready: a runner is started and no lease holds it. The acceptor takes it with a
    // compare-exchange, so two connections can never share one runner.
    let ready = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let (leases, mut next_lease) = mpsc::channel::<TcpStream>(1);
    let acceptor = {
        let ready = ready.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            loop {
                let accepted = tokio::select! {
                    _ = &mut shutdown => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut stream, _peer)) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                if ready
                    .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    if leases.send(stream).await.is_err() {
                        break;
                    }
                } else {
                    let _ = write_line(&mut stream, &LeaseLine::Busy).await;
                }
            }
            stopping.store(true, Ordering::SeqCst);
            // Dropping `leases` wakes a host waiting for its next lease.
        })
    };
    let mut served = 0u64;
    let exit = loop {
        let mut runner = Runner::start(&options, in_container).await?;
        ready.store(!stopping.load(Ordering::SeqCst), Ordering::SeqCst);
        let Some(stream) = next_lease.recv().await else {
            ready.store(false, Ordering::SeqCst);
            runner.stop().await;
            break RunnerExit::Shutdown;
        };
        served += 1;
        let lease = served;
        tracing::info!(lease, "lease started");
        runner.serve(stream, lease).await;
        match runner.stop().await {
            LeaseEnd::Clean => tracing::info!(lease, "lease ended; reset"),
            LeaseEnd::Tainted(reason) => break RunnerExit::Tainted(reason),
        }
        if stopping.load(Ordering::SeqCst) {
            break RunnerExit::Shutdown;
        }
        if options.max_leases.is_some_and(|max| lease >= max) {
            break RunnerExit::LeasesServed(lease);
        }
    };
    acceptor.abort();
    Ok(exit)
}

async fn write_line(stream: &mut TcpStream, line: &LeaseLine) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(line).expect("lease lines serialise");
    bytes.push(b'\n');
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// One started runner process in a freshly wiped job directory.
struct Runner {
    child: Child,
    pid: u32,
    job_dir: PathBuf,
}

impl Runner {
    async fn start(
        options: &RunnerHostOptions,
        in_container: bool,
    ) -> Result<Self, RunnerHostError> {
        let job_dir = options.work_dir.join("job");
        let work_dir_error = |source| RunnerHostError::WorkDir {
            path: options.work_dir.clone(),
            source,
        };
        wipe(&job_dir).map_err(work_dir_error)?;
        std::fs::create_dir_all(&job_dir).map_err(work_dir_error)?;
        // Written afresh for every lease, so that nothing a job did to it carries over.
        let script = options.work_dir.join(RUNNER_FILE_NAME);
        let _ = std::fs::remove_file(&script);
        std::fs::write(&script, RUNNER_SOURCE).map_err(work_dir_error)?;
        let mut command = Command::new(&options.python);
        command.arg("-I").arg("-B").arg(&script);
        if in_container {
            command.arg("--container");
        }
        let mut child = command
            .arg(&job_dir)
            .current_dir(&job_dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RunnerHostError::Spawn {
                python: options.python.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        let stderr = child.stderr.take().expect("stderr is piped");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "unitforge::runner", "{line}");
            }
        });
        Ok(Self {
            child,
            pid,
            job_dir,
        })
    }

    /// Relay the lease's connection and the runner's pipes until either side ends.
    async fn serve(&mut self, mut stream: TcpStream, lease: u64) {
        if write_line(&mut stream, &LeaseLine::Lease { lease })
            .await
            .is_err()
        {
            return;
        }
        let (Some(mut input), Some(mut output)) =
            (self.child.stdin.take(), self.child.stdout.take())
        else {
            return;
        };
        let (mut from_client, mut to_client) = stream.into_split();
        tokio::select! {
            _ = tokio::io::copy(&mut from_client, &mut input) => {}
            _ = tokio::io::copy(&mut output, &mut to_client) => {}
        }
        let _ = to_client.shutdown().await;
    }

    /// Kill the runner's whole tree and whatever escaped it, wipe the job directory, and say
    /// whether the host can be trusted with another lease.
    async fn stop(mut self) -> LeaseEnd {
        let tree = descendants(self.pid);
        signal_all(tree.iter().copied().chain([self.pid]));
        let _ = self.child.kill().await;
        for pid in &tree {
            reap(*pid);
        }
        // Anything still our child now left the runner's tree on purpose (setsid, double fork).
        let own = std::process::id();
        let escaped: Vec<u32> = live_processes()
            .into_iter()
            .filter(|p| p.ppid == own && p.pid != self.pid && !tree.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        let mut reasons = Vec::new();
        if !escaped.is_empty() {
            let all: BTreeSet<u32> = escaped
                .iter()
                .flat_map(|pid| descendants(*pid).into_iter().chain([*pid]))
                .collect();
            signal_all(all.iter().copied());
            for pid in &all {
                reap(*pid);
            }
            reasons.push(format!(
                "{} process(es) outlived the runner: {escaped:?}",
                escaped.len()
            ));
        }
        if let Err(err) = wipe(&self.job_dir) {
            reasons.push(format!("cannot wipe {}: {err}", self.job_dir.display()));
        }
        reap_zombie_children();
        if reasons.is_empty() {
            LeaseEnd::Clean
        } else {
            tracing::error!(reasons = %reasons.join("; "), "tainted lease");
            LeaseEnd::Tainted(reasons.join("; "))
        }
    }
}

fn wipe(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Orphans are reparented to this process instead of init, so that an escaped job is found.
fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    let status = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if status != 0 {
        tracing::warn!("cannot become the child subreaper; escaped processes may go unseen");
    }
}

#[derive(Debug, Clone, Copy)]
struct ProcessEntry {
    pid: u32,
    ppid: u32,
    /// Exited, waiting for its parent to collect it.
    zombie: bool,
}

/// The processes this host can see, with their parents, from `/proc`.
fn processes() -> Vec<ProcessEntry> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after
            // the last ')'.
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some(ProcessEntry {
                pid,
                ppid,
                zombie: state == "Z" || state == "X",
            })
        })
        .collect()
}

/// The processes that have not exited.
fn live_processes() -> Vec<ProcessEntry> {
    processes().into_iter().filter(|p| !p.zombie).collect()
}

/// Every live process below `root` in the process tree.
fn descendants(root: u32) -> BTreeSet<u32> {
    let all = live_processes();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            if found.insert(p.pid) {
                frontier.push(p.pid);
            }
        }
    }
    found
}

fn signal_all(pids: impl Iterator<Item = u32>) {
    for pid in pids {
        // SAFETY: kill(2) with a positive pid and SIGKILL; no memory is involved.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Collect every exited child: orphans adopted by this host (as PID 1 or subreaper) that died.
fn reap_zombie_children() {
    let own = std::process::id();
    for p in processes()
        .into_iter()
        .filter(|p| p.zombie && p.ppid == own)
    {
        reap(p.pid);
    }
}

/// Collect `pid`'s exit status if it is our child (an adopted orphan); others are not ours.
fn reap(pid: u32) {
    for _ in 0..100 {
        let mut status = 0;
        // SAFETY: waitpid on one pid with a valid status pointer.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if reaped != 0 {
            return; // reaped, or not our child (-1, ECHILD)
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lines_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&LeaseLine::Lease { lease: 7 }).unwrap(),
            r#"{"op":"lease","lease":7}"#
        );
        assert_eq!(
            serde_json::to_string(&LeaseLine::Busy).unwrap(),
            r#"{"op":"busy"}"#
        );
        assert_eq!(RunnerExit::Tainted("x".into()).status(), 3);
        assert_eq!(RunnerExit::Shutdown.status(), 0);
    }

    #[test]
    fn this_process_is_seen_with_its_parent() {
        let own = std::process::id();
        let me = live_processes().into_iter().find(|p| p.pid == own).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
    }
}
