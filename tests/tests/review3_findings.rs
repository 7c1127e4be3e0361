//! Findings of the third review (the freshness layer: tags, refresh leases), each pinned by a
//! deterministic test that fails on the code it was written against (bca3fdc).
//!
//! Ordering is forced with a small interposing TCP proxy ([`HoldProxy`]) that can hold the
//! bytes a cache sends after a chosen command, or the reply to a chosen command, until the
//! test releases them; no sleep decides an interleaving (the only sleep lets a `ttl = 1` run
//! out, to reach the grace window).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::source::{Source, alive_tasks};
use cache_tests::{RedisServer, TEST_NAMESPACE, eventually, guard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

/// Sleep this long after a load to be past its `ttl = 1` (in the grace window).
const PAST_TTL: Duration = Duration::from_millis(1_100);

fn v(version: u64, run: u64) -> String {
    Source::value(version, run)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A loopback proxy in front of a Redis server that can hold traffic at a chosen point.
///
/// * [`HoldProxy::hold_after`]`(cmd)`: the next client chunk containing `cmd` is forwarded,
///   [`HoldProxy::reached`] fires, and every later client byte waits until
///   [`HoldProxy::release`] (the command itself has been applied by the server; what the
///   client sends next has not).
/// * [`HoldProxy::hold_reply_to`]`(cmd)`: the next client chunk containing `cmd` is forwarded,
///   but the server's reply to it waits (with everything after it) until `release`, so the
///   client's command times out after the server applied it.
struct HoldProxy {
    port: u16,
    shared: Arc<Hold>,
    accept: tokio::task::JoinHandle<()>,
}

struct Hold {
    /// The command to watch for (armed while `Some`).
    cmd: std::sync::Mutex<Option<(Vec<u8>, bool)>>,
    /// Set when the reply to the watched command must be held.
    hold_reply: AtomicBool,
    reached: Notify,
    release: Semaphore,
}

impl HoldProxy {
    async fn start(upstream: u16) -> HoldProxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Hold {
            cmd: std::sync::Mutex::new(None),
            hold_reply: AtomicBool::new(false),
            reached: Notify::new(),
            release: Semaphore::new(0),
        });
        let accept = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(Self::connection(client, upstream, shared.clone()));
                }
            }
        });
        HoldProxy {
            port,
            shared,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn hold_after(&self, cmd: &str) {
        *self.shared.cmd.lock().unwrap() = Some((cmd.as_bytes().to_vec(), false));
    }

    fn hold_reply_to(&self, cmd: &str) {
        *self.shared.cmd.lock().unwrap() = Some((cmd.as_bytes().to_vec(), true));
    }

    async fn reached(&self) {
        guard(
            "the proxy saw the watched command",
            self.shared.reached.notified(),
        )
        .await;
    }

    fn release(&self) {
        self.shared.release.add_permits(1);
    }

    async fn connection(mut client: tokio::net::TcpStream, upstream: u16, hold: Arc<Hold>) {
        let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        let (mut crx, mut ctx) = client.split();
        let (mut srx, mut stx) = server.split();
        let up = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = crx.read(&mut buf).await?;
                if n == 0 {
                    return stx.shutdown().await;
                }
                let armed = {
                    let mut cmd = hold.cmd.lock().unwrap();
                    match cmd.as_ref() {
                        Some((c, reply)) if contains(&buf[..n], c) => {
                            let reply = *reply;
                            *cmd = None;
                            Some(reply)
                        }
                        _ => None,
                    }
                };
                match armed {
                    Some(true) => {
                        hold.hold_reply.store(true, SeqCst);
                        stx.write_all(&buf[..n]).await?;
                    }
                    Some(false) => {
                        stx.write_all(&buf[..n]).await?;
                        stx.flush().await?;
                        hold.reached.notify_one();
                        hold.release.acquire().await.expect("open").forget();
                    }
                    None => stx.write_all(&buf[..n]).await?,
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = srx.read(&mut buf).await?;
                if n == 0 {
                    return ctx.shutdown().await;
                }
                if hold.hold_reply.swap(false, SeqCst) {
                    hold.reached.notify_one();
                    hold.release.acquire().await.expect("open").forget();
                }
                ctx.write_all(&buf[..n]).await?;
            }
        };
        let _: std::io::Result<((), ())> = tokio::try_join!(up, down);
    }
}

impl Drop for HoldProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.release.add_permits(1000);
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 1: a tag membership re-registered during a tag invalidation is removed by it.
//
// `TAG_ADD` registers with `ZADD GT` (a lower score leaves the old one in place) and the
// invalidation's `TAG_REMOVE` removes a member "only if not re-registered meanwhile", judged
// by an unchanged score. A re-registration whose score is not higher than the scanned one
// (another handle with a smaller lock_ms or ttl/stale after a deploy, a clock behind by more
// than the time since the scan, or simply the same millisecond) leaves the score unchanged:
// the invalidation then removes the membership of an entry loaded AFTER its UNLINK, and the
// next invalidation of the tag misses that entry.

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
/// Expected: db3 (the tag invalidation after write 2 voids the entry). Observed: db2, a value
/// older than write 2, served to a call that started after its invalidation returned.
///
/// Fix: make every re-registration change the score (TAG_ADD: `score = max(new, old + 1)`
/// instead of `ZADD GT`), or track re-registrations with something other than the score
/// (e.g. a per-member generation), so the conditional ZREM never removes a newer membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_reregistration_during_invalidation_is_not_removed() {
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
// Finding 2: a refresh lease whose TRY_REFRESH reply is lost is never released.
//
// The miss path arms its lease guard before `SET NX`, so a lease request with an unknown
// outcome is released by token. The refresh path does not: `try_refresh` returning `Err`
// (timeout after the server applied the script) returns `Landed::Failed` without a guard, so
// the refresh lease stays in the entry for 10 × lock_ms (50 s by default). Meanwhile no
// process refreshes the key: every grace-window call serves the stale value and sees
// `refreshing`, and with `timeout_ms` every call returns stale at once.

#[cached(key = "lk:{id}", ttl = 1, stale = 120, cache = cache)]
async fn lk_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const LK: &str = "review3_findings::lk_row";

/// Interleaving: an entry in its grace window; a call starts a refresh; the server applies
/// TRY_REFRESH but its reply is held past `command_timeout` (the refresh fails with a backend
/// error); then the reply is released.
///
/// Expected: the refresh lease is released by its token in the background (as a lost `SET NX`
/// reply is), so the next grace-window call refreshes the key. Observed: the lease stays in the
/// entry (kind byte | 0x80) until it runs out; no refresh runs.
///
/// Fix: arm the `RefreshGuard` before `try_refresh` (release by token on `Err`, a no-op when
/// the lease was never taken), like `LeaseGuard` in `protocol::lease_path`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_lease_with_lost_reply_is_released() {
    let server = RedisServer::start();
    let proxy = HoldProxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis(proxy.url())
        .namespace(TEST_NAMESPACE)
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("cache");
    let raw = server.raw().await;
    let src = Source::new();
    assert_eq!(lk_row(&cache, 1, &src).await, v(1, 1));
    assert_eq!(lk_row(&cache, 2, &src).await, v(1, 2));
    tokio::time::sleep(PAST_TTL).await;

    // Key 2: one complete refresh, so that the refresh scripts are loaded in the server (the
    // next TRY_REFRESH is a single EVALSHA).
    let baseline = alive_tasks();
    assert_eq!(lk_row(&cache, 2, &src).await, v(1, 2), "stale");
    eventually("key 2 refreshed", Duration::from_secs(10), || async {
        lk_row(&cache, 2, &src).await == v(1, 3)
    })
    .await;
    eventually("refreshes ended", Duration::from_secs(10), || async {
        alive_tasks() <= baseline
    })
    .await;
    assert_eq!(cache.stats().function(LK).refreshes, 1);

    // Key 1: the TRY_REFRESH reply is held until the refresh gave up on it.
    proxy.hold_reply_to("EVALSHA");
    assert_eq!(lk_row(&cache, 1, &src).await, v(1, 1), "stale");
    proxy.reached().await;
    eventually("the refresh timed out", Duration::from_secs(10), || async {
        cache.stats().function(LK).backend_errors >= 1
    })
    .await;
    proxy.release();
    let key = cache.full_key("lk:1");
    let held = raw.get(&key).await.expect("the entry is there");
    assert!(
        held[2] & 0x80 != 0,
        "the server applied TRY_REFRESH: the entry carries the refresh lease"
    );
    eventually(
        "the refresh lease with the lost reply is released",
        Duration::from_secs(5),
        || async {
            raw.get(&key)
                .await
                .is_some_and(|e| e.len() >= 32 && e[2] & 0x80 == 0)
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Finding 3 (memory backend): at the tag-index bound, a new membership that runs out first
// is dropped at once, together with its own fresh lease: the entry is never cached.
//
// `MemoryBackend::tag_add` inserts the member, then, past `max_members`, drops "the oldest
// member" of the tag, by expiry. A member of a short-lived function sharing a tag with
// long-lived entries is the oldest the moment it is registered: it is dropped, and with it
// the lease the load just took, so the fill fails. Every call loads (a stampede is served
// by one load per waiter in turn, each voided the same way).

#[cached(key = "long:{id}", ttl = 3600, tags = ["bt:{grp}"], cache = cache)]
async fn long_row(cache: &Cache, grp: u64, id: u64) -> u64 {
    id
}

#[cached(key = "short:{id}", ttl = 5, tags = ["bt:{grp}"], cache = cache)]
async fn short_row(cache: &Cache, grp: u64, id: u64, src: &Source) -> String {
    src.load_ok().await
}

/// Expected: the second `short_row(1, 1)` is a hit (one load). Observed: it loads again; the
/// first load's lease was deleted by its own tag registration.
///
/// Fix: never pick the membership being registered (or any membership whose load still holds
/// its lease) as the victim; e.g. evict by insertion order (LRU of registrations) rather than
/// by expiry, or evict from other members only, and prefer entries that are no longer live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_tag_bound_does_not_drop_the_new_membership() {
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
// Finding 4 (Redis): the README says keys starting with `!tag:` are reserved, but they were
// accepted: an `#[invalidates("!tag:..")]` rendered the very key of a tag's member set, so the
// next `invalidate_tag` found no member and a stale entry survived it. The macros now reject
// such templates (`tests/ui/fail/reserved_tag_prefix.rs`); `Cache::invalidate` refuses them.

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
