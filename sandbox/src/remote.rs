//! The remote executor: workers leased from `unitforge runner` hosts over TCP (runner_host.rs).
//!
//! The runners are named by addresses (`host:port`), each resolved again at every lease, so a
//! DNS name that stands for many pods (a Kubernetes headless Service) spreads over all of them as
//! they come and go. A lease goes to the first runner that answers `lease`, starting at a
//! different one for each worker slot; a busy or unreachable runner sends it to the next, and when
//! every runner is busy the launcher waits and tries again until its deadline. What the pool then
//! gets is an ordinary worker: the runner protocol over the connection, the same verdicts as a
//! container's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

use crate::runner_host::LeaseLine;
use crate::worker::{BoxFuture, InfraError, Launcher, WorkerIo};

/// How long one connection attempt, and the first line after it, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Leases workers from runner hosts.
pub struct RemoteLauncher {
    addresses: Vec<String>,
    /// How long a lease may wait for a free runner before it is an infrastructure error.
    lease_timeout: Duration,
}

impl RemoteLauncher {
    /// `addresses`: `host:port` (or `tcp://host:port`) of each runner; a name may resolve to many.
    pub fn new(addresses: Vec<String>, lease_timeout: Duration) -> Result<Self, InfraError> {
        if addresses.is_empty() {
            return Err(InfraError::Launch(
                "the remote executor needs runner addresses (--runner HOST:PORT)".into(),
            ));
        }
        // `tcp://host:port` and `host:port` name the same runner.
        let addresses = addresses
            .into_iter()
            .map(|a| {
                a.strip_prefix("tcp://")
                    .unwrap_or(&a)
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        Ok(Self {
            addresses,
            lease_timeout,
        })
    }

    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Every socket address the runners' names resolve to now, and why any did not resolve.
    async fn resolve(&self) -> (Vec<SocketAddr>, Vec<String>) {
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for address in &self.addresses {
            match tokio::net::lookup_host(address.as_str()).await {
                Ok(resolved) => found.extend(resolved),
                Err(err) => failures.push(format!("{address}: {err}")),
            }
        }
        found.sort();
        found.dedup();
        (found, failures)
    }

    /// One pass over the runners, from `start`: a leased connection, or what each said.
    async fn try_lease(
        &self,
        start: usize,
    ) -> Result<(BufReader<TcpStream>, u64, SocketAddr), Vec<String>> {
        let (candidates, mut refusals) = self.resolve().await;
        let count = candidates.len();
        for offset in 0..count {
            let address = candidates[(start + offset) % count];
            match lease_from(address).await {
                Ok((stream, lease)) => return Ok((stream, lease, address)),
                Err(why) => refusals.push(format!("{address}: {why}")),
            }
        }
        if refusals.is_empty() {
            refusals.push("no runner address resolved".into());
        }
        Err(refusals)
    }
}

/// Connect to one runner and read its first line.
async fn lease_from(address: SocketAddr) -> Result<(BufReader<TcpStream>, u64), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    match tokio::time::timeout(CONNECT_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return Err("no lease line".into()),
        Ok(Err(err)) => return Err(err.to_string()),
        Ok(Ok(0)) => return Err("closed the connection".into()),
        Ok(Ok(_)) => {}
    }
    match serde_json::from_str::<LeaseLine>(&line) {
        Ok(LeaseLine::Lease { lease }) => Ok((reader, lease)),
        Ok(LeaseLine::Busy) => Err("busy".into()),
        Err(err) => Err(format!("not a runner ({err}): {:.80}", line.trim_end())),
    }
}

impl Launcher for RemoteLauncher {
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<WorkerIo, InfraError>> {
        Box::pin(async move {
            let deadline = Instant::now() + self.lease_timeout;
            let mut wait = Duration::from_millis(50);
            loop {
                match self.try_lease(slot).await {
                    Ok((reader, lease, address)) => {
                        tracing::debug!(%address, lease, slot, "runner leased");
                        // The reader keeps whatever it buffered past the lease line (the
                        // runner's hello), so the worker reads on from there.
                        let (output, input) = tokio::io::split(reader);
                        return Ok(WorkerIo {
                            input: Box::new(input),
                            output: Box::new(output),
                            keepalive: Box::new(()),
                            stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
                        });
                    }
                    Err(refusals) => {
                        if Instant::now() + wait > deadline {
                            return Err(InfraError::Launch(format!(
                                "no runner free within {:?}: {}",
                                self.lease_timeout,
                                refusals.join("; ")
                            )));
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(1));
                    }
                }
            }
        })
    }

    fn name(&self) -> &'static str {
        "remote"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_addresses_may_be_tcp_urls_and_none_is_an_error() {
        let launcher = RemoteLauncher::new(
            vec!["tcp://runner:7070/".into(), "10.0.0.2:7070".into()],
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(launcher.addresses(), ["runner:7070", "10.0.0.2:7070"]);
        assert!(RemoteLauncher::new(Vec::new(), Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn nothing_listening_is_a_launch_error_after_the_lease_timeout() {
        let launcher =
            RemoteLauncher::new(vec!["127.0.0.1:9".into()], Duration::from_millis(200)).unwrap();
        let err = launcher
            .launch(0)
            .await
            .err()
            .expect("no runner listens on port 9");
        assert!(
            matches!(&err, InfraError::Launch(m) if m.contains("no runner free")),
            "{err}"
        );
    }
}
