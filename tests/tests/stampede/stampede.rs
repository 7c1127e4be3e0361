//! Stampede protection inside one process: many concurrent calls on a cold key run the loader
//! once and all get its value.
//!
//! The loader waits at a gate that opens only once all N callers have missed, so every caller
//! really races the load: a serial run (each call a hit after the first) fails these tests
//! (`misses == N`, `hits == 0`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::{TestEnv, backend_tests, eventually, guard};
use tokio::sync::Semaphore;

/// Counts loads; each load waits for a permit.
struct Gate {
    loads: AtomicUsize,
    open: Semaphore,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            loads: AtomicUsize::new(0),
            open: Semaphore::new(0),
        })
    }

    async fn pass(&self) {
        self.loads.fetch_add(1, SeqCst);
        let _permit = self.open.acquire().await;
    }

    fn loads(&self) -> usize {
        self.loads.load(SeqCst)
    }
}

#[cached(key = "hot:{id}", ttl = 60, cache = cache)]
async fn hot(cache: &Cache, id: u64, gate: &Gate) -> String {
    gate.pass().await;
    format!("hot-{id}")
}

#[cached(key = "hot_missing:{id}", ttl = 60, cache = cache)]
async fn hot_missing(cache: &Cache, id: u64, gate: &Gate) -> Result<Option<String>, String> {
    gate.pass().await;
    Ok(None)
}

/// Starts `n` calls, waits until all `n` have missed (by the function's `misses` counter),
/// opens the gate, and returns their outputs.
async fn stampede<T, F, Fut>(cache: &Cache, name: &str, gate: &Gate, n: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(call(i))).collect();
    let c = cache.clone();
    let name = name.to_owned();
    eventually(
        &format!("all {n} callers missed"),
        Duration::from_secs(20),
        || {
            let (c, name) = (c.clone(), name.clone());
            async move { c.stats().function(&name).misses == n as u64 }
        },
    )
    .await;
    gate.open.add_permits(10_000);
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(guard("a concurrent call", t).await.expect("task panicked"));
    }
    out
}

async fn stampede_100_concurrent_calls_run_loader_once(env: TestEnv) {
    let gate = Gate::new();
    let values = stampede(&env.cache, "stampede::stampede::hot", &gate, 100, |_| {
        let (cache, gate) = (env.cache.clone(), gate.clone());
        async move { hot(&cache, 1, &gate).await }
    })
    .await;
    assert!(
        values.iter().all(|v| v == "hot-1"),
        "every caller gets the value: {values:?}"
    );
    let s = env.cache.stats().function("stampede::stampede::hot");
    assert_eq!((gate.loads(), s.misses, s.hits), (1, 100, 0), "{s:?}");
    // And it is cached now.
    assert_eq!(hot(&env.cache, 1, &gate).await, "hot-1");
    assert_eq!(gate.loads(), 1);
}

async fn stampede_on_missing_row_runs_loader_once(env: TestEnv) {
    let gate = Gate::new();
    let values = stampede(
        &env.cache,
        "stampede::stampede::hot_missing",
        &gate,
        100,
        |_| {
            let (cache, gate) = (env.cache.clone(), gate.clone());
            async move { hot_missing(&cache, 1, &gate).await }
        },
    )
    .await;
    assert!(
        values.iter().all(|v| *v == Ok(None)),
        "every caller gets Ok(None)"
    );
    let s = env
        .cache
        .stats()
        .function("stampede::stampede::hot_missing");
    assert_eq!(
        (gate.loads(), s.misses, s.negative_hits),
        (1, 100, 0),
        "{s:?}"
    );
}

async fn stampede_is_per_key(env: TestEnv) {
    let gate = Gate::new();
    // 10 keys x 10 callers each, all racing.
    let values = stampede(&env.cache, "stampede::stampede::hot", &gate, 100, |i| {
        let (cache, gate) = (env.cache.clone(), gate.clone());
        let id = 100 + (i % 10) as u64;
        async move { (id, hot(&cache, id, &gate).await) }
    })
    .await;
    for (id, value) in &values {
        assert_eq!(value, &format!("hot-{id}"));
    }
    let s = env.cache.stats().function("stampede::stampede::hot");
    assert_eq!(
        (gate.loads(), s.misses, s.hits),
        (10, 100, 0),
        "one load per key: {s:?}"
    );
}

backend_tests!(
    stampede_100_concurrent_calls_run_loader_once,
    stampede_on_missing_row_runs_loader_once,
    stampede_is_per_key,
);
