//! What the `#[cached]` / `#[invalidates]` expansions call. Not a stable API.

use std::future::Future;
use std::sync::Arc;

use crate::cache::Cache;

pub use crate::call::hit::NearArg;
pub use crate::key::KeyBuf;
pub use crate::near::{NearFns, near_fns};
/// The parsed template segments a registration hands over (`key_segments`, `tag_segments`).
pub use crate::policy::TemplateSegment;
pub use crate::policy::{
    CACHED_POLICIES, CachedPolicy, INVALIDATE_POLICIES, InvalidatePolicy, TypedKey,
};
pub use crate::spec::{
    FnSpec, InvalidateSpec, Opt, Plain, Res, ResOpt, Shape, Success, View, succeeded,
};
pub use crate::stats::CounterSlot;
pub use ::core;
pub use ::linkme;

/// Something a `cache = ..` argument may evaluate to.
#[diagnostic::on_unimplemented(
    message = "`cache = ..` must evaluate to a `cache_runtime::Cache` (or a reference to one), not `{Self}`"
)]
pub trait AsCache {
    /// A handle to the cache.
    fn cache_handle(&self) -> Cache;
}

impl AsCache for Cache {
    fn cache_handle(&self) -> Cache {
        self.clone()
    }
}
impl<T: AsCache + ?Sized> AsCache for &T {
    fn cache_handle(&self) -> Cache {
        (**self).cache_handle()
    }
}
impl<T: AsCache + ?Sized> AsCache for Arc<T> {
    fn cache_handle(&self) -> Cache {
        (**self).cache_handle()
    }
}

/// The cache named by a `cache = ..` argument.
#[inline]
pub fn handle<C: AsCache + ?Sized>(c: &C) -> Cache {
    c.cache_handle()
}

/// The installed (or default) cache.
#[inline]
pub fn global() -> &'static Cache {
    crate::global::global()
}

/// The entry point of `#[cached]` functions without background refresh: the body's future
/// may borrow the arguments. `load` is called at most once, on a miss: it renders the
/// entry's tags (templates of `tags = [..]`, without the namespace) and returns the body's
/// future. `cache_if` decides whether a loaded value is stored (`cache_if = path`); `near`
/// is `()` or, with `local_ttl = N`, [`near_fns`]`()`.
///
/// Not an `async fn`: the engine's future is returned as it is, without a wrapper compiled
/// once more per function.
#[inline]
pub fn cached<S, R, F, Fut, N>(
    cache: &Cache,
    spec: &'static FnSpec,
    key: String,
    cache_if: Option<fn(&S::Value) -> bool>,
    near: N,
    load: F,
) -> impl Future<Output = R>
where
    S: Shape<R>,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R>,
    N: NearArg<S::Value>,
{
    let hook = near.hook(cache, spec);
    let call = crate::call::hit::get_or_load_with::<S, R, F, Fut, _>(
        cache, spec, key, cache_if, hook, load,
    );
    traced(spec.name, call)
}

/// The entry point of `#[cached]` functions with `stale`, `early_refresh` or `timeout_ms`:
/// as [`cached`], but the body's future owns its arguments (`'static`), so that a refresh can
/// run in the background after the call returned.
#[inline]
pub fn cached_refresh<S, R, F, Fut, N>(
    cache: &Cache,
    spec: &'static FnSpec,
    key: String,
    cache_if: Option<fn(&S::Value) -> bool>,
    near: N,
    load: F,
) -> impl Future<Output = R>
where
    S: Shape<R> + 'static,
    R: Send + 'static,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R> + Send + 'static,
    N: NearArg<S::Value>,
{
    let hook = near.hook(cache, spec);
    let call = crate::call::freshness::get_or_load::<S, R, F, Fut, _, _>(
        cache, spec, key, cache_if, hook, load,
    );
    traced(spec.name, call)
}

/// A call as it is (without the `metrics` feature, no call spans).
#[cfg(not(feature = "metrics"))]
#[inline(always)]
fn traced<F: Future>(_: &'static str, call: F) -> F {
    call
}

/// A call in its span when call spans are enabled.
#[cfg(feature = "metrics")]
async fn traced<F: Future>(name: &'static str, call: F) -> F::Output {
    if crate::telemetry::calls_traced() {
        return crate::telemetry::traced(name, call).await;
    }
    call.await
}

/// The one runtime entry point of `#[invalidates]`: deletes the rendered keys and voids the
/// entries carrying the rendered tags (queued for retry when the backend cannot be reached).
#[inline]
pub async fn invalidate(
    cache: &Cache,
    spec: &'static InvalidateSpec,
    keys: &[String],
    tags: &[String],
) {
    use crate::retry::Target;
    let engine = &*cache.engine;
    let scope = engine.scope();
    let targets = keys
        .iter()
        .map(|k| Target::Key(engine.full_key(k)))
        .chain(tags.iter().map(|t| Target::Tag(engine.tag_key(t))))
        .collect();
    let counters = engine.counters(spec.name);
    crate::invalidation::invalidate(scope, counters, spec.name, targets).await
}
pub use crate::shape_check::{
    IsOption, IsPlain, IsResult, PlainFallback, PlainShape, Probe, SucceededFallback, expect_plain,
};
