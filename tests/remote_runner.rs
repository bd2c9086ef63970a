//! `unitforge runner` hosts and the remote executor, as a cluster would use them: real runner
//! processes on loopback ports, leased over TCP, against the Docker executor's verdicts.

#[path = "../sandbox/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{docker_scorer, fingerprint, DOCKER};
use unitforge_sandbox::executor::{start_pool, ExecutorKind, ExecutorOptions};
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::{ScoreInput, Scorer};

/// One `unitforge runner` process on a loopback port, killed when dropped.
struct RunnerHost {
    child: Child,
    address: String,
    work_dir: tempfile::TempDir,
}

impl RunnerHost {
    fn start(extra: &[&str]) -> Self {
        let work_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_unitforge"))
            .args(["runner", "--listen", "127.0.0.1:0", "--work-dir"])
            .arg(work_dir.path())
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("the unitforge binary runs");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("the runner printed its address")
                .unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the runner never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            address,
            work_dir,
        }
    }

    /// Wait for the process to exit; its status code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for RunnerHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connect and read the first line (and, for a lease, the runner's greeting).
fn connect(address: &str) -> (TcpStream, serde_json::Value, Option<serde_json::Value>) {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let first: serde_json::Value = serde_json::from_str(&line).unwrap();
    let hello = (first["op"] == "lease").then(|| {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    });
    (stream, first, hello)
}

/// A lease on the host at `address`, waiting while it is busy (starting, or resetting).
fn lease(address: &str) -> (TcpStream, serde_json::Value, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (stream, line, hello) = connect(address);
        if let Some(hello) = hello {
            return (stream, line, hello);
        }
        assert_eq!(line["op"], "busy", "{line}");
        assert!(Instant::now() < deadline, "the runner stayed busy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pair(name: &str) -> ScoreInput {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/pairs")
        .join(name);
    ScoreInput {
        module: name.into(),
        code: std::fs::read_to_string(root.join(format!("{name}.py"))).unwrap(),
        tests: std::fs::read_to_string(root.join(format!("test_{name}.py"))).unwrap(),
    }
}

fn shipped_pairs() -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pairs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
    names.sort();
    names
}

async fn remote_scorer(hosts: &[&RunnerHost], workers: usize) -> Scorer {
    let options = ExecutorOptions {
        kind: ExecutorKind::Remote,
        workers,
        runners: hosts.iter().map(|h| h.address.clone()).collect(),
        lease_timeout: Duration::from_secs(30),
        ..ExecutorOptions::default()
    };
    let (pool, identity) = start_pool(&options, &|_| {}).await.unwrap();
    assert!(
        identity.runtime.starts_with("remote: python"),
        "{}",
        identity.runtime
    );
    Scorer::new(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_runners_give_the_docker_verdicts_on_every_shipped_pair() {
    let _one_at_a_time = DOCKER.lock().await;
    let (a, b) = (RunnerHost::start(&[]), RunnerHost::start(&[]));
    let remote = remote_scorer(&[&a, &b], 2).await;
    let docker = docker_scorer(2).await.0;
    let names = shipped_pairs();
    assert!(names.len() >= 30);
    for name in &names {
        let input = pair(name);
        let config = RewardConfig::default();
        let by_docker = docker.score(&input, &config).await.unwrap();
        let by_remote = remote.score(&input, &config).await.unwrap();
        assert_eq!(
            fingerprint(&by_remote),
            fingerprint(&by_docker),
            "{name}: remote and Docker verdicts differ"
        );
        assert_eq!(by_remote.environment.executor, "remote");
    }
    docker.pool().shutdown(Duration::from_secs(5)).await;
    remote.pool().shutdown(Duration::from_secs(5)).await;
}

#[test]
fn one_lease_at_a_time_and_a_wiped_directory_between_leases() {
    let host = RunnerHost::start(&[]);
    let (first, line, hello) = lease(&host.address);
    assert_eq!(line["lease"], 1);
    assert_eq!(hello["op"], "hello", "{hello}");
    // While the first lease holds the runner, a second client is sent elsewhere.
    let (_, busy, _) = connect(&host.address);
    assert_eq!(busy["op"], "busy", "{busy}");
    // Something the lease left in the job directory does not reach the next one.
    let left = host.work_dir.path().join("job").join("left-by-a-job.txt");
    std::fs::write(&left, "secret").unwrap();
    drop(first);
    let (second, line, _) = lease(&host.address);
    assert_eq!(line["lease"], 2, "{line}");
    assert!(!left.exists(), "a file survived from one lease to the next");
    drop(second);
}

#[test]
fn a_lease_that_a_process_outlives_taints_the_runner() {
    // A "Python" that, like a job that escaped its runner, leaves a process behind in its own
    // session (double fork), then runs the real runner.
    let dir = tempfile::tempdir().unwrap();
    let python = std::path::absolute(unitforge_sandbox::local::discover_python(None)).unwrap();
    let pid_file = dir.path().join("escaped.pid");
    let wrapper = dir.path().join("python");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsetsid sh -c 'sleep 300 & echo $! > {pid}' </dev/null >/dev/null 2>&1 &\nexec {python} \"$@\"\n",
            pid = pid_file.display(),
            python = python.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut host = RunnerHost::start(&["--python", wrapper.to_str().unwrap()]);
    let (stream, _, hello) = lease(&host.address);
    assert_eq!(hello["op"], "hello");
    let deadline = Instant::now() + Duration::from_secs(10);
    let escaped: i32 = loop {
        let written = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if let Ok(pid) = written.trim().parse() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the escaping process never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stream);
    assert_eq!(
        host.exit_code(Duration::from_secs(30)),
        Some(3),
        "a tainted runner must exit with status 3"
    );
    // The escaped process is gone too (killed, then reaped by the host as its subreaper).
    let alive = std::fs::read_to_string(format!("/proc/{escaped}/stat"))
        .map(|stat| {
            !stat
                .rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false);
    assert!(!alive, "the escaped process {escaped} is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runner_sends_the_work_to_another() {
    let a = RunnerHost::start(&[]);
    let mut b = RunnerHost::start(&[]);
    let scorer = remote_scorer(&[&a, &b], 1).await;
    let input = pair("clamp");
    let config = RewardConfig::default();
    let before = scorer.score(&input, &config).await.unwrap();
    // One runner dies (its pod is gone): every later lease goes to the other.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let after = scorer.score(&input, &config).await.unwrap();
    assert_eq!(fingerprint(&after), fingerprint(&before));
    assert!(after.validity > 0.0);
    scorer.pool().shutdown(Duration::from_secs(5)).await;
}

#[test]
fn sigterm_stops_an_idle_runner_cleanly() {
    let mut host = RunnerHost::start(&[]);
    let status = Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(host.exit_code(Duration::from_secs(30)), Some(0));
}
