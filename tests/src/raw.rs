//! [`Raw`]: a plain redis-rs connection for looking behind the cache's back (`GET`, `PTTL`,
//! `INCR`, any command), and the commands the runtime must never send.

use std::fmt;

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

impl Raw {
    /// Runs any command (e.g. `ACL SETUSER`, `INFO commandstats`, `DBSIZE`).
    ///
    /// # Panics
    /// On a Redis error.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.query(cmd).await
    }
}

/// Commands the runtime must never send (checked through `INFO commandstats` by
/// `tests/tests/caching/commandstats.rs` and, on every node, by `tests/tests/cluster/main.rs`): they scan
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
