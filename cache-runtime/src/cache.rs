//! The [`Cache`] handle (built by [`CacheBuilder`](crate::CacheBuilder)).

use std::sync::Arc;
use std::time::Duration;

use crate::backend::AnyBackend;
use crate::breaker::BreakerState;
use crate::engine::Engine;
use crate::error::Error;
use crate::stats::{Counters, Stats};

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
    pub(crate) engine: Arc<Engine>,
}

pub(crate) use crate::engine::RESERVED_PREFIX;

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Cache");
        d.field("namespace", &self.engine.namespace())
            .field("lock_ms", &self.engine.default_lock_ms());
        match &self.engine.store().backend {
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
        match self.engine.near() {
            Some(near) => near.set_push_hook(Box::new(hook)),
            None => false,
        }
    }

    /// The per-function counters of this cache.
    pub fn stats(&self) -> Stats {
        self.engine.stats().snapshot()
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        self.engine.namespace()
    }

    /// The backend's name: `"memory"`, `"redis"` or `"redis-cluster"`.
    pub fn backend_kind(&self) -> &'static str {
        self.engine.store().backend.kind()
    }

    /// The circuit breaker's state: `Open` while the backend is being skipped.
    pub fn breaker_state(&self) -> BreakerState {
        self.engine.store().breaker.state()
    }

    /// The stored key for a rendered template: `<namespace>:<rendered>`.
    pub fn full_key(&self, rendered: &str) -> String {
        self.engine.full_key(rendered)
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
        self.engine.void(&full);
        let target = [crate::retry::Target::Key(full.clone())];
        let sc = self.engine.scope();
        crate::invalidation::near_evict(sc.near, &target);
        let deleted = sc.store.delete(std::slice::from_ref(&full)).await;
        crate::invalidation::near_evict(sc.near, &target);
        deleted.map(drop).map_err(Error::from)
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
        let c = self.engine.counters("cache_runtime::invalidate_tag");
        let sc = self.engine.scope();
        crate::invalidation::void_tag(sc.store, &sc.flights, sc.near, &self.engine.tag_key(tag))
            .await?;
        Counters::bump(&c.tag_invalidations);
        Ok(())
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
        self.engine.retrier().shutdown(timeout).await
    }
}
