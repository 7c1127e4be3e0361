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

/// What the hit path does with the near cache: nothing (`()`, compiled away), or
/// [`NearCall`].
pub(crate) trait Hook<V> {
    /// Whether the hook does anything (a constant: `()` costs the hit path nothing).
    const ACTIVE: bool;
    /// Before the `GET`: `Some(Some(v))` a near value, `Some(None)` a near negative entry.
    fn lookup(&mut self, full: &str) -> Option<Option<V>>;
    /// After a Redis hit (`raw`: the entry's bytes): keep a copy (`None`: negative).
    fn keep(&self, full: &str, v: Option<&V>, raw: &[u8]);
}

impl<V> Hook<V> for () {
    const ACTIVE: bool = false;
    #[inline(always)]
    fn lookup(&mut self, _: &str) -> Option<Option<V>> {
        None
    }
    #[inline(always)]
    fn keep(&self, _: &str, _: Option<&V>, _: &[u8]) {}
}

/// The near cache of one call of a `local_ttl` function.
pub(crate) struct NearCall<'a, V> {
    pub(crate) near: &'a crate::near::Near,
    pub(crate) fns: crate::near::NearFns<V>,
    pub(crate) inner: &'a crate::cache::Inner,
    pub(crate) spec: &'static FnSpec,
    /// The epoch read before the `GET` (`None`: bypassed, no fill).
    pub(crate) epoch: Option<crate::near::Epoch>,
}

impl<V: 'static> Hook<V> for NearCall<'_, V> {
    const ACTIVE: bool = true;
    #[inline]
    fn lookup(&mut self, full: &str) -> Option<Option<V>> {
        match self.near.lookup::<V>(full, self.fns) {
            Ok(v) => Some(v),
            Err(e) => {
                self.epoch = e;
                None
            }
        }
    }
    fn keep(&self, full: &str, v: Option<&V>, raw: &[u8]) {
        if let Some(e) = self.epoch {
            let counters = self.inner.stats.counters(self.spec.name);
            self.near.fill(
                full,
                e,
                v,
                self.fns,
                raw,
                self.spec.local_ttl_secs,
                counters,
            );
        }
    }
}

/// Decodes a checked entry of the hit path, handing a copy to `hook`.
#[inline]
fn decode_hit<S: Shape<R>, R, H: Hook<S::Value>>(
    u: Usable<'_>,
    hook: &H,
    full: &str,
    raw: &[u8],
) -> Result<R, &'static str> {
    if !H::ACTIVE {
        return decode::<S, R>(u);
    }
    match u {
        Usable::Value { codec, payload } => match Codec::from_id(codec) {
            None => Err("payload written with a codec this build does not have"),
            Some(codec) => match codec.decode::<S::Value>(payload) {
                Some(v) => {
                    hook.keep(full, Some(&v), raw);
                    Ok(S::from_value(v))
                }
                None => Err("payload does not decode into the function's type"),
            },
        },
        Usable::Negative => {
            let r = S::negative().ok_or("negative entry for a function that cannot return None")?;
            hook.keep(full, None, raw);
            Ok(r)
        }
        Usable::Lease => Err("a lease"),
        Usable::Unusable(why) => Err(why),
    }
}

/// Entry point behind every `#[cached]` function: [`get_or_load_with`] without a near cache.
/// Not an `async fn` around it: that would nest one more state machine in every call's
/// future (56 B more per call, measured by the bench's `future size per call`).
#[inline]
pub(crate) fn get_or_load<'a, S, R, F, Fut>(
    cache: &'a Cache,
    spec: &'static FnSpec,
    key: String,
    cache_if: Option<fn(&S::Value) -> bool>,
    load: F,
) -> impl Future<Output = R> + use<'a, S, R, F, Fut>
where
    S: Shape<R>,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R>,
{
    get_or_load_with::<S, R, F, Fut, ()>(cache, spec, key, cache_if, (), load)
}

/// [`get_or_load`] with a near-cache hook.
pub(crate) async fn get_or_load_with<S, R, F, Fut, H>(
    cache: &Cache,
    spec: &'static FnSpec,
    key: String,
    cache_if: Option<fn(&S::Value) -> bool>,
    mut hook: H,
    load: F,
) -> R
where
    S: Shape<R>,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R>,
    H: Hook<S::Value>,
{
    let inner = &*cache.inner;
    let full = full_key(cache, key);
    if H::ACTIVE
        && let Some(near) = hook.lookup(&full)
    {
        let r = match near {
            Some(v) => Some(S::from_value(v)),
            None => S::negative(),
        };
        if let Some(r) = r {
            let c = inner.stats.for_slot(&spec.slot, spec.name);
            Counters::bump(&c.local_hits);
            return r;
        }
    }
    // The hit path: one GET, one decode, one counter.
    let got = get_full(cache, &full).await;
    let unusable_why = match &got {
        Ok(Some(raw)) => {
            let u = protocol::usable(raw, entry::type_tag::<S::Value>());
            let negative = matches!(u, Usable::Negative);
            let lease = matches!(u, Usable::Lease);
            match decode_hit::<S, R, H>(u, &hook, &full, raw) {
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
    let full = full_key(cache, key);
    let got = get_full(cache, &full).await;
    (full, got)
}

/// `<namespace>:<key>`, in the key's own buffer (the macro gives it spare capacity).
#[inline]
fn full_key(cache: &Cache, key: String) -> String {
    let mut full = key;
    full.insert(0, ':');
    full.insert_str(0, &cache.inner.namespace);
    full
}

/// The `GET` of [`fetch`].
#[inline]
async fn get_full(
    cache: &Cache,
    full: &str,
) -> Result<Option<crate::backend::Raw>, crate::store::Fault> {
    let inner = &*cache.inner;
    if inner.retrier.pending.any() {
        // Boxed: rare, and it would otherwise grow every call's future.
        Box::pin(get_pending(cache, full)).await
    } else {
        inner.store.get(full).await
    }
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
