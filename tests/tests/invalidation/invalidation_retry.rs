//! The retry queue of `#[invalidates]` from the user's side: what is retried (a server that is
//! loading its dataset answers `-LOADING`: try again later, not "refused"), when (at once when the
//! backend recovers, not after the backoff pause), where (on the cache's own worker thread, not on
//! the runtime of the caller that queued it), and how a service drains it on shutdown
//! ([`Cache::shutdown`]).
//!
//! Every outage here keeps the server's data (a [`Proxy`] that cuts connections, or a front that
//! answers `-LOADING`), so "the key is gone" can only be the retry queue's work. Waits are gates
//! ([`eventually`], [`guard`]) on what the test observes, never timing assertions.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{BreakerState, Cache, cached, invalidates};
use cache_tests::{Db, Proxy, RedisServer, TEST_NAMESPACE, eventually, guard};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const WRITE: &str = "ir.write";
const BOUND: Duration = Duration::from_secs(30);

#[cached(key = "item:{id}", ttl = 300, name = "ir.read", cache = cache)]
async fn read(cache: &Cache, id: u64, db: &Db) -> String {
    db.count_load();
    format!("{}#{id}", db.value())
}

#[invalidates("item:{id}", cache = cache, name = "ir.write")]
async fn write(cache: &Cache, id: u64, db: &Db, value: &str) -> Result<u64, String> {
    db.set_value(value);
    Ok(id)
}

fn short_timeouts(b: cache_runtime::CacheBuilder) -> cache_runtime::CacheBuilder {
    b.command_timeout(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(200))
        .circuit_breaker(3, Duration::from_millis(300))
}

async fn cache_via(
    url: String,
    configure: impl FnOnce(cache_runtime::CacheBuilder) -> cache_runtime::CacheBuilder,
) -> Cache {
    configure(short_timeouts(Cache::builder()))
        .redis(url)
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("build the cache")
}

// ---------------------------------------------------------------------------------------------
// A server that is loading its dataset.

/// A loopback front for a real `redis-server` that, while [`LoadingFront::set_loading`] is on,
/// answers every data command with `-LOADING Redis is loading the dataset in memory`, as a real
/// server does for a while after a restart with a large dataset; connection set-up commands
/// (`HELLO`, `CLIENT`, `AUTH`, `SELECT`) pass, as on a real loading server. Otherwise it
/// forwards each command and its reply, one at a time and in order.
struct LoadingFront {
    port: u16,
    loading: Arc<AtomicBool>,
    /// Commands answered with `-LOADING`, by name.
    refused: Arc<Mutex<HashMap<String, usize>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl LoadingFront {
    async fn start(upstream: u16) -> LoadingFront {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the front");
        let port = listener.local_addr().expect("front addr").port();
        let loading = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(Mutex::new(HashMap::new()));
        let accept = tokio::spawn({
            let (loading, refused) = (loading.clone(), refused.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (loading, refused) = (loading.clone(), refused.clone());
                    tokio::spawn(async move {
                        let _ = front_connection(client, upstream, &loading, &refused).await;
                    });
                }
            }
        });
        LoadingFront {
            port,
            loading,
            refused,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn set_loading(&self, on: bool) {
        self.loading.store(on, SeqCst);
    }

    /// How many `name` commands were answered `-LOADING`.
    fn refused(&self, name: &str) -> usize {
        self.refused.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl Drop for LoadingFront {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn front_connection(
    client: tokio::net::TcpStream,
    upstream: u16,
    loading: &AtomicBool,
    refused: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let server = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await?;
    let (client_rx, mut client_tx) = client.into_split();
    let (server_rx, mut server_tx) = server.into_split();
    let (mut client_rx, mut server_rx) = (BufReader::new(client_rx), BufReader::new(server_rx));
    while let Some(request) = read_frame(&mut client_rx).await? {
        let name = command_name(&request);
        let passes = matches!(name.as_str(), "HELLO" | "CLIENT" | "AUTH" | "SELECT");
        if loading.load(SeqCst) && !passes {
            *refused.lock().unwrap().entry(name).or_default() += 1;
            client_tx
                .write_all(b"-LOADING Redis is loading the dataset in memory\r\n")
                .await?;
            continue;
        }
        server_tx.write_all(&request).await?;
        let Some(reply) = read_frame(&mut server_rx).await? else {
            return Ok(());
        };
        client_tx.write_all(&reply).await?;
    }
    Ok(())
}

/// Reads one RESP2/RESP3 value, returning its bytes unchanged (`None` at end of stream).
async fn read_frame<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut out = Vec::new();
    let mut remaining = 1usize;
    while remaining > 0 {
        remaining -= 1;
        let start = out.len();
        if r.read_until(b'\n', &mut out).await? == 0 {
            return if start == 0 {
                Ok(None)
            } else {
                Err(bad("end of stream inside a value"))
            };
        }
        let line = &out[start..];
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(bad("not a RESP line"));
        }
        let kind = line[0];
        let n: Option<i64> = std::str::from_utf8(&line[1..line.len() - 2])
            .ok()
            .and_then(|s| s.parse().ok());
        let count = || {
            n.map(|n| n.max(0) as usize)
                .ok_or_else(|| bad("bad RESP length"))
        };
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
            b'$' | b'!' | b'=' => {
                // `$-1` (null) has no payload.
                if n != Some(-1) {
                    let at = out.len();
                    out.resize(at + count()? + 2, 0);
                    r.read_exact(&mut out[at..]).await?;
                }
            }
            b'*' | b'~' | b'>' => remaining += count()?,
            b'%' => remaining += 2 * count()?,
            // Attributes precede the value they describe.
            b'|' => remaining += 2 * count()? + 1,
            _ => return Err(bad("unknown RESP type")),
        }
    }
    Ok(Some(out))
}

/// The upper-cased command name of a request (an array of bulk strings).
fn command_name(request: &[u8]) -> String {
    request
        .split(|&b| b == b'\n')
        .nth(2)
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).to_uppercase())
        .unwrap_or_default()
}

/// A server that answers `-LOADING` is unusable for now, not refusing: the invalidation is
/// retried (never given up as "refused") and delivered once the server has loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidation_answered_loading_is_retried_until_the_server_is_ready() {
    let server = RedisServer::start();
    let raw = server.raw().await;
    let front = LoadingFront::start(server.port()).await;
    let cache = cache_via(front.url(), |b| b).await;
    let db = Db::with_value("v1");
    let key = cache.full_key("item:1");

    assert_eq!(read(&cache, 1, &db).await, "v1#1");
    let stale = raw.get(&key).await.expect("v1 is cached");

    front.set_loading(true);
    assert_eq!(
        guard(
            "a write while the server is loading",
            write(&cache, 1, &db, "v2")
        )
        .await,
        Ok(1),
        "the write returns its own result"
    );
    // The caller's UNLINK and at least two retries were answered -LOADING.
    eventually(
        "the retry queue tries again after -LOADING",
        BOUND,
        || async { front.refused("UNLINK") >= 3 },
    )
    .await;
    let waiting = cache.stats().function(WRITE);
    assert_eq!(
        (waiting.invalidations_pending, waiting.invalidations_failed),
        (1, 0),
        "still queued, not given up: {waiting:?}"
    );
    // Reachable but unusable: "try again later" replies count as breaker failures.
    eventually(
        "the circuit opens while the server is loading",
        BOUND,
        || async { cache.breaker_state() != BreakerState::Closed },
    )
    .await;
    assert_eq!(
        raw.get(&key).await.as_deref(),
        Some(&stale[..]),
        "the stale entry is still there (no UNLINK reached the server)"
    );
    // Meanwhile reads are answered by the loader: the new value, never the stale one.
    assert_eq!(
        guard("a read while the server is loading", read(&cache, 1, &db)).await,
        "v2#1"
    );

    front.set_loading(false);
    eventually(
        "the queued invalidation is delivered once the server has loaded",
        BOUND,
        || async {
            let s = cache.stats().function(WRITE);
            s.invalidations_pending == 0 && s.invalidations == 1
        },
    )
    .await;
    assert_eq!(raw.get(&key).await, None, "the stale entry is gone");
    assert_eq!(cache.stats().function(WRITE).invalidations_failed, 0);
}

// ---------------------------------------------------------------------------------------------
// The worker does not live on the caller's runtime.

/// A `#[invalidates]` call made on a short-lived runtime (a `#[tokio::test]`, a `block_on` in a
/// sync context) whose deletion is queued, and that runtime then shut down: the deletion is
/// still delivered, seen from another runtime.
#[test]
fn queued_invalidation_outlives_the_runtime_that_queued_it() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("main runtime");
    let server = RedisServer::start();
    let (raw, proxy) =
        main.block_on(async { (server.raw().await, Proxy::start(server.port()).await) });
    let db = Db::with_value("v1");

    let short = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("short-lived runtime");
    let (cache, key, stale) = short.block_on(async {
        let cache = cache_via(proxy.url(), |b| b).await;
        let key = cache.full_key("item:1");
        assert_eq!(read(&cache, 1, &db).await, "v1#1");
        let stale = raw.get(&key).await.expect("v1 is cached");
        proxy.cut();
        assert_eq!(
            guard(
                "a write with Redis unreachable",
                write(&cache, 1, &db, "v2")
            )
            .await,
            Ok(1)
        );
        let queued = cache.stats().function(WRITE);
        assert_eq!(queued.invalidations_pending, 1, "{queued:?}");
        (cache, key, stale)
    });
    drop(short);

    main.block_on(async {
        assert_eq!(
            raw.get(&key).await.as_deref(),
            Some(&stale[..]),
            "the stale entry is still there (the UNLINK never reached the server)"
        );
        proxy.heal();
        eventually(
            "the queued invalidation is delivered after its runtime is gone",
            BOUND,
            || async {
                let s = cache.stats().function(WRITE);
                s.invalidations_pending == 0 && s.invalidations == 1
            },
        )
        .await;
        assert_eq!(raw.get(&key).await, None, "the stale entry is gone");
        assert_eq!(cache.stats().function(WRITE).invalidations_failed, 0);
    });
}

// ---------------------------------------------------------------------------------------------
// Recovery wakes the queue.

/// When the backend recovers (here: the circuit closes after another function's successful
/// call), the queue retries at once instead of finishing its backoff pause. The pause is set to
/// a minute, longer than the hang guard: without the wake-up this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_flushes_the_queue_without_waiting_for_the_backoff() {
    let server = RedisServer::start();
    let raw = server.raw().await;
    let proxy = Proxy::start(server.port()).await;
    let cache = cache_via(proxy.url(), |b| {
        b.circuit_breaker(1, Duration::from_millis(200))
            .invalidation_retry_backoff(Duration::from_secs(60), Duration::from_secs(60))
    })
    .await;
    let db = Db::with_value("v1");
    let key = cache.full_key("item:1");
    assert_eq!(read(&cache, 1, &db).await, "v1#1");
    let stale = raw.get(&key).await.expect("v1 is cached");

    proxy.cut();
    assert_eq!(
        guard(
            "a write with Redis unreachable",
            write(&cache, 1, &db, "v2")
        )
        .await,
        Ok(1)
    );
    // The queue has tried once more and is now in its one-minute pause.
    eventually("the retry queue made a failed attempt", BOUND, || async {
        cache.stats().function(WRITE).invalidation_retries >= 1
    })
    .await;
    let waiting = cache.stats().function(WRITE);
    assert_eq!(waiting.invalidations_pending, 1, "{waiting:?}");
    assert_eq!(
        raw.get(&key).await.as_deref(),
        Some(&stale[..]),
        "the stale entry is still there"
    );

    proxy.heal();
    // Another function's calls probe the backend and close the circuit.
    eventually(
        "the circuit closes after a successful read",
        BOUND,
        || async {
            read(&cache, 2, &db).await;
            cache.breaker_state() == BreakerState::Closed
        },
    )
    .await;
    eventually(
        "the queued invalidation is delivered before its pause ends",
        BOUND,
        || async {
            let s = cache.stats().function(WRITE);
            s.invalidations_pending == 0 && s.invalidations == 1
        },
    )
    .await;
    assert_eq!(raw.get(&key).await, None, "the stale entry is gone");
    assert_eq!(cache.stats().function(WRITE).invalidations_failed, 0);
}

// ---------------------------------------------------------------------------------------------
// Shutdown.

/// A service shutting down after an outage: `shutdown` delivers what waits in the queue and
/// returns `Ok`; afterwards the stale entry is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_delivers_the_queued_invalidations() {
    let server = RedisServer::start();
    let raw = server.raw().await;
    let proxy = Proxy::start(server.port()).await;
    let cache = cache_via(proxy.url(), |b| b).await;
    let db = Db::with_value("v1");
    let key = cache.full_key("item:1");
    assert_eq!(read(&cache, 1, &db).await, "v1#1");
    let stale = raw.get(&key).await.expect("v1 is cached");

    proxy.cut();
    assert_eq!(
        guard(
            "a write with Redis unreachable",
            write(&cache, 1, &db, "v2")
        )
        .await,
        Ok(1)
    );
    assert_eq!(cache.stats().function(WRITE).invalidations_pending, 1);
    assert_eq!(
        raw.get(&key).await.as_deref(),
        Some(&stale[..]),
        "the stale entry is still there"
    );

    proxy.heal();
    let shut = guard("shutdown", cache.shutdown(Duration::from_secs(5))).await;
    assert!(shut.is_ok(), "{shut:?}");
    assert_eq!(raw.get(&key).await, None, "the stale entry is gone");
    let done = cache.stats().function(WRITE);
    assert_eq!(
        (
            done.invalidations,
            done.invalidations_pending,
            done.invalidations_failed
        ),
        (1, 0, 0),
        "{done:?}"
    );
    // A second call has nothing left to do.
    assert!(cache.shutdown(Duration::ZERO).await.is_ok());
}

/// When Redis stays unreachable, `shutdown` gives up at its timeout and says how many keys
/// were not delivered; after it, a failed invalidation is counted as failed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_timeout_reports_the_undelivered_keys() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = cache_via(proxy.url(), |b| b).await;
    let db = Db::with_value("v1");
    assert_eq!(read(&cache, 1, &db).await, "v1#1");

    proxy.cut();
    for id in [1, 2, 3] {
        assert_eq!(
            guard(
                "a write with Redis unreachable",
                write(&cache, id, &db, "v2")
            )
            .await,
            Ok(id)
        );
    }
    assert_eq!(cache.stats().function(WRITE).invalidations_pending, 3);

    let err = guard("shutdown", cache.shutdown(Duration::from_millis(300)))
        .await
        .expect_err("Redis is unreachable: the keys cannot be delivered");
    assert!(
        matches!(err, cache_runtime::Error::Undelivered { keys: 3 }),
        "{err:?}"
    );
    assert!(err.to_string().contains('3'), "{err}");
    let s = cache.stats().function(WRITE);
    assert_eq!(
        (
            s.invalidations,
            s.invalidations_pending,
            s.invalidations_failed
        ),
        (0, 0, 3),
        "{s:?}"
    );

    // After shutdown the queue is closed: the write still succeeds, its key is counted failed.
    assert_eq!(
        guard("a write after shutdown", write(&cache, 4, &db, "v3")).await,
        Ok(4)
    );
    let s = cache.stats().function(WRITE);
    assert_eq!(
        (s.invalidations_pending, s.invalidations_failed),
        (0, 4),
        "{s:?}"
    );
}

/// A write whose invalidation was refused with `-LOADING` is queued; when the server is
/// usable again, a read in the same process must not return the entry that write
/// invalidated, even before the queue's worker delivers the deletion (it waits in a 60 s
/// backoff here). The connection stays up throughout, so the read's `GET` reaches Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn own_queued_invalidation_is_seen_before_the_queue_delivers_it() {
    let server = RedisServer::start();
    let front = LoadingFront::start(server.port()).await;
    let cache = cache_via(front.url(), |b| {
        b.circuit_breaker(1000, Duration::from_millis(100))
            .invalidation_retry_backoff(Duration::from_secs(60), Duration::from_secs(60))
    })
    .await;
    let db = Db::with_value("v1");
    assert_eq!(read(&cache, 7, &db).await, "v1#7");
    front.set_loading(true);
    assert_eq!(guard("write", write(&cache, 7, &db, "v2")).await, Ok(7));
    let s = cache.stats().function(WRITE);
    assert_eq!(s.invalidations_pending, 1, "{s:?}");
    front.set_loading(false);
    assert_eq!(
        guard("read after the write", read(&cache, 7, &db)).await,
        "v2#7",
        "a read in the writing process saw the entry its own write invalidated"
    );
}
