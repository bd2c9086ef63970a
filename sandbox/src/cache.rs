//! The result cache: scores by content, in memory in front of an embedded store on disk.
//!
//! The key is a hash of everything that decides a score: protocol version, the executor's
//! runtime (image id or Python path), the reward config, the module name, the code under test
//! and the tests. A bounded in-memory map (dashmap, FIFO eviction) sits in front of a redb file,
//! so a restart keeps results; identical requests in flight are computed once and shared.
//! Only complete scores are stored: one with an infrastructure exclusion is recomputed next time.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use redb::{Database, TableDefinition};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::protocol::PROTOCOL_VERSION;
use crate::rewards::RewardConfig;
use crate::score::{ScoreInput, ScoreReport};

const SCORES: TableDefinition<&str, &[u8]> = TableDefinition::new("scores");

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache store {path}: {message}")]
    Store { path: String, message: String },
}

fn write_entry(store: &Database, key: &str, bytes: &[u8]) -> Result<(), Box<redb::Error>> {
    let write = store.begin_write().map_err(|e| Box::new(e.into()))?;
    {
        let mut table = write.open_table(SCORES).map_err(|e| Box::new(e.into()))?;
        table.insert(key, bytes).map_err(|e| Box::new(e.into()))?;
    }
    write.commit().map_err(|e| Box::new(e.into()))
}

/// The content hash that identifies a score.
pub fn cache_key(runtime: &str, config: &RewardConfig, input: &ScoreInput) -> String {
    let config = serde_json::to_string(config).expect("reward configs serialise");
    let mut hasher = Sha256::new();
    for part in [
        PROTOCOL_VERSION.to_string().as_str(),
        runtime,
        &config,
        &input.module,
        &input.code,
        &input.tests,
    ] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CacheStats {
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
    /// Requests that waited for an identical request already being computed.
    pub shared_in_flight: u64,
    pub entries_in_memory: u64,
}

pub struct ResultCache {
    memory: DashMap<String, Arc<ScoreReport>>,
    order: Mutex<VecDeque<String>>,
    capacity: usize,
    store: Option<Database>,
    in_flight: DashMap<String, Arc<OnceCell<Arc<ScoreReport>>>>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    shared: AtomicU64,
}

/// Where a cached value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    MemoryHit,
    DiskHit,
    /// Computed by this request.
    Miss,
    /// Computed by an identical request already in flight.
    Shared,
}

impl ResultCache {
    /// A cache holding up to `capacity` scores in memory, persisted in `path` if given.
    pub fn open(path: Option<&Path>, capacity: usize) -> Result<Self, CacheError> {
        let store = match path {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| CacheError::Store {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                }
                let db = Database::create(path).map_err(|e| CacheError::Store {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                Some(db)
            }
            None => None,
        };
        Ok(Self {
            memory: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            store,
            in_flight: DashMap::new(),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            shared: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            shared_in_flight: self.shared.load(Ordering::Relaxed),
            entries_in_memory: self.memory.len() as u64,
        }
    }

    fn remember(&self, key: &str, report: Arc<ScoreReport>) {
        if self.memory.insert(key.to_string(), report).is_none() {
            let mut order = self.order.lock().expect("order lock");
            order.push_back(key.to_string());
            while order.len() > self.capacity {
                if let Some(oldest) = order.pop_front() {
                    self.memory.remove(&oldest);
                }
            }
        }
    }

    fn load(&self, key: &str) -> Option<ScoreReport> {
        let store = self.store.as_ref()?;
        let read = store.begin_read().ok()?;
        let table = read.open_table(SCORES).ok()?;
        let bytes = table.get(key).ok()??;
        serde_json::from_slice(bytes.value()).ok()
    }

    fn save(&self, key: &str, report: &ScoreReport) {
        let Some(store) = &self.store else { return };
        let bytes = serde_json::to_vec(report).expect("reports serialise");
        if let Err(err) = write_entry(store, key, &bytes) {
            tracing::warn!(%err, "could not persist a score");
        }
    }

    /// The cached score for `key`, or the result of `compute`, run once however many identical
    /// requests arrive meanwhile. `fresh` skips the lookup (the result is still stored). Errors
    /// are not cached.
    pub async fn get_or_compute<E, F, Fut>(
        &self,
        key: &str,
        fresh: bool,
        compute: F,
    ) -> Result<(Arc<ScoreReport>, CacheOutcome), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ScoreReport, E>>,
    {
        if let Some(hit) = self.memory.get(key).filter(|_| !fresh) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((hit.clone(), CacheOutcome::MemoryHit));
        }
        if let Some(report) = self.load(key).filter(|_| !fresh) {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            let report = Arc::new(report);
            self.remember(key, report.clone());
            return Ok((report, CacheOutcome::DiskHit));
        }
        let cell = self
            .in_flight
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut computed_here = false;
        let result = cell
            .get_or_try_init(|| {
                computed_here = true;
                async {
                    let report = compute().await?;
                    Ok(Arc::new(report))
                }
            })
            .await
            .cloned();
        if computed_here {
            self.in_flight.remove(key);
        }
        let report = result?;
        if computed_here {
            self.misses.fetch_add(1, Ordering::Relaxed);
            if report.infra_errors == 0 {
                self.memory.remove(key);
                self.remember(key, report.clone());
                self.save(key, &report);
            }
            Ok((report, CacheOutcome::Miss))
        } else {
            self.shared.fetch_add(1, Ordering::Relaxed);
            Ok((report, CacheOutcome::Shared))
        }
    }
}
