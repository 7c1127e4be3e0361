//! Invalidation: `#[invalidates]` deletes the listed keys after `Ok` (or always, for a non-Result
//! function) before returning, never after `Err`; the next read reloads. And the stale-set race:
//! a load that started before an invalidation never writes its older result after it.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use cache_runtime::{Cache, cached, invalidates};
use cache_tests::{TestEnv, backend_tests, guard};
use tokio::sync::Notify;

/// A stand-in for the database.
#[derive(Debug)]
struct Store {
    value: Mutex<String>,
    list: Mutex<Vec<u64>>,
}

impl Store {
    fn new(value: &str) -> Arc<Store> {
        Arc::new(Store {
            value: Mutex::new(value.to_owned()),
            list: Mutex::new(vec![1]),
        })
    }
    fn get(&self) -> String {
        self.value.lock().unwrap().clone()
    }
    fn set(&self, v: &str) {
        *self.value.lock().unwrap() = v.to_owned();
    }
}

#[cached(key = "item:{id}", ttl = 300, cache = cache)]
async fn read_item(cache: &Cache, id: u64, store: &Store, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("{}#{id}", store.get())
}

#[cached(key = "items:list", ttl = 300, cache = cache)]
async fn list_items(cache: &Cache, store: &Store, loads: &AtomicUsize) -> Vec<u64> {
    loads.fetch_add(1, SeqCst);
    store.list.lock().unwrap().clone()
}

/// Writes `value` to the store, then fails when `fail` is set (after the write, like a partial
/// failure): the cache must not be invalidated for an `Err`.
#[invalidates("item:{id}", cache = cache)]
async fn write_item(
    cache: &Cache,
    id: u64,
    store: &Store,
    value: &str,
    fail: bool,
) -> Result<(), String> {
    store.set(value);
    if fail {
        Err(format!("rejected write of {id}"))
    } else {
        Ok(())
    }
}

#[invalidates("item:{id}", "items:list", cache = cache)]
async fn create_item(cache: &Cache, id: u64, store: &Store) -> Result<u64, String> {
    store.list.lock().unwrap().push(id);
    store.set("created");
    Ok(id)
}

#[invalidates("item:{id}", cache = cache)]
async fn touch_item(cache: &Cache, id: u64, store: &Store, value: &str) {
    store.set(value);
}

async fn assert_absent(env: &TestEnv, rendered: &str, why: &str) {
    if let Some(raw) = env.raw().await {
        let value = raw.get(&env.cache.full_key(rendered)).await;
        assert!(
            value.is_none(),
            "{why}: key {rendered} still holds {value:?}"
        );
    }
}

async fn invalidates_after_ok_and_next_read_reloads(env: TestEnv) {
    let store = Store::new("v1");
    let loads = AtomicUsize::new(0);
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v1#1");
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v1#1");
    assert_eq!(read_item(&env.cache, 2, &store, &loads).await, "v1#2");
    assert_eq!(loads.load(SeqCst), 2);

    assert_eq!(write_item(&env.cache, 1, &store, "v2", false).await, Ok(()));
    assert_absent(&env, "item:1", "deleted before #[invalidates] returned").await;
    assert_eq!(
        read_item(&env.cache, 1, &store, &loads).await,
        "v2#1",
        "the next read reloads"
    );
    assert_eq!(loads.load(SeqCst), 3);
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v2#1");
    assert_eq!(loads.load(SeqCst), 3, "and caches again");
    // Other keys are untouched.
    assert_eq!(read_item(&env.cache, 2, &store, &loads).await, "v1#2");
    assert_eq!(loads.load(SeqCst), 3);
}

async fn no_invalidation_after_err(env: TestEnv) {
    let store = Store::new("v1");
    let loads = AtomicUsize::new(0);
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v1#1");
    assert_eq!(
        write_item(&env.cache, 1, &store, "v2", true).await,
        Err("rejected write of 1".to_owned()),
        "the Err is returned unchanged"
    );
    assert_eq!(
        read_item(&env.cache, 1, &store, &loads).await,
        "v1#1",
        "Err: the entry was not invalidated"
    );
    assert_eq!(loads.load(SeqCst), 1);
    if let Some(raw) = env.raw().await {
        assert!(raw.exists(&env.cache.full_key("item:1")).await);
    }
}

async fn invalidates_every_listed_key(env: TestEnv) {
    let store = Store::new("v1");
    let (item_loads, list_loads) = (AtomicUsize::new(0), AtomicUsize::new(0));
    assert_eq!(read_item(&env.cache, 7, &store, &item_loads).await, "v1#7");
    assert_eq!(list_items(&env.cache, &store, &list_loads).await, vec![1]);
    assert_eq!(list_items(&env.cache, &store, &list_loads).await, vec![1]);

    assert_eq!(create_item(&env.cache, 7, &store).await, Ok(7));
    assert_absent(&env, "item:7", "first listed key deleted").await;
    assert_absent(&env, "items:list", "second listed key deleted").await;
    assert_eq!(
        read_item(&env.cache, 7, &store, &item_loads).await,
        "created#7"
    );
    assert_eq!(
        list_items(&env.cache, &store, &list_loads).await,
        vec![1, 7]
    );
    assert_eq!((item_loads.load(SeqCst), list_loads.load(SeqCst)), (2, 2));
}

async fn non_result_fn_always_invalidates(env: TestEnv) {
    let store = Store::new("v1");
    let loads = AtomicUsize::new(0);
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v1#1");
    touch_item(&env.cache, 1, &store, "v2").await;
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v2#1");
    assert_eq!(loads.load(SeqCst), 2);
}

async fn manual_invalidate_reloads(env: TestEnv) {
    let store = Store::new("v1");
    let loads = AtomicUsize::new(0);
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v1#1");
    store.set("v2");
    assert_eq!(
        read_item(&env.cache, 1, &store, &loads).await,
        "v1#1",
        "still cached"
    );
    env.cache.invalidate("item:1").await.expect("invalidate");
    assert_absent(&env, "item:1", "Cache::invalidate deletes namespace:key").await;
    assert_eq!(read_item(&env.cache, 1, &store, &loads).await, "v2#1");
    assert_eq!(loads.load(SeqCst), 2);
    // Invalidating an absent key is fine.
    env.cache
        .invalidate("item:404")
        .await
        .expect("invalidate of an absent key");
}

// ---- the stale-set race ----

/// Lets a test hold a loader between reading the store and returning.
#[derive(Debug, Default)]
struct Gate {
    started: Notify,
    release: Notify,
}

#[cached(key = "race:{id}", ttl = 300, cache = cache)]
async fn read_gated(
    cache: &Cache,
    id: u64,
    store: &Store,
    gate: Option<&Gate>,
    loads: &AtomicUsize,
) -> String {
    loads.fetch_add(1, SeqCst);
    // Read the "database" first, then stall: the classic stale-set window.
    let value = store.get();
    if let Some(gate) = gate {
        gate.started.notify_one();
        gate.release.notified().await;
    }
    value
}

#[invalidates("race:{id}", cache = cache)]
async fn write_race(cache: &Cache, id: u64, store: &Store, value: &str) -> Result<(), String> {
    store.set(value);
    Ok(())
}

async fn stale_set_race_load_before_invalidation_is_not_stored(env: TestEnv) {
    let store = Store::new("old");
    let gate = Arc::new(Gate::default());
    let loads = Arc::new(AtomicUsize::new(0));

    // 1. A read misses and its loader reads "old", then stalls.
    let slow_read = tokio::spawn({
        let (cache, store, gate, loads) = (
            env.cache.clone(),
            store.clone(),
            gate.clone(),
            loads.clone(),
        );
        async move { read_gated(&cache, 1, &store, Some(&gate), &loads).await }
    });
    guard("the loader to start", gate.started.notified()).await;

    // 2. While it stalls, a write lands and invalidates the key.
    assert_eq!(
        guard(
            "the invalidating write",
            write_race(&env.cache, 1, &store, "new")
        )
        .await,
        Ok(())
    );

    // 3. The stalled load finishes with its (now stale) value.
    gate.release.notify_one();
    let old = guard("the stalled read", slow_read)
        .await
        .expect("stalled read panicked");
    assert_eq!(old, "old", "the stalled caller gets what its loader read");

    // 4. The stale value must not have been stored after the invalidation.
    assert_absent(
        &env,
        "race:1",
        "a load that started before the invalidation wrote its result after it",
    )
    .await;
    let next = read_gated(&env.cache, 1, &store, None, &loads).await;
    assert_eq!(
        next, "new",
        "the next read must load again and see the write, not the stale value"
    );
    assert_eq!(loads.load(SeqCst), 2);
    assert_eq!(read_gated(&env.cache, 1, &store, None, &loads).await, "new");
    assert_eq!(loads.load(SeqCst), 2, "the fresh value is cached");
}

backend_tests!(
    invalidates_after_ok_and_next_read_reloads,
    no_invalidation_after_err,
    invalidates_every_listed_key,
    non_result_fn_always_invalidates,
    manual_invalidate_reloads,
    stale_set_race_load_before_invalidation_is_not_stored,
);

/// `#[invalidates]` on a `Result` behind an alias whose name does not say so: the keys are
/// deleted only on `Ok` (the README's rule), not after an `Err`.
mod invalidates_result_alias {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use cache_runtime::{Cache, cached, invalidates};

    type Outcome = Result<(), String>;

    #[cached(key = "alias:{id}", ttl = 300, cache = cache)]
    async fn read(cache: &Cache, id: u64, loads: &AtomicUsize) -> u64 {
        loads.fetch_add(1, SeqCst) as u64 + id
    }

    #[invalidates("alias:{id}", cache = cache)]
    async fn write(cache: &Cache, id: u64, fail: bool) -> Outcome {
        let _ = id;
        if fail { Err("refused".into()) } else { Ok(()) }
    }

    #[tokio::test]
    async fn err_behind_an_alias_does_not_invalidate() {
        let cache = Cache::builder().memory().build().await.unwrap();
        let loads = AtomicUsize::new(0);
        assert_eq!(read(&cache, 10, &loads).await, 10);
        assert!(write(&cache, 10, true).await.is_err());
        assert_eq!(read(&cache, 10, &loads).await, 10, "an Err deleted the key");
        assert!(write(&cache, 10, false).await.is_ok());
        assert_eq!(read(&cache, 10, &loads).await, 11, "an Ok deletes the key");
    }
}
