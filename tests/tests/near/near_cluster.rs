//! The near cache (`#[cached(.., local_ttl = N)]`) on a real Redis Cluster (3 masters + 3
//! replicas on loopback, one per test): near hits on every master without a `GET`; another
//! cache's write on each master evicts the copy (as the least ACL user); a killed tracking
//! connection to one master flushes and bypasses the whole near cache until it is back; a
//! coordinated failover and a master killed with `SIGKILL` flush the near cache and tracking
//! follows the promoted replicas; a replica promoted behind the back of a process that does not
//! re-read the topology still reports its writes (it was tracked as a replica).
//!
//! Each `Cache` stands for a process (its own connections and near cache). "Once the push
//! arrived" is polled with `eventually` on observable state; nothing is ordered by sleeping.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{Db, RedisCluster, eventually, guard};

const NS: &str = "nctest";
const BOUND: Duration = Duration::from_secs(10);
const NEAR: &str = "cache_runtime::near";

#[cached(key = "row:{id}", ttl = 300, local_ttl = 60, name = "nc.get", cache = cache)]
async fn get(cache: &Cache, id: u64, db: &Db) -> String {
    format!("row{id}@v{}", db.version())
}

#[invalidates("row:{id}", cache = cache, name = "nc.write")]
async fn write(cache: &Cache, id: u64, db: &Db) {
    db.bump();
}

fn builder(urls: Vec<String>) -> cache_runtime::CacheBuilder {
    Cache::builder()
        .redis_cluster(urls)
        .namespace(NS)
        .circuit_breaker(3, Duration::from_millis(200))
        .invalidation_retry_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .require_connection()
}

async fn cache_on(cluster: &RedisCluster) -> Cache {
    builder(cluster.urls()).build().await.expect("cache")
}

fn key(id: u64) -> String {
    format!("{NS}:row:{id}")
}

fn local_hits(cache: &Cache) -> u64 {
    cache.stats().function("nc.get").local_hits
}

fn resets(cache: &Cache) -> u64 {
    cache.stats().function(NEAR).tracking_resets
}

/// One id per master, as `(id, master port)`.
fn one_id_per_master(cluster: &RedisCluster) -> Vec<(u64, u16)> {
    let map = cluster.slot_map();
    let mut seen = HashSet::new();
    let ids: Vec<(u64, u16)> = (0..200u64)
        .map(|id| (id, map.master_for_key(&key(id))))
        .filter(|(_, m)| seen.insert(*m))
        .collect();
    assert_eq!(ids.len(), 3, "one key on each master: {ids:?}");
    ids
}

/// Calls `get` until it is answered by the near cache (the first calls run while tracking is
/// being set up, or their fill raced the pushes of the cache's own store).
async fn until_near(cache: &Cache, id: u64, db: &Db) -> String {
    let last = std::sync::Mutex::new(String::new());
    eventually(&format!("a near hit for {id}"), BOUND, || {
        let before = local_hits(cache);
        let last = &last;
        async move {
            *last.lock().unwrap() = get(cache, id, db).await;
            local_hits(cache) > before
        }
    })
    .await;
    last.into_inner().unwrap()
}

/// `calls=` of `cmdstat_get`, summed over every node.
fn get_calls(cluster: &RedisCluster) -> u64 {
    cluster
        .live_ports()
        .into_iter()
        .map(|p| {
            let info: String = cluster.node_cmd(p, redis::cmd("INFO").arg("commandstats"));
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_get:"))
                .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("calls=")))
                .map_or(0, |n| n.parse().unwrap())
        })
        .sum()
}

/// `id=` of the clients in `CLIENT LIST` output whose flags include tracking (`t`).
fn tracking_ids(list: &str) -> Vec<String> {
    list.lines()
        .filter(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("flags="))
                .is_some_and(|f| f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

fn tracking_on(cluster: &RedisCluster, port: u16) -> Vec<String> {
    tracking_ids(&cluster.node_cmd::<String>(port, redis::cmd("CLIENT").arg("LIST")))
}

/// Reads `id` through `a` until it returns `want`; returns how long that took from `since`.
async fn until_value(a: &Cache, id: u64, db: &Db, want: &str, since: Instant) -> Duration {
    eventually(&format!("A reads {want}"), BOUND, || async {
        get(a, id, db).await == want
    })
    .await;
    since.elapsed()
}

/// The least ACL of a cluster cache with a near cache (README "Near cache"): the data path's
/// commands, `CLUSTER SLOTS` (redis-rs's slot map), `CLIENT TRACKING` and `CLUSTER NODES`
/// (the tracking connections), keys limited to the namespace.
const LEAST_ACL: &[&str] = &[
    "on",
    ">near-pw-1",
    "~nctest:*",
    "+get",
    "+set",
    "+del",
    "+pexpire",
    "+evalsha",
    "+script|load",
    "+unlink",
    "+ping",
    "+cluster|slots",
    "+client|tracking",
    "+cluster|nodes",
];

// ---------------------------------------------------------------------------------------------
// 1 + 2. Near hits on every master without a GET; another cache's write on each master evicts.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn near_hits_and_evictions_on_every_master() {
    let cluster = RedisCluster::start();
    for p in cluster.live_ports() {
        let _: () = cluster.node_cmd(
            p,
            redis::cmd("ACL").arg("SETUSER").arg("app").arg(LEAST_ACL),
        );
    }
    let urls: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.replace("redis://", "redis://app:near-pw-1@"))
        .collect();
    let a = builder(urls.clone()).build().await.expect("cache A");
    let b = builder(urls).build().await.expect("cache B");
    let db = Db::default();
    let ids = one_id_per_master(&cluster);

    for &(id, _) in &ids {
        assert_eq!(get(&a, id, &db).await, format!("row{id}@v0"));
        until_near(&a, id, &db).await;
    }
    // Every node, replicas included, has A's tracking connection (B never ran a local_ttl
    // function: it has none).
    for p in cluster.live_ports() {
        assert_eq!(tracking_on(&cluster, p).len(), 1, "node {p}");
    }
    let gets = get_calls(&cluster);
    let hits = local_hits(&a);
    for _ in 0..50 {
        for &(id, _) in &ids {
            assert_eq!(get(&a, id, &db).await, format!("row{id}@v0"));
        }
    }
    // Every call that was not a near hit sent one GET, and a near hit none. (A few calls may
    // miss the near cache: a replica's push of A's own fill, replicated after the master's
    // push was processed and the copy refilled, evicts the copy once more.)
    let near = local_hits(&a) - hits;
    assert!(near >= 140, "{near} near hits in 150 calls");
    assert_eq!(
        get_calls(&cluster) - gets,
        150 - near,
        "a near hit sent a GET"
    );

    // B's invalidation of a key on each master evicts A's copy once the push arrived.
    let mut delays = Vec::new();
    for _ in 0..4 {
        for &(id, master) in &ids {
            // A copy made after this key's last write (the version is shared by all rows).
            until_near(&a, id, &db).await;
            let evictions = a.stats().function("nc.get").local_evictions;
            guard("B's write", write(&b, id, &db)).await;
            let returned = Instant::now();
            let want = format!("row{id}@v{}", db.version());
            delays.push(until_value(&a, id, &db, &want, returned).await);
            assert!(
                a.stats().function("nc.get").local_evictions > evictions,
                "the push from {master} evicted A's copy"
            );
        }
    }
    delays.sort();
    println!(
        "near cache on a cluster: B's invalidation returned -> A reads the new value: p50 {:?}, max {:?} ({} writes over 3 masters; polled every 10 ms)",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
    assert_eq!(resets(&a), 0, "no reset on a steady cluster");
    for p in cluster.live_ports() {
        let denied: Vec<redis::Value> = cluster.node_cmd(p, redis::cmd("ACL").arg("LOG"));
        assert!(denied.is_empty(), "ACL denial on node {p}: {denied:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A killed tracking connection to one master flushes and bypasses the whole near cache
// until it is back.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_tracking_connection_to_one_master_flushes_bypasses_and_recovers() {
    let cluster = RedisCluster::start();
    let raw = cluster.raw().await;
    let a = cache_on(&cluster).await;
    let db = Db::default();
    let ids = one_id_per_master(&cluster);
    for &(id, _) in &ids {
        until_near(&a, id, &db).await;
    }
    let (victim_id, master) = ids[0];
    let replica = cluster.replica_of(master);
    let old = tracking_on(&cluster, master);
    assert_eq!(old.len(), 1, "A's tracking connection on {master}: {old:?}");
    let before = resets(&a);

    // A's tracking connection to the master is killed, and the master accepts no new
    // connection until the limit is lifted: A's tracking cannot come back meanwhile.
    let mut on_master = Limited::kill_tracking(&cluster, master);
    eventually("A noticed the loss", BOUND, || async {
        resets(&a) > before
    })
    .await;
    // The same on the master's replica, which would otherwise report the write below
    // (replicated to it) and evict A's copy even without the flush.
    let mut on_replica = Limited::kill_tracking(&cluster, replica);

    // Writes while nobody tracks that master for A, and on the other masters: A's copies were
    // flushed, and the near cache is bypassed for every key (no near read, no fill).
    db.bump();
    for &(id, _) in &ids {
        raw.cmd::<i64>(redis::cmd("DEL").arg(key(id))).await;
    }
    let hits = local_hits(&a);
    for _ in 0..3 {
        for &(id, _) in &ids {
            assert_eq!(
                get(&a, id, &db).await,
                format!("row{id}@v1"),
                "an old copy served"
            );
        }
    }
    assert_eq!(local_hits(&a), hits, "the near cache was not bypassed");

    on_master.lift();
    on_replica.lift();
    // Tracking is back (a new connection on that master), the near cache serves again, and
    // none of its copies is from before the loss ...
    for &(id, _) in &ids {
        assert_eq!(until_near(&a, id, &db).await, format!("row{id}@v1"));
    }
    let now = tracking_on(&cluster, master);
    assert!(
        now.len() == 1 && now[0] != on_master.killed,
        "{old:?} -> {now:?}"
    );
    // ... and is coherent again on that master.
    db.bump();
    raw.cmd::<i64>(redis::cmd("DEL").arg(key(victim_id))).await;
    let want = format!("row{victim_id}@v2");
    until_value(&a, victim_id, &db, &want, Instant::now()).await;
}

/// A node that accepts no new connection (`maxclients` at the count of open ones), on which
/// A's tracking connection was killed (`CLIENT KILL ID`); an admin connection opened before
/// lifts the limit.
struct Limited {
    admin: redis::Connection,
    killed: String,
}

impl Limited {
    fn kill_tracking(cluster: &RedisCluster, port: u16) -> Limited {
        let ids = tracking_on(cluster, port);
        assert_eq!(ids.len(), 1, "A's tracking connection on {port}: {ids:?}");
        let mut admin = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let info: String = redis::cmd("INFO").arg("clients").query(&mut admin).unwrap();
        let connected: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The killed connection's place is not free either.
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(connected - 1)
            .query(&mut admin)
            .unwrap();
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&ids[0])
            .query(&mut admin)
            .unwrap();
        Limited {
            admin,
            killed: ids[0].clone(),
        }
    }

    fn lift(&mut self) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(10_000)
            .query(&mut self.admin)
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Failovers. What is guaranteed: (a) once A noticed the failover (its `tracking_resets`
// moved: the old master's connection closed, or a check saw the topology change), no copy
// made before it is served; (b) after another cache's write on the promoted master returned,
// A reads the new value once the push arrived, as on any master (polled), and never the old
// one after that.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failovers_flush_and_tracking_follows_the_promoted_replicas() {
    let cluster = RedisCluster::start();
    let a = cache_on(&cluster).await;
    let b = cache_on(&cluster).await;
    let db = Db::default();
    let ids = one_id_per_master(&cluster);

    // A coordinated CLUSTER FAILOVER: the old master stays up (now a replica).
    let (id1, m1) = ids[0];
    let r1 = cluster.replica_of(m1);
    until_near(&a, id1, &db).await;
    let before = resets(&a);
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    guard(
        "CLUSTER FAILOVER",
        tokio::task::spawn_blocking(move || c.failover(r1)),
    )
    .await
    .expect("failover");
    let settled = Instant::now();
    eventually("A noticed the topology change", BOUND, || async {
        resets(&a) > before
    })
    .await;
    let noticed = settled.elapsed();
    let hits = local_hits(&a);
    assert_eq!(get(&a, id1, &db).await, format!("row{id1}@v0"));
    assert_eq!(
        local_hits(&a),
        hits,
        "a copy from before the failover was served"
    );
    for round in 0..3 {
        until_near(&a, id1, &db).await;
        guard("B's write on the promoted master", write(&b, id1, &db)).await;
        let want = format!("row{id1}@v{}", db.version());
        until_value(&a, id1, &db, &want, Instant::now()).await;
        for _ in 0..5 {
            assert_eq!(
                get(&a, id1, &db).await,
                want,
                "round {round}: old value again"
            );
        }
    }

    // A master killed with SIGKILL: its replica is promoted after the node timeout.
    let mut cluster = Arc::try_unwrap(cluster).expect("no other handle");
    let (id2, m2) = ids[1];
    let r2 = cluster.replica_of(m2);
    until_near(&a, id2, &db).await;
    let before = resets(&a);
    cluster.kill(m2);
    let killed = Instant::now();
    eventually("A noticed the dead master", BOUND, || async {
        resets(&a) > before
    })
    .await;
    let noticed_kill = killed.elapsed();
    let hits = local_hits(&a);
    get(&a, id2, &db).await;
    assert_eq!(local_hits(&a), hits, "served from a flushed near cache");
    // B's write while the master is down waits in B's retry queue, and reaches the promoted
    // replica.
    guard("B's write during the outage", write(&b, id2, &db)).await;
    let want = format!("row{id2}@v{}", db.version());
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    guard(
        "replica promoted",
        tokio::task::spawn_blocking(move || c.wait_master(r2)),
    )
    .await
    .expect("promotion");
    eventually(
        "B's invalidation delivered",
        Duration::from_secs(20),
        || async { b.stats().function("nc.write").invalidations_pending == 0 },
    )
    .await;
    assert_eq!(b.stats().function("nc.write").invalidations_failed, 0);
    until_value(&a, id2, &db, &want, Instant::now()).await;
    // Near hits resume on the promoted master, and its writes evict.
    until_near(&a, id2, &db).await;
    let resumed = killed.elapsed();
    for _ in 0..2 {
        until_near(&a, id2, &db).await;
        guard("B's write on the promoted master", write(&b, id2, &db)).await;
        let want = format!("row{id2}@v{}", db.version());
        until_value(&a, id2, &db, &want, Instant::now()).await;
        assert_eq!(get(&a, id2, &db).await, want, "old value again");
    }
    // The third master was not touched: still served from the near cache.
    until_near(&a, ids[2].0, &db).await;
    println!(
        "CLUSTER FAILOVER settled -> A's reset {noticed:?}; SIGKILL -> A's reset {noticed_kill:?}, -> near hits on the promoted replica {resumed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A replica promoted (CLUSTER FAILOVER TAKEOVER) while its master hangs, in front of a
// process that checks its tracking only once a minute: the promoted replica's writes are
// pushed on the connection A opened while it was a replica, so they evict A's copy without
// any topology check.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promoted_replica_reports_writes_before_any_topology_check() {
    let mut cluster = RedisCluster::start();
    let a = builder(cluster.urls())
        .tracking_check_interval(Duration::from_secs(60))
        .command_timeout(Duration::from_millis(200))
        .build()
        .await
        .expect("cache A");
    let db = Db::default();
    let (id, master) = one_id_per_master(&cluster)[0];
    let replica = cluster.replica_of(master);
    assert_eq!(until_near(&a, id, &db).await, format!("row{id}@v0"));
    let before = resets(&a);
    let evictions = a.stats().function("nc.get").local_evictions;

    // The replica has what A's copy was read from (replication is asynchronous: a copy of a
    // write the replica never received is not evicted by its later delete of the key, which
    // changes nothing there; the README states that bound).
    let offset = repl_offset(&cluster, master, "master_repl_offset:");
    eventually("the replica caught up", BOUND, || async {
        repl_offset(&cluster, replica, "slave_repl_offset:") >= offset
    })
    .await;
    // The master hangs (no disconnection for A to notice); its replica takes over alone.
    cluster.pause(master);
    let _: () = cluster.node_cmd(
        replica,
        redis::cmd("CLUSTER").arg("FAILOVER").arg("TAKEOVER"),
    );
    eventually("the replica took over", BOUND, || async {
        let role: Vec<redis::Value> = cluster.node_cmd(replica, &redis::cmd("ROLE"));
        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
    })
    .await;
    // Another process that knows only the promoted node writes there.
    let b = builder(vec![format!("redis://127.0.0.1:{replica}")])
        .build()
        .await
        .expect("cache B on the promoted replica");
    guard("B's write on the promoted replica", write(&b, id, &db)).await;
    assert_eq!(b.stats().function("nc.write").invalidations_failed, 0);
    let want = format!("row{id}@v1");
    let returned = Instant::now();
    // A's data connection still routes to the hung master: its reads fall back to the
    // loader, which returns the new version too. Only a near hit could return the old one.
    let delay = until_value(&a, id, &db, &want, returned).await;
    assert!(
        a.stats().function("nc.get").local_evictions > evictions,
        "evicted by a push"
    );
    assert_eq!(resets(&a), before, "no check ran: the push alone evicted");
    println!("promoted replica's write -> A reads the new value after {delay:?}");
    // Dropping the cache closes its tracking connections at once, not at the next check
    // (a minute away).
    drop(a);
    for p in cluster.live_ports().into_iter().filter(|&p| p != master) {
        eventually("A's tracking connections closed", BOUND, || async {
            tracking_on(&cluster, p).is_empty()
        })
        .await;
    }
    cluster.resume(master);
}

/// A `<field>` offset of `INFO replication` on the node at `port`.
fn repl_offset(cluster: &RedisCluster, port: u16, field: &str) -> u64 {
    let info: String = cluster.node_cmd(port, redis::cmd("INFO").arg("replication"));
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// TLS: the tracking connections use the seed URLs' `rediss://` and the trusted CA, as the data
// connection does.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn near_cache_on_a_tls_cluster() {
    let cluster = RedisCluster::start_with_tls();
    let ca = cluster.tls_ca().expect("a TLS cluster").to_vec();
    let tls = |urls: Vec<String>| builder(urls).tls_root_ca_pem(ca.clone());
    assert!(cluster.urls()[0].starts_with("rediss://"));
    let a = tls(cluster.urls()).build().await.expect("cache A");
    let b = tls(cluster.urls()).build().await.expect("cache B");
    let db = Db::default();
    let ids = one_id_per_master(&cluster);
    for &(id, master) in &ids {
        until_near(&a, id, &db).await;
        guard("B's write", write(&b, id, &db)).await;
        let want = format!("row{id}@v{}", db.version());
        until_value(&a, id, &db, &want, Instant::now()).await;
        assert!(
            a.stats().function("nc.get").local_evictions > 0,
            "a push from {master}"
        );
    }
    for p in cluster.live_ports() {
        assert_eq!(tracking_on(&cluster, p).len(), 1, "node {p}");
    }
}
