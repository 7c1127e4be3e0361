//! The get-or-load state machine: lookup, in-process single flight, the one-key lease
//! protocol, compare-and-set fill, and release on error, panic or cancellation.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::cache::Cache;
use crate::codec::Codec;
use crate::entry::{self, DecodeError, Header, Kind};
use crate::flight::{self, Landed, Leader, Role};
use crate::private::{FnSpec, Shape, View};
use crate::stats::Counters;
use crate::store::{Fault, Store};

/// Longest pause between two polls of a key another process is loading.
const MAX_POLL: Duration = Duration::from_millis(100);
/// First pause between polls.
const FIRST_POLL: Duration = Duration::from_millis(5);
/// Freshness of an envelope handed to in-process followers without being stored.
const SHARED_FRESH_MS: u64 = 60_000;

/// What stored bytes mean for a function of shape `S`.
enum Found<R> {
    Value(R),
    Negative(R),
    Lease,
    /// Undecodable, foreign, stale or of the wrong kind or type: overwrite it.
    Unusable(&'static str),
}

fn classify<S: Shape<R>, R>(bytes: &[u8]) -> Found<R> {
    let (h, payload) = match entry::decode(bytes) {
        Ok(e) => e,
        Err(DecodeError::NotAnEnvelope) => return Found::Unusable("not an envelope"),
        Err(DecodeError::Version(_)) => return Found::Unusable("another envelope version"),
    };
    if h.kind == Kind::Lease {
        return Found::Lease;
    }
    if h.fresh_until_ms < entry::now_ms() {
        return Found::Unusable("stale");
    }
    if h.type_tag != entry::type_tag::<S::Value>() {
        return Found::Unusable("written for another type (two functions share a key?)");
    }
    match h.kind {
        Kind::Value => match Codec::from_id(h.codec) {
            None => Found::Unusable("payload written with a codec this build does not have"),
            Some(codec) => match codec.decode::<S::Value>(payload) {
                Some(v) => Found::Value(S::from_value(v)),
                None => Found::Unusable("payload does not decode into the function's type"),
            },
        },
        _ => match S::negative() {
            Some(r) => Found::Negative(r),
            None => Found::Unusable("negative entry for a function that cannot return None"),
        },
    }
}

/// Serializes a loader's result into an envelope; `None` for an error.
fn encode<S: Shape<R>, R>(
    r: &R,
    codec: Codec,
    fresh_ms: u64,
    load_ms: u32,
) -> Option<Result<Vec<u8>, String>> {
    let now = entry::now_ms();
    let header = |kind| Header {
        kind,
        codec: codec.id(),
        stored_at_ms: now,
        fresh_until_ms: now.saturating_add(fresh_ms),
        load_ms,
        type_tag: entry::type_tag::<S::Value>(),
    };
    match S::view(r) {
        View::Error => None,
        View::Negative => Some(Ok(header(Kind::Negative).begin(0))),
        View::Value(v) => {
            let mut buf = header(Kind::Value).begin(128);
            Some(codec.encode(&mut buf, v).map(|()| buf))
        }
    }
}

/// Counts a backend fault (the caller then goes to the loader).
pub(crate) fn fault(c: &Counters, name: &str, f: &Fault) {
    match f {
        Fault::Skipped => Counters::bump(&c.backend_skipped),
        Fault::Failed(e) => {
            Counters::bump(&c.backend_errors);
            warn!(cache.fn = name, error = %e, "cache backend error; calling the loader directly");
        }
    }
}

fn unusable(c: &Counters, spec: &FnSpec, why: &'static str) {
    Counters::bump(&c.decode_errors);
    if Counters::first(&c.warned_decode) {
        warn!(
            cache.fn = spec.name,
            reason = why,
            "cached entry unusable; reloading and overwriting it (warned once per function)"
        );
    } else {
        debug!(cache.fn = spec.name, reason = why, "cached entry unusable; reloading");
    }
}

/// Counts a loader that panics as a load error (it is dropped while unwinding).
struct PanicCounter<'a>(&'a Counters);

impl Drop for PanicCounter<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            Counters::bump(&self.0.load_errors);
        }
    }
}

/// Runs the loader, counting the load and its error or panic.
async fn run_loader<S: Shape<R>, R>(c: &Counters, fut: impl Future<Output = R>) -> R {
    Counters::bump(&c.loads);
    let panic_counter = PanicCounter(c);
    let r = fut.await;
    drop(panic_counter);
    if matches!(S::view(&r), View::Error) {
        Counters::bump(&c.load_errors);
    }
    r
}

/// The stored TTL: uniform in `[secs, secs + jitter]`, in milliseconds.
pub(crate) fn ttl_ms(secs: u64, jitter_secs: u64) -> u64 {
    let base = secs.saturating_mul(1000);
    if jitter_secs == 0 {
        base
    } else {
        base.saturating_add(rand::random_range(0..=jitter_secs.saturating_mul(1000)))
    }
}

/// How a leader's load ended, as far as the cache is concerned.
enum Outcome {
    /// This envelope is in the cache (we stored it, or another process did).
    Stored(Arc<[u8]>),
    /// Nothing stored (loader error, uncached `None`, too large, backend failure).
    NotStored,
    /// Our lease was gone when we went to store: an invalidation (or the lease's expiry)
    /// happened during the load, so the result may be older than the latest write.
    LeaseLost,
}

/// Entry point behind every `#[cached]` function.
pub(crate) async fn get_or_load<S, R, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    key: String,
    fut: Fut,
) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let inner = &*cache.inner;
    // `<namespace>:<key>` in the key's own buffer (the macro gives it spare capacity).
    let mut full = key;
    full.insert(0, ':');
    full.insert_str(0, &inner.namespace);

    // The hit path: one GET, one decode, one counter.
    let got = inner.store.get(&full).await;
    let unusable_why = match &got {
        Ok(Some(raw)) => match classify::<S, R>(raw) {
            Found::Value(r) => {
                Counters::bump(&inner.stats.for_spec(spec).hits);
                return r;
            }
            Found::Negative(r) => {
                Counters::bump(&inner.stats.for_spec(spec).negative_hits);
                return r;
            }
            Found::Lease => None,
            Found::Unusable(why) => Some(why),
        },
        _ => None,
    };
    // Everything else is boxed: its state (lease, polling, fill, single flight) is much
    // larger than the hit path's and would otherwise make every call's future that large.
    Box::pin(miss::<S, R, Fut>(cache, spec, full, got, unusable_why, fut)).await
}

/// After a `GET` that gave no usable entry.
async fn miss<S, R, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    full: String,
    got: Result<Option<crate::backend::Raw>, Fault>,
    unusable_why: Option<&'static str>,
    fut: Fut,
) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let inner = &*cache.inner;
    let c = inner.stats.counters(spec.name);
    match got {
        Ok(Some(raw)) => {
            if let Some(why) = unusable_why {
                unusable(&c, spec, why);
                // Remove exactly these bytes so the lease can be taken; a newer write stays.
                if let Err(f) = inner.store.release(&full, &raw).await {
                    fault(&c, spec.name, &f);
                    return run_loader::<S, R>(&c, fut).await;
                }
            }
        }
        Ok(None) => {}
        Err(f) => {
            fault(&c, spec.name, &f);
            return run_loader::<S, R>(&c, fut).await;
        }
    }
    Counters::bump(&c.misses);
    debug!(cache.fn = spec.name, "cache miss");

    let mut leader_failed = false;
    loop {
        match inner.flights.join(&full) {
            Role::Leader(leader) => {
                let (r, outcome) =
                    lease_path::<S, R, Fut>(cache, spec, &c, &full, Some(&leader), fut).await;
                let landed = match outcome {
                    Outcome::Stored(bytes) => Landed::Value(bytes),
                    Outcome::LeaseLost => Landed::Retry,
                    Outcome::NotStored if leader.has_followers() => {
                        // Hand the result to the waiting tasks anyway: one load serves all.
                        match encode::<S, R>(&r, inner.codec, SHARED_FRESH_MS, 0) {
                            Some(Ok(bytes)) => Landed::Value(Arc::from(bytes)),
                            Some(Err(_)) | None => Landed::Failed,
                        }
                    }
                    Outcome::NotStored => Landed::Failed,
                };
                leader.land(landed);
                return r;
            }
            Role::Follower(rx) => match flight::follow(rx).await {
                Landed::Value(bytes) => {
                    if let Found::Value(r) | Found::Negative(r) = classify::<S, R>(&bytes) {
                        return r;
                    }
                    return lease_path::<S, R, Fut>(cache, spec, &c, &full, None, fut)
                        .await
                        .0;
                }
                // The leader's loader failed and its error cannot be shared: the waiters
                // elect a new leader once (a transient failure still costs one load); if
                // that fails too, each runs its own loader rather than queueing up behind
                // one failing load after another.
                Landed::Failed if leader_failed => return run_loader::<S, R>(&c, fut).await,
                Landed::Failed => leader_failed = true,
                Landed::Retry => {}
            },
        }
    }
}

/// Takes the lease and loads, or waits for the process holding it.
async fn lease_path<S, R, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    c: &Arc<Counters>,
    full: &str,
    leader: Option<&Leader<'_>>,
    fut: Fut,
) -> (R, Outcome)
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let store = &cache.inner.store;
    let lock_ms = spec.lock_ms.unwrap_or(cache.inner.lock_ms).max(1);
    let deadline = Instant::now() + Duration::from_millis(lock_ms);
    let mut pause = FIRST_POLL;
    let mut counted_wait = false;
    loop {
        let lease = entry::new_lease(lock_ms);
        match store.try_lease(full, &lease, lock_ms).await {
            Ok(true) => return lead::<S, R, Fut>(cache, spec, c, full, leader, lease, fut).await,
            Ok(false) => {}
            Err(f) => {
                fault(c, spec.name, &f);
                return (run_loader::<S, R>(c, fut).await, Outcome::NotStored);
            }
        }
        if !counted_wait {
            counted_wait = true;
            Counters::bump(&c.lock_waits);
            debug!(cache.fn = spec.name, "another loader holds the lease; waiting");
        }
        // Poll until a value appears, the key vanishes (lease released or expired), or the
        // lease length has passed.
        loop {
            let now = Instant::now();
            if now >= deadline {
                Counters::bump(&c.lock_timeouts);
                warn!(cache.fn = spec.name, lock_ms, "lease wait timed out; loading without the lease");
                return (run_loader::<S, R>(c, fut).await, Outcome::NotStored);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
            match store.get(full).await {
                Ok(Some(raw)) => match classify::<S, R>(&raw) {
                    Found::Value(r) | Found::Negative(r) => {
                        return (r, Outcome::Stored(Arc::from(&*raw)));
                    }
                    Found::Lease => continue,
                    Found::Unusable(why) => {
                        unusable(c, spec, why);
                        if let Err(f) = store.release(full, &raw).await {
                            fault(c, spec.name, &f);
                            return (run_loader::<S, R>(c, fut).await, Outcome::NotStored);
                        }
                        break;
                    }
                },
                Ok(None) => break,
                Err(f) => {
                    fault(c, spec.name, &f);
                    return (run_loader::<S, R>(c, fut).await, Outcome::NotStored);
                }
            }
        }
    }
}

/// Releases a lease when dropped while armed (loader error, panic, or the caller dropping
/// the future): compare-and-delete, in the background. A failed release is counted as a
/// backend fault; the lease then expires after `lock_ms`.
struct LeaseGuard {
    store: Store,
    key: String,
    lease: Vec<u8>,
    armed: bool,
    counters: Arc<Counters>,
    name: &'static str,
}

impl LeaseGuard {
    async fn release(mut self) {
        let result = self.store.release(&self.key, &self.lease).await;
        // Disarmed only now: if this future is dropped mid-release, Drop releases again.
        self.armed = false;
        if let Err(f) = result {
            fault(&self.counters, self.name, &f);
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // No runtime: the lease expires after lock_ms.
        };
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let lease = std::mem::take(&mut self.lease);
        let counters = self.counters.clone();
        let name = self.name;
        rt.spawn(async move {
            if let Err(f) = store.release(&key, &lease).await {
                fault(&counters, name, &f);
            }
        });
    }
}

/// Runs the loader under our lease and fills the key with a compare-and-set.
async fn lead<S, R, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    c: &Arc<Counters>,
    full: &str,
    leader: Option<&Leader<'_>>,
    lease: Vec<u8>,
    fut: Fut,
) -> (R, Outcome)
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let store = &cache.inner.store;
    let lock_ms = spec.lock_ms.unwrap_or(cache.inner.lock_ms);
    let mut guard = LeaseGuard {
        store: store.clone(),
        key: full.to_owned(),
        lease,
        armed: true,
        counters: c.clone(),
        name: spec.name,
    };
    debug!(cache.fn = spec.name, "loading");
    let started = Instant::now();
    let r = run_loader::<S, R>(c, fut).await;
    let load_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);

    let secs = match S::view(&r) {
        View::Error => {
            debug!(cache.fn = spec.name, "loader returned an error; nothing cached");
            guard.release().await;
            return (r, Outcome::NotStored);
        }
        View::Negative => spec.negative_ttl_secs.unwrap_or(spec.ttl_secs),
        View::Value(_) => spec.ttl_secs,
    };
    if secs == 0 {
        // `negative_ttl = 0`: do not cache `None`.
        guard.release().await;
        return (r, Outcome::NotStored);
    }
    let ttl = ttl_ms(secs, spec.jitter_secs);
    let bytes = match encode::<S, R>(&r, cache.inner.codec, ttl, load_ms) {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => {
            warn!(cache.fn = spec.name, error = %e, "value cannot be serialized; not cached");
            guard.release().await;
            return (r, Outcome::NotStored);
        }
        None => {
            guard.release().await;
            return (r, Outcome::NotStored);
        }
    };
    if bytes.len() > cache.inner.max_value_bytes {
        Counters::bump(&c.oversized);
        if Counters::first(&c.warned_oversize) {
            warn!(
                cache.fn = spec.name,
                bytes = bytes.len(),
                max = cache.inner.max_value_bytes,
                "value larger than max_value_bytes; not cached (warned once per function)"
            );
        }
        guard.release().await;
        return (r, Outcome::NotStored);
    }
    // From here on, callers arriving after a racing invalidation must not get this result.
    if let Some(l) = leader {
        l.detach();
    }
    match store.fill(full, &guard.lease, &bytes, ttl).await {
        Ok(true) => {
            guard.armed = false;
            (r, Outcome::Stored(Arc::from(bytes)))
        }
        Ok(false) => {
            // Our lease is gone: the key was invalidated (or the lease expired) while we
            // loaded. Our result may be older than that write: do not store it.
            guard.armed = false;
            if u64::from(load_ms) >= lock_ms {
                warn!(
                    cache.fn = spec.name,
                    load_ms, lock_ms, "loader took longer than lock_ms; its result is not cached (raise lock_ms)"
                );
            } else {
                debug!(cache.fn = spec.name, "lease lost during load (invalidated); result not cached");
            }
            (r, Outcome::LeaseLost)
        }
        Err(f) => {
            fault(c, spec.name, &f);
            (r, Outcome::NotStored)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_within_jitter_range() {
        for _ in 0..1000 {
            let t = ttl_ms(10, 3);
            assert!((10_000..=13_000).contains(&t), "{t}");
        }
        assert_eq!(ttl_ms(10, 0), 10_000);
    }
}
