//! The `metrics` feature: every counter of [`FnStats`](crate::FnStats) also feeds the
//! [`metrics`](::metrics) facade, and every call of a `#[cached]` function runs in one
//! `tracing` span whose `outcome` field says how it was answered.
//!
//! Metric names: `cache_<counter>_total{fn}` (e.g. `cache_hits_total`, `cache_misses_total`,
//! `cache_loads_total`, `cache_load_errors_total`, `cache_backend_errors_total`), the gauge
//! `cache_invalidations_pending{fn}` and the histogram `cache_load_seconds{fn}`. Handles are
//! registered the first time a function runs against a cache: install the recorder (e.g.
//! `metrics-exporter-prometheus`) before that, as the `metrics` crate requires.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;

use ::metrics::{Counter, Gauge};

thread_local! {
    /// The function whose call span this thread is polling in, if any: a counter records into
    /// the current span only when the span is that call's (not a span of the caller's, nor of
    /// a call an outer loader made, nor of an `#[invalidates]` run from a loader: those bump
    /// counters of another function name).
    static CALL: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Puts the previous [`CALL`] back, also when the poll panics.
struct Restore(Option<&'static str>);

impl Drop for Restore {
    fn drop(&mut self) {
        CALL.set(self.0);
    }
}

/// Runs one call of function `name` in its span (see [`call_span`]).
pub(crate) async fn traced<F: Future>(name: &'static str, call: F) -> F::Output {
    let span = call_span(name);
    let mut call = pin!(call);
    std::future::poll_fn(|cx| {
        let _entered = span.enter();
        let _restore = Restore(CALL.replace(Some(name)));
        call.as_mut().poll(cx)
    })
    .await
}

/// The facade handle behind one [`Count`](crate::stats::Count).
#[derive(Debug)]
pub(crate) enum Handle {
    /// A monotonic counter of function `name`; the mark is what a bump records in the span
    /// of a call of that function.
    Counter(Counter, Option<Mark>, &'static str),
    /// `invalidations_pending`, which goes up and down.
    Gauge(Gauge),
}

/// What a bump of a counter says about the call it happens in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    /// The value of the span's `outcome` field.
    Outcome(&'static str),
    /// The span's `degraded` field: the backend failed or was skipped.
    Degraded,
}

impl Handle {
    pub(crate) fn new(name: &'static str, field: &'static str) -> Self {
        if field == "invalidations_pending" {
            return Handle::Gauge(::metrics::gauge!("cache_invalidations_pending", "fn" => name));
        }
        let mark = match field {
            "hits" => Some(Mark::Outcome("hit")),
            "local_hits" => Some(Mark::Outcome("local_hit")),
            "negative_hits" => Some(Mark::Outcome("negative_hit")),
            "misses" => Some(Mark::Outcome("miss")),
            "stale_served" => Some(Mark::Outcome("stale")),
            "load_errors" => Some(Mark::Outcome("load_error")),
            "backend_errors" | "backend_skipped" => Some(Mark::Degraded),
            _ => None,
        };
        let counter = ::metrics::counter!(format!("cache_{field}_total"), "fn" => name);
        Handle::Counter(counter, mark, name)
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        match self {
            Handle::Counter(c, mark, name) => {
                c.increment(n);
                // Only inside a traced call of this very function (`CALL`), whose span
                // `traced` entered.
                if let Some(mark) = mark
                    && CALL
                        .get()
                        .is_some_and(|f| std::ptr::eq(f, *name) || f == *name)
                {
                    let span = tracing::Span::current();
                    if span
                        .metadata()
                        .is_some_and(|m| m.target() == CALL_TARGET && m.name() == "cached")
                    {
                        match mark {
                            Mark::Outcome(o) => span.record("outcome", *o),
                            Mark::Degraded => span.record("degraded", true),
                        };
                    }
                }
            }
            Handle::Gauge(g) => g.increment(n as f64),
        }
    }

    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        match self {
            Handle::Counter(..) => {}
            Handle::Gauge(g) => g.decrement(n as f64),
        }
    }
}

/// The target of call spans.
const CALL_TARGET: &str = "cache_runtime::call";

/// Whether call spans are enabled (a `DEBUG` span of target `cache_runtime::call`): when
/// not, a call runs without the span and its `Instrument` wrapper.
#[inline]
pub(crate) fn calls_traced() -> bool {
    tracing::enabled!(target: "cache_runtime::call", tracing::Level::DEBUG)
}

/// The span one call of `#[cached]` function `name` runs in: `fn`, and `outcome` (`hit`, `local_hit`,
/// `negative_hit`, `stale`, `miss`, `load_error`; the last one recorded wins: a miss whose
/// loader failed ends as `load_error`) and `degraded = true` when the backend failed or its
/// circuit was open during the call. Level DEBUG, target `cache_runtime::call`.
#[inline]
pub(crate) fn call_span(name: &'static str) -> tracing::Span {
    tracing::debug_span!(
        target: "cache_runtime::call",
        "cached",
        fn = name,
        outcome = tracing::field::Empty,
        degraded = tracing::field::Empty,
    )
}
