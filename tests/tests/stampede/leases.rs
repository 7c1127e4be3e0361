//! Loader panics and cancelled callers: the lease is released, nothing is cached, and other
//! callers of the same key are never left stuck.
//!
//! The caches here use `lock_ms = 60 s`: a lease that was *not* released would block the next
//! caller for a minute, which the 30 s hang guards turn into a failure. No assertion is about
//! speed; the guards only catch hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::{TestEnv, backend_tests, eventually, guard};
use tokio::sync::Notify;

/// What the loader does.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Return the value.
    Value,
    /// Panic right away.
    Panic,
    /// Signal `started`, wait for `release`, then panic.
    PanicWhenReleased(Arc<Gate>),
    /// Signal `started`, then wait for `release` (a load that takes as long as the test wants).
    Block(Arc<Gate>),
}

#[derive(Debug, Default)]
struct Gate {
    started: Notify,
    release: Notify,
}

#[cached(key = "lease:{id}", ttl = 300, name = "leases.load", cache = cache)]
async fn load(cache: &Cache, id: u64, behaviour: Behaviour, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    match behaviour {
        Behaviour::Value => {}
        Behaviour::Panic => panic!("loader panicked (on purpose)"),
        Behaviour::PanicWhenReleased(gate) => {
            gate.started.notify_one();
            gate.release.notified().await;
            panic!("loader panicked (on purpose)");
        }
        Behaviour::Block(gate) => {
            gate.started.notify_one();
            gate.release.notified().await;
        }
    }
    format!("value-{id}")
}

fn spawn_load(
    env: &TestEnv,
    id: u64,
    behaviour: Behaviour,
    loads: &Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<String> {
    let (cache, loads) = (env.cache.clone(), loads.clone());
    tokio::spawn(async move { load(&cache, id, behaviour, &loads).await })
}

/// On Redis: waits until the key no longer exists (the lease was deleted).
async fn lease_gone(env: &TestEnv, rendered: &str, what: &str) {
    if let Some(raw) = env.raw().await {
        let key = env.cache.full_key(rendered);
        eventually(what, Duration::from_secs(10), || {
            let (raw, key) = (raw.clone(), key.clone());
            async move { !raw.exists(&key).await }
        })
        .await;
    }
}

async fn loader_panic_propagates_and_releases_lease(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let result = guard(
        "the panicking call",
        spawn_load(&env, 1, Behaviour::Panic, &loads),
    )
    .await;
    let err = result.expect_err("the loader's panic reaches its caller");
    assert!(err.is_panic(), "caller task ended by panic, got {err:?}");
    let stats = env.cache.stats().function("leases.load");
    assert_eq!(
        (stats.loads, stats.load_errors),
        (1, 1),
        "a panicked load counts as a load error: {stats:?}"
    );
    lease_gone(
        &env,
        "lease:1",
        "the lease is released after a loader panic (key gone)",
    )
    .await;

    // Nothing cached, and the next caller is not blocked by a leftover lease.
    let value = guard(
        "the call after the panic",
        load(&env.cache, 1, Behaviour::Value, &loads),
    )
    .await;
    assert_eq!(value, "value-1");
    assert_eq!(
        loads.load(SeqCst),
        2,
        "the panic cached nothing: the next call loaded"
    );
}

async fn loader_panic_waiters_get_value_from_next_load(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let leader = spawn_load(&env, 2, Behaviour::PanicWhenReleased(gate.clone()), &loads);
    guard("the panicking loader to start", gate.started.notified()).await;

    let waiters: Vec<_> = (0..10)
        .map(|_| spawn_load(&env, 2, Behaviour::Value, &loads))
        .collect();
    // All 10 waiters queue behind the leader (1 + 10 misses) before it is let go.
    let c = env.cache.clone();
    eventually("the waiters queued", Duration::from_secs(10), || {
        let c = c.clone();
        async move { c.stats().function("leases.load").misses == 11 }
    })
    .await;
    gate.release.notify_one();

    let err = guard("the panicking leader", leader)
        .await
        .expect_err("leader panics");
    assert!(err.is_panic());
    for waiter in waiters {
        let value = guard("a waiter behind a panicked loader", waiter)
            .await
            .expect("waiter must not panic");
        assert_eq!(
            value, "value-2",
            "waiters get a value from their own/the next load"
        );
    }
    // The waiters elected one new leader: exactly one more load.
    let after = loads.load(SeqCst);
    assert_eq!(
        after, 2,
        "one load after the panic produced the value for all waiters"
    );
    assert_eq!(
        load(&env.cache, 2, Behaviour::Value, &loads).await,
        "value-2"
    );
    assert_eq!(loads.load(SeqCst), after, "the waiters' value is cached");
}

async fn cancelled_caller_releases_lease(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let caller = spawn_load(&env, 3, Behaviour::Block(gate.clone()), &loads);
    guard("the loader to start", gate.started.notified()).await;
    caller.abort();
    let err = guard("the aborted call", caller)
        .await
        .expect_err("aborted");
    assert!(err.is_cancelled());

    lease_gone(
        &env,
        "lease:3",
        "the lease is released after the caller was dropped mid-load",
    )
    .await;
    let value = guard(
        "the call after the cancelled one",
        load(&env.cache, 3, Behaviour::Value, &loads),
    )
    .await;
    assert_eq!(value, "value-3");
    assert_eq!(loads.load(SeqCst), 2);
}

async fn dropped_future_via_timeout_releases_lease(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    {
        // Drop the caller's future as soon as its loader has started.
        let call = load(&env.cache, 4, Behaviour::Block(gate.clone()), &loads);
        tokio::select! {
            _ = call => panic!("the blocked load cannot finish"),
            _ = guard("the loader to start", gate.started.notified()) => {}
        }
    }
    lease_gone(
        &env,
        "lease:4",
        "the lease is released after the future was dropped mid-load",
    )
    .await;
    let value = guard(
        "the call after the dropped one",
        load(&env.cache, 4, Behaviour::Value, &loads),
    )
    .await;
    assert_eq!(value, "value-4");
}

async fn cancelled_caller_waiters_proceed(env: TestEnv) {
    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let caller = spawn_load(&env, 5, Behaviour::Block(gate.clone()), &loads);
    guard("the loader to start", gate.started.notified()).await;

    let waiters: Vec<_> = (0..10)
        .map(|_| spawn_load(&env, 5, Behaviour::Value, &loads))
        .collect();
    // All 10 waiters queue behind the leader (1 + 10 misses) before it is let go.
    let c = env.cache.clone();
    eventually("the waiters queued", Duration::from_secs(10), || {
        let c = c.clone();
        async move { c.stats().function("leases.load").misses == 11 }
    })
    .await;
    caller.abort();

    for waiter in waiters {
        let value = guard("a waiter behind a cancelled caller", waiter)
            .await
            .expect("waiter must not panic");
        assert_eq!(value, "value-5");
    }
    // A waiter took over from the cancelled caller: exactly one more load.
    let after = loads.load(SeqCst);
    assert_eq!(
        after, 2,
        "one load served the waiters of the cancelled caller"
    );
    assert_eq!(
        load(&env.cache, 5, Behaviour::Value, &loads).await,
        "value-5"
    );
    assert_eq!(loads.load(SeqCst), after, "the waiters' value is cached");
}

backend_tests!(
    with |b| b.lock_ms(60_000);
    loader_panic_propagates_and_releases_lease,
    loader_panic_waiters_get_value_from_next_load,
    cancelled_caller_releases_lease,
    dropped_future_via_timeout_releases_lease,
    cancelled_caller_waiters_proceed,
    caught_loader_panic_releases_flight,
);

/// Polls a future, catching a panic of its poll; keeps the future (does not drop it).
struct CatchPoll<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchPoll<F> {
    type Output = Result<F::Output, ()>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let f = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

/// A loader panic caught by the caller (the call's future kept, not dropped yet) still
/// releases the call's in-process flight and lease while unwinding: the next call is not
/// queued behind a leader that will never land, and the panic counts as a load error.
async fn caught_loader_panic_releases_flight(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    let call = load(&env.cache, 5, Behaviour::Panic, &loads);
    let mut caught = CatchPoll(Box::pin(call));
    let r = guard("the panicking call", &mut caught).await;
    assert!(r.is_err(), "the loader's panic reaches the caller");
    let stats = env.cache.stats().function("leases.load");
    assert_eq!(
        stats.load_errors, 1,
        "the caught panic counts as a load error: {stats:?}"
    );
    let value = guard(
        "a call after the caught panic (the poisoned future still alive)",
        load(&env.cache, 5, Behaviour::Value, &loads),
    )
    .await;
    assert_eq!(value, "value-5");
    drop(caught);
}
