//! Fixtures shared by the test binaries: [`TestEnv`] (a cache with the server behind it, or the
//! memory backend) and [`backend_tests!`](crate::backend_tests), the report of the
//! `stampede-helper` binary, and [`Db`], the database stand-in the loaders read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore};

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

/// The database stand-in the loaders of the tests read and their writers change.
///
/// It holds a version of the whole database ([`Db::version`], [`Db::bump`]), a version per row
/// ([`Db::row_version`], [`Db::bump_row`]) with the version every read starting now must
/// return at least ([`Db::ack_row`]), text rows ([`Db::row`], [`Db::insert`]) and one text
/// value ([`Db::value`], [`Db::set_value`]), and counts the loads ([`Db::count_load`]).
///
/// A gated database ([`Db::gated`]) holds its first load at a gate after the load read what it
/// reads, until [`Db::open`]; [`Db::first_load_read`] waits until that load got there. So a test
/// orders "the first load has read the old row" before "the write" without sleeping.
#[derive(Debug, Default)]
pub struct Db {
    version: AtomicU64,
    versions: Mutex<HashMap<u64, u64>>,
    acked: Mutex<HashMap<u64, u64>>,
    rows: Mutex<HashMap<u64, String>>,
    value: Mutex<String>,
    loads: AtomicUsize,
    gate: Option<Semaphore>,
    read_done: Notify,
}

impl Db {
    /// An empty database: every version 0, no row, an empty value, no gate.
    pub fn new() -> Db {
        Db::default()
    }

    /// An empty database whose first load waits at a closed gate (see [`Db::open`]).
    pub fn gated() -> Db {
        Db {
            gate: Some(Semaphore::new(0)),
            ..Db::default()
        }
    }

    /// A database whose text value is `value`.
    pub fn with_value(value: &str) -> Db {
        let db = Db::default();
        db.set_value(value);
        db
    }

    /// The version of the whole database.
    pub fn version(&self) -> u64 {
        self.version.load(SeqCst)
    }

    /// A write of the whole database: the new version.
    pub fn bump(&self) -> u64 {
        self.version.fetch_add(1, SeqCst) + 1
    }

    /// The version of row `id` (0 before its first write).
    pub fn row_version(&self, id: u64) -> u64 {
        self.versions.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    /// A write of row `id`: its new version.
    pub fn bump_row(&self, id: u64) -> u64 {
        let mut versions = self.versions.lock().unwrap();
        let v = versions.entry(id).or_insert(0);
        *v += 1;
        *v
    }

    /// Records that every read of row `id` starting now must return at least `version` (kept
    /// at the highest version acknowledged).
    pub fn ack_row(&self, id: u64, version: u64) {
        let mut acked = self.acked.lock().unwrap();
        let v = acked.entry(id).or_insert(0);
        *v = (*v).max(version);
    }

    /// The highest version of row `id` acknowledged with [`Db::ack_row`] (0 if none).
    pub fn acked_row(&self, id: u64) -> u64 {
        self.acked.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    /// Text row `id`, if written.
    pub fn row(&self, id: u64) -> Option<String> {
        self.rows.lock().unwrap().get(&id).cloned()
    }

    /// Writes text row `id`.
    pub fn insert(&self, id: u64, row: &str) {
        self.rows.lock().unwrap().insert(id, row.to_owned());
    }

    /// The text value.
    pub fn value(&self) -> String {
        self.value.lock().unwrap().clone()
    }

    /// Writes the text value.
    pub fn set_value(&self, value: &str) {
        *self.value.lock().unwrap() = value.to_owned();
    }

    /// Counts a load; returns how many ran before it (0 for the first one).
    pub fn count_load(&self) -> usize {
        self.loads.fetch_add(1, SeqCst)
    }

    /// Loads counted so far.
    pub fn loads(&self) -> usize {
        self.loads.load(SeqCst)
    }

    /// A load of text row `id`: counted, the row read, then (the first load of a gated
    /// database) held at the gate.
    pub async fn load_row(&self, id: u64) -> Option<String> {
        let n = self.count_load();
        let row = self.row(id);
        self.hold_if_first(n).await;
        row
    }

    /// A load of the database's version: counted, the version read, then (the first load of a
    /// gated database) held at the gate.
    pub async fn load_version(&self) -> u64 {
        let n = self.count_load();
        let v = self.version();
        self.hold_if_first(n).await;
        v
    }

    /// For the load counted `n` (see [`Db::count_load`]): when it is the first one and the
    /// database is gated, signals [`Db::first_load_read`] and waits for [`Db::open`]. Whether
    /// it waited.
    pub async fn hold_if_first(&self, n: usize) -> bool {
        match &self.gate {
            Some(gate) if n == 0 => {
                self.read_done.notify_one();
                let _permit = gate.acquire().await;
                true
            }
            _ => false,
        }
    }

    /// Waits for [`Db::open`] when the database is gated (any load, not only the first).
    pub async fn wait_for_gate(&self) {
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await;
        }
    }

    /// Waits until the first load of a gated database read what it reads and reached the gate.
    pub async fn first_load_read(&self) {
        self.read_done.notified().await;
    }

    /// Opens the gate: the held load and every later one go on.
    pub fn open(&self) {
        if let Some(gate) = &self.gate {
            gate.add_permits(1 << 20);
        }
    }
}
