//! One process of the cross-process grace-window test (`tests/tests/freshness/freshness.rs`,
//! `grace_burst_across_two_os_processes_runs_one_refresh`).
//!
//! Usage: `fresh-helper <cache-url> <counter-url> <prime|burst> <start-unix-ms> <calls>`
//!
//! The cached function (`ttl = 1, stale = 30`) counts its runs with `INCR fresh:loads` on the
//! counter server (a separate `redis-server`, so that nothing the cache does can touch it) and
//! returns `run<n>`. Every run after the first waits until the key `fresh:open` exists on the
//! counter server (the test's gate).
//!
//! * `prime`: one call; prints a `"prime"` report.
//! * `burst`: waits until the wall clock reaches `start-unix-ms`, makes `calls` concurrent calls
//!   (released together by a barrier) and prints a `"burst"` report with their values and this
//!   process's counters. Then waits for the gate, calls until the value is no longer `run1`
//!   (bounded) and prints a `"done"` report.
//!
//! Reports are [`cache_tests::source::FreshReport`] JSON lines on stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use cache_tests::Raw;
use cache_tests::source::FreshReport;
use cache_tests::unix_ms;

/// The counter of loader runs, on the counter server.
pub const LOADS_KEY: &str = "fresh:loads";
/// The gate: runs after the first wait until this key exists on the counter server.
pub const GATE_KEY: &str = "fresh:open";
/// The cache namespace the helpers share.
const NAMESPACE: &str = "xfresh";
/// The function's name in the stats.
const NAME: &str = "fresh_helper::row";

#[cached(key = "fresh:{id}", ttl = 1, stale = 30, cache = cache)]
async fn row(cache: &Cache, id: u64, counter: &Raw) -> String {
    let n = counter.incr(LOADS_KEY).await;
    if n > 1 {
        wait_for_gate(counter).await;
    }
    format!("run{n}")
}

async fn wait_for_gate(counter: &Raw) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !counter.exists(GATE_KEY).await {
        assert!(Instant::now() < deadline, "the gate never opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: fresh-helper <cache-url> <counter-url> <prime|burst> <start-unix-ms> <calls>"
    );
    std::process::exit(2)
}

fn report(cache: &Cache, phase: &str, values: Vec<Option<String>>) {
    let s = cache.stats().function(NAME);
    let r = FreshReport {
        pid: std::process::id(),
        phase: phase.to_owned(),
        values,
        stale_served: s.stale_served,
        refreshes: s.refreshes,
        loads: s.loads,
    };
    println!(
        "{}",
        serde_json::to_string(&r).expect("serializable report")
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        usage();
    }
    let start_at: u64 = args[3].parse().unwrap_or_else(|_| usage());
    let calls: usize = args[4].parse().unwrap_or_else(|_| usage());
    let cache = Cache::builder()
        .redis(args[0].clone())
        .namespace(NAMESPACE)
        .build()
        .await
        .unwrap_or_else(|e| panic!("building the cache failed: {e:?}"));
    let counter = Raw::connect(&args[1]).await;

    match args[2].as_str() {
        "prime" => {
            let v = row(&cache, 1, &counter).await;
            report(&cache, "prime", vec![Some(v)]);
        }
        "burst" => {
            let now = unix_ms();
            if start_at > now {
                tokio::time::sleep(Duration::from_millis(start_at - now)).await;
            }
            let barrier = Arc::new(tokio::sync::Barrier::new(calls));
            let tasks: Vec<_> = (0..calls)
                .map(|_| {
                    let (cache, counter, barrier) =
                        (cache.clone(), counter.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        row(&cache, 1, &counter).await
                    })
                })
                .collect();
            let mut values = Vec::with_capacity(calls);
            for t in tasks {
                values.push(t.await.ok());
            }
            report(&cache, "burst", values);

            wait_for_gate(&counter).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            let v = loop {
                let v = row(&cache, 1, &counter).await;
                if v != "run1" || Instant::now() >= deadline {
                    break v;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            report(&cache, "done", vec![Some(v)]);
        }
        _ => usage(),
    }
}
