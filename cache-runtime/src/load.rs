//! The get-or-load state machine: lookup, in-process single flight, the one-key lease
//! protocol, compare-and-set fill, and release on error, panic or cancellation.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::cache::Cache;
use crate::codec::Codec;
use crate::entry::{self, DecodeError, Kind};
use crate::flight::{self, Landed, Role};
use crate::private::{FnSpec, Shape, View};
use crate::stats::Counters;
use crate::store::{Fault, Store};

/// Longest pause between two polls of a key another process is loading.
const MAX_POLL: Duration = Duration::from_millis(100);
/// First pause between polls.
const FIRST_POLL: Duration = Duration::from_millis(5);

/// What stored bytes mean for a function of shape `S`.
enum Found<R> {
    Value(R),
    Negative(R),
    Lease,
    /// Undecodable, foreign, stale or of the wrong kind: overwrite it.
    Unusable(&'static str),
}

fn classify<S: Shape<R>, R>(bytes: &[u8]) -> Found<R> {
    let env = match entry::decode(bytes) {
        Ok(e) => e,
        Err(DecodeError::NotAnEnvelope) => return Found::Unusable("not an envelope"),
        Err(DecodeError::Version(_)) => return Found::Unusable("another envelope version"),
    };
    match env.kind {
        Kind::Lease => Found::Lease,
        _ if env.fresh_until_ms < entry::now_ms() => Found::Unusable("stale"),
        Kind::Value => match Codec::from_id(env.codec) {
            None => Found::Unusable("payload written with a codec this build does not have"),
            Some(codec) => match codec.decode::<S::Value>(env.payload) {
                Some(v) => Found::Value(S::from_value(v)),
                None => Found::Unusable("payload does not decode into the function's type"),
            },
        },
        Kind::Negative => match S::negative() {
            Some(r) => Found::Negative(r),
            None => Found::Unusable("negative entry for a function that cannot return None"),
        },
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
        warn!(cache.fn = spec.name, reason = why, "cached entry unusable; reloading and overwriting it (warned once per function)");
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
    let c = inner.stats.counters(spec.name);
    let full = cache.full_key(&key);
    drop(key);

    match inner.store.get(&full).await {
        Ok(Some(raw)) => match classify::<S, R>(&raw) {
            Found::Value(r) => {
                Counters::bump(&c.hits);
                return r;
            }
            Found::Negative(r) => {
                Counters::bump(&c.negative_hits);
                return r;
            }
            Found::Lease => {}
            Found::Unusable(why) => {
                unusable(&c, spec, why);
                // Remove exactly these bytes so the lease can be taken; a newer write stays.
                if let Err(f) = inner.store.release(&full, &raw).await {
                    fault(&c, spec.name, &f);
                    return run_loader::<S, R>(&c, fut).await;
                }
            }
        },
        Ok(None) => {}
        Err(f) => {
            fault(&c, spec.name, &f);
            return run_loader::<S, R>(&c, fut).await;
        }
    }
    Counters::bump(&c.misses);
    debug!(cache.fn = spec.name, "cache miss");

    match inner.flights.join(&full) {
        Role::Leader(leader) => {
            let (r, landed) = lease_path::<S, R, Fut>(cache, spec, &c, &full, fut).await;
            leader.land(landed);
            r
        }
        Role::Follower(rx) => {
            if let Landed::Stored(bytes) = flight::follow(rx).await {
                match classify::<S, R>(&bytes) {
                    Found::Value(r) | Found::Negative(r) => return r,
                    Found::Lease | Found::Unusable(_) => {}
                }
            }
            lease_path::<S, R, Fut>(cache, spec, &c, &full, fut).await.0
        }
    }
}

/// Takes the lease and loads, or waits for the process holding it.
async fn lease_path<S, R, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    c: &Arc<Counters>,
    full: &str,
    fut: Fut,
) -> (R, Landed)
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
            Ok(true) => return lead::<S, R, Fut>(cache, spec, c, full, lease, fut).await,
            Ok(false) => {}
            Err(f) => {
                fault(c, spec.name, &f);
                return (run_loader::<S, R>(c, fut).await, Landed::NotStored);
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
                return (run_loader::<S, R>(c, fut).await, Landed::NotStored);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
            match store.get(full).await {
                Ok(Some(raw)) => match classify::<S, R>(&raw) {
                    Found::Value(r) | Found::Negative(r) => {
                        return (r, Landed::Stored(Arc::from(&*raw)));
                    }
                    Found::Lease => continue,
                    Found::Unusable(why) => {
                        unusable(c, spec, why);
                        if let Err(f) = store.release(full, &raw).await {
                            fault(c, spec.name, &f);
                            return (run_loader::<S, R>(c, fut).await, Landed::NotStored);
                        }
                        break;
                    }
                },
                Ok(None) => break,
                Err(f) => {
                    fault(c, spec.name, &f);
                    return (run_loader::<S, R>(c, fut).await, Landed::NotStored);
                }
            }
        }
    }
}

/// Releases a lease when dropped while armed (loader error, panic, or the caller dropping
/// the future): compare-and-delete, in the background.
/// A failed release is counted as a backend fault; the lease then expires after `lock_ms`.
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
        self.armed = false;
        if let Err(f) = self.store.release(&self.key, &self.lease).await {
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
    lease: Vec<u8>,
    fut: Fut,
) -> (R, Landed)
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let store = &cache.inner.store;
    let codec = cache.inner.codec;
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

    let now = entry::now_ms();
    let bytes = match S::view(&r) {
        View::Error => {
            debug!(cache.fn = spec.name, "loader returned an error; nothing cached");
            guard.release().await;
            return (r, Landed::NotStored);
        }
        View::Negative => {
            let secs = spec.negative_ttl_secs.unwrap_or(spec.ttl_secs);
            if secs == 0 {
                guard.release().await;
                return (r, Landed::NotStored);
            }
            let ttl = ttl_ms(secs, spec.jitter_secs);
            (
                entry::begin(
                    Kind::Negative,
                    codec.id(),
                    now,
                    now.saturating_add(ttl),
                    load_ms,
                    0,
                ),
                ttl,
            )
        }
        View::Value(v) => {
            let ttl = ttl_ms(spec.ttl_secs, spec.jitter_secs);
            let mut buf = entry::begin(
                Kind::Value,
                codec.id(),
                now,
                now.saturating_add(ttl),
                load_ms,
                128,
            );
            if let Err(e) = codec.encode(&mut buf, v) {
                warn!(cache.fn = spec.name, error = %e, "value cannot be serialized; not cached");
                guard.release().await;
                return (r, Landed::NotStored);
            }
            (buf, ttl)
        }
    };
    let (bytes, ttl) = bytes;
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
        return (r, Landed::NotStored);
    }
    match store.fill(full, &guard.lease, &bytes, ttl).await {
        Ok(true) => {
            guard.armed = false;
            (r, Landed::Stored(Arc::from(bytes)))
        }
        Ok(false) => {
            // Our lease is gone: the key was invalidated (or the lease expired) while we
            // loaded. Our result may be older than that write: do not store it.
            guard.armed = false;
            debug!(cache.fn = spec.name, "lease lost during load; result not cached");
            (r, Landed::NotStored)
        }
        Err(f) => {
            fault(c, spec.name, &f);
            (r, Landed::NotStored)
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
