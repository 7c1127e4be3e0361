//! The cache on a real Redis Cluster (3 masters + 3 replicas on loopback, built per test by
//! [`RedisCluster::start`]): behaviour, negative caching, a cross-cache stampede, invalidation
//! of keys in different slots, tags whose members live on several nodes, failovers under
//! load (a coordinated `CLUSTER FAILOVER`, and a master killed with `SIGKILL`), a slot
//! resharded under load (`-ASK`, then `-MOVED`), a cluster that comes up after `build()`, a
//! TLS-only cluster, and the least ACL.
//!
//! Each test has its own cluster (nextest runs every test in its own process, and the failover
//! tests change the topology). Every check of what is stored goes through a raw cluster
//! connection, behind the cache's back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{RedisCluster, eventually, guard};
use tokio::sync::{Barrier, Semaphore};

const NS: &str = "ctest";

async fn cache_on(cluster: &RedisCluster) -> Cache {
    Cache::builder()
        .redis_cluster(cluster.urls())
        .namespace(NS)
        .circuit_breaker(3, Duration::from_millis(200))
        .invalidation_retry_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .require_connection()
        .build()
        .await
        .expect("cache on the cluster")
}

fn full(rendered: &str) -> String {
    format!("{NS}:{rendered}")
}

// ---------------------------------------------------------------------------------------------
// Behaviour: hit, miss, negative caching, on keys spread over every master.

#[cached(key = "user:{id}", ttl = 300, cache = cache)]
async fn user(cache: &Cache, id: u64, loads: &AtomicUsize) -> Result<Option<String>, String> {
    loads.fetch_add(1, SeqCst);
    Ok((!id.is_multiple_of(5)).then(|| format!("user-{id}")))
}

/// Calls `user` twice for each of `ids` (keys on all three masters, checked): a miss, then a
/// hit or negative hit, and the entry is in the cluster. One load per key.
async fn misses_then_hits_on_every_master(
    cluster: &RedisCluster,
    cache: &Cache,
    raw: &cache_tests::cluster::RawCluster,
    ids: &[u64],
) {
    let loads = AtomicUsize::new(0);
    let masters: HashSet<u16> = ids
        .iter()
        .map(|id| cluster.master_for_key(&full(&format!("user:{id}"))))
        .collect();
    assert_eq!(masters.len(), 3, "keys on every master: {masters:?}");
    for &id in ids {
        let want = (!id.is_multiple_of(5)).then(|| format!("user-{id}"));
        assert_eq!(user(cache, id, &loads).await, Ok(want.clone()), "miss {id}");
        assert_eq!(user(cache, id, &loads).await, Ok(want), "hit {id}");
        assert!(
            raw.exists(&full(&format!("user:{id}"))).await,
            "entry {id} stored in the cluster"
        );
    }
    assert_eq!(loads.load(SeqCst), ids.len(), "one load per key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hit_miss_and_negative_entries_on_every_master() {
    let cluster = RedisCluster::start();
    let cache = cache_on(&cluster).await;
    assert_eq!(cache.backend_kind(), "redis-cluster");
    let raw = cluster.raw().await;
    let ids: Vec<u64> = (0..40).collect();
    // The harness's slot computation and slot map agree with the cluster's (the helper then
    // checks that the keys land on all three masters, else this test would say nothing
    // about routing).
    let map = cluster.slot_map();
    for id in &ids {
        let k = full(&format!("user:{id}"));
        assert_eq!(
            cache_tests::key_slot(&k),
            cluster.slot_of(&k),
            "slot of {k}"
        );
        assert_eq!(
            map.master_for_key(&k),
            cluster.master_for_key(&k),
            "master of {k}"
        );
    }
    misses_then_hits_on_every_master(&cluster, &cache, &raw, &ids).await;
    let s = cache.stats().function("cluster::user");
    assert_eq!(
        (s.misses, s.loads, s.hits, s.negative_hits),
        (40, 40, 32, 8),
        "{s:?}"
    );
    assert_eq!((s.backend_errors, s.backend_skipped), (0, 0), "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// Stampede: 64 callers on 4 caches (4 connections, 4 in-process flights: like 4 processes)
// released together; the loader runs once, under the lease taken on the key's master.

#[cached(key = "hot:{id}", ttl = 300, cache = cache)]
async fn hot(cache: &Cache, id: u64, loads: &AtomicUsize, gate: &Semaphore) -> String {
    loads.fetch_add(1, SeqCst);
    let _permit = gate.acquire().await.expect("gate open");
    format!("hot-{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_of_64_callers_on_4_caches_runs_the_loader_once() {
    let cluster = RedisCluster::start();
    let mut caches = Vec::new();
    for _ in 0..4 {
        caches.push(cache_on(&cluster).await);
    }
    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let start = Arc::new(Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let cache = caches[i % 4].clone();
            let (loads, gate, start) = (loads.clone(), gate.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                hot(&cache, 7, &loads, &gate).await
            })
        })
        .collect();
    // Every caller has missed: 4 leaders (one per cache) went to the lease, one won it.
    eventually("all 64 callers missed", Duration::from_secs(20), || {
        let caches = caches.clone();
        async move {
            caches
                .iter()
                .map(|c| c.stats().function("cluster::hot").misses)
                .sum::<u64>()
                == 64
        }
    })
    .await;
    // And the three losers wait for the winner's value.
    eventually(
        "3 caches wait on the lease",
        Duration::from_secs(20),
        || {
            let caches = caches.clone();
            async move {
                caches
                    .iter()
                    .map(|c| c.stats().function("cluster::hot").lock_waits)
                    .sum::<u64>()
                    == 3
            }
        },
    )
    .await;
    gate.add_permits(1000);
    for t in tasks {
        assert_eq!(guard("a stampeding call", t).await.expect("task"), "hot-7");
    }
    assert_eq!(loads.load(SeqCst), 1, "exactly one loader run");
    for c in &caches {
        let s = c.stats().function("cluster::hot");
        assert_eq!((s.lock_timeouts, s.backend_errors), (0, 0), "{s:?}");
    }
}

/// 4 OS processes (the `stampede-helper` binary, given the cluster's seed nodes) x 25 calls on
/// one cold key: the loader runs once in total. The loader waits on a gate key that the test
/// sets only once every process reported all its calls missed, so the four processes are in
/// the stampede together (whatever the machine's load), and three of them wait on the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_across_4_processes_on_the_cluster_runs_the_loader_once() {
    const PROCESSES: usize = 4;
    const CALLS: usize = 25;
    let cluster = RedisCluster::start();
    let raw = cluster.raw().await;
    let counter_key = "test:stampede:loader-runs";
    let gate = "test:stampede:gate";
    let start_at = cache_tests::unix_ms();
    // `CACHE_TESTS_STAMPEDE_HELPER` overrides the binary (a target directory shared by several
    // checkouts holds whichever one was built last under the same path).
    let helper = std::env::var("CACHE_TESTS_STAMPEDE_HELPER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stampede-helper").to_owned());
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            tokio::process::Command::new(&helper)
                .args([
                    cluster.urls().join(","),
                    "xproc".to_owned(),
                    "42".to_owned(),
                    counter_key.to_owned(),
                    start_at.to_string(),
                    CALLS.to_string(),
                    gate.to_owned(),
                ])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn stampede-helper")
        })
        .collect();
    eventually(
        "every process in the stampede",
        Duration::from_secs(30),
        || async { raw.get_i64(&format!("{gate}:missed")).await == Some(PROCESSES as i64) },
    )
    .await;
    assert_eq!(
        raw.get_i64(counter_key).await,
        Some(1),
        "one loader runs while every process waits"
    );
    let _: () = raw.cmd(redis::cmd("SET").arg(gate).arg(1)).await;
    let mut reports = Vec::new();
    for child in children {
        let out = guard("a stampede-helper process", child.wait_with_output())
            .await
            .expect("wait for helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "helper failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no report:\nstdout: {stdout}\nstderr: {stderr}"));
        let report: cache_tests::HelperReport = serde_json::from_str(line).expect("report");
        reports.push(report);
    }
    for report in &reports {
        assert_eq!(report.values.len(), CALLS);
        assert!(
            report
                .values
                .iter()
                .all(|v| v.as_deref() == Some("value-42")),
            "process {} got the value: {:?}",
            report.pid,
            report.values
        );
    }
    assert_eq!(
        reports.iter().map(|r| r.misses).sum::<u64>(),
        (PROCESSES * CALLS) as u64,
        "every call missed"
    );
    assert_eq!(
        reports.iter().map(|r| r.lock_waits).sum::<u64>(),
        PROCESSES as u64 - 1,
        "the processes that lost the lease waited on it: {:?}",
        reports.iter().map(|r| r.lock_waits).collect::<Vec<_>>()
    );
    let total = raw.get_i64(counter_key).await.unwrap_or(0);
    assert_eq!(
        total,
        1,
        "loader runs in total (per process: {:?})",
        reports.iter().map(|r| r.local_loads).collect::<Vec<_>>()
    );
    assert!(raw.exists("xproc:stampede:42").await, "cached afterwards");
}

// ---------------------------------------------------------------------------------------------
// Invalidation of several keys in different slots (one UNLINK per slot; a single multi-key
// UNLINK would be refused with CROSSSLOT).

#[cached(key = "a:{x}", ttl = 300, cache = cache)]
async fn a(cache: &Cache, x: u64, version: &AtomicU64) -> String {
    format!("a{x}-v{}", version.load(SeqCst))
}

#[cached(key = "b:{y}", ttl = 300, cache = cache)]
async fn b(cache: &Cache, y: u64, version: &AtomicU64) -> String {
    format!("b{y}-v{}", version.load(SeqCst))
}

#[invalidates("a:{x}", "b:{y}", "a:{y}", "b:{x}", cache = cache)]
async fn write_ab(cache: &Cache, x: u64, y: u64, version: &AtomicU64) -> Result<(), String> {
    version.fetch_add(1, SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidates_deletes_keys_in_different_slots() {
    let cluster = RedisCluster::start();
    let cache = cache_on(&cluster).await;
    let raw = cluster.raw().await;
    let version = AtomicU64::new(1);
    let (x, y) = (1, 2);
    let keys = [
        full(&format!("a:{x}")),
        full(&format!("b:{y}")),
        full(&format!("a:{y}")),
        full(&format!("b:{x}")),
    ];
    let slots: HashSet<u16> = keys.iter().map(|k| cluster.slot_of(k)).collect();
    let masters: HashSet<u16> = keys.iter().map(|k| cluster.master_for_key(k)).collect();
    assert_eq!(slots.len(), 4, "four different slots");
    assert!(masters.len() >= 2, "on at least two masters: {masters:?}");

    for round in 1..=3u64 {
        assert_eq!(a(&cache, x, &version).await, format!("a{x}-v{round}"));
        assert_eq!(b(&cache, y, &version).await, format!("b{y}-v{round}"));
        assert_eq!(a(&cache, y, &version).await, format!("a{y}-v{round}"));
        assert_eq!(b(&cache, x, &version).await, format!("b{x}-v{round}"));
        for k in &keys {
            assert!(raw.exists(k).await, "{k} cached before the write");
        }
        write_ab(&cache, x, y, &version).await.expect("write");
        for k in &keys {
            assert!(
                !raw.exists(k).await,
                "{k} deleted when #[invalidates] returned"
            );
        }
    }
    let s = cache.stats().function("cluster::write_ab");
    assert_eq!(s.invalidations, 12, "{s:?}");
    assert_eq!(
        (
            s.backend_errors,
            s.invalidations_failed,
            s.invalidation_retries
        ),
        (0, 0, 0),
        "delivered at once, not through the retry queue: {s:?}"
    );
    // A manual invalidation too.
    a(&cache, x, &version).await;
    cache
        .invalidate(&format!("a:{x}"))
        .await
        .expect("invalidate");
    assert!(!raw.exists(&keys[0]).await);
}

// ---------------------------------------------------------------------------------------------
// Tags: the tag's member set lives in one slot, its members in many; a tag invalidation
// deletes every member wherever it lives.

#[cached(key = "member:{id}", ttl = 300, tags = ["org:{org}"], cache = cache)]
async fn member(cache: &Cache, org: u64, id: u64, version: &AtomicU64) -> String {
    format!("m{id}-org{org}-v{}", version.load(SeqCst))
}

#[invalidates(tags = ["org:{org}"], cache = cache)]
async fn rename_org(cache: &Cache, org: u64, version: &AtomicU64) -> Result<(), String> {
    version.fetch_add(1, SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_invalidation_deletes_members_on_every_master() {
    let cluster = RedisCluster::start();
    let cache = cache_on(&cluster).await;
    let raw = cluster.raw().await;
    let version = AtomicU64::new(1);
    let ids: Vec<u64> = (0..30).collect();
    let masters: HashSet<u16> = ids
        .iter()
        .map(|id| cluster.master_for_key(&full(&format!("member:{id}"))))
        .collect();
    assert_eq!(masters.len(), 3, "members on every master");

    for &id in &ids {
        member(&cache, 7, id, &version).await;
        member(&cache, 8, 1000 + id, &version).await;
    }
    let tag_key = full("!tag:org:7");
    assert_eq!(raw.zcard(&tag_key).await, 30, "30 registered members");

    // `#[invalidates(tags = ..)]`.
    rename_org(&cache, 7, &version).await.expect("write");
    for &id in &ids {
        assert!(
            !raw.exists(&full(&format!("member:{id}"))).await,
            "member {id} of org 7 deleted"
        );
        assert!(
            raw.exists(&full(&format!("member:{}", 1000 + id))).await,
            "member {} of org 8 kept",
            1000 + id
        );
    }
    assert_eq!(raw.zcard(&tag_key).await, 0, "members unregistered");
    for &id in &ids {
        assert_eq!(
            member(&cache, 7, id, &version).await,
            format!("m{id}-org7-v2"),
            "reloaded after the tag invalidation"
        );
    }
    // `Cache::invalidate_tag`.
    cache.invalidate_tag("org:8").await.expect("invalidate_tag");
    for &id in &ids {
        assert!(!raw.exists(&full(&format!("member:{}", 1000 + id))).await);
    }
    let s = cache.stats().total();
    assert_eq!(
        (
            s.backend_errors,
            s.invalidations_failed,
            s.invalidation_retries
        ),
        (0, 0, 0),
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failover under load.

/// A stand-in for the database: one version per id.
struct Db {
    versions: Vec<AtomicU64>,
    /// Per id, a version that every read starting now must return at least: set after a
    /// write (`#[invalidates]`) of the load's writers returned.
    acked: Vec<AtomicU64>,
    loads: AtomicUsize,
}

impl Db {
    /// Ids `0..=max`, all at version 0.
    fn new(max: usize) -> Db {
        Db {
            versions: (0..=max).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..=max).map(|_| AtomicU64::new(0)).collect(),
            loads: AtomicUsize::new(0),
        }
    }
}

#[derive(Debug, PartialEq)]
struct DbError;

#[cached(key = "item:{id}", ttl = 300, cache = cache)]
async fn item(cache: &Cache, id: usize, db: &Db) -> Result<u64, DbError> {
    db.loads.fetch_add(1, SeqCst);
    Ok(db.versions[id].load(SeqCst))
}

#[invalidates("item:{id}", cache = cache)]
async fn bump(cache: &Cache, id: usize, db: &Db) -> Result<(), DbError> {
    db.versions[id].fetch_add(1, SeqCst);
    Ok(())
}

/// Two ids written together: one `UNLINK` of both keys when they share a slot.
#[invalidates("item:{x}", "item:{y}", cache = cache)]
async fn bump_pair(cache: &Cache, x: usize, y: usize, db: &Db) -> Result<(), DbError> {
    db.versions[x].fetch_add(1, SeqCst);
    db.versions[y].fetch_add(1, SeqCst);
    Ok(())
}

/// `n_on` ids whose keys live on the master at `master` and `n_off` that live elsewhere.
fn ids_around(
    cluster: &RedisCluster,
    master: u16,
    n_on: usize,
    n_off: usize,
) -> (Vec<usize>, Vec<usize>) {
    let map = cluster.slot_map();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for id in 0.. {
        if on.len() == n_on && off.len() == n_off {
            break;
        }
        let m = map.master_for_key(&full(&format!("item:{id}")));
        if m == master && on.len() < n_on {
            on.push(id);
        } else if m != master && off.len() < n_off {
            off.push(id);
        }
    }
    (on, off)
}

/// Caches every id (16 tasks at once).
async fn prefill(cache: &Cache, db: &Arc<Db>, ids: &[usize]) {
    let tasks: Vec<_> = ids
        .chunks(ids.len().div_ceil(16))
        .map(|chunk| {
            let (cache, db, chunk) = (cache.clone(), db.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for id in chunk {
                    assert_eq!(item(&cache, id, &db).await, Ok(0));
                }
            })
        })
        .collect();
    for t in tasks {
        guard("prefill", t).await.expect("prefill task");
    }
}

/// Four readers of `read_ids` and two writers of `write_ids` (who also read) until `stop`:
/// every call must succeed (a cache failure goes to the loader, never to the caller) and no
/// read may return a version older than a write that returned before it started (recorded
/// in `errors`).
/// Returns (reads, writes) done.
fn spawn_load(
    cache: &Cache,
    db: &Arc<Db>,
    read_ids: &[usize],
    write_ids: &[usize],
    stop: &Arc<AtomicBool>,
    errors: &Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (cache, db, stop, errors) = (cache.clone(), db.clone(), stop.clone(), errors.clone());
        let ids = if t < 2 {
            write_ids.to_vec()
        } else {
            read_ids.to_vec()
        };
        tasks.push(tokio::spawn(async move {
            let (mut reads, mut writes) = (0u64, 0u64);
            let mut i = t;
            while !stop.load(SeqCst) {
                let id = ids[i % ids.len()];
                i += 1;
                // Two writer tasks (one write in three calls), four readers.
                if t < 2 && i.is_multiple_of(3) {
                    let next = db.versions[id].load(SeqCst) + 1;
                    match bump(&cache, id, &db).await {
                        Ok(()) => {
                            writes += 1;
                            db.acked[id].fetch_max(next, SeqCst);
                        }
                        Err(e) => errors.lock().unwrap().push(format!("bump {id}: {e:?}")),
                    }
                } else {
                    // A read that starts after a write returned sees that write (this
                    // process never reads an entry it invalidated, failover or not).
                    let floor = db.acked[id].load(SeqCst);
                    match item(&cache, id, &db).await {
                        Ok(v) if v < floor => errors.lock().unwrap().push(format!(
                            "item {id}: version {v}, older than the acknowledged write {floor}"
                        )),
                        Ok(_) => reads += 1,
                        Err(e) => errors.lock().unwrap().push(format!("item {id}: {e:?}")),
                    }
                }
                tokio::task::yield_now().await;
            }
            (reads, writes)
        }));
    }
    tasks
}

/// After the cluster is ok again: waits until no invalidation is pending in the retry queue
/// and none was given up, then checks that every id reads its latest version (no stale entry
/// survived an invalidation issued during the failover), and that caching resumed (a second
/// read is a hit served from the cluster).
async fn assert_settled_and_fresh(cluster: &RedisCluster, cache: &Cache, db: &Db, ids: &[usize]) {
    eventually(
        "the retry queue delivered every invalidation",
        Duration::from_secs(20),
        || async {
            let s = cache.stats().function("cluster::bump");
            s.invalidations_pending == 0
        },
    )
    .await;
    let s = cache.stats().function("cluster::bump");
    assert_eq!(s.invalidations_failed, 0, "no invalidation given up: {s:?}");

    let raw = cluster.raw().await;
    // Reads keep going to the loader while the circuit is still open after the failover;
    // wait for a hit served from the cluster.
    let hits_before = cache.stats().function("cluster::item").hits;
    for &id in ids {
        let want = db.versions[id].load(SeqCst);
        assert_eq!(
            item(cache, id, db).await,
            Ok(want),
            "id {id}: no stale value"
        );
    }
    eventually(
        "caching resumed: hits from the cluster",
        Duration::from_secs(20),
        || async {
            for &id in ids {
                let want = db.versions[id].load(SeqCst);
                assert_eq!(
                    item(cache, id, db).await,
                    Ok(want),
                    "id {id}: no stale value"
                );
            }
            cache.stats().function("cluster::item").hits >= hits_before + ids.len() as u64
        },
    )
    .await;
    for &id in ids {
        assert!(
            raw.exists(&full(&format!("item:{id}"))).await,
            "id {id} cached again"
        );
    }
}

/// How many ids on the failing master can be written once each while `CLUSTER FAILOVER` runs
/// (a write waits while the master pauses writes for the handover: about 10-20 get written).
const ONCE_POOL: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinated_failover_under_load_loses_no_invalidation() {
    let cluster = Arc::new(RedisCluster::start_for_failover());
    let cache = cache_on(&cluster).await;
    let master = cluster.master_for_key(&full("item:0"));
    let replica = cluster.replica_of(master);
    let (on, off) = ids_around(&cluster, master, 8 + ONCE_POOL, 8);
    let (on, once) = on.split_at(8);
    let ids: Vec<usize> = on.iter().chain(&off).copied().collect();
    let db = Arc::new(Db::new(*on.iter().chain(&off).chain(once).max().unwrap()));
    // Ids on the failing master, cached, each written exactly once while the failover runs:
    // the load's writers rewrite their ids again and again (a lost invalidation would be
    // healed by the next one), these are not.
    prefill(&cache, &db, once).await;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let tasks = spawn_load(&cache, &db, &ids, &ids, &stop, &errors);

    // Some traffic before, during and after the failover.
    eventually("load running", Duration::from_secs(20), || async {
        cache.stats().function("cluster::item").hits > 200
    })
    .await;
    let failover_done = Arc::new(AtomicBool::new(false));
    let once_writer = {
        let (cache, db, done) = (cache.clone(), db.clone(), failover_done.clone());
        let once = once.to_vec();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for id in once {
                if done.load(SeqCst) {
                    break;
                }
                let start = Instant::now();
                assert_eq!(bump(&cache, id, &db).await, Ok(()));
                written.push((id, start, Instant::now()));
            }
            written
        })
    };
    let c = cluster.clone();
    let (asked, took_over) = guard(
        "CLUSTER FAILOVER",
        tokio::task::spawn_blocking(move || {
            let asked = Instant::now();
            c.failover(replica);
            (asked, Instant::now())
        }),
    )
    .await
    .expect("failover");
    failover_done.store(true, SeqCst);
    let written = guard("the once-writer", once_writer)
        .await
        .expect("once-writer");
    // It writes from before the failover's start until the failover ended (or, should the
    // circuit open and skip the writes, until the pool ran out): at least one write overlapped
    // the window between `CLUSTER FAILOVER` and the takeover seen by every node. (A coordinated
    // failover pauses the old master's writers, so such a write may start before the window
    // and end after it; that write is the one a lost invalidation would leave stale.)
    let inside = written
        .iter()
        .filter(|&&(_, start, end)| start < took_over && end > asked)
        .count();
    assert!(
        inside > 0,
        "a write overlapping the failover window ({} written, window {:?})",
        written.len(),
        took_over - asked
    );
    let written: Vec<usize> = written.into_iter().map(|(id, _, _)| id).collect();
    let after = cache.stats().function("cluster::bump").invalidations;
    eventually(
        "writes after the failover",
        Duration::from_secs(20),
        || async { cache.stats().function("cluster::bump").invalidations > after + 50 },
    )
    .await;
    stop.store(true, SeqCst);
    let (mut reads, mut writes) = (0, 0);
    for t in tasks {
        let (r, w) = guard("a load task", t).await.expect("task");
        reads += r;
        writes += w;
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "callers saw errors: {:?}",
        errors.lock().unwrap()
    );
    assert_eq!(
        cluster.master_for_key(&full("item:0")),
        replica,
        "the replica took over"
    );
    assert!(reads > 0 && writes > 0, "{reads} reads, {writes} writes");
    eprintln!(
        "coordinated failover: {reads} reads, {writes} writes, {} written once during the \
         failover; item {:?}; bump {:?}",
        written.len(),
        cache.stats().function("cluster::item"),
        cache.stats().function("cluster::bump")
    );
    let all: Vec<usize> = ids.iter().chain(&written).copied().collect();
    assert_settled_and_fresh(&cluster, &cache, &db, &all).await;
}

/// Resharding under load: a slot holding cached keys moves from one master to another the way
/// `redis-cli --cluster reshard` moves it (`SETSLOT IMPORTING` / `MIGRATING`, `MIGRATE .. KEYS`
/// a few keys at a time, `SETSLOT NODE`) while readers (`#[cached]`) and writers
/// (`#[invalidates]`) run on that slot's keys. While the slot is half moved, the source answers
/// `-ASK` for the keys it no longer holds (and for new keys), afterwards `-MOVED`: no caller
/// error, no read older than a write that returned before it, no cache error at all, and the
/// keys are cached on the new owner afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resharding_a_slot_under_load_follows_ask_and_moved() {
    let cluster = Arc::new(RedisCluster::start());
    let cache = cache_on(&cluster).await;
    // Twelve ids whose keys share one slot (found by the slot function, no hash tag).
    let slot = cache_tests::key_slot(&full("item:0"));
    let ids: Vec<usize> = (0..)
        .filter(|id| cache_tests::key_slot(&full(&format!("item:{id}"))) == slot)
        .take(12)
        .collect();
    let from = cluster.master_for_slot(slot);
    let to = cluster
        .slot_map_masters()
        .into_iter()
        .find(|&m| m != from)
        .expect("another master");
    let db = Arc::new(Db::new(*ids.iter().max().unwrap()));
    prefill(&cache, &db, &ids).await;
    for port in cluster.live_ports() {
        let _: () = cluster.node_cmd(port, redis::cmd("CONFIG").arg("RESETSTAT"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = spawn_load(&cache, &db, &ids, &ids, &stop, &errors);
    // A third writer invalidates two keys of the slot at once (one two-key `UNLINK`): while
    // one of them has moved and the other has not, the source answers `-TRYAGAIN`.
    tasks.push({
        let (cache, db, stop, errors) = (cache.clone(), db.clone(), stop.clone(), errors.clone());
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut writes = 0u64;
            let mut i = 0;
            while !stop.load(SeqCst) {
                let (x, y) = (ids[i % ids.len()], ids[(i + 5) % ids.len()]);
                i += 1;
                let next = (
                    db.versions[x].load(SeqCst) + 1,
                    db.versions[y].load(SeqCst) + 1,
                );
                match bump_pair(&cache, x, y, &db).await {
                    Ok(()) => {
                        writes += 1;
                        db.acked[x].fetch_max(next.0, SeqCst);
                        db.acked[y].fetch_max(next.1, SeqCst);
                    }
                    Err(e) => errors.lock().unwrap().push(format!("bump_pair: {e:?}")),
                }
                tokio::task::yield_now().await;
            }
            (0, writes)
        })
    });
    let calls = || {
        let s = cache.stats().function("cluster::item");
        s.hits + s.misses + cache.stats().function("cluster::bump").invalidations
    };
    // `n` more calls (reads and writes) from now.
    let progress = |n: u64| {
        let target = calls() + n;
        let calls = &calls;
        async move {
            eventually("calls made", Duration::from_secs(20), || async {
                calls() >= target
            })
            .await;
        }
    };
    progress(100).await;

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.begin_migration(slot, from, to))
        .await
        .expect("begin");
    // Half the keys, a few at a time, with traffic in between: some keys on each side.
    let mut moved = 0;
    while moved < ids.len() / 2 {
        let c = cluster.clone();
        let n = tokio::task::spawn_blocking(move || c.migrate_keys(slot, from, to, 2))
            .await
            .expect("migrate");
        if n == 0 {
            break;
        }
        moved += n;
        progress(50).await;
    }
    progress(300).await;
    // The rest, then the slot is handed over.
    loop {
        let c = cluster.clone();
        let n = tokio::task::spawn_blocking(move || c.migrate_keys(slot, from, to, 4))
            .await
            .expect("migrate");
        if n == 0 {
            break;
        }
        progress(20).await;
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.finish_migration(slot, from, to))
        .await
        .expect("finish");
    assert_eq!(cluster.master_for_slot(slot), to, "the slot moved");
    // Traffic after the move: the old owner answers `-MOVED`.
    progress(300).await;
    stop.store(true, SeqCst);
    let (mut reads, mut writes) = (0, 0);
    for t in tasks {
        let (r, w) = guard("a load task", t).await.expect("task");
        reads += r;
        writes += w;
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "callers saw errors: {:?}",
        errors.lock().unwrap()
    );
    // The ASK path was taken: the new owner served commands preceded by `ASKING`.
    let stats: String = cluster.node_cmd(to, redis::cmd("INFO").arg("commandstats"));
    let asking = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_asking:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let item = cache.stats().function("cluster::item");
    let bump = cache.stats().function("cluster::bump");
    let pair = cache.stats().function("cluster::bump_pair");
    eprintln!(
        "resharding slot {slot} ({} keys) from {from} to {to}: {reads} reads, {writes} writes, \
         {asking} ASKING on the new owner; item {item:?}; bump {bump:?}; bump_pair {pair:?}",
        ids.len()
    );
    assert!(asking > 0, "no command was redirected with ASK");
    assert_eq!(
        (
            item.backend_errors,
            item.backend_skipped,
            bump.backend_errors,
            bump.invalidations_failed
        ),
        (0, 0, 0, 0),
        "ASK and MOVED followed without a cache error: {item:?} {bump:?}"
    );
    assert_eq!(
        pair.invalidations_failed, 0,
        "two-key invalidations delivered (TRYAGAIN retried): {pair:?}"
    );
    assert!(reads > 0 && writes > 0, "{reads} reads, {writes} writes");
    eventually(
        "the retry queue delivered every two-key invalidation",
        Duration::from_secs(20),
        || async {
            cache
                .stats()
                .function("cluster::bump_pair")
                .invalidations_pending
                == 0
        },
    )
    .await;
    assert_settled_and_fresh(&cluster, &cache, &db, &ids).await;
    let left: i64 = cluster.node_cmd(from, redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot));
    assert_eq!(left, 0, "nothing left on the old owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_master_under_load_loses_no_invalidation() {
    let mut cluster = RedisCluster::start_for_failover();
    let cache = cache_on(&cluster).await;
    let master = cluster.master_for_key(&full("item:0"));
    let replica = cluster.replica_of(master);
    let (on, off) = ids_around(&cluster, master, 8, 8);
    let ids: Vec<usize> = on.iter().chain(&off).copied().collect();
    let db = Arc::new(Db::new(*ids.iter().max().unwrap()));
    // Cached entries on the master, replicated to its replica before the kill. Redis
    // replication is asynchronous: a deletion acknowledged by a master that dies before its
    // replica received it is lost (Redis's design, see the README), so the writers under load
    // write the ids of the other masters, and the ids of the killed master are written while
    // it is down: this test is about what the cache sends while the master is gone.
    for &id in &ids {
        assert_eq!(item(&cache, id, &db).await, Ok(0));
    }
    let _: i64 = cluster.node_cmd(master, redis::cmd("WAIT").arg(1).arg(5000));

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let tasks = spawn_load(&cache, &db, &ids, &off, &stop, &errors);
    eventually("load running", Duration::from_secs(20), || async {
        cache.stats().function("cluster::item").hits > 200
    })
    .await;

    cluster.kill(master);
    // While the master is down (and until its replica is promoted): every id on it is
    // written, and its invalidation must reach the promoted replica eventually.
    for &id in &on {
        assert_eq!(
            bump(&cache, id, &db).await,
            Ok(()),
            "a write during the outage"
        );
        assert!(
            item(&cache, id, &db).await.is_ok(),
            "a read during the outage"
        );
    }
    let pending = cache
        .stats()
        .function("cluster::bump")
        .invalidations_pending;
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    guard(
        "replica promoted",
        tokio::task::spawn_blocking(move || c.wait_master(replica)),
    )
    .await
    .expect("promotion");
    let after = cache.stats().function("cluster::bump").invalidations;
    eventually(
        "writes after the promotion",
        Duration::from_secs(20),
        || async { cache.stats().function("cluster::bump").invalidations > after + 50 },
    )
    .await;
    stop.store(true, SeqCst);
    for t in tasks {
        guard("a load task", t).await.expect("task");
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "callers saw errors: {:?}",
        errors.lock().unwrap()
    );
    let s = cache.stats().function("cluster::bump");
    assert!(
        pending > 0 || s.invalidation_retries > 0 || s.backend_errors + s.backend_skipped > 0,
        "the outage was seen by the writes (else this test tested nothing): {s:?}"
    );
    assert_settled_and_fresh(&cluster, &cache, &db, &ids).await;
}

/// Review finding 2: a master that stops answering without closing its connections
/// (`SIGSTOP`: a hung process, a dead host, a partition) gives redis-rs no error. Once the
/// cluster promoted its replica, the cache must send those slots there: the invalidations
/// written meanwhile are delivered (none given up), reads hit again, and a fresh cache (which
/// learns the new topology at start) reads the new data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_master_is_routed_around_once_its_replica_took_over() {
    let mut cluster = RedisCluster::start_for_failover();
    let cache = cache_on(&cluster).await;
    let master = cluster.master_for_key(&full("item:0"));
    let replica = cluster.replica_of(master);
    let (on, off) = ids_around(&cluster, master, 6, 4);
    let ids: Vec<usize> = on.iter().chain(&off).copied().collect();
    let db = Arc::new(Db::new(*ids.iter().max().expect("ids")));
    for &id in &ids {
        assert_eq!(item(&cache, id, &db).await, Ok(0));
    }
    let _: i64 = cluster.node_cmd(master, redis::cmd("WAIT").arg(1).arg(5000));

    cluster.pause(master);
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    guard(
        "replica promoted",
        tokio::task::spawn_blocking(move || c.wait_master(replica)),
    )
    .await
    .expect("promotion");
    // Written after the takeover: the entries live on the promoted replica now.
    for &id in &on {
        assert_eq!(bump(&cache, id, &db).await, Ok(()), "write {id}");
    }
    eventually(
        "the invalidations reached the promoted replica",
        Duration::from_secs(20),
        || async {
            cache
                .stats()
                .function("cluster::bump")
                .invalidations_pending
                == 0
        },
    )
    .await;
    let s = cache.stats().function("cluster::bump");
    assert_eq!(s.invalidations_failed, 0, "none given up: {s:?}");
    // Reads of the frozen master's ids are served from the cluster again: a second read is
    // a hit, with the new version.
    eventually(
        "hits on the promoted replica",
        Duration::from_secs(20),
        || {
            let (cache, db, on) = (cache.clone(), db.clone(), on.clone());
            async move {
                let before = cache.stats().function("cluster::item").hits;
                for &id in &on {
                    let want = db.versions[id].load(SeqCst);
                    assert_eq!(item(&cache, id, &db).await, Ok(want), "id {id}: fresh");
                }
                cache.stats().function("cluster::item").hits >= before + on.len() as u64
            }
        },
    )
    .await;
    // A cache started now reads the new versions (a lost invalidation would leave the old
    // entry on the promoted replica).
    let fresh = cache_on(&cluster).await;
    for &id in &on {
        assert_eq!(
            item(&fresh, id, &db).await,
            Ok(db.versions[id].load(SeqCst)),
            "fresh cache, id {id}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The cache outlives the runtime that built it.

/// Review finding 1: redis-rs drives a cluster connection from a task on the runtime current
/// when it is created. Caches built on a runtime that is then dropped (current-thread and
/// multi-thread) or that is kept but no longer driven (a current-thread runtime between two
/// `block_on`s) are used from another runtime: hits, and invalidations delivered at once.
#[test]
fn the_cache_outlives_the_runtime_that_built_it() {
    let cluster = RedisCluster::start();
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let multi_thread = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let dropped_ct = current_thread();
    let dropped_mt = multi_thread();
    let idle_ct = current_thread();
    let caches = [
        ("current-thread, dropped", {
            let c = dropped_ct.block_on(cache_on(&cluster));
            drop(dropped_ct);
            c
        }),
        ("multi-thread, dropped", {
            let c = dropped_mt.block_on(cache_on(&cluster));
            drop(dropped_mt);
            c
        }),
        (
            "current-thread, kept idle",
            idle_ct.block_on(cache_on(&cluster)),
        ),
    ];
    let other = multi_thread();
    other.block_on(async {
        let raw = cluster.raw().await;
        for (what, cache) in &caches {
            let loads = AtomicUsize::new(0);
            for _ in 0..2 {
                assert_eq!(
                    guard(what, user(cache, 1, &loads)).await,
                    Ok(Some("user-1".into())),
                    "{what}"
                );
            }
            let s = cache.stats().function("cluster::user");
            assert_eq!(
                (s.loads, s.hits, s.backend_errors, s.backend_skipped),
                (1, 1, 0, 0),
                "{what}: {s:?}"
            );
            let version = AtomicU64::new(1);
            a(cache, 1, &version).await;
            write_ab(cache, 1, 2, &version).await.expect("write");
            assert!(!raw.exists(&full("a:1")).await, "{what}: invalidated");
            let s = cache.stats().function("cluster::write_ab");
            assert_eq!(
                (
                    s.invalidations,
                    s.invalidation_retries,
                    s.invalidations_failed
                ),
                (4, 0, 0),
                "{what}: delivered at once: {s:?}"
            );
            // The entries are the same for every cache: the next one starts cold.
            let _: i64 = raw.cmd(redis::cmd("DEL").arg(full("user:1"))).await;
        }
    });
    drop(idle_ct);
}

// ---------------------------------------------------------------------------------------------
// Start-up without a reachable cluster.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_goes_to_the_loader() {
    let port = cache_tests::reserve_free_port();
    let cache = Cache::builder()
        .redis_cluster([format!("redis://127.0.0.1:{port}")])
        .namespace(NS)
        .connect_timeout(Duration::from_millis(200))
        .command_timeout(Duration::from_millis(200))
        .build()
        .await
        .expect("built with the circuit open");
    let loads = AtomicUsize::new(0);
    assert_eq!(user(&cache, 1, &loads).await, Ok(Some("user-1".into())));
    assert_eq!(user(&cache, 1, &loads).await, Ok(Some("user-1".into())));
    assert_eq!(loads.load(SeqCst), 2, "no cache, every call loads");
    assert!(
        Cache::builder()
            .redis_cluster(Vec::<String>::new())
            .build()
            .await
            .is_err(),
        "no seed node is a configuration error"
    );
    assert!(
        Cache::builder()
            .redis_cluster([format!("redis://127.0.0.1:{port}")])
            .connect_timeout(Duration::from_millis(200))
            .command_timeout(Duration::from_millis(200))
            .require_connection()
            .build()
            .await
            .is_err(),
        "require_connection fails without a cluster"
    );
}

/// A cache built (without `require_connection`) on the seed URLs of a cluster whose nodes are
/// not started yet: calls go to the loader without an error while the cluster is down and
/// while it forms, and once it is ready caching starts (a hit served from the cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_that_comes_up_after_build_is_used_once_ready() {
    let planned = RedisCluster::reserve();
    let cache = Cache::builder()
        .redis_cluster(planned.urls())
        .namespace(NS)
        .connect_timeout(Duration::from_millis(200))
        .command_timeout(Duration::from_millis(200))
        .circuit_breaker(3, Duration::from_millis(200))
        .build()
        .await
        .expect("built with no node up");
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        assert_eq!(user(&cache, 1, &loads).await, Ok(Some("user-1".into())));
    }
    assert_eq!(loads.load(SeqCst), 3, "no cache yet: every call loads");

    // Callers keep calling while the nodes start and the cluster forms: never an error.
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (cache, loads, stop) = (cache.clone(), loads.clone(), stop.clone());
        tokio::spawn(async move {
            let mut calls = 0u64;
            while !stop.load(SeqCst) {
                assert_eq!(
                    user(&cache, 2, &loads).await,
                    Ok(Some("user-2".into())),
                    "a call while the cluster comes up"
                );
                calls += 1;
                tokio::task::yield_now().await;
            }
            calls
        })
    };
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || planned.start())
        .await
        .expect("cluster started");
    let formed = started.elapsed();
    let raw = cluster.raw().await;
    eventually(
        "caching starts once the cluster is ready",
        Duration::from_secs(20),
        || async {
            let before = cache.stats().function("cluster::user").hits;
            user(&cache, 3, &loads).await.expect("a load never fails");
            user(&cache, 3, &loads).await.expect("a load never fails");
            cache.stats().function("cluster::user").hits > before
                && raw.exists(&full("user:3")).await
        },
    )
    .await;
    eprintln!(
        "cluster formed in {formed:?}; caching {:?} after the start began",
        started.elapsed()
    );
    stop.store(true, SeqCst);
    let calls = guard("the caller", caller).await.expect("no caller error");
    assert!(calls > 0, "calls were made while the cluster came up");
    let loads_now = loads.load(SeqCst);
    assert_eq!(user(&cache, 3, &loads).await, Ok(Some("user-3".into())));
    assert_eq!(loads.load(SeqCst), loads_now, "a hit, no load");
}

// ---------------------------------------------------------------------------------------------
// ACL: credentials from the seed URLs, as for a single server.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acl_user_from_the_urls() {
    let cluster = RedisCluster::start_with_acl("app", "s3cret-pw");
    let cache = cache_on(&cluster).await;
    let raw = cluster.raw().await;
    let loads = AtomicUsize::new(0);
    for id in 1..=10u64 {
        let want = (!id.is_multiple_of(5)).then(|| format!("user-{id}"));
        assert_eq!(user(&cache, id, &loads).await, Ok(want.clone()));
        assert_eq!(user(&cache, id, &loads).await, Ok(want));
        assert!(raw.exists(&full(&format!("user:{id}"))).await);
    }
    assert_eq!(loads.load(SeqCst), 10);
    let version = AtomicU64::new(1);
    a(&cache, 1, &version).await;
    b(&cache, 2, &version).await;
    write_ab(&cache, 1, 2, &version).await.expect("write");
    assert!(!raw.exists(&full("a:1")).await && !raw.exists(&full("b:2")).await);
    let s = cache.stats().total();
    assert_eq!((s.backend_errors, s.invalidations_failed), (0, 0), "{s:?}");
    assert!(!format!("{cache:?}").contains("s3cret-pw"));

    // A wrong password: `require_connection` fails, without echoing the password.
    let wrong: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.replace("s3cret-pw", "wr0ng-pw"))
        .collect();
    let err = Cache::builder()
        .redis_cluster(wrong)
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(500))
        .require_connection()
        .build()
        .await
        .expect_err("a wrong password is refused");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wr0ng-pw"), "{text}");

    // The least ACL the README documents for a cluster, created on every node (ACL users are
    // per node): miss, hit, negative entry, invalidation across slots, tags, with no command
    // refused anywhere.
    for port in cluster.live_ports() {
        let _: () = cluster.node_cmd(
            port,
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("least")
                .arg(least_cluster_rules("least-pw", "least")),
        );
        let _: () = cluster.node_cmd(port, redis::cmd("ACL").arg("LOG").arg("RESET"));
    }
    let least = Cache::builder()
        .redis_cluster(
            cluster
                .live_ports()
                .iter()
                .map(|p| format!("redis://least:least-pw@127.0.0.1:{p}")),
        )
        .namespace("least")
        .circuit_breaker(3, Duration::from_millis(200))
        .require_connection()
        .build()
        .await
        .expect("the least ACL user connects");
    let loads = AtomicUsize::new(0);
    for id in 0..20u64 {
        let want = (!id.is_multiple_of(5)).then(|| format!("user-{id}"));
        assert_eq!(
            user(&least, id, &loads).await,
            Ok(want.clone()),
            "miss {id}"
        );
        assert_eq!(user(&least, id, &loads).await, Ok(want), "hit {id}");
        assert!(raw.exists(&format!("least:user:{id}")).await, "stored {id}");
    }
    assert_eq!(loads.load(SeqCst), 20, "one load per key");
    let version = AtomicU64::new(1);
    for (x, y) in [(1, 2), (3, 4)] {
        a(&least, x, &version).await;
        b(&least, y, &version).await;
        write_ab(&least, x, y, &version).await.expect("write");
        for k in [format!("a:{x}"), format!("b:{y}")] {
            assert!(!raw.exists(&format!("least:{k}")).await, "{k} invalidated");
        }
    }
    for id in 0..10u64 {
        member(&least, 7, id, &version).await;
    }
    assert_eq!(raw.zcard("least:!tag:org:7").await, 10, "tag registered");
    rename_org(&least, 7, &version).await.expect("tag write");
    for id in 0..10u64 {
        assert!(
            !raw.exists(&format!("least:member:{id}")).await,
            "member {id}"
        );
        member(&least, 7, id, &version).await;
    }
    least.invalidate_tag("org:7").await.expect("invalidate_tag");
    for id in 0..10u64 {
        assert!(
            !raw.exists(&format!("least:member:{id}")).await,
            "member {id}"
        );
    }
    let s = least.stats().total();
    assert_eq!(
        (
            s.backend_errors,
            s.backend_skipped,
            s.invalidations_failed,
            s.invalidation_retries
        ),
        (0, 0, 0, 0),
        "no NOPERM: {s:?}"
    );
    let u = least.stats().function("cluster::user");
    assert_eq!((u.hits, u.negative_hits), (16, 4), "{u:?}");
    for port in cluster.live_ports() {
        // (The wrong-password connection above may still be retrying: denials of `app`.)
        let denied: Vec<redis::Value> = cluster.node_cmd(port, redis::cmd("ACL").arg("LOG"));
        let least_denied: Vec<String> = denied
            .iter()
            .map(|d| format!("{d:?}"))
            .filter(|d| d.contains("\"least\""))
            .collect();
        assert!(
            least_denied.is_empty(),
            "ACL denials of `least` on node {port}: {least_denied:?}"
        );
    }
}

/// The least ACL of a cache on a cluster, as the README documents it: the single-server
/// commands, the tag commands (`ZSCAN`, and inside the tag scripts `ZADD`, `ZSCORE`, `ZREM`,
/// `ZREMRANGEBYSCORE`, `ZRANGE`, `PTTL`, `TIME`) and `CLUSTER SLOTS` (redis-rs's slot
/// discovery); keys limited to the namespace.
fn least_cluster_rules(password: &str, namespace: &str) -> Vec<String> {
    let mut rules = vec![
        "reset".to_owned(),
        "on".to_owned(),
        format!(">{password}"),
        format!("~{namespace}:*"),
    ];
    rules.extend(LEAST_CLUSTER_ACL.split_whitespace().map(String::from));
    rules
}

/// The commands of the README's least cluster ACL (section "Redis Cluster").
const LEAST_CLUSTER_ACL: &str = "+get +set +del +pexpire +evalsha +script|load +unlink +ping \
     +zscan +zadd +zscore +zrem +zremrangebyscore +zrange +pttl +time +cluster|slots";

// ---------------------------------------------------------------------------------------------
// TLS: `rediss://` seeds and a private CA, as for a single server.

/// A TLS-only cluster (client ports, the cluster bus and replication all over TLS): a
/// `rediss://` cache trusting the test CA works end to end (miss then hit on every master,
/// negative entries, an invalidation across slots, a tag), without a cache error; a cache that
/// does not trust the CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_cluster_with_private_ca_works_end_to_end() {
    let cluster = RedisCluster::start_with_tls();
    let urls = cluster.urls();
    assert!(urls.iter().all(|u| u.starts_with("rediss://")), "{urls:?}");
    let ca = cluster.tls_ca().expect("a TLS cluster").to_vec();
    let cache = Cache::builder()
        .redis_cluster(urls.clone())
        .namespace(NS)
        .tls_root_ca_pem(ca)
        .circuit_breaker(3, Duration::from_millis(200))
        .require_connection()
        .build()
        .await
        .expect("the TLS cluster accepts the cache");
    let raw = cluster.raw().await;
    let ids: Vec<u64> = (0..15).collect();
    misses_then_hits_on_every_master(&cluster, &cache, &raw, &ids).await;
    let version = AtomicU64::new(1);
    assert_eq!(a(&cache, 1, &version).await, "a1-v1");
    assert_eq!(b(&cache, 2, &version).await, "b2-v1");
    write_ab(&cache, 1, 2, &version).await.expect("write");
    assert!(!raw.exists(&full("a:1")).await && !raw.exists(&full("b:2")).await);
    assert_eq!(
        a(&cache, 1, &version).await,
        "a1-v2",
        "reloaded after the write"
    );
    for id in 0..6 {
        member(&cache, 9, id, &version).await;
    }
    rename_org(&cache, 9, &version).await.expect("tag write");
    for id in 0..6 {
        assert!(
            !raw.exists(&full(&format!("member:{id}"))).await,
            "member {id}"
        );
    }
    let s = cache.stats().total();
    assert_eq!(
        (
            s.backend_errors,
            s.backend_skipped,
            s.invalidations_failed,
            s.invalidation_retries
        ),
        (0, 0, 0, 0),
        "{s:?}"
    );
    let u = cache.stats().function("cluster::user");
    assert_eq!((u.hits, u.negative_hits), (12, 3), "{u:?}");

    // Without the CA (the system store does not trust it): refused.
    assert!(
        Cache::builder()
            .redis_cluster(urls)
            .connect_timeout(Duration::from_millis(500))
            .command_timeout(Duration::from_millis(500))
            .require_connection()
            .build()
            .await
            .is_err(),
        "an untrusted certificate is refused"
    );
}

// ---------------------------------------------------------------------------------------------
// Commands: never a keyspace scan, a flush or a blocking command, on any node.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_keyspace_scan_flush_or_blocking_command_on_any_node() {
    let cluster = RedisCluster::start();
    for port in cluster.live_ports() {
        let _: () = cluster.node_cmd(port, redis::cmd("CONFIG").arg("RESETSTAT"));
    }
    let cache = cache_on(&cluster).await;
    let loads = AtomicUsize::new(0);
    let version = AtomicU64::new(1);
    for id in 0..20u64 {
        user(&cache, id, &loads).await.expect("a load never fails");
        user(&cache, id, &loads).await.expect("a load never fails");
        member(&cache, 7, id, &version).await;
    }
    write_ab(&cache, 1, 2, &version).await.expect("write");
    rename_org(&cache, 7, &version).await.expect("tag write");
    cache.invalidate_tag("org:7").await.expect("invalidate_tag");
    let mut seen = std::collections::BTreeSet::new();
    for port in cluster.live_ports() {
        let info: String = cluster.node_cmd(port, redis::cmd("INFO").arg("commandstats"));
        for line in info.lines() {
            if let Some(rest) = line.strip_prefix("cmdstat_")
                && let Some((name, _)) = rest.split_once(':')
            {
                seen.insert(name.to_owned());
            }
        }
    }
    const FORBIDDEN: &[&str] = cache_tests::FORBIDDEN_COMMANDS;
    let bad: Vec<&String> = seen
        .iter()
        .filter(|c| FORBIDDEN.contains(&c.as_str()))
        .collect();
    assert!(bad.is_empty(), "forbidden commands {bad:?} (all: {seen:?})");
    assert!(seen.contains("get") && seen.contains("unlink"), "{seen:?}");
}
