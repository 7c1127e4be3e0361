//! Static descriptions of annotated functions and the return-type shapes: what the
//! `#[cached]` / `#[invalidates]` expansions hand to the runtime.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stats::CounterSlot;

/// What one cached function (or one [`EntryOptions`](crate::EntryOptions) value) asks of the
/// engine: its name, its policy (all durations in milliseconds) and its counters.
///
/// `#[cached]` builds one as a `static`; the programmatic API keeps one inside its options.
#[derive(Debug)]
pub struct FnSpec {
    /// Name in stats and tracing.
    pub name: &'static str,
    /// Freshness of a value, ms (> 0).
    pub ttl_ms: u64,
    /// Extra random freshness, up to this many ms.
    pub jitter_ms: u64,
    /// Freshness of a cached `None`; `None` = `ttl_ms`; `Some(0)` = do not cache `None`.
    pub negative_ttl_ms: Option<u64>,
    /// Lease length; `None` = the cache's default.
    pub lock_ms: Option<u64>,
    /// Grace window after the freshness, ms (`stale = N`); 0 = none.
    pub stale_ms: u64,
    /// XFetch's `B` (`early_refresh = B`); 0.0 = no early refresh.
    pub early_refresh: f64,
    /// Soft loader timeout in ms when a stale value exists (`timeout_ms = N`); 0 = none.
    pub timeout_ms: u64,
    /// How long this process keeps a decoded copy in its near cache, ms (`local_ttl = N`);
    /// 0 = no near cache.
    pub local_ttl_ms: u64,
    /// This function's counters in the first cache it ran against (lock-free hit path).
    pub slot: CounterSlot,
}

impl Clone for FnSpec {
    /// A copy with an empty counter slot.
    fn clone(&self) -> Self {
        FnSpec {
            name: self.name,
            ttl_ms: self.ttl_ms,
            jitter_ms: self.jitter_ms,
            negative_ttl_ms: self.negative_ttl_ms,
            lock_ms: self.lock_ms,
            stale_ms: self.stale_ms,
            early_refresh: self.early_refresh,
            timeout_ms: self.timeout_ms,
            local_ttl_ms: self.local_ttl_ms,
            slot: CounterSlot::new(),
        }
    }
}

impl FnSpec {
    /// Whether a call may refresh in the background (grace window, early refresh, soft
    /// timeout): then the loader must own its arguments.
    #[inline]
    pub(crate) fn refreshes(&self) -> bool {
        self.stale_ms > 0 || self.early_refresh > 0.0 || self.timeout_ms > 0
    }

    /// The freshness of a negative entry, ms.
    #[inline]
    pub(crate) fn negative_ms(&self) -> u64 {
        self.negative_ttl_ms.unwrap_or(self.ttl_ms)
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
