//! Storage backends. Every operation of the lease protocol touches exactly one key, so it
//! works the same on one Redis and the in-process memory store (and needs no multi-key
//! command on a Redis Cluster). `delete` is one multi-key `UNLINK` on a single server, one
//! `UNLINK` per hash slot on a cluster.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use crate::error::BackendError;

pub(crate) mod cluster;
pub(crate) mod memory;
pub(crate) mod redis;

pub(crate) use self::memory::MemoryBackend;
pub(crate) use self::redis::{RedisBackend, RedisClusterBackend};

/// Bytes read from a backend.
#[derive(Debug, Clone)]
pub(crate) enum Raw {
    /// Bytes received from Redis.
    Owned(Vec<u8>),
    /// Bytes shared with the in-memory store.
    Shared(Arc<[u8]>),
}

impl Raw {
    /// The bytes as a shared buffer (no copy for the memory backend).
    pub(crate) fn into_shared(self) -> Arc<[u8]> {
        match self {
            Raw::Owned(v) => Arc::from(v),
            Raw::Shared(a) => a,
        }
    }
}

impl Deref for Raw {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Raw::Owned(v) => v,
            Raw::Shared(a) => a,
        }
    }
}

/// Result of a backend operation.
pub(crate) type BackendResult<T> = Result<T, BackendError>;

/// The single-key operations the get-or-load state machine needs.
pub(crate) trait Backend: Send + Sync {
    /// `GET key`.
    fn get(&self, key: &str) -> impl Future<Output = BackendResult<Option<Raw>>> + Send;
    /// `SET key lease NX PX ms`: true when the lease was taken.
    fn try_lease(
        &self,
        key: &str,
        lease: &[u8],
        px_ms: u64,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Writes `value` with TTL `px_ms` only if the key still holds `lease`; true when written.
    fn fill(
        &self,
        key: &str,
        lease: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Sets the key's TTL to `px_ms` only if it still holds `lease`; true when extended.
    fn extend(
        &self,
        key: &str,
        lease: &[u8],
        px_ms: u64,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Deletes the key only if it still holds `lease`.
    fn release(&self, key: &str, lease: &[u8]) -> impl Future<Output = BackendResult<bool>> + Send;
    /// `SET key value PX ms`: a blind write (replaces whatever the key holds, a lease too).
    fn put(
        &self,
        key: &str,
        value: &[u8],
        px_ms: u64,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Makes the entry stale now, shortening its TTL to its grace window (see
    /// [`entry::expire_bytes`](crate::entry::expire_bytes)); deletes a lease. `now_ms` is the
    /// caller's clock, the clock freshness is written with.
    fn expire(&self, key: &str, now_ms: u64) -> impl Future<Output = BackendResult<()>> + Send;
    /// Deletes the keys (values, negative entries and leases alike); returns how many existed.
    fn delete(&self, keys: &[String]) -> impl Future<Output = BackendResult<u64>> + Send;
    /// Takes a refresh lease for `hold_ms` on the value stored at `stored_at` (see
    /// [`entry::embed_refresh`](crate::entry::embed_refresh)), keeping the key's TTL. Times
    /// are the backend's own clock (the Redis server's `TIME`), so that processes whose
    /// clocks disagree still agree on when a lease runs out.
    fn try_refresh(
        &self,
        key: &str,
        token: &[u8],
        stored_at: &[u8],
        hold_ms: u64,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Writes `value` with TTL `px_ms` only if the key still carries the refresh lease `token`
    /// and the lease has not run out (see [`entry::holds_live_refresh`](crate::entry::holds_live_refresh)).
    fn fill_refresh(
        &self,
        key: &str,
        token: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Moves the end of the refresh lease `token` to `hold_ms` from now (the backend's clock),
    /// only if the key still carries it and it has not run out (see
    /// [`entry::renew_refresh`](crate::entry::renew_refresh)), keeping the key's TTL; true
    /// when renewed. The refresh's watchdog, as [`Backend::extend`] is the loader's.
    fn extend_refresh(
        &self,
        key: &str,
        token: &[u8],
        hold_ms: u64,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Removes the refresh lease `token` (the value stays, with its TTL).
    fn release_refresh(
        &self,
        key: &str,
        token: &[u8],
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Registers `member` in the tag set `tag` for `life_ms` from now (the score is the time it
    /// runs out, on the backend's clock; a registration always changes a member's score, so a
    /// removal conditioned on the score never removes a newer registration), drops members
    /// that ran out, and keeps the set alive until its last member runs out.
    fn tag_add(
        &self,
        tag: &str,
        member: &str,
        life_ms: u64,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// One batch of the tag set's members (with their scores) from `cursor`; the next cursor
    /// is 0 when the scan is complete.
    fn tag_scan(
        &self,
        tag: &str,
        cursor: u64,
        count: usize,
    ) -> impl Future<Output = BackendResult<(u64, Vec<(String, u64)>)>> + Send;
    /// Removes members from the tag set, each only if it still has the score it was scanned
    /// with (a member registered again meanwhile stays).
    fn tag_remove(
        &self,
        tag: &str,
        members: &[(String, u64)],
    ) -> impl Future<Output = BackendResult<()>> + Send;
}

/// Where a near cache's tracking connections go: made by the Redis backend (which knows the
/// URLs, credentials and TLS settings), used by the near cache above it.
#[derive(Clone)]
pub(crate) enum TrackingTarget {
    /// One server: one tracking connection (checked with `PING`).
    Server(Box<::redis::Client>),
    /// A Redis Cluster reached through these seed nodes (RESP3 clients with the data
    /// connection's credentials and TLS settings): one tracking connection per node,
    /// discovered with `CLUSTER NODES`.
    Cluster(Vec<::redis::Client>),
}

/// The backend a [`Cache`](crate::Cache) was built with.
#[derive(Clone)]
pub(crate) enum AnyBackend {
    Memory(MemoryBackend),
    Redis(RedisBackend),
    Cluster(RedisClusterBackend),
}

impl AnyBackend {
    pub(crate) async fn get(&self, key: &str) -> BackendResult<Option<Raw>> {
        match self {
            AnyBackend::Memory(b) => b.get(key).await,
            AnyBackend::Redis(b) => b.get(key).await,
            AnyBackend::Cluster(b) => b.get(key).await,
        }
    }
    pub(crate) async fn try_lease(
        &self,
        key: &str,
        lease: &[u8],
        px_ms: u64,
    ) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.try_lease(key, lease, px_ms).await,
            AnyBackend::Redis(b) => b.try_lease(key, lease, px_ms).await,
            AnyBackend::Cluster(b) => b.try_lease(key, lease, px_ms).await,
        }
    }
    pub(crate) async fn fill(
        &self,
        key: &str,
        lease: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.fill(key, lease, value, px_ms).await,
            AnyBackend::Redis(b) => b.fill(key, lease, value, px_ms).await,
            AnyBackend::Cluster(b) => b.fill(key, lease, value, px_ms).await,
        }
    }
    pub(crate) async fn extend(&self, key: &str, lease: &[u8], px_ms: u64) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.extend(key, lease, px_ms).await,
            AnyBackend::Redis(b) => b.extend(key, lease, px_ms).await,
            AnyBackend::Cluster(b) => b.extend(key, lease, px_ms).await,
        }
    }
    pub(crate) async fn release(&self, key: &str, lease: &[u8]) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.release(key, lease).await,
            AnyBackend::Redis(b) => b.release(key, lease).await,
            AnyBackend::Cluster(b) => b.release(key, lease).await,
        }
    }
    pub(crate) async fn put(&self, key: &str, value: &[u8], px_ms: u64) -> BackendResult<()> {
        match self {
            AnyBackend::Memory(b) => b.put(key, value, px_ms).await,
            AnyBackend::Redis(b) => b.put(key, value, px_ms).await,
            AnyBackend::Cluster(b) => b.put(key, value, px_ms).await,
        }
    }
    pub(crate) async fn expire(&self, key: &str, now_ms: u64) -> BackendResult<()> {
        match self {
            AnyBackend::Memory(b) => b.expire(key, now_ms).await,
            AnyBackend::Redis(b) => b.expire(key, now_ms).await,
            AnyBackend::Cluster(b) => b.expire(key, now_ms).await,
        }
    }
    pub(crate) async fn delete(&self, keys: &[String]) -> BackendResult<u64> {
        match self {
            AnyBackend::Memory(b) => b.delete(keys).await,
            AnyBackend::Redis(b) => b.delete(keys).await,
            AnyBackend::Cluster(b) => b.delete(keys).await,
        }
    }
    pub(crate) async fn try_refresh(
        &self,
        key: &str,
        token: &[u8],
        stored_at: &[u8],
        hold_ms: u64,
    ) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.try_refresh(key, token, stored_at, hold_ms).await,
            AnyBackend::Redis(b) => b.try_refresh(key, token, stored_at, hold_ms).await,
            AnyBackend::Cluster(b) => b.try_refresh(key, token, stored_at, hold_ms).await,
        }
    }
    pub(crate) async fn fill_refresh(
        &self,
        key: &str,
        token: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.fill_refresh(key, token, value, px_ms).await,
            AnyBackend::Redis(b) => b.fill_refresh(key, token, value, px_ms).await,
            AnyBackend::Cluster(b) => b.fill_refresh(key, token, value, px_ms).await,
        }
    }
    pub(crate) async fn extend_refresh(
        &self,
        key: &str,
        token: &[u8],
        hold_ms: u64,
    ) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.extend_refresh(key, token, hold_ms).await,
            AnyBackend::Redis(b) => b.extend_refresh(key, token, hold_ms).await,
            AnyBackend::Cluster(b) => b.extend_refresh(key, token, hold_ms).await,
        }
    }
    pub(crate) async fn release_refresh(&self, key: &str, token: &[u8]) -> BackendResult<bool> {
        match self {
            AnyBackend::Memory(b) => b.release_refresh(key, token).await,
            AnyBackend::Redis(b) => b.release_refresh(key, token).await,
            AnyBackend::Cluster(b) => b.release_refresh(key, token).await,
        }
    }
    pub(crate) async fn tag_add(&self, tag: &str, member: &str, life_ms: u64) -> BackendResult<()> {
        match self {
            AnyBackend::Memory(b) => b.tag_add(tag, member, life_ms).await,
            AnyBackend::Redis(b) => b.tag_add(tag, member, life_ms).await,
            AnyBackend::Cluster(b) => b.tag_add(tag, member, life_ms).await,
        }
    }
    pub(crate) async fn tag_scan(
        &self,
        tag: &str,
        cursor: u64,
        count: usize,
    ) -> BackendResult<(u64, Vec<(String, u64)>)> {
        match self {
            AnyBackend::Memory(b) => b.tag_scan(tag, cursor, count).await,
            AnyBackend::Redis(b) => b.tag_scan(tag, cursor, count).await,
            AnyBackend::Cluster(b) => b.tag_scan(tag, cursor, count).await,
        }
    }
    pub(crate) async fn tag_remove(
        &self,
        tag: &str,
        members: &[(String, u64)],
    ) -> BackendResult<()> {
        match self {
            AnyBackend::Memory(b) => b.tag_remove(tag, members).await,
            AnyBackend::Redis(b) => b.tag_remove(tag, members).await,
            AnyBackend::Cluster(b) => b.tag_remove(tag, members).await,
        }
    }
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            AnyBackend::Memory(_) => "memory",
            AnyBackend::Redis(_) => "redis",
            AnyBackend::Cluster(_) => "redis-cluster",
        }
    }
}
