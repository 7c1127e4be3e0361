//! `#[invalidates]`: detach the keys' in-process flights, delete the keys, and queue the
//! deletion for retry (see [`retry`](crate::retry)) when the backend cannot be reached.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::cache::Cache;
use crate::spec::InvalidateSpec;
use crate::stats::Counters;

/// Behind every `#[invalidates]` function: deletes the rendered keys. When the backend
/// cannot be reached, or the caller drops this future before the backend answered, the
/// deletion is queued and retried in the background.
///
/// Before the delete, the keys' in-process flights are detached: a call that starts after
/// this returns never joins a load that started before it.
pub(crate) async fn invalidate(
    cache: &Cache,
    spec: &'static InvalidateSpec,
    keys: &[String],
    tags: &[String],
) {
    let _ = tags;
    let inner = &cache.inner;
    let mut pending = PendingInvalidation {
        cache,
        counters: Some(inner.stats.counters(spec.name)),
        keys: keys.iter().map(|k| cache.full_key(k)).collect(),
    };
    for k in &pending.keys {
        inner.flights.void(k);
    }
    let result = inner.store.delete(&pending.keys).await;
    let Some(c) = pending.counters.take() else {
        return;
    };
    match result {
        Ok(_) => {
            c.invalidations
                .fetch_add(pending.keys.len() as u64, Relaxed);
        }
        Err(f) => {
            crate::store::fault(&c, spec.name, &f);
            tracing::warn!(cache.fn = spec.name, keys = pending.keys.len(), "invalidation failed; queued for retry");
            inner.retrier.enqueue(std::mem::take(&mut pending.keys), c);
        }
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
            self.cache.inner.retrier.enqueue(keys, c);
        }
    }
}
