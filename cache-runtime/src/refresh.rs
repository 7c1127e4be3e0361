//! Freshness beyond TTL: stale-while-revalidate, XFetch early refresh and soft timeouts.

use std::future::Future;

use crate::cache::Cache;
use crate::spec::{FnSpec, Shape};

/// Entry point behind `#[cached]` functions with `stale`, `early_refresh` or `timeout_ms`.
pub(crate) async fn get_or_load<S, R, F, Fut>(
    cache: &Cache,
    spec: &'static FnSpec,
    key: String,
    cache_if: Option<fn(&S::Value) -> bool>,
    load: F,
) -> R
where
    S: Shape<R>,
    R: Send + 'static,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R> + Send + 'static,
{
    crate::load::get_or_load::<S, R, F, Fut>(cache, spec, key, cache_if, load).await
}
