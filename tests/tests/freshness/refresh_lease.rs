//! The refresh lease when its reply is lost: the server applied `TRY_REFRESH`, the reply came
//! after `command_timeout`, and the lease is still released (by its token) so that the next
//! grace-window call refreshes the key.
//!
//! Ordering is forced with [`HoldProxy`], which holds the reply to a chosen command until the
//! test releases it; the only sleep lets a `ttl = 1` run out, to reach the grace window.

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::source::{Source, alive_tasks};
use cache_tests::{HoldProxy, RedisServer, TEST_NAMESPACE, eventually};

/// Sleep this long after a load to be past its `ttl = 1` (in the grace window).
const PAST_TTL: Duration = Duration::from_millis(1_100);

fn v(version: u64, run: u64) -> String {
    Source::value(version, run)
}

// ---------------------------------------------------------------------------------------------
// A refresh lease whose TRY_REFRESH reply is lost is released by its token.
//
// As the miss path arms its lease guard before `SET NX` (a lease request with an unknown
// outcome is released by token), the refresh path arms its guard before `try_refresh`. A lease
// left behind would stay in the entry for 10 × lock_ms (50 s by default), and meanwhile no
// process would refresh the key: every grace-window call would serve the stale value and see
// `refreshing`, and with `timeout_ms` every call would return stale at once.

#[cached(key = "lk:{id}", ttl = 1, stale = 120, cache = cache)]
async fn lk_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const LK: &str = concat!(module_path!(), "::lk_row");

/// Interleaving: an entry in its grace window; a call starts a refresh; the server applies
/// TRY_REFRESH but its reply is held past `command_timeout` (the refresh fails with a backend
/// error); then the reply is released.
///
/// Expected: the refresh lease is released by its token in the background (as a lost `SET NX`
/// reply is), so the next grace-window call refreshes the key; the lease (kind byte | 0x80)
/// does not stay in the entry until it runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_lease_whose_reply_was_lost_is_released() {
    let server = RedisServer::start();
    let proxy = HoldProxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis(proxy.url())
        .namespace(TEST_NAMESPACE)
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("cache");
    let raw = server.raw().await;
    let src = Source::new();
    assert_eq!(lk_row(&cache, 1, &src).await, v(1, 1));
    assert_eq!(lk_row(&cache, 2, &src).await, v(1, 2));
    tokio::time::sleep(PAST_TTL).await;

    // Key 2: one complete refresh, so that the refresh scripts are loaded in the server (the
    // next TRY_REFRESH is a single EVALSHA).
    let baseline = alive_tasks();
    assert_eq!(lk_row(&cache, 2, &src).await, v(1, 2), "stale");
    eventually("key 2 refreshed", Duration::from_secs(10), || async {
        lk_row(&cache, 2, &src).await == v(1, 3)
    })
    .await;
    eventually("refreshes ended", Duration::from_secs(10), || async {
        alive_tasks() <= baseline
    })
    .await;
    assert_eq!(cache.stats().function(LK).refreshes, 1);

    // Key 1: the TRY_REFRESH reply is held until the refresh gave up on it.
    proxy.hold_reply_to("EVALSHA");
    assert_eq!(lk_row(&cache, 1, &src).await, v(1, 1), "stale");
    proxy.reached().await;
    eventually("the refresh timed out", Duration::from_secs(10), || async {
        cache.stats().function(LK).backend_errors >= 1
    })
    .await;
    proxy.release();
    let key = cache.full_key("lk:1");
    let held = raw.get(&key).await.expect("the entry is there");
    assert!(
        held[2] & 0x80 != 0,
        "the server applied TRY_REFRESH: the entry carries the refresh lease"
    );
    eventually(
        "the refresh lease with the lost reply is released",
        Duration::from_secs(5),
        || async {
            raw.get(&key)
                .await
                .is_some_and(|e| e.len() >= 32 && e[2] & 0x80 == 0)
        },
    )
    .await;
}
