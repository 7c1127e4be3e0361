//! The framework never issues `KEYS`, `FLUSHALL`, `FLUSHDB`, `SCAN` or a blocking command: after a
//! full mix of operations against one server (hits, misses, negative entries, a stampede, a lease
//! wait across two caches, invalidations, a failing loader's lease release, garbage bytes), the
//! server's `INFO commandstats` lists only the commands the README names.
//!
//! Accounting: the test's own raw commands (planting garbage) run before `CONFIG RESETSTAT`, and
//! during the framework phase the test only reads the caches' own stats; the one raw command after
//! it is the `INFO` that reads the counters. So everything counted between the reset and that
//! `INFO` was issued by the framework (plus `CONFIG RESETSTAT` itself).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{RedisServer, TEST_NAMESPACE, eventually, guard};
use tokio::sync::Notify;

const BOUND: Duration = Duration::from_secs(30);

#[cached(key = "cs:{id}", ttl = 300, name = "cs.get", cache = cache)]
async fn get(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    format!("v{id}")
}

#[cached(key = "csn:{id}", ttl = 300, name = "cs.find", cache = cache)]
async fn find(cache: &Cache, id: u64) -> Option<String> {
    (id == 0).then(|| "zero".to_owned())
}

#[cached(key = "csf:{id}", ttl = 300, name = "cs.fallible", cache = cache)]
async fn fallible(cache: &Cache, id: u64, fail: bool) -> Result<String, String> {
    if fail {
        Err(format!("no {id}"))
    } else {
        Ok(format!("ok{id}"))
    }
}

/// Loads only once `gate` is notified.
#[cached(key = "css:{id}", ttl = 300, name = "cs.slow", cache = cache)]
async fn slow(cache: &Cache, id: u64, gate: Arc<Notify>) -> String {
    gate.notified().await;
    format!("slow{id}")
}

#[invalidates("cs:{id}", "csn:{id}", cache = cache, name = "cs.write")]
async fn write(cache: &Cache, id: u64) -> Result<(), String> {
    Ok(())
}

/// Commands the framework may issue (README, "Failure behaviour"), as `INFO commandstats` names
/// them: plus `del` (called inside the release script), `pexpire` (inside the lease-extension
/// script), `script|load` (redis-rs loads a script
/// the server does not know yet) and `client|setinfo` (redis-rs's connection set-up). Connection
/// commands a URL can ask for (`auth`, `hello`, `select`) are allowed too.
const ALLOWED: &[&str] = &[
    "get",
    "set",
    "del",
    "pexpire",
    "evalsha",
    "eval",
    "script|load",
    "unlink",
    "ping",
    "client|setinfo",
    "auth",
    "hello",
    "select",
];
/// Issued by this test itself.
const TEST_OWN: &[&str] = &["config|resetstat", "info"];
/// Never: scans the keyspace, wipes it, or blocks the server / the connection.
const FORBIDDEN: &[&str] = cache_tests::FORBIDDEN_COMMANDS;

/// `cmdstat_<name>:calls=<n>,...` lines of `INFO commandstats`.
fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("cmdstat_")?;
            let (name, fields) = rest.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_ascii_lowercase(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn framework_issues_no_keys_flush_scan_or_blocking_commands() {
    let server = RedisServer::start();
    let raw = server.raw().await;
    let loads = Arc::new(AtomicUsize::new(0));

    // Test-side writes first, then reset the counters.
    let garbage_key = format!("{TEST_NAMESPACE}:cs:3");
    raw.set(&garbage_key, b"\xff\x00 not an envelope").await;
    let _: () = raw.cmd(redis::cmd("CONFIG").arg("RESETSTAT")).await;

    // ---- Framework phase: only the caches talk to Redis. ----
    let build = || {
        Cache::builder()
            .redis(server.url())
            .namespace(TEST_NAMESPACE)
            .build()
    };
    let a = guard("build cache a", build()).await.expect("cache a");
    let b = guard("build cache b", build()).await.expect("cache b");

    // Misses and hits.
    for _ in 0..3 {
        assert_eq!(get(&a, 1, &loads).await, "v1");
    }
    // Negative entries and a cached value of an Option fn.
    for _ in 0..2 {
        assert_eq!(find(&a, 1).await, None);
        assert_eq!(find(&a, 0).await.as_deref(), Some("zero"));
    }
    // Garbage bytes under a key: decode error, compare-and-delete, reload, overwrite.
    assert_eq!(get(&a, 3, &loads).await, "v3");
    assert_eq!(get(&a, 3, &loads).await, "v3");
    // Stampede in one process (single flight), on both caches at once (lease + polling).
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let loads = loads.clone();
        tasks.push(tokio::spawn(async move { get(&cache, 2, &loads).await }));
    }
    for t in tasks {
        assert_eq!(guard("stampede call", t).await.expect("no panic"), "v2");
    }
    // A lease wait across caches ("processes"): b waits while a loads.
    let gate = Arc::new(Notify::new());
    let a_task = {
        let (a, gate) = (a.clone(), gate.clone());
        tokio::spawn(async move { slow(&a, 1, gate).await })
    };
    eventually("cache a holds the lease and loads", BOUND, || async {
        a.stats().function("cs.slow").loads == 1
    })
    .await;
    let b_task = {
        let b = b.clone();
        // Never notified: b must not run its own loader.
        tokio::spawn(async move { slow(&b, 1, Arc::new(Notify::new())).await })
    };
    eventually("cache b waits for a's lease", BOUND, || async {
        b.stats().function("cs.slow").lock_waits == 1
    })
    .await;
    gate.notify_one();
    assert_eq!(guard("a's load", a_task).await.expect("no panic"), "slow1");
    assert_eq!(guard("b's wait", b_task).await.expect("no panic"), "slow1");
    // A failing loader: lease released; then a success is cached.
    assert_eq!(fallible(&a, 1, true).await, Err("no 1".to_owned()));
    assert_eq!(fallible(&a, 1, false).await, Ok("ok1".to_owned()));
    assert_eq!(fallible(&b, 1, false).await, Ok("ok1".to_owned()));
    // Invalidation (#[invalidates] and manual), then reload.
    assert_eq!(write(&a, 1).await, Ok(()));
    a.invalidate("cs:2").await.expect("manual invalidation");
    assert_eq!(get(&b, 1, &loads).await, "v1");
    assert_eq!(get(&b, 2, &loads).await, "v2");

    // The mix really happened (the caches' own counters, no Redis command).
    let (sa, sb) = (a.stats(), b.stats());
    let sum = |name: &str| {
        let (x, y) = (sa.function(name), sb.function(name));
        (
            x.hits + y.hits,
            x.misses + y.misses,
            x.lock_waits + y.lock_waits,
        )
    };
    assert!(sum("cs.get").0 >= 2, "hits: {sa:?} {sb:?}");
    assert!(sa.function("cs.find").negative_hits >= 1, "{sa:?}");
    assert!(sa.function("cs.get").decode_errors >= 1, "{sa:?}");
    assert_eq!(sb.function("cs.slow").lock_waits, 1, "{sb:?}");
    assert_eq!(sb.function("cs.slow").loads, 0, "{sb:?}");
    assert_eq!(sa.function("cs.fallible").load_errors, 1, "{sa:?}");
    assert_eq!(sa.function("cs.write").invalidations, 2, "{sa:?}");
    for s in [&sa, &sb] {
        for (name, f) in s.iter() {
            assert_eq!(f.backend_errors, 0, "{name}: {f:?}");
        }
    }

    // ---- Read the server's counters. ----
    let info: String = raw.cmd(redis::cmd("INFO").arg("commandstats")).await;
    let used = parse_commandstats(&info);
    assert!(!used.is_empty(), "INFO commandstats parsed: {info}");

    for name in FORBIDDEN {
        assert!(
            !used.contains_key(*name),
            "the framework issued {name}: {used:?}"
        );
    }
    let unexpected: Vec<_> = used
        .keys()
        .filter(|n| !ALLOWED.contains(&n.as_str()) && !TEST_OWN.contains(&n.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "commands outside the allowed set {ALLOWED:?}: {unexpected:?} (all: {used:?})"
    );
    for needed in ["get", "set", "evalsha", "unlink", "del"] {
        assert!(
            used.get(needed).copied().unwrap_or(0) > 0,
            "the mix exercised {needed}: {used:?}"
        );
    }
    let framework: Vec<String> = used
        .iter()
        .filter(|(n, _)| !TEST_OWN.contains(&n.as_str()))
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    println!("commands issued by the framework: {}", framework.join(", "));
}
