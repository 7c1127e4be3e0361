//! Stampede coalescing when the leader's result is not stored, generic instantiations
//! sharing one entry, and foreign Redis data tripping the breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cache_tests::{Backend, TestEnv, backend_tests, guard};
use serde::Serialize;
use serde::de::DeserializeOwned;

const CALLERS: usize = 20;

/// Counts loads; each load waits until the test opens the gate (once all callers missed).
struct Gate {
    loads: AtomicUsize,
    open: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            loads: AtomicUsize::new(0),
            open: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Gate {
    async fn pass(&self) {
        self.loads.fetch_add(1, SeqCst);
        let _p = self.open.acquire().await;
    }

    fn load(&self, _: std::sync::atomic::Ordering) -> usize {
        self.loads.load(SeqCst)
    }

    /// Opens the gate once `cache` counted `n` misses of `name`.
    async fn open_when_missed(&self, cache: &Cache, name: &str, n: u64) {
        let (c, name) = (cache.clone(), name.to_owned());
        cache_tests::eventually("all callers missed", Duration::from_secs(10), || {
            let (c, name) = (c.clone(), name.clone());
            async move { c.stats().function(&name).misses == n }
        })
        .await;
        self.open.add_permits(1000);
    }
}

#[cached(key = "flight:neg0:{id}", ttl = 60, negative_ttl = 0, cache = cache)]
async fn uncached_none(cache: &Cache, id: u64, loads: &Gate) -> Option<String> {
    loads.pass().await;
    let _ = id;
    None
}

/// `negative_ttl = 0`: `None` is not cached, but 20 callers arriving together should still
/// share one load (single flight), not run the loader one after another.
async fn uncached_none_stampede_loads_once(env: TestEnv) {
    let loads = Arc::new(Gate::default());
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (cache, loads) = (env.cache.clone(), loads.clone());
        tasks.push(tokio::spawn(async move {
            uncached_none(&cache, 1, &loads).await
        }));
    }
    loads
        .open_when_missed(
            &env.cache,
            "stampede::flight_outcomes::uncached_none",
            CALLERS as u64,
        )
        .await;
    let started = std::time::Instant::now();
    for t in tasks {
        assert_eq!(guard("caller", t).await.unwrap(), None);
    }
    assert_eq!(
        loads.load(SeqCst),
        1,
        "{CALLERS} concurrent callers ran the loader {} times (took {:?})",
        loads.load(SeqCst),
        started.elapsed()
    );
}

#[cached(key = "flight:big:{id}", ttl = 60, cache = cache)]
async fn oversized(cache: &Cache, id: u64, loads: &Gate) -> String {
    loads.pass().await;
    "x".repeat(10_000 + id as usize)
}

/// A value over `max_value_bytes` is not cached; concurrent callers should still share one load.
async fn oversized_stampede_loads_once(env: TestEnv) {
    let loads = Arc::new(Gate::default());
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (cache, loads) = (env.cache.clone(), loads.clone());
        tasks.push(tokio::spawn(async move {
            oversized(&cache, 1, &loads).await.len()
        }));
    }
    loads
        .open_when_missed(
            &env.cache,
            "stampede::flight_outcomes::oversized",
            CALLERS as u64,
        )
        .await;
    let started = std::time::Instant::now();
    for t in tasks {
        assert_eq!(guard("caller", t).await.unwrap(), 10_001);
    }
    assert_eq!(
        loads.load(SeqCst),
        1,
        "{CALLERS} concurrent callers ran the loader {} times (took {:?})",
        loads.load(SeqCst),
        started.elapsed()
    );
}

trait Width: Serialize + DeserializeOwned + Send + 'static {
    fn make() -> Self;
}
impl Width for u64 {
    fn make() -> Self {
        64
    }
}
impl Width for u16 {
    fn make() -> Self {
        16
    }
}

#[cached(key = "flight:gen:{id}", ttl = 60, cache = cache)]
async fn generic_out<T: Width>(cache: &Cache, id: u64) -> T {
    let _ = id;
    T::make()
}

/// Two instantiations of a generic fn with the same arguments must not serve each other's
/// values.
async fn generic_instantiations_do_not_share_entries(env: TestEnv) {
    assert_eq!(generic_out::<u64>(&env.cache, 1).await, 64);
    assert_eq!(
        generic_out::<u16>(&env.cache, 1).await,
        16,
        "generic_out::<u16> returned generic_out::<u64>'s cached value"
    );
}

#[cached(key = "flight:genflight:{id}", ttl = 60, name = "flight.generic_gated", cache = cache)]
async fn generic_gated<T: Width>(cache: &Cache, id: u64, gate: Arc<Gate>) -> T {
    let _ = id;
    gate.pass().await;
    T::make()
}

/// Two instantiations racing on one key join one in-process flight: the follower of the
/// other type gets bytes it cannot decode (a decode error of an entry of another type, on the
/// type-erased miss path) and must load its own value, neither wedged nor served the other's.
async fn generic_instantiations_racing_in_one_flight(env: TestEnv) {
    let gate = Arc::new(Gate::default());
    let (c, g) = (env.cache.clone(), gate.clone());
    let wide = tokio::spawn(async move { generic_gated::<u64>(&c, 1, g).await });
    // The u64 call leads (its loader is at the gate) before the u16 call joins.
    cache_tests::eventually("the u64 loader started", Duration::from_secs(10), || {
        let g = gate.clone();
        async move { g.load(SeqCst) == 1 }
    })
    .await;
    let (c, g) = (env.cache.clone(), gate.clone());
    let narrow = tokio::spawn(async move { generic_gated::<u16>(&c, 1, g).await });
    gate.open_when_missed(&env.cache, "flight.generic_gated", 2)
        .await;
    let wide = guard("the u64 call", wide)
        .await
        .expect("u64 call panicked");
    let narrow = guard("the u16 call", narrow)
        .await
        .expect("u16 call panicked");
    assert_eq!(
        (wide, narrow),
        (64, 16),
        "an instantiation got the other's value"
    );
    // The key now holds one of the two; each instantiation still reads its own.
    assert_eq!(generic_gated::<u16>(&env.cache, 1, gate.clone()).await, 16);
    assert_eq!(generic_gated::<u64>(&env.cache, 1, gate.clone()).await, 64);
}

backend_tests!(with |b| b.max_value_bytes(1000);
    uncached_none_stampede_loads_once,
    oversized_stampede_loads_once,
    generic_instantiations_do_not_share_entries,
    generic_instantiations_racing_in_one_flight,
);

#[cached(key = "flight:wt:{id}", ttl = 60, name = "flight.wrongtype", cache = cache)]
async fn plain(cache: &Cache, id: u64) -> u64 {
    id
}

#[cached(key = "flight:ok:{id}", ttl = 60, name = "flight.ok", cache = cache)]
async fn healthy(cache: &Cache, id: u64) -> u64 {
    id
}

/// A key of another type (a list written by another app under our namespace) is foreign data:
/// it should be a miss for that key, not a backend failure that opens the circuit for every
/// function of the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrongtype_key_does_not_open_circuit() {
    let env = TestEnv::new(Backend::Redis).await;
    let server = env.server.as_ref().unwrap();
    let client = server.client();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = env.cache.full_key("flight:wt:1");
    let _: i64 = redis::cmd("RPUSH")
        .arg(&key)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(plain(&env.cache, 1).await, 1);
    }
    // Fill a healthy key, then read it: it should be a hit.
    healthy(&env.cache, 2).await;
    healthy(&env.cache, 2).await;
    let s = env.cache.stats();
    let ok = s.function("flight.ok");
    let wt = s.function("flight.wrongtype");
    assert_eq!(
        (env.cache.breaker_state(), ok.hits, ok.backend_skipped),
        (cache_runtime::BreakerState::Closed, 1, 0),
        "one foreign key opened the circuit for the whole cache; wrongtype stats {wt:?}, healthy stats {ok:?}"
    );
}

/// After ONE failed load, the waiters of the key let one of them lead the next load; two never
/// load at once (the history checker's check (c), one loader at a time per key).
///
/// `Leader::land` (flight.rs) leaves the flight table before it publishes the outcome. A
/// follower woken by a `Failed` landing sets `leader_failed` and joins again; if it could find
/// the same, already landed flight, it would read its `Failed` a second time, take it for a
/// second consecutive failure and load alone (`Mode::Alone`) while another waiter, the new
/// leader, loads under the lease: two loads of one key at once after a single loader error.
/// A race: it is run on many keys.
mod after_one_failed_load {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    use cache_runtime::{Cache, cached};

    const CALLERS: usize = 32;
    const KEYS: u64 = 200;

    #[derive(Default)]
    struct Probe {
        attempts: AtomicUsize,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    /// The first load of a key fails (after a delay, so that every caller waits on it); the next
    /// ones succeed.
    #[cached(key = "rejoin:{id}", ttl = 60, cache = cache)]
    async fn flaky(cache: &Cache, id: u64, probe: &Probe) -> Result<u64, String> {
        let now = probe.running.fetch_add(1, SeqCst) + 1;
        probe.most_at_once.fetch_max(now, SeqCst);
        let attempt = probe.attempts.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(if attempt == 0 { 20 } else { 10 })).await;
        probe.running.fetch_sub(1, SeqCst);
        if attempt == 0 {
            Err("the first load fails".to_owned())
        } else {
            Ok(id)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_failed_load_lets_one_waiter_lead_not_two_load_at_once() {
        let cache = Cache::builder().memory().build().await.unwrap();
        let mut bad = Vec::new();
        for id in 0..KEYS {
            let probe = std::sync::Arc::new(Probe::default());
            let calls: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (cache, probe) = (cache.clone(), probe.clone());
                    tokio::spawn(async move { flaky(&cache, id, &probe).await })
                })
                .collect();
            for c in calls {
                let _ = c.await.unwrap();
            }
            let (attempts, at_once) =
                (probe.attempts.load(SeqCst), probe.most_at_once.load(SeqCst));
            if at_once > 1 {
                bad.push((id, attempts, at_once));
            }
        }
        assert!(
            bad.is_empty(),
            "{} of {KEYS} keys ran loads at once after one failed load (key, loads, most at \
             once): {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
}
