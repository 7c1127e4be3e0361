//! What the `#[cached]` / `#[invalidates]` expansions call. Not a stable API.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use crate::stats::Counters;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::cache::Cache;

pub use crate::key::KeyBuf;
pub use ::core;

/// Static description of one `#[cached]` function.
#[derive(Debug)]
pub struct FnSpec {
    /// Name in stats and tracing.
    pub name: &'static str,
    /// TTL of a value, seconds.
    pub ttl_secs: u64,
    /// Extra random TTL, up to this many seconds.
    pub jitter_secs: u64,
    /// TTL of a cached `None`; `None` = `ttl_secs`; `Some(0)` = do not cache `None`.
    pub negative_ttl_secs: Option<u64>,
    /// Lease length; `None` = the cache's default.
    pub lock_ms: Option<u64>,
    /// This function's counters in the first cache it ran against (lock-free hit path).
    pub slot: CounterSlot,
}

/// Remembers one cache's counters for a function, so that the hit path finds them without a
/// lock or a hash lookup.
#[derive(Debug)]
pub struct CounterSlot(OnceLock<(u64, Arc<Counters>)>);

impl CounterSlot {
    /// An empty slot.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        CounterSlot(OnceLock::new())
    }

    /// The counters of the registry `id`, if this slot holds them.
    #[inline]
    pub(crate) fn get(&self, id: u64) -> Option<&Counters> {
        match self.0.get() {
            Some((slot_id, c)) if *slot_id == id => Some(c),
            _ => None,
        }
    }

    /// Keeps `counters` of registry `id` if the slot is still empty.
    pub(crate) fn fill(&self, id: u64, counters: &Arc<Counters>) {
        let _ = self.0.set((id, counters.clone()));
    }
}

/// Static description of one `#[invalidates]` function.
#[derive(Debug)]
pub struct InvalidateSpec {
    /// Name in stats and tracing.
    pub name: &'static str,
}

/// How a return value looks to the cache.
pub enum View<'a, T> {
    /// A value to store.
    Value(&'a T),
    /// "Not found": stored as a negative entry.
    Negative,
    /// An error: never stored.
    Error,
}

/// Return type `T`.
pub struct Plain;
/// Return type `Option<T>`.
pub struct Opt;
/// Return type `Result<T, E>`.
pub struct Res;
/// Return type `Result<Option<T>, E>`.
pub struct ResOpt;

/// Maps a function's return type `R` to what the cache stores.
#[diagnostic::on_unimplemented(
    message = "the return type `{R}` does not match the shape chosen by `#[cached]`",
    note = "the cached value must implement `serde::Serialize + serde::de::DeserializeOwned + Send + 'static`; for a type alias of `Result`/`Option`, set `returns = \"result\" | \"option\" | \"result_option\" | \"plain\"`"
)]
pub trait Shape<R> {
    /// The stored type.
    type Value: Serialize + DeserializeOwned + Send + 'static;
    /// Classifies a result.
    fn view(r: &R) -> View<'_, Self::Value>;
    /// Rebuilds a result from a stored value.
    fn from_value(v: Self::Value) -> R;
    /// The result a negative entry stands for, if this shape has one.
    fn negative() -> Option<R>;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Shape<T> for Plain {
    type Value = T;
    fn view(r: &T) -> View<'_, T> {
        View::Value(r)
    }
    fn from_value(v: T) -> T {
        v
    }
    fn negative() -> Option<T> {
        None
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Shape<Option<T>> for Opt {
    type Value = T;
    fn view(r: &Option<T>) -> View<'_, T> {
        match r {
            Some(v) => View::Value(v),
            None => View::Negative,
        }
    }
    fn from_value(v: T) -> Option<T> {
        Some(v)
    }
    fn negative() -> Option<Option<T>> {
        Some(None)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static, E> Shape<Result<T, E>> for Res {
    type Value = T;
    fn view(r: &Result<T, E>) -> View<'_, T> {
        match r {
            Ok(v) => View::Value(v),
            Err(_) => View::Error,
        }
    }
    fn from_value(v: T) -> Result<T, E> {
        Ok(v)
    }
    fn negative() -> Option<Result<T, E>> {
        None
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static, E> Shape<Result<Option<T>, E>> for ResOpt {
    type Value = T;
    fn view(r: &Result<Option<T>, E>) -> View<'_, T> {
        match r {
            Ok(Some(v)) => View::Value(v),
            Ok(None) => View::Negative,
            Err(_) => View::Error,
        }
    }
    fn from_value(v: T) -> Result<Option<T>, E> {
        Ok(Some(v))
    }
    fn negative() -> Option<Result<Option<T>, E>> {
        Some(Ok(None))
    }
}

/// Whether an `#[invalidates]` function's result counts as success.
pub trait Success<R> {
    /// True when the keys should be deleted.
    fn succeeded(r: &R) -> bool;
}

impl<R> Success<R> for Plain {
    fn succeeded(_: &R) -> bool {
        true
    }
}
impl<R> Success<R> for Opt {
    fn succeeded(_: &R) -> bool {
        true
    }
}
impl<T, E> Success<Result<T, E>> for Res {
    fn succeeded(r: &Result<T, E>) -> bool {
        r.is_ok()
    }
}
impl<T, E> Success<Result<T, E>> for ResOpt {
    fn succeeded(r: &Result<T, E>) -> bool {
        r.is_ok()
    }
}

/// Whether `r` is a success for shape `S`.
#[inline]
pub fn succeeded<S: Success<R>, R>(r: &R) -> bool {
    S::succeeded(r)
}

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

/// The one runtime entry point of `#[invalidates]`: deletes the rendered keys. When the
/// backend cannot be reached, or the caller drops this future before the backend answered,
/// the deletion is queued and retried in the background.
pub async fn invalidate(cache: &Cache, spec: &'static InvalidateSpec, keys: &[String]) {
    let inner = &cache.inner;
    let mut pending = PendingInvalidation {
        cache,
        counters: Some(inner.stats.counters(spec.name)),
        keys: keys.iter().map(|k| cache.full_key(k)).collect(),
    };
    let result = inner.store.delete(&pending.keys).await;
    let Some(c) = pending.counters.take() else {
        return;
    };
    match result {
        Ok(_) => {
            c.invalidations.fetch_add(
                pending.keys.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Err(f) => {
            crate::load::fault(&c, spec.name, &f);
            warn!(cache.fn = spec.name, keys = pending.keys.len(), "invalidation failed; queued for retry");
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
pub use crate::shape_check::{
    IsOption, IsPlain, IsResult, PlainFallback, PlainShape, Probe, expect_plain,
};
