//! Fixtures shared by the test binaries: [`TestEnv`] (a cache with the server behind it, or the
//! memory backend) and [`backend_tests!`](crate::backend_tests), the report of the
//! `stampede-helper` binary, and [`Db`], the database stand-in the loaders read.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Cache, CacheBuilder, Raw, RedisServer};

/// Namespace used by every [`TestEnv`] cache.
pub const TEST_NAMESPACE: &str = "itest";

/// Which backend a [`TestEnv`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A private `redis-server` started by the harness.
    Redis,
    /// The in-process memory backend.
    Memory,
}

/// A [`Cache`] for one test, with the Redis server behind it (kept alive as long as the env).
#[derive(Debug)]
pub struct TestEnv {
    /// The cache under test (namespace [`TEST_NAMESPACE`]).
    pub cache: Cache,
    /// The server, for the Redis backend.
    pub server: Option<RedisServer>,
    /// Which backend this is.
    pub backend: Backend,
}

impl TestEnv {
    /// A cache on `backend` with the builder's defaults and namespace [`TEST_NAMESPACE`].
    pub async fn new(backend: Backend) -> TestEnv {
        Self::with(backend, |b| b).await
    }

    /// Like [`TestEnv::new`], with extra builder settings (e.g. `|b| b.lock_ms(60_000)`).
    pub async fn with(
        backend: Backend,
        configure: impl FnOnce(CacheBuilder) -> CacheBuilder,
    ) -> TestEnv {
        let (builder, server) = match backend {
            Backend::Redis => {
                let server = RedisServer::start();
                (Cache::builder().redis(server.url()), Some(server))
            }
            Backend::Memory => (Cache::builder().memory(), None),
        };
        let cache = configure(builder.namespace(TEST_NAMESPACE))
            .build()
            .await
            .unwrap_or_else(|e| panic!("building the {backend:?} cache failed: {e:?}"));
        TestEnv {
            cache,
            server,
            backend,
        }
    }

    /// Whether this env runs on Redis.
    pub fn is_redis(&self) -> bool {
        self.backend == Backend::Redis
    }

    /// A raw connection to the Redis server (`None` for the memory backend).
    pub async fn raw(&self) -> Option<Raw> {
        match &self.server {
            Some(server) => Some(server.raw().await),
            None => None,
        }
    }

    /// The server (panics for the memory backend).
    pub fn server(&mut self) -> &mut RedisServer {
        self.server
            .as_mut()
            .expect("this test needs the Redis backend")
    }
}

/// Generates one `#[tokio::test]` per backend for each listed scenario.
///
/// Each scenario is an `async fn name(env: TestEnv)` in the calling module; the macro creates
/// `on_redis::name` and `on_memory::name`, each on a 4-worker multi-thread runtime with its own
/// [`TestEnv`]. An optional `with |b| ...` clause configures the cache builder.
///
/// ```ignore
/// async fn hit_after_first_call(env: TestEnv) { /* ... */ }
/// cache_tests::backend_tests!(hit_after_first_call);
/// cache_tests::backend_tests!(with |b| b.lock_ms(60_000); panicking_loader);
/// ```
#[macro_export]
macro_rules! backend_tests {
    (with $cfg:expr; $($name:ident),+ $(,)?) => {
        $crate::backend_tests!(@module on_redis, Redis, $cfg; $($name),+);
        $crate::backend_tests!(@module on_memory, Memory, $cfg; $($name),+);
    };
    ($($name:ident),+ $(,)?) => {
        $crate::backend_tests!(with |b| b; $($name),+);
    };
    (@module $module:ident, $backend:ident, $cfg:expr; $($name:ident),+) => {
        mod $module {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let env = $crate::TestEnv::with($crate::Backend::$backend, $cfg).await;
                    super::$name(env).await
                }
            )+
        }
    };
}
/// Milliseconds since the Unix epoch (for starting several helper processes together).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The line the `stampede-helper` binary prints on stdout (one JSON object).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HelperReport {
    /// The helper's process id.
    pub pid: u32,
    /// The value every call returned, in call order (`None` for a call that failed).
    pub values: Vec<Option<String>>,
    /// Loader runs in this process (the global count is the Redis counter).
    pub local_loads: usize,
    /// Calls of this process that missed (found no entry).
    #[serde(default)]
    pub misses: u64,
    /// Times this process waited on another process's lease.
    #[serde(default)]
    pub lock_waits: u64,
}
