//! Waiting without sleeping to decide an order: hang guards ([`guard`], [`guard_for`]) bound
//! how long a test may wait for something that must happen, without asserting anything about
//! speed; [`eventually`] polls a condition. For the near cache: [`until_near`] calls until a
//! near copy answers, [`pushes_settled`] waits until the tracking pushes of earlier writes
//! arrived.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, EntryOptions};

use crate::source::Source;
use crate::{Raw, TEST_NAMESPACE};

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

/// How long [`until_near`] and [`pushes_settled`] wait.
pub const NEAR_BOUND: Duration = Duration::from_secs(10);

/// `get_or_load(key, opts, ..)` on `cache` with `src` as the loader until the call is answered
/// by `cache`'s near copy (the first calls may race the tracking setup); returns the value.
///
/// # Panics
/// If no call is a near hit within [`NEAR_BOUND`], or a call fails.
pub async fn until_near(
    cache: &Cache,
    key: &str,
    opts: &EntryOptions,
    src: &Arc<Source>,
) -> String {
    let name = opts.stats_name();
    let last = Mutex::new(String::new());
    eventually("a near-cache hit", NEAR_BOUND, || {
        let before = cache.stats().function(name).local_hits;
        let last = &last;
        async move {
            let s = src.clone();
            let got: Result<String, String> = cache
                .get_or_load(key, opts, move || async move { s.load().await })
                .await;
            *last.lock().unwrap() = got.unwrap();
            cache.stats().function(name).local_hits > before
        }
    })
    .await;
    last.into_inner().unwrap()
}

/// Waits until `cache`'s tracking connection delivered every push of writes made so far (a
/// late push of the cache's own store would evict a copy filled after it): writes marker
/// keys behind the cache's back through `raw` until the push of one arrived (pushes arrive in
/// order). The push hook can be set once per cache: call this once per cache.
///
/// # Panics
/// If the hook was already set, or no marker's push arrived within [`NEAR_BOUND`].
pub async fn pushes_settled(cache: &Cache, raw: &Raw) {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let hook = seen.clone();
    assert!(cache.__on_near_push(move |keys| hook.lock().unwrap().extend(keys.iter().cloned())));
    let n = AtomicU64::new(0);
    eventually("the marker's push arrived", NEAR_BOUND, || {
        let marker = format!("{TEST_NAMESPACE}:marker:{}", n.fetch_add(1, SeqCst));
        let seen = seen.clone();
        async move {
            raw.set(&marker, b"x").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.lock().unwrap().contains(&marker)
        }
    })
    .await;
}
