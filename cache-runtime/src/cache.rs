//! The [`Cache`] handle, its [`CacheBuilder`], and the process-wide installed cache.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::redis::RedisOptions;
use crate::backend::{AnyBackend, MemoryBackend, RedisBackend, RedisClusterBackend};
use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::codec::Codec;
use crate::error::Error;
use crate::error::{BackendError, BackendErrorKind};
use crate::flight::Flights;
use crate::retry::{Retrier, RetryConfig};
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
    /// Starts configuring a cache (memory backend, namespace `"cache"`, `lock_ms` 5000).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

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

    pub(crate) fn from_backend(backend: AnyBackend, b: &CacheBuilder) -> Cache {
        let store = Store {
            backend,
            breaker: Arc::new(Breaker::new(b.breaker)),
        };
        Cache {
            inner: Arc::new(Inner {
                retrier: Retrier::new(b.retry, store.clone(), crate::invalidation::deliver_queued),
                store,
                namespace: b.namespace.clone(),
                lock_ms: b.lock_ms,
                codec: b.codec,
                max_value_bytes: b.max_value_bytes,
                flights: Flights::default(),
                refreshing: Flights::default(),
                rng: b.xfetch_seed.map(|seed| {
                    std::sync::Mutex::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(
                        seed,
                    ))
                }),
                stats: Registry::default(),
                near: OnceLock::new(),
            }),
        }
    }
}

#[derive(Debug, Clone)]
enum BackendChoice {
    Memory,
    Redis(String),
    Cluster(Vec<String>),
}

/// Configures and builds a [`Cache`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `.build().await`"]
pub struct CacheBuilder {
    backend: BackendChoice,
    namespace: String,
    lock_ms: u64,
    codec: Codec,
    memory_max_bytes: u64,
    command_timeout: Duration,
    connect_timeout: Duration,
    require_connection: bool,
    tls_root_ca_pem: Option<Vec<u8>>,
    max_value_bytes: usize,
    breaker: BreakerConfig,
    retry: RetryConfig,
    xfetch_seed: Option<u64>,
    local_capacity: u64,
    tracking_check_interval: Duration,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the Redis URL: it may hold a password.
        let backend = match self.backend {
            BackendChoice::Memory => "memory",
            BackendChoice::Redis(_) => "redis",
            BackendChoice::Cluster(_) => "redis-cluster",
        };
        f.debug_struct("CacheBuilder")
            .field("backend", &backend)
            .field("namespace", &self.namespace)
            .field("lock_ms", &self.lock_ms)
            .finish_non_exhaustive()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            backend: BackendChoice::Memory,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            lock_ms: DEFAULT_LOCK_MS,
            codec: Codec::Json,
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            require_connection: false,
            tls_root_ca_pem: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            xfetch_seed: None,
            local_capacity: crate::near::DEFAULT_LOCAL_CAPACITY,
            tracking_check_interval: crate::near::DEFAULT_CHECK_INTERVAL,
        }
    }
}

impl CacheBuilder {
    /// Use Redis at `url` (`redis://[user:password@]host:port[/db]`).
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.backend = BackendChoice::Redis(url.into());
        self
    }

    /// Use the Redis Cluster reached through the seed nodes `urls` (e.g.
    /// `["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]`; `rediss://` for TLS with the `tls`
    /// feature, `redis://user:password@host:port` for ACL users; every node with the same
    /// credentials). The other nodes are discovered from the seeds.
    ///
    /// Every step of the protocol is a single-key command or a one-key Lua script, so each
    /// goes to the master owning its key's slot; an invalidation of several keys sends one
    /// `UNLINK` per slot. redis-rs (`cluster-async`) follows `MOVED`/`ASK` and refreshes its
    /// slot map after a failover; while a slot has no reachable master (`-CLUSTERDOWN`,
    /// `-TRYAGAIN`, `-LOADING`, a refused connection), reads go to the loader as with a single
    /// server that is down, and `#[invalidates]` deletions wait in the retry queue until the
    /// cluster answers again.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cache_runtime::Error> {
    /// let cache = cache_runtime::Cache::builder()
    ///     .redis_cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
    ///     .namespace("app:v1")
    ///     .build()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_cluster<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.backend = BackendChoice::Cluster(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Use the in-process memory backend (the default).
    pub fn memory(mut self) -> Self {
        self.backend = BackendChoice::Memory;
        self
    }

    /// Key prefix: every key is stored as `<namespace>:<rendered template>`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Default stampede lease length in milliseconds (functions may override with `lock_ms`).
    pub fn lock_ms(mut self, ms: u64) -> Self {
        self.lock_ms = ms;
        self
    }

    /// Value serialization format (default [`Codec::Json`]).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Bound of the memory backend in bytes of keys and values (default 64 MiB).
    pub fn memory_max_bytes(mut self, bytes: u64) -> Self {
        self.memory_max_bytes = bytes;
        self
    }

    /// Timeout of each Redis command (default 500 ms).
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    /// Timeout of each Redis connection attempt (default 1 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Fail `build()` when Redis cannot be reached. By default a Redis cache that cannot
    /// connect at start-up is built anyway, with its circuit open: calls go to their loaders
    /// until Redis answers, and nothing needs a restart.
    pub fn require_connection(mut self) -> Self {
        self.require_connection = true;
        self
    }

    /// Trust these PEM root certificates for `rediss://` (instead of the system store).
    /// Needs the `tls` feature.
    pub fn tls_root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_ca_pem = Some(pem.into());
        self
    }

    /// Largest serialized value that is cached (default 1 MiB); larger values are returned
    /// but not stored, and counted as `oversized`.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Circuit breaker: open after `failures` consecutive backend failures, skip the backend
    /// for `cool_down`, then probe with one call (default 3 failures, 1 s).
    pub fn circuit_breaker(mut self, failures: u32, cool_down: Duration) -> Self {
        self.breaker = BreakerConfig {
            threshold: failures.max(1),
            cool_down,
        };
        self
    }

    /// How long a failed invalidation is retried in the background (default 5 minutes), and
    /// how many distinct keys and tags may wait for it (default 10 000). A key or tag that is
    /// invalidated again while it waits takes no new place (its retry window starts again);
    /// an invalidation that finds the queue full is counted in `invalidations_failed`.
    pub fn invalidation_retry(mut self, retry_for: Duration, max_queued: usize) -> Self {
        self.retry.capacity = max_queued.max(1);
        self.retry.retry_for = retry_for;
        self
    }

    /// Pauses between the retries of a failed invalidation: `first` after the first failed
    /// retry, doubling up to `max` (default 50 ms and 2 s). Whatever the pause, the queue
    /// retries at once when the backend recovers (the first successful call after failures).
    pub fn invalidation_retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry.first_pause = first;
        self.retry.max_pause = max;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.namespace.is_empty() {
            return Err(Error::Config("namespace must not be empty".into()));
        }
        if self
            .namespace
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Config(
                "namespace must not contain whitespace or control characters".into(),
            ));
        }
        if self.lock_ms == 0 || self.lock_ms > MAX_LOCK_MS {
            return Err(Error::Config(format!(
                "lock_ms must be in 1..={MAX_LOCK_MS} (it is the stampede lease length in milliseconds)"
            )));
        }
        if self.tracking_check_interval.is_zero() {
            return Err(Error::Config(
                "tracking_check_interval must be greater than 0".into(),
            ));
        }
        if self.command_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::Config("timeouts must be greater than 0".into()));
        }
        if self.retry.first_pause.is_zero() || self.retry.max_pause < self.retry.first_pause {
            return Err(Error::Config(
                "invalidation_retry_backoff: the first pause must be greater than 0 and not above the max".into(),
            ));
        }
        Ok(())
    }

    fn build_memory(&self) -> Cache {
        Cache::from_backend(
            AnyBackend::Memory(MemoryBackend::new(self.memory_max_bytes)),
            self,
        )
    }

    /// Bounds the near cache of `#[cached(.., local_ttl = N)]` functions: `bytes` of keys
    /// plus the serialized size of the values (default 64 MiB); `0` disables it (those
    /// functions then read Redis on every call). A single Redis server and a Redis Cluster
    /// have a near cache; on the memory backend (already in process) `local_ttl` is a
    /// pass-through.
    pub fn local_capacity(mut self, bytes: u64) -> Self {
        self.local_capacity = bytes;
        self
    }

    /// How often the near cache's tracking connections are checked (default 500 ms): a `PING`
    /// on a single server; on a cluster a `CLUSTER NODES` on every node, which also re-reads
    /// the topology. A connection that closes is noticed at once, one that stops answering
    /// within this interval plus 1 s; a topology change flushes the near cache at the next
    /// check.
    pub fn tracking_check_interval(mut self, every: Duration) -> Self {
        self.tracking_check_interval = every;
        self
    }

    /// Seeds the random source of early refresh (`early_refresh = B`), so that its decisions
    /// repeat from run to run (tests). By default each decision draws from the thread's RNG.
    #[cfg(feature = "test-util")]
    pub fn xfetch_seed(mut self, seed: u64) -> Self {
        self.xfetch_seed = Some(seed);
        self
    }

    /// Builds the cache. For Redis, it opens one shared connection that reconnects by
    /// itself; when Redis is unreachable the cache starts with its circuit open (or, with
    /// [`require_connection`](Self::require_connection), `build` fails).
    pub async fn build(self) -> Result<Cache, Error> {
        self.validate()?;
        match &self.backend {
            BackendChoice::Memory => Ok(self.build_memory()),
            BackendChoice::Redis(url) => {
                let backend = RedisBackend::new(url, self.redis_options())?;
                let tracking = backend.tracking_target();
                let reachable = backend.ping().await;
                let cache = self.finish_redis(AnyBackend::Redis(backend), reachable)?;
                self.attach_near(&cache, tracking);
                Ok(cache)
            }
            BackendChoice::Cluster(urls) => {
                let backend = RedisClusterBackend::new_cluster(urls, self.redis_options())?;
                let tracking = backend.tracking_target();
                let reachable = backend.ping().await;
                let cache = self.finish_redis(AnyBackend::Cluster(backend), reachable)?;
                self.attach_near(&cache, tracking);
                Ok(cache)
            }
        }
    }

    /// Gives `cache` a near cache (unless `local_capacity` is 0); its tracking starts when the
    /// first `local_ttl` function runs.
    fn attach_near(&self, cache: &Cache, tracking: Option<crate::near::TrackingTarget>) {
        if self.local_capacity > 0
            && let Some(target) = tracking
        {
            let counters = cache.inner.stats.counters(crate::near::NEAR_STATS_NAME);
            let near = crate::near::Near::new(
                self.local_capacity,
                target,
                self.tracking_check_interval,
                &self.namespace,
                counters,
            );
            let _ = cache.inner.near.set(near);
        }
    }

    fn redis_options(&self) -> RedisOptions {
        RedisOptions {
            command_timeout: self.command_timeout,
            connect_timeout: self.connect_timeout,
            tls_root_ca_pem: self.tls_root_ca_pem.clone(),
        }
    }

    fn finish_redis(
        &self,
        backend: AnyBackend,
        reachable: Result<(), BackendError>,
    ) -> Result<Cache, Error> {
        let cache = Cache::from_backend(backend, self);
        if let Err(e) = reachable {
            if self.require_connection {
                return Err(Error::Backend(e));
            }
            tracing::warn!(error = %e, "Redis unreachable at start-up; starting with the circuit open");
            cache.inner.store.breaker.trip();
        }
        Ok(cache)
    }
}

static INSTALLED: OnceLock<Cache> = OnceLock::new();
static DEFAULT: OnceLock<Cache> = OnceLock::new();

/// Installs `cache` as the process-wide cache used by `#[cached]` / `#[invalidates]`
/// functions that have no `cache = ..` argument.
///
/// Call it once at start-up; a second call returns [`Error::AlreadyInstalled`]. Before it is
/// called, those functions use an in-process memory cache.
pub fn install(cache: Cache) -> Result<(), Error> {
    INSTALLED.set(cache).map_err(|_| Error::AlreadyInstalled)
}

/// The installed cache, or the in-process memory default when none is installed.
pub fn global() -> &'static Cache {
    match INSTALLED.get() {
        Some(c) => c,
        None => DEFAULT.get_or_init(|| CacheBuilder::default().build_memory()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builder_rejects_bad_settings_with_clear_errors() {
        for b in [
            Cache::builder().namespace(""),
            Cache::builder().namespace("a b"),
            Cache::builder().lock_ms(0),
            Cache::builder().lock_ms(MAX_LOCK_MS + 1),
            Cache::builder().command_timeout(Duration::ZERO),
            Cache::builder().tracking_check_interval(Duration::ZERO),
            Cache::builder().invalidation_retry_backoff(Duration::ZERO, Duration::from_secs(1)),
            Cache::builder()
                .invalidation_retry_backoff(Duration::from_secs(2), Duration::from_secs(1)),
        ] {
            let err = b.build().await.expect_err("invalid setting");
            assert!(matches!(err, Error::Config(_)), "{err}");
        }
        assert!(Cache::builder().lock_ms(MAX_LOCK_MS).build().await.is_ok());
    }

    #[tokio::test]
    async fn invalid_redis_url_is_an_error_without_the_url() {
        let err = Cache::builder()
            .redis("redis://:hunter2@[not a host")
            .build()
            .await
            .expect_err("bad URL");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }
}
