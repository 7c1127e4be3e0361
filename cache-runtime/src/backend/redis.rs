//! The Redis backend: one shared auto-reconnecting multiplexed connection
//! ([`redis::aio::ConnectionManager`]), plain single-key commands and two Lua scripts
//! (compare-and-set fill, compare-and-delete release) run by SHA.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use super::{Backend, BackendResult, Raw};
use crate::error::{BackendError, BackendErrorKind};

/// Writes the entry only if the key still holds the caller's lease.
const FILL: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Resets the key's TTL only if it still holds the caller's lease (the loader's watchdog).
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the key only if it still holds the caller's lease.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

struct Scripts {
    fill: Script,
    extend: Script,
    release: Script,
}

/// Redis backend over one shared multiplexed connection.
#[derive(Clone)]
pub struct RedisBackend {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    /// `host:port` of the server, for `Debug` (never the password).
    addr: Arc<str>,
    /// Upper bound of one operation.
    timeout: Duration,
    /// Upper bound of the start-up check (connecting plus one command).
    ping_timeout: Duration,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Connection settings for [`RedisBackend::new`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Timeout for each command's response.
    pub command_timeout: Duration,
    /// Timeout for each connection attempt.
    pub connect_timeout: Duration,
    /// PEM root certificate(s) to trust for `rediss://` instead of the system store.
    pub tls_root_ca_pem: Option<Vec<u8>>,
}

impl RedisBackend {
    /// A backend for `url` (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS).
    /// Connects lazily, on the first command; see [`ping`](Self::ping).
    pub fn new(url: &str, opts: RedisOptions) -> BackendResult<Self> {
        // The URL may hold a password: never echo it in the error.
        let invalid = |_| {
            BackendError::new(
                BackendErrorKind::Other,
                "invalid Redis URL (expected redis://[user:password@]host:port[/db] or rediss://...)",
            )
        };
        if cfg!(not(feature = "tls")) && url.starts_with("rediss://") {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                "rediss:// (TLS) needs cache-runtime's `tls` feature",
            ));
        }
        let client = match &opts.tls_root_ca_pem {
            None => redis::Client::open(url).map_err(invalid)?,
            #[cfg(feature = "tls")]
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )
            .map_err(invalid)?,
            #[cfg(not(feature = "tls"))]
            Some(_) => {
                return Err(BackendError::new(
                    BackendErrorKind::Other,
                    "a TLS root certificate was given but cache-runtime was built without the `tls` feature",
                ));
            }
        };
        let addr: Arc<str> = Arc::from(client.get_connection_info().addr().to_string());
        let config = ConnectionManagerConfig::new()
            // Each operation is bounded by `timed` (connecting included); a second timer
            // per command in the connection would only cost time on the hit path.
            .set_response_timeout(None)
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisBackend {
            conn,
            scripts: Arc::new(Scripts {
                fill: Script::new(FILL),
                extend: Script::new(EXTEND),
                release: Script::new(RELEASE),
            }),
            addr,
            timeout: opts.command_timeout,
            ping_timeout: opts.command_timeout + opts.connect_timeout,
        })
    }

    /// `PING`: connects if needed and checks the server answers.
    pub async fn ping(&self) -> BackendResult<()> {
        let ping = async {
            let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
            Ok(())
        };
        match tokio::time::timeout(self.ping_timeout, ping).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                "Redis did not answer in time",
            )),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Bounds one operation in time (`command_timeout`; a connection being re-established
    /// meanwhile goes on in the background).
    async fn timed<T>(
        &self,
        op: impl std::future::Future<Output = BackendResult<T>>,
    ) -> BackendResult<T> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                "Redis did not answer in time",
            )),
        }
    }
}

impl Backend for RedisBackend {
    async fn get(&self, key: &str) -> BackendResult<Option<Raw>> {
        self.timed(async {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut self.conn())
                .await?;
            Ok(v.map(Raw::Owned))
        })
        .await
    }

    async fn try_lease(&self, key: &str, lease: &[u8], px_ms: u64) -> BackendResult<bool> {
        self.timed(async {
            let v: Value = redis::cmd("SET")
                .arg(key)
                .arg(lease)
                .arg("NX")
                .arg("PX")
                .arg(px_ms)
                .query_async(&mut self.conn())
                .await?;
            Ok(matches!(v, Value::Okay))
        })
        .await
    }

    async fn fill(&self, key: &str, lease: &[u8], value: &[u8], px_ms: u64) -> BackendResult<bool> {
        self.timed(async {
            let mut call = self.scripts.fill.key(key);
            call.arg(lease).arg(value).arg(px_ms);
            let n: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(n == 1)
        })
        .await
    }

    async fn extend(&self, key: &str, lease: &[u8], px_ms: u64) -> BackendResult<bool> {
        self.timed(async {
            let mut call = self.scripts.extend.key(key);
            call.arg(lease).arg(px_ms);
            let n: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(n == 1)
        })
        .await
    }

    async fn release(&self, key: &str, lease: &[u8]) -> BackendResult<bool> {
        self.timed(async {
            let mut call = self.scripts.release.key(key);
            call.arg(lease);
            let n: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete(&self, keys: &[String]) -> BackendResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.timed(async {
            let mut cmd = redis::cmd("UNLINK");
            for k in keys {
                cmd.arg(k);
            }
            let n: u64 = cmd.query_async(&mut self.conn()).await?;
            Ok(n)
        })
        .await
    }
}
