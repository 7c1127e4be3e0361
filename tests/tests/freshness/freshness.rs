//! Freshness beyond TTL (DESIGN.md, "Freshness beyond TTL"): the grace window
//! (`stale = N`, stale-while-revalidate) with ONE background refresh per key in a process,
//! across cache handles and across OS processes; fail-safe on a failing or panicking refresh;
//! invalidation during the grace window (also against a refresh that started before it);
//! XFetch early refresh (`early_refresh = B`); soft loader timeouts (`timeout_ms = N`).
//!
//! Loaders run on a [`Source`]: it counts runs, returns `db<version>/run<n>`, and holds chosen
//! runs at a gate, so that a refresh provably cannot finish while a burst of calls is served
//! (no sleeps for ordering; sleeps only let a 1 s TTL or a short refresh lease run out).

use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, FnStats, cached, invalidates};
use cache_tests::source::{FreshReport, Source, alive_tasks};
use cache_tests::{
    Backend, Raw, RedisServer, TEST_NAMESPACE, TestEnv, backend_tests, eventually, guard,
    guard_for, unix_ms,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Barrier;

/// Sleep this long after a load to be past its `ttl = 1` (in the grace window).
const PAST_TTL: Duration = Duration::from_millis(1_100);

fn v(version: u64, run: u64) -> String {
    Source::value(version, run)
}

fn stats(cache: &Cache, name: &str) -> FnStats {
    cache.stats().function(name)
}

/// Starts `n` calls made by `call(i)`, released together by a barrier, and returns their
/// outputs in order.
async fn concurrent<T, F, Fut>(n: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, fut) = (barrier.clone(), call(i));
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(guard("a concurrent call", t).await.expect("call panicked"));
    }
    out
}

/// Waits until the tasks spawned on this runtime since `baseline = alive_tasks()` have ended:
/// background refreshes (and the lease releases they spawn) are tasks, so afterwards no
/// refresh runs and none can start without a new call.
async fn settle(baseline: usize) {
    eventually(
        "the background refreshes ended",
        Duration::from_secs(10),
        || async move { alive_tasks() <= baseline },
    )
    .await;
}

/// The payload of a stored envelope (header and refresh-lease trailer stripped; see the
/// layout in `cache-runtime/src/entry.rs`): the JSON of the value.
fn payload(raw: &[u8]) -> String {
    assert!(
        raw.len() >= 32 && raw[0] == 0xCA,
        "not an envelope: {raw:?}"
    );
    let end = if raw[2] & 0x80 != 0 {
        raw.len() - 24
    } else {
        raw.len()
    };
    String::from_utf8_lossy(&raw[32..end]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// 1-2. A burst in the grace window: everyone gets the stale value, one refresh runs.

#[cached(key = "burst:{id}", ttl = 1, stale = 30, cache = cache)]
async fn burst_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const BURST: &str = "freshness::freshness::burst_row";

/// 64 callers released together on an entry in its grace window all get the stale value at
/// once, and exactly one refresh runs (its loader is gated: it cannot finish, and so cannot
/// answer anybody, during the burst). A runtime that lets several callers that read the
/// entry before the refresh lease was set each start a refresh fails `runs == 2`.
async fn grace_burst_of_64_serves_stale_and_refreshes_once(env: TestEnv) {
    let src = Source::new();
    assert_eq!(burst_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next(); // run 2, the refresh, waits at the gate

    let values = concurrent(64, |_| {
        let (cache, src) = (env.cache.clone(), src.clone());
        async move { burst_row(&cache, 1, &src).await }
    })
    .await;
    assert!(
        values.iter().all(|x| *x == v(1, 1)),
        "every caller gets the stale value: {values:?}"
    );
    guard("the refresh's loader starts", src.entered()).await;
    let s = stats(&env.cache, BURST);
    assert_eq!(
        (src.runs(), src.finished()),
        (2, 1),
        "the prime load and ONE refresh, still blocked"
    );
    assert_eq!(
        (s.stale_served, s.refreshes, s.loads, s.misses, s.hits),
        (64, 1, 2, 1, 0),
        "{s:?}"
    );

    let raw = env.raw().await;
    let full = env.cache.full_key("burst:1");
    if let Some(raw) = &raw {
        // Stored for ttl + stale = 31 s, 1.1 s ago; the refresh lease kept the TTL.
        let pttl = raw.pttl(&full).await;
        assert!(
            pttl > 25_000 && pttl <= 29_900,
            "PTTL in the grace window: {pttl}"
        );
    }
    src.open(1);
    eventually(
        "the refreshed value is served",
        Duration::from_secs(10),
        || {
            let (cache, src) = (env.cache.clone(), src.clone());
            async move { burst_row(&cache, 1, &src).await == v(1, 2) }
        },
    )
    .await;
    if let Some(raw) = &raw {
        let pttl = raw.pttl(&full).await;
        assert!(
            pttl > 29_900 && pttl <= 31_000,
            "the refresh stores with a new ttl + stale: PTTL {pttl}"
        );
    }
    let s = stats(&env.cache, BURST);
    assert_eq!(src.runs(), 2, "no second refresh");
    assert_eq!((s.refreshes, s.loads, s.misses), (1, 2, 1), "{s:?}");
    assert!(s.hits >= 1, "the refreshed value is a hit: {s:?}");
}

/// The same burst on two `Cache` handles on one Redis (two processes' worth of in-process
/// state): 32 callers each, exactly one refresh across both (the refresh lease in the entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grace_burst_on_two_handles_runs_one_refresh() {
    let env = TestEnv::new(Backend::Redis).await;
    let other = Cache::builder()
        .redis(env.server.as_ref().expect("redis").url())
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("second handle");
    let src = Source::new();
    assert_eq!(burst_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next();

    let values = concurrent(64, |i| {
        let cache = if i % 2 == 0 {
            env.cache.clone()
        } else {
            other.clone()
        };
        let src = src.clone();
        async move { burst_row(&cache, 1, &src).await }
    })
    .await;
    assert!(
        values.iter().all(|x| *x == v(1, 1)),
        "every caller gets the stale value: {values:?}"
    );
    guard("the refresh's loader starts", src.entered()).await;
    let (a, b) = (stats(&env.cache, BURST), stats(&other, BURST));
    assert_eq!((a.stale_served, b.stale_served), (32, 32), "{a:?} {b:?}");
    assert_eq!(src.runs(), 2, "the prime load and ONE refresh");

    src.open(1);
    for (name, cache) in [("first", &env.cache), ("second", &other)] {
        eventually(
            &format!("the {name} handle serves the refreshed value"),
            Duration::from_secs(10),
            || {
                let (cache, src) = (cache.clone(), src.clone());
                async move { burst_row(&cache, 1, &src).await == v(1, 2) }
            },
        )
        .await;
    }
    let (a, b) = (stats(&env.cache, BURST), stats(&other, BURST));
    assert_eq!(src.runs(), 2, "one loader run across both handles");
    assert_eq!(
        (a.refreshes + b.refreshes, a.loads + b.loads),
        (1, 2),
        "{a:?} {b:?}"
    );
}

/// A refresh lease runs out (`lock_ms` x 10; here 100 ms) while its refresh hangs: another
/// process (handle) takes the lease over and refreshes, and when the hung refresh finishes
/// afterwards it does not overwrite the newer value (its lease token is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_refresh_is_taken_over_after_its_lease_and_cannot_overwrite() {
    let env = TestEnv::with(Backend::Redis, |b| b.lock_ms(10)).await;
    let other = Cache::builder()
        .redis(env.server.as_ref().expect("redis").url())
        .namespace(TEST_NAMESPACE)
        .lock_ms(10)
        .build()
        .await
        .expect("second handle");
    let src = Source::new();
    assert_eq!(burst_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    let baseline = alive_tasks();
    src.gate_next();
    assert_eq!(burst_row(&env.cache, 1, &src).await, v(1, 1), "stale");
    guard("the first handle's refresh starts", src.entered()).await;
    src.ungate(); // run 2 stays held; later runs pass
    // Let the hung refresh's lease (100 ms) run out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(burst_row(&other, 1, &src).await, v(1, 1), "stale");
    eventually(
        "the second handle's refresh lands",
        Duration::from_secs(10),
        || {
            let (other, src) = (other.clone(), src.clone());
            async move { burst_row(&other, 1, &src).await == v(1, 3) }
        },
    )
    .await;
    src.open(1); // the hung refresh (run 2) finishes now
    settle(baseline).await;
    assert_eq!(src.finished(), 3);
    assert_eq!(
        burst_row(&env.cache, 1, &src).await,
        v(1, 3),
        "the hung refresh overwrote the newer value"
    );
    let (a, b) = (stats(&env.cache, BURST), stats(&other, BURST));
    assert_eq!(
        (a.refreshes, b.refreshes, src.runs()),
        (1, 1, 3),
        "{a:?} {b:?}"
    );
}

/// A live refresh whose loader runs several lease lengths (`lock_ms` 200 ms, the loader held
/// 600 ms) keeps its refresh lease (it renews it): another handle on the same Redis serves
/// the stale value meanwhile and starts no second refresh, and the held refresh's value lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_refresh_keeps_its_lease_past_lock_ms() {
    let env = TestEnv::with(Backend::Redis, |b| b.lock_ms(REFRESH_LOCK_MS)).await;
    let other = Cache::builder()
        .redis(env.server.as_ref().expect("redis").url())
        .namespace(TEST_NAMESPACE)
        .lock_ms(REFRESH_LOCK_MS)
        .build()
        .await
        .expect("second handle");
    let src = Source::new();
    assert_eq!(burst_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next();
    assert_eq!(burst_row(&env.cache, 1, &src).await, v(1, 1), "stale");
    guard("the refresh's loader starts", src.entered()).await;
    src.ungate(); // a second refresh, if one started, would not wait
    tokio::time::sleep(Duration::from_millis(3 * REFRESH_LOCK_MS)).await;
    for _ in 0..5 {
        assert_eq!(burst_row(&other, 1, &src).await, v(1, 1), "stale");
    }
    assert_eq!(src.runs(), 2, "no second refresh while the first one runs");
    src.open(1);
    for (name, cache) in [("first", &env.cache), ("second", &other)] {
        eventually(
            &format!("the {name} handle serves the refreshed value"),
            Duration::from_secs(10),
            || {
                let (cache, src) = (cache.clone(), src.clone());
                async move { burst_row(&cache, 1, &src).await == v(1, 2) }
            },
        )
        .await;
    }
    let (a, b) = (stats(&env.cache, BURST), stats(&other, BURST));
    assert_eq!(
        (a.refreshes, b.refreshes, src.runs()),
        (1, 0, 2),
        "{a:?} {b:?}"
    );
}

/// `lock_ms` of [`refresh_resumes_within_a_few_lock_ms_after_the_refresher_died`].
const REFRESH_LOCK_MS: u64 = 200;

/// A refresher that dies mid-load (its runtime dropped while the loader waits at a gate that
/// never opens: a process killed in a deploy, which releases nothing) holds the key's refresh
/// lease about `lock_ms`, not the 10 x `lock_ms` a live refresh may keep it: the surviving
/// handle is served the stale value meanwhile and runs a new refresh well within
/// 5 x `lock_ms` of the death. On Redis the refresher is a second handle on the same server;
/// memory handles do not share a store, so there it is the same handle, called on the
/// runtime that is dropped.
async fn refresh_resumes_within_a_few_lock_ms_after_the_refresher_died(env: TestEnv) {
    let src = Source::new();
    assert_eq!(burst_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next(); // run 2, the doomed refresh, waits at the gate for good

    let url = env.server.as_ref().map(RedisServer::url);
    let (cache, doomed_src) = (env.cache.clone(), src.clone());
    let (died_tx, died_rx) = tokio::sync::oneshot::channel();
    // A thread of its own, outside every runtime: nothing can run once its runtime is gone.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the refresher's runtime");
        rt.block_on(async move {
            let refresher = match url {
                Some(url) => Cache::builder()
                    .redis(url)
                    .namespace(TEST_NAMESPACE)
                    .lock_ms(REFRESH_LOCK_MS)
                    .build()
                    .await
                    .expect("the refresher's handle"),
                None => cache,
            };
            assert_eq!(
                burst_row(&refresher, 1, &doomed_src).await,
                v(1, 1),
                "stale"
            );
            guard("the doomed refresh's loader starts", doomed_src.entered()).await;
        });
        drop(rt); // the refresher dies mid-load, its refresh lease in the entry
        let _ = died_tx.send(Instant::now());
    });
    let died = guard("the refresher dies", died_rx)
        .await
        .expect("the refresher's thread panicked");
    src.ungate(); // later runs pass

    eventually(
        "the surviving handle runs a new refresh",
        Duration::from_secs(10),
        || {
            let (cache, src) = (env.cache.clone(), src.clone());
            async move {
                let got = burst_row(&cache, 1, &src).await;
                assert!(got == v(1, 1) || got == v(1, 3), "{got}");
                src.runs() >= 3
            }
        },
    )
    .await;
    let waited = died.elapsed();
    println!(
        "{:?}: a new refresh ran {waited:?} after the refresher died (lock_ms {REFRESH_LOCK_MS})",
        env.backend
    );
    assert!(
        waited < Duration::from_millis(5 * REFRESH_LOCK_MS),
        "the dead refresher blocked the key's refresh for {waited:?} (lock_ms {REFRESH_LOCK_MS})"
    );
    eventually(
        "the surviving handle serves the new refresh's value",
        Duration::from_secs(10),
        || {
            let (cache, src) = (env.cache.clone(), src.clone());
            async move { burst_row(&cache, 1, &src).await == v(1, 3) }
        },
    )
    .await;
    assert_eq!(
        (src.runs(), src.finished()),
        (3, 2),
        "the dead refresh never finished"
    );
}

/// The burst across two OS processes (`fresh-helper`, 32 callers each) on one Redis: the
/// loader counts its runs with `INCR` on a separate redis-server and is gated by a key there.
/// Exactly one refresh runs in total.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grace_burst_across_two_os_processes_runs_one_refresh() {
    const CALLS: usize = 32;
    let server = RedisServer::start();
    let counter_server = RedisServer::start();
    let counter = counter_server.raw().await;
    let helper = |mode: &str, start_at: u64, calls: usize| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fresh-helper"))
            .args([
                server.url(),
                counter_server.url(),
                mode.to_owned(),
                start_at.to_string(),
                calls.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn fresh-helper")
    };

    let prime = guard(
        "the priming helper",
        helper("prime", 0, 1).wait_with_output(),
    )
    .await
    .expect("prime helper");
    assert!(prime.status.success(), "prime helper: {}", prime.status);
    assert_eq!(counter.get_i64("fresh:loads").await, Some(1));
    // Both bursts start together, past the entry's 1 s TTL (and after the helpers' start-up).
    let start_at = unix_ms() + 1_500;
    let mut children: Vec<_> = (0..2).map(|_| helper("burst", start_at, CALLS)).collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("piped stdout")).lines())
        .collect();
    async fn next_report(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        phase: &str,
    ) -> FreshReport {
        loop {
            let line = guard(&format!("the helper's {phase} report"), lines.next_line())
                .await
                .expect("read helper stdout")
                .unwrap_or_else(|| panic!("helper exited before its {phase} report"));
            if let Ok(r) = serde_json::from_str::<FreshReport>(&line) {
                assert_eq!(r.phase, phase);
                return r;
            }
        }
    }

    for lines in &mut readers {
        let r = next_report(lines, "burst").await;
        assert_eq!(r.values.len(), CALLS);
        assert!(
            r.values.iter().all(|x| x.as_deref() == Some("run1")),
            "process {} got the stale value on every call: {:?}",
            r.pid,
            r.values
        );
        assert_eq!(r.stale_served, CALLS as u64, "process {}: {r:?}", r.pid);
    }
    let c = counter.clone();
    eventually(
        "one process's refresh loader starts",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move { c.get_i64("fresh:loads").await == Some(2) }
        },
    )
    .await;

    counter.set("fresh:open", b"1").await;
    let mut refreshes = 0;
    let mut loads = 0;
    for lines in &mut readers {
        let r = next_report(lines, "done").await;
        assert_eq!(
            r.values,
            vec![Some("run2".to_owned())],
            "process {} sees the refreshed value",
            r.pid
        );
        refreshes += r.refreshes;
        loads += r.loads;
    }
    for child in children {
        let status = guard("a helper exits", child.wait_with_output())
            .await
            .expect("wait for helper")
            .status;
        assert!(status.success(), "helper failed: {status}");
    }
    assert_eq!(
        counter.get_i64("fresh:loads").await,
        Some(2),
        "the prime load and ONE refresh across both processes"
    );
    assert_eq!(
        (refreshes, loads),
        (1, 1),
        "one refresh, in one of the processes"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Fail-safe.

#[cached(key = "failsafe:{id}", ttl = 1, stale = 2, cache = cache)]
async fn failsafe_row(cache: &Cache, id: u64, src: &Arc<Source>) -> Result<String, String> {
    src.load().await
}
const FAILSAFE: &str = "freshness::freshness::failsafe_row";

/// Refreshes fail (`Err`) during the grace window: every call still gets the stale value
/// (`Ok`), each failed refresh is counted once, and after the grace window (`stale = 2`) the
/// call gets the loader's `Err`.
async fn failing_refresh_serves_stale_until_grace_ends(env: TestEnv) {
    let src = Source::new();
    assert_eq!(failsafe_row(&env.cache, 1, &src).await, Ok(v(1, 1)));
    // The entry was stored before this instant with a TTL of ttl + stale = 3 s.
    let stored = Instant::now();
    let baseline = alive_tasks();
    src.fail_next();
    tokio::time::sleep(PAST_TTL).await;

    let mut calls = 0u64;
    while stats(&env.cache, FAILSAFE).refresh_errors < 3 {
        assert!(
            stored.elapsed() < Duration::from_millis(2_700),
            "3 failed refreshes take milliseconds; the grace window is over: {:?}",
            stats(&env.cache, FAILSAFE)
        );
        assert_eq!(
            failsafe_row(&env.cache, 1, &src).await,
            Ok(v(1, 1)),
            "the stale value, not the refresh's error"
        );
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle(baseline).await;
    let s = stats(&env.cache, FAILSAFE);
    println!("fail-safe: {calls} calls in the grace window, {s:?}");
    assert_eq!(src.runs(), 1 + src.failures(), "every refresh failed");
    assert_eq!(
        s.refresh_errors,
        src.failures(),
        "each failed refresh counted once"
    );
    assert_eq!(
        (s.refreshes, s.load_errors, s.loads),
        (s.refresh_errors, s.refresh_errors, 1 + s.refresh_errors),
        "{s:?}"
    );
    assert_eq!((s.stale_served, s.hits, s.misses), (calls, 0, 1), "{s:?}");

    // The grace window ends 3 s after the store: the key is gone, the error reaches the caller.
    tokio::time::sleep(Duration::from_millis(3_100).saturating_sub(stored.elapsed())).await;
    if let Some(raw) = env.raw().await {
        assert!(!raw.exists(&env.cache.full_key("failsafe:1")).await);
    }
    let n = src.runs() + 1;
    assert_eq!(
        failsafe_row(&env.cache, 1, &src).await,
        Err(format!("db down (run {n})"))
    );
    let s = stats(&env.cache, FAILSAFE);
    assert_eq!((s.misses, s.stale_served), (2, calls), "{s:?}");
}

#[cached(key = "panicky:{id}", ttl = 1, stale = 30, cache = cache)]
async fn panicky_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const PANICKY: &str = "freshness::freshness::panicky_row";

/// A refresh loader that panics: the stale value keeps being served and each panic counts as
/// a refresh error.
async fn panicking_refresh_keeps_serving_stale(env: TestEnv) {
    let src = Source::new();
    assert_eq!(panicky_row(&env.cache, 1, &src).await, v(1, 1));
    let baseline = alive_tasks();
    src.panic_next();
    tokio::time::sleep(PAST_TTL).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut calls = 0u64;
    while stats(&env.cache, PANICKY).refresh_errors < 2 {
        assert!(Instant::now() < deadline, "refreshes never failed");
        assert_eq!(panicky_row(&env.cache, 1, &src).await, v(1, 1));
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Still served after the panics.
    assert_eq!(panicky_row(&env.cache, 1, &src).await, v(1, 1));
    calls += 1;
    settle(baseline).await;
    let s = stats(&env.cache, PANICKY);
    println!("panicking refresh: {calls} calls, {s:?}");
    assert_eq!(src.runs(), 1 + src.panics());
    assert_eq!(s.refresh_errors, src.panics(), "each panic counted once");
    assert_eq!(
        (s.load_errors, s.misses, s.hits),
        (s.refresh_errors, 1, 0),
        "{s:?}"
    );
    assert_eq!(s.stale_served, calls, "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Invalidation in the grace window.

#[cached(key = "inv:{id}", ttl = 1, stale = 30, cache = cache)]
async fn inv_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const INV: &str = "freshness::freshness::inv_row";

#[invalidates("inv:{id}", cache = cache)]
async fn write_inv_row(cache: &Cache, id: u64, src: &Source) {
    src.write();
}

/// Version 1 is in its grace window and a refresh of it is running (it read version 1 and
/// is held at the gate). A write bumps the row to version 2 and its `#[invalidates]` returns.
/// Every read from then on returns version 2, and when the refresh finishes afterwards with
/// version 1 it does not store it (reads and the stored bytes stay at version 2).
async fn invalidation_in_grace_window_voids_stale_and_running_refresh(env: TestEnv) {
    let raw: Option<Raw> = env.raw().await;
    let full = env.cache.full_key("inv:1");
    let src = Source::new();
    assert_eq!(inv_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;

    src.gate_next(); // run 2 = the refresh
    let before_refresh = alive_tasks();
    assert_eq!(
        inv_row(&env.cache, 1, &src).await,
        v(1, 1),
        "stale, starts the refresh"
    );
    guard("the refresh's loader read version 1", src.entered()).await;
    src.ungate();

    write_inv_row(&env.cache, 1, &src).await;
    assert_eq!(src.version(), 2);
    assert_eq!(
        inv_row(&env.cache, 1, &src).await,
        v(2, 3),
        "the first read after the invalidation misses and loads version 2"
    );
    let reads = concurrent(16, |_| {
        let (cache, src) = (env.cache.clone(), src.clone());
        async move { inv_row(&cache, 1, &src).await }
    })
    .await;
    assert!(
        reads.iter().all(|x| *x == v(2, 3)),
        "every read after the invalidation gets version 2: {reads:?}"
    );
    assert_eq!(src.runs(), 3, "one load of version 2");
    if let Some(raw) = &raw {
        let bytes = raw.get(&full).await.expect("version 2 stored");
        assert_eq!(payload(&bytes), format!("\"{}\"", v(2, 3)));
    }

    // Let the refresh finish with version 1, and wait until its task is gone (store attempt
    // included).
    src.open(1);
    settle(before_refresh).await;
    assert_eq!(src.finished(), 3);
    if let Some(raw) = &raw {
        let bytes = raw.get(&full).await.expect("version 2 still stored");
        assert_eq!(
            payload(&bytes),
            format!("\"{}\"", v(2, 3)),
            "the refresh stored version 1 after the invalidation"
        );
    }
    let reads = concurrent(16, |_| {
        let (cache, src) = (env.cache.clone(), src.clone());
        async move { inv_row(&cache, 1, &src).await }
    })
    .await;
    assert!(
        reads.iter().all(|x| *x == v(2, 3)),
        "version 1 came back after the refresh finished: {reads:?}"
    );
    let s = stats(&env.cache, INV);
    assert_eq!(src.runs(), 3);
    assert_eq!(
        (s.misses, s.hits, s.loads, s.refreshes, s.stale_served),
        (2, 32, 3, 1, 1),
        "{s:?}"
    );
    assert_eq!(
        stats(&env.cache, "freshness::freshness::write_inv_row").invalidations,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 5. XFetch early refresh.

#[cached(key = "xf:{id}", ttl = 1, early_refresh = 1.0, cache = cache)]
async fn xf_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const XF: &str = "freshness::freshness::xf_row";

/// How long the hot-key run lasts: 50 expiry cycles of the 1 s TTL.
const XFETCH_RUN: Duration = Duration::from_secs(50);

/// A hot key (64 caller tasks, one call each per 20 ms) with `early_refresh = 1.0`, a 100 ms
/// loader and `ttl = 1`, for 50 expiry cycles: after the first load no call ever waits on a
/// loader (`misses` stays 1), because XFetch refreshes the entry in the background before
/// every expiry (at least 49 early refreshes in 50 s of 1 s entries).
async fn xfetch_hot_key_never_waits_on_a_loader(env: TestEnv) {
    let src = Source::with_delay(Duration::from_millis(100));
    assert_eq!(xf_row(&env.cache, 1, &src).await, v(1, 1));
    let baseline = alive_tasks();
    let calls = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + XFETCH_RUN;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (cache, src, calls) = (env.cache.clone(), src.clone(), calls.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let value = xf_row(&cache, 1, &src).await;
                    assert!(value.starts_with("db1/run"), "{value}");
                    calls.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        guard_for("a hot-key caller", XFETCH_RUN, t)
            .await
            .expect("caller panicked");
    }
    settle(baseline).await;
    let s = stats(&env.cache, XF);
    let calls = calls.load(SeqCst);
    println!(
        "xfetch ({:?}): {} calls in {XFETCH_RUN:?}, {} early refreshes, {s:?}",
        env.backend,
        calls + 1,
        s.early_refreshes
    );
    assert_eq!(
        (s.misses, s.lock_waits, s.stale_served),
        (1, 0, 0),
        "a call waited on a loader: {s:?}"
    );
    assert_eq!(s.hits, calls, "every call but the first is a hit: {s:?}");
    assert!(
        s.early_refreshes >= 49,
        "the entry was refreshed before each of the 50 expiries: {s:?}"
    );
    assert_eq!(
        (s.refreshes, s.loads, src.runs(), s.load_errors),
        (
            s.early_refreshes,
            1 + s.early_refreshes,
            1 + s.early_refreshes,
            0
        ),
        "{s:?}"
    );
}

#[cached(key = "xf_far:{id}", ttl = 3600, early_refresh = 10.0, cache = cache)]
async fn xf_far(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}

#[cached(key = "xf_near:{id}", ttl = 1, early_refresh = 10.0, cache = cache)]
async fn xf_near(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}

/// XFetch's decision, with a seeded source (`xfetch_seed(7)`) and a 100 ms loader, `B = 10`
/// (window `load_ms * B` = 1 s): an entry an hour from expiry never refreshes early (1000
/// hits, `P = e^-3600` each), an entry less than 1 s from expiry (`ttl = 1`) does within a
/// few hits (`P >= e^-1` each), and exactly one refresh runs for it.
async fn xfetch_refreshes_only_near_expiry(env: TestEnv) {
    let src = Source::with_delay(Duration::from_millis(100));
    assert_eq!(xf_far(&env.cache, 1, &src).await, v(1, 1));
    for _ in 0..1000 {
        assert_eq!(xf_far(&env.cache, 1, &src).await, v(1, 1));
    }
    let s = stats(&env.cache, "freshness::freshness::xf_far");
    assert_eq!(
        (s.hits, s.early_refreshes, s.refreshes, src.runs()),
        (1000, 0, 0, 1),
        "{s:?}"
    );

    let src = Source::with_delay(Duration::from_millis(100));
    assert_eq!(xf_near(&env.cache, 1, &src).await, v(1, 1));
    let before = alive_tasks();
    src.gate_next(); // the refresh cannot land while we count hits
    let mut hits = 0;
    while stats(&env.cache, "freshness::freshness::xf_near").early_refreshes == 0 {
        assert!(hits < 200, "no early refresh in 200 hits within the window");
        assert_eq!(xf_near(&env.cache, 1, &src).await, v(1, 1));
        hits += 1;
    }
    println!("xfetch near expiry: the early refresh started at hit {hits}");
    guard("the early refresh's loader starts", src.entered()).await;
    src.open(1);
    settle(before).await;
    let s = stats(&env.cache, "freshness::freshness::xf_near");
    assert_eq!(
        (s.misses, s.hits, s.early_refreshes, s.refreshes, src.runs()),
        (1, hits, 1, 1, 2),
        "{s:?}"
    );
    assert_eq!(
        xf_near(&env.cache, 1, &src).await,
        v(1, 2),
        "the refreshed value, as a hit"
    );
    assert_eq!(stats(&env.cache, "freshness::freshness::xf_near").misses, 1);
}

// ---------------------------------------------------------------------------------------------
// 6. Soft timeout.

#[cached(key = "soft:{id}", ttl = 1, stale = 30, timeout_ms = 50, cache = cache)]
async fn soft_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const SOFT: &str = "freshness::freshness::soft_row";

/// `timeout_ms = 50` in the grace window with the refresh's loader blocked: the call returns
/// the stale value while the loader is still blocked (soft timeout), and the refresh goes on:
/// once released, its result is stored and the next call gets it as a hit.
async fn soft_timeout_returns_stale_and_refresh_lands_later(env: TestEnv) {
    let src = Source::new();
    assert_eq!(soft_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    let baseline = alive_tasks();
    src.gate_next();

    let t0 = Instant::now();
    let value = guard(
        "the call with timeout_ms = 50",
        soft_row(&env.cache, 1, &src),
    )
    .await;
    let elapsed = t0.elapsed();
    assert_eq!(value, v(1, 1));
    assert_eq!(
        src.finished(),
        1,
        "returned while the refresh's loader had not finished"
    );
    println!(
        "soft timeout ({:?}): the call returned the stale value after {} ms (timeout_ms = 50)",
        env.backend,
        elapsed.as_millis()
    );
    guard("the refresh's loader starts", src.entered()).await;
    assert_eq!(src.finished(), 1, "the loader is still blocked");
    let s = stats(&env.cache, SOFT);
    assert_eq!(
        (
            s.soft_timeouts,
            s.stale_served,
            s.hits,
            s.misses,
            s.refreshes
        ),
        (1, 1, 0, 1, 1),
        "{s:?}"
    );

    // While the refresh still runs, another call waits for it (this process's refresh) up to
    // timeout_ms again, and gets the stale value: a second soft timeout.
    let value = guard("a second call", soft_row(&env.cache, 1, &src)).await;
    assert_eq!(value, v(1, 1));
    let s = stats(&env.cache, SOFT);
    assert_eq!(
        (s.soft_timeouts, s.stale_served, src.runs()),
        (2, 2, 2),
        "{s:?}"
    );

    // Released, the refresh stores its result, which the next call gets as a hit.
    src.open(1);
    settle(baseline).await;
    assert_eq!(soft_row(&env.cache, 1, &src).await, v(1, 2));
    let s = stats(&env.cache, SOFT);
    assert_eq!(
        (src.runs(), s.refreshes, s.soft_timeouts, s.misses, s.hits),
        (2, 1, 2, 1, 1),
        "{s:?}"
    );
}

#[cached(key = "soft_wait:{id}", ttl = 1, stale = 30, timeout_ms = 10_000, cache = cache)]
async fn soft_wait_row(cache: &Cache, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}
const SOFT_WAIT: &str = "freshness::freshness::soft_wait_row";

/// A refresh that completes within `timeout_ms`: the waiting caller gets the fresh value, not
/// the stale one (the loader is held until the caller is waiting, then released).
async fn refresh_within_timeout_returns_fresh_value(env: TestEnv) {
    let src = Source::new();
    assert_eq!(soft_wait_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next();
    let call = tokio::spawn({
        let (cache, src) = (env.cache.clone(), src.clone());
        async move { soft_wait_row(&cache, 1, &src).await }
    });
    guard("the refresh's loader starts", src.entered()).await;
    src.open(1);
    let value = guard("the waiting call", call)
        .await
        .expect("call panicked");
    assert_eq!(value, v(1, 2), "the refreshed value, not the stale one");
    let s = stats(&env.cache, SOFT_WAIT);
    assert_eq!(
        (
            s.misses,
            s.stale_served,
            s.soft_timeouts,
            s.hits,
            s.refreshes
        ),
        (2, 0, 0, 0, 1),
        "{s:?}"
    );
    assert_eq!(soft_wait_row(&env.cache, 1, &src).await, v(1, 2));
    assert_eq!(stats(&env.cache, SOFT_WAIT).hits, 1, "stored: a hit");
    assert_eq!(src.runs(), 2);
}

/// `timeout_ms` with a refresh that fails: the waiting caller gets the stale value as soon as
/// the refresh failed (fail-safe; no soft timeout: it did not wait `timeout_ms`).
async fn soft_wait_on_a_failing_refresh_returns_stale(env: TestEnv) {
    let src = Source::new();
    assert_eq!(soft_wait_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next();
    src.panic_next();
    let call = tokio::spawn({
        let (cache, src) = (env.cache.clone(), src.clone());
        async move { soft_wait_row(&cache, 1, &src).await }
    });
    guard("the refresh's loader starts", src.entered()).await;
    src.open(1); // the loader panics now
    let value = guard(
        "the waiting call (timeout_ms = 10 s: returns on the failure, not on the timeout)",
        call,
    )
    .await
    .expect("the caller must not see the refresh's panic");
    assert_eq!(value, v(1, 1), "the stale value (fail-safe)");
    let s = stats(&env.cache, SOFT_WAIT);
    assert_eq!(
        (s.stale_served, s.soft_timeouts, s.refresh_errors, s.misses),
        (1, 0, 1, 1),
        "{s:?}"
    );
}

/// A second caller in the same process arriving while this process's refresh runs (its lease
/// already in the entry) joins that refresh and waits for it too, as the first caller does
/// (notes: "waits up to timeout_ms for the refresh (started or joined in this process)";
/// only ANOTHER process's lease means "stale at once"): both get the fresh value.
///
/// Memory backend on a current-thread runtime, so that "the second caller has made its
/// decision" is a scheduling fact, not a timing guess: its store reads finish on their first
/// poll, and `yield_now` lets it run until it either returned or waits.
#[tokio::test(flavor = "current_thread")]
async fn soft_timeout_second_caller_joins_this_process_refresh() {
    let env = TestEnv::new(Backend::Memory).await;
    let src = Source::new();
    assert_eq!(soft_wait_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next();
    let spawn_call = || {
        tokio::spawn({
            let (cache, src) = (env.cache.clone(), src.clone());
            async move { soft_wait_row(&cache, 1, &src).await }
        })
    };
    let first = spawn_call();
    guard("the refresh's loader starts", src.entered()).await;
    // The refresh holds its lease now; a second caller arrives and runs until it waits.
    let second = spawn_call();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let returned_early = second.is_finished();
    src.open(1);
    let first = guard("the first caller", first).await.expect("panicked");
    let second = guard("the second caller", second).await.expect("panicked");
    let s = stats(&env.cache, SOFT_WAIT);
    println!(
        "two soft-timeout callers: first {first}, second {second} (returned before the \
         refresh finished: {returned_early}), {s:?}"
    );
    assert_eq!(first, v(1, 2), "the first caller waited for the refresh");
    assert_eq!(
        (second.as_str(), returned_early),
        (v(1, 2).as_str(), false),
        "the second caller returned the stale value at once instead of joining this \
         process's refresh (timeout_ms = 10 s; the refresh finished right after)"
    );
    assert_eq!(
        (s.stale_served, s.soft_timeouts, s.misses),
        (0, 0, 3),
        "{s:?}"
    );
    assert_eq!(src.runs(), 2);
}

/// `timeout_ms` when ANOTHER handle (process) holds the refresh lease: the call returns the
/// stale value at once, without waiting and without a refresh of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soft_timeout_returns_stale_at_once_when_another_process_refreshes() {
    let env = TestEnv::new(Backend::Redis).await;
    let other = Cache::builder()
        .redis(env.server.as_ref().expect("redis").url())
        .namespace(TEST_NAMESPACE)
        .build()
        .await
        .expect("second handle");
    let src = Source::new();
    assert_eq!(soft_wait_row(&env.cache, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    src.gate_next();
    let other_call = tokio::spawn({
        let (cache, src) = (other.clone(), src.clone());
        async move { soft_wait_row(&cache, 1, &src).await }
    });
    guard("the other handle's refresh starts", src.entered()).await;

    let value = guard(
        "a call while another process refreshes",
        soft_wait_row(&env.cache, 1, &src),
    )
    .await;
    assert_eq!(value, v(1, 1));
    assert_eq!(
        src.finished(),
        1,
        "returned while the other refresh is blocked"
    );
    let s = stats(&env.cache, SOFT_WAIT);
    assert_eq!(
        (s.stale_served, s.soft_timeouts, s.refreshes, s.loads),
        (1, 0, 0, 1),
        "{s:?}"
    );

    src.open(1);
    assert_eq!(
        guard("the other handle's call", other_call)
            .await
            .expect("panicked"),
        v(1, 2)
    );
    assert_eq!(src.runs(), 2);
}

backend_tests!(
    grace_burst_of_64_serves_stale_and_refreshes_once,
    failing_refresh_serves_stale_until_grace_ends,
    panicking_refresh_keeps_serving_stale,
    invalidation_in_grace_window_voids_stale_and_running_refresh,
    soft_timeout_returns_stale_and_refresh_lands_later,
    refresh_within_timeout_returns_fresh_value,
    soft_wait_on_a_failing_refresh_returns_stale,
);

mod seeded {
    use super::*;

    cache_tests::backend_tests!(
        with |b| b.xfetch_seed(7);
        xfetch_hot_key_never_waits_on_a_loader,
        xfetch_refreshes_only_near_expiry,
    );
}

mod short_lease {
    use super::*;

    cache_tests::backend_tests!(
        with |b| b.lock_ms(super::REFRESH_LOCK_MS);
        refresh_resumes_within_a_few_lock_ms_after_the_refresher_died,
    );
}
