//! Redis is an optimisation, never a dependency of correctness: with the server killed, paused
//! (SIGSTOP) or holding garbage, calls still return the loader's value (never a cache error) and
//! the failure is counted; after a restart, caching resumes.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{Backend, TestEnv, eventually, guard};

#[cached(key = "o:{id}", ttl = 300, name = "outage.get", cache = cache)]
async fn get(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("db-{id}")
}

#[cached(key = "ores:{id}", ttl = 300, cache = cache)]
async fn get_res(cache: &Cache, id: u64, loads: &AtomicUsize) -> Result<Option<String>, String> {
    loads.fetch_add(1, SeqCst);
    Ok(Some(format!("row-{id}")))
}

#[invalidates("o:{id}", cache = cache)]
async fn write(cache: &Cache, id: u64) -> Result<u64, String> {
    Ok(id)
}

async fn env_with_short_timeouts() -> TestEnv {
    TestEnv::with(Backend::Redis, |b| {
        b.command_timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(200))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_calls_fall_back_to_loader() {
    let mut env = env_with_short_timeouts().await;
    let loads = AtomicUsize::new(0);
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");
    assert_eq!(loads.load(SeqCst), 1);

    env.server().kill();
    for id in [1, 2, 2, 3] {
        let value = guard("a call with Redis down", get(&env.cache, id, &loads)).await;
        assert_eq!(
            value,
            format!("db-{id}"),
            "Redis down: the call returns the loader's value"
        );
    }
    assert_eq!(
        guard("Result fn with Redis down", get_res(&env.cache, 1, &loads)).await,
        Ok(Some("row-1".into()))
    );
    assert_eq!(
        guard("invalidation with Redis down", write(&env.cache, 1)).await,
        Ok(1),
        "the write's result is returned"
    );
    let stats = env.cache.stats().function("outage.get");
    assert!(
        stats.backend_errors > 0,
        "backend failures are counted: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_paused_calls_fall_back_to_loader() {
    let mut env = env_with_short_timeouts().await;
    let loads = AtomicUsize::new(0);
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");

    env.server().stop();
    for id in [1, 2, 3] {
        let value = guard(
            "a call with Redis paused (SIGSTOP)",
            get(&env.cache, id, &loads),
        )
        .await;
        assert_eq!(
            value,
            format!("db-{id}"),
            "Redis hung: the command times out and the loader answers"
        );
    }
    assert!(env.cache.stats().function("outage.get").backend_errors > 0);
    env.server().cont();

    // SIGCONT: the same Cache recovers by itself (breaker probe), and hits resume.
    let cache = env.cache.clone();
    let loads_ref = &loads;
    eventually("hits resume after SIGCONT", Duration::from_secs(15), || {
        let cache = cache.clone();
        async move {
            let before = cache.stats().function("outage.get").hits;
            assert_eq!(get(&cache, 1, loads_ref).await, "db-1");
            cache.stats().function("outage.get").hits > before
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_caching_resumes() {
    let mut env = env_with_short_timeouts().await;
    let loads = AtomicUsize::new(0);
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");

    env.server().kill();
    assert_eq!(
        guard("a call with Redis down", get(&env.cache, 1, &loads)).await,
        "db-1"
    );
    env.server().restart();
    let raw = env.raw().await.unwrap();

    // The restarted server is empty. Once the cache has reconnected (circuit breaker probe), a
    // call stores the value and the next one is a hit.
    let key = env.cache.full_key("o:5");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = guard("a call after the restart", get(&env.cache, 5, &loads)).await;
        assert_eq!(value, "db-5");
        if raw.exists(&key).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "caching did not resume within 30 s after Redis restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = loads.load(SeqCst);
    assert_eq!(get(&env.cache, 5, &loads).await, "db-5");
    assert_eq!(
        loads.load(SeqCst),
        before,
        "after recovery, calls are hits again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_bytes_in_redis_go_to_loader() {
    let env = TestEnv::new(Backend::Redis).await;
    let raw = env.raw().await.unwrap();
    let loads = AtomicUsize::new(0);
    for (id, garbage) in [
        (1u64, &b"\xff\x00garbage"[..]),
        (2, b""),
        (3, b"{\"not\":\"an envelope\"}"),
        (4, b"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f"),
    ] {
        raw.set(&env.cache.full_key(&format!("o:{id}")), garbage)
            .await;
        let value = guard("a call over garbage bytes", get(&env.cache, id, &loads)).await;
        assert_eq!(
            value,
            format!("db-{id}"),
            "undecodable bytes are a miss, never an error"
        );
    }
    assert_eq!(loads.load(SeqCst), 4);
    for id in 1..=4u64 {
        assert_eq!(get(&env.cache, id, &loads).await, format!("db-{id}"));
    }
    assert_eq!(
        loads.load(SeqCst),
        4,
        "the garbage was overwritten by the loaded value"
    );
    let stats = env.cache.stats().function("outage.get");
    assert!(
        stats.decode_errors + stats.backend_errors > 0,
        "the bad entries are counted: {stats:?}"
    );
}
