//! Review: an `#[invalidates]` call whose caller is dropped after the write succeeded but while
//! the `UNLINK` is in flight (request timeout, client disconnect) must not lose the deletion.
//!
//! A small TCP proxy between the cache and Redis simulates a network partition: it swallows the
//! client's bytes, then "heals" by resetting the connections.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{RedisServer, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

struct Proxy {
    port: u16,
    blackhole: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (bh, ts) = (blackhole.clone(), tasks.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let bh = bh.clone();
                let up = tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if bh.load(SeqCst) {
                            continue; // lost in the partition
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                ts.lock().unwrap().extend([up, down]);
            }
        });
        Proxy {
            port,
            blackhole,
            tasks,
        }
    }

    fn partition(&self) {
        self.blackhole.store(true, SeqCst);
    }

    /// Ends the partition: existing connections are reset, new ones are forwarded.
    fn heal(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.blackhole.store(false, SeqCst);
    }
}

#[cached(key = "rvi:{id}", ttl = 300, cache = cache)]
async fn get(cache: &Cache, id: u64) -> u64 {
    id
}

#[invalidates("rvi:{id}", cache = cache, name = "rvi.write")]
async fn write(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(()) // the database write committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_cancelled_invalidation_is_not_lost() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis(format!("redis://127.0.0.1:{}/", proxy.port))
        .namespace("rv")
        .command_timeout(Duration::from_millis(500))
        .invalidation_retry(Duration::from_secs(30), 100)
        .build()
        .await
        .unwrap();
    assert_eq!(get(&cache, 1).await, 1);
    let raw = server.raw().await;
    let key = cache.full_key("rvi:1");
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
    let s = cache.stats().function("rvi.write");
    assert!(
        !raw.exists(&key).await,
        "write committed but the stale entry survives (pttl {} ms); stats {s:?}; {result:?}",
        raw.pttl(&key).await
    );
}

/// Control: the same partition without cancelling the caller: the deletion is queued and
/// delivered after the partition heals (shows the proxy is not what loses it above).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_control_uncancelled_invalidation_is_delivered() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis(format!("redis://127.0.0.1:{}/", proxy.port))
        .namespace("rv")
        .command_timeout(Duration::from_millis(500))
        .invalidation_retry(Duration::from_secs(30), 100)
        .build()
        .await
        .unwrap();
    assert_eq!(get(&cache, 1).await, 1);
    let raw = server.raw().await;
    let key = cache.full_key("rvi:1");
    proxy.partition();
    write(&cache, 1).await.unwrap();
    proxy.heal();
    eventually("stale entry deleted", Duration::from_secs(10), move || {
        let (raw, key) = (raw.clone(), key.clone());
        async move { !raw.exists(&key).await }
    })
    .await;
}
