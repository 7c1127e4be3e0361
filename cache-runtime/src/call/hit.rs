//! The generic part of get-or-load: the hit path (one `GET`, one decode, one counter) and a
//! small driver that runs the non-generic miss path of [`miss`](crate::call::miss),
//! decoding bytes and running the loader for it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::cache::Cache;
use crate::call::miss::{self as protocol, Loaded, Mailbox, Miss, Msg, Usable};
use crate::call::opaque;
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
///
/// This future is compiled once per function (it holds the loader): it only sequences the
/// engine's steps. The `GET` and the miss path's steps are awaited through [`opaque!`], the
/// hit's decoding is [`on_hit`] (compiled once per stored type), and the miss driver is
/// boxed and polled out of line.
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
    let full = full_key(cache, key);
    if H::ACTIVE
        && let Some(r) = near_hit::<S, R, H>(cache, spec, &full, &mut hook)
    {
        return r;
    }
    // The hit path: one GET, one decode, one counter.
    let got = opaque!(get_full(cache, &full));
    let unusable_why = match on_hit::<S, R, H>(cache, spec, &full, &got, &hook) {
        Ok(r) => return r,
        Err(why) => why,
    };
    // Everything else is boxed: the miss path's state is much larger than the hit path's
    // and would otherwise make every call's future that large.
    miss::<S, R, F, Fut, H>(cache, spec, full, got, unusable_why, cache_if, &hook, load).await
}

/// A fresh near copy as the function's result, counted as a local hit. Only a fresh copy:
/// one filled by a caller with a grace window (same key, same type) may be past its
/// freshness.
fn near_hit<S: Shape<R>, R, H: Hook<S::Value>>(
    cache: &Cache,
    spec: &FnSpec,
    full: &str,
    hook: &mut H,
) -> Option<R> {
    let (v, m) = hook.lookup(full)?;
    if m.fresh_until_ms < entry::now_ms() {
        return None;
    }
    let r = from_copy::<S, R>(v)?;
    let c = cache.engine.stats().for_slot(&spec.slot, spec.name);
    Counters::bump(&c.local_hits);
    Some(r)
}

/// What the hit path's `GET` found (`got`): a value or negative entry of this function,
/// decoded and counted, or why the call goes to the miss path (`Some`: the bytes found are
/// unusable, and why; `None`: nothing usable was read: no key, a lease, a failed `GET`).
pub(crate) fn on_hit<S: Shape<R>, R, H: Hook<S::Value>>(
    cache: &Cache,
    spec: &FnSpec,
    full: &str,
    got: &Result<Option<crate::backend::Raw>, crate::store::Fault>,
    hook: &H,
) -> Result<R, Option<&'static str>> {
    let Ok(Some(raw)) = got else {
        return Err(None);
    };
    let u = protocol::usable(raw, entry::type_tag::<S::Value>());
    let negative = matches!(u, Usable::Negative);
    let lease = matches!(u, Usable::Lease);
    match decode_hit::<S, R, H>(u, hook, full, raw) {
        Ok(r) => {
            let c = cache.engine.stats().for_slot(&spec.slot, spec.name);
            Counters::bump(if negative { &c.negative_hits } else { &c.hits });
            Ok(r)
        }
        Err(_) if lease => Err(None),
        Err(why) => Err(Some(why)),
    }
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

/// The miss path of one call: [`miss::erased`](protocol::erased) (in-process single flight,
/// the lease, waiting, the fill: compiled once for all functions) drives it, and asks this
/// typed side, through a [`Mailbox`], to decode an envelope or to run the loader. Only this
/// small future is compiled per function: its poll, the loader's poll and the calls of the
/// stored type's decoding and encoding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn miss<'a, S, R, F, Fut, H>(
    cache: &'a Cache,
    spec: &'a FnSpec,
    full: String,
    got: Result<Option<crate::backend::Raw>, crate::store::Fault>,
    unusable_why: Option<&'static str>,
    cache_if: Option<fn(&S::Value) -> bool>,
    hook: &'a H,
    load: F,
) -> Pin<Box<MissCall<'a, S, R, Fut, H>>>
where
    S: Shape<R>,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R>,
    H: Hook<S::Value>,
{
    let engine = &*cache.engine;
    let (tags, fut) = load();
    let type_tag = entry::type_tag::<S::Value>();
    // The fail-safe copy is looked up by the full key (a near cache only).
    let fallback_key = if H::ACTIVE { Some(full.clone()) } else { None };
    let m = Miss::new(engine, spec, full, type_tag);
    let (core, mailbox) = protocol::erased(m, tags, got, unusable_why);
    Box::pin(MissCall {
        core,
        mailbox,
        fut,
        out: None,
        loading: None,
        codec: engine.codec(),
        type_tag,
        cache_if,
        hook,
        fallback_key,
        _shape: PhantomData,
    })
}

pin_project_lite::pin_project! {
    /// The typed side of one call's miss path (see [`miss`]).
    pub(crate) struct MissCall<'a, S, R, Fut, H>
    where
        S: Shape<R>,
    {
        core: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
        mailbox: Arc<Mailbox>,
        #[pin]
        fut: Fut,
        out: Option<R>,
        // `Some(degraded)` while the loader runs.
        loading: Option<bool>,
        codec: Codec,
        type_tag: u64,
        cache_if: Option<fn(&S::Value) -> bool>,
        hook: &'a H,
        fallback_key: Option<String>,
        _shape: PhantomData<fn() -> S>,
    }
}

impl<S, R, Fut, H> Future for MissCall<'_, S, R, Fut, H>
where
    S: Shape<R>,
    Fut: Future<Output = R>,
    H: Hook<S::Value>,
{
    type Output = R;

    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let mut this = self.project();
        loop {
            if this.core.as_mut().poll(cx).is_ready() {
                return Poll::Ready(this.out.take().expect("the miss path ended with a result"));
            }
            match this.mailbox.take() {
                Msg::Decode(bytes) => {
                    let decoded = decode::<S, R>(protocol::usable(&bytes, *this.type_tag)).ok();
                    let ok = decoded.is_some();
                    *this.out = decoded;
                    this.mailbox.put(Msg::Decoded(ok));
                    continue;
                }
                Msg::Load { degraded } => *this.loading = Some(degraded),
                Msg::Empty => {}
                answer => this.mailbox.put(answer),
            }
            let Some(degraded) = *this.loading else {
                return Poll::Pending;
            };
            let Poll::Ready(r) = this.fut.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            *this.loading = None;
            let (r, answer) = loaded::<S, R, H>(
                r,
                degraded,
                *this.codec,
                *this.cache_if,
                *this.hook,
                this.fallback_key.as_deref(),
            );
            *this.out = Some(r);
            this.mailbox.put(answer);
        }
    }
}

/// The loader's result `r` for the miss path's core ([`Msg::Loaded`]), and what the call
/// returns: `r`, or a fail-safe near copy when the backend (`degraded`) and the loader
/// both failed. Compiled once per stored type.
fn loaded<S: Shape<R>, R, H: Hook<S::Value>>(
    r: R,
    degraded: bool,
    codec: Codec,
    cache_if: Option<fn(&S::Value) -> bool>,
    hook: &H,
    fallback_key: Option<&str>,
) -> (R, Msg) {
    let answer = |loaded, error, stale_served| Msg::Loaded {
        loaded,
        error,
        stale_served,
    };
    match S::view(&r) {
        // Fail-safe across an outage: the backend failed and so did the loader; a near copy
        // in its grace window is served instead of the error.
        View::Error if H::ACTIVE && degraded => {
            match fallback_key.and_then(|full| hook.fallback(full).and_then(from_copy::<S, R>)) {
                Some(stale) => (stale, answer(Loaded::Error, true, true)),
                None => (r, answer(Loaded::Error, true, false)),
            }
        }
        View::Error => (r, answer(Loaded::Error, true, false)),
        View::Negative => (r, answer(Loaded::Negative, false, false)),
        View::Value(v) => {
            let loaded = encode_value(codec, v, cache_if);
            (r, answer(loaded, false, false))
        }
    }
}

/// A loaded value, serialized with `codec` (in a buffer with room for the envelope's
/// header) unless `cache_if` rejects it.
pub(crate) fn encode_value<T: serde::Serialize>(
    codec: Codec,
    v: &T,
    cache_if: Option<fn(&T) -> bool>,
) -> Loaded {
    let mut buf = entry::reserve(128);
    match codec.encode(&mut buf, v) {
        Ok(()) if cache_if.is_some_and(|keep| !keep(v)) => Loaded::Unstorable(buf),
        Ok(()) => Loaded::Value(buf),
        Err(e) => Loaded::Unencodable(e.to_string()),
    }
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
