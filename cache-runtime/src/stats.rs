//! Per-function counters, read with [`Cache::stats`](crate::Cache::stats).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// Counters of one cached (or invalidating) function, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FnStats {
    /// Calls answered by a cached value.
    pub hits: u64,
    /// Calls answered by a cached "not found".
    pub negative_hits: u64,
    /// Calls that found nothing usable in the cache.
    pub misses: u64,
    /// Loader runs (the function's body).
    pub loads: u64,
    /// Loader runs that returned `Err` (or panicked).
    pub load_errors: u64,
    /// Times a call waited for another process's lease.
    pub lock_waits: u64,
    /// Waits that reached `lock_ms` and loaded without the lease.
    pub lock_timeouts: u64,
    /// Backend failures (connection, timeout); the call went to the loader.
    pub backend_errors: u64,
    /// Backend calls skipped because the circuit breaker was open (the call went to the loader).
    pub backend_skipped: u64,
    /// Stored bytes that could not be decoded (treated as a miss and overwritten).
    pub decode_errors: u64,
    /// Loaded values not cached because they were larger than `max_value_bytes`.
    pub oversized: u64,
    /// Keys deleted by `#[invalidates]` (or [`Cache::invalidate`](crate::Cache::invalidate)),
    /// including queued deletions delivered later.
    pub invalidations: u64,
    /// Keys whose deletion failed and waits in the retry queue (a gauge).
    pub invalidations_pending: u64,
    /// Keys whose deletion was given up (retry window over, or queue full).
    pub invalidations_failed: u64,
}

/// A snapshot of all functions' counters for one [`Cache`](crate::Cache), by function name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Stats {
    functions: BTreeMap<String, FnStats>,
}

impl Stats {
    /// The counters of `name` (the `name = ".."` argument, or `module::path::fn_name`);
    /// all zero when the function has not run against this cache.
    pub fn function(&self, name: &str) -> FnStats {
        self.functions.get(name).copied().unwrap_or_default()
    }

    /// All functions' counters, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FnStats)> {
        self.functions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The sum over all functions.
    pub fn total(&self) -> FnStats {
        self.functions
            .values()
            .fold(FnStats::default(), |mut t, s| {
                t.hits += s.hits;
                t.negative_hits += s.negative_hits;
                t.misses += s.misses;
                t.loads += s.loads;
                t.load_errors += s.load_errors;
                t.lock_waits += s.lock_waits;
                t.lock_timeouts += s.lock_timeouts;
                t.backend_errors += s.backend_errors;
                t.decode_errors += s.decode_errors;
                t.invalidations += s.invalidations;
                t
            })
    }
}

/// Live counters of one function.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) negative_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
    pub(crate) backend_errors: AtomicU64,
    pub(crate) backend_skipped: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) invalidations_pending: AtomicU64,
    pub(crate) invalidations_failed: AtomicU64,
    /// Set once a decode warning was logged for this function (warn once per key family).
    pub(crate) warned_decode: AtomicBool,
    /// Set once an oversize warning was logged for this function.
    pub(crate) warned_oversize: AtomicBool,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// True the first time it is called for `flag`.
    pub(crate) fn first(flag: &AtomicBool) -> bool {
        !flag.load(Relaxed) && !flag.swap(true, Relaxed)
    }

    fn snapshot(&self) -> FnStats {
        FnStats {
            hits: self.hits.load(Relaxed),
            negative_hits: self.negative_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            loads: self.loads.load(Relaxed),
            load_errors: self.load_errors.load(Relaxed),
            lock_waits: self.lock_waits.load(Relaxed),
            lock_timeouts: self.lock_timeouts.load(Relaxed),
            backend_errors: self.backend_errors.load(Relaxed),
            backend_skipped: self.backend_skipped.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            invalidations_pending: self.invalidations_pending.load(Relaxed),
            invalidations_failed: self.invalidations_failed.load(Relaxed),
        }
    }
}

/// Counters by function name. Bounded by the number of annotated functions in the program.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    by_name: RwLock<HashMap<&'static str, Arc<Counters>>>,
}

impl Registry {
    pub(crate) fn counters(&self, name: &'static str) -> Arc<Counters> {
        if let Ok(map) = self.by_name.read()
            && let Some(c) = map.get(name)
        {
            return c.clone();
        }
        let mut map = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        map.entry(name).or_default().clone()
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        Stats {
            functions: map
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.snapshot()))
                .collect(),
        }
    }
}
