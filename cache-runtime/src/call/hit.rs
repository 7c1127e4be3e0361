//! The generic part of get-or-load: the hit path (one `GET`, one decode, one counter) and a
//! small driver that runs the non-generic miss path of [`miss`](crate::call::miss),
//! decoding bytes and running the loader for it.

use std::future::Future;
use std::pin::pin;
use std::time::Instant;

use crate::cache::Cache;
use crate::call::miss::{self as protocol, Loaded, Miss, Step, Usable};
use crate::codec::Codec;
use crate::entry;
use crate::near::Meta;
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
/// `Option<NearCall>` (a `local_ttl` function; `None` when this cache has no near cache).
///
/// Public in a private module so that [`NearArg`](crate::__private::NearArg) can name it.
pub trait Hook<V> {
    /// Whether the hook does anything (a constant: `()` costs the hit path nothing).
    const ACTIVE: bool;
    /// Before the `GET`: a copy (`None`: a negative entry) and its entry's header fields.
    /// A copy may be past its freshness (in its grace window): the caller decides.
    fn lookup(&mut self, full: &str) -> Option<(Option<V>, Meta)>;
    /// After a Redis hit (`raw`: the entry's bytes): keep a copy (`None`: negative).
    fn keep(&self, full: &str, v: Option<&V>, raw: &[u8]);
    /// The fail-safe copy of a call whose backend and loader both failed.
    fn fallback(&self, full: &str) -> Option<Option<V>>;
}

impl<V> Hook<V> for () {
    const ACTIVE: bool = false;
    #[inline(always)]
    fn lookup(&mut self, _: &str) -> Option<(Option<V>, Meta)> {
        None
    }
    #[inline(always)]
    fn keep(&self, _: &str, _: Option<&V>, _: &[u8]) {}
    #[inline(always)]
    fn fallback(&self, _: &str) -> Option<Option<V>> {
        None
    }
}

/// The near cache of one call of a `local_ttl` function.
pub struct NearCall<'a, V> {
    pub(crate) near: &'a crate::near::Near,
    pub(crate) fns: crate::near::NearFns<V>,
    pub(crate) engine: &'a crate::engine::Engine,
    pub(crate) spec: &'a FnSpec,
    /// The epoch read before the `GET` (`None`: bypassed, no fill).
    pub(crate) epoch: Option<crate::near::Epoch>,
}

impl<V: 'static> Hook<V> for Option<NearCall<'_, V>> {
    const ACTIVE: bool = true;
    #[inline]
    fn lookup(&mut self, full: &str) -> Option<(Option<V>, Meta)> {
        let call = self.as_mut()?;
        match call.near.lookup::<V>(full, call.fns) {
            Ok(v) => Some(v),
            Err(e) => {
                call.epoch = e;
                None
            }
        }
    }
    fn keep(&self, full: &str, v: Option<&V>, raw: &[u8]) {
        if let Some(call) = self
            && let Some(e) = call.epoch
        {
            let counters = call.engine.counters(call.spec.name);
            call.near.fill(
                full,
                e,
                v,
                call.fns,
                raw,
                (call.spec.local_ttl_ms, call.spec.stale_ms),
                counters,
            );
        }
    }
    fn fallback(&self, full: &str) -> Option<Option<V>> {
        let call = self.as_ref()?;
        if call.spec.stale_ms == 0 {
            return None;
        }
        call.near.fallback(full, call.fns)
    }
}

/// What a `#[cached]` expansion passes for the near cache: `()` without `local_ttl`, the
/// proof [`NearFns`](crate::near::NearFns) with it. Chooses the hook at compile time, so
/// a function without `local_ttl` compiles one path without near-cache code.
pub trait NearArg<V> {
    /// The hook of one call.
    type Hook<'a>: Hook<V>
    where
        V: 'a;
    /// The hook for a call of `spec` on `cache`.
    fn hook<'a>(self, cache: &'a Cache, spec: &'a FnSpec) -> Self::Hook<'a>
    where
        V: 'a;
}

impl<V> NearArg<V> for () {
    type Hook<'a>
        = ()
    where
        V: 'a;
    #[inline(always)]
    fn hook<'a>(self, _: &'a Cache, _: &'a FnSpec) -> Self::Hook<'a>
    where
        V: 'a,
    {
    }
}

impl<V: 'static> NearArg<V> for crate::near::NearFns<V> {
    type Hook<'a>
        = Option<NearCall<'a, V>>
    where
        V: 'a;
    #[inline]
    fn hook<'a>(self, cache: &'a Cache, spec: &'a FnSpec) -> Self::Hook<'a>
    where
        V: 'a,
    {
        if spec.local_ttl_ms == 0 {
            return None;
        }
        cache.engine.near().map(|near| NearCall {
            near,
            fns: self,
            engine: &cache.engine,
            spec,
            epoch: None,
        })
    }
}

/// Decodes a checked entry of the hit path, handing a copy to `hook`.
#[inline]
pub(crate) fn decode_hit<S: Shape<R>, R, H: Hook<S::Value>>(
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

/// A near copy as the function's result (`None`: a negative copy of a function that cannot
/// return `None`, which is never answered).
#[inline]
pub(crate) fn from_copy<S: Shape<R>, R>(v: Option<S::Value>) -> Option<R> {
    match v {
        Some(v) => Some(S::from_value(v)),
        None => S::negative(),
    }
}

/// The engine behind every call whose loader borrows (no background refresh: no `stale`,
/// `early_refresh` or `timeout_ms`): the hit path (a near copy, else one `GET`, one decode,
/// one counter), then the boxed miss path.
pub(crate) async fn get_or_load_with<S, R, F, Fut, H>(
    cache: &Cache,
    spec: &FnSpec,
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
    let engine = &*cache.engine;
    let full = full_key(cache, key);
    // Only a fresh copy: one filled by a caller with a grace window (same key, same type)
    // may be past its freshness.
    if H::ACTIVE
        && let Some((v, m)) = hook.lookup(&full)
        && m.fresh_until_ms >= entry::now_ms()
        && let Some(r) = from_copy::<S, R>(v)
    {
        let c = engine.stats().for_slot(&spec.slot, spec.name);
        Counters::bump(&c.local_hits);
        return r;
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
                    let c = engine.stats().for_slot(&spec.slot, spec.name);
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
    Box::pin(miss::<S, R, F, Fut, H>(
        cache,
        spec,
        full,
        got,
        unusable_why,
        cache_if,
        &hook,
        load,
    ))
    .await
}

/// `<namespace>:<key>`, in the key's own buffer (the macro gives it spare capacity).
#[inline]
pub(crate) fn full_key(cache: &Cache, key: String) -> String {
    let mut full = key;
    full.insert(0, ':');
    full.insert_str(0, cache.engine.namespace());
    full
}

/// The hit path's `GET` of a full key.
#[inline]
pub(crate) async fn get_full(
    cache: &Cache,
    full: &str,
) -> Result<Option<crate::backend::Raw>, crate::store::Fault> {
    let engine = &*cache.engine;
    if engine.retrier().pending.any() {
        // Boxed: rare, and it would otherwise grow every call's future.
        Box::pin(get_pending(cache, full)).await
    } else {
        engine.store().get(full).await
    }
}

/// `GET`, when this process has queued invalidations: for a key among them, deliver the
/// deletion now (a read here must not see an entry this process invalidated), and treat a
/// failure like a failed `GET` (the call goes to the loader, without the cache).
pub(crate) async fn get_pending(
    cache: &Cache,
    full: &str,
) -> Result<Option<crate::backend::Raw>, crate::store::Fault> {
    let engine = &*cache.engine;
    // A queued tag invalidation may cover this key: deliver it first.
    let tags = engine.retrier().pending.tags();
    if !tags.is_empty() {
        crate::invalidation::deliver(engine.store(), &engine.scope().flights, &tags).await?;
    }
    if engine.retrier().pending.contains(full) {
        engine.store().delete(&[full.to_owned()]).await?;
    }
    engine.store().get(full).await
}

/// The driver of the miss path: everything but decoding and running the loader happens in
/// [`Miss`], compiled once for all functions.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn miss<S, R, F, Fut, H>(
    cache: &Cache,
    spec: &FnSpec,
    full: String,
    got: Result<Option<crate::backend::Raw>, crate::store::Fault>,
    unusable_why: Option<&'static str>,
    cache_if: Option<fn(&S::Value) -> bool>,
    hook: &H,
    load: F,
) -> R
where
    S: Shape<R>,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R>,
    H: Hook<S::Value>,
{
    let engine = &*cache.engine;
    let (tags, fut) = load();
    let type_tag = entry::type_tag::<S::Value>();
    let mut m = Miss::new(engine, spec, full, type_tag);
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
        // Fail-safe across an outage: the backend failed and so did the loader; a near copy
        // in its grace window is served instead of the error.
        View::Error if H::ACTIVE && m.backend_failed() => {
            if let Some(stale) = hook.fallback(m.full()).and_then(from_copy::<S, R>) {
                Counters::bump(&m.counters().stale_served);
                m.finish(Loaded::Error, load_ms).await;
                return stale;
            }
            Loaded::Error
        }
        View::Error => Loaded::Error,
        View::Negative => Loaded::Negative,
        View::Value(v) => {
            let mut buf = entry::reserve(128);
            match engine.codec().encode(&mut buf, v) {
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
    use crate::call::miss::ttl_ms;

    #[test]
    fn ttl_within_jitter_range() {
        for _ in 0..1000 {
            let t = ttl_ms(10_000, 3_000);
            assert!((10_000..=13_000).contains(&t), "{t}");
        }
        assert_eq!(ttl_ms(10_000, 0), 10_000);
    }
}
