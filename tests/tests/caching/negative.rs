//! Negative caching: `None` / `Ok(None)` are stored as negative entries with `negative_ttl`
//! (default: `ttl`), `negative_ttl = 0` stores nothing, and `Err` is never cached.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use cache_runtime::{Cache, cached};
use cache_tests::{Backend, TestEnv, backend_tests};

#[cached(key = "opt:{id}", ttl = 1000, negative_ttl = 10, cache = cache)]
async fn find_opt(cache: &Cache, id: u64, loads: &AtomicUsize) -> Option<String> {
    loads.fetch_add(1, SeqCst);
    None
}

#[cached(key = "resopt:{id}", ttl = 1000, negative_ttl = 10, cache = cache)]
async fn find_res_opt(
    cache: &Cache,
    id: u64,
    loads: &AtomicUsize,
) -> Result<Option<String>, String> {
    loads.fetch_add(1, SeqCst);
    Ok(None)
}

#[cached(key = "negdefault:{id}", ttl = 100, cache = cache)]
async fn find_default_negative_ttl(cache: &Cache, id: u64, loads: &AtomicUsize) -> Option<String> {
    loads.fetch_add(1, SeqCst);
    None
}

#[cached(key = "noneg:{id}", ttl = 1000, negative_ttl = 0, cache = cache)]
async fn find_no_negative(cache: &Cache, id: u64, loads: &AtomicUsize) -> Option<String> {
    loads.fetch_add(1, SeqCst);
    None
}

#[cached(key = "noneg_res:{id}", ttl = 1000, negative_ttl = 0, cache = cache)]
async fn find_no_negative_res(
    cache: &Cache,
    id: u64,
    loads: &AtomicUsize,
) -> Result<Option<String>, String> {
    loads.fetch_add(1, SeqCst);
    Ok(None)
}

#[cached(key = "some_noneg:{id}", ttl = 1000, negative_ttl = 0, cache = cache)]
async fn find_some_no_negative(cache: &Cache, id: u64, loads: &AtomicUsize) -> Option<String> {
    loads.fetch_add(1, SeqCst);
    Some(format!("found-{id}"))
}

#[cached(key = "fallible:{id}", ttl = 1000, cache = cache)]
async fn fallible(
    cache: &Cache,
    id: u64,
    fail: &AtomicBool,
    loads: &AtomicUsize,
) -> Result<Option<String>, String> {
    loads.fetch_add(1, SeqCst);
    if fail.load(SeqCst) {
        Err(format!("db down for {id}"))
    } else {
        Ok(Some(format!("row-{id}")))
    }
}

#[cached(key = "fallible_plain:{id}", ttl = 1000, cache = cache)]
async fn fallible_plain(
    cache: &Cache,
    id: u64,
    fail: &AtomicBool,
    loads: &AtomicUsize,
) -> Result<u64, String> {
    loads.fetch_add(1, SeqCst);
    if fail.load(SeqCst) {
        Err("timeout".to_owned())
    } else {
        Ok(id + 1)
    }
}

/// Asserts the key's Redis TTL is within (0, max_ms] and above `min_ms`.
async fn assert_pttl(env: &TestEnv, rendered: &str, min_ms: i64, max_ms: i64) {
    if let Some(raw) = env.raw().await {
        let pttl = raw.pttl(&env.cache.full_key(rendered)).await;
        assert!(
            pttl > min_ms && pttl <= max_ms,
            "PTTL of negative entry {rendered}: {pttl} ms, expected in ({min_ms}, {max_ms}]"
        );
    }
}

async fn assert_absent(env: &TestEnv, rendered: &str, why: &str) {
    if let Some(raw) = env.raw().await {
        let value = raw.get(&env.cache.full_key(rendered)).await;
        assert!(value.is_none(), "{why}: key {rendered} holds {value:?}");
    }
}

async fn none_is_cached_with_negative_ttl(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(find_opt(&env.cache, 1, &loads).await, None);
    assert_eq!(find_opt(&env.cache, 1, &loads).await, None);
    assert_eq!(find_opt(&env.cache, 1, &loads).await, None);
    assert_eq!(
        loads.load(SeqCst),
        1,
        "a cached None is a negative hit: the loader ran once"
    );
    // negative_ttl = 10 s, ttl = 1000 s: the stored TTL is the negative one.
    assert_pttl(&env, "opt:1", 5_000, 10_000).await;
}

async fn ok_none_is_cached_with_negative_ttl(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(find_res_opt(&env.cache, 1, &loads).await, Ok(None));
    assert_eq!(find_res_opt(&env.cache, 1, &loads).await, Ok(None));
    assert_eq!(
        loads.load(SeqCst),
        1,
        "a cached Ok(None) is a negative hit: the loader ran once"
    );
    assert_pttl(&env, "resopt:1", 5_000, 10_000).await;
}

async fn negative_ttl_defaults_to_ttl(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(find_default_negative_ttl(&env.cache, 1, &loads).await, None);
    assert_eq!(find_default_negative_ttl(&env.cache, 1, &loads).await, None);
    assert_eq!(loads.load(SeqCst), 1);
    assert_pttl(&env, "negdefault:1", 90_000, 100_000).await;
}

async fn negative_ttl_zero_does_not_cache_none(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(find_no_negative(&env.cache, 1, &loads).await, None);
    assert_absent(&env, "noneg:1", "negative_ttl = 0 stores no negative entry").await;
    assert_eq!(find_no_negative(&env.cache, 1, &loads).await, None);
    assert_eq!(
        loads.load(SeqCst),
        2,
        "negative_ttl = 0: the loader runs on every call"
    );

    let loads = AtomicUsize::new(0);
    assert_eq!(find_no_negative_res(&env.cache, 1, &loads).await, Ok(None));
    assert_eq!(find_no_negative_res(&env.cache, 1, &loads).await, Ok(None));
    assert_eq!(
        loads.load(SeqCst),
        2,
        "negative_ttl = 0: Ok(None) is not cached either"
    );
    assert_absent(
        &env,
        "noneg_res:1",
        "negative_ttl = 0 stores no negative entry",
    )
    .await;

    // ...while Some is still cached.
    let loads = AtomicUsize::new(0);
    assert_eq!(
        find_some_no_negative(&env.cache, 1, &loads)
            .await
            .as_deref(),
        Some("found-1")
    );
    assert_eq!(
        find_some_no_negative(&env.cache, 1, &loads)
            .await
            .as_deref(),
        Some("found-1")
    );
    assert_eq!(loads.load(SeqCst), 1, "negative_ttl = 0 still caches Some");
}

async fn err_is_not_cached(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    let fail = AtomicBool::new(true);
    assert_eq!(
        fallible(&env.cache, 5, &fail, &loads).await,
        Err("db down for 5".to_owned()),
        "Err returned unchanged"
    );
    assert_absent(&env, "fallible:5", "an Err is not cached").await;
    assert_eq!(
        fallible(&env.cache, 5, &fail, &loads).await,
        Err("db down for 5".to_owned())
    );
    assert_eq!(
        loads.load(SeqCst),
        2,
        "an Err is not cached: the loader runs again"
    );

    fail.store(false, SeqCst);
    assert_eq!(
        fallible(&env.cache, 5, &fail, &loads).await,
        Ok(Some("row-5".to_owned()))
    );
    assert_eq!(
        loads.load(SeqCst),
        3,
        "after the error, the next call loads"
    );
    fail.store(true, SeqCst);
    assert_eq!(
        fallible(&env.cache, 5, &fail, &loads).await,
        Ok(Some("row-5".to_owned())),
        "the Ok value is now cached"
    );
    assert_eq!(loads.load(SeqCst), 3);

    let loads = AtomicUsize::new(0);
    let fail = AtomicBool::new(true);
    assert_eq!(
        fallible_plain(&env.cache, 1, &fail, &loads).await,
        Err("timeout".to_owned())
    );
    assert_eq!(
        fallible_plain(&env.cache, 1, &fail, &loads).await,
        Err("timeout".to_owned())
    );
    assert_eq!(loads.load(SeqCst), 2, "Result<T, E>: Err not cached");
    assert_absent(&env, "fallible_plain:1", "an Err is not cached").await;
    fail.store(false, SeqCst);
    assert_eq!(fallible_plain(&env.cache, 1, &fail, &loads).await, Ok(2));
    assert_eq!(fallible_plain(&env.cache, 1, &fail, &loads).await, Ok(2));
    assert_eq!(loads.load(SeqCst), 3);
}

#[cached(key = "negjit:{id}", ttl = 60, jitter = 30, negative_ttl = 1, cache = cache)]
async fn find_jittered(cache: &Cache, id: u64, loads: &AtomicUsize) -> Option<String> {
    loads.fetch_add(1, SeqCst);
    None
}

/// Jitter spreads value TTLs only: `negative_ttl = 1, jitter = 30` keeps "not found" for
/// exactly 1 s, not up to 31 s.
async fn jitter_does_not_stretch_negative_ttl(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    for id in 0..20 {
        assert_eq!(find_jittered(&env.cache, id, &loads).await, None);
    }
    if let Some(raw) = env.raw().await {
        for id in 0..20 {
            let pttl = raw.pttl(&env.cache.full_key(&format!("negjit:{id}"))).await;
            assert!(
                (1..=1000).contains(&pttl),
                "negative entry {id} has PTTL {pttl} ms"
            );
        }
    }
    // The TTL itself is the subject here: let 1 s pass, then every entry must be gone.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for id in 0..20 {
        assert_eq!(find_jittered(&env.cache, id, &loads).await, None);
    }
    assert_eq!(
        loads.load(SeqCst),
        40,
        "every negative entry expired after negative_ttl"
    );
}

backend_tests!(
    jitter_does_not_stretch_negative_ttl,
    none_is_cached_with_negative_ttl,
    ok_none_is_cached_with_negative_ttl,
    negative_ttl_defaults_to_ttl,
    negative_ttl_zero_does_not_cache_none,
    err_is_not_cached,
);

#[tokio::test]
async fn negative_entry_is_a_stored_marker_not_a_missing_key() {
    let env = TestEnv::new(Backend::Redis).await;
    let raw = env.raw().await.unwrap();
    let loads = AtomicUsize::new(0);
    assert_eq!(find_opt(&env.cache, 9, &loads).await, None);
    assert!(
        raw.exists(&env.cache.full_key("opt:9")).await,
        "None is stored as a real negative entry"
    );
}
