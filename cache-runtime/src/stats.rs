//! Per-function counters, read with [`Cache::stats`](crate::Cache::stats).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;

/// Defines [`FnStats`] (a snapshot) and `Counters` (live atomics) from one field list.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $field:ident,)*) => {
        /// Counters of one cached (or invalidating) function, as a snapshot.
        ///
        /// Counters are added in minor releases (`#[non_exhaustive]`): read fields, and build
        /// one with `FnStats::default()` where a test needs a value.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        #[non_exhaustive]
        pub struct FnStats {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl FnStats {
            fn add(&mut self, other: &FnStats) {
                $(self.$field += other.$field;)*
            }
        }

        /// Live counters of one function.
        #[derive(Debug)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Count,)*
            /// Set once a decode warning was logged for this function (warn once per key family).
            pub(crate) warned_decode: AtomicBool,
            /// Set once an oversize warning was logged for this function.
            pub(crate) warned_oversize: AtomicBool,
            /// `cache_load_seconds{fn}`.
            #[cfg(feature = "metrics")]
            load_seconds: ::metrics::Histogram,
        }

        impl Counters {
            /// The counters of function `name` (with the `metrics` feature, each also feeds
            /// the facade's `cache_<field>_total{fn = name}`).
            pub(crate) fn new(name: &'static str) -> Self {
                let _ = name;
                Counters {
                    $($field: Count::new(name, stringify!($field)),)*
                    warned_decode: AtomicBool::new(false),
                    warned_oversize: AtomicBool::new(false),
                    #[cfg(feature = "metrics")]
                    load_seconds: ::metrics::histogram!("cache_load_seconds", "fn" => name),
                }
            }

            fn snapshot(&self) -> FnStats {
                FnStats { $($field: self.$field.load(Relaxed),)* }
            }
        }
    };
}

/// One live counter. With the `metrics` feature it also drives a handle of the `metrics`
/// facade, registered once per function (a counter `cache_<field>_total{fn}`, or the gauge
/// `cache_invalidations_pending{fn}`), so a call pays one atomic add per handle and no lookup.
#[derive(Debug)]
pub(crate) struct Count {
    n: AtomicU64,
    #[cfg(feature = "metrics")]
    handle: crate::telemetry::Handle,
}

impl Count {
    fn new(name: &'static str, field: &'static str) -> Self {
        let _ = (name, field);
        Count {
            n: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            handle: crate::telemetry::Handle::new(name, field),
        }
    }

    /// Adds `n`; returns the previous value.
    #[inline]
    pub(crate) fn fetch_add(&self, n: u64, order: Ordering) -> u64 {
        #[cfg(feature = "metrics")]
        self.handle.add(n);
        self.n.fetch_add(n, order)
    }

    /// Subtracts `n` (for the gauge `invalidations_pending`); returns the previous value.
    #[inline]
    pub(crate) fn fetch_sub(&self, n: u64, order: Ordering) -> u64 {
        #[cfg(feature = "metrics")]
        self.handle.sub(n);
        self.n.fetch_sub(n, order)
    }

    /// The current value.
    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> u64 {
        self.n.load(order)
    }
}

counters! {
    /// Calls answered by a cached value.
    hits,
    /// Calls answered by a cached "not found".
    negative_hits,
    /// Calls that found nothing usable in the cache.
    misses,
    /// Loader runs (the function's body).
    loads,
    /// Loader runs that returned `Err` or panicked.
    load_errors,
    /// Times a call waited for another process's lease.
    lock_waits,
    /// Waits that reached `lock_ms` and loaded without the lease.
    lock_timeouts,
    /// Backend failures (connection, timeout, refused command); the call went to the loader.
    backend_errors,
    /// Backend calls skipped because the circuit breaker was open (the call went to the loader).
    backend_skipped,
    /// Stored bytes that could not be decoded (treated as a miss and overwritten).
    decode_errors,
    /// Loaded values not cached because they were larger than `max_value_bytes`.
    oversized,
    /// Keys deleted by `#[invalidates]`, including queued deletions delivered later.
    invalidations,
    /// Distinct keys (and tags) whose deletion failed and waits in the retry queue (a gauge;
    /// repeated invalidations of a waiting key count once).
    invalidations_pending,
    /// Keys whose deletion was given up (refused, retry window over, queue full, or not
    /// delivered by [`Cache::shutdown`](crate::Cache::shutdown)).
    invalidations_failed,
    /// Attempts of the retry queue that did not deliver (backend failed or circuit open);
    /// each one is followed by a backoff pause.
    invalidation_retries,
    /// Calls answered by a stale value: in the grace window of `stale = N` (the refresh runs
    /// in the background), after a soft timeout, or because a refresh failed (fail-safe).
    /// Not counted in `hits`.
    stale_served,
    /// Background refreshes started by this process (stale-while-revalidate and early
    /// refresh; each ran the loader once under the entry's refresh lease).
    refreshes,
    /// Of `refreshes`, those started early by XFetch (`early_refresh = B`) before expiry.
    early_refreshes,
    /// Refreshes whose loader returned `Err` or panicked: the stale value stays (fail-safe).
    refresh_errors,
    /// Calls that waited `timeout_ms` for a refresh and returned the stale value.
    soft_timeouts,
    /// Tags invalidated (`#[invalidates(.., tags = [..])]`, `Cache::invalidate_tag`).
    tag_invalidations,
    /// Calls answered from this process's near cache (`local_ttl = N`), without Redis. Not
    /// counted in `hits`.
    local_hits,
    /// Near-cache copies removed before their `local_ttl` ran out: by an invalidation push
    /// from Redis (another process's write, delete or expiry) or by an invalidation in this
    /// process. Copies dropped by a flush are not counted (see `tracking_resets`).
    local_evictions,
    /// Times the near cache was flushed and bypassed because its invalidation channel broke:
    /// a tracking connection dropped or failed its check, a node (on a cluster: a master or
    /// replica) had no tracking connection, or the cluster's topology changed; counted under
    /// the name `cache_runtime::near`.
    tracking_resets,
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
        let mut t = FnStats::default();
        self.functions.values().for_each(|s| t.add(s));
        t
    }
}

/// Remembers one cache's counters for a function, so that the hit path finds them without a
/// lock or a hash lookup.
#[derive(Debug)]
pub struct CounterSlot(OnceLock<(u64, Arc<Counters>)>);

impl CounterSlot {
    /// An empty slot.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        CounterSlot(OnceLock::new())
    }

    /// The counters of the registry `id`, if this slot holds them.
    #[inline]
    pub(crate) fn get(&self, id: u64) -> Option<&Counters> {
        match self.0.get() {
            Some((slot_id, c)) if *slot_id == id => Some(c),
            _ => None,
        }
    }

    /// Keeps `counters` of registry `id` if the slot is still empty.
    pub(crate) fn fill(&self, id: u64, counters: &Arc<Counters>) {
        let _ = self.0.set((id, counters.clone()));
    }
}

/// Counters found by [`Registry::for_slot`].
pub(crate) enum CountersRef<'a> {
    /// Held by a function's slot.
    Static(&'a Counters),
    /// From the registry.
    Shared(Arc<Counters>),
}

impl std::ops::Deref for CountersRef<'_> {
    type Target = Counters;
    #[inline]
    fn deref(&self) -> &Counters {
        match self {
            CountersRef::Static(c) => c,
            CountersRef::Shared(c) => c,
        }
    }
}

impl Counters {
    #[inline]
    pub(crate) fn bump(c: &Count) {
        c.fetch_add(1, Relaxed);
    }

    /// Records one loader run's duration (`cache_load_seconds{fn}`, `metrics` feature).
    #[inline]
    pub(crate) fn load_took(&self, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        self.load_seconds.record(took.as_secs_f64());
        let _ = took;
    }

    /// True the first time it is called for `flag`.
    pub(crate) fn first(flag: &AtomicBool) -> bool {
        !flag.load(Relaxed) && !flag.swap(true, Relaxed)
    }
}

/// Counters by function name. Bounded by the number of annotated functions in the program.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Unique per registry (per cache), for [`CounterSlot`].
    id: u64,
    by_name: RwLock<HashMap<&'static str, Arc<Counters>>>,
}

impl Default for Registry {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Registry {
            id: NEXT_ID.fetch_add(1, Relaxed),
            by_name: RwLock::default(),
        }
    }
}

impl Registry {
    /// The counters of function `name`: lock-free when the function's static `slot` belongs
    /// to this registry (the common case of one cache per function).
    #[inline]
    pub(crate) fn for_slot<'a>(
        &self,
        slot: &'a CounterSlot,
        name: &'static str,
    ) -> CountersRef<'a> {
        if let Some(c) = slot.get(self.id) {
            return CountersRef::Static(c);
        }
        let c = self.counters(name);
        slot.fill(self.id, &c);
        CountersRef::Shared(c)
    }

    pub(crate) fn counters(&self, name: &'static str) -> Arc<Counters> {
        if let Ok(map) = self.by_name.read()
            && let Some(c) = map.get(name)
        {
            return c.clone();
        }
        let mut map = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        map.entry(name)
            .or_insert_with(|| Arc::new(Counters::new(name)))
            .clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_sums_every_counter() {
        let r = Registry::default();
        for name in ["a", "b"] {
            let c = r.counters(name);
            Counters::bump(&c.hits);
            Counters::bump(&c.backend_skipped);
            Counters::bump(&c.invalidations_failed);
        }
        let t = r.snapshot().total();
        assert_eq!(
            (t.hits, t.backend_skipped, t.invalidations_failed),
            (2, 2, 2)
        );
    }
}
