//! [`CacheBuilder`]: configures and builds a [`Cache`] (and [`Cache::builder`]).

use std::time::Duration;

use crate::backend::redis::RedisOptions;
use crate::backend::{AnyBackend, MemoryBackend, RedisBackend, RedisClusterBackend};
use std::sync::Arc;

use crate::breaker::{Breaker, BreakerConfig};
use crate::cache::{
    Cache, DEFAULT_LOCK_MS, DEFAULT_MAX_VALUE_BYTES, DEFAULT_MEMORY_MAX_BYTES, DEFAULT_NAMESPACE,
    MAX_LOCK_MS,
};
use crate::codec::Codec;
use crate::engine::{Engine, Settings};
use crate::error::{BackendError, Error};
use crate::retry::Retrier;
use crate::retry::RetryConfig;
use crate::store::Store;

impl Cache {
    /// Starts configuring a cache (memory backend, namespace `"cache"`, `lock_ms` 5000).
    pub fn builder() -> crate::builder::CacheBuilder {
        CacheBuilder::default()
    }

    pub(crate) fn from_backend(backend: AnyBackend, b: &CacheBuilder) -> Cache {
        let store = Store {
            backend,
            breaker: Arc::new(Breaker::new(b.breaker)),
        };
        let retrier = Retrier::new(b.retry, store.clone(), crate::invalidation::deliver_queued);
        let settings = Settings {
            namespace: b.namespace.clone(),
            lock_ms: b.lock_ms,
            codec: b.codec,
            max_value_bytes: b.max_value_bytes,
            xfetch_seed: b.xfetch_seed,
        };
        Cache {
            engine: Arc::new(Engine::new(store, retrier, settings)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum BackendChoice {
    Memory,
    Redis(String),
    Cluster(Vec<String>),
}

/// Configures and builds a [`Cache`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `.build().await`"]
pub struct CacheBuilder {
    pub(crate) backend: BackendChoice,
    pub(crate) namespace: String,
    pub(crate) lock_ms: u64,
    pub(crate) codec: Codec,
    pub(crate) memory_max_bytes: u64,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) require_connection: bool,
    pub(crate) tls_root_ca_pem: Option<Vec<u8>>,
    pub(crate) max_value_bytes: usize,
    pub(crate) breaker: BreakerConfig,
    pub(crate) retry: RetryConfig,
    pub(crate) xfetch_seed: Option<u64>,
    pub(crate) local_capacity: u64,
    pub(crate) tracking_check_interval: Duration,
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

    pub(crate) fn build_memory(&self) -> Cache {
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
    fn attach_near(&self, cache: &Cache, tracking: Option<crate::backend::TrackingTarget>) {
        if self.local_capacity > 0
            && let Some(target) = tracking
        {
            let counters = cache.engine.counters(crate::near::NEAR_STATS_NAME);
            let near = crate::near::Near::new(
                self.local_capacity,
                target,
                self.tracking_check_interval,
                &self.namespace,
                counters,
            );
            cache.engine.attach_near(near);
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
            cache.engine.store().breaker.trip();
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MAX_LOCK_MS;

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
