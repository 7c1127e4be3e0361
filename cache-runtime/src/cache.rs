//! The [`Cache`] handle (built by [`CacheBuilder`](crate::CacheBuilder)).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::AnyBackend;
use crate::breaker::BreakerState;
use crate::codec::Codec;
use crate::error::Error;
use crate::error::{BackendError, BackendErrorKind};
use crate::flight::Flights;
use crate::retry::Retrier;
use crate::stats::{Counters, Registry, Stats};
use crate::store::{Fault, Store};

/// Default stampede lease length.
pub const DEFAULT_LOCK_MS: u64 = 5000;
/// Longest stampede lease accepted by the builder: one hour.
pub const MAX_LOCK_MS: u64 = 3_600_000;
/// Default namespace (key prefix).
pub const DEFAULT_NAMESPACE: &str = "cache";
/// Default bound of the in-memory backend: 64 MiB of keys and values.
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default largest value that is cached: 1 MiB (serialized).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// A cache: a backend (Redis or in-process memory), a namespace, defaults and counters.
///
/// Cheap to clone (an `Arc` inside); clones share everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cache_runtime::Error> {
/// use cache_runtime::Cache;
///
/// let cache = Cache::builder().memory().namespace("app:v1").build().await?;
/// assert_eq!(cache.full_key("user:7"), "app:v1:user:7");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

/// Rendered keys starting with this are tag member sets (the macros reject such templates).
pub(crate) const RESERVED_PREFIX: &str = "!tag:";

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) namespace: String,
    pub(crate) lock_ms: u64,
    pub(crate) codec: Codec,
    pub(crate) max_value_bytes: usize,
    pub(crate) flights: Flights,
    /// Background refreshes running in this process, one per key.
    pub(crate) refreshing: Flights,
    /// XFetch's random source when seeded ([`CacheBuilder::xfetch_seed`]).
    pub(crate) rng: Option<std::sync::Mutex<rand::rngs::StdRng>>,
    pub(crate) stats: Registry,
    pub(crate) retrier: Retrier,
    /// The near cache (`local_ttl = N`): Redis (one server or a cluster) with
    /// `local_capacity > 0` only.
    pub(crate) near: OnceLock<Arc<crate::near::Near>>,
}

impl Inner {
    /// A uniform draw in `(0, 1]` for XFetch.
    pub(crate) fn uniform(&self) -> f64 {
        use rand::Rng as _;
        let x: f64 = match &self.rng {
            Some(m) => m.lock().unwrap_or_else(|p| p.into_inner()).random(),
            None => rand::random(),
        };
        1.0 - x
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

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Cache");
        d.field("namespace", &self.inner.namespace)
            .field("lock_ms", &self.inner.lock_ms);
        match &self.inner.store.backend {
            AnyBackend::Memory(m) => d.field("backend", m),
            AnyBackend::Redis(r) => d.field("backend", r),
            AnyBackend::Cluster(r) => d.field("backend", r),
        };
        d.finish()
    }
}

impl Cache {
    /// Test hook, not a stable API: `hook` is called with the keys of every invalidation push
    /// this cache's near cache processes, after it evicted them (a `null` push, a flush,
    /// names no key). `false` when this cache has no near cache or a hook is set already.
    /// The history checker uses it to see when a process has processed the push of a write.
    #[doc(hidden)]
    #[cfg(feature = "test-util")]
    pub fn __on_near_push(&self, hook: impl Fn(&[String]) + Send + Sync + 'static) -> bool {
        match self.inner.near.get() {
            Some(near) => near.set_push_hook(Box::new(hook)),
            None => false,
        }
    }

    /// The per-function counters of this cache.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The backend's name: `"memory"`, `"redis"` or `"redis-cluster"`.
    pub fn backend_kind(&self) -> &'static str {
        self.inner.store.backend.kind()
    }

    /// The circuit breaker's state: `Open` while the backend is being skipped.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.store.breaker.state()
    }

    /// The stored key for a rendered template: `<namespace>:<rendered>`.
    pub fn full_key(&self, rendered: &str) -> String {
        let ns = &self.inner.namespace;
        let mut k = String::with_capacity(ns.len() + 1 + rendered.len());
        k.push_str(ns);
        k.push(':');
        k.push_str(rendered);
        k
    }

    /// Deletes the entry (value, negative entry or lease) for a rendered key such as `"user:7"`.
    ///
    /// A load that started before this call will not store its result afterwards.
    ///
    /// Unlike `#[invalidates]`, a backend failure (or an open circuit) is returned to the
    /// caller, not queued for retry.
    pub async fn invalidate(&self, rendered_key: &str) -> Result<(), Error> {
        if rendered_key.starts_with(RESERVED_PREFIX) {
            return Err(Error::Config(format!(
                "keys starting with `{RESERVED_PREFIX}` are reserved for tag member sets; use `invalidate_tag`"
            )));
        }
        let full = self.full_key(rendered_key);
        self.inner.flights.void(&full);
        self.inner.refreshing.void(&full);
        let target = [crate::retry::Target::Key(full.clone())];
        let near = self.inner.near.get().map(|n| &**n);
        crate::invalidation::near_evict(near, &target);
        let deleted = self.inner.store.delete(std::slice::from_ref(&full)).await;
        crate::invalidation::near_evict(near, &target);
        match deleted {
            Ok(_) => Ok(()),
            Err(Fault::Failed(e)) => Err(Error::Backend(e)),
            Err(Fault::Skipped) => Err(Error::Backend(BackendError::new(
                BackendErrorKind::Connection,
                "circuit open: the backend is skipped after repeated failures",
            ))),
        }
    }

    /// Voids every entry carrying the rendered tag `tag` (e.g. `"org:7"` for
    /// `tags = ["org:{org_id}"]`), in this process's flights and in the backend: a read that
    /// starts after this returned never gets an entry that carried the tag when it was
    /// called, and a load of such an entry that is running now does not store its result.
    ///
    /// Deletes the tag's members in batches (`ZSCAN` + `UNLINK` over the tag's own set, never a scan of the keyspace): the cost is
    /// proportional to the tag's members. Like [`invalidate`](Self::invalidate), a backend
    /// failure is returned (the entries already deleted stay deleted), not queued.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use cache_runtime::{cached, Cache};
    ///
    /// #[cached(key = "user:{id}", ttl = 60, tags = ["org:{org}"], cache = cache)]
    /// async fn user(cache: &Cache, org: u64, id: u64) -> String {
    ///     format!("user {id} of org {org}")
    /// }
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// user(&cache, 7, 1).await;
    /// cache.invalidate_tag("org:7").await?;
    /// assert_eq!(cache.stats().total().tag_invalidations, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), Error> {
        let c = self.inner.stats.counters("cache_runtime::invalidate_tag");
        let inner = &*self.inner;
        let flights = [&inner.flights, &inner.refreshing];
        let near = inner.near.get().map(|n| &**n);
        match crate::invalidation::void_tag(&inner.store, &flights, near, &inner.tag_key(tag)).await
        {
            Ok(()) => {
                Counters::bump(&c.tag_invalidations);
                Ok(())
            }
            Err(Fault::Failed(e)) => Err(Error::Backend(e)),
            Err(Fault::Skipped) => Err(Error::Backend(BackendError::new(
                BackendErrorKind::Connection,
                "circuit open: the backend is skipped after repeated failures",
            ))),
        }
    }

    /// Delivers the invalidations waiting in the retry queue, then closes the queue: call it
    /// when a service stops (after its server stopped taking requests), so that a write made
    /// during a Redis outage does not leave a stale entry behind.
    ///
    /// Waits until every queued deletion is delivered (retrying at once, then at short
    /// intervals) or `timeout` passes; then gives up the rest and returns
    /// [`Error::Undelivered`] with the number of keys not delivered (also counted in
    /// `invalidations_failed`, like keys given up during the wait). Returns at once when nothing
    /// is queued.
    ///
    /// Afterwards the cache still works (lookups, loads, `#[invalidates]`,
    /// [`invalidate`](Self::invalidate)), but a failed `#[invalidates]` deletion is no longer
    /// queued: it is logged and counted in `invalidations_failed` at once (the queue's worker
    /// thread stops retrying, and ends when the cache's last handle is dropped). This applies
    /// to every clone of this cache; calling it again reports only the keys given up during
    /// that second call (none when nothing is queued).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// use cache_runtime::Cache;
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// // ... serve requests; on SIGTERM, stop the server, then:
    /// match cache.shutdown(Duration::from_secs(5)).await {
    ///     Ok(()) => {}
    ///     Err(e) => eprintln!("some invalidations were lost: {e}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.inner.retrier.shutdown(timeout).await
    }
}
