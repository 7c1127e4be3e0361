//! An `#[invalidates]` call whose caller is dropped after the write succeeded but while
//! the `UNLINK` is in flight (request timeout, client disconnect) must not lose the deletion.
//!
//! A TCP proxy between the cache and Redis ([`cache_tests::Proxy`]) simulates a network
//! partition: it swallows the client's bytes, then "heals" by resetting the connections.

use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{Proxy, RedisServer, eventually};

#[cached(key = "cancel:{id}", ttl = 300, cache = cache)]
async fn get(cache: &Cache, id: u64) -> u64 {
    id
}

#[invalidates("cancel:{id}", cache = cache, name = "cancel.write")]
async fn write(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(()) // the database write committed
}

/// A Redis server, a [`Proxy`] in front of it and a cache connected through the proxy (500 ms
/// command timeout, invalidations retried for 30 s).
async fn cache_behind_proxy() -> (RedisServer, Proxy, Cache) {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis(proxy.url())
        .namespace("rv")
        .command_timeout(Duration::from_millis(500))
        .invalidation_retry(Duration::from_secs(30), 100)
        .build()
        .await
        .unwrap();
    (server, proxy, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_invalidation_is_not_lost() {
    let (server, proxy, cache) = cache_behind_proxy().await;
    assert_eq!(get(&cache, 1).await, 1);
    let raw = server.raw().await;
    let key = cache.full_key("cancel:1");
    assert!(raw.exists(&key).await, "entry stored");

    proxy.partition();
    // The caller gives up (e.g. a 100 ms request timeout) while the UNLINK is in flight.
    let r = tokio::time::timeout(Duration::from_millis(100), write(&cache, 1)).await;
    assert!(
        r.is_err(),
        "the write call was cut off during its invalidation"
    );
    proxy.heal();

    let (raw2, key2) = (raw.clone(), key.clone());
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        eventually("stale entry deleted", Duration::from_secs(5), move || {
            let (raw, key) = (raw2.clone(), key2.clone());
            async move { !raw.exists(&key).await }
        }),
    )
    .await;
    let s = cache.stats().function("cancel.write");
    assert!(
        !raw.exists(&key).await,
        "write committed but the stale entry survives (pttl {} ms); stats {s:?}; {result:?}",
        raw.pttl(&key).await
    );
}

/// Control: the same partition without cancelling the caller: the deletion is queued and
/// delivered after the partition heals (shows the proxy is not what loses it above).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_uncancelled_invalidation_is_delivered() {
    let (server, proxy, cache) = cache_behind_proxy().await;
    assert_eq!(get(&cache, 1).await, 1);
    let raw = server.raw().await;
    let key = cache.full_key("cancel:1");
    proxy.partition();
    write(&cache, 1).await.unwrap();
    proxy.heal();
    eventually("stale entry deleted", Duration::from_secs(10), move || {
        let (raw, key) = (raw.clone(), key.clone());
        async move { !raw.exists(&key).await }
    })
    .await;
}
