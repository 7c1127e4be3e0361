//! Tag memberships under races and bounds: a membership re-registered while a tag invalidation
//! runs survives it, the memory backend's tag-index bound never drops the membership being
//! registered, and the reserved `!tag:` prefix cannot be used to delete a tag's member set.
//!
//! Ordering is forced with [`HoldProxy`], which holds the bytes a cache sends after a chosen
//! command until the test releases them; no sleep decides an interleaving.

use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::source::Source;
use cache_tests::{HoldProxy, RedisServer, TEST_NAMESPACE, eventually, guard};

fn v(version: u64, run: u64) -> String {
    Source::value(version, run)
}

// ---------------------------------------------------------------------------------------------
// A tag membership re-registered during a tag invalidation survives it.
//
// The invalidation's `TAG_REMOVE` removes a member "only if not re-registered meanwhile". A
// re-registration must be visible to it even when its score is not higher than the scanned
// one (another handle with a smaller lock_ms or ttl/stale after a deploy, a clock behind by
// more than the time since the scan, or simply the same millisecond); otherwise the
// invalidation removes the membership of an entry loaded AFTER its UNLINK, and the next
// invalidation of the tag misses that entry.

#[cached(key = "zrow:{id}", ttl = 300, tags = ["zt:{grp}"], cache = cache)]
async fn zrow(cache: &Cache, grp: u64, id: u64, src: &Source) -> String {
    src.load_ok().await
}

/// Interleaving (two cache handles on one Redis, as two processes; A's lease length is
/// 600 s, B's the default 5 s, so A's membership score is the larger one):
/// 1. A loads `zrow:7` (tag `zt:1`, score sA).
/// 2. Write 1; A's `invalidate_tag("zt:1")` ZSCANs (zrow:7, sA) and UNLINKs zrow:7; the
///    proxy holds its conditional ZREM.
/// 3. B reads zrow:7: miss, lease, `ZADD GT` with sB < sA (no change), loads db2, stores.
/// 4. A's ZREM runs: the score is still sA, so zrow:7 leaves the tag.
/// 5. Write 2; `invalidate_tag("zt:1")` returns; B reads zrow:7.
///
/// Expected: db3 (the tag invalidation after write 2 voids the entry), never db2, a value older
/// than write 2, served to a call that started after its invalidation returned. (Every
/// re-registration changes the score, `TAG_ADD`: `score = max(new, old + 1)`, so the
/// conditional ZREM never removes a newer membership.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_membership_registered_during_a_tag_invalidation_survives_it() {
    let server = RedisServer::start();
    let proxy = HoldProxy::start(server.port()).await;
    let a = Cache::builder()
        .redis(proxy.url())
        .namespace(TEST_NAMESPACE)
        .lock_ms(600_000)
        .command_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("cache A");
    let b = Cache::builder()
        .redis(server.url())
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("cache B");
    let raw = server.raw().await;
    let key = a.full_key("zrow:7");
    let tag_key = a.full_key("!tag:zt:1");
    let src = Source::new();

    assert_eq!(zrow(&a, 1, 7, &src).await, v(1, 1));
    assert_eq!(src.write(), 2);
    proxy.hold_after("UNLINK");
    let inval = tokio::spawn({
        let a = a.clone();
        async move { a.invalidate_tag("zt:1").await }
    });
    proxy.reached().await;
    {
        let raw = &raw;
        let key = key.clone();
        eventually("the UNLINK was applied", Duration::from_secs(10), || {
            let key = key.clone();
            async move { !raw.exists(&key).await }
        })
        .await;
    }
    // B starts after the UNLINK: it loads the row as of write 1, and registers in the tag.
    assert_eq!(zrow(&b, 1, 7, &src).await, v(2, 2));
    proxy.release();
    guard("invalidate_tag", inval)
        .await
        .expect("task")
        .expect("tag invalidation");
    let score: Option<f64> = raw.cmd(redis::cmd("ZSCORE").arg(&tag_key).arg(&key)).await;
    println!(
        "after the first invalidation: {key} in {tag_key}: {score:?}; entry present: {}",
        raw.exists(&key).await
    );

    assert_eq!(src.write(), 3);
    guard("invalidate_tag", a.invalidate_tag("zt:1"))
        .await
        .expect("tag invalidation");
    let got = zrow(&b, 1, 7, &src).await;
    assert_eq!(
        got,
        v(3, 3),
        "a read after invalidate_tag(zt:1) returned got a value older than the write before it \
         (the entry's membership, registered after the first invalidation's UNLINK, was removed \
         by that invalidation's conditional ZREM; score now {score:?})"
    );
}

// ---------------------------------------------------------------------------------------------
// Memory backend: at the tag-index bound, the membership being registered is never the one
// dropped, even when it runs out first.
//
// `MemoryBackend::tag_add` inserts the member, then, past `max_members`, drops a member of the
// tag. A member of a short-lived function sharing a tag with long-lived entries is the one
// that expires first the moment it is registered: dropping it would drop the lease its load
// just took, so the fill would fail and every call would load (a stampede served by one load
// per waiter in turn, each voided the same way).

#[cached(key = "long:{id}", ttl = 3600, tags = ["bt:{grp}"], cache = cache)]
async fn long_row(cache: &Cache, grp: u64, id: u64) -> u64 {
    id
}

#[cached(key = "short:{id}", ttl = 5, tags = ["bt:{grp}"], cache = cache)]
async fn short_row(cache: &Cache, grp: u64, id: u64, src: &Source) -> String {
    src.load_ok().await
}

/// Expected: the second `short_row(1, 1)` is a hit (one load): the first load's lease is not
/// deleted by its own tag registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_tag_bound_keeps_the_membership_being_registered() {
    let cache = Cache::builder()
        .memory()
        .memory_max_bytes(100_000) // tag index bound: max(100_000 / 100, 1024) = 1024
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("cache");
    for id in 0..1024 {
        long_row(&cache, 1, id).await;
    }
    let src = Source::new();
    assert_eq!(short_row(&cache, 1, 1, &src).await, v(1, 1));
    let second = short_row(&cache, 1, 1, &src).await;
    assert_eq!(
        (second.as_str(), src.runs()),
        (v(1, 1).as_str(), 1),
        "the entry was not cached: its membership was the tag's oldest and was dropped together \
         with the lease its load had just taken"
    );
}

// ---------------------------------------------------------------------------------------------
// Redis: keys starting with `!tag:` are reserved. An `#[invalidates("!tag:..")]` would render
// the very key of a tag's member set, so the next `invalidate_tag` would find no member and a
// stale entry would survive it. The macros reject such templates
// (`tests/ui/fail/reserved_tag_prefix.rs`); `Cache::invalidate` refuses them.

#[cached(key = "rrow:{id}", ttl = 300, tags = ["rt:{grp}"], cache = cache)]
async fn rrow(cache: &Cache, grp: u64, id: u64, src: &Source) -> String {
    src.load_ok().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserved_tag_prefix_is_rejected_or_harmless() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("cache");
    let src = Source::new();
    assert_eq!(rrow(&cache, 1, 1, &src).await, v(1, 1));
    assert!(
        cache.invalidate("!tag:rt:1").await.is_err(),
        "a rendered key with the reserved prefix is refused"
    );
    assert_eq!(src.write(), 2);
    cache
        .invalidate_tag("rt:1")
        .await
        .expect("tag invalidation");
    assert_eq!(
        rrow(&cache, 1, 1, &src).await,
        v(2, 2),
        "a key with the reserved `!tag:` prefix deleted the tag's member set: the tag \
         invalidation after write 2 missed rrow:1"
    );
}
