//! Edges of the composable core: the longest TTL options accept is stored, the documented
//! least ACL runs `expire` and refreshes, a call without a grace window never answers a near
//! copy past its freshness (filled by a caller with one), and the fail-safe never serves a copy
//! whose invalidation this process could have seen once tracking was back.

use std::time::{Duration, Instant};

use super::{BOUND, gol, st, v};
use cache_runtime::{Cache, EntryOptions, Peek};
use cache_tests::source::Source;
use cache_tests::{
    Backend, Proxy, RedisServer, TEST_NAMESPACE, TestEnv, eventually, guard, pushes_settled,
    until_near,
};

async fn redis_cache(url: &str) -> Cache {
    Cache::builder()
        .redis(url)
        .namespace(TEST_NAMESPACE)
        .require_connection()
        .build()
        .await
        .expect("cache")
}

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

// ---------------------------------------------------------------------------------------------
// 1. The longest TTL `validate()` accepts is stored (Redis refuses a `PX` beyond its
//    limit; `Duration::MAX` is refused by `validate()` instead).

async fn a_ttl_that_validates_is_cached(env: TestEnv) {
    let src = Source::new();
    assert!(EntryOptions::new(Duration::MAX).validate().is_err());
    let opts = EntryOptions::new(cache_runtime::limits::MAX_ENTRY_LIFE).name("edges.max_ttl");
    assert!(opts.validate().is_ok());
    let (c, o, s) = (env.cache.clone(), opts.clone(), src.clone());
    let first = tokio::spawn(async move { gol(&c, "max:1", &o, &s).await }).await;
    assert!(
        matches!(&first, Ok(Ok(x)) if *x == v(1, 1)),
        "the first call returns the loader's value (got {first:?})"
    );
    assert_eq!(gol(&env.cache, "max:1", &opts, &src).await, Ok(v(1, 1)));
    assert_eq!(
        src.runs(),
        1,
        "the second call is a hit: {:?}",
        st(&env.cache, "edges.max_ttl")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_redis_a_ttl_that_validates_is_cached() {
    a_ttl_that_validates_is_cached(TestEnv::new(Backend::Redis).await).await
}

// ---------------------------------------------------------------------------------------------
// 2. The README's least ACL on one server ("Failure behaviour") runs the EXPIRE script (it
//    calls `PTTL`) and the refresh scripts (they call `TIME`).

const LEAST_ACL: &[&str] = &[
    "on",
    ">least-pw-1",
    "~itest:*",
    "+get",
    "+set",
    "+del",
    "+pexpire",
    "+pttl",
    "+time",
    "+evalsha",
    "+script|load",
    "+unlink",
    "+ping",
];

async fn least_acl_cache(server: &RedisServer) -> Cache {
    let raw = server.raw().await;
    let _: () = raw
        .cmd(redis::cmd("ACL").arg("SETUSER").arg("app").arg(LEAST_ACL))
        .await;
    let port = server.port();
    Cache::builder()
        .redis(format!("redis://app:least-pw-1@127.0.0.1:{port}/"))
        .namespace(TEST_NAMESPACE)
        .require_connection()
        .build()
        .await
        .expect("the least-ACL user connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expire_works_under_the_documented_least_acl() {
    assert_eq!(TEST_NAMESPACE, "itest", "the ACL key pattern");
    let server = RedisServer::start();
    let c = least_acl_cache(&server).await;
    let opts = EntryOptions::new(Duration::from_secs(60))
        .stale(Duration::from_secs(60))
        .name("edges.acl_expire");
    c.set("acl:1", &"one".to_owned(), &opts).await.expect("set");
    let r = c.expire("acl:1").await;
    assert!(r.is_ok(), "expire under the least ACL: {r:?}");
    assert_eq!(
        c.peek::<String>("acl:1").await.unwrap(),
        Peek::Stale("one".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_refresh_works_under_the_documented_least_acl() {
    let server = RedisServer::start();
    let c = least_acl_cache(&server).await;
    let src = Source::new();
    let opts = EntryOptions::new(Duration::from_millis(300))
        .stale(Duration::from_secs(60))
        .name("edges.acl_refresh");
    assert_eq!(gol(&c, "acl:2", &opts, &src).await, Ok(v(1, 1)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gol(&c, "acl:2", &opts, &src).await, Ok(v(1, 1)), "stale");
    eventually("the refresh stored its value", BOUND, || async {
        matches!(c.peek::<String>("acl:2").await, Ok(Peek::Fresh(x)) if x == v(1, 2))
    })
    .await;
    assert_eq!(st(&c, "edges.acl_refresh").backend_errors, 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Options without `stale` answer a near copy past its entry's freshness, when the copy was
//    filled by options (or a `#[cached]` function) with `stale` sharing the key: load.rs
//    `get_or_load_with` answers whatever `lookup` returns, and a copy filled under a grace
//    window lives `local_ttl` from its fill, past the entry's fresh-until.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn options_without_stale_never_get_a_near_copy_past_its_freshness() {
    let server = RedisServer::start();
    let a = redis_cache(&server.url()).await;
    let src = Source::new();
    let ttl = Duration::from_secs(1);
    let with_stale = EntryOptions::new(ttl)
        .local_ttl(ttl)
        .stale(Duration::from_secs(60))
        .name("edges.shared_stale");
    let plain = EntryOptions::new(ttl)
        .local_ttl(ttl)
        .name("edges.shared_plain");
    let stored = Instant::now();
    assert_eq!(gol(&a, "sh:1", &with_stale, &src).await, Ok(v(1, 1)));
    pushes_settled(&a, &server.raw().await).await;
    // Filled half-way through the freshness: the copy's deadline is 1.5 s after the store.
    tokio::time::sleep((stored + ttl / 2).saturating_duration_since(Instant::now())).await;
    assert_eq!(until_near(&a, "sh:1", &with_stale, &src).await, v(1, 1));
    assert!(
        stored.elapsed() < ttl - Duration::from_millis(100),
        "filled in time"
    );
    // Past the entry's freshness, before the copy's own deadline.
    tokio::time::sleep(
        (stored + ttl + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    )
    .await;
    let got = gol(&a, "sh:1", &plain, &src).await;
    assert!(
        stored.elapsed() < ttl + ttl / 2,
        "still before the copy's deadline"
    );
    assert_ne!(
        got,
        Ok(v(1, 1)),
        "a call without a grace window got the entry past its TTL from the near cache ({:?})",
        st(&a, "edges.shared_plain")
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A tracking reset keeps the copies for the fail-safe, and nothing drops them when tracking
//    is complete again: a copy of a key another process deleted while this process's tracking
//    was down survives the recovery (never answered as a hit, but kept), and the next outage
//    with a failing loader serves it, although the deletion returned long before and this
//    process was healthy (tracking complete, Redis reachable) in between.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_invalidated_before_tracking_came_back_is_not_the_fail_safe() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let a = cache_behind(&proxy).await;
    let b = redis_cache(&server.url()).await;
    let src = Source::new();
    let opts = EntryOptions::new(Duration::from_secs(30))
        .local_ttl(Duration::from_secs(30))
        .stale(Duration::from_secs(60))
        .name("edges.kept");
    assert_eq!(gol(&a, "kp:1", &opts, &src).await, Ok(v(1, 1)));
    pushes_settled(&a, &server.raw().await).await;
    assert_eq!(until_near(&a, "kp:1", &opts, &src).await, v(1, 1));

    // A's connections drop: tracking reset (the copy is kept, unanswerable).
    let resets = st(&a, "cache_runtime::near").tracking_resets;
    proxy.cut();
    eventually("a's tracking reset", BOUND, || async {
        st(&a, "cache_runtime::near").tracking_resets > resets
    })
    .await;
    // Another process invalidates the key; it returns.
    b.invalidate("kp:1").await.unwrap();
    src.write();

    // A recovers fully: Redis reachable, tracking complete (near hits on another key).
    proxy.heal();
    let other = EntryOptions::new(Duration::from_secs(30))
        .local_ttl(Duration::from_secs(30))
        .name("edges.other");
    until_near(&a, "kp:other", &other, &src).await;

    // The next outage, with a failing loader.
    proxy.cut();
    src.fail_from(src.runs() + 1);
    let got = guard("a call with Redis down", gol(&a, "kp:1", &opts, &src)).await;
    proxy.heal();
    assert!(
        matches!(&got, Err(e) if e.starts_with("db down")),
        "served {got:?}: a value deleted before this process's tracking came back ({:?})",
        st(&a, "edges.kept")
    );
}
