//! One call of a cached function or of [`Cache::get_or_load`](crate::Cache::get_or_load), in
//! the order it flows:
//!
//! 1. [`hit`]: the generic front: the rendered key becomes the full key, a near copy is
//!    looked up (`local_ttl`), else one `GET` and one decode; the near-cache hook
//!    ([`hit::NearArg`]) is chosen at compile time, so a function without `local_ttl`
//!    compiles no near-cache code. Functions whose loader borrows its arguments end here or
//!    go to the miss path.
//! 2. [`freshness`]: the front of functions that may refresh in the background (`stale`,
//!    `early_refresh`, `timeout_ms`): the same lookup, then [`freshness::decide`] (a pure
//!    function: fresh, early refresh, grace window, expired) and one background refresh per
//!    key across processes under a refresh lease carried in the entry.
//! 3. [`miss`]: the miss path on bytes, compiled once for all functions: in-process single
//!    flight, the one-key lease (`SET NX PX`), waiting for another process's lease, the
//!    compare-and-set fill, and what a result may be handed to
//!    ([`miss::after_landing`], [`miss::after_poll`]: pure, table-tested). The generic
//!    driver in [`hit`] decodes bytes and runs the loader for it.
//!
//! Below this layer: [`invalidation`](crate::invalidation) and [`retry`](crate::retry), the
//! near cache ([`near`](crate::near)), the [`store`](crate::store) (the backend behind the
//! circuit breaker), [`backend`](crate::backend), and the data types ([`entry`](crate::entry),
//! [`key`](crate::key), [`codec`](crate::codec), [`stats`](crate::stats),
//! [`spec`](crate::spec), [`flight`](crate::flight)).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) mod freshness;
pub(crate) mod hit;
pub(crate) mod lease;
pub(crate) mod miss;

/// A future polled through a function that is never inlined: a step of the engine awaited by
/// a generic (per-function) future stays one call there, instead of being inlined into every
/// function's state machine (the body of an `async fn` is compiled in each crate that awaits
/// it, where LLVM would otherwise inline it into each caller). Made by [`opaque!`].
pub(crate) struct Opaque<'p, F>(pub(crate) Pin<&'p mut F>);

impl<F: Future> Future for Opaque<'_, F> {
    type Output = F::Output;
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        poll_opaque(self.0.as_mut(), cx)
    }
}

/// Polls `f` out of line (see [`Opaque`]).
#[inline(never)]
pub(crate) fn poll_opaque<F: Future>(f: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
    f.poll(cx)
}

/// `opaque!(fut)`: awaits `fut` (pinned in place, no allocation) through [`Opaque`].
macro_rules! opaque {
    ($f:expr) => {{
        let f = ::std::pin::pin!($f);
        $crate::call::Opaque(f).await
    }};
}
pub(crate) use opaque;
