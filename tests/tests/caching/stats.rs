//! `Cache::stats()` counters move as a user would expect: hits, misses, loads, negative hits,
//! load errors and invalidations, per function name.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cache_runtime::{Cache, FnStats, cached, invalidates};
use cache_tests::{TestEnv, backend_tests};

#[cached(key = "s:{id}", ttl = 60, name = "stats.get", cache = cache)]
async fn s_get(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("s-{id}")
}

#[cached(key = "sn:{id}", ttl = 60, name = "stats.find", cache = cache)]
async fn s_find(cache: &Cache, id: u64) -> Option<String> {
    None
}

#[cached(key = "sf:{id}", ttl = 60, name = "stats.fail", cache = cache)]
async fn s_fail(cache: &Cache, id: u64) -> Result<String, String> {
    Err(format!("no {id}"))
}

#[cached(key = "sd:{id}", ttl = 60, cache = cache)]
async fn s_default_name(cache: &Cache, id: u64) -> u64 {
    id
}

#[invalidates("s:{id}", cache = cache)]
async fn s_write(cache: &Cache, id: u64, ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err("write failed".into())
    }
}

async fn stats_counters_move(env: TestEnv) {
    let cache = &env.cache;
    let loads = AtomicUsize::new(0);
    assert_eq!(
        cache.stats().function("stats.get"),
        FnStats::default(),
        "nothing ran yet"
    );

    // miss + load, then two hits
    for _ in 0..3 {
        assert_eq!(s_get(cache, 1, &loads).await, "s-1");
    }
    let get = cache.stats().function("stats.get");
    assert_eq!(
        (get.misses, get.loads, get.hits),
        (1, 1, 2),
        "stats.get after 1 miss + 2 hits: {get:?}"
    );
    assert_eq!(
        (get.negative_hits, get.load_errors, get.backend_errors),
        (0, 0, 0),
        "{get:?}"
    );

    // negative: miss + load, then two negative hits
    for _ in 0..3 {
        assert_eq!(s_find(cache, 1).await, None);
    }
    let find = cache.stats().function("stats.find");
    assert_eq!((find.misses, find.loads), (1, 1), "{find:?}");
    assert_eq!(
        find.negative_hits, 2,
        "a cached None counts as a negative hit: {find:?}"
    );
    assert_eq!(
        find.hits, 0,
        "negative hits are counted apart from hits: {find:?}"
    );

    // errors: each call misses and its load fails
    for _ in 0..2 {
        assert_eq!(s_fail(cache, 1).await, Err("no 1".to_owned()));
    }
    let fail = cache.stats().function("stats.fail");
    assert_eq!(fail.load_errors, 2, "{fail:?}");
    assert_eq!(fail.misses, 2, "{fail:?}");
    assert_eq!(fail.hits, 0, "{fail:?}");

    // invalidation counted under the invalidating function's name (default: module path + fn)
    let write_name = concat!(module_path!(), "::s_write");
    assert_eq!(
        s_write(cache, 1, false).await,
        Err("write failed".to_owned())
    );
    assert_eq!(
        cache.stats().function(write_name).invalidations,
        0,
        "no invalidation after Err"
    );
    assert_eq!(s_write(cache, 1, true).await, Ok(()));
    assert_eq!(
        cache.stats().function(write_name).invalidations,
        1,
        "one key invalidated after Ok"
    );
    assert_eq!(s_get(cache, 1, &loads).await, "s-1");
    let get = cache.stats().function("stats.get");
    assert_eq!(
        (get.misses, get.loads, get.hits),
        (2, 2, 2),
        "the read after the invalidation missed: {get:?}"
    );

    // the default name is `module::path::fn_name`
    s_default_name(cache, 1).await;
    s_default_name(cache, 1).await;
    let default = cache
        .stats()
        .function(concat!(module_path!(), "::s_default_name"));
    assert_eq!(
        (default.misses, default.loads, default.hits),
        (1, 1, 1),
        "{default:?}"
    );

    assert_eq!(cache.stats().function("no.such.fn"), FnStats::default());
    let names: Vec<String> = cache
        .stats()
        .iter()
        .map(|(name, _)| name.to_owned())
        .collect();
    for expected in ["stats.get", "stats.find", "stats.fail"] {
        assert!(
            names.iter().any(|n| n == expected),
            "Stats::iter lists {expected}: {names:?}"
        );
    }
}

async fn stats_are_per_cache(env: TestEnv) {
    let other = Cache::builder().memory().build().await.unwrap();
    let loads = AtomicUsize::new(0);
    s_get(&env.cache, 1, &loads).await;
    s_get(&env.cache, 1, &loads).await;
    assert_eq!(
        other.stats().function("stats.get"),
        FnStats::default(),
        "another cache's stats are separate"
    );
    s_get(&other, 1, &loads).await;
    assert_eq!(other.stats().function("stats.get").misses, 1);
    assert_eq!(env.cache.stats().function("stats.get").hits, 1);
}

backend_tests!(stats_counters_move, stats_are_per_cache);
