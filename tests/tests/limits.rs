//! Limits against hostile or accidental input: a value larger than `max_value_bytes` is returned
//! but never stored (counted as `oversized`), and a huge key argument renders to a short key (the
//! part is hashed) while different long arguments still get different entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::limits::MAX_PART_LEN;
use cache_runtime::{Cache, cached};
use cache_tests::source::Source;
use cache_tests::{Backend, Raw, TEST_NAMESPACE, TestEnv, backend_tests, eventually, guard};

const MAX_VALUE: usize = 1024;

#[cached(key = "blob:{n}", ttl = 300, name = "limits.blob", cache = cache)]
async fn blob(cache: &Cache, n: usize, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    "x".repeat(n)
}

#[cached(key = "by-name:{name}", ttl = 300, name = "limits.by_name", cache = cache)]
async fn by_name(cache: &Cache, name: &str, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    // A value that tells which argument it was loaded for.
    format!("len={} tail={}", name.len(), &name[name.len() - 8..])
}

async fn dbsize(raw: &Raw) -> i64 {
    raw.cmd(&redis::cmd("DBSIZE")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn value_over_max_value_bytes_is_returned_but_not_cached() {
    let env = TestEnv::with(Backend::Redis, |b| b.max_value_bytes(MAX_VALUE)).await;
    let raw = env.raw().await.expect("redis env");
    let loads = AtomicUsize::new(0);
    let big = 4 * MAX_VALUE;

    let value = guard("an oversized value", blob(&env.cache, big, &loads)).await;
    assert_eq!(value.len(), big, "the caller gets the whole value");
    let s = env.cache.stats().function("limits.blob");
    assert_eq!((s.oversized, s.loads, s.misses), (1, 1, 1), "{s:?}");
    assert_eq!(s.backend_errors, 0, "{s:?}");
    let key = env.cache.full_key(&format!("blob:{big}"));
    assert_eq!(
        raw.get(&key).await,
        None,
        "nothing stored under the key (neither the value nor a leftover lease)"
    );
    assert_eq!(dbsize(&raw).await, 0);

    // The next call loads again (and is oversized again).
    assert_eq!(blob(&env.cache, big, &loads).await.len(), big);
    let s = env.cache.stats().function("limits.blob");
    assert_eq!((s.oversized, s.loads, s.hits), (2, 2, 0), "{s:?}");
    assert_eq!(loads.load(SeqCst), 2);

    // A small value of the same function is cached as usual.
    assert_eq!(blob(&env.cache, 10, &loads).await, "x".repeat(10));
    assert_eq!(blob(&env.cache, 10, &loads).await, "x".repeat(10));
    let s = env.cache.stats().function("limits.blob");
    assert_eq!((s.oversized, s.loads, s.hits), (2, 3, 1), "{s:?}");
    assert!(raw.get(&env.cache.full_key("blob:10")).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_key_argument_renders_to_a_short_distinct_key() {
    let env = TestEnv::new(Backend::Redis).await;
    let raw = env.raw().await.expect("redis env");
    let loads = AtomicUsize::new(0);
    // Two 10 KB arguments that differ only in their last character.
    let a = format!("{}A", "k".repeat(10 * 1024));
    let b = format!("{}B", "k".repeat(10 * 1024));

    assert_eq!(
        by_name(&env.cache, &a, &loads).await,
        format!("len={} tail=kkkkkkkA", a.len())
    );
    assert_eq!(dbsize(&raw).await, 1, "one entry");
    let key: String = raw.cmd(&redis::cmd("RANDOMKEY")).await;
    assert!(
        key.len() < 200,
        "the stored key is short ({} bytes): {key}",
        key.len()
    );
    let prefix = format!("{TEST_NAMESPACE}:by-name:");
    assert!(
        key.starts_with(&prefix),
        "the key keeps its namespace and template: {key}"
    );
    let part = &key[prefix.len()..];
    assert!(
        part.starts_with("~h")
            && part.len() == 34
            && part[2..].bytes().all(|c| c.is_ascii_hexdigit()),
        "the long part is replaced by `~h` + 32 hex digits: {part}"
    );

    assert_eq!(
        by_name(&env.cache, &b, &loads).await,
        format!("len={} tail=kkkkkkkB", b.len())
    );
    assert_eq!(
        dbsize(&raw).await,
        2,
        "a different long argument gets a different entry"
    );
    assert_eq!(loads.load(SeqCst), 2);

    // Hits: each argument gets its own value back.
    for _ in 0..2 {
        assert_eq!(
            by_name(&env.cache, &a, &loads).await,
            format!("len={} tail=kkkkkkkA", a.len())
        );
        assert_eq!(
            by_name(&env.cache, &b, &loads).await,
            format!("len={} tail=kkkkkkkB", b.len())
        );
    }
    assert_eq!(loads.load(SeqCst), 2, "all four repeated calls were hits");
    let s = env.cache.stats().function("limits.by_name");
    assert_eq!((s.hits, s.misses, s.loads), (4, 2, 2), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_part_up_to_the_limit_is_stored_verbatim() {
    let env = TestEnv::new(Backend::Redis).await;
    let raw = env.raw().await.expect("redis env");
    let loads = AtomicUsize::new(0);
    // Exactly MAX_PART_LEN encoded bytes (plain ASCII letters encode as themselves).
    let name = "n".repeat(MAX_PART_LEN);
    assert_eq!(
        by_name(&env.cache, &name, &loads).await,
        format!("len={MAX_PART_LEN} tail=nnnnnnnn")
    );
    assert!(
        raw.get(&env.cache.full_key(&format!("by-name:{name}")))
            .await
            .is_some(),
        "a part of {MAX_PART_LEN} encoded bytes is kept as is"
    );

    // Non-ASCII text: 60 × 'é' is 120 UTF-8 bytes but 360 percent-encoded bytes, so it is hashed.
    let accented = "é".repeat(60);
    let value = by_name(&env.cache, &accented, &loads).await;
    assert!(value.starts_with("len=120 "), "{value}");
    assert_eq!(dbsize(&raw).await, 2);
    assert_eq!(by_name(&env.cache, &accented, &loads).await, value, "a hit");
    assert_eq!(loads.load(SeqCst), 2);
}

/// `max_value_bytes` of the boundary tests below.
const LIMIT: usize = 1000;

/// A string of `n` ASCII letters serializes (JSON, the default codec) to `n + 2` bytes.
fn json_len(s: &str) -> usize {
    serde_json::to_vec(s).expect("a string serializes").len()
}

/// The limit is on the serialized value: a value of exactly `max_value_bytes` is cached (one
/// load, then a hit), one byte more is returned but not cached (`oversized`, loaded again).
async fn value_of_exactly_max_value_bytes_is_cached_one_byte_more_is_not(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    let at = LIMIT - 2;
    assert_eq!(json_len(&"x".repeat(at)), LIMIT);

    for _ in 0..2 {
        assert_eq!(blob(&env.cache, at, &loads).await.len(), at);
    }
    let s = env.cache.stats().function("limits.blob");
    assert_eq!(
        (s.loads, s.hits, s.oversized),
        (1, 1, 0),
        "a value of exactly max_value_bytes is cached: {s:?}"
    );

    for _ in 0..2 {
        assert_eq!(blob(&env.cache, at + 1, &loads).await.len(), at + 1);
    }
    let s = env.cache.stats().function("limits.blob");
    assert_eq!(
        (s.loads, s.hits, s.oversized),
        (3, 1, 2),
        "a value of max_value_bytes + 1 is not cached: {s:?}"
    );
    assert_eq!(loads.load(SeqCst), 3);
}

#[cached(key = "stale_blob:{n}", ttl = 1, stale = 30, name = "limits.stale_blob", cache = cache)]
async fn stale_blob(cache: &Cache, n: usize, src: &Arc<Source>) -> String {
    // `db<version>/run<run>`; from the second run on padded to exactly `n` letters.
    let v = src.load_ok().await;
    if src.runs() == 1 {
        return v;
    }
    format!("{v}{}", "x".repeat(n - v.len()))
}

/// The same boundary on the background refresh (stale-while-revalidate): a refreshed value of
/// exactly `max_value_bytes` replaces the stale one.
async fn refreshed_value_of_exactly_max_value_bytes_is_stored(env: TestEnv) {
    let src = Source::new();
    let at = LIMIT - 2;
    assert_eq!(stale_blob(&env.cache, at, &src).await, Source::value(1, 1));
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past ttl = 1, in the grace window
    assert_eq!(
        stale_blob(&env.cache, at, &src).await,
        Source::value(1, 1),
        "stale, and a refresh starts"
    );
    eventually("the refresh's loader ran", Duration::from_secs(5), || {
        let src = src.clone();
        async move { src.finished() == 2 }
    })
    .await;
    eventually(
        "the refreshed value is served",
        Duration::from_secs(5),
        || {
            let (cache, src) = (env.cache.clone(), src.clone());
            async move { stale_blob(&cache, at, &src).await != Source::value(1, 1) }
        },
    )
    .await;
    let fresh = stale_blob(&env.cache, at, &src).await;
    assert_eq!(json_len(&fresh), LIMIT);
    assert!(fresh.starts_with(&Source::value(1, 2)), "{fresh}");
    let s = env.cache.stats().function("limits.stale_blob");
    assert_eq!(
        (s.refreshes, s.loads, s.oversized),
        (1, 2, 0),
        "one refresh, stored: {s:?}"
    );
    assert!(s.hits >= 1, "the refreshed value is a hit: {s:?}");
}

backend_tests!(
    with |b| b.max_value_bytes(super::LIMIT); // the macro puts the closure in a module
    value_of_exactly_max_value_bytes_is_cached_one_byte_more_is_not,
    refreshed_value_of_exactly_max_value_bytes_is_stored,
);
