//! The Redis backend: one shared auto-reconnecting multiplexed connection
//! ([`redis::aio::ConnectionManager`]) to a single server, or one Redis Cluster connection
//! ([`ClusterConn`]: a [`redis::cluster_async::ClusterConnection`], which follows `MOVED`/`ASK`
//! and refreshes its slot map by itself, on the cache's own runtime, rebuilt when dead or stuck); plain single-key commands and one-key Lua scripts run by SHA.
//!
//! The two connection kinds are two instantiations of the same generic [`RedisBackend`], so
//! the single-node hit path is the code it always was (no branch on the connection kind).
//!
//! # Cluster
//!
//! Every script below names exactly one key (`KEYS[1]`) and touches no other key: the tag
//! scripts take a member's key name as an *argument* (a sorted-set member), never as a key, so
//! each call is single-slot and redis-rs routes it by `KEYS[1]`. The one multi-key command,
//! `UNLINK` (an invalidation of several keys, a batch of a tag's members), is split per hash
//! slot on a cluster: one `UNLINK` per slot, sent concurrently ([`RedisBackend::delete`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::Slot;
use redis::{Script, Value};

use super::cluster::ClusterConn;
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

/// Takes a refresh lease (see `entry::embed_refresh`, which does the same on bytes): only on
/// a value or negative entry still stored at ARGV[2] whose refresh lease (if any) ran out;
/// appends the token ARGV[1] and the time it runs out (now + ARGV[3] ms, 8 bytes
/// big-endian), keeping the TTL. Times are the server's clock.
const TRY_REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.len(v) < 32 or string.byte(v, 1) ~= 202 or string.byte(v, 2) ~= 1 then
  return 0
end
local k = string.byte(v, 3)
if k % 128 == 3 or string.sub(v, 5, 12) ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if k >= 128 then
  if string.len(v) < 56 then
    return 0
  end
  local untl = 0
  for i = -8, -1 do
    untl = untl * 256 + string.byte(v, i)
  end
  if untl > now then
    return 0
  end
  v = string.sub(v, 1, -25)
  k = k - 128
end
local untl = now + tonumber(ARGV[3])
local be = ''
for i = 1, 8 do
  be = string.char(untl % 256) .. be
  untl = math.floor(untl / 256)
end
v = string.sub(v, 1, 2) .. string.char(k + 128) .. string.sub(v, 4) .. ARGV[1] .. be
redis.call('SET', KEYS[1], v, 'KEEPTTL')
return 1
";

/// Writes the refreshed entry only if the key still carries the refresh lease ARGV[1] and it
/// has not run out (server clock).
const FILL_REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.len(v) < 56 or string.byte(v, 3) < 128 or string.sub(v, -24, -9) ~= ARGV[1] then
  return 0
end
local untl = 0
for i = -8, -1 do
  untl = untl * 256 + string.byte(v, i)
end
local t = redis.call('TIME')
if untl < tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Moves the end of the refresh lease ARGV[1] to now + ARGV[2] ms (server clock), only while
/// the key carries it and it has not run out (see `entry::renew_refresh`), keeping the TTL.
const EXTEND_REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.len(v) < 56 or string.byte(v, 3) < 128 or string.sub(v, -24, -9) ~= ARGV[1] then
  return 0
end
local untl = 0
for i = -8, -1 do
  untl = untl * 256 + string.byte(v, i)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if untl < now then
  return 0
end
untl = now + tonumber(ARGV[2])
local be = ''
for i = 1, 8 do
  be = string.char(untl % 256) .. be
  untl = math.floor(untl / 256)
end
redis.call('SET', KEYS[1], string.sub(v, 1, -9) .. be, 'KEEPTTL')
return 1
";

/// Removes the refresh lease ARGV[1], keeping the value and its TTL.
const RELEASE_REFRESH: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.len(v) < 56 or string.byte(v, 3) < 128 or string.sub(v, -24, -9) ~= ARGV[1] then
  return 0
end
v = string.sub(v, 1, 2) .. string.char(string.byte(v, 3) - 128) .. string.sub(v, 4, -25)
redis.call('SET', KEYS[1], v, 'KEEPTTL')
return 1
";

/// Makes the entry stale (see `entry::expire_bytes`, which does the same on bytes):
/// fresh-until becomes at most ARGV[1] (unix ms, the caller's clock), a refresh lease is
/// dropped, and the key expires that much earlier (it lives only for its grace window; with
/// at most ARGV[2] ms of it left it is deleted); a lease or foreign bytes are deleted.
const EXPIRE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
local k = string.byte(v, 3)
if string.len(v) < 32 or string.byte(v, 1) ~= 202 or string.byte(v, 2) ~= 1 or k % 128 == 3 or k % 128 == 0 or k % 128 > 3 or (k >= 128 and string.len(v) < 56) then
  redis.call('DEL', KEYS[1])
  return 1
end
if k >= 128 then
  v = string.sub(v, 1, -25)
  k = k - 128
end
local cur = 0
for i = 20, 13, -1 do
  cur = cur * 256 + string.byte(v, i)
end
local want = tonumber(ARGV[1])
local fu = string.sub(v, 13, 20)
local ttl = redis.call('PTTL', KEYS[1])
if cur > want then
  fu = ''
  local x = want
  for i = 1, 8 do
    fu = fu .. string.char(x % 256)
    x = math.floor(x / 256)
  end
  if ttl > 0 then
    ttl = ttl - (cur - want)
    if ttl <= tonumber(ARGV[2]) then
      redis.call('DEL', KEYS[1])
      return 1
    end
  end
end
v = string.sub(v, 1, 2) .. string.char(k) .. string.sub(v, 4, 12) .. fu .. string.sub(v, 21)
if ttl > 0 then
  redis.call('SET', KEYS[1], v, 'PX', ttl)
else
  redis.call('SET', KEYS[1], v, 'KEEPTTL')
end
return 1
";

/// Registers the tag member ARGV[1] for ARGV[2] ms (score: when it runs out, server clock;
/// always above its previous score, so a removal conditioned on the old score never removes
/// this registration), drops members that ran out, and keeps the set alive until its last
/// member runs out.
const TAG_ADD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = now + tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if old and tonumber(old) >= score then
  score = tonumber(old) + 1
end
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local want = tonumber(top[2]) - now
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1
";

/// Removes members (ARGV: member, score, member, score, ...) still registered with the score
/// they were scanned with.
const TAG_REMOVE: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
";

struct Scripts {
    fill: Script,
    extend: Script,
    release: Script,
    try_refresh: Script,
    fill_refresh: Script,
    extend_refresh: Script,
    release_refresh: Script,
    expire: Script,
    tag_add: Script,
    tag_remove: Script,
}

/// The connection a [`RedisBackend`] runs its commands on: a single server's
/// [`ConnectionManager`] or a Redis Cluster's [`ClusterConn`].
pub(crate) trait RedisConn:
    redis::aio::ConnectionLike + Clone + Send + Sync + 'static
{
    /// Whether keys may live on different nodes (multi-key commands must be split per slot).
    const CLUSTER: bool;

    /// An operation ran out of `command_timeout` (a cluster connection may be stuck on a
    /// node that stopped answering: see [`ClusterConn`]).
    fn timed_out(&self) {}
}

impl RedisConn for ConnectionManager {
    const CLUSTER: bool = false;
}

impl RedisConn for ClusterConn {
    const CLUSTER: bool = true;

    fn timed_out(&self) {
        ClusterConn::timed_out(self);
    }
}

/// Redis backend over one shared multiplexed connection (`C` = [`ConnectionManager`]) or a
/// Redis Cluster connection (`C` = [`ClusterConn`], see [`RedisClusterBackend`]).
#[derive(Clone)]
pub(crate) struct RedisBackend<C = ConnectionManager> {
    conn: C,
    scripts: Arc<Scripts>,
    /// `host:port` of the server (the first seed node of a cluster), for `Debug` (never the
    /// password).
    addr: Arc<str>,
    /// Upper bound of one operation.
    timeout: Duration,
    /// Upper bound of the start-up check (connecting plus one command).
    ping_timeout: Duration,
    /// Where the near cache's tracking connections go (RESP3 clients with the data
    /// connection's credentials and TLS settings).
    tracking: Option<super::TrackingTarget>,
}

/// Redis backend over a Redis Cluster connection.
pub(crate) type RedisClusterBackend = RedisBackend<ClusterConn>;

impl<C: RedisConn> std::fmt::Debug for RedisBackend<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(if C::CLUSTER {
            "RedisClusterBackend"
        } else {
            "RedisBackend"
        })
        .field("addr", &self.addr)
        .finish()
    }
}

/// Connection settings for [`RedisBackend::new`].
#[derive(Debug, Clone, Default)]
pub(crate) struct RedisOptions {
    /// Timeout for each command's response.
    pub command_timeout: Duration,
    /// Timeout for each connection attempt.
    pub connect_timeout: Duration,
    /// PEM root certificate(s) to trust for `rediss://` instead of the system store.
    pub tls_root_ca_pem: Option<Vec<u8>>,
}

fn scripts() -> Arc<Scripts> {
    Arc::new(Scripts {
        fill: Script::new(FILL),
        extend: Script::new(EXTEND),
        release: Script::new(RELEASE),
        try_refresh: Script::new(TRY_REFRESH),
        fill_refresh: Script::new(FILL_REFRESH),
        extend_refresh: Script::new(EXTEND_REFRESH),
        release_refresh: Script::new(RELEASE_REFRESH),
        expire: Script::new(EXPIRE),
        tag_add: Script::new(TAG_ADD),
        tag_remove: Script::new(TAG_REMOVE),
    })
}

/// The error for a URL that does not parse (the URL may hold a password: never echo it).
fn invalid_url<E>(_: E) -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        "invalid Redis URL (expected redis://[user:password@]host:port[/db] or rediss://...)",
    )
}

fn check_tls_feature(url: &str) -> BackendResult<()> {
    if cfg!(not(feature = "tls")) && url.starts_with("rediss://") {
        return Err(BackendError::new(
            BackendErrorKind::Other,
            "rediss:// (TLS) needs cache-runtime's `tls` feature",
        ));
    }
    Ok(())
}

impl RedisClusterBackend {
    /// A backend for the Redis Cluster reached through the seed nodes `urls` (each
    /// `redis://[user:password@]host:port`, `rediss://` for TLS; all with the same
    /// credentials). redis-rs discovers the other nodes, routes each command to the master of
    /// its key's slot, follows `MOVED`/`ASK` and refreshes its slot map after a failover.
    /// Connects lazily, in the background; see [`ping`](Self::ping).
    pub(crate) fn new_cluster(urls: &[String], opts: RedisOptions) -> BackendResult<Self> {
        if urls.is_empty() {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                "redis_cluster needs at least one seed node URL",
            ));
        }
        let mut infos = Vec::with_capacity(urls.len());
        for url in urls {
            check_tls_feature(url)?;
            infos.push(
                redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(invalid_url)?,
            );
        }
        let addr: Arc<str> = Arc::from(infos[0].addr().to_string());
        // The near cache's tracking connections: the seeds, in RESP3, discover the nodes.
        let seeds: Vec<redis::Client> = infos
            .iter()
            .filter_map(|info| resp3_client(info.clone(), &opts))
            .collect();
        let tracking =
            (seeds.len() == infos.len()).then_some(super::TrackingTarget::Cluster(seeds));
        #[allow(unused_mut)]
        let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
            .connection_timeout(opts.connect_timeout)
            // Each operation is bounded by `timed` (redis-rs's own retries on MOVED, ASK,
            // TRYAGAIN, CLUSTERDOWN and reconnects happen within that bound, with short
            // waits); a second and third timer per command in the client would only cost time
            // on the hit path.
            .overall_response_timeout(None)
            .min_retry_wait(5)
            .max_retry_wait(100);
        match &opts.tls_root_ca_pem {
            None => {}
            #[cfg(feature = "tls")]
            Some(pem) => {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
            #[cfg(not(feature = "tls"))]
            Some(_) => {
                return Err(BackendError::new(
                    BackendErrorKind::Other,
                    "a TLS root certificate was given but cache-runtime was built without the `tls` feature",
                ));
            }
        }
        let client = builder.build().map_err(invalid_url)?;
        let config =
            redis::cluster::ClusterConfig::new().set_connection_timeout(opts.connect_timeout);
        let conn = ClusterConn::new(client, config, opts.command_timeout);
        Ok(RedisBackend::with(conn, addr, &opts, tracking))
    }
}

/// A client with `info`'s connection settings in RESP3 (needed for `CLIENT TRACKING` pushes).
fn resp3_client(info: redis::ConnectionInfo, opts: &RedisOptions) -> Option<redis::Client> {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    match &opts.tls_root_ca_pem {
        None => redis::Client::open(info).ok(),
        #[cfg(feature = "tls")]
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        )
        .ok(),
        #[cfg(not(feature = "tls"))]
        Some(_) => None,
    }
}

impl RedisBackend<ConnectionManager> {
    /// A backend for `url` (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS).
    /// Connects lazily, on the first command; see [`ping`](Self::ping).
    pub(crate) fn new(url: &str, opts: RedisOptions) -> BackendResult<Self> {
        // The URL may hold a password: never echo it in the error.
        let invalid = invalid_url;
        check_tls_feature(url)?;
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
        let tracking = resp3_client(client.get_connection_info().clone(), &opts)
            .map(|c| super::TrackingTarget::Server(Box::new(c)));
        let config = ConnectionManagerConfig::new()
            // Each operation is bounded by `timed` (connecting included); a second timer
            // per command in the connection would only cost time on the hit path.
            .set_response_timeout(None)
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisBackend::with(conn, addr, &opts, tracking))
    }
}

impl<C: RedisConn> RedisBackend<C> {
    /// A backend over `conn` (single server or cluster), with `opts`' timeouts.
    fn with(
        conn: C,
        addr: Arc<str>,
        opts: &RedisOptions,
        tracking: Option<super::TrackingTarget>,
    ) -> Self {
        RedisBackend {
            conn,
            scripts: scripts(),
            addr,
            timeout: opts.command_timeout,
            ping_timeout: opts.command_timeout + opts.connect_timeout,
            tracking,
        }
    }

    /// Where the near cache's tracking connections go (same credentials and TLS settings as
    /// the data connection); `None` if the RESP3 clients cannot be built.
    pub(crate) fn tracking_target(&self) -> Option<super::TrackingTarget> {
        self.tracking.clone()
    }

    /// `PING` (on a cluster: every master, redis-rs `AllPrimaries`): connects if needed and checks the
    /// server answers.
    pub(crate) async fn ping(&self) -> BackendResult<()> {
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

    fn conn(&self) -> C {
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
            Err(_) => {
                self.conn.timed_out();
                Err(BackendError::new(
                    BackendErrorKind::Timeout,
                    "Redis did not answer in time",
                ))
            }
        }
    }
}

impl<C: RedisConn> RedisBackend<C> {
    /// `UNLINK` split per hash slot (a multi-key command whose keys hash to different slots is
    /// refused with `CROSSSLOT` by a cluster): one `UNLINK` per slot, all in flight at once.
    /// Fails if any of them fails (the caller retries the whole set: `UNLINK` is idempotent).
    async fn delete_per_slot(&self, keys: &[String]) -> BackendResult<u64> {
        let mut by_slot: HashMap<Slot, redis::Cmd> = HashMap::new();
        for k in keys {
            by_slot
                .entry(Slot::for_key(k.as_bytes()))
                .or_insert_with(|| redis::cmd("UNLINK"))
                .arg(k);
        }
        let calls = by_slot.into_values().map(|cmd| {
            let mut conn = self.conn();
            async move { cmd.query_async::<u64>(&mut conn).await }
        });
        let counts = futures_util::future::try_join_all(calls).await?;
        Ok(counts.into_iter().sum())
    }
}

impl<C: RedisConn> Backend for RedisBackend<C> {
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
        if C::CLUSTER {
            return self.timed(self.delete_per_slot(keys)).await;
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

    async fn put(&self, key: &str, value: &[u8], px_ms: u64) -> BackendResult<()> {
        self.timed(async {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value).arg("PX").arg(px_ms.max(1));
            let _: Value = cmd.query_async(&mut self.conn()).await?;
            Ok(())
        })
        .await
    }

    async fn expire(&self, key: &str, now_ms: u64) -> BackendResult<()> {
        self.timed(async {
            let mut call = self.scripts.expire.key(key);
            call.arg(now_ms.saturating_sub(1))
                .arg(crate::entry::EXPIRE_SLACK_MS);
            let _: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(())
        })
        .await
    }

    async fn try_refresh(
        &self,
        key: &str,
        token: &[u8],
        stored_at: &[u8],
        hold_ms: u64,
    ) -> BackendResult<bool> {
        self.timed(async {
            let mut call = self.scripts.try_refresh.key(key);
            call.arg(token).arg(stored_at).arg(hold_ms);
            let n: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(n == 1)
        })
        .await
    }

    async fn fill_refresh(
        &self,
        key: &str,
        token: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> BackendResult<bool> {
        self.timed(async {
            let mut call = self.scripts.fill_refresh.key(key);
            call.arg(token).arg(value).arg(px_ms);
            let n: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(n == 1)
        })
        .await
    }

    async fn extend_refresh(&self, key: &str, token: &[u8], hold_ms: u64) -> BackendResult<bool> {
        self.timed(async {
            let mut call = self.scripts.extend_refresh.key(key);
            call.arg(token).arg(hold_ms);
            let n: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_refresh(&self, key: &str, token: &[u8]) -> BackendResult<bool> {
        self.timed(async {
            let mut call = self.scripts.release_refresh.key(key);
            call.arg(token);
            let n: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(n == 1)
        })
        .await
    }

    async fn tag_add(&self, tag: &str, member: &str, life_ms: u64) -> BackendResult<()> {
        self.timed(async {
            let mut call = self.scripts.tag_add.key(tag);
            call.arg(member).arg(life_ms);
            let _: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(())
        })
        .await
    }

    async fn tag_scan(
        &self,
        tag: &str,
        cursor: u64,
        count: usize,
    ) -> BackendResult<(u64, Vec<(String, u64)>)> {
        self.timed(async {
            let (next, flat): (u64, Vec<String>) = redis::cmd("ZSCAN")
                .arg(tag)
                .arg(cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.conn())
                .await?;
            let mut members = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(m), Some(score)) = (it.next(), it.next()) {
                // Scores are unix ms (integers below 2^53): exact as doubles.
                let score = score.parse::<f64>().unwrap_or(0.0) as u64;
                members.push((m, score));
            }
            Ok((next, members))
        })
        .await
    }

    async fn tag_remove(&self, tag: &str, members: &[(String, u64)]) -> BackendResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        self.timed(async {
            let mut call = self.scripts.tag_remove.key(tag);
            for (m, score) in members {
                call.arg(m).arg(*score);
            }
            let _: i64 = call.invoke_async(&mut self.conn()).await?;
            Ok(())
        })
        .await
    }
}
