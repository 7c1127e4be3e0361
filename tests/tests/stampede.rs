//! Stampede protection inside one process: many concurrent calls on a cold key run the loader
//! once and all get its value.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::{TestEnv, backend_tests, guard};
use tokio::sync::Barrier;

#[cached(key = "hot:{id}", ttl = 60, cache = cache)]
async fn slow_load(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!("hot-{id}")
}

#[cached(key = "hot_missing:{id}", ttl = 60, cache = cache)]
async fn slow_missing(
    cache: &Cache,
    id: u64,
    loads: &AtomicUsize,
) -> Result<Option<String>, String> {
    loads.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(None)
}

/// Runs `n` tasks that start together (barrier) and each call `call()`; returns their outputs.
async fn run_concurrently<T, F, Fut>(n: usize, call: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let fut = call();
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(
            guard("a concurrent call", task)
                .await
                .expect("task panicked"),
        );
    }
    out
}

async fn stampede_100_concurrent_calls_run_loader_once(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let values = run_concurrently(100, || {
        let (cache, loads) = (env.cache.clone(), loads.clone());
        async move { slow_load(&cache, 1, &loads).await }
    })
    .await;
    assert_eq!(values.len(), 100);
    assert!(
        values.iter().all(|v| v == "hot-1"),
        "every caller gets the value: {values:?}"
    );
    assert_eq!(
        loads.load(SeqCst),
        1,
        "100 concurrent calls on a cold key: exactly one loader run"
    );
    // And it is cached now.
    assert_eq!(slow_load(&env.cache, 1, &loads).await, "hot-1");
    assert_eq!(loads.load(SeqCst), 1);
}

async fn stampede_on_missing_row_runs_loader_once(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let values = run_concurrently(100, || {
        let (cache, loads) = (env.cache.clone(), loads.clone());
        async move { slow_missing(&cache, 1, &loads).await }
    })
    .await;
    assert!(
        values.iter().all(|v| *v == Ok(None)),
        "every caller gets Ok(None)"
    );
    assert_eq!(
        loads.load(SeqCst),
        1,
        "100 concurrent calls for a missing row: one loader run"
    );
}

async fn stampede_is_per_key(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    // 10 keys x 10 callers each, all at once.
    let values = run_concurrently(100, || {
        let (cache, loads) = (env.cache.clone(), loads.clone());
        let id = (next.fetch_add(1, SeqCst) % 10) as u64;
        async move { (id, slow_load(&cache, 100 + id, &loads).await) }
    })
    .await;
    for (id, value) in &values {
        assert_eq!(value, &format!("hot-{}", 100 + id));
    }
    assert_eq!(
        loads.load(SeqCst),
        10,
        "10 keys x 10 concurrent callers: one loader run per key"
    );
}

backend_tests!(
    stampede_100_concurrent_calls_run_loader_once,
    stampede_on_missing_row_runs_loader_once,
    stampede_is_per_key,
);
