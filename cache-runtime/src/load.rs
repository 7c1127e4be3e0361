//! The generic part of get-or-load: the hit path (one `GET`, one decode, one counter) and a
//! small driver that runs the non-generic miss path of [`protocol`](crate::protocol),
//! decoding bytes and running the loader for it.

use std::future::Future;
use std::pin::pin;
use std::time::Instant;

use crate::cache::Cache;
use crate::codec::Codec;
use crate::entry;
use crate::protocol::{self, Loaded, Miss, Step, Usable};
use crate::spec::{FnSpec, Shape, View};
use crate::stats::Counters;

/// Decodes a checked entry into the function's return value.
#[inline]
pub(crate) fn decode<S: Shape<R>, R>(u: Usable<'_>) -> Result<R, &'static str> {
    match u {
        Usable::Value { codec, payload } => match Codec::from_id(codec) {
            None => Err("payload written with a codec this build does not have"),
            Some(codec) => match codec.decode::<S::Value>(payload) {
                Some(v) => Ok(S::from_value(v)),
                None => Err("payload does not decode into the function's type"),
            },
        },
        Usable::Negative => {
            S::negative().ok_or("negative entry for a function that cannot return None")
        }
        Usable::Lease => Err("a lease"),
        Usable::Unusable(why) => Err(why),
    }
}

/// Entry point behind every `#[cached]` function.
pub(crate) async fn get_or_load<S, R, F, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    key: String,
    cache_if: Option<fn(&S::Value) -> bool>,
    load: F,
) -> R
where
    S: Shape<R>,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R>,
{
    let inner = &*cache.inner;
    // The hit path: one GET, one decode, one counter.
    let (full, got) = fetch(cache, key).await;
    let unusable_why = match &got {
        Ok(Some(raw)) => {
            let u = protocol::usable(raw, entry::type_tag::<S::Value>());
            let negative = matches!(u, Usable::Negative);
            let lease = matches!(u, Usable::Lease);
            match decode::<S, R>(u) {
                Ok(r) => {
                    let c = inner.stats.for_slot(&spec.slot, spec.name);
                    Counters::bump(if negative { &c.negative_hits } else { &c.hits });
                    return r;
                }
                Err(_) if lease => None,
                Err(why) => Some(why),
            }
        }
        _ => None,
    };
    // Everything else is boxed: the miss path's state is much larger than the hit path's
    // and would otherwise make every call's future that large.
    Box::pin(miss::<S, R, F, Fut>(
        cache,
        spec,
        full,
        got,
        unusable_why,
        cache_if,
        load,
    ))
    .await
}

/// The full key (`<namespace>:<key>`, in the key's own buffer: the macro gives it spare
/// capacity) and its `GET` (unless this process has a queued invalidation for the key: then
/// it deletes the key first, see [`get_pending`]).
#[inline]
pub(crate) async fn fetch(
    cache: &Cache,
    key: String,
) -> (
    String,
    Result<Option<crate::backend::Raw>, crate::store::Fault>,
) {
    let inner = &*cache.inner;
    let mut full = key;
    full.insert(0, ':');
    full.insert_str(0, &inner.namespace);
    let got = if inner.retrier.pending.any() {
        // Boxed: rare, and it would otherwise grow every call's future.
        Box::pin(get_pending(cache, &full)).await
    } else {
        inner.store.get(&full).await
    };
    (full, got)
}

/// `GET`, when this process has queued invalidations: for a key among them, deliver the
/// deletion now (a read here must not see an entry this process invalidated), and treat a
/// failure like a failed `GET` (the call goes to the loader, without the cache).
pub(crate) async fn get_pending(
    cache: &Cache,
    full: &str,
) -> Result<Option<crate::backend::Raw>, crate::store::Fault> {
    let inner = &*cache.inner;
    // A queued tag invalidation may cover this key: deliver it first.
    let tags = inner.retrier.pending.tags();
    if !tags.is_empty() {
        crate::invalidation::deliver(&inner.store, &[&inner.flights, &inner.refreshing], &tags)
            .await?;
    }
    if inner.retrier.pending.contains(full) {
        inner.store.delete(&[full.to_owned()]).await?;
    }
    inner.store.get(full).await
}

/// The driver of the miss path: everything but decoding and running the loader happens in
/// [`Miss`], compiled once for all functions.
pub(crate) async fn miss<S, R, F, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    full: String,
    got: Result<Option<crate::backend::Raw>, crate::store::Fault>,
    unusable_why: Option<&'static str>,
    cache_if: Option<fn(&S::Value) -> bool>,
    load: F,
) -> R
where
    S: Shape<R>,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R>,
{
    let inner = &*cache.inner;
    let (tags, fut) = load();
    let type_tag = entry::type_tag::<S::Value>();
    let mut m = Miss::new(inner, spec, full, type_tag);
    m.set_tags(&tags);
    let mut step = m.start(got, unusable_why).await;
    while let Step::Decode(bytes) = step {
        match decode::<S, R>(protocol::usable(&bytes, type_tag)) {
            Ok(r) => {
                m.accepted();
                return r;
            }
            Err(_) => step = m.undecodable().await,
        }
    }
    let started = Instant::now();
    let r = run_loader::<S, R>(m.counters(), m.keep_alive(), fut).await;
    let load_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    let loaded = match S::view(&r) {
        View::Error => Loaded::Error,
        View::Negative => Loaded::Negative,
        View::Value(v) => {
            let mut buf = entry::reserve(128);
            match inner.codec.encode(&mut buf, v) {
                Ok(()) if cache_if.is_some_and(|keep| !keep(v)) => Loaded::Unstorable(buf),
                Ok(()) => Loaded::Value(buf),
                Err(e) => Loaded::Unencodable(e.to_string()),
            }
        }
    };
    m.finish(loaded, load_ms).await;
    r
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

/// Runs the loader (counting the load and its error or panic) while `keep_alive` extends
/// the lease; `keep_alive` is no longer polled once it finishes.
async fn run_loader<S: Shape<R>, R>(
    c: &Counters,
    keep_alive: impl Future<Output = ()>,
    fut: impl Future<Output = R>,
) -> R {
    Counters::bump(&c.loads);
    let started = Instant::now();
    let panic_counter = PanicCounter(c);
    let mut keep_alive = pin!(keep_alive);
    let mut fut = pin!(fut);
    let mut kept = true;
    let r = std::future::poll_fn(|cx| {
        if kept && keep_alive.as_mut().poll(cx).is_ready() {
            kept = false;
        }
        fut.as_mut().poll(cx)
    })
    .await;
    drop(panic_counter);
    c.load_took(started.elapsed());
    if matches!(S::view(&r), View::Error) {
        Counters::bump(&c.load_errors);
    }
    r
}

#[cfg(test)]
mod tests {
    use crate::protocol::ttl_ms;

    #[test]
    fn ttl_within_jitter_range() {
        for _ in 0..1000 {
            let t = ttl_ms(10, 3);
            assert!((10_000..=13_000).contains(&t), "{t}");
        }
        assert_eq!(ttl_ms(10, 0), 10_000);
    }
}
