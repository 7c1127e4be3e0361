//! The circuit breaker under a real outage: with `redis-server` killed, calls return the loader's
//! values, and once the circuit is open they skip Redis (counted as `backend_skipped`) instead of
//! each paying a failed round trip; a half-open circuit lets exactly one probe through; after the
//! server is restarted on the same port, the circuit closes and hits resume without rebuilding the
//! `Cache`.
//!
//! No assertion is about wall-clock speed: "the added latency stays near zero" is shown by the
//! breaker state and by the counters (skipped calls never touched Redis).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_runtime::{BreakerState, Cache, cached};
use cache_tests::{Backend, TestEnv, eventually, guard};

/// Consecutive failures that open the circuit in these tests.
const THRESHOLD: u32 = 3;
/// How long an open circuit skips Redis before one call probes it.
const COOL_DOWN: Duration = Duration::from_secs(1);
/// Bound of every recovery poll (a hang guard, not a speed assertion).
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

const NAME: &str = "breaker.get";

#[cached(key = "b:{id}", ttl = 300, name = "breaker.get", cache = cache)]
async fn get(cache: &Cache, id: u64, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("db-{id}")
}

async fn env() -> TestEnv {
    TestEnv::with(Backend::Redis, |b| {
        b.command_timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(200))
            .circuit_breaker(THRESHOLD, COOL_DOWN)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breaker_opens_while_redis_is_killed_and_closes_after_restart() {
    let mut env = env().await;
    let loads = AtomicUsize::new(0);

    // Healthy: miss then hit.
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");
    assert_eq!(env.cache.breaker_state(), BreakerState::Closed);
    let healthy = env.cache.stats().function(NAME);
    assert_eq!(
        (healthy.hits, healthy.loads, healthy.backend_errors),
        (1, 1, 0),
        "{healthy:?}"
    );

    // Outage: 200 calls, every one answered by the loader.
    env.server().kill();
    let loads_before = loads.load(SeqCst);
    let started = Instant::now();
    for i in 0..200u64 {
        let id = i % 20;
        let value = guard("a call with Redis killed", get(&env.cache, id, &loads)).await;
        assert_eq!(
            value,
            format!("db-{id}"),
            "call {i} over the outage returns the loader's value"
        );
    }
    let elapsed = started.elapsed();
    let state_after_outage = env.cache.breaker_state();
    let outage = env.cache.stats().function(NAME);
    assert_eq!(
        loads.load(SeqCst) - loads_before,
        200,
        "every call over the outage ran the loader"
    );
    assert_eq!(
        state_after_outage,
        BreakerState::Open,
        "the circuit is open while Redis is down: {outage:?}"
    );

    let errors = outage.backend_errors - healthy.backend_errors;
    let skipped = outage.backend_skipped - healthy.backend_skipped;
    assert_eq!(
        errors + skipped,
        200,
        "each call over the outage met exactly one backend fault: {outage:?}"
    );
    assert!(
        errors >= u64::from(THRESHOLD),
        "the first {THRESHOLD} calls fail before the circuit opens: {outage:?}"
    );
    // After the circuit opened, only half-open probes (at most one per cool-down) reach Redis.
    let probes_at_most = (elapsed.as_millis() / COOL_DOWN.as_millis()) as u64 + 1;
    assert!(
        errors <= u64::from(THRESHOLD) + probes_at_most,
        "with the circuit open, calls must skip Redis: {errors} backend errors over 200 calls in {elapsed:?} \
         (expected <= {THRESHOLD} + {probes_at_most} probes): {outage:?}"
    );
    assert!(
        skipped >= 200 - u64::from(THRESHOLD) - probes_at_most,
        "most calls were skipped: {outage:?}"
    );
    assert_eq!(
        outage.hits, healthy.hits,
        "nothing can be a hit with Redis down"
    );

    // Restart on the same port (an empty server): the same Cache recovers by itself.
    env.server().restart();
    let hits_before = outage.hits;
    let deadline = tokio::time::Instant::now() + RECOVERY_BOUND;
    loop {
        let value = guard("a call after the restart", get(&env.cache, 7, &loads)).await;
        assert_eq!(value, "db-7");
        let now = env.cache.stats().function(NAME);
        if now.hits > hits_before && env.cache.breaker_state() == BreakerState::Closed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hits did not resume within {RECOVERY_BOUND:?} after the restart: state {:?}, {now:?}",
            env.cache.breaker_state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let raw = env.raw().await.expect("redis env");
    assert!(
        raw.get(&env.cache.full_key("b:7")).await.is_some(),
        "the value is stored in the restarted server"
    );
    let loads_now = loads.load(SeqCst);
    assert_eq!(get(&env.cache, 7, &loads).await, "db-7");
    assert_eq!(
        loads.load(SeqCst),
        loads_now,
        "after recovery a repeated call is a hit"
    );
    assert_eq!(env.cache.breaker_state(), BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_circuit_lets_exactly_one_probe_through() {
    let mut env = env().await;
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");
    env.server().kill();

    // Open the circuit.
    for _ in 0..THRESHOLD {
        assert_eq!(
            guard("a call with Redis killed", get(&env.cache, 1, &loads)).await,
            "db-1"
        );
    }
    assert_eq!(env.cache.breaker_state(), BreakerState::Open);
    let opened = env.cache.stats().function(NAME);
    assert_eq!(opened.backend_errors, u64::from(THRESHOLD), "{opened:?}");

    // Calls while open are skipped: no Redis round trip, no new error.
    assert_eq!(get(&env.cache, 2, &loads).await, "db-2");
    let open = env.cache.stats().function(NAME);
    assert_eq!(
        (open.backend_errors, open.backend_skipped),
        (opened.backend_errors, opened.backend_skipped + 1),
        "{open:?}"
    );

    // After the cool-down the circuit is half-open; many concurrent calls, one probe.
    eventually(
        "the circuit becomes half-open after the cool-down",
        RECOVERY_BOUND,
        || async { env.cache.breaker_state() == BreakerState::HalfOpen },
    )
    .await;
    let before = env.cache.stats().function(NAME);
    let mut tasks = Vec::new();
    for id in 0..50u64 {
        let cache = env.cache.clone();
        let loads = loads.clone();
        tasks.push(tokio::spawn(
            async move { (id, get(&cache, id, &loads).await) },
        ));
    }
    for t in tasks {
        let (id, value) = guard("a concurrent call while half-open", t)
            .await
            .expect("no panic");
        assert_eq!(value, format!("db-{id}"));
    }
    let after = env.cache.stats().function(NAME);
    assert_eq!(
        after.backend_errors - before.backend_errors,
        1,
        "exactly one probe reached Redis: {after:?}"
    );
    assert_eq!(
        after.backend_skipped - before.backend_skipped,
        49,
        "the others skipped it: {after:?}"
    );
    assert_eq!(
        env.cache.breaker_state(),
        BreakerState::Open,
        "a failed probe reopens the circuit"
    );
}

/// `Stats::total()` sums every counter, the failure counters included: with one function on the
/// cache, the total equals that function's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_total_includes_the_breaker_counters() {
    let mut env = env().await;
    let loads = AtomicUsize::new(0);
    assert_eq!(get(&env.cache, 1, &loads).await, "db-1");
    env.server().kill();
    for id in 0..20u64 {
        assert_eq!(
            guard("a call with Redis killed", get(&env.cache, id, &loads)).await,
            format!("db-{id}")
        );
    }
    let stats = env.cache.stats();
    let one = stats.function(NAME);
    assert!(one.backend_skipped > 0 && one.backend_errors > 0, "{one:?}");
    assert_eq!(
        stats.total(),
        one,
        "total() over a single function equals its counters"
    );
}
