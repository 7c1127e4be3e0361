//! The [`Engine`]: the state one cache's calls share (the store behind its breaker, the
//! in-process flights, the counters, the retry queue, the near cache, the settings), behind
//! methods. The handle ([`Cache`](crate::Cache)) is an `Arc<Engine>`; the call path, the
//! programmatic API, the builder and the macros' entry points reach the state only through
//! these methods, so what a call may touch (and how a default is resolved) is said once.

use std::sync::{Arc, Mutex, OnceLock};

use crate::codec::Codec;
use crate::flight::Flights;
use crate::invalidation::Scope;
use crate::near::Near;
use crate::retry::Retrier;
use crate::spec::FnSpec;
use crate::stats::{Counters, Registry};
use crate::store::Store;

/// Rendered keys starting with this are tag member sets (the macros reject such templates).
pub(crate) const RESERVED_PREFIX: &str = "!tag:";

/// What the builder decided, handed to [`Engine::new`].
pub(crate) struct Settings {
    pub(crate) namespace: String,
    pub(crate) lock_ms: u64,
    pub(crate) codec: Codec,
    pub(crate) max_value_bytes: usize,
    pub(crate) xfetch_seed: Option<u64>,
}

/// One cache's shared state; see the module docs.
pub(crate) struct Engine {
    store: Store,
    namespace: String,
    lock_ms: u64,
    codec: Codec,
    max_value_bytes: usize,
    /// Loads running in this process, one per key.
    flights: Flights,
    /// Background refreshes running in this process, one per key.
    refreshing: Flights,
    /// XFetch's random source when seeded (`CacheBuilder::xfetch_seed`).
    rng: Option<Mutex<rand::rngs::StdRng>>,
    stats: Registry,
    retrier: Retrier,
    /// The near cache (`local_ttl = N`): Redis (one server or a cluster) with
    /// `local_capacity > 0` only; set once, by the builder.
    near: OnceLock<Arc<Near>>,
}

impl Engine {
    pub(crate) fn new(store: Store, retrier: Retrier, s: Settings) -> Engine {
        Engine {
            store,
            namespace: s.namespace,
            lock_ms: s.lock_ms,
            codec: s.codec,
            max_value_bytes: s.max_value_bytes,
            flights: Flights::default(),
            refreshing: Flights::default(),
            rng: s.xfetch_seed.map(|seed| {
                Mutex::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(
                    seed,
                ))
            }),
            stats: Registry::default(),
            retrier,
            near: OnceLock::new(),
        }
    }

    /// The backend behind the circuit breaker.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The key prefix.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The codec values are stored with.
    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    /// Largest serialized value that is stored.
    pub(crate) fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// The cache's default lease length (`CacheBuilder::lock_ms`).
    pub(crate) fn default_lock_ms(&self) -> u64 {
        self.lock_ms
    }

    /// The lease length of `spec`'s entries: its own `lock`, else the cache's; at least 1 ms.
    pub(crate) fn lease_ms(&self, spec: &FnSpec) -> u64 {
        spec.lock_ms.unwrap_or(self.lock_ms).max(1)
    }

    /// The per-function counters.
    pub(crate) fn stats(&self) -> &Registry {
        &self.stats
    }

    /// The counters of the function (or API name) `name`.
    pub(crate) fn counters(&self, name: &'static str) -> Arc<Counters> {
        self.stats.counters(name)
    }

    /// The loads running in this process, one per key.
    pub(crate) fn flights(&self) -> &Flights {
        &self.flights
    }

    /// The background refreshes running in this process, one per key.
    pub(crate) fn refreshing(&self) -> &Flights {
        &self.refreshing
    }

    /// Detaches this process's load and refresh of `full` (an invalidation started): neither
    /// stores its result, and later callers do not join them.
    pub(crate) fn void(&self, full: &str) {
        self.flights.void(full);
        self.refreshing.void(full);
    }

    /// The retry queue of undelivered invalidations.
    pub(crate) fn retrier(&self) -> &Retrier {
        &self.retrier
    }

    /// The near cache, if this cache has one.
    pub(crate) fn near(&self) -> Option<&Arc<Near>> {
        self.near.get()
    }

    /// Gives this cache its near cache (the builder does, once; later calls are ignored).
    pub(crate) fn attach_near(&self, near: Arc<Near>) {
        let _ = self.near.set(near);
    }

    /// What an invalidation touches: the store, both flight maps, the near cache, the queue.
    pub(crate) fn scope(&self) -> Scope<'_> {
        Scope {
            store: &self.store,
            flights: [&self.flights, &self.refreshing],
            near: self.near().map(|n| &**n),
            retrier: &self.retrier,
        }
    }

    /// A uniform draw in `(0, 1]` for XFetch.
    pub(crate) fn uniform(&self) -> f64 {
        use rand::Rng as _;
        let x: f64 = match &self.rng {
            Some(m) => m.lock().unwrap_or_else(|p| p.into_inner()).random(),
            None => rand::random(),
        };
        1.0 - x
    }

    /// The stored key for a rendered template: `<namespace>:<rendered>`.
    pub(crate) fn full_key(&self, rendered: &str) -> String {
        let mut k = String::with_capacity(self.namespace.len() + 1 + rendered.len());
        k.push_str(&self.namespace);
        k.push(':');
        k.push_str(rendered);
        k
    }

    /// The full key of a tag's member set: `<namespace>:!tag:<rendered tag>`.
    pub(crate) fn tag_key(&self, rendered: &str) -> String {
        let mut k = String::with_capacity(self.namespace.len() + 6 + rendered.len());
        k.push_str(&self.namespace);
        k.push(':');
        k.push_str(RESERVED_PREFIX);
        k.push_str(rendered);
        k
    }
}
