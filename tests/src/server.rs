//! Private `redis-server` processes: [`RedisServer`] starts one on a free loopback port, with
//! its own temporary directory and no persistence, waits until it answers `PING`, and kills it
//! on drop. It can be killed, paused (`SIGSTOP`), resumed and restarted on the same port.
//! [`ServerSpec`] adds arguments (`--requirepass`, TLS-only ports), a chosen port or directory.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Raw;

/// Environment variable that overrides the path of the `redis-server` binary.
pub const REDIS_SERVER_ENV: &str = "CACHE_TESTS_REDIS_SERVER";

/// How long [`RedisServer::start`] waits for a spawned server to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How many fresh ports [`RedisServer::start`] tries before giving up.
const START_ATTEMPTS: usize = 8;

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

pub(crate) fn make_temp_dir() -> io::Result<PathBuf> {
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
