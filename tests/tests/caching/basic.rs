//! Cache-aside basics: a hit after the first call, one loader run per key, values round-trip,
//! keys are `<namespace>:<rendered template>`, and stored TTLs land in `[ttl, ttl + jitter]`.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::{TEST_NAMESPACE, TestEnv, backend_tests};
use serde::{Deserialize, Serialize};

#[cached(key = "thing:{id}", ttl = 300, cache = cache)]
async fn get_thing(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("thing-{id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

#[cached(key = "user:{id}", ttl = 300, cache = cache)]
async fn get_user(cache: &Cache, id: u64, loads: &AtomicUsize) -> Result<User, String> {
    loads.fetch_add(1, SeqCst);
    Ok(User {
        id,
        name: format!("user \"{id}\" é🙂"),
        tags: vec!["a:b".into(), String::new()],
        score: Some(1.5),
    })
}

#[cached(key = "short:{id}", ttl = 1, cache = cache)]
async fn get_short_lived(cache: &Cache, id: u64, loads: &AtomicUsize) -> u64 {
    loads.fetch_add(1, SeqCst);
    id * 10
}

#[cached(key = "named:{who}", ttl = 300, cache = cache)]
async fn greet(cache: &Cache, who: &str, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("hello {who}")
}

async fn hit_after_first_call_loader_runs_once(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    let cache = &env.cache;
    assert_eq!(get_thing(cache, 7, &loads).await, "thing-7");
    assert_eq!(loads.load(SeqCst), 1, "first call runs the loader");
    for _ in 0..10 {
        assert_eq!(get_thing(cache, 7, &loads).await, "thing-7");
    }
    assert_eq!(
        loads.load(SeqCst),
        1,
        "later calls are hits: the loader ran once"
    );

    // Another key is another entry.
    assert_eq!(get_thing(cache, 8, &loads).await, "thing-8");
    assert_eq!(loads.load(SeqCst), 2);
    assert_eq!(get_thing(cache, 8, &loads).await, "thing-8");
    assert_eq!(get_thing(cache, 7, &loads).await, "thing-7");
    assert_eq!(loads.load(SeqCst), 2);

    if let Some(raw) = env.raw().await {
        assert!(
            raw.exists(&cache.full_key("thing:7")).await,
            "the entry is stored under namespace:key"
        );
        assert!(raw.exists("itest:thing:8").await);
    }
}

async fn struct_values_round_trip(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    let first = get_user(&env.cache, 1, &loads).await.unwrap();
    let second = get_user(&env.cache, 1, &loads).await.unwrap();
    assert_eq!(
        first, second,
        "the cached value deserializes to what the loader returned"
    );
    assert_eq!(second.name, "user \"1\" é🙂");
    assert_eq!(loads.load(SeqCst), 1);
}

async fn str_argument_keys_are_encoded(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(greet(&env.cache, "a:b c", &loads).await, "hello a:b c");
    assert_eq!(greet(&env.cache, "a:b c", &loads).await, "hello a:b c");
    assert_eq!(greet(&env.cache, "a", &loads).await, "hello a");
    assert_eq!(loads.load(SeqCst), 2);
    if let Some(raw) = env.raw().await {
        // Parts are percent-encoded outside [A-Za-z0-9_.].
        assert!(
            raw.exists("itest:named:a%3Ab%20c").await,
            "encoded key present in Redis"
        );
    }
}

async fn entry_expires_after_ttl(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(get_short_lived(&env.cache, 3, &loads).await, 30);
    assert_eq!(get_short_lived(&env.cache, 3, &loads).await, 30);
    assert_eq!(loads.load(SeqCst), 1);
    // ttl = 1 s, no jitter: well after that the entry is gone and the loader runs again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(get_short_lived(&env.cache, 3, &loads).await, 30);
    assert_eq!(loads.load(SeqCst), 2, "an expired entry is loaded again");
}

backend_tests!(
    hit_after_first_call_loader_runs_once,
    struct_values_round_trip,
    str_argument_keys_are_encoded,
    entry_expires_after_ttl,
);

#[tokio::test]
async fn full_key_is_namespace_colon_rendered() {
    let env = TestEnv::new(cache_tests::Backend::Memory).await;
    assert_eq!(env.cache.namespace(), TEST_NAMESPACE);
    assert_eq!(env.cache.full_key("user:1"), "itest:user:1");
    let default = Cache::builder().memory().build().await.unwrap();
    assert_eq!(default.namespace(), "cache", "default namespace");
    assert_eq!(default.full_key("x"), "cache:x");
}

// ---- TTL and jitter, read back from Redis with PTTL ----

#[cached(key = "plain_ttl:{id}", ttl = 100, cache = cache)]
async fn with_ttl(cache: &Cache, id: u64) -> u64 {
    id
}

#[cached(key = "jitter:{id}", ttl = 100, jitter = 50, cache = cache)]
async fn with_jitter(cache: &Cache, id: u64) -> u64 {
    id
}

/// Slack for the time between the write and the `PTTL` read (a generous bound, not a speed
/// assertion: it only keeps the lower bound from being exact).
const SLACK_MS: i64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_lands_in_range() {
    let env = TestEnv::new(cache_tests::Backend::Redis).await;
    let raw = env.raw().await.unwrap();
    for id in 0..20 {
        with_ttl(&env.cache, id).await;
        let pttl = raw
            .pttl(&env.cache.full_key(&format!("plain_ttl:{id}")))
            .await;
        assert!(
            (100_000 - SLACK_MS..=100_000).contains(&pttl),
            "ttl = 100 s without jitter: PTTL {pttl} ms not in [{}, 100000]",
            100_000 - SLACK_MS
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_with_jitter_lands_in_range_and_spreads() {
    let env = TestEnv::new(cache_tests::Backend::Redis).await;
    let raw = env.raw().await.unwrap();
    let mut pttls = Vec::new();
    for id in 0..200 {
        assert_eq!(with_jitter(&env.cache, id).await, id);
        let pttl = raw.pttl(&env.cache.full_key(&format!("jitter:{id}"))).await;
        assert!(
            (100_000 - SLACK_MS..=150_000).contains(&pttl),
            "ttl = 100 s, jitter = 50 s: PTTL {pttl} ms of key {id} not in [ttl, ttl + jitter]"
        );
        pttls.push(pttl);
    }
    let min = *pttls.iter().min().unwrap();
    let max = *pttls.iter().max().unwrap();
    // Uniform over [100 s, 150 s]: with 200 samples, values in the lowest and the highest fifth
    // are certain for all practical purposes (miss probability 0.8^200 each).
    assert!(
        min < 110_000,
        "jitter not spread: smallest PTTL {min} ms (expected some < 110000)"
    );
    assert!(
        max > 140_000,
        "jitter not spread: largest PTTL {max} ms (expected some > 140000)"
    );
    let distinct: std::collections::BTreeSet<_> = pttls.iter().map(|p| p / 1000).collect();
    assert!(
        distinct.len() > 10,
        "jitter not spread: only {} distinct PTTL seconds",
        distinct.len()
    );
}
