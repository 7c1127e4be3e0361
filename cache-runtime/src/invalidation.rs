//! `#[invalidates]`: detach the keys' in-process flights, delete the keys, void the tags'
//! members, and queue what could not be delivered for retry (see [`retry`](crate::retry))
//! when the backend cannot be reached.
//!
//! # Tags
//!
//! A tag is a sorted set `<namespace>:!tag:<rendered tag>` of the full keys carrying it,
//! scored by when each membership runs out (unix ms). A load registers its key in its tags'
//! sets right after it wins the lease and before its loader runs (a refresh: after it wins
//! the refresh lease), so a tag invalidation that starts after the write finds every entry
//! that could hold older data, and deleting the key also deletes the lease: that load's
//! store then fails, exactly as after a key invalidation. A load that registers after the
//! scan passed started its loader after the write. Members are deleted in batches of
//! [`TAG_BATCH`] (`ZSCAN` + `UNLINK` + a conditional `ZREM`), so no command runs long.
//! Memberships expire with their entries: registering prunes the members that ran out, and
//! the set's own TTL is its longest-lived member's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::flight::Flights;
use crate::near::Near;
use crate::retry::{Retrier, Target};
use crate::stats::Counters;
use crate::store::{Fault, Store};

/// Members deleted per round trip of a tag invalidation.
pub(crate) const TAG_BATCH: usize = 500;

/// What an invalidation touches in this process and in the backend: the pieces of one cache
/// (handed in by the caller, so this module does not depend on the cache handle).
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub(crate) store: &'a Store,
    /// The in-process flights to detach (the loads, the background refreshes).
    pub(crate) flights: [&'a Flights; 2],
    pub(crate) near: Option<&'a Near>,
    pub(crate) retrier: &'a Retrier,
}

impl Scope<'_> {
    /// A tag's members are unknown until the backend answers: no load running in this
    /// process now may hand its result to a later call.
    fn void_all_flights(&self) {
        self.flights.iter().for_each(|f| f.void_all());
    }
}

/// Behind every `#[invalidates]` function: deletes the keys and voids the entries of the
/// tags of `targets` (full keys and full tag-set keys), counted for the function `name`.
/// When the backend cannot be reached, or the caller drops this future before the backend
/// answered, the rest is queued and retried in the background.
///
/// Before the delete, the keys' in-process flights are detached: a call that starts after
/// this returns never joins a load that started before it.
pub(crate) async fn invalidate(
    scope: Scope<'_>,
    counters: Arc<Counters>,
    name: &'static str,
    targets: Vec<Target>,
) {
    let tags = targets.iter().filter(|t| t.is_tag()).count();
    let keys = targets.len() - tags;
    let mut pending = PendingInvalidation {
        scope,
        counters: Some(counters),
        targets,
    };
    for t in &pending.targets {
        if let Target::Key(k) = t {
            scope.flights.iter().for_each(|f| f.void(k));
        }
    }
    near_evict(scope.near, &pending.targets);
    let result = deliver(scope.store, &scope.flights, &pending.targets).await;
    let Some(c) = pending.counters.take() else {
        return;
    };
    match result {
        Ok(_) => {
            // Again after the delete: a call of this process whose GET ran before it may
            // have filled the near cache in between (see `near`).
            near_evict(scope.near, &pending.targets);
            c.invalidations.fetch_add(keys as u64, Relaxed);
            c.tag_invalidations.fetch_add(tags as u64, Relaxed);
        }
        Err(f) => {
            crate::store::fault(&c, name, &f);
            tracing::warn!(cache.fn = name, keys = pending.targets.len(), "invalidation failed; queued for retry");
            if tags > 0 {
                scope.void_all_flights();
            }
            // Queued first, then evicted: a call that fills after this eviction read its
            // epoch after the key was queued, so its `GET` delivers the deletion first
            // (`load::get_pending`); one that filled before has a stale epoch.
            let targets = std::mem::take(&mut pending.targets);
            scope.retrier.enqueue(targets.clone(), c);
            near_evict(scope.near, &targets);
        }
    }
}

/// Evicts `targets` from this process's near cache (if it has one); a tag flushes it (the
/// tag's members are known only to Redis).
pub(crate) fn near_evict(near: Option<&Near>, targets: &[Target]) {
    let Some(near) = near else {
        return;
    };
    for t in targets {
        match t {
            Target::Key(k) => near.evict(k),
            Target::Tag(_) => near.flush(),
        }
    }
}

/// Deletes the keys of `targets` (one multi-key delete), then voids the tags' members.
/// `flights`: this process's flights to detach for the members found.
pub(crate) async fn deliver(
    store: &Store,
    flights: &[&Flights],
    targets: &[Target],
) -> Result<(), Fault> {
    let keys: Vec<String> = targets
        .iter()
        .filter_map(|t| match t {
            Target::Key(k) => Some(k.clone()),
            Target::Tag(_) => None,
        })
        .collect();
    if !keys.is_empty() {
        store.delete(&keys).await?;
    }
    for t in targets {
        if let Target::Tag(tag) = t {
            void_members(store, flights, tag).await?;
        }
    }
    Ok(())
}

/// [`deliver`] for the retry queue's worker ([`crate::retry::Deliver`]): it has no flights of
/// its own to detach (the invalidating call detached them when it queued).
pub(crate) fn deliver_queued<'a>(
    store: &'a Store,
    targets: &'a [Target],
) -> Pin<Box<dyn Future<Output = Result<(), Fault>> + 'a>> {
    Box::pin(deliver(store, &[], targets))
}

/// Voids every member of the tag set `tag` (a full tag key): detaches their flights in this
/// process, flushes the near cache, deletes the members and unregisters them, batch by batch.
pub(crate) async fn void_tag(
    store: &Store,
    flights: &[&Flights],
    near: Option<&Near>,
    tag: &str,
) -> Result<(), Fault> {
    let flush = || {
        if let Some(near) = near {
            near.flush();
        }
    };
    flush();
    let r = void_members(store, flights, tag).await;
    flush();
    r
}

/// The three tag commands [`void_members`] needs (the [`Store`]; a scripted stand-in in tests).
trait TagOps {
    async fn tag_scan(
        &self,
        tag: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, u64)>), Fault>;
    async fn delete(&self, keys: &[String]) -> Result<u64, Fault>;
    async fn tag_remove(&self, tag: &str, members: &[(String, u64)]) -> Result<(), Fault>;
}

impl TagOps for Store {
    async fn tag_scan(
        &self,
        tag: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, u64)>), Fault> {
        Store::tag_scan(self, tag, cursor, count).await
    }
    async fn delete(&self, keys: &[String]) -> Result<u64, Fault> {
        Store::delete(self, keys).await
    }
    async fn tag_remove(&self, tag: &str, members: &[(String, u64)]) -> Result<(), Fault> {
        Store::tag_remove(self, tag, members).await
    }
}

/// Passes over a tag set at most (see [`void_members`]).
const TAG_PASSES: usize = 4;

/// Voids the members of `tag`, pass after pass: a pass whose `ZSCAN` cursor was carried from
/// one call to the next may have skipped members if the set moved to another server meanwhile
/// (a cluster failover: the promoted replica hashes differently, so the cursor means nothing
/// there), so it is followed by another pass from cursor 0. Processed members are removed
/// from the set, so that pass sees only what was skipped (and later registrations); the
/// passes end with one that took a single call (a complete view of the set) or found
/// nothing, or after [`TAG_PASSES`].
async fn void_members<S: TagOps>(store: &S, flights: &[&Flights], tag: &str) -> Result<(), Fault> {
    for _ in 0..TAG_PASSES {
        let (calls, found) = void_pass(store, flights, tag).await?;
        if calls == 1 || found == 0 {
            break;
        }
    }
    Ok(())
}

/// One `ZSCAN` pass from cursor 0: (calls made, members found).
async fn void_pass<S: TagOps>(
    store: &S,
    flights: &[&Flights],
    tag: &str,
) -> Result<(usize, usize), Fault> {
    let (mut cursor, mut calls, mut found) = (0, 0, 0);
    loop {
        let (next, members) = store.tag_scan(tag, cursor, TAG_BATCH).await?;
        calls += 1;
        found += members.len();
        // The memory backend answers in one batch; keep each round bounded anyway.
        for batch in members.chunks(TAG_BATCH) {
            let keys: Vec<String> = batch.iter().map(|(m, _)| m.clone()).collect();
            for f in flights {
                keys.iter().for_each(|k| f.void(k));
            }
            store.delete(&keys).await?;
            store.tag_remove(tag, batch).await?;
        }
        if next == 0 {
            return Ok((calls, found));
        }
        cursor = next;
    }
}

/// Queues the deletion for retry if the invalidating future is dropped mid-flight.
struct PendingInvalidation<'a> {
    scope: Scope<'a>,
    /// `Some` until the delete answered.
    counters: Option<Arc<Counters>>,
    targets: Vec<Target>,
}

impl Drop for PendingInvalidation<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.counters.take() {
            let targets = std::mem::take(&mut self.targets);
            if targets.iter().any(Target::is_tag) {
                self.scope.void_all_flights();
            }
            // Cancelled mid-delete: a call of this process may have filled the near cache
            // from the old entry meanwhile. Queued first, then evicted (as on failure).
            self.scope.retrier.enqueue(targets.clone(), c);
            near_evict(self.scope.near, &targets);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A tag set scanned like a Redis hash table: a member lives in bucket
    /// `hash(member, seed) % BUCKETS` and the `ZSCAN` cursor is the next bucket to visit.
    /// After `failover_after` scan calls the seed changes (a promoted replica: same members,
    /// other hashing), so a carried cursor skips members, as on a real cluster.
    struct Reseeding {
        set: Mutex<BTreeMap<String, u64>>,
        seed: Mutex<u64>,
        scans: Mutex<usize>,
        failover_after: usize,
        deleted: Mutex<Vec<String>>,
    }

    const BUCKETS: u64 = 4096;

    impl TagOps for Reseeding {
        async fn tag_scan(
            &self,
            _tag: &str,
            cursor: u64,
            count: usize,
        ) -> Result<(u64, Vec<(String, u64)>), Fault> {
            let seed = {
                let mut n = self.scans.lock().unwrap_or_else(|p| p.into_inner());
                *n += 1;
                let mut seed = self.seed.lock().unwrap_or_else(|p| p.into_inner());
                if *n == self.failover_after.saturating_add(1) {
                    *seed += 1;
                }
                *seed
            };
            let set = self.set.lock().unwrap_or_else(|p| p.into_inner());
            let bucket =
                |m: &str| xxhash_rust::xxh3::xxh3_64_with_seed(m.as_bytes(), seed) % BUCKETS;
            let mut page = Vec::new();
            let mut b = cursor;
            while b < BUCKETS && page.len() < count {
                page.extend(
                    set.iter()
                        .filter(|(m, _)| bucket(m) == b)
                        .map(|(m, s)| (m.clone(), *s)),
                );
                b += 1;
            }
            Ok((if b >= BUCKETS { 0 } else { b }, page))
        }
        async fn delete(&self, keys: &[String]) -> Result<u64, Fault> {
            self.deleted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(keys.iter().cloned());
            Ok(keys.len() as u64)
        }
        async fn tag_remove(&self, _tag: &str, members: &[(String, u64)]) -> Result<(), Fault> {
            let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
            for (m, _) in members {
                set.remove(m);
            }
            Ok(())
        }
    }

    /// A tag invalidation overlapping a failover (the scan restarts on another server) must
    /// still reach every member.
    #[tokio::test]
    async fn a_tag_scan_that_moves_to_another_server_mid_way_misses_no_member() {
        let store = Reseeding {
            set: Mutex::new((0..2000).map(|i| (format!("ns:m:{i}"), 1)).collect()),
            seed: Mutex::new(0),
            scans: Mutex::new(0),
            failover_after: 1,
            deleted: Mutex::new(Vec::new()),
        };
        void_members(&store, &[], "ns:!tag:t").await.expect("void");
        let deleted = store.deleted.lock().unwrap_or_else(|p| p.into_inner());
        let unique: std::collections::HashSet<&String> = deleted.iter().collect();
        assert_eq!(unique.len(), 2000, "every member deleted");
        assert!(
            store
                .set
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
            "every member unregistered"
        );
    }

    /// Without a failover, a set answered in one call costs one `ZSCAN` (no second pass).
    #[tokio::test]
    async fn a_small_tag_takes_one_scan() {
        let store = Reseeding {
            set: Mutex::new((0..100).map(|i| (format!("ns:m:{i}"), 1)).collect()),
            seed: Mutex::new(0),
            scans: Mutex::new(0),
            failover_after: usize::MAX - 1,
            deleted: Mutex::new(Vec::new()),
        };
        void_members(&store, &[], "ns:!tag:t").await.expect("void");
        assert_eq!(*store.scans.lock().unwrap_or_else(|p| p.into_inner()), 1);
        assert_eq!(
            store
                .deleted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
            100
        );
    }
}
