//! Hit path on a Redis Cluster against a single Redis server, on the same machine.
//!
//! ```text
//! cargo run --release -p bench --example cluster-hit            # ~20 s
//! cargo run --release -p bench --example cluster-hit -- --quick # ~3 s
//! ```
//!
//! Starts a private `redis-server` and a private 6-node cluster (the test harness's
//! [`RedisServer`] and [`RedisCluster`]), warms 64 keys of a `#[cached]` function (a ~1 KB JSON
//! struct) on each, then times hits: 1 task and 64 tasks, the two backends alternating slice by
//! slice so that a slow moment of the machine is spread over both. Prints ns/op per backend and
//! the cluster/single ratio of each round's pair, median over rounds (the bench's median:
//! [`stats::median`]).
//!
//! An example of the bench crate rather than a binary: it needs the test harness
//! (`cache-tests`, a dev-dependency), whose features (`tokio/process`, the runtime's `metrics`,
//! `tls`, `test-util`) must not reach the bench binary's build (they would change its figures);
//! a dev-dependency's features are only unified into builds of examples and tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_tests::{RedisCluster, RedisServer};
use serde::{Deserialize, Serialize};

// The bench's statistics (only the median is used here).
#[allow(dead_code)]
#[path = "../src/stats.rs"]
mod stats;

use stats::median;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    description: String,
    tags: Vec<String>,
    price_cents: u64,
}

#[cached(key = "bench:{id}", ttl = 3600, cache = cache)]
async fn product(cache: &Cache, id: u64) -> Product {
    Product {
        id,
        name: format!("product {id}"),
        description: "x".repeat(800),
        tags: (0..8).map(|i| format!("tag-{i}")).collect(),
        price_cents: id * 100,
    }
}

const KEYS: u64 = 64;

/// Hits per second over `slice` with `tasks` concurrent callers.
async fn slice(cache: &Cache, tasks: usize, slice: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (cache, stop, ops) = (cache.clone(), stop.clone(), ops.clone());
            tokio::spawn(async move {
                let mut i = t as u64;
                let mut n = 0;
                while !stop.load(Relaxed) {
                    std::hint::black_box(product(&cache, i % KEYS).await);
                    i += 1;
                    n += 1;
                }
                ops.fetch_add(n, Relaxed);
            })
        })
        .collect();
    tokio::time::sleep(slice).await;
    stop.store(true, Relaxed);
    for h in handles {
        h.await.expect("bench task");
    }
    ops.load(Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, len) = if quick {
        (3, Duration::from_millis(200))
    } else {
        (10, Duration::from_millis(500))
    };
    let server = RedisServer::start();
    let cluster = RedisCluster::start();
    let single = Cache::builder()
        .redis(server.url())
        .require_connection()
        .build()
        .await
        .expect("single-node cache");
    let clustered = Cache::builder()
        .redis_cluster(cluster.urls())
        .require_connection()
        .build()
        .await
        .expect("cluster cache");
    for cache in [&single, &clustered] {
        for id in 0..KEYS {
            product(cache, id).await;
        }
    }
    println!("hit path, #[cached] json (~1 KB), {rounds} rounds of {len:?} slices");
    println!(
        "{:>6} {:>14} {:>14} {:>22}",
        "tasks", "single ns/op", "cluster ns/op", "cluster/single (med)"
    );
    for tasks in [1usize, 64] {
        let (mut s_ops, mut c_ops, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (s, c) = if round % 2 == 0 {
                let s = slice(&single, tasks, len).await;
                (s, slice(&clustered, tasks, len).await)
            } else {
                let c = slice(&clustered, tasks, len).await;
                (slice(&single, tasks, len).await, c)
            };
            s_ops.push(s);
            c_ops.push(c);
            ratios.push(s / c);
        }
        println!(
            "{:>6} {:>14.0} {:>14.0} {:>22.3}",
            tasks,
            1e9 / median(s_ops),
            1e9 / median(c_ops),
            median(ratios)
        );
    }
    let (s, c) = (single.stats().total(), clustered.stats().total());
    assert_eq!(s.loads, KEYS, "single: only the warm-up loaded: {s:?}");
    assert_eq!(c.loads, KEYS, "cluster: only the warm-up loaded: {c:?}");
    assert_eq!(c.backend_errors + c.backend_skipped, 0, "{c:?}");
}
