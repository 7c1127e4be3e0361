//! Waiting without sleeping to decide an order: hang guards ([`guard`], [`guard_for`]) bound
//! how long a test may wait for something that must happen, without asserting anything about
//! speed; [`eventually`] polls a condition.

use std::future::Future;
use std::time::Duration;

/// Generous bound used by [`guard`]: a scenario that takes longer than this is hung.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Awaits `fut`, panicking if it takes longer than [`HANG_GUARD`]. A hang guard, not a timing
/// assertion: what it wraps is expected to finish in milliseconds.
pub async fn guard<F: Future>(what: &str, fut: F) -> F::Output {
    guard_for(what, HANG_GUARD, fut).await
}

/// Like [`guard`], for something that legitimately runs for `expected` (a workload of a set
/// length): it may take [`HANG_GUARD`] longer than that.
pub async fn guard_for<F: Future>(what: &str, expected: Duration, fut: F) -> F::Output {
    let bound = expected + HANG_GUARD;
    match tokio::time::timeout(bound, fut).await {
        Ok(out) => out,
        Err(_) => panic!("hang guard: {what} did not finish within {bound:?}"),
    }
}

/// Polls `check` every 10 ms until it returns true; panics if that has not happened within
/// `within`. For "eventually" conditions such as a lease released by a background task.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
