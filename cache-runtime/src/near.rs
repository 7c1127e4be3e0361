//! The near cache: decoded values of `#[cached(.., local_ttl = N)]` functions kept in this
//! process, checked before the Redis `GET`, kept coherent by Redis server-assisted
//! client-side caching.
//!
//! # Coherence
//!
//! Dedicated RESP3 connections (one to a single server; one to every node of a cluster, see
//! [`tracking`]) run `CLIENT TRACKING ON BCAST PREFIX <namespace>:`: the server pushes an
//! `invalidate` message for every write, delete, expiry or eviction of a key under the
//! namespace, by any client (this process's own writes included). Each push evicts those keys
//! here (a `null` one flushes everything). While tracking is not complete (not yet, a
//! connection dropped or does not answer its check, a cluster node is not tracked, or the
//! cluster's topology just changed), the near cache is flushed and bypassed: no near reads, no
//! near fills.
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
//!
//! A copy also carries the epoch its fill read, and a lookup answers from it only while its
//! key's stripe and the flush counter still hold that epoch: between a fill's insert and its
//! re-check the copy is already visible (moka publishes it inside `insert`), and a lookup
//! that starts after an invalidation returned must not see it. The re-check after the insert
//! only frees the memory of a copy that can no longer be answered.
//!
//! # Whose runtime
//!
//! The tracking connection (and the task that reads its pushes) runs on a thread the cache
//! owns, with its own current-thread Tokio runtime, started with the first `local_ttl` call:
//! it does not end with the runtime of that call (a `#[tokio::test]`, a warm-up
//! `block_on`), which would leave copies served with nobody evicting them.

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;
use tracing::warn;

mod tracking;

pub(crate) use tracking::TrackingTarget;

use crate::entry;
use crate::stats::Counters;

/// Default bound of the near cache: 64 MiB (keys plus the serialized size of the values).
pub(crate) const DEFAULT_LOCAL_CAPACITY: u64 = 64 * 1024 * 1024;
/// Stripes of invalidation epochs (a power of two): an invalidation of one key also makes
/// the copies of the keys sharing its stripe unanswerable (they are read again from Redis).
const STRIPES: usize = 4096;
/// What a copy weighs beyond its key and serialized bytes: the map's entry, the `Slot`, the
/// `Arc` of the decoded value (an estimate; the decoded value is taken to weigh about its
/// serialized size).
const ENTRY_OVERHEAD: u32 = 160;
/// Default of how often the tracking connections are checked (`PING`; on a cluster
/// `CLUSTER NODES`, which also re-reads the topology).
pub(crate) const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long the map keeps a copy at most, past its own deadline too (see `lookup`).
const LINGER: Duration = Duration::from_secs(600);
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
    /// Answered as a near hit until then (`local_ttl`, never past the entry's grace end).
    expires: Instant,
    /// The entry's end of grace (unix ms; its freshness when it has no grace window): a
    /// copy of a `stale` function is kept until then for the fail-safe ([`Near::fallback`]).
    keep_until_ms: u64,
    /// What the entry's header said when the copy was filled.
    meta: Meta,
    weight: u32,
    /// The epoch the fill read before its `GET`: the copy is answered only while it holds
    /// (the stripe: only until `confirmed`).
    flush: u64,
    stripe: u64,
    /// Set by the fill once its re-check after the insert found the epoch unchanged.
    confirmed: AtomicBool,
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

/// The header fields of the entry a copy was filled from: what the hit path's decisions
/// (freshness, grace window, early refresh) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Unix ms.
    pub(crate) stored_at_ms: u64,
    /// Unix ms.
    pub(crate) fresh_until_ms: u64,
    /// The loader's duration, ms.
    pub(crate) load_ms: u32,
    /// When the entry's refresh lease ran out, as read (unix ms; 0: none).
    pub(crate) refresh_until_ms: u64,
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
    /// Where the tracking connections go.
    target: TrackingTarget,
    /// How often the tracking task checks its connections.
    interval: Duration,
    prefix: String,
    counters: Arc<Counters>,
    /// Tracking connections lost so far (bumped by a disconnection push).
    losses: AtomicU64,
    /// Wakes the tracking task when a connection was lost.
    wake: Arc<Notify>,
    /// See [`Cache::__on_near_push`](crate::Cache::__on_near_push).
    push_hook: OnceLock<PushHook>,
    me: Weak<Near>,
}

impl Drop for Near {
    fn drop(&mut self) {
        // The tracking task ends (and closes its connections) without waiting for its next
        // check.
        self.wake.notify_one();
    }
}

impl Near {
    pub(crate) fn new(
        capacity: u64,
        target: TrackingTarget,
        interval: Duration,
        namespace: &str,
        counters: Arc<Counters>,
    ) -> Arc<Near> {
        let map = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &String, v: &Arc<Slot>| {
                u32::try_from(k.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(v.weight)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .time_to_live(LINGER)
            .build_with_hasher(KeyHash(rand::random()));
        Arc::new_cyclic(|me| Near {
            map,
            active: AtomicBool::new(false),
            started: AtomicBool::new(false),
            flush_epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            target,
            interval,
            prefix: format!("{namespace}:"),
            counters,
            losses: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
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

    /// Looks `full` up: `Ok((Some(v), meta))` a value, `Ok((None, meta))` a negative entry,
    /// `Err(Some(e))` a miss whose fill must compare `e`, `Err(None)` bypassed (no fill).
    /// A copy may be past its entry's freshness (in its grace window): `meta` says.
    #[inline]
    pub(crate) fn lookup<T: 'static>(
        &self,
        full: &str,
        fns: NearFns<T>,
    ) -> Result<(Option<T>, Meta), Option<Epoch>> {
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
            // A copy whose epoch no longer holds was filled before an invalidation or a
            // flush that has run since (or is running): never answered. The stripe is
            // compared only until the fill's re-check confirmed the copy (see `fill`).
            Some(slot)
                if slot.flush != e.flush
                    || (!slot.confirmed.load(SeqCst) && slot.stripe != e.stripe) =>
            {
                Err(Some(e))
            }
            // Past its deadline (`local_ttl`, or the entry's grace end): the map keeps no
            // timers (they cost a near hit more than this check); the copy is dropped here
            // (perhaps a newer fill's, racing: that only costs a GET), unless the fail-safe
            // may still need it.
            Some(slot) if slot.expires <= Instant::now() => {
                if slot.keep_until_ms <= entry::now_ms() {
                    self.map.invalidate(full);
                }
                Err(Some(e))
            }
            Some(slot) if slot.type_id == TypeId::of::<T>() => match &slot.value {
                None => Ok((None, slot.meta)),
                Some(v) => match v.downcast_ref::<T>() {
                    Some(v) => Ok((Some((fns.clone)(v)), slot.meta)),
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

    /// The fail-safe copy of `full`: a copy of an entry whose grace window has not ended,
    /// whatever happened to tracking since it was filled (`Some(None)`: a negative entry).
    /// Only for a call whose backend failed and whose loader failed: such a copy may be
    /// older than a write another process made while tracking was lost.
    pub(crate) fn fallback<T: 'static>(&self, full: &str, fns: NearFns<T>) -> Option<Option<T>> {
        let slot = self.map.get(full)?;
        if slot.keep_until_ms <= entry::now_ms() || slot.type_id != TypeId::of::<T>() {
            return None;
        }
        // A copy not yet confirmed by its fill may be one an eviction just voided.
        if !slot.confirmed.load(SeqCst)
            && slot.stripe != self.stripes[Self::stripe(full)].load(SeqCst)
        {
            return None;
        }
        match &slot.value {
            None => Some(None),
            Some(v) => v.downcast_ref::<T>().map(|v| Some((fns.clone)(v))),
        }
    }

    /// Keeps a copy read from Redis (`raw`: the entry's bytes) for at most `local_ttl_ms`
    /// and never past the entry's grace end (its freshness plus `stale_ms`), unless an
    /// invalidation or flush happened since `e` was read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill<T: 'static>(
        &self,
        full: &str,
        e: Epoch,
        value: Option<&T>,
        fns: NearFns<T>,
        raw: &[u8],
        (local_ttl_ms, stale_ms): (u64, u64),
        counters: Arc<Counters>,
    ) {
        if self.changed(e) {
            return;
        }
        let Ok((h, _)) = entry::decode(raw) else {
            return;
        };
        let now_ms = entry::now_ms();
        let keep_until_ms = h.fresh_until_ms.saturating_add(stale_ms);
        let left_ms = keep_until_ms.saturating_sub(now_ms).min(local_ttl_ms);
        if left_ms == 0 {
            return;
        }
        let slot = Slot {
            value: value.map(|v| (fns.wrap)((fns.clone)(v))),
            type_id: TypeId::of::<T>(),
            expires: Instant::now() + Duration::from_millis(left_ms),
            keep_until_ms: if stale_ms > 0 { keep_until_ms } else { 0 },
            meta: Meta {
                stored_at_ms: h.stored_at_ms,
                fresh_until_ms: h.fresh_until_ms,
                load_ms: h.load_ms,
                refresh_until_ms: h.refresh_until_ms,
            },
            weight: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            flush: e.flush,
            stripe: e.stripe,
            confirmed: AtomicBool::new(false),
            counters,
        };
        let slot = Arc::new(slot);
        #[cfg(test)]
        tests::BEFORE_INSERT.with(|h| {
            if let Some(h) = h.borrow_mut().as_mut() {
                h();
            }
        });
        self.map.insert(full.to_owned(), slot.clone());
        #[cfg(test)]
        tests::AFTER_INSERT.with(|h| {
            if let Some(h) = h.borrow_mut().as_mut() {
                h();
            }
        });
        if self.changed(e) {
            // An invalidation or flush raced this fill: it may have run its removal before
            // the insert. The copy is never answered (its epoch is stale); free it (perhaps
            // a newer fill's: that only costs a GET).
            self.map.invalidate(full);
        } else {
            // No invalidation of this key ran between the `GET` and now: any later one
            // removes the copy after its bump. From here the copy no longer needs its
            // stripe compared, so writes to other keys of its stripe leave it answerable.
            slot.confirmed.store(true, SeqCst);
        }
    }

    /// Evicts `full` (a push, or an invalidation in this process).
    pub(crate) fn evict(&self, full: &str) {
        self.stripes[Self::stripe(full)].fetch_add(1, SeqCst);
        if let Some(slot) = self.map.remove(full)
            && slot.expires > Instant::now()
        {
            Counters::bump(&slot.counters.local_evictions);
        }
    }

    /// Drops every copy (a `null` invalidation, a tag invalidation in this process, a reset).
    pub(crate) fn flush(&self) {
        self.flush_epoch.fetch_add(1, SeqCst);
        self.map.invalidate_all();
    }

    /// Makes every copy unanswerable (a tracking reset) but keeps them for the fail-safe
    /// ([`fallback`](Self::fallback)), which serves a copy in its grace window when Redis
    /// and the loader both fail, until tracking is complete again (then they are dropped).
    /// An invalidation [`flush`](Self::flush)es instead.
    pub(crate) fn reset(&self) {
        self.flush_epoch.fetch_add(1, SeqCst);
    }

    /// Tracking is no longer complete (`why`): bypass and reset until it is back.
    fn drop_tracking(&self, why: &str) {
        if self.active.swap(false, SeqCst) {
            self.reset();
            Counters::bump(&self.counters.tracking_resets);
            warn!("near cache: {why}; bypassed until tracking is complete again");
        }
    }

    /// Starts the tracking task (once; lazily, when the first `local_ttl` function runs) on
    /// a thread of its own with a current-thread runtime: see "Whose runtime". The thread
    /// ends when the cache is dropped.
    fn start(&self) {
        if self.started.load(Relaxed) || self.started.swap(true, SeqCst) {
            return;
        }
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("cache-near-tracking".into())
            .spawn(move || {
                // If the thread ends while the cache lives (a panic), nobody would evict:
                // bypass, and let the next `local_ttl` call start tracking again.
                let _ended = Ended(me.clone());
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(tracking::track(me)),
                    Err(e) => {
                        warn!(error = %e, "near cache: could not start the tracking runtime; near cache stays bypassed");
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "near cache: could not start the tracking thread; near cache stays bypassed");
        }
    }

    /// A push from a tracking connection (`live`: that connection is still in use).
    fn on_push(&self, live: &AtomicBool, info: PushInfo) {
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
            PushKind::Disconnection if live.swap(false, SeqCst) => {
                // Counted before `active` turns off: the task re-reads the count after
                // activating, so a loss that raced its activation is not missed.
                self.losses.fetch_add(1, SeqCst);
                self.drop_tracking("a tracking connection closed");
                self.wake.notify_one();
            }
            _ => {}
        }
    }

    /// Sets the push hook (once; `false` if one was set already).
    #[cfg(feature = "test-util")]
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

/// Ends the tracking thread: if the cache still lives (the thread panicked), bypass the near
/// cache and allow a new start.
struct Ended(Weak<Near>);

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(near) = self.0.upgrade() {
            near.drop_tracking("the tracking thread ended");
            near.started.store(false, SeqCst);
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::entry::{Header, Kind};

    type Hook = Box<dyn FnMut()>;
    thread_local! {
        /// Runs inside `fill`, after its first epoch check and before its insert.
        pub(super) static BEFORE_INSERT: RefCell<Option<Hook>> = RefCell::new(None);
        /// Runs inside `fill`, after its insert and before its re-check.
        pub(super) static AFTER_INSERT: RefCell<Option<Hook>> = RefCell::new(None);
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

    /// The copy is visible between the insert and the re-check: an invalidation that ran
    /// completely between the fill's check and its insert, then a lookup in that window
    /// (it started after the invalidation returned) must not be answered by the copy.
    #[test]
    fn a_copy_is_not_answered_between_its_insert_and_its_recheck() {
        for flush in [false, true] {
            let n = near();
            let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
                panic!()
            };
            let n2 = n.clone();
            BEFORE_INSERT.with(|h| {
                *h.borrow_mut() = Some(Box::new(
                    move || {
                        if flush { n2.flush() } else { n2.evict("ns:k") }
                    },
                ))
            });
            let n3 = n.clone();
            let seen = Arc::new(std::sync::Mutex::new(None));
            let seen2 = seen.clone();
            AFTER_INSERT.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    let r = n3.lookup::<u64>("ns:k", near_fns());
                    *seen2.lock().unwrap() = Some(r.ok().map(|(v, _)| v));
                }))
            });
            fill(&n, e, 1);
            BEFORE_INSERT.with(|h| *h.borrow_mut() = None);
            AFTER_INSERT.with(|h| *h.borrow_mut() = None);
            assert_eq!(
                *seen.lock().unwrap(),
                Some(None),
                "a lookup after the {} was answered by the fill's old copy",
                if flush { "flush" } else { "eviction" }
            );
        }
    }

    /// A confirmed copy stays answerable when another key of its stripe is invalidated (a
    /// copy dropped by every write to one of the ~1/4096 keys sharing its stripe would make
    /// the near cache useless on a write-heavy namespace), and is still removed by its own.
    #[test]
    fn an_invalidation_of_another_key_of_the_stripe_keeps_the_copy() {
        let n = near();
        let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
            panic!()
        };
        fill(&n, e, 1);
        let other = (0..)
            .map(|i| format!("ns:other{i}"))
            .find(|k| Near::stripe(k) == Near::stripe("ns:k"))
            .unwrap();
        n.evict(&other);
        assert!(
            matches!(n.lookup::<u64>("ns:k", near_fns()), Ok((Some(1), _))),
            "an invalidation of {other} (same stripe) dropped the copy of ns:k"
        );
        n.evict("ns:k");
        assert!(matches!(n.lookup::<u64>("ns:k", near_fns()), Err(Some(_))));
    }

    fn near() -> Arc<Near> {
        // Never connected: the tests drive the state by hand.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let n = Near::new(
            1 << 20,
            TrackingTarget::Server(Box::new(client)),
            DEFAULT_CHECK_INTERVAL,
            "ns",
            Arc::new(Counters::new("t")),
        );
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
        n.fill(
            "ns:k",
            e,
            Some(&v),
            near_fns::<u64>(),
            &raw(),
            (60_000, 0),
            c,
        );
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
        assert!(matches!(
            n.lookup::<u64>("ns:k", near_fns()),
            Ok((Some(2), _))
        ));
    }

    /// A flush (tracking reset) during the GET drops the fill, as does a fill while bypassed.
    #[test]
    fn fill_across_a_reset_is_dropped() {
        let n = near();
        let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
            panic!()
        };
        n.drop_tracking("test");
        n.active.store(true, SeqCst); // tracking back before the fill
        fill(&n, e, 1);
        assert!(matches!(n.lookup::<u64>("ns:k", near_fns()), Err(Some(_))));
        n.active.store(false, SeqCst);
        assert!(matches!(n.lookup::<u64>("ns:k", near_fns()), Err(None)));
    }

    /// A disconnection of a connection in use flushes, bypasses and counts a loss (which the
    /// tracking task re-reads after activating); one of a connection dropped on purpose
    /// (`live` already false) changes nothing.
    #[test]
    fn disconnection_of_a_live_connection_flushes_and_counts_a_loss() {
        let n = near();
        let Err(Some(e)) = n.lookup::<u64>("ns:k", near_fns()) else {
            panic!()
        };
        fill(&n, e, 1);
        assert!(matches!(
            n.lookup::<u64>("ns:k", near_fns()),
            Ok((Some(1), _))
        ));
        let gone = || PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        };
        let dropped = AtomicBool::new(false);
        n.on_push(&dropped, gone());
        assert!(n.is_active() && n.losses.load(SeqCst) == 0);
        let live = AtomicBool::new(true);
        n.on_push(&live, gone());
        assert!(!n.is_active() && !live.load(SeqCst));
        assert_eq!(n.losses.load(SeqCst), 1);
        assert_eq!(n.counters.tracking_resets.load(SeqCst), 1);
        n.active.store(true, SeqCst);
        assert!(
            matches!(n.lookup::<u64>("ns:k", near_fns()), Err(Some(_))),
            "flushed"
        );
        // A second disconnection push of the same connection is not a second loss.
        n.on_push(&live, gone());
        assert_eq!(n.losses.load(SeqCst), 1);
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
