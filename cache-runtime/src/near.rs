//! The near cache: decoded values of `#[cached(.., local_ttl = N)]` functions kept in this
//! process, checked before the Redis `GET`, kept coherent by Redis server-assisted
//! client-side caching.
//!
//! # Coherence
//!
//! A dedicated RESP3 connection runs `CLIENT TRACKING ON BCAST PREFIX <namespace>:`: the
//! server pushes an `invalidate` message for every write, delete, expiry or eviction of a key
//! under the namespace, by any client (this process's own writes included). Each push evicts
//! those keys here (a `null` one flushes everything). While that connection is not
//! established (not yet, dropped, or not answering its health `PING`), the near cache is
//! flushed and bypassed: no near reads, no near fills.
//!
//! # Fills never resurrect an invalidated value
//!
//! A copy is kept only after a Redis hit. The call reads an epoch (a global flush counter and
//! a per-stripe counter of its key) *before* its `GET`; every push and every local
//! invalidation bumps the key's stripe, every flush the global counter. A fill inserts, then
//! re-reads the epoch and removes what it inserted if it changed; an invalidation bumps,
//! then removes. Whatever the interleaving, either the fill sees the bump, or the
//! invalidation's removal comes after the insert. And a push processed before the epoch read
//! was sent after the write it reports, so the `GET` that follows sees that write.

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::entry;
use crate::stats::Counters;

/// Default bound of the near cache: 64 MiB (keys plus the serialized size of the values).
pub const DEFAULT_LOCAL_CAPACITY: u64 = 64 * 1024 * 1024;
/// How long the map keeps a copy at most, past its own deadline too (see `lookup`).
const LINGER: Duration = Duration::from_secs(600);
/// Stripes of invalidation epochs (a power of two).
const STRIPES: usize = 1024;
/// How often the tracking connection is checked with a `PING`, and how long it may take.
const HEALTH_EVERY: Duration = Duration::from_millis(500);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect backoff of the tracking connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A test hook: called with the keys of every invalidation push, after they were evicted.
pub(crate) type PushHook = Box<dyn Fn(&[String]) + Send + Sync>;

/// The stats name `tracking_resets` is counted under.
pub(crate) const NEAR_STATS_NAME: &str = "cache_runtime::near";

/// Proof that a stored type can live in the near cache (`Clone + Send + Sync + 'static`),
/// made by [`near_fns`](crate::__private::near_fns) where `local_ttl = N` is written.
pub struct NearFns<T> {
    clone: fn(&T) -> T,
    wrap: fn(T) -> Box<dyn Any + Send + Sync>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for NearFns<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for NearFns<T> {}

/// The near-cache operations of a stored type `T` (requires `T: Clone`).
pub fn near_fns<T: Clone + Send + Sync + 'static>() -> NearFns<T> {
    NearFns {
        clone: T::clone,
        wrap: |v| Box::new(v),
        _t: PhantomData,
    }
}

/// One copy. The map holds it behind an `Arc`: a near hit (moka clones the value it returns)
/// then touches one reference count, of this key only.
struct Slot {
    /// `None`: a negative entry.
    value: Option<Box<dyn Any + Send + Sync>>,
    type_id: TypeId,
    expires: Instant,
    weight: u32,
    counters: Arc<Counters>,
}

/// The near map's hasher: seeded XXH3 over the key's bytes in one call (a String key is
/// hashed as its bytes and a `0xff` terminator), instead of SipHash, which cost about a fifth
/// of a near hit for a typical 40-byte key (callgrind, `scripts/hit-cost.sh --near`). The seed
/// is random per near cache, so that keys chosen by a caller cannot aim at one bucket without
/// knowing it (XXH3 is not a keyed PRF like SipHash: a weaker defence, for a bounded map).
#[derive(Clone)]
struct KeyHash(u64);

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.0 = self.0.rotate_left(8) ^ u64::from(b);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a fill compares: the epochs read before the `GET`.
#[derive(Clone, Copy)]
pub(crate) struct Epoch {
    flush: u64,
    stripe: u64,
    idx: usize,
}

/// One cache's near cache and its tracking state.
pub(crate) struct Near {
    map: moka::sync::Cache<String, Arc<Slot>, KeyHash>,
    /// Tracking is established: near reads and fills are allowed.
    active: AtomicBool,
    started: AtomicBool,
    flush_epoch: AtomicU64,
    stripes: Box<[AtomicU64]>,
    /// RESP3 client of the tracking connection.
    client: redis::Client,
    prefix: String,
    counters: Arc<Counters>,
    /// Id of the current tracking connection (a late `Disconnection` of an old one is ignored).
    conn_id: AtomicU64,
    /// See [`Cache::__on_near_push`](crate::Cache::__on_near_push).
    push_hook: OnceLock<PushHook>,
    me: Weak<Near>,
}

impl Near {
    pub(crate) fn new(
        capacity: u64,
        client: redis::Client,
        namespace: &str,
        counters: Arc<Counters>,
    ) -> Arc<Near> {
        let map = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &String, v: &Arc<Slot>| {
                u32::try_from(k.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(v.weight)
            })
            .time_to_live(LINGER)
            .build_with_hasher(KeyHash(rand::random()));
        Arc::new_cyclic(|me| Near {
            map,
            active: AtomicBool::new(false),
            started: AtomicBool::new(false),
            flush_epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            client,
            prefix: format!("{namespace}:"),
            counters,
            conn_id: AtomicU64::new(0),
            push_hook: OnceLock::new(),
            me: me.clone(),
        })
    }

    fn stripe(key: &str) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) & (STRIPES - 1)
    }

    /// Whether near reads and fills are allowed now.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(SeqCst)
    }

    /// Looks `full` up: `Ok(Some(v))` a value, `Ok(None)` a negative entry, `Err(Some(e))` a
    /// miss whose fill must compare `e`, `Err(None)` bypassed (no fill).
    #[inline]
    pub(crate) fn lookup<T: 'static>(
        &self,
        full: &str,
        fns: NearFns<T>,
    ) -> Result<Option<T>, Option<Epoch>> {
        // The epoch first, then `active`: a reset between the two changes the flush epoch.
        let idx = Self::stripe(full);
        let e = Epoch {
            flush: self.flush_epoch.load(SeqCst),
            stripe: self.stripes[idx].load(SeqCst),
            idx,
        };
        if !self.is_active() {
            self.start();
            return Err(None);
        }
        match self.map.get(full) {
            // Past its deadline (`local_ttl`, or the entry's freshness): the map keeps no
            // timers (they cost a near hit more than this check); the copy stays until it
            // is replaced, evicted or pushed out by the capacity bound.
            Some(slot) if slot.expires <= Instant::now() => Err(Some(e)),
            Some(slot) if slot.type_id == TypeId::of::<T>() => match &slot.value {
                None => Ok(None),
                Some(v) => match v.downcast_ref::<T>() {
                    Some(v) => Ok(Some((fns.clone)(v))),
                    None => Err(Some(e)),
                },
            },
            _ => Err(Some(e)),
        }
    }

    fn changed(&self, e: Epoch) -> bool {
        !self.is_active()
            || self.flush_epoch.load(SeqCst) != e.flush
            || self.stripes[e.idx].load(SeqCst) != e.stripe
    }

    /// Keeps a copy read from Redis (`raw`: the entry's bytes) for at most `local_ttl_secs`
    /// and never past the entry's freshness, unless an invalidation or flush happened since
    /// `e` was read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill<T: 'static>(
        &self,
        full: &str,
        e: Epoch,
        value: Option<&T>,
        fns: NearFns<T>,
        raw: &[u8],
        local_ttl_secs: u64,
        counters: Arc<Counters>,
    ) {
        if self.changed(e) {
            return;
        }
        let Ok((h, _)) = entry::decode(raw) else {
            return;
        };
        let now_ms = entry::now_ms();
        let left_ms = h
            .fresh_until_ms
            .saturating_sub(now_ms)
            .min(local_ttl_secs.saturating_mul(1000));
        if left_ms == 0 {
            return;
        }
        let slot = Slot {
            value: value.map(|v| (fns.wrap)((fns.clone)(v))),
            type_id: TypeId::of::<T>(),
            expires: Instant::now() + Duration::from_millis(left_ms),
            weight: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            counters,
        };
        #[cfg(test)]
        tests::BEFORE_INSERT.with(|h| {
            if let Some(h) = h.borrow_mut().as_mut() {
                h();
            }
        });
        self.map.insert(full.to_owned(), Arc::new(slot));
        if self.changed(e) {
            // An invalidation or flush raced this fill: it may have run its removal before
            // the insert. Remove the copy (perhaps a newer fill's: that only costs a GET).
            self.map.invalidate(full);
        }
    }

    /// Evicts `full` (a push, or an invalidation in this process).
    pub(crate) fn evict(&self, full: &str) {
        self.stripes[Self::stripe(full)].fetch_add(1, SeqCst);
        if let Some(slot) = self.map.remove(full) {
            Counters::bump(&slot.counters.local_evictions);
        }
    }

    /// Drops every copy (a `null` invalidation, a tag invalidation in this process, a reset).
    pub(crate) fn flush(&self) {
        self.flush_epoch.fetch_add(1, SeqCst);
        self.map.invalidate_all();
    }

    /// The tracking connection dropped or failed: bypass and flush until it is back.
    fn drop_tracking(&self) {
        if self.active.swap(false, SeqCst) {
            self.flush();
            Counters::bump(&self.counters.tracking_resets);
            warn!("near cache: tracking connection lost; flushed and bypassed until it is back");
        }
    }

    /// Starts the tracking task (once; lazily, when the first `local_ttl` function runs).
    fn start(&self) {
        if self.started.load(Relaxed) || self.started.swap(true, SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(track(self.me.clone()));
            }
            Err(_) => self.started.store(false, SeqCst),
        }
    }

    fn on_push(&self, id: u64, info: PushInfo, dead: &Notify) {
        match info.kind {
            PushKind::Invalidate => {
                let keys = self.push_hook.get().map(|_| {
                    let mut keys = Vec::new();
                    info.data.iter().for_each(|v| push_keys(v, &mut keys));
                    keys
                });
                for v in info.data {
                    self.invalidate_value(v);
                }
                if let (Some(hook), Some(keys)) = (self.push_hook.get(), keys) {
                    hook(&keys);
                }
            }
            PushKind::Disconnection => {
                if self.conn_id.load(SeqCst) == id {
                    self.drop_tracking();
                }
                dead.notify_one();
            }
            _ => {}
        }
    }

    /// Sets the push hook (once; `false` if one was set already).
    pub(crate) fn set_push_hook(&self, hook: PushHook) -> bool {
        self.push_hook.set(hook).is_ok()
    }

    fn invalidate_value(&self, v: Value) {
        match v {
            Value::Nil => self.flush(),
            Value::Array(items) | Value::Set(items) => {
                items.into_iter().for_each(|i| self.invalidate_value(i))
            }
            // A key that is not UTF-8 is not one of ours: nothing to evict.
            Value::BulkString(b) => {
                if let Ok(k) = std::str::from_utf8(&b) {
                    self.evict(k);
                }
            }
            Value::SimpleString(s) => self.evict(&s),
            _ => {}
        }
    }
}

/// The keys named by an invalidation push (a `null`, a flush, names none).
fn push_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| push_keys(i, out)),
        Value::BulkString(b) => out.extend(std::str::from_utf8(b).ok().map(str::to_owned)),
        Value::SimpleString(s) => out.push(s.clone()),
        _ => {}
    }
}

/// The tracking task: connect, `CLIENT TRACKING ON BCAST PREFIX <ns>:`, activate, watch with
/// `PING`; on any failure flush, bypass and reconnect with backoff. Ends when the cache is
/// dropped.
async fn track(me: Weak<Near>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(near) = me.upgrade() else { return };
        let id = near.conn_id.fetch_add(1, SeqCst) + 1;
        let client = near.client.clone();
        let prefix = near.prefix.clone();
        drop(near);
        let dead = Arc::new(Notify::new());
        let sender = {
            let me = me.clone();
            let dead = dead.clone();
            move |info: PushInfo| -> Result<(), redis::aio::SendError> {
                match me.upgrade() {
                    Some(near) => {
                        near.on_push(id, info, &dead);
                        Ok(())
                    }
                    None => Err(redis::aio::SendError),
                }
            }
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_push_sender(sender)
            .set_connection_timeout(Some(HEALTH_TIMEOUT))
            .set_response_timeout(Some(HEALTH_TIMEOUT));
        let connected = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let _: () = redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .arg("BCAST")
                .arg("PREFIX")
                .arg(&prefix)
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let mut conn = match tokio::time::timeout(HEALTH_TIMEOUT * 2, connected).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!(error = %e, "near cache: tracking connection failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                debug!("near cache: tracking connection timed out; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        match me.upgrade() {
            Some(near) => near.active.store(true, SeqCst),
            None => return,
        }
        debug!("near cache: tracking established");
        loop {
            tokio::select! {
                _ = dead.notified() => break,
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
            }
            if me.strong_count() == 0 {
                return;
            }
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<Value>(&mut conn);
            match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        match me.upgrade() {
            Some(near) => near.drop_tracking(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::entry::{Header, Kind};

    type Hook = Box<dyn FnMut()>;
    thread_local! {
        /// Runs inside `fill`, after its first epoch check and before its insert.
        pub(super) static BEFORE_INSERT: RefCell<Option<Hook>> = RefCell::new(None);
    }

    /// The push is processed after the fill checked its epoch and before it inserted: the
    /// push's removal found nothing, so the fill must notice and remove its own copy.
    #[test]
    fn push_between_the_check_and_the_insert() {
        let n = near();
        let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
            panic!()
        };
        let n2 = n.clone();
        BEFORE_INSERT.with(|h| *h.borrow_mut() = Some(Box::new(move || n2.evict("ns:k"))));
        fill(&n, e, 1);
        BEFORE_INSERT.with(|h| *h.borrow_mut() = None);
        assert!(
            matches!(n.lookup::<u64>("ns:k", near_fns()), Err(Some(_))),
            "the fill resurrected a copy the push evicted"
        );
    }

    fn near() -> Arc<Near> {
        // Never connected: the tests drive the state by hand.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let n = Near::new(1 << 20, client, "ns", Arc::new(Counters::new("t")));
        n.started.store(true, SeqCst);
        n.active.store(true, SeqCst);
        n
    }

    fn raw() -> Vec<u8> {
        let now = entry::now_ms();
        let mut buf = Header {
            kind: Kind::Value,
            codec: 0,
            stored_at_ms: now,
            fresh_until_ms: now + 60_000,
            load_ms: 0,
            type_tag: 0,
            refresh_until_ms: 0,
        }
        .begin(0);
        buf.extend_from_slice(b"x");
        buf
    }

    fn fill(n: &Near, e: Epoch, v: u64) {
        let c = Arc::new(Counters::new("t"));
        n.fill("ns:k", e, Some(&v), near_fns::<u64>(), &raw(), 60, c);
    }

    /// The GET read the old value, then the invalidation push was processed, then the fill
    /// ran: the fill must be dropped (the push's eviction found nothing to evict).
    #[test]
    fn fill_after_a_push_during_its_get_is_dropped() {
        let n = near();
        let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
            panic!("a miss with an epoch")
        };
        n.evict("ns:k"); // the push, while the GET was in flight
        fill(&n, e, 1);
        assert!(matches!(n.lookup::<u64>("ns:k", near_fns()), Err(Some(_))));
        // A fill whose epoch was read after the push is kept.
        let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
            panic!()
        };
        fill(&n, e, 2);
        assert!(matches!(n.lookup::<u64>("ns:k", near_fns()), Ok(Some(2))));
    }

    /// A flush (tracking reset) during the GET drops the fill, as does a fill while bypassed.
    #[test]
    fn fill_across_a_reset_is_dropped() {
        let n = near();
        let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
            panic!()
        };
        n.drop_tracking();
        n.active.store(true, SeqCst); // tracking back before the fill
        fill(&n, e, 1);
        assert!(matches!(n.lookup::<u64>("ns:k", near_fns()), Err(Some(_))));
        n.active.store(false, SeqCst);
        assert!(matches!(n.lookup::<u64>("ns:k", near_fns()), Err(None)));
    }

    /// The push's removal and the fill's insert interleave in every order from threads; the
    /// copy never outlives a push that ran after its epoch was read.
    #[test]
    fn racing_fills_and_pushes_never_leave_an_old_copy() {
        for _ in 0..200 {
            let n = near();
            let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
                panic!()
            };
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (n2, b2) = (n.clone(), barrier.clone());
            let pusher = std::thread::spawn(move || {
                b2.wait();
                n2.evict("ns:k");
            });
            barrier.wait();
            fill(&n, e, 1);
            pusher.join().unwrap();
            assert!(
                matches!(n.lookup::<u64>("ns:k", near_fns()), Err(Some(_))),
                "an old copy survived a push processed after its GET started"
            );
        }
    }
}
