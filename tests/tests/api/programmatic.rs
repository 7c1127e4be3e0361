//! The programmatic API (DESIGN.md, "The composable core"): `Cache::get_or_load`,
//! `get_or_load_optional`, `peek`, `set` and `expire` with `EntryOptions`, on the memory
//! backend and a real `redis-server` (`backend_tests!`), the near cache on one server, Redis
//! outages through a proxy, and the core subset on a 6-node Redis Cluster.
//!
//! Loaders run on a [`Source`]: it counts runs, returns `db<version>/run<n>`, and holds runs
//! at a gate, so a test decides when a load finishes (no sleeps for ordering; sleeps only let
//! a short TTL run out).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BOUND, gol, st, v};
use cache_runtime::{Cache, EntryOptions, Error, Peek, cached};
use cache_tests::source::{Source, alive_tasks};
use cache_tests::{
    Backend, Proxy, RedisCluster, RedisServer, TEST_NAMESPACE, TestEnv, backend_tests, eventually,
    guard, pushes_settled, until_near,
};
use tokio::sync::Barrier;

const MIN: Duration = Duration::from_secs(60);

/// `get_or_load_optional` with a loader that runs `src` once and finds the row if `found`.
async fn gol_opt(
    cache: &Cache,
    key: &str,
    opts: &EntryOptions,
    src: &Arc<Source>,
    found: bool,
) -> Result<Option<String>, String> {
    let s = src.clone();
    cache
        .get_or_load_optional(key, opts, move || async move {
            s.load().await.map(|v| found.then_some(v))
        })
        .await
}

/// Starts `gol` in a task.
fn spawn_gol(
    cache: &Cache,
    key: &str,
    opts: &EntryOptions,
    src: &Arc<Source>,
) -> tokio::task::JoinHandle<Result<String, String>> {
    let (cache, key, opts, src) = (cache.clone(), key.to_owned(), opts.clone(), src.clone());
    tokio::spawn(async move { gol(&cache, &key, &opts, &src).await })
}

/// Waits until the tasks spawned on this runtime since `baseline = alive_tasks()` ended (a
/// background refresh is a task).
async fn settle(baseline: usize) {
    eventually("the background refreshes ended", BOUND, || async move {
        alive_tasks() <= baseline
    })
    .await;
}

/// Polls `peek` until it holds `want` (fresh or stale), bounded.
async fn until_peek(cache: &Cache, key: &str, want: &str) {
    eventually(&format!("{key} holds {want}"), BOUND, || async move {
        matches!(
            cache.peek::<String>(key).await,
            Ok(Peek::Fresh(x) | Peek::Stale(x)) if x == want
        )
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 1. get_or_load: miss, hit, errors, stampede, the lease across handles.

async fn miss_loads_once_then_hits_under_the_options_name(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.miss_hit");
    assert_eq!(gol(&env.cache, "u:1", &opts, &src).await, Ok(v(1, 1)));
    for _ in 0..3 {
        assert_eq!(gol(&env.cache, "u:1", &opts, &src).await, Ok(v(1, 1)));
    }
    assert_eq!(src.runs(), 1);
    let s = st(&env.cache, "p.miss_hit");
    assert_eq!((s.misses, s.loads, s.hits), (1, 1, 3), "{s:?}");
    // A different key is a different entry.
    assert_eq!(gol(&env.cache, "u:2", &opts, &src).await, Ok(v(1, 2)));
    assert_eq!(st(&env.cache, "p.miss_hit").loads, 2);
}

async fn err_is_returned_unchanged_and_never_cached(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.err");
    src.fail_next();
    assert_eq!(
        gol(&env.cache, "e:1", &opts, &src).await,
        Err("db down (run 1)".to_owned())
    );
    assert_eq!(
        env.cache.peek::<String>("e:1").await.unwrap(),
        Peek::Missing
    );
    src.fail_from(u64::MAX);
    assert_eq!(gol(&env.cache, "e:1", &opts, &src).await, Ok(v(1, 2)));
    assert_eq!(gol(&env.cache, "e:1", &opts, &src).await, Ok(v(1, 2)));
    let s = st(&env.cache, "p.err");
    assert_eq!(
        (src.runs(), s.loads, s.load_errors, s.hits),
        (2, 2, 1, 1),
        "{s:?}"
    );
}

/// `n` callers of one cold key over `caches` (round robin), released together; the loader
/// is held until every caller missed. Returns the values.
async fn stampede(caches: &[Cache], n: usize, name: &str, src: &Arc<Source>) -> Vec<String> {
    let opts = EntryOptions::new(MIN).name(name);
    src.gate_next();
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (cache, opts, src, barrier) = (
                caches[i % caches.len()].clone(),
                opts.clone(),
                src.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                gol(&cache, "hot:1", &opts, &src).await
            })
        })
        .collect();
    guard("the loader starts", src.entered()).await;
    eventually(&format!("all {n} callers missed"), BOUND, || async move {
        caches.iter().map(|c| st(c, name).misses).sum::<u64>() == n as u64
    })
    .await;
    if caches.len() > 1 {
        eventually(
            "the other handles wait on the lease",
            BOUND,
            || async move {
                caches.iter().map(|c| st(c, name).lock_waits).sum::<u64>()
                    == caches.len() as u64 - 1
            },
        )
        .await;
    }
    src.ungate();
    src.open(1);
    let mut out = Vec::new();
    for t in tasks {
        out.push(guard("a stampeding call", t).await.unwrap().unwrap());
    }
    out
}

async fn concurrent_callers_of_a_cold_key_run_the_loader_once(env: TestEnv) {
    let src = Source::new();
    let values = stampede(std::slice::from_ref(&env.cache), 32, "p.stampede", &src).await;
    assert!(values.iter().all(|x| *x == v(1, 1)), "{values:?}");
    let s = st(&env.cache, "p.stampede");
    assert_eq!((src.runs(), s.misses, s.loads), (1, 32, 1), "{s:?}");
}

/// Two handles (two processes) on one store: one load across both (the lease).
async fn two_handles_share_one_load(a: &Cache, b: &Cache) {
    let src = Source::new();
    let values = stampede(&[a.clone(), b.clone()], 32, "p.lease", &src).await;
    assert!(values.iter().all(|x| *x == v(1, 1)), "{values:?}");
    assert_eq!(src.runs(), 1, "one load across both handles");
    let (sa, sb) = (st(a, "p.lease"), st(b, "p.lease"));
    assert_eq!(sa.loads + sb.loads, 1, "{sa:?} {sb:?}");
    assert_eq!(sa.lock_timeouts + sb.lock_timeouts, 0, "{sa:?} {sb:?}");
}

async fn redis_cache(url: &str) -> Cache {
    Cache::builder()
        .redis(url)
        .namespace(TEST_NAMESPACE)
        .require_connection()
        .build()
        .await
        .expect("cache")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_redis_run_the_loader_once() {
    let server = RedisServer::start();
    let a = redis_cache(&server.url()).await;
    let b = redis_cache(&server.url()).await;
    two_handles_share_one_load(&a, &b).await;
}

// ---------------------------------------------------------------------------------------------
// 2. get_or_load_optional: negative entries.

async fn optional_none_is_cached_as_a_negative_entry(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.neg");
    assert_eq!(
        gol_opt(&env.cache, "n:1", &opts, &src, false).await,
        Ok(None)
    );
    assert_eq!(
        gol_opt(&env.cache, "n:1", &opts, &src, true).await,
        Ok(None)
    );
    assert_eq!(src.runs(), 1, "the negative entry answered");
    let s = st(&env.cache, "p.neg");
    assert_eq!((s.loads, s.negative_hits, s.hits), (1, 1, 0), "{s:?}");
    // A found row is an ordinary entry.
    assert_eq!(
        gol_opt(&env.cache, "n:2", &opts, &src, true).await,
        Ok(Some(v(1, 2)))
    );
    assert_eq!(
        gol_opt(&env.cache, "n:2", &opts, &src, false).await,
        Ok(Some(v(1, 2)))
    );
    assert_eq!(src.runs(), 2);
}

async fn optional_none_with_zero_negative_ttl_is_not_cached(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN)
        .negative_ttl(Duration::ZERO)
        .name("p.neg0");
    assert!(opts.validate().is_ok());
    assert_eq!(
        gol_opt(&env.cache, "n0:1", &opts, &src, false).await,
        Ok(None)
    );
    assert_eq!(
        env.cache.peek::<String>("n0:1").await.unwrap(),
        Peek::Missing
    );
    assert_eq!(
        gol_opt(&env.cache, "n0:1", &opts, &src, false).await,
        Ok(None)
    );
    assert_eq!(src.runs(), 2, "None not cached");
    assert_eq!(st(&env.cache, "p.neg0").negative_hits, 0);
}

// ---------------------------------------------------------------------------------------------
// 3. One engine, one envelope: `#[cached]` and `get_or_load` share entries.

#[cached(key = "user:{id}", ttl = 60, cache = cache)]
async fn user(cache: &Cache, id: u64, src: &Arc<Source>) -> Result<String, String> {
    src.load().await
}

async fn cached_attribute_and_get_or_load_share_entries(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.interop");
    // Written by the attribute, read by the API.
    assert_eq!(user(&env.cache, 1, &src).await, Ok(v(1, 1)));
    assert_eq!(gol(&env.cache, "user:1", &opts, &src).await, Ok(v(1, 1)));
    assert_eq!(
        env.cache.peek::<String>("user:1").await.unwrap(),
        Peek::Fresh(v(1, 1))
    );
    // Written by the API, read by the attribute.
    assert_eq!(gol(&env.cache, "user:2", &opts, &src).await, Ok(v(1, 2)));
    assert_eq!(user(&env.cache, 2, &src).await, Ok(v(1, 2)));
    // `set` is seen by the attribute too.
    env.cache
        .set("user:3", &"manual".to_owned(), &opts)
        .await
        .unwrap();
    assert_eq!(user(&env.cache, 3, &src).await, Ok("manual".to_owned()));
    assert_eq!(src.runs(), 2);
    let a = st(&env.cache, "api::programmatic::user");
    let p = st(&env.cache, "p.interop");
    assert_eq!(
        (a.loads, a.hits, p.loads, p.hits),
        (1, 2, 1, 1),
        "{a:?} {p:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Invalidation during a running load.

async fn invalidate_during_a_load_returns_the_value_without_storing_it(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.inv");
    src.gate_next();
    let call = spawn_gol(&env.cache, "i:1", &opts, &src);
    guard("the loader starts", src.entered()).await;
    env.cache.invalidate("i:1").await.unwrap();
    src.ungate();
    src.open(1);
    assert_eq!(guard("the load", call).await.unwrap(), Ok(v(1, 1)));
    assert_eq!(
        env.cache.peek::<String>("i:1").await.unwrap(),
        Peek::Missing
    );
    assert_eq!(gol(&env.cache, "i:1", &opts, &src).await, Ok(v(1, 2)));
    assert_eq!(gol(&env.cache, "i:1", &opts, &src).await, Ok(v(1, 2)));
    assert_eq!(src.runs(), 2);
}

// ---------------------------------------------------------------------------------------------
// 5. peek.

async fn peek_reports_missing_fresh_not_found_stale_and_never_loads(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    assert_eq!(c.peek::<String>("pk:1").await.unwrap(), Peek::Missing);
    let opts = EntryOptions::new(Duration::from_millis(200))
        .stale(MIN)
        .name("p.peek");
    assert_eq!(gol(c, "pk:1", &opts, &src).await, Ok(v(1, 1)));
    assert_eq!(
        c.peek::<String>("pk:1").await.unwrap(),
        Peek::Fresh(v(1, 1))
    );
    // Another value type does not decode as this one.
    assert_eq!(c.peek::<u64>("pk:1").await.unwrap(), Peek::Missing);
    assert_eq!(c.peek::<Vec<String>>("pk:1").await.unwrap(), Peek::Missing);
    // A negative entry.
    assert_eq!(gol_opt(c, "pk:2", &opts, &src, false).await, Ok(None));
    assert_eq!(c.peek::<String>("pk:2").await.unwrap(), Peek::NotFound);
    // Past the TTL, within the grace window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.peek::<String>("pk:1").await.unwrap(),
        Peek::Stale(v(1, 1))
    );
    // A load in progress (a lease) is nothing usable.
    src.gate_next();
    let call = spawn_gol(c, "pk:3", &opts, &src);
    guard("the loader starts", src.entered()).await;
    assert_eq!(c.peek::<String>("pk:3").await.unwrap(), Peek::Missing);
    src.ungate();
    src.open(1);
    assert_eq!(guard("the load", call).await.unwrap(), Ok(v(1, 3)));
    let runs = src.runs();
    for k in ["pk:1", "pk:2", "pk:3", "pk:4"] {
        let _ = c.peek::<String>(k).await.unwrap();
    }
    assert_eq!(src.runs(), runs, "peek never loads");
    assert_eq!(c.peek::<String>("pk:4").await.unwrap(), Peek::Missing);
    assert_eq!(st(c, "p.peek").stale_served, 0, "peek serves nothing");
}

// ---------------------------------------------------------------------------------------------
// 6. set.

async fn set_value_is_returned_by_get_or_load_without_loading(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.set");
    env.cache
        .set("s:1", &"manual".to_owned(), &opts)
        .await
        .unwrap();
    assert_eq!(
        gol(&env.cache, "s:1", &opts, &src).await,
        Ok("manual".into())
    );
    // The last set wins over a loaded value too.
    assert_eq!(gol(&env.cache, "s:2", &opts, &src).await, Ok(v(1, 1)));
    env.cache
        .set("s:2", &"second".to_owned(), &opts)
        .await
        .unwrap();
    assert_eq!(
        gol(&env.cache, "s:2", &opts, &src).await,
        Ok("second".into())
    );
    assert_eq!(src.runs(), 1);
    assert_eq!(st(&env.cache, "p.set").hits, 2);
}

async fn set_during_a_load_is_not_overwritten_by_it(env: TestEnv) {
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.set_race");
    src.gate_next();
    let call = spawn_gol(&env.cache, "sr:1", &opts, &src);
    guard("the loader starts", src.entered()).await;
    env.cache
        .set("sr:1", &"manual".to_owned(), &opts)
        .await
        .unwrap();
    src.ungate();
    src.open(1);
    assert_eq!(guard("the load", call).await.unwrap(), Ok(v(1, 1)));
    assert_eq!(
        env.cache.peek::<String>("sr:1").await.unwrap(),
        Peek::Fresh("manual".into())
    );
    assert_eq!(
        gol(&env.cache, "sr:1", &opts, &src).await,
        Ok("manual".into())
    );
    assert_eq!(src.runs(), 1);
}

async fn invalidate_tag_voids_entries_set_or_loaded_with_tags(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let tagged = EntryOptions::new(MIN).tags(["org:7"]).name("p.tags");
    let other = EntryOptions::new(MIN).tags(["org:8"]).name("p.tags");
    c.set("t:1", &"set".to_owned(), &tagged).await.unwrap();
    assert_eq!(gol(c, "t:2", &tagged, &src).await, Ok(v(1, 1)));
    assert_eq!(gol(c, "t:3", &other, &src).await, Ok(v(1, 2)));
    c.invalidate_tag("org:7").await.unwrap();
    assert_eq!(c.peek::<String>("t:1").await.unwrap(), Peek::Missing);
    assert_eq!(c.peek::<String>("t:2").await.unwrap(), Peek::Missing);
    assert_eq!(c.peek::<String>("t:3").await.unwrap(), Peek::Fresh(v(1, 2)));
    assert_eq!(gol(c, "t:1", &tagged, &src).await, Ok(v(1, 3)));
    assert_eq!(gol(c, "t:3", &other, &src).await, Ok(v(1, 2)));
    // The reloaded entry carries the tag again.
    c.invalidate_tag("org:7").await.unwrap();
    assert_eq!(c.peek::<String>("t:1").await.unwrap(), Peek::Missing);
    assert_eq!(src.runs(), 3);
}

// ---------------------------------------------------------------------------------------------
// 7. expire.

async fn expire_with_stale_serves_the_old_value_while_one_refresh_runs(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let opts = EntryOptions::new(MIN).stale(MIN).name("p.expire_stale");
    assert_eq!(gol(c, "x:1", &opts, &src).await, Ok(v(1, 1)));
    let baseline = alive_tasks();
    c.expire("x:1").await.unwrap();
    assert_eq!(c.peek::<String>("x:1").await.unwrap(), Peek::Stale(v(1, 1)));
    src.gate_next();
    assert_eq!(
        guard("a call after expire", gol(c, "x:1", &opts, &src)).await,
        Ok(v(1, 1)),
        "served stale at once"
    );
    guard("the refresh's loader starts", src.entered()).await;
    src.ungate();
    src.open(1);
    settle(baseline).await;
    until_peek(c, "x:1", &v(1, 2)).await;
    assert_eq!(gol(c, "x:1", &opts, &src).await, Ok(v(1, 2)));
    let s = st(c, "p.expire_stale");
    assert_eq!(
        (src.runs(), s.stale_served, s.refreshes, s.misses),
        (2, 1, 1, 1),
        "{s:?}"
    );
}

async fn expire_without_stale_makes_the_next_call_load(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let opts = EntryOptions::new(MIN).name("p.expire");
    assert_eq!(gol(c, "xn:1", &opts, &src).await, Ok(v(1, 1)));
    c.expire("xn:1").await.unwrap();
    assert_eq!(gol(c, "xn:1", &opts, &src).await, Ok(v(1, 2)));
    assert_eq!(gol(c, "xn:1", &opts, &src).await, Ok(v(1, 2)));
    let s = st(c, "p.expire");
    assert_eq!((src.runs(), s.misses, s.stale_served), (2, 2, 0), "{s:?}");
    // Expiring a key that holds nothing is fine.
    c.expire("xn:none").await.unwrap();
}

async fn expire_serves_the_old_value_only_within_the_grace_window(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let opts = EntryOptions::new(MIN)
        .stale(Duration::from_millis(300))
        .name("p.expire_window");
    assert_eq!(gol(c, "xw:1", &opts, &src).await, Ok(v(1, 1)));
    c.expire("xw:1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gol(c, "xw:1", &opts, &src).await,
        Ok(v(1, 2)),
        "the window ended"
    );
    let s = st(c, "p.expire_window");
    assert_eq!((src.runs(), s.stale_served, s.misses), (2, 0, 2), "{s:?}");
}

/// `peek` after `expire`: `Stale` only while the entry's grace window lasts (as the doc of
/// `Peek::Stale` says), `Missing` for an entry without one (the next call loads).
async fn peek_after_expire_is_stale_only_within_the_grace_window(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let plain = EntryOptions::new(MIN).name("p.peek_expire");
    assert_eq!(gol(c, "pe:1", &plain, &src).await, Ok(v(1, 1)));
    c.expire("pe:1").await.unwrap();
    assert_eq!(
        c.peek::<String>("pe:1").await.unwrap(),
        Peek::Missing,
        "no grace window: nothing a call would serve"
    );
    let short = EntryOptions::new(MIN)
        .stale(Duration::from_millis(300))
        .name("p.peek_expire");
    assert_eq!(gol(c, "pe:2", &short, &src).await, Ok(v(1, 2)));
    c.expire("pe:2").await.unwrap();
    assert_eq!(
        c.peek::<String>("pe:2").await.unwrap(),
        Peek::Stale(v(1, 2))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.peek::<String>("pe:2").await.unwrap(),
        Peek::Missing,
        "the grace window ended"
    );
}

/// An entry past its freshness is an ordinary miss for a reader without a grace window: it
/// loads and overwrites it, and counts no decode error (the bytes are fine, only old).
async fn a_stale_entry_is_a_miss_not_a_decode_error(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let graced = EntryOptions::new(MIN).stale(MIN).name("p.stale_not_decode");
    let plain = EntryOptions::new(MIN).name("p.stale_not_decode");
    assert_eq!(gol(c, "sd:1", &graced, &src).await, Ok(v(1, 1)));
    c.expire("sd:1").await.unwrap();
    assert_eq!(gol(c, "sd:1", &plain, &src).await, Ok(v(1, 2)), "loads");
    let s = st(c, "p.stale_not_decode");
    assert_eq!((s.misses, s.loads, s.decode_errors), (2, 2, 0), "{s:?}");
}

async fn expire_during_a_load_keeps_that_load_from_storing(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let opts = EntryOptions::new(MIN).stale(MIN).name("p.expire_race");
    src.gate_next();
    let call = spawn_gol(c, "xr:1", &opts, &src);
    guard("the loader starts", src.entered()).await;
    c.expire("xr:1").await.unwrap();
    src.ungate();
    src.open(1);
    assert_eq!(guard("the load", call).await.unwrap(), Ok(v(1, 1)));
    assert_eq!(c.peek::<String>("xr:1").await.unwrap(), Peek::Missing);
    assert_eq!(gol(c, "xr:1", &opts, &src).await, Ok(v(1, 2)));
    assert_eq!(src.runs(), 2);
}

// ---------------------------------------------------------------------------------------------
// 8. stale / early_refresh / soft_timeout through EntryOptions.

async fn stale_serves_many_calls_with_one_background_refresh(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let opts = EntryOptions::new(Duration::from_millis(200))
        .stale(MIN)
        .name("p.stale");
    assert_eq!(gol(c, "st:1", &opts, &src).await, Ok(v(1, 1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = alive_tasks();
    src.gate_next();
    let barrier = Arc::new(Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, opts, src, barrier) = (c.clone(), opts.clone(), src.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                gol(&c, "st:1", &opts, &src).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(guard("a stale call", t).await.unwrap(), Ok(v(1, 1)));
    }
    guard("the refresh's loader starts", src.entered()).await;
    let s = st(c, "p.stale");
    assert_eq!(
        (src.runs(), src.finished(), s.stale_served, s.refreshes),
        (2, 1, 16, 1),
        "{s:?}"
    );
    src.ungate();
    src.open(1);
    settle(baseline).await;
    until_peek(c, "st:1", &v(1, 2)).await;
    assert_eq!(src.runs(), 2);
    assert_eq!(st(c, "p.stale").misses, 1);
}

async fn early_refresh_refreshes_a_hit_near_expiry_once(env: TestEnv) {
    let src = Source::with_delay(Duration::from_millis(100));
    let c = &env.cache;
    let opts = EntryOptions::new(Duration::from_secs(1))
        .early_refresh(10.0)
        .name("p.xfetch");
    assert_eq!(gol(c, "xf:1", &opts, &src).await, Ok(v(1, 1)));
    let baseline = alive_tasks();
    src.gate_next();
    let mut hits = 0;
    while st(c, "p.xfetch").early_refreshes == 0 {
        assert!(hits < 200, "no early refresh in 200 hits");
        assert_eq!(gol(c, "xf:1", &opts, &src).await, Ok(v(1, 1)));
        hits += 1;
    }
    guard("the early refresh's loader starts", src.entered()).await;
    src.ungate();
    src.open(1);
    settle(baseline).await;
    let s = st(c, "p.xfetch");
    assert_eq!(
        (s.misses, s.hits, s.early_refreshes, s.refreshes, src.runs()),
        (1, hits, 1, 1, 2),
        "{s:?}"
    );
    assert_eq!(gol(c, "xf:1", &opts, &src).await, Ok(v(1, 2)));
}

async fn soft_timeout_returns_the_stale_value_when_the_loader_is_slower(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let opts = EntryOptions::new(Duration::from_millis(200))
        .stale(MIN)
        .soft_timeout(Duration::from_millis(50))
        .name("p.soft");
    assert_eq!(gol(c, "so:1", &opts, &src).await, Ok(v(1, 1)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = alive_tasks();
    src.gate_next();
    assert_eq!(
        guard("a call with a soft timeout", gol(c, "so:1", &opts, &src)).await,
        Ok(v(1, 1))
    );
    assert_eq!(src.finished(), 1, "returned while the refresh was blocked");
    let s = st(c, "p.soft");
    assert_eq!(
        (s.soft_timeouts, s.stale_served, s.refreshes),
        (1, 1, 1),
        "{s:?}"
    );
    guard("the refresh's loader starts", src.entered()).await;
    src.ungate();
    src.open(1);
    settle(baseline).await;
    until_peek(c, "so:1", &v(1, 2)).await;
    assert_eq!(src.runs(), 2);
}

// ---------------------------------------------------------------------------------------------
// 10. Invalid options and reserved keys.

async fn invalid_options_run_the_loader_every_time_and_store_nothing(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let bad = EntryOptions::new(Duration::ZERO).name("p.bad");
    assert!(matches!(bad.validate(), Err(Error::Config(_))));
    for run in 1..=3 {
        assert_eq!(gol(c, "bad:1", &bad, &src).await, Ok(v(1, run)));
    }
    assert_eq!(c.peek::<String>("bad:1").await.unwrap(), Peek::Missing);
    assert_eq!(gol_opt(c, "bad:2", &bad, &src, false).await, Ok(None));
    assert_eq!(c.peek::<String>("bad:2").await.unwrap(), Peek::Missing);
    assert!(matches!(
        c.set("bad:1", &"x".to_owned(), &bad).await,
        Err(Error::Config(_))
    ));
    assert_eq!(c.peek::<String>("bad:1").await.unwrap(), Peek::Missing);
    assert_eq!(src.runs(), 4);
    // A valid key with valid options still caches.
    let good = EntryOptions::new(MIN);
    assert_eq!(gol(c, "bad:1", &good, &src).await, Ok(v(1, 5)));
    assert_eq!(gol(c, "bad:1", &good, &src).await, Ok(v(1, 5)));
}

async fn reserved_keys_are_config_errors(env: TestEnv) {
    let src = Source::new();
    let c = &env.cache;
    let opts = EntryOptions::new(MIN).name("p.reserved");
    assert!(matches!(
        c.set("!tag:x", &"x".to_owned(), &opts).await,
        Err(Error::Config(_))
    ));
    assert!(matches!(c.expire("!tag:x").await, Err(Error::Config(_))));
    assert!(matches!(
        c.peek::<String>("!tag:x").await,
        Err(Error::Config(_))
    ));
    // get_or_load runs the loader, without the cache.
    assert_eq!(gol(c, "!tag:x", &opts, &src).await, Ok(v(1, 1)));
    assert_eq!(gol(c, "!tag:x", &opts, &src).await, Ok(v(1, 2)));
    if let Some(raw) = env.raw().await {
        assert!(!raw.exists(&c.full_key("!tag:x")).await, "nothing stored");
    }
}

backend_tests!(
    miss_loads_once_then_hits_under_the_options_name,
    err_is_returned_unchanged_and_never_cached,
    concurrent_callers_of_a_cold_key_run_the_loader_once,
    optional_none_is_cached_as_a_negative_entry,
    optional_none_with_zero_negative_ttl_is_not_cached,
    cached_attribute_and_get_or_load_share_entries,
    invalidate_during_a_load_returns_the_value_without_storing_it,
    peek_reports_missing_fresh_not_found_stale_and_never_loads,
    set_value_is_returned_by_get_or_load_without_loading,
    set_during_a_load_is_not_overwritten_by_it,
    invalidate_tag_voids_entries_set_or_loaded_with_tags,
    expire_with_stale_serves_the_old_value_while_one_refresh_runs,
    expire_without_stale_makes_the_next_call_load,
    expire_serves_the_old_value_only_within_the_grace_window,
    expire_during_a_load_keeps_that_load_from_storing,
    stale_serves_many_calls_with_one_background_refresh,
    early_refresh_refreshes_a_hit_near_expiry_once,
    soft_timeout_returns_the_stale_value_when_the_loader_is_slower,
    invalid_options_run_the_loader_every_time_and_store_nothing,
    reserved_keys_are_config_errors,
    peek_after_expire_is_stale_only_within_the_grace_window,
    a_stale_entry_is_a_miss_not_a_decode_error,
);

// ---------------------------------------------------------------------------------------------
// 9. The near cache (`local_ttl`) on one Redis server.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_ttl_hits_near_and_another_handles_set_and_invalidate_evict_it() {
    let server = RedisServer::start();
    let a = redis_cache(&server.url()).await;
    let b = redis_cache(&server.url()).await;
    let src = Source::new();
    let opts = EntryOptions::new(Duration::from_secs(300))
        .local_ttl(MIN)
        .name("p.near");
    assert_eq!(gol(&a, "nr:1", &opts, &src).await, Ok(v(1, 1)));
    pushes_settled(&a, &server.raw().await).await;
    assert_eq!(until_near(&a, "nr:1", &opts, &src).await, v(1, 1));
    let hits = st(&a, "p.near").local_hits;
    for _ in 0..10 {
        assert_eq!(gol(&a, "nr:1", &opts, &src).await, Ok(v(1, 1)));
    }
    assert_eq!(st(&a, "p.near").local_hits, hits + 10);
    assert_eq!(src.runs(), 1);

    // Another handle's set evicts the near copy.
    b.set("nr:1", &"from b".to_owned(), &opts).await.unwrap();
    eventually("a sees b's set", BOUND, || async {
        gol(&a, "nr:1", &opts, &src).await.unwrap() == "from b"
    })
    .await;
    assert_eq!(src.runs(), 1);

    // Another handle's invalidate evicts it: a loads again.
    assert_eq!(until_near(&a, "nr:1", &opts, &src).await, "from b");
    b.invalidate("nr:1").await.unwrap();
    eventually("a loads after b's invalidate", BOUND, || async {
        gol(&a, "nr:1", &opts, &src).await.unwrap() != "from b"
    })
    .await;
    assert_eq!(src.runs(), 2);
    assert_eq!(gol(&a, "nr:1", &opts, &src).await, Ok(v(1, 2)));
    assert!(
        st(&a, "p.near").local_evictions >= 2,
        "{:?}",
        st(&a, "p.near")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_ttl_with_stale_serves_the_near_copy_stale_while_one_refresh_runs() {
    let server = RedisServer::start();
    let a = redis_cache(&server.url()).await;
    let src = Source::new();
    let opts = EntryOptions::new(Duration::from_millis(500))
        .local_ttl(Duration::from_millis(500))
        .stale(MIN)
        .name("p.near_stale");
    assert_eq!(gol(&a, "ns:1", &opts, &src).await, Ok(v(1, 1)));
    pushes_settled(&a, &server.raw().await).await;
    assert_eq!(until_near(&a, "ns:1", &opts, &src).await, v(1, 1));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let baseline = alive_tasks();
    src.gate_next();
    for _ in 0..8 {
        assert_eq!(
            guard("a stale call", gol(&a, "ns:1", &opts, &src)).await,
            Ok(v(1, 1))
        );
    }
    guard("the refresh's loader starts", src.entered()).await;
    let s = st(&a, "p.near_stale");
    assert_eq!(
        (src.runs(), s.stale_served, s.refreshes),
        (2, 8, 1),
        "{s:?}"
    );
    src.ungate();
    src.open(1);
    settle(baseline).await;
    eventually("the refreshed value is served", BOUND, || async {
        gol(&a, "ns:1", &opts, &src).await.unwrap() == v(1, 2)
    })
    .await;
    assert_eq!(src.runs(), 2);
}

// ---------------------------------------------------------------------------------------------
// 11. Redis unreachable.

async fn cache_behind(proxy: &Proxy) -> Cache {
    Cache::builder()
        .redis(proxy.url())
        .namespace(TEST_NAMESPACE)
        .command_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .require_connection()
        .build()
        .await
        .expect("cache")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_unreachable_get_or_load_returns_the_loaders_result() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let c = cache_behind(&proxy).await;
    let src = Source::new();
    let opts = EntryOptions::new(MIN).name("p.down");
    assert_eq!(gol(&c, "d:1", &opts, &src).await, Ok(v(1, 1)));
    proxy.cut();
    for run in 2..=4 {
        assert_eq!(
            guard("a call with Redis down", gol(&c, "d:2", &opts, &src)).await,
            Ok(v(1, run))
        );
    }
    assert_eq!(
        guard(
            "optional with Redis down",
            gol_opt(&c, "d:3", &opts, &src, false)
        )
        .await,
        Ok(None)
    );
    src.fail_next();
    assert_eq!(
        guard(
            "a failing loader with Redis down",
            gol(&c, "d:1", &opts, &src)
        )
        .await,
        Err("db down (run 6)".to_owned())
    );
    assert!(st(&c, "p.down").backend_errors + st(&c, "p.down").backend_skipped > 0);
    assert!(
        c.peek::<String>("d:1").await.is_err(),
        "peek returns the failure"
    );
    proxy.heal();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_unreachable_stale_near_copy_is_served_until_its_grace_window_ends() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let c = cache_behind(&proxy).await;
    let src = Source::new();
    let ttl = Duration::from_secs(1);
    let grace = Duration::from_secs(3);
    let opts = EntryOptions::new(ttl)
        .local_ttl(ttl)
        .stale(grace)
        .name("p.failsafe");
    let loaded = Instant::now();
    assert_eq!(gol(&c, "fs:1", &opts, &src).await, Ok(v(1, 1)));
    pushes_settled(&c, &server.raw().await).await;
    assert_eq!(until_near(&c, "fs:1", &opts, &src).await, v(1, 1));
    assert!(loaded.elapsed() < ttl, "the near copy came in time");
    proxy.cut();
    src.fail_next();
    tokio::time::sleep(
        (loaded + ttl + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(
        guard(
            "a stale call, Redis down, loader failing",
            gol(&c, "fs:1", &opts, &src)
        )
        .await,
        Ok(v(1, 1)),
        "fail-safe: the near copy in its grace window"
    );
    let s = st(&c, "p.failsafe");
    assert!(s.stale_served >= 1, "{s:?}");
    assert!(loaded.elapsed() < ttl + grace, "still in the grace window");
    // After the grace window: the loader's error.
    tokio::time::sleep(
        (loaded + ttl + grace + Duration::from_millis(500))
            .saturating_duration_since(Instant::now()),
    )
    .await;
    assert!(
        matches!(
            guard("a call past the grace window", gol(&c, "fs:1", &opts, &src)).await,
            Err(e) if e.starts_with("db down")
        ),
        "past the grace window the loader's error is returned"
    );
    proxy.heal();
}

// ---------------------------------------------------------------------------------------------
// The core subset on a Redis Cluster.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn core_programmatic_api_on_a_cluster() {
    let cluster = RedisCluster::start();
    let handle = |ns: String| {
        let urls = cluster.urls();
        async move {
            Cache::builder()
                .redis_cluster(urls)
                .namespace(ns)
                .require_connection()
                .build()
                .await
                .expect("cache on the cluster")
        }
    };
    type Scenario = fn(TestEnv) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let scenarios: [(&str, Scenario); 11] = [
        ("miss_hit", |e| {
            Box::pin(miss_loads_once_then_hits_under_the_options_name(e))
        }),
        ("err", |e| {
            Box::pin(err_is_returned_unchanged_and_never_cached(e))
        }),
        ("stampede", |e| {
            Box::pin(concurrent_callers_of_a_cold_key_run_the_loader_once(e))
        }),
        ("negative", |e| {
            Box::pin(optional_none_is_cached_as_a_negative_entry(e))
        }),
        ("interop", |e| {
            Box::pin(cached_attribute_and_get_or_load_share_entries(e))
        }),
        ("invalidate", |e| {
            Box::pin(invalidate_during_a_load_returns_the_value_without_storing_it(e))
        }),
        ("peek", |e| {
            Box::pin(peek_reports_missing_fresh_not_found_stale_and_never_loads(
                e,
            ))
        }),
        ("set", |e| {
            Box::pin(set_value_is_returned_by_get_or_load_without_loading(e))
        }),
        ("set_race", |e| {
            Box::pin(set_during_a_load_is_not_overwritten_by_it(e))
        }),
        ("tags", |e| {
            Box::pin(invalidate_tag_voids_entries_set_or_loaded_with_tags(e))
        }),
        ("expire", |e| {
            Box::pin(expire_with_stale_serves_the_old_value_while_one_refresh_runs(e))
        }),
    ];
    for (name, scenario) in scenarios {
        println!("cluster: {name}");
        let env = TestEnv {
            cache: handle(format!("pc_{name}")).await,
            server: None,
            backend: Backend::Redis,
        };
        guard(name, scenario(env)).await;
    }
    let a = handle("pc_lease".into()).await;
    let b = handle("pc_lease".into()).await;
    two_handles_share_one_load(&a, &b).await;
}
