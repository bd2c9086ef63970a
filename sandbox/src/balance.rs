//! Which replica of the reward service gets a request: the client's half of scale-out.
//!
//! The replicas are the configured URLs, each host name expanded into every address it resolves
//! to (a Kubernetes headless Service or `docker-compose --scale` answers with one address per
//! replica) and resolved again every `refresh` so that replicas that come and go are followed.
//! A request goes to one of its **two choices**: the two highest-ranked replicas for its content
//! by rendezvous hashing, skipping ejected replicas and those at their concurrency cap, and of
//! the two the one with fewer requests outstanding (the first on a tie). The same pair therefore
//! goes to the same replica while the load allows, so that replica's cache answers it again, and
//! spreads to a second one under load. A replica that fails `eject_after` times in a row is
//! ejected and probed at `/healthz` until it answers again; while every replica is ejected,
//! requests still go somewhere rather than nowhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct BalanceOptions {
    /// Requests in flight at once to one replica.
    pub per_replica: usize,
    /// Failures in a row (connection errors, timeouts, 5xx) that eject a replica.
    pub eject_after: u32,
    /// How often an ejected replica's `/healthz` is asked.
    pub probe_every: Duration,
    /// How often host names are resolved again.
    pub refresh: Duration,
}

impl Default for BalanceOptions {
    fn default() -> Self {
        Self {
            per_replica: 32,
            eject_after: 3,
            probe_every: Duration::from_secs(1),
            refresh: Duration::from_secs(10),
        }
    }
}

/// One replica of the service, as the client sees it.
#[derive(Debug)]
pub struct Replica {
    /// Base URL with the resolved address, e.g. `http://10.0.0.7:8080`.
    pub url: String,
    outstanding: AtomicUsize,
    failures_in_a_row: AtomicU32,
    ejected: AtomicBool,
    probing: AtomicBool,
}

impl Replica {
    fn new(url: String) -> Self {
        Self {
            url,
            outstanding: AtomicUsize::new(0),
            failures_in_a_row: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::SeqCst)
    }
}

/// A configured endpoint: scheme, host and port of a base URL.
#[derive(Debug, Clone)]
struct Endpoint {
    scheme: String,
    host: String,
    port: u16,
    /// As given (with any path), for a host that does not resolve (kept as it is).
    given: String,
}

/// The replicas behind a client's endpoints, and the choice of one per request.
pub struct Replicas {
    endpoints: Vec<Endpoint>,
    replicas: RwLock<Vec<Arc<Replica>>>,
    resolved_at: Mutex<Option<Instant>>,
    freed: Notify,
    options: BalanceOptions,
}

/// A request's hold on a replica: dropped when the attempt ends, freeing its place.
pub struct Held<'a> {
    pub replica: Arc<Replica>,
    freed: &'a Notify,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.replica.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_waiters();
    }
}

/// The rendezvous weight of `replica` for content `key`: highest wins.
fn weight(key: &[u8; 32], replica: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(replica.as_bytes());
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// The content key of a request body: equal bodies, equal keys.
pub fn content_key(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

impl Replicas {
    /// `urls`: base URLs (`http://host:port`); an unparsable one is an error.
    pub fn new(urls: &[String], options: BalanceOptions) -> Result<Self, String> {
        let endpoints = urls
            .iter()
            .map(|given| {
                let given = given.trim_end_matches('/').to_string();
                let url = reqwest::Url::parse(&given).map_err(|e| format!("{given}: {e}"))?;
                let host = url
                    .host_str()
                    .ok_or_else(|| format!("{given}: no host"))?
                    .trim_matches(['[', ']'])
                    .to_string();
                let port = url
                    .port_or_known_default()
                    .ok_or_else(|| format!("{given}: no port"))?;
                Ok(Endpoint {
                    scheme: url.scheme().to_string(),
                    host,
                    port,
                    given,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        // Until the first resolution: the URLs as given.
        let replicas = endpoints
            .iter()
            .map(|e| Arc::new(Replica::new(e.given.clone())))
            .collect();
        Ok(Self {
            endpoints,
            replicas: RwLock::new(replicas),
            resolved_at: Mutex::new(None),
            freed: Notify::new(),
            options,
        })
    }

    /// The replicas known now.
    pub fn snapshot(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().expect("replicas lock").clone()
    }

    /// Resolve the host names again if `refresh` has passed (at most one caller does it).
    pub async fn refresh_if_due(&self) {
        {
            let mut at = self.resolved_at.lock().expect("resolve lock");
            if at.is_some_and(|t| t.elapsed() < self.options.refresh) {
                return;
            }
            *at = Some(Instant::now());
        }
        let mut urls = Vec::new();
        for endpoint in &self.endpoints {
            urls.extend(resolve(endpoint).await);
        }
        urls.sort();
        urls.dedup();
        let mut replicas = self.replicas.write().expect("replicas lock");
        let kept: Vec<Arc<Replica>> = urls
            .into_iter()
            .map(|url| {
                replicas
                    .iter()
                    .find(|r| r.url == url)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Replica::new(url)))
            })
            .collect();
        if kept
            .iter()
            .map(|r| &r.url)
            .ne(replicas.iter().map(|r| &r.url))
        {
            tracing::info!(replicas = ?kept.iter().map(|r| &r.url).collect::<Vec<_>>(), "reward service replicas");
        }
        *replicas = kept;
    }

    /// The replica for a request with content `key`, avoiding those in `tried` while another is
    /// left; waits while every candidate is at its cap.
    pub async fn choose(&self, key: &[u8; 32], tried: &[String]) -> Held<'_> {
        loop {
            let freed = self.freed.notified();
            if let Some(held) = self.try_choose(key, tried) {
                return held;
            }
            // Every usable replica is at its cap: wait for a request to end (or a moment, in
            // case the ending raced with this check).
            let _ = tokio::time::timeout(Duration::from_millis(50), freed).await;
        }
    }

    fn try_choose(&self, key: &[u8; 32], tried: &[String]) -> Option<Held<'_>> {
        let all = self.snapshot();
        let mut ranked: Vec<(u64, Arc<Replica>)> =
            all.into_iter().map(|r| (weight(key, &r.url), r)).collect();
        ranked.sort_by_key(|(w, _)| std::cmp::Reverse(*w));
        let usable = |r: &Replica, avoid_tried: bool, avoid_ejected: bool| {
            (!avoid_tried || !tried.contains(&r.url))
                && (!avoid_ejected || !r.is_ejected())
                && r.outstanding() < self.options.per_replica.max(1)
        };
        // Prefer healthy replicas not tried yet, then healthy ones, then any.
        for (avoid_tried, avoid_ejected) in [(true, true), (false, true), (false, false)] {
            let mut choices = ranked
                .iter()
                .map(|(_, r)| r)
                .filter(|r| usable(r, avoid_tried, avoid_ejected));
            let Some(first) = choices.next() else {
                continue;
            };
            let chosen = match choices.next() {
                Some(second) if second.outstanding() < first.outstanding() => second,
                _ => first,
            };
            chosen.outstanding.fetch_add(1, Ordering::SeqCst);
            return Some(Held {
                replica: chosen.clone(),
                freed: &self.freed,
            });
        }
        None
    }

    /// An attempt on `replica` succeeded: its failures in a row start again at 0.
    pub fn succeeded(&self, replica: &Replica) {
        replica.failures_in_a_row.store(0, Ordering::SeqCst);
    }

    /// An attempt on `replica` failed for infrastructure reasons: eject it after `eject_after`
    /// in a row, and probe it until `/healthz` answers 200.
    pub fn failed(&self, replica: &Arc<Replica>, http: &reqwest::Client) {
        let failures = replica.failures_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
        if failures < self.options.eject_after || replica.ejected.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(replica = %replica.url, failures, "replica ejected; probing /healthz");
        if replica.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let replica = replica.clone();
        let http = http.clone();
        let every = self.options.probe_every;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // A replica dropped from the set (no longer resolved) is probed no more.
                if Arc::strong_count(&replica) == 1 {
                    break;
                }
                let healthy = http
                    .get(format!("{}/healthz", replica.url))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if healthy {
                    replica.failures_in_a_row.store(0, Ordering::SeqCst);
                    replica.ejected.store(false, Ordering::SeqCst);
                    tracing::info!(replica = %replica.url, "replica re-admitted");
                    break;
                }
            }
            replica.probing.store(false, Ordering::SeqCst);
        });
    }
}

/// The base URLs an endpoint stands for now: one per address its host resolves to (IPv4 when it
/// has any, so that `localhost` is one replica), or the URL as given when it does not resolve.
async fn resolve(endpoint: &Endpoint) -> Vec<String> {
    if endpoint.host.parse::<IpAddr>().is_ok() {
        return vec![endpoint.given.clone()];
    }
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((
        endpoint.host.as_str(),
        endpoint.port,
    ))
    .await
    {
        Ok(found) => found.collect(),
        Err(err) => {
            tracing::debug!(host = %endpoint.host, %err, "cannot resolve; using the URL as given");
            return vec![endpoint.given.clone()];
        }
    };
    let v4: Vec<&SocketAddr> = addresses.iter().filter(|a| a.is_ipv4()).collect();
    let chosen: Vec<&SocketAddr> = if v4.is_empty() {
        addresses.iter().collect()
    } else {
        v4
    };
    if chosen.is_empty() {
        return vec![endpoint.given.clone()];
    }
    chosen
        .into_iter()
        .map(|a| format!("{}://{a}", endpoint.scheme))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(urls: &[&str], per_replica: usize) -> Replicas {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        Replicas::new(
            &urls,
            BalanceOptions {
                per_replica,
                ..BalanceOptions::default()
            },
        )
        .unwrap()
    }

    const THREE: [&str; 3] = [
        "http://10.0.0.1:8080",
        "http://10.0.0.2:8080",
        "http://10.0.0.3:8080",
    ];

    #[tokio::test]
    async fn the_same_content_goes_to_the_same_replica_when_idle() {
        let set = replicas(&THREE, 8);
        let mut spread = std::collections::BTreeMap::new();
        for i in 0..300 {
            let key = content_key(format!("pair {i}").as_bytes());
            let first = set.choose(&key, &[]).await.replica.url.clone();
            let again = set.choose(&key, &[]).await.replica.url.clone();
            assert_eq!(first, again);
            *spread.entry(first).or_insert(0) += 1;
        }
        // Rendezvous hashing spreads distinct contents over every replica (about a third each).
        assert_eq!(spread.len(), 3);
        assert!(spread.values().all(|&n| n > 60), "{spread:?}");
    }

    #[tokio::test]
    async fn under_load_the_second_choice_takes_over() {
        let set = replicas(&THREE, 8);
        let key = content_key(b"one pair");
        let first = set.choose(&key, &[]).await;
        // The first choice is busy, the second is not: the second gets it.
        let second = set.choose(&key, &[]).await;
        assert_ne!(first.replica.url, second.replica.url);
        // Both hold one request: a tie goes to the first choice again.
        let third = set.choose(&key, &[]).await;
        assert_eq!(third.replica.url, first.replica.url);
        drop((first, second, third));
        assert!(set.snapshot().iter().all(|r| r.outstanding() == 0));
    }

    #[tokio::test]
    async fn a_retry_goes_to_a_replica_not_tried_yet() {
        let set = replicas(&THREE, 8);
        let key = content_key(b"retry me");
        let first = set.choose(&key, &[]).await.replica.url.clone();
        let second = set
            .choose(&key, std::slice::from_ref(&first))
            .await
            .replica
            .url
            .clone();
        let third = set
            .choose(&key, &[first.clone(), second.clone()])
            .await
            .replica
            .url
            .clone();
        let all: std::collections::BTreeSet<_> = [first.clone(), second, third].into();
        assert_eq!(all.len(), 3);
        // Every replica tried: any will do again rather than none.
        let _ = set.choose(&key, &THREE.map(String::from)).await;
    }

    #[tokio::test]
    async fn the_cap_makes_a_request_wait_for_a_free_place() {
        let set = Arc::new(replicas(&THREE[..1], 1));
        let key = content_key(b"capped");
        let held = set.choose(&key, &[]).await;
        let waiter = {
            let set = set.clone();
            tokio::spawn(async move { set.choose(&key, &[]).await.replica.url.clone() })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "a second request passed the cap of 1"
        );
        drop(held);
        assert_eq!(waiter.await.unwrap(), THREE[0]);
    }

    #[tokio::test]
    async fn failures_in_a_row_eject_and_a_healthy_answer_readmits() {
        use axum::routing::get;
        // A replica whose /healthz answers, for the probe.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let healthy = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let app = axum::Router::new().route("/healthz", get(|| async { "ok" }));
            axum::serve(listener, app).await.unwrap();
        });
        let set = Replicas::new(
            &[healthy.clone(), "http://10.0.0.2:8080".to_string()],
            BalanceOptions {
                eject_after: 2,
                probe_every: Duration::from_millis(50),
                ..BalanceOptions::default()
            },
        )
        .unwrap();
        let http = reqwest::Client::new();
        let target = set
            .snapshot()
            .into_iter()
            .find(|r| r.url == healthy)
            .unwrap();
        set.failed(&target, &http);
        assert!(!target.is_ejected(), "one failure is not enough");
        set.failed(&target, &http);
        assert!(target.is_ejected());
        // Ejected: every content goes to the other replica.
        for i in 0..20 {
            let key = content_key(format!("{i}").as_bytes());
            assert_ne!(set.choose(&key, &[]).await.replica.url, healthy);
        }
        // The probe finds /healthz answering and re-admits it.
        for _ in 0..100 {
            if !target.is_ejected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !target.is_ejected(),
            "not re-admitted after /healthz answered"
        );
    }

    #[tokio::test]
    async fn names_expand_into_their_addresses() {
        let set = replicas(&["http://localhost:9/"], 8);
        set.refresh_if_due().await;
        let urls: Vec<String> = set.snapshot().iter().map(|r| r.url.clone()).collect();
        assert_eq!(urls, ["http://127.0.0.1:9"]);
        let literal = replicas(&["http://10.1.2.3:80"], 8);
        literal.refresh_if_due().await;
        assert_eq!(literal.snapshot()[0].url, "http://10.1.2.3:80");
    }
}
