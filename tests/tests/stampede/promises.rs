//! The core's two promises in their hardest scenarios: read-your-writes through the single
//! flight, coalescing while Redis is down, a loader slower than `lock_ms`, and in-process
//! waiters behind a stalled leader.
//!
//! Synchronisation is by gates (`Notify`, `Semaphore`) and by waiting for counters, never by
//! sleeping; a serial run of any of these scenarios fails them.

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{Db, RedisServer, TestEnv, backend_tests, eventually, guard};

#[cached(key = "dir:{id}", ttl = 300, negative_ttl = 0, cache = cache)]
async fn find(cache: &Cache, id: u64, db: &Db) -> Option<String> {
    db.load_row(id).await
}

#[cached(key = "dirbig:{id}", ttl = 300, cache = cache)]
async fn find_big(cache: &Cache, id: u64, db: &Db) -> Option<String> {
    db.load_row(id).await.map(|s| s.repeat(1000))
}

#[invalidates("dir:{id}", "dirbig:{id}", cache = cache)]
async fn create(cache: &Cache, id: u64, db: &Db, name: &str) {
    db.insert(id, name);
}

fn misses(cache: &Cache, name: &str) -> u64 {
    cache.stats().function(name).misses
}

const FIND: &str = "stampede::promises::find";
const FIND_BIG: &str = "stampede::promises::find_big";

/// Which reader a read-after-write scenario uses.
#[derive(Clone, Copy)]
enum Reader {
    /// `find` (`negative_ttl = 0`: a `None` is not stored).
    Find,
    /// `find_big` (values over `max_value_bytes`: not stored).
    FindBig,
}

impl Reader {
    async fn call(self, cache: &Cache, id: u64, db: &Db) -> Option<String> {
        match self {
            Reader::Find => find(cache, id, db).await,
            Reader::FindBig => find_big(cache, id, db).await,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Reader::Find => FIND,
            Reader::FindBig => FIND_BIG,
        }
    }
}

/// The first read of row `id` (holding `before`) reads the row and stalls; `create(id,
/// written)` returns; a read that starts after it must get the written row, not the stalled
/// load's (unstored) result. Returns what that second read got.
async fn read_after_write(
    env: &TestEnv,
    reader: Reader,
    id: u64,
    before: Option<&str>,
    written: &str,
) -> Option<String> {
    let db = Arc::new(Db::gated());
    if let Some(row) = before {
        db.insert(id, row);
    }
    let cache = env.cache.clone();
    let spawn_read = || {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move { reader.call(&cache, id, &db).await })
    };
    let first = spawn_read();
    guard("first load read its row", db.first_load_read()).await;
    create(&cache, id, &db, written).await;
    let second = spawn_read();
    eventually("the second call missed", Duration::from_secs(10), || {
        let c = cache.clone();
        async move { misses(&c, reader.name()) == 2 }
    })
    .await;
    db.open();
    let got = guard("second call", second).await.unwrap();
    // The first call started before the write: either answer is allowed for it.
    let _ = guard("first call", first).await.unwrap();
    got
}

/// Item 1: `find(7)` reads "no row" and stalls; `create(7)` returns; a `find(7)` that starts
/// after it must not be handed the stalled load's `None` (it is not stored: negative_ttl = 0).
async fn read_after_invalidation_does_not_join_older_flight(env: TestEnv) {
    assert_eq!(
        read_after_write(&env, Reader::Find, 7, None, "ada")
            .await
            .as_deref(),
        Some("ada"),
        "a read that started after the invalidation returned got the older result"
    );
}

/// The same, for a value that is not stored because it is larger than `max_value_bytes`.
async fn read_after_invalidation_does_not_get_older_oversized_result(env: TestEnv) {
    assert_eq!(
        read_after_write(&env, Reader::FindBig, 8, Some("old"), "new").await,
        Some("new".repeat(1000)),
        "a read that started after the invalidation returned got the older (unstored) result"
    );
}

#[cached(key = "slow:{id}", ttl = 300, lock_ms = 100, cache = cache)]
async fn slow(cache: &Cache, id: u64, db: &Db) -> String {
    db.count_load();
    db.wait_for_gate().await;
    // Slower than the lease (lock_ms = 100): the loader must keep its lease alive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("v{id}")
}

/// Item 3: `lock_ms = 100`, a 300 ms loader, 8 concurrent callers: one load serves them all.
async fn loader_slower_than_lock_ms_still_loads_once(env: TestEnv) {
    let db = Arc::new(Db::gated());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, db) = (env.cache.clone(), db.clone());
            tokio::spawn(async move { slow(&cache, 1, &db).await })
        })
        .collect();
    let cache = env.cache.clone();
    eventually("all 8 callers missed", Duration::from_secs(10), || {
        let c = cache.clone();
        async move { misses(&c, "stampede::promises::slow") == 8 }
    })
    .await;
    db.open();
    for t in tasks {
        assert_eq!(guard("caller", t).await.unwrap(), "v1");
    }
    let s = env.cache.stats().function("stampede::promises::slow");
    assert_eq!((db.loads(), s.misses, s.hits), (1, 8, 0), "{s:?}");
    assert_eq!(s.lock_timeouts, 0, "{s:?}");
}

/// Item 3 across processes: two caches (two processes) on one Redis, 4 callers each; the
/// second cache's callers wait on the first's lease, which outlives `lock_ms` because it is
/// extended, so nobody loads a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loader_slower_than_lock_ms_loads_once_across_caches() {
    let server = RedisServer::start();
    let mk = || async {
        Cache::builder()
            .redis(server.url())
            .namespace("xslow")
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (mk().await, mk().await);
    let db = Arc::new(Db::gated());
    let mut tasks = Vec::new();
    for cache in [&a, &b] {
        for _ in 0..4 {
            let (cache, db) = (cache.clone(), db.clone());
            tasks.push(tokio::spawn(async move { slow(&cache, 2, &db).await }));
        }
    }
    let (ca, cb) = (a.clone(), b.clone());
    eventually("all callers missed", Duration::from_secs(10), || {
        let (ca, cb) = (ca.clone(), cb.clone());
        async move {
            misses(&ca, "stampede::promises::slow") + misses(&cb, "stampede::promises::slow") == 8
        }
    })
    .await;
    db.open();
    for t in tasks {
        assert_eq!(guard("caller", t).await.unwrap(), "v2");
    }
    let (sa, sb) = (
        a.stats().function("stampede::promises::slow"),
        b.stats().function("stampede::promises::slow"),
    );
    assert_eq!(db.loads(), 1, "{sa:?} {sb:?}");
    assert_eq!(sa.lock_timeouts + sb.lock_timeouts, 0, "{sa:?} {sb:?}");
}

#[cached(key = "outage:{id}", ttl = 300, cache = cache)]
async fn during_outage(cache: &Cache, id: u64, db: &Db) -> Option<String> {
    db.load_row(id).await.or_else(|| Some(format!("row{id}")))
}

/// Item 2: with Redis unreachable (circuit open), 50 concurrent callers of one key run the
/// loader once.
/// A Redis cache whose server is gone: built with its circuit open (for an hour).
async fn unreachable_redis_cache() -> Cache {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    Cache::builder()
        .redis(url)
        .circuit_breaker(1, Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_still_coalesces_callers() {
    let cache = unreachable_redis_cache().await;
    assert_eq!(cache.breaker_state(), cache_runtime::BreakerState::Open);
    let db = Arc::new(Db::gated());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, db) = (cache.clone(), db.clone());
            tokio::spawn(async move { during_outage(&cache, 3, &db).await })
        })
        .collect();
    guard("first load started", db.first_load_read()).await;
    let c = cache.clone();
    eventually(
        "all 50 callers skipped the backend",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move {
                c.stats()
                    .function("stampede::promises::during_outage")
                    .backend_skipped
                    == 50
            }
        },
    )
    .await;
    db.open();
    for t in tasks {
        assert_eq!(guard("caller", t).await.unwrap().as_deref(), Some("row3"));
    }
    let s = cache.stats().function("stampede::promises::during_outage");
    assert_eq!((db.loads(), s.misses, s.hits), (1, 50, 0), "{s:?}");
}

/// Item 2, read-your-writes while Redis is down: a write in this process detaches the flight,
/// so a read after it does not get the result of the load that started before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_read_after_local_invalidation_is_fresh() {
    let cache = unreachable_redis_cache().await;
    let db = Arc::new(Db::gated());
    let first = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { find(&cache, 9, &db).await }
    });
    guard("first load read its row", db.first_load_read()).await;
    create(&cache, 9, &db, "ada").await;
    let second = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { find(&cache, 9, &db).await }
    });
    let c = cache.clone();
    eventually("the second call missed", Duration::from_secs(10), || {
        let c = c.clone();
        async move { misses(&c, FIND) == 2 }
    })
    .await;
    db.open();
    assert_eq!(
        guard("second", second).await.unwrap().as_deref(),
        Some("ada")
    );
    let _ = guard("first", first).await.unwrap();
}

#[cached(key = "stall:{id}", ttl = 300, lock_ms = 50, cache = cache)]
async fn stalled(cache: &Cache, id: u64, db: &Db) -> String {
    let n = db.count_load();
    if db.hold_if_first(n).await {
        return "from the stalled leader".into();
    }
    format!("own load {id}")
}

/// Item 9: the in-process leader's loader is stalled (not dropped); the calls waiting for it
/// give up after a bound derived from `lock_ms` and load by themselves.
async fn waiters_behind_a_stalled_leader_load_themselves(env: TestEnv) {
    let db = Arc::new(Db::gated());
    let leader = tokio::spawn({
        let (cache, db) = (env.cache.clone(), db.clone());
        async move { stalled(&cache, 4, &db).await }
    });
    guard("leader loading", db.first_load_read()).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (cache, db) = (env.cache.clone(), db.clone());
            tokio::spawn(async move { stalled(&cache, 4, &db).await })
        })
        .collect();
    for w in waiters {
        assert_eq!(guard("waiter", w).await.unwrap(), "own load 4");
    }
    let s = env.cache.stats().function("stampede::promises::stalled");
    assert_eq!(s.lock_timeouts, 3, "{s:?}");
    assert!(!leader.is_finished(), "the leader is still stalled");
    db.open();
    assert_eq!(
        guard("leader", leader).await.unwrap(),
        "from the stalled leader"
    );
}

backend_tests!(
    with |b| b.max_value_bytes(1000);
    read_after_invalidation_does_not_join_older_flight,
    read_after_invalidation_does_not_get_older_oversized_result,
    loader_slower_than_lock_ms_still_loads_once,
    waiters_behind_a_stalled_leader_load_themselves,
);
