//! The Redis server the bench runs against: a private `redis-server` (no `REDIS_URL`) or an
//! existing one, the connection settings of the hand-written variants, and the run's cleanup.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A `redis-server` on a free loopback port with no persistence; killed on drop.
struct RedisProcess {
    child: Child,
    dir: PathBuf,
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_redis() -> Result<(RedisProcess, String), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cache-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "could not start `redis-server` ({e}): install it (apt-get install \
                     redis-server / brew install redis) or set REDIS_URL"
                )
            })?;
        let mut proc = RedisProcess {
            child,
            dir: dir.clone(),
        };
        let url = format!("redis://127.0.0.1:{port}/");
        let client = redis::Client::open(url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok((proc, url));
            }
            if let Ok(Some(_)) = proc.child.try_wait() {
                break; // port taken meanwhile: try another
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(proc);
    }
    Err("redis-server did not come up".into())
}

pub(crate) async fn redis_version(conn: &mut ConnectionManager) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

/// Deletes every key of this run (only needed on a server we did not start).
pub(crate) async fn cleanup(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<usize> {
    let mut deleted = 0;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            deleted += keys.len();
            let _: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// The 1-minute load average (Linux), if readable.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The server of this run: `REDIS_URL` if set (then `own` is false), else a private one.
pub(crate) struct Server {
    /// Kept alive for the run (killed on drop).
    _process: Option<RedisProcess>,
    pub(crate) url: String,
    /// Whether the bench started the server itself.
    pub(crate) own: bool,
}

/// `REDIS_URL`, or a private `redis-server` started on a free loopback port.
pub(crate) fn from_env_or_start() -> Result<Server, Box<dyn std::error::Error>> {
    Ok(match std::env::var("REDIS_URL") {
        Ok(url) => Server {
            _process: None,
            url,
            own: false,
        },
        Err(_) => {
            let (p, url) = start_redis()?;
            Server {
                _process: Some(p),
                url,
                own: true,
            }
        }
    })
}

/// A `ConnectionManager` with the runtime's connection settings: what the hand-written
/// variants (and the bench's own admin connection) use.
pub(crate) async fn connection_manager(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}
