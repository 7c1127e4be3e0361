//! Test harness for the `cache-runtime` integration tests.
//!
//! * [`RedisServer`] starts a private `redis-server` process on a free loopback port, with its
//!   own temporary directory and no persistence, waits until it answers `PING`, and kills it on
//!   drop. Every test starts its own server, so tests run in parallel and never touch a Redis that
//!   happens to listen on 6379. The server can be killed, paused (`SIGSTOP`), resumed and restarted
//!   on the same port to exercise failure behaviour.
//! * [`Raw`] is a plain redis-rs connection for looking behind the cache's back (`GET`, `PTTL`,
//!   `INCR`, ...).
//! * [`TestEnv`] bundles a [`Cache`] with the server behind it (or none, for the in-memory
//!   backend), and [`backend_tests!`] turns one scenario function into a test per backend.
//! * [`Proxy`] is a loopback TCP proxy between a cache and its server that injects network faults
//!   (a partition that swallows requests, or cut connections) while the server keeps its data.
//! * [`RedisCluster`] builds a real 6-node Redis Cluster (3 masters, 3 replicas) on loopback
//!   with `redis-cli --cluster create`, with failover and kill controls, and [`RawCluster`] reads
//!   it behind the cache's back.
//! * [`guard`] and [`eventually`] are hang guards: they bound how long a test may wait for
//!   something that must happen, without asserting anything about speed.
//!
//! The `redis-server` binary is looked up on `PATH`, or taken from the `CACHE_TESTS_REDIS_SERVER`
//! environment variable when that is set. `scripts/test.sh` installs it when it is missing.

use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use cache_runtime::{Cache, CacheBuilder};

pub mod cluster;
pub mod history;
pub mod source;
pub mod tls;

pub use tls::make_certificates;

pub use cluster::{PlannedCluster, RawCluster, RedisCluster, SlotMap, key_slot};

/// Environment variable that overrides the path of the `redis-server` binary.
pub const REDIS_SERVER_ENV: &str = "CACHE_TESTS_REDIS_SERVER";

/// Namespace used by every [`TestEnv`] cache.
pub const TEST_NAMESPACE: &str = "itest";

/// How long [`RedisServer::start`] waits for a spawned server to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How many fresh ports [`RedisServer::start`] tries before giving up.
const START_ATTEMPTS: usize = 8;

/// Generous bound used by [`guard`]: a scenario that takes longer than this is hung.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Why a `redis-server` could not be started.
#[derive(Debug)]
pub enum StartError {
    /// The binary was not found (or could not be executed).
    Missing { binary: String, source: io::Error },
    /// The process exited or did not answer `PING` in time; `log` is its output.
    NotReady {
        port: u16,
        reason: String,
        log: String,
    },
    /// Creating the temporary directory or log file failed.
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Missing { binary, source } => write!(
                f,
                "could not run `{binary}` ({source}). The integration tests need a local \
                 redis-server binary: install it (Debian/Ubuntu: `apt-get install -y \
                 redis-server`, macOS: `brew install redis`), or run `scripts/test.sh`, which \
                 installs it, or point {REDIS_SERVER_ENV} at the binary."
            ),
            StartError::NotReady { port, reason, log } => write!(
                f,
                "redis-server on 127.0.0.1:{port} did not become ready: {reason}\n--- redis-server output ---\n{log}"
            ),
            StartError::Io(e) => write!(f, "could not prepare redis-server: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// A private `redis-server` process for one test.
///
/// Started on `127.0.0.1` on a port that was free a moment before, with `--save ''`,
/// `--appendonly no` and `--protected-mode yes`, in its own temporary directory (removed on drop).
/// Dropping it kills the process.
///
/// ```no_run
/// # async fn demo() {
/// let server = cache_tests::RedisServer::start();
/// let raw = server.raw().await;
/// raw.set("k", b"v").await;
/// assert_eq!(raw.get("k").await.as_deref(), Some(&b"v"[..]));
/// # }
/// ```
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    stopped: bool,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("dir", &self.dir)
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// With a message that says what to install when `redis-server` is missing, or with the
    /// server's output when it did not come up.
    pub fn start() -> RedisServer {
        match Self::try_start() {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`RedisServer::start`], but returns the error.
    ///
    /// Picking a free port is inherently racy (the port is released before redis binds it), so a
    /// server that fails to start is retried on a fresh port a few times.
    pub fn try_start() -> Result<RedisServer, StartError> {
        Self::try_start_with(ServerSpec::default())
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, for `Cache::builder().redis(...)`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A redis-rs client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("valid redis url")
    }

    /// A raw connection for `GET`/`PTTL`/`INCR`/... behind the cache's back.
    ///
    /// # Panics
    /// If the server does not accept the connection.
    pub async fn raw(&self) -> Raw {
        Raw::connect(&self.url()).await
    }

    /// Kills the server (`SIGKILL`) and reaps it. The port is left free; see
    /// [`RedisServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }

    /// Pauses the server with `SIGSTOP`: it keeps its socket open but answers nothing, like a
    /// hung or overloaded server. Undo with [`RedisServer::cont`].
    pub fn stop(&mut self) {
        self.signal(libc::SIGSTOP);
        self.stopped = true;
    }

    /// Resumes a server paused by [`RedisServer::stop`] (`SIGCONT`).
    pub fn cont(&mut self) {
        self.signal(libc::SIGCONT);
        self.stopped = false;
    }

    /// Kills the server (if it runs) and starts a new, empty one on the same port, waiting until
    /// it answers `PING`.
    ///
    /// # Panics
    /// If the port cannot be bound again within a few seconds.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_custom(&self.dir, self.port, &ServerSpec::default()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e @ StartError::Missing { .. }) => panic!("{e}"),
                Err(e) if Instant::now() >= deadline => {
                    panic!("restart on port {} failed: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid().expect("redis-server is not running");
        // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL also ends a process stopped with SIGSTOP.
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Asks the kernel for a free port on 127.0.0.1 (bind port 0, read it, release it).
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

fn make_temp_dir() -> io::Result<PathBuf> {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "cache-tests-redis-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn redis_binary() -> String {
    std::env::var(REDIS_SERVER_ENV).unwrap_or_else(|_| "redis-server".to_owned())
}

/// A raw redis-rs connection, for reading and writing keys behind the cache's back.
///
/// All methods panic on a Redis error: in a test that is a harness failure, not an observation.
#[derive(Clone)]
pub struct Raw {
    conn: redis::aio::MultiplexedConnection,
}

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Raw")
    }
}

impl Raw {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Raw {
        let client = redis::Client::open(url).expect("valid redis url");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("raw connection to {url} failed: {e}"));
        Raw { conn }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("raw redis command failed: {e}"))
    }

    /// `GET key`: the stored bytes, or `None` when the key is absent.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// `EXISTS key`.
    pub async fn exists(&self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    /// `PTTL key`: milliseconds to live; `-1` = no expiry, `-2` = no such key.
    pub async fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key)).await
    }

    /// `INCR key`: the new value.
    pub async fn incr(&self, key: &str) -> i64 {
        self.query(redis::cmd("INCR").arg(key)).await
    }

    /// `SET key value`.
    pub async fn set(&self, key: &str, value: &[u8]) {
        self.query::<()>(redis::cmd("SET").arg(key).arg(value))
            .await
    }

    /// `DEL key`: whether the key existed.
    pub async fn del(&self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("DEL").arg(key)).await == 1
    }

    /// `GET key` parsed as an integer (`None` when absent).
    pub async fn get_i64(&self, key: &str) -> Option<i64> {
        self.query(redis::cmd("GET").arg(key)).await
    }
}

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

/// Awaits `fut`, panicking if it takes longer than [`HANG_GUARD`]. A hang guard, not a timing
/// assertion: what it wraps is expected to finish in milliseconds.
pub async fn guard<F: Future>(what: &str, fut: F) -> F::Output {
    guard_for(what, HANG_GUARD, fut).await
}

/// Like [`guard`], for something that legitimately runs for `expected` (a workload of a set
/// length): it may take [`HANG_GUARD`] longer than that.
pub async fn guard_for<F: Future>(what: &str, expected: Duration, fut: F) -> F::Output {
    let bound = expected + HANG_GUARD;
    match tokio::time::timeout(bound, fut).await {
        Ok(out) => out,
        Err(_) => panic!("hang guard: {what} did not finish within {bound:?}"),
    }
}

/// Polls `check` every 10 ms until it returns true; panics if that has not happened within
/// `within`. For "eventually" conditions such as a lease released by a background task.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

// ---------------------------------------------------------------------------------------------
// Extra helpers for the fault-injection and security tests: servers on a chosen port, with extra
// arguments (`--requirepass`, TLS-only ports), scratch directories and raw commands.

/// A port on 127.0.0.1 that nothing listened on a moment ago (for "Redis is down" tests).
///
/// # Panics
/// If no port can be bound at all.
pub fn reserve_free_port() -> u16 {
    free_port().expect("bind 127.0.0.1:0")
}

/// A fresh, empty temporary directory. Hand it to [`RedisServer::start_with`] to have it removed
/// when the server is dropped.
///
/// # Panics
/// If the directory cannot be created.
pub fn scratch_dir() -> PathBuf {
    make_temp_dir().expect("create a temporary directory")
}

/// How to start a server with [`RedisServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    /// The port to listen on; a free one when `None`. With [`ServerSpec::tls`], the TLS port.
    pub port: Option<u16>,
    /// Arguments appended after the harness's own (e.g. `["--requirepass", "pw"]`).
    pub args: Vec<String>,
    /// Serve TLS only: `--port 0 --tls-port <port>` (certificate arguments go in `args`).
    /// Readiness is then a TCP connect, not a `PING`.
    pub tls: bool,
    /// The server's working directory (removed when the server is dropped; left in place
    /// when the start fails); a fresh one when `None`.
    pub dir: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a server on `port` (which must be free) and waits until it answers `PING`.
    /// [`RedisServer::restart`] works on it as usual.
    ///
    /// # Panics
    /// If the server does not come up on that port.
    pub fn start_on_port(port: u16) -> RedisServer {
        Self::start_with(ServerSpec {
            port: Some(port),
            ..ServerSpec::default()
        })
    }

    /// Starts a server described by `spec` and waits until it is ready: it answers `PING` with
    /// `+PONG` or `-NOAUTH` (a password-protected server), or, for a TLS-only server, its port
    /// accepts TCP connections. [`RedisServer::url`], [`RedisServer::raw`] and
    /// [`RedisServer::client`] assume a plain, password-less server; [`RedisServer::restart`]
    /// restarts without the extra arguments.
    ///
    /// # Panics
    /// With the server's output when it does not come up (e.g. a build without TLS support).
    pub fn start_with(spec: ServerSpec) -> RedisServer {
        match Self::try_start_with(spec) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`RedisServer::start_with`], but returns the error.
    pub fn try_start_with(spec: ServerSpec) -> Result<RedisServer, StartError> {
        // A directory handed in may be shared (a cluster's nodes): a failed start leaves it.
        let own_dir = spec.dir.is_none();
        let dir = match spec.dir.clone() {
            Some(d) => d,
            None => make_temp_dir()?,
        };
        let attempts = if spec.port.is_some() {
            1
        } else {
            START_ATTEMPTS
        };
        let mut last = None;
        for _ in 0..attempts {
            let port = match spec.port {
                Some(p) => p,
                None => free_port()?,
            };
            match spawn_custom(&dir, port, &spec) {
                Ok(child) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        dir,
                        stopped: false,
                    });
                }
                Err(e @ StartError::Missing { .. }) => {
                    if own_dir {
                        let _ = fs::remove_dir_all(&dir);
                    }
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        if own_dir {
            let _ = fs::remove_dir_all(&dir);
        }
        Err(last.expect("at least one attempt"))
    }

    /// The server's working directory (removed when the server is dropped).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn spawn_custom(dir: &Path, port: u16, spec: &ServerSpec) -> Result<Child, StartError> {
    let binary = redis_binary();
    let log_path = dir.join(format!("redis-{port}.log"));
    let log = fs::File::create(&log_path)?;
    let mut cmd = Command::new(&binary);
    if spec.tls {
        cmd.args(["--port", "0"])
            .args(["--tls-port", &port.to_string()]);
    } else {
        cmd.args(["--port", &port.to_string()]);
    }
    let mut child = cmd
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--protected-mode", "yes"])
        .args(["--daemonize", "no"])
        .args(["--logfile", ""])
        .arg("--dir")
        .arg(dir)
        .args(&spec.args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|source| StartError::Missing {
            binary: binary.clone(),
            source,
        })?;

    let deadline = Instant::now() + READY_TIMEOUT;
    let reason = loop {
        match child.try_wait() {
            Ok(Some(status)) => break format!("process exited with {status}"),
            Ok(None) => {}
            Err(e) => break format!("could not poll the process: {e}"),
        }
        let ready = if spec.tls {
            listening(port)
        } else {
            answers(port)
        };
        if ready {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            break format!("not ready within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    Err(StartError::NotReady { port, reason, log })
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// `PING` answered with `+PONG` or `-NOAUTH ...` (the server is up but wants a password).
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}

impl Raw {
    /// Runs any command (e.g. `ACL SETUSER`, `INFO commandstats`, `DBSIZE`).
    ///
    /// # Panics
    /// On a Redis error.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.query(cmd).await
    }
}

// ---------------------------------------------------------------------------------------------
// Network faults: a TCP proxy between the cache and its server.

/// A loopback TCP proxy in front of a Redis server, for network faults that keep the server's
/// data (a restarted server is empty, which would hide a lost write or invalidation).
///
/// Point the cache at [`Proxy::url`] instead of the server. A healthy proxy forwards both
/// directions byte for byte (each connection gets its own upstream connection; an end of stream
/// in one direction is passed on as a half-close). Two faults can be injected:
///
/// * [`Proxy::partition`]: bytes from clients towards the server are silently dropped, on open
///   connections and on new ones (which are still accepted). Replies still flow back and no
///   connection is closed, so a command sent meanwhile never reaches the server and its caller
///   waits for a reply that never comes.
/// * [`Proxy::cut`]: every open connection is closed (without forwarding anything more) and new
///   connections are closed as soon as they are accepted, like an unreachable server.
///
/// [`Proxy::heal`] ends either fault. Dropping the proxy stops it and closes its connections.
///
/// ```no_run
/// # async fn demo() {
/// let server = cache_tests::RedisServer::start();
/// let proxy = cache_tests::Proxy::start(server.port()).await;
/// let cache = cache_tests::Cache::builder()
///     .redis(proxy.url())
///     .build()
///     .await
///     .unwrap();
/// proxy.partition(); // commands are lost on the way to the server
/// proxy.heal(); // connections are reset, new ones work again
/// # drop(cache);
/// # }
/// ```
pub struct Proxy {
    port: u16,
    /// False while [`Proxy::cut`]: new connections are closed at once.
    reachable: Arc<AtomicBool>,
    /// True while [`Proxy::partition`]: client bytes are dropped.
    blackhole: Arc<AtomicBool>,
    /// Bumped to close every connection open at that moment.
    reset: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("reachable", &self.reachable.load(Ordering::SeqCst))
            .field("partitioned", &self.blackhole.load(Ordering::SeqCst))
            .finish()
    }
}

impl Proxy {
    /// Starts a healthy proxy on a free loopback port that forwards to `127.0.0.1:<upstream>`.
    /// Needs a Tokio runtime (its tasks run there).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let reachable = Arc::new(AtomicBool::new(true));
        let blackhole = Arc::new(AtomicBool::new(false));
        let (reset, _) = tokio::sync::watch::channel(0u64);
        let accept = tokio::spawn({
            let (reachable, blackhole, reset) =
                (reachable.clone(), blackhole.clone(), reset.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    // Subscribe before looking at `reachable`: a `cut` that this connection
                    // slips past still resets it.
                    let reset_rx = reset.subscribe();
                    if !reachable.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(proxy_connection(
                        client,
                        upstream,
                        reachable.clone(),
                        blackhole.clone(),
                        reset_rx,
                    ));
                }
            }
        });
        Proxy {
            port,
            reachable,
            blackhole,
            reset,
            accept,
        }
    }

    /// The port the proxy listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, for `Cache::builder().redis(...)`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts a partition: from now on every byte a client sends is read and dropped (on open
    /// and on new connections), while replies still flow back and no connection is closed.
    /// Undo with [`Proxy::heal`].
    pub fn partition(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    /// Makes the server unreachable: every open connection is closed (without forwarding
    /// anything more) and new connections are closed as soon as they are accepted.
    /// Undo with [`Proxy::heal`].
    pub fn cut(&self) {
        self.reachable.store(false, Ordering::SeqCst);
        self.reset.send_modify(|n| *n += 1);
    }

    /// Ends a [`Proxy::partition`] or a [`Proxy::cut`]: every connection open at this moment is
    /// closed (so no client keeps a stream that lost bytes) and new connections are forwarded
    /// again.
    pub fn heal(&self) {
        self.reachable.store(true, Ordering::SeqCst);
        self.blackhole.store(false, Ordering::SeqCst);
        self.reset.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Stops accepting; the open connections see the reset channel close and end too.
        self.accept.abort();
    }
}

/// Forwards one proxied connection until either side closes both directions, an I/O error, or a
/// reset (see [`Proxy::heal`]).
async fn proxy_connection(
    mut client: tokio::net::TcpStream,
    upstream: u16,
    reachable: Arc<AtomicBool>,
    blackhole: Arc<AtomicBool>,
    mut reset: tokio::sync::watch::Receiver<u64>,
) {
    use tokio::io::AsyncWriteExt;

    let Ok(mut server) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await
    else {
        return; // dropping the client closes it
    };
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let up = forward_unless_partitioned(&mut client_rx, &mut server_tx, &reachable, &blackhole);
    let down = async {
        tokio::io::copy(&mut server_rx, &mut client_tx).await?;
        client_tx.shutdown().await
    };
    tokio::select! {
        biased;
        // Also ends when the proxy is dropped (the sender is gone).
        _ = reset.changed() => {}
        _ = async { tokio::try_join!(up, down) } => {}
    }
}

/// Copies `from` to `to`, dropping what is read while `blackhole` is set; passes the end of
/// stream on as a half-close. Ends (without forwarding) at the first bytes read after a
/// [`Proxy::cut`]: the reset that `cut` sends may reach this connection only after a poll that
/// already started reads a command sent after the cut.
async fn forward_unless_partitioned(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    reachable: &AtomicBool,
    blackhole: &AtomicBool,
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buf = [0u8; 4096];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        if !reachable.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "proxy cut",
            ));
        }
        if blackhole.load(Ordering::SeqCst) {
            continue; // lost in the partition
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Commands the runtime must never send (checked through `INFO commandstats` by
/// `tests/tests/commandstats.rs` and, on every node, by `tests/tests/cluster.rs`): they scan
/// the keyspace, wipe it, or block the server or the connection.
pub const FORBIDDEN_COMMANDS: &[&str] = &[
    "keys",
    "scan",
    "flushall",
    "flushdb",
    "blpop",
    "brpop",
    "brpoplpush",
    "blmove",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "xread",
    "xreadgroup",
    "wait",
    "waitaof",
    "debug",
    "monitor",
    "save",
    "bgsave",
    "shutdown",
    "client|pause",
    "subscribe",
    "psubscribe",
    "ssubscribe",
];
