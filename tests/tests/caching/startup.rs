//! Redis down when the application starts: `build()` still succeeds (circuit open), calls are
//! answered by their loaders, and when `redis-server` comes up later on that port the same
//! `Cache` starts caching without a restart. With `.require_connection()`, `build()` fails fast
//! instead, and its error never shows the password from the URL.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{BreakerState, Cache, Error, cached};
use cache_tests::{RedisServer, guard, reserve_free_port};

const NAME: &str = "startup.get";
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

#[cached(key = "s:{id}", ttl = 300, name = "startup.get", cache = cache)]
async fn get(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("db-{id}")
}

fn builder(url: String) -> cache_runtime::CacheBuilder {
    Cache::builder()
        .redis(url)
        .namespace("startup")
        .command_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .circuit_breaker(3, Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_at_start_then_up_cache_starts_working() {
    // Nothing listens on this port yet.
    let port = reserve_free_port();
    let cache = guard(
        "build() with Redis down",
        builder(format!("redis://127.0.0.1:{port}/")).build(),
    )
    .await
    .unwrap_or_else(|e| panic!("build() must not fail when Redis is down at start-up: {e}"));
    assert_eq!(cache.backend_kind(), "redis");
    assert_eq!(
        cache.breaker_state(),
        BreakerState::Open,
        "an unreachable Redis at start-up opens the circuit"
    );

    let loads = AtomicUsize::new(0);
    for id in 0..20u64 {
        let value = guard("a call with Redis down", get(&cache, id, &loads)).await;
        assert_eq!(
            value,
            format!("db-{id}"),
            "the loader answers while Redis is down"
        );
    }
    assert_eq!(loads.load(SeqCst), 20);
    let down = cache.stats().function(NAME);
    assert_eq!(down.hits, 0, "{down:?}");
    assert!(
        down.backend_skipped > 0,
        "calls skip Redis while the circuit is open: {down:?}"
    );
    assert_eq!(
        down.backend_skipped + down.backend_errors,
        20,
        "each call met one backend fault: {down:?}"
    );

    // Redis comes up on that port: the same Cache starts caching.
    let server = RedisServer::start_on_port(port);
    let raw = server.raw().await;
    let key = cache.full_key("s:42");
    let deadline = tokio::time::Instant::now() + RECOVERY_BOUND;
    loop {
        assert_eq!(
            guard("a call after Redis came up", get(&cache, 42, &loads)).await,
            "db-42"
        );
        if raw.get(&key).await.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was cached within {RECOVERY_BOUND:?} after Redis came up: state {:?}, {:?}",
            cache.breaker_state(),
            cache.stats().function(NAME)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cache.breaker_state(), BreakerState::Closed);
    let before = cache.stats().function(NAME);
    let loads_before = loads.load(SeqCst);
    assert_eq!(get(&cache, 42, &loads).await, "db-42");
    let after = cache.stats().function(NAME);
    assert_eq!(
        after.hits,
        before.hits + 1,
        "the cached value is a hit: {after:?}"
    );
    assert_eq!(
        loads.load(SeqCst),
        loads_before,
        "a hit does not run the loader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn require_connection_fails_fast_when_redis_is_down() {
    const PASSWORD: &str = "s3cret-Startup-pw";
    let port = reserve_free_port();
    for url in [
        format!("redis://127.0.0.1:{port}/"),
        format!("redis://:{PASSWORD}@127.0.0.1:{port}/"),
        format!("redis://appuser:{PASSWORD}@127.0.0.1:{port}/0"),
    ] {
        let b = builder(url).require_connection();
        let builder_debug = format!("{b:?} {b:#?}");
        assert!(
            !builder_debug.contains(PASSWORD),
            "builder Debug leaks the password: {builder_debug}"
        );
        let result = guard("build() with require_connection and Redis down", b.build()).await;
        let err = match result {
            Ok(cache) => panic!("require_connection with Redis down must fail, got {cache:?}"),
            Err(e) => e,
        };
        assert!(matches!(err, Error::Backend(_)), "a backend error: {err:?}");
        let shown = format!("{err} | {err:?} | {err:#?}");
        assert!(
            !shown.contains(PASSWORD),
            "the error leaks the password: {shown}"
        );
        let source = std::error::Error::source(&err)
            .map(|s| format!("{s} {s:?}"))
            .unwrap_or_default();
        assert!(
            !source.contains(PASSWORD),
            "the error source leaks the password: {source}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn require_connection_succeeds_when_redis_is_up() {
    let server = RedisServer::start();
    let cache = guard(
        "build() with require_connection and Redis up",
        builder(server.url()).require_connection().build(),
    )
    .await
    .expect("Redis is up: build() succeeds");
    assert_eq!(cache.breaker_state(), BreakerState::Closed);
    let loads = AtomicUsize::new(0);
    assert_eq!(get(&cache, 1, &loads).await, "db-1");
    assert_eq!(get(&cache, 1, &loads).await, "db-1");
    assert_eq!(loads.load(SeqCst), 1);
}
