//! The embedded in-process backend: a bounded `moka` cache with per-entry TTL and the same
//! single-key atomic operations as the Redis backend.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache as Moka;

use super::{Backend, BackendResult, Raw};

#[derive(Clone)]
struct Stored {
    bytes: Arc<[u8]>,
    expires_at: Instant,
}

impl Stored {
    fn live(&self, now: Instant) -> bool {
        self.expires_at > now
    }
}

struct PerEntryTtl;

impl moka::Expiry<String, Stored> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Stored,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(created_at))
    }
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Stored,
        updated_at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(updated_at))
    }
}

/// Members of one tag, by member and by the time they run out.
#[derive(Default)]
struct TagSet {
    by_member: HashMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl TagSet {
    /// Registers `member` until `expire_at_ms`, or just after its previous score: a
    /// registration always changes the score (see `Backend::tag_add`).
    fn insert(&mut self, member: &str, mut expire_at_ms: u64) {
        if let Some(old) = self.by_member.get(member).copied() {
            self.by_expiry.remove(&(old, member.to_owned()));
            expire_at_ms = expire_at_ms.max(old.saturating_add(1));
        }
        self.by_member.insert(member.to_owned(), expire_at_ms);
        self.by_expiry.insert((expire_at_ms, member.to_owned()));
    }

    fn remove(&mut self, member: &str) -> bool {
        match self.by_member.remove(member) {
            Some(at) => self.by_expiry.remove(&(at, member.to_owned())),
            None => false,
        }
    }

    /// Drops members that ran out before `now_ms`; returns how many.
    fn prune(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        while let Some((at, _)) = self.by_expiry.first() {
            if *at >= now_ms {
                break;
            }
            if let Some((_, m)) = self.by_expiry.pop_first() {
                self.by_member.remove(&m);
                n += 1;
            }
        }
        n
    }

    /// Removes the member that runs out first, other than `keep`.
    fn oldest_but(&mut self, keep: &str) -> Option<String> {
        let (at, m) = self.by_expiry.iter().find(|(_, m)| m != keep).cloned()?;
        self.by_expiry.remove(&(at, m.clone()));
        self.by_member.remove(&m);
        Some(m)
    }
}

/// Tag sets of the memory backend. Bounded: members run out with their entries (pruned on
/// every registration of the tag and by a sweep every [`SWEEP_EVERY`] registrations), and
/// past `max_members` the oldest member is dropped together with its entry (dropping only
/// the membership would let a later tag invalidation miss a live entry).
#[derive(Default)]
struct Tags {
    sets: HashMap<String, TagSet>,
    members: usize,
    adds: u64,
}

const SWEEP_EVERY: u64 = 1024;

/// In-process backend bounded by total bytes (keys + values).
#[derive(Clone)]
pub(crate) struct MemoryBackend {
    store: Moka<String, Stored>,
    tags: Arc<Mutex<Tags>>,
    max_members: usize,
    /// Tests: `try_lease` waits here after applying `SET NX`, as when a reply is lost.
    #[cfg(test)]
    pub(crate) after_lease: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.store.entry_count())
            .finish()
    }
}

impl MemoryBackend {
    /// A store holding at most about `max_bytes` of keys and values.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let store = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Stored| {
                u32::try_from(k.len() + v.bytes.len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            // LRU, not moka's default TinyLFU admission: TinyLFU rejects brand-new keys when
            // the store is full of hotter ones, and a new key's lease is always brand new. A
            // rejected lease makes the fill fail, so nothing new would ever be cached and each
            // waiting call would load in turn.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        MemoryBackend {
            store,
            tags: Arc::default(),
            // About the number of smallest entries the store holds.
            max_members: usize::try_from(max_bytes / 100)
                .unwrap_or(usize::MAX)
                .max(1024),
            #[cfg(test)]
            after_lease: None,
        }
    }

    fn stored(bytes: &[u8], px_ms: u64) -> Stored {
        Stored {
            bytes: Arc::from(bytes),
            expires_at: Instant::now() + Duration::from_millis(px_ms),
        }
    }

    /// Runs `f` on the live current bytes and expiry under the key's lock: `None` leaves the
    /// entry alone, `Some(None)` removes it, `Some(Some(s))` stores `s`. True when changed.
    fn compute_with(
        &self,
        key: &str,
        f: impl FnOnce(Option<&Stored>) -> Option<Option<Stored>>,
    ) -> bool {
        let now = Instant::now();
        let result = self.store.entry(key.to_owned()).and_compute_with(|cur| {
            let live = cur.as_ref().map(|e| e.value()).filter(|s| s.live(now));
            match f(live) {
                None => Op::Nop,
                Some(Some(s)) => Op::Put(s),
                Some(None) => Op::Remove,
            }
        });
        matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) | CompResult::Removed(_)
        )
    }

    fn tags(&self) -> std::sync::MutexGuard<'_, Tags> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes entries whose tag membership was dropped to keep the tag sets bounded.
    fn drop_entries(&self, keys: Vec<String>) {
        for k in keys {
            self.compute(&k, |cur| cur.is_some(), None);
        }
    }

    /// Replaces the entry under `key` with `new` when `cond` holds for the live current bytes.
    fn compute(
        &self,
        key: &str,
        cond: impl FnOnce(Option<&[u8]>) -> bool,
        new: Option<Stored>,
    ) -> bool {
        let now = Instant::now();
        let result = self.store.entry(key.to_owned()).and_compute_with(|cur| {
            let live = cur.as_ref().map(|e| e.value()).filter(|s| s.live(now));
            if !cond(live.map(|s| &*s.bytes)) {
                return Op::Nop;
            }
            match new {
                Some(s) => Op::Put(s),
                None => Op::Remove,
            }
        });
        matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) | CompResult::Removed(_)
        )
    }
}

impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> BackendResult<Option<Raw>> {
        let now = Instant::now();
        Ok(self
            .store
            .get(key)
            .filter(|s| s.live(now))
            .map(|s| Raw::Shared(s.bytes)))
    }

    async fn try_lease(&self, key: &str, lease: &[u8], px_ms: u64) -> BackendResult<bool> {
        let won = self.compute(key, |cur| cur.is_none(), Some(Self::stored(lease, px_ms)));
        #[cfg(test)]
        if let Some(gate) = &self.after_lease {
            let _ = gate.acquire().await;
        }
        Ok(won)
    }

    async fn fill(&self, key: &str, lease: &[u8], value: &[u8], px_ms: u64) -> BackendResult<bool> {
        Ok(self.compute(
            key,
            |cur| cur == Some(lease),
            Some(Self::stored(value, px_ms)),
        ))
    }

    async fn extend(&self, key: &str, lease: &[u8], px_ms: u64) -> BackendResult<bool> {
        Ok(self.compute(
            key,
            |cur| cur == Some(lease),
            Some(Self::stored(lease, px_ms)),
        ))
    }

    async fn release(&self, key: &str, lease: &[u8]) -> BackendResult<bool> {
        Ok(self.compute(key, |cur| cur == Some(lease), None))
    }

    async fn put(&self, key: &str, value: &[u8], px_ms: u64) -> BackendResult<()> {
        self.compute(key, |_| true, Some(Self::stored(value, px_ms)));
        Ok(())
    }

    async fn expire(&self, key: &str, now_ms: u64) -> BackendResult<()> {
        self.compute_with(key, |cur| {
            let cur = cur?;
            // A lease or foreign bytes, or no grace window left: deleted.
            let Some((bytes, earlier)) = crate::entry::expire_bytes(&cur.bytes, now_ms) else {
                return Some(None);
            };
            // The key lives on only for its grace window.
            let expires_at = cur
                .expires_at
                .checked_sub(Duration::from_millis(earlier))
                .filter(|at| {
                    *at > Instant::now() + Duration::from_millis(crate::entry::EXPIRE_SLACK_MS)
                });
            let Some(expires_at) = expires_at else {
                return Some(None);
            };
            Some(Some(Stored {
                bytes: Arc::from(bytes),
                expires_at,
            }))
        });
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> BackendResult<u64> {
        // Through the same per-key compute as fill/release, so that a delete and a
        // compare-and-set on one key are atomic with respect to each other (as the Lua
        // scripts and `UNLINK` are on Redis).
        let mut n = 0;
        for k in keys {
            if self.compute(k, |cur| cur.is_some(), None) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn try_refresh(
        &self,
        key: &str,
        token: &[u8],
        stored_at: &[u8],
        hold_ms: u64,
    ) -> BackendResult<bool> {
        let now = crate::entry::now_ms();
        let until = now.saturating_add(hold_ms);
        Ok(self.compute_with(key, |cur| {
            let cur = cur?;
            let bytes = crate::entry::embed_refresh(&cur.bytes, token, stored_at, now, until)?;
            Some(Some(Stored {
                bytes: Arc::from(bytes),
                expires_at: cur.expires_at,
            }))
        }))
    }

    async fn fill_refresh(
        &self,
        key: &str,
        token: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> BackendResult<bool> {
        Ok(self.compute_with(key, |cur| {
            crate::entry::holds_live_refresh(&cur?.bytes, token, crate::entry::now_ms())
                .then(|| Some(Self::stored(value, px_ms)))
        }))
    }

    async fn extend_refresh(&self, key: &str, token: &[u8], hold_ms: u64) -> BackendResult<bool> {
        let now = crate::entry::now_ms();
        let until = now.saturating_add(hold_ms);
        Ok(self.compute_with(key, |cur| {
            let cur = cur?;
            let bytes = crate::entry::renew_refresh(&cur.bytes, token, now, until)?;
            Some(Some(Stored {
                bytes: Arc::from(bytes),
                expires_at: cur.expires_at,
            }))
        }))
    }

    async fn release_refresh(&self, key: &str, token: &[u8]) -> BackendResult<bool> {
        Ok(self.compute_with(key, |cur| {
            let cur = cur?;
            let bytes = crate::entry::strip_refresh(&cur.bytes, token)?;
            Some(Some(Stored {
                bytes: Arc::from(bytes),
                expires_at: cur.expires_at,
            }))
        }))
    }

    async fn tag_add(&self, tag: &str, member: &str, life_ms: u64) -> BackendResult<()> {
        let now_ms = crate::entry::now_ms();
        let mut t = self.tags();
        let t = &mut *t;
        t.adds += 1;
        if t.adds.is_multiple_of(SWEEP_EVERY) {
            let mut pruned = 0;
            t.sets.retain(|_, set| {
                pruned += set.prune(now_ms);
                !set.by_member.is_empty()
            });
            t.members -= pruned;
        }
        let set = t.sets.entry(tag.to_owned()).or_default();
        let before = set.by_member.len();
        set.prune(now_ms);
        set.insert(member, now_ms.saturating_add(life_ms));
        // members - pruned + inserted, where inserted = after - (before - pruned).
        t.members = (t.members + set.by_member.len()) - before;
        // Over the bound: drop the oldest membership of this tag (never the one just
        // registered), else of another tag, together with its entry, under the lock, so that
        // no tag invalidation runs between the two.
        let mut dropped = Vec::new();
        while t.members > self.max_members {
            let victim = match t.sets.get_mut(tag).filter(|s| s.by_member.len() > 1) {
                Some(set) => set.oldest_but(member),
                None => {
                    let other = HashMap::keys(&t.sets).find(|k| k.as_str() != tag).cloned();
                    other.and_then(|k| {
                        let set = t.sets.get_mut(&k)?;
                        let m = set.oldest_but("");
                        if set.by_member.is_empty() {
                            t.sets.remove(&k);
                        }
                        m
                    })
                }
            };
            match victim {
                Some(m) => {
                    t.members -= 1;
                    dropped.push(m);
                }
                None => break,
            }
        }
        self.drop_entries(dropped);
        Ok(())
    }

    async fn tag_scan(
        &self,
        tag: &str,
        _cursor: u64,
        _count: usize,
    ) -> BackendResult<(u64, Vec<(String, u64)>)> {
        // In process nothing waits on a long batch: the whole set at once.
        let t = self.tags();
        let members = t
            .sets
            .get(tag)
            .map(|s| s.by_member.iter().map(|(m, at)| (m.clone(), *at)).collect())
            .unwrap_or_default();
        Ok((0, members))
    }

    async fn tag_remove(&self, tag: &str, members: &[(String, u64)]) -> BackendResult<()> {
        let mut t = self.tags();
        let t = &mut *t;
        if let Some(set) = t.sets.get_mut(tag) {
            for (m, at) in members {
                if set.by_member.get(m) == Some(at) && set.remove(m) {
                    t.members -= 1;
                }
            }
            if set.by_member.is_empty() {
                t.sets.remove(tag);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delete and a compare-and-set fill on the same key are atomic with respect to each
    /// other (as `UNLINK` and the Lua fill are on Redis): whichever runs first, a key that held
    /// the lease ends up empty. With `remove` outside moka's per-key compute lock, a fill could
    /// check the lease, the delete run, and the fill then write the older value back.
    #[test]
    fn delete_and_fill_are_atomic() {
        // The memory backend's futures finish on their first poll.
        fn now<T>(f: impl std::future::Future<Output = T>) -> T {
            let mut f = std::pin::pin!(f);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(v) => v,
                std::task::Poll::Pending => panic!("memory backend operation did not finish"),
            }
        }
        let b = MemoryBackend::new(64 << 20);
        for i in 0..10_000 {
            let key = format!("k{i}");
            assert!(now(b.try_lease(&key, b"L", 60_000)).unwrap());
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                s.spawn(|| {
                    barrier.wait();
                    now(b.fill(&key, b"L", b"V", 60_000)).unwrap()
                });
                s.spawn(|| {
                    barrier.wait();
                    now(b.delete(std::slice::from_ref(&key))).unwrap()
                });
            });
            assert!(
                now(b.get(&key)).unwrap().is_none(),
                "iteration {i}: the value survived a delete that ran after its lease"
            );
        }
    }

    #[tokio::test]
    async fn a_ttl_of_u64_max_is_stored_without_panicking() {
        let b = MemoryBackend::new(1 << 20);
        assert!(b.try_lease("k", b"L", u64::MAX).await.unwrap());
        assert!(b.fill("k", b"L", b"V", u64::MAX).await.unwrap());
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"V"[..]));
    }

    /// SET NX on a key whose entry has expired must succeed, as on Redis.
    #[tokio::test]
    async fn a_lease_over_an_expired_entry_is_taken_as_on_redis() {
        let b = MemoryBackend::new(1 << 20);
        assert!(b.try_lease("k", b"L1", 5).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(b.try_lease("k", b"L2", 1000).await.unwrap());
        assert!(
            !b.fill("k", b"L1", b"V", 1000).await.unwrap(),
            "old lease must not fill"
        );
        assert!(b.fill("k", b"L2", b"V", 1000).await.unwrap());
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    /// A store full of hot entries still admits a new key's lease, so the load under it can
    /// store its value (with TinyLFU admission, 95 of 100 new leases were dropped).
    #[tokio::test]
    async fn full_store_admits_new_leases() {
        let b = MemoryBackend::new(64 * 1024);
        for i in 0..2000 {
            let k = format!("hot{i}");
            let _ = b.try_lease(&k, b"L", 60_000).await;
            let _ = b.fill(&k, b"L", &[0u8; 100], 60_000).await;
            for _ in 0..5 {
                let _ = b.get(&k).await;
            }
        }
        b.store.run_pending_tasks();
        let mut lost = 0;
        for i in 0..100 {
            let k = format!("new{i}");
            assert!(b.try_lease(&k, b"L", 60_000).await.unwrap());
            b.store.run_pending_tasks();
            if !b.fill(&k, b"L", b"V", 60_000).await.unwrap() {
                lost += 1;
            }
        }
        assert_eq!(
            lost, 0,
            "{lost} of 100 new leases were dropped by a full store"
        );
    }
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    fn members(b: &MemoryBackend, tag: &str) -> Vec<String> {
        let t = b.tags();
        let mut v: Vec<String> = t
            .sets
            .get(tag)
            .map(|s| HashMap::keys(&s.by_member).cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Registration prunes members that ran out; a set whose members all ran out is dropped
    /// by the sweep; the member count stays exact.
    #[tokio::test]
    async fn memberships_run_out_with_their_entries() {
        let b = MemoryBackend::new(1 << 20);
        b.tag_add("t", "a", 30).await.unwrap();
        b.tag_add("t", "b", 60_000).await.unwrap();
        b.tag_add("u", "c", 30).await.unwrap();
        assert_eq!(members(&b, "t"), ["a", "b"]);
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        b.tag_add("t", "d", 60_000).await.unwrap();
        assert_eq!(members(&b, "t"), ["b", "d"], "`a` ran out");
        assert_eq!(b.tags().members, 3);
        for i in 0..SWEEP_EVERY {
            b.tag_add("v", &format!("m{i}"), 60_000).await.unwrap();
        }
        assert!(
            !b.tags().sets.contains_key("u"),
            "the sweep dropped the run-out set"
        );
        assert_eq!(b.tags().members, SWEEP_EVERY as usize + 2);
    }

    /// Past the bound, the oldest membership goes together with its entry, so a later tag
    /// invalidation cannot miss a live entry whose membership was dropped; the membership
    /// just registered is never the one dropped (its load would lose its lease).
    #[tokio::test]
    async fn over_the_bound_membership_and_entry_go_together() {
        let b = MemoryBackend::new(1 << 20);
        let max = b.max_members;
        for i in 0..max {
            b.tag_add("t", &format!("k{i}"), 1_000_000 + i as u64)
                .await
                .unwrap();
        }
        assert!(b.try_lease("k0", b"L", 60_000).await.unwrap());
        assert!(b.try_lease("new", b"L", 60_000).await.unwrap());
        b.tag_add("t", "new", 10).await.unwrap();
        assert_eq!(b.tags().members, max);
        let m = members(&b, "t");
        assert!(!m.contains(&"k0".to_owned()) && m.contains(&"new".to_owned()));
        assert!(
            b.get("k0").await.unwrap().is_none(),
            "its entry was dropped too"
        );
        assert!(b.get("new").await.unwrap().is_some(), "the new lease stays");
    }

    #[tokio::test]
    async fn removal_only_when_not_registered_again() {
        let b = MemoryBackend::new(1 << 20);
        b.tag_add("t", "a", 60_000).await.unwrap();
        let (_, scanned) = b.tag_scan("t", 0, 10).await.unwrap();
        // Registered again, even for the same life in the same millisecond: the score moves.
        b.tag_add("t", "a", 0).await.unwrap();
        b.tag_remove("t", &scanned).await.unwrap();
        assert_eq!(members(&b, "t"), ["a"], "re-registered meanwhile: stays");
        let (_, scanned) = b.tag_scan("t", 0, 10).await.unwrap();
        b.tag_remove("t", &scanned).await.unwrap();
        assert!(members(&b, "t").is_empty());
        assert_eq!(b.tags().members, 0);
    }
}
