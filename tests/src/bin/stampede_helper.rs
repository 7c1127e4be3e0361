//! One process of the cross-process stampede test (`tests/tests/stampede/stampede_cross_process.rs`).
//!
//! Usage: `stampede-helper <redis-url> <namespace> <id> <counter-key> <start-unix-ms> <calls> [<gate-key>]`
//!
//! `<redis-url>` may be a comma-separated list of a Redis Cluster's seed nodes
//! (`tests/tests/cluster/main.rs`): the cache is then built with `redis_cluster`.
//!
//! Builds a Redis-backed `Cache`, waits until the wall clock reaches `start-unix-ms` (so that all
//! processes start together), then makes `calls` concurrent calls of a `#[cached]` function on the
//! same key. The loader counts itself with `INCR <counter-key>` (outside the cache namespace) and
//! takes 300 ms. Prints one JSON [`cache_tests::HelperReport`] line on stdout.
//!
//! With `<gate-key>`, the loader instead waits until that key exists (the test sets it), and
//! once every call of this process has missed, the process counts itself with
//! `INCR <gate-key>:missed`: the test opens the gate when all processes are in the stampede.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::{HelperReport, Raw, RawCluster, unix_ms};

/// Where the loader counts its runs.
#[derive(Clone)]
enum Counter {
    Single(Raw),
    Cluster(RawCluster),
}

impl Counter {
    async fn incr(&self, key: &str) -> i64 {
        match self {
            Counter::Single(r) => r.incr(key).await,
            Counter::Cluster(r) => r.incr(key).await,
        }
    }

    async fn exists(&self, key: &str) -> bool {
        match self {
            Counter::Single(r) => r.get(key).await.is_some(),
            Counter::Cluster(r) => r.exists(key).await,
        }
    }

    /// Waits until `key` exists (at most 30 s).
    async fn wait_for(&self, key: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.exists(key).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gate {key} not opened within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cached(key = "stampede:{id}", ttl = 60, cache = cache)]
async fn load_shared(
    cache: &Cache,
    id: u64,
    counter: &Counter,
    counter_key: &str,
    local: &AtomicUsize,
    gate: Option<&str>,
) -> String {
    counter.incr(counter_key).await;
    local.fetch_add(1, Ordering::SeqCst);
    match gate {
        Some(gate) => counter.wait_for(gate).await,
        None => tokio::time::sleep(Duration::from_millis(300)).await,
    }
    format!("value-{id}")
}

fn usage() -> ! {
    eprintln!(
        "usage: stampede-helper <redis-url> <namespace> <id> <counter-key> <start-unix-ms> <calls> [<gate-key>]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 && args.len() != 7 {
        usage();
    }
    let gate: Option<Arc<str>> = args.get(6).map(|g| g.as_str().into());
    let url = args[0].clone();
    let namespace = args[1].clone();
    let id: u64 = args[2].parse().unwrap_or_else(|_| usage());
    let counter_key = args[3].clone();
    let start_at: u64 = args[4].parse().unwrap_or_else(|_| usage());
    let calls: usize = args[5].parse().unwrap_or_else(|_| usage());

    let urls: Vec<String> = url.split(',').map(str::to_owned).collect();
    let builder = if urls.len() > 1 {
        Cache::builder().redis_cluster(urls.clone())
    } else {
        Cache::builder().redis(url.clone())
    };
    let cache = builder
        .namespace(namespace)
        .build()
        .await
        .unwrap_or_else(|e| panic!("building the cache failed: {e:?}"));
    let counter = if urls.len() > 1 {
        Counter::Cluster(RawCluster::connect(&urls).await)
    } else {
        Counter::Single(Raw::connect(&url).await)
    };
    let local = Arc::new(AtomicUsize::new(0));
    let counter_key: Arc<str> = counter_key.into();

    let now = unix_ms();
    if start_at > now {
        tokio::time::sleep(Duration::from_millis(start_at - now)).await;
    }

    let barrier = Arc::new(tokio::sync::Barrier::new(calls));
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let (cache, counter, counter_key, local, barrier, gate) = (
                cache.clone(),
                counter.clone(),
                counter_key.clone(),
                local.clone(),
                barrier.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                load_shared(&cache, id, &counter, &counter_key, &local, gate.as_deref()).await
            })
        })
        .collect();
    if let Some(gate) = &gate {
        // Every call of this process is in the stampede (missed, waiting on a lease or on the
        // in-process flight): tell the test.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while cache.stats().total().misses < calls as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "calls did not all miss within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        counter.incr(&format!("{gate}:missed")).await;
    }

    let mut values = Vec::with_capacity(calls);
    for task in tasks {
        values.push(task.await.ok());
    }
    let report = HelperReport {
        pid: std::process::id(),
        values,
        local_loads: local.load(Ordering::SeqCst),
        misses: cache.stats().total().misses,
        lock_waits: cache.stats().total().lock_waits,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("serializable report")
    );
}
