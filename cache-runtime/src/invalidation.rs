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

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::cache::Cache;
use crate::flight::Flights;
use crate::spec::InvalidateSpec;
use crate::stats::Counters;
use crate::store::{Fault, Store};

/// Members deleted per round trip of a tag invalidation.
pub(crate) const TAG_BATCH: usize = 500;

/// Marks a queued tag invalidation among the retry queue's keys (never a cache key: keys
/// start with the namespace, which has no control characters).
const TAG_MARK: char = '\u{1}';

/// Behind every `#[invalidates]` function: deletes the rendered keys and voids the entries
/// of the rendered tags. When the backend cannot be reached, or the caller drops this future
/// before the backend answered, the rest is queued and retried in the background.
///
/// Before the delete, the keys' in-process flights are detached: a call that starts after
/// this returns never joins a load that started before it.
pub(crate) async fn invalidate(
    cache: &Cache,
    spec: &'static InvalidateSpec,
    keys: &[String],
    tags: &[String],
) {
    let inner = &cache.inner;
    let mut pending = PendingInvalidation {
        cache,
        counters: Some(inner.stats.counters(spec.name)),
        keys: keys
            .iter()
            .map(|k| cache.full_key(k))
            .chain(tags.iter().map(|t| {
                let mut m = String::from(TAG_MARK);
                m.push_str(&inner.tag_key(t));
                m
            }))
            .collect(),
    };
    for k in &pending.keys {
        inner.flights.void(k);
        inner.refreshing.void(k);
    }
    near_evict(cache, &pending.keys);
    let result = deliver(
        &inner.store,
        &[&inner.flights, &inner.refreshing],
        &pending.keys,
    )
    .await;
    let Some(c) = pending.counters.take() else {
        return;
    };
    match result {
        Ok(_) => {
            // Again after the delete: a call of this process whose GET ran before it may
            // have filled the near cache in between (see `near`).
            near_evict(cache, &pending.keys);
            c.invalidations.fetch_add(keys.len() as u64, Relaxed);
            c.tag_invalidations.fetch_add(tags.len() as u64, Relaxed);
        }
        Err(f) => {
            crate::store::fault(&c, spec.name, &f);
            tracing::warn!(cache.fn = spec.name, keys = pending.keys.len(), "invalidation failed; queued for retry");
            if !tags.is_empty() {
                // The tags' members are unknown until the backend answers: no load running
                // in this process now may hand its result to a later call.
                inner.flights.void_all();
                inner.refreshing.void_all();
            }
            // Queued first, then evicted: a call that fills after this eviction read its
            // epoch after the key was queued, so its `GET` delivers the deletion first
            // (`load::get_pending`); one that filled before has a stale epoch.
            let keys = std::mem::take(&mut pending.keys);
            inner.retrier.enqueue(keys.clone(), c);
            near_evict(cache, &keys);
        }
    }
}

/// Evicts `keys` (full keys and tag marks) from this process's near cache; a tag mark
/// flushes it (the tag's members are known only to Redis).
pub(crate) fn near_evict(cache: &Cache, keys: &[String]) {
    let Some(near) = cache.inner.near.get() else {
        return;
    };
    for k in keys {
        if is_tag_mark(k) {
            near.flush();
        } else {
            near.evict(k);
        }
    }
}

/// Deletes `keys` (full keys; tag marks void the tag's members). `flights`: this process's
/// flights to detach for the members found.
pub(crate) async fn deliver(
    store: &Store,
    flights: &[&Flights],
    keys: &[String],
) -> Result<(), Fault> {
    let (tags, plain): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| k.starts_with(TAG_MARK));
    if !plain.is_empty() {
        let plain: Vec<String> = plain.into_iter().cloned().collect();
        store.delete(&plain).await?;
    }
    for t in tags {
        void_members(store, flights, &t[TAG_MARK.len_utf8()..]).await?;
    }
    Ok(())
}

/// Whether a queued key is a tag invalidation.
pub(crate) fn is_tag_mark(key: &str) -> bool {
    key.starts_with(TAG_MARK)
}

/// Voids every member of the tag set `tag` (a full tag key): detaches their flights in this
/// process, deletes them and unregisters them, batch by batch.
pub(crate) async fn void_tag(cache: &Cache, tag: &str) -> Result<(), Fault> {
    let inner = &cache.inner;
    let flush = || {
        if let Some(near) = inner.near.get() {
            near.flush();
        }
    };
    flush();
    let r = void_members(&inner.store, &[&inner.flights, &inner.refreshing], tag).await;
    flush();
    r
}

async fn void_members(store: &Store, flights: &[&Flights], tag: &str) -> Result<(), Fault> {
    let mut cursor = 0;
    loop {
        let (next, members) = store.tag_scan(tag, cursor, TAG_BATCH).await?;
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
            return Ok(());
        }
        cursor = next;
    }
}

/// Queues the deletion for retry if the invalidating future is dropped mid-flight.
struct PendingInvalidation<'a> {
    cache: &'a Cache,
    /// `Some` until the delete answered.
    counters: Option<Arc<Counters>>,
    keys: Vec<String>,
}

impl Drop for PendingInvalidation<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.counters.take() {
            let keys = std::mem::take(&mut self.keys);
            if keys.iter().any(|k| is_tag_mark(k)) {
                self.cache.inner.flights.void_all();
                self.cache.inner.refreshing.void_all();
            }
            // Cancelled mid-delete: a call of this process may have filled the near cache
            // from the old entry meanwhile. Queued first, then evicted (as on failure).
            self.cache.inner.retrier.enqueue(keys.clone(), c);
            near_evict(self.cache, &keys);
        }
    }
}
