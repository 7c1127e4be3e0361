//! An invalidation that cannot reach Redis is not silently lost: the write still returns its
//! result, the keys wait in the retry queue (`invalidations_pending`), and once Redis answers again
//! the stale entry is deleted (checked with a raw `GET`) and counted in `invalidations`. When the
//! retry window ends (or the queue is full) the keys are counted in `invalidations_failed`.
//!
//! Two ways to make Redis unreachable while keeping its data (a restarted server is empty, which
//! would hide a lost invalidation):
//! * `SIGSTOP`/`SIGCONT`: the `UNLINK` times out. Note that the timed-out command may still sit
//!   in the paused server's socket buffer and run after `SIGCONT`, so this scenario checks the
//!   queue's bookkeeping and the end state, not which attempt deleted the key.
//! * A TCP proxy between the cache and the server that cuts every connection and drops new ones
//!   ([`cache_tests::Proxy::cut`]): the `UNLINK` never reaches the server, the stale key is still
//!   there during the outage (raw `GET` on the server), so only the retry queue can delete it.

use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{Backend, Db, Proxy, TEST_NAMESPACE, TestEnv, eventually, guard};

const READ: &str = "iq.read";
const WRITE: &str = "iq.write";
const WRITE2: &str = "iq.write2";
const BOUND: Duration = Duration::from_secs(30);

#[cached(key = "item:{id}", ttl = 300, name = "iq.read", cache = cache)]
async fn read(cache: &Cache, id: u64, db: &Db) -> String {
    db.count_load();
    format!("{}#{id}", db.value())
}

#[invalidates("item:{id}", cache = cache, name = "iq.write")]
async fn write(cache: &Cache, id: u64, db: &Db, value: &str) -> Result<u64, String> {
    db.set_value(value);
    Ok(id)
}

/// Invalidates two keys per call.
#[invalidates("item:{id}", "items:all", cache = cache, name = "iq.write2")]
async fn write2(cache: &Cache, id: u64, db: &Db, value: &str) -> Result<(), String> {
    db.set_value(value);
    Ok(())
}

fn short_timeouts(b: cache_runtime::CacheBuilder) -> cache_runtime::CacheBuilder {
    b.command_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .circuit_breaker(3, Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidation_during_sigstop_is_queued_and_delivered_after_sigcont() {
    let mut env = TestEnv::with(Backend::Redis, short_timeouts).await;
    let raw = env.raw().await.expect("redis env");
    let db = Db::with_value("v1");
    let key = env.cache.full_key("item:1");

    assert_eq!(read(&env.cache, 1, &db).await, "v1#1");
    assert_eq!(read(&env.cache, 1, &db).await, "v1#1");
    assert!(raw.get(&key).await.is_some(), "v1 is cached");

    env.server().stop();
    let result = guard("a write with Redis paused", write(&env.cache, 1, &db, "v2")).await;
    assert_eq!(
        result,
        Ok(1),
        "the write returns its own result although the UNLINK timed out"
    );
    let queued = env.cache.stats().function(WRITE);
    assert_eq!(
        queued.invalidations_pending, 1,
        "the key waits in the retry queue: {queued:?}"
    );
    assert_eq!(queued.invalidations, 0, "{queued:?}");
    assert!(
        queued.backend_errors >= 1,
        "the failed UNLINK is counted: {queued:?}"
    );
    // While Redis hangs, reads are answered by the loader (the new value, not the stale one).
    assert_eq!(
        guard("a read with Redis paused", read(&env.cache, 1, &db)).await,
        "v2#1"
    );

    env.server().cont();
    eventually(
        "the queued invalidation is delivered after SIGCONT",
        BOUND,
        || async {
            let s = env.cache.stats().function(WRITE);
            s.invalidations_pending == 0 && s.invalidations == 1
        },
    )
    .await;
    assert_eq!(raw.get(&key).await, None, "the stale entry is gone");
    let done = env.cache.stats().function(WRITE);
    assert_eq!(done.invalidations_failed, 0, "{done:?}");

    // The next read reloads the new value and caches it again.
    eventually("caching resumes after SIGCONT", BOUND, || async {
        assert_eq!(read(&env.cache, 1, &db).await, "v2#1");
        raw.get(&key).await.is_some()
    })
    .await;
    let loads = db.loads();
    assert_eq!(read(&env.cache, 1, &db).await, "v2#1");
    assert_eq!(db.loads(), loads, "a hit on the new value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidation_while_unreachable_is_delivered_only_by_the_retry_queue() {
    let server = cache_tests::RedisServer::start();
    let raw = server.raw().await;
    let proxy = Proxy::start(server.port()).await;
    let cache = short_timeouts(Cache::builder())
        .redis(proxy.url())
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("build through the proxy");
    let db = Db::with_value("v1");
    let key = cache.full_key("item:1");
    let all = cache.full_key("items:all");

    assert_eq!(read(&cache, 1, &db).await, "v1#1");
    let stale = raw.get(&key).await.expect("v1 is cached");
    raw.set(&all, b"another entry").await;

    proxy.cut();
    let result = guard(
        "a write with Redis unreachable",
        write2(&cache, 1, &db, "v2"),
    )
    .await;
    assert_eq!(result, Ok(()), "the write returns its own result");
    let queued = cache.stats().function(WRITE2);
    assert_eq!(
        queued.invalidations_pending, 2,
        "both keys wait in the retry queue: {queued:?}"
    );
    assert_eq!(queued.invalidations, 0, "{queued:?}");
    // Give the retry worker time to fail a few times against the dead proxy.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        raw.get(&key).await.as_deref(),
        Some(&stale[..]),
        "during the outage the stale entry is still in Redis (the UNLINK never reached it)"
    );
    let waiting = cache.stats().function(WRITE2);
    assert_eq!(
        waiting.invalidations_pending, 2,
        "still queued during the outage: {waiting:?}"
    );

    proxy.heal();
    eventually(
        "the queued invalidation is delivered once Redis is reachable",
        BOUND,
        || async {
            let s = cache.stats().function(WRITE2);
            s.invalidations_pending == 0 && s.invalidations == 2
        },
    )
    .await;
    assert_eq!(
        raw.get(&key).await,
        None,
        "the stale entry was deleted by the retry"
    );
    assert_eq!(
        raw.get(&all).await,
        None,
        "every key of the call was deleted"
    );
    assert_eq!(cache.stats().function(WRITE2).invalidations_failed, 0);
    eventually("caching resumes with the new value", BOUND, || async {
        assert_eq!(read(&cache, 1, &db).await, "v2#1");
        raw.get(&key).await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidation_given_up_after_the_retry_window_counts_as_failed() {
    let mut env = TestEnv::with(Backend::Redis, |b| {
        short_timeouts(b).invalidation_retry(Duration::from_millis(200), 10)
    })
    .await;
    let db = Db::with_value("v1");
    assert_eq!(read(&env.cache, 1, &db).await, "v1#1");

    env.server().kill();
    assert_eq!(
        guard("write with Redis down", write(&env.cache, 1, &db, "v2")).await,
        Ok(1)
    );
    assert_eq!(
        guard("write2 with Redis down", write2(&env.cache, 2, &db, "v3")).await,
        Ok(())
    );
    let queued = (
        env.cache.stats().function(WRITE),
        env.cache.stats().function(WRITE2),
    );
    assert_eq!(
        (
            queued.0.invalidations_pending,
            queued.1.invalidations_pending
        ),
        (1, 2),
        "queued while Redis is down: {queued:?}"
    );

    eventually(
        "the keys are given up after the retry window",
        BOUND,
        || async {
            let (a, b) = (
                env.cache.stats().function(WRITE),
                env.cache.stats().function(WRITE2),
            );
            a.invalidations_pending == 0 && b.invalidations_pending == 0
        },
    )
    .await;
    let (a, b) = (
        env.cache.stats().function(WRITE),
        env.cache.stats().function(WRITE2),
    );
    assert_eq!((a.invalidations_failed, a.invalidations), (1, 0), "{a:?}");
    assert_eq!((b.invalidations_failed, b.invalidations), (2, 0), "{b:?}");
    assert_eq!(env.cache.stats().function(READ).load_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidation_queue_full_counts_failed_and_keeps_the_rest() {
    // Room for one queued call (plus the one the worker is retrying).
    let mut env = TestEnv::with(Backend::Redis, |b| {
        short_timeouts(b).invalidation_retry(Duration::from_secs(60), 1)
    })
    .await;
    let db = Db::with_value("v1");
    assert_eq!(read(&env.cache, 1, &db).await, "v1#1");

    env.server().kill();
    for id in 1..=4u64 {
        assert_eq!(
            guard("write with Redis down", write(&env.cache, id, &db, "v2")).await,
            Ok(id)
        );
    }
    let s = env.cache.stats().function(WRITE);
    assert_eq!(
        s.invalidations_pending + s.invalidations_failed,
        4,
        "every key is accounted: {s:?}"
    );
    assert!(
        s.invalidations_failed >= 2,
        "a full queue drops (and counts) the overflow: {s:?}"
    );
    assert!(
        (1..=2).contains(&s.invalidations_pending),
        "the queue bound holds: {s:?}"
    );
    let pending = s.invalidations_pending;

    // Redis back (empty, so only the counters can show the delivery).
    env.server().restart();
    eventually(
        "the queued keys are delivered after the restart",
        BOUND,
        || async { env.cache.stats().function(WRITE).invalidations_pending == 0 },
    )
    .await;
    let done = env.cache.stats().function(WRITE);
    assert_eq!(
        done.invalidations, pending,
        "the queued keys were delivered: {done:?}"
    );
    assert_eq!(
        done.invalidations_failed, s.invalidations_failed,
        "{done:?}"
    );
}

/// The retry queue is bounded by distinct keys, not by calls: repeated invalidations of one hot
/// key during an outage take one slot, so the invalidation of another key still fits, and after
/// recovery this process reads the new value of both (not its own pre-write entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_invalidations_of_a_pending_key_leave_room_for_other_keys() {
    const MAX_QUEUED: usize = 10;
    const REPEATS: usize = MAX_QUEUED + 2;
    let server = cache_tests::RedisServer::start();
    let raw = server.raw().await;
    let proxy = Proxy::start(server.port()).await;
    let cache = short_timeouts(Cache::builder())
        .invalidation_retry(Duration::from_secs(60), MAX_QUEUED)
        .redis(proxy.url())
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("build through the proxy");
    let db = Db::with_value("v1");
    let (hot, other) = (cache.full_key("item:1"), cache.full_key("item:2"));
    assert_eq!(read(&cache, 1, &db).await, "v1#1");
    assert_eq!(read(&cache, 2, &db).await, "v1#2");
    assert!(raw.get(&hot).await.is_some() && raw.get(&other).await.is_some());

    // The UNLINKs never reach the server: only the retry queue can delete the stale entries.
    proxy.cut();
    for _ in 0..REPEATS {
        assert_eq!(
            guard("a hot write", write(&cache, 1, &db, "v2")).await,
            Ok(1)
        );
    }
    assert_eq!(
        guard("another write", write(&cache, 2, &db, "v2")).await,
        Ok(2)
    );
    let during = cache.stats().function(WRITE);

    proxy.heal();
    eventually("the queue is delivered after recovery", BOUND, || async {
        cache.stats().function(WRITE).invalidations_pending == 0
    })
    .await;
    let after = cache.stats().function(WRITE);
    let other_stale = raw.get(&other).await.is_some();
    let hot_stale = raw.get(&hot).await.is_some();
    let reads = (
        guard("read the hot key", read(&cache, 1, &db)).await,
        guard("read the other key", read(&cache, 2, &db)).await,
    );
    assert_eq!(
        (
            (during.invalidations_pending, during.invalidations_failed),
            (after.invalidations, after.invalidations_failed),
            (hot_stale, other_stale),
            reads,
        ),
        (
            (2, 0),
            (2, 0),
            (false, false),
            ("v2#1".to_owned(), "v2#2".to_owned())
        ),
        "((pending, failed) during the outage, (delivered, failed) after, (hot, other) still \
         in Redis after recovery, reads after recovery); during: {during:?}, after: {after:?}"
    );
}
