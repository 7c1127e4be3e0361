//! What the `#[cached]` / `#[invalidates]` expansions call. Not a stable API.

use std::future::Future;
use std::sync::Arc;

use crate::cache::Cache;

pub use crate::key::KeyBuf;
pub use crate::spec::{
    FnSpec, InvalidateSpec, Opt, Plain, Res, ResOpt, Shape, Success, View, succeeded,
};
pub use crate::stats::CounterSlot;
pub use ::core;

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
    crate::cache::global()
}

/// The one runtime entry point of `#[cached]`.
#[inline]
pub async fn cached<S, R, Fut>(cache: &Cache, spec: &'static FnSpec, key: String, fut: Fut) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    crate::load::get_or_load::<S, R, Fut>(cache, spec, key, fut).await
}

/// The one runtime entry point of `#[invalidates]`: deletes the rendered keys (queued for
/// retry when the backend cannot be reached).
#[inline]
pub async fn invalidate(cache: &Cache, spec: &'static InvalidateSpec, keys: &[String]) {
    crate::invalidation::invalidate(cache, spec, keys).await
}
pub use crate::shape_check::{
    IsOption, IsPlain, IsResult, PlainFallback, PlainShape, Probe, SucceededFallback, expect_plain,
};
