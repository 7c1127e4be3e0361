//! The steady hot key (early refresh): [`HOT_TASKS`] tasks on one key, `ttl = 1`, a
//! [`HOT_LOADER_MS`] loader, with and without XFetch (`early_refresh = 1.0`): the share of
//! calls that waited for a loader.

use std::time::{Duration, Instant};

use cache_runtime::cached;
use serde::Serialize;

use super::ctx;
use crate::stats::Hist;
use crate::value::{BenchError, Item, sample_item};
use crate::{HOT_LOADER_MS, HOT_TASKS, HOT_WAIT_MS};

/// Loader of the hot-key cases: [`HOT_LOADER_MS`] per run.
pub(crate) async fn hot_load(id: u64) -> Result<Item, BenchError> {
    tokio::time::sleep(Duration::from_millis(HOT_LOADER_MS)).await;
    Ok(sample_item(id))
}

/// A hot key with `ttl = 1` and no early refresh: every second, the callers wait for a load.
#[cached(key = "hot:{id}", ttl = 1, cache = ctx().redis_msgpack, name = "hot_plain")]
pub(crate) async fn hot_plain(id: u64) -> Result<Item, BenchError> {
    hot_load(id).await
}

/// The same with XFetch (`early_refresh = 1.0`): a hit near expiry refreshes in the background.
#[cached(
    key = "hot-xfetch:{id}",
    ttl = 1,
    early_refresh = 1.0,
    cache = ctx().redis_msgpack,
    name = "hot_xfetch"
)]
pub(crate) async fn hot_xfetch(id: u64) -> Result<Item, BenchError> {
    hot_load(id).await
}

/// One hot-key case: [`HOT_TASKS`] tasks calling one key in a loop.
#[derive(Debug, Serialize)]
pub(crate) struct HotRow {
    pub(crate) case: String,
    pub(crate) early_refresh: Option<f64>,
    pub(crate) tasks: usize,
    pub(crate) ttl_secs: u64,
    pub(crate) loader_ms: u64,
    pub(crate) seconds: f64,
    pub(crate) calls: u64,
    /// Calls of at least [`HOT_WAIT_MS`]: most likely they waited for a loader.
    pub(crate) waited: u64,
    pub(crate) waited_fraction: f64,
    /// The function's `misses` over `calls`.
    pub(crate) misses: u64,
    pub(crate) miss_fraction: f64,
    pub(crate) loads: u64,
    pub(crate) refreshes: u64,
    pub(crate) early_refreshes: u64,
    pub(crate) p999_us: f64,
    pub(crate) max_ms: f64,
}

/// Runs the hot-key case `xfetch` on key `id` for `dur` (after one call that loads it).
pub(crate) async fn hot(xfetch: bool, id: u64, dur: Duration) -> Result<HotRow, BenchError> {
    let name = if xfetch { "hot_xfetch" } else { "hot_plain" };
    let hot_call = move || async move {
        if xfetch {
            hot_xfetch(id).await
        } else {
            hot_plain(id).await
        }
    };
    hot_call().await?;
    let cache = &ctx().redis_msgpack;
    let before = cache.stats().function(name);
    let start = Instant::now();
    let deadline = start + dur;
    let handles: Vec<_> = (0..HOT_TASKS)
        .map(|_| {
            tokio::spawn(async move {
                let mut hist = Hist::new();
                let (mut calls, mut waited, mut errors) = (0u64, 0u64, 0u64);
                let mut t0 = Instant::now();
                while t0 < deadline {
                    let r = hot_call().await;
                    let t1 = Instant::now();
                    match r {
                        Ok(item) => {
                            std::hint::black_box(item);
                        }
                        Err(_) => errors += 1,
                    }
                    let took = t1 - t0;
                    hist.record(took.as_nanos() as u64);
                    calls += 1;
                    waited += u64::from(took >= Duration::from_millis(HOT_WAIT_MS));
                    t0 = t1;
                }
                (hist, calls, waited, errors)
            })
        })
        .collect();
    let mut hist = Hist::new();
    let (mut calls, mut waited, mut errors) = (0, 0, 0);
    for h in handles {
        let (h, c, w, e) = h.await.map_err(|e| BenchError(e.to_string()))?;
        hist.merge(&h);
        calls += c;
        waited += w;
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    if errors > 0 {
        return Err(BenchError(format!("{name}: {errors} calls failed")));
    }
    let after = cache.stats().function(name);
    let misses = after.misses - before.misses;
    Ok(HotRow {
        case: if xfetch {
            "redis, early_refresh = 1.0".to_owned()
        } else {
            "redis, no early refresh".to_owned()
        },
        early_refresh: xfetch.then_some(1.0),
        tasks: HOT_TASKS,
        ttl_secs: 1,
        loader_ms: HOT_LOADER_MS,
        seconds,
        calls,
        waited,
        waited_fraction: waited as f64 / calls.max(1) as f64,
        misses,
        miss_fraction: misses as f64 / calls.max(1) as f64,
        loads: after.loads - before.loads,
        refreshes: after.refreshes - before.refreshes,
        early_refreshes: after.early_refreshes - before.early_refreshes,
        p999_us: hist.quantile(0.999) as f64 / 1e3,
        max_ms: hist.quantile(1.0) as f64 / 1e6,
    })
}
