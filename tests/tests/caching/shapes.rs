//! Where `#[cached]` goes: inherent, trait-impl and `#[async_trait]` methods with
//! `cache = self.cache`, generic functions, field-path placeholders, parameters named like the
//! macro's own locals, and the return shapes (`io::Result`, `ApiResult<T>`, aliases with
//! `returns = ..`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cache_runtime::{Cache, KeyPart, cached, invalidates};
use cache_tests::{TestEnv, backend_tests};
use serde::Serialize;
use serde::de::DeserializeOwned;

// ---- methods ----

struct Repo {
    cache: Cache,
    prefix: String,
    loads: AtomicUsize,
}

impl Repo {
    #[cached(key = "repo:{self.prefix}:{id}", ttl = 60, cache = self.cache)]
    async fn name_of(&self, id: u64) -> String {
        self.loads.fetch_add(1, SeqCst);
        format!("{}-{id}", self.prefix)
    }

    #[invalidates("repo:{self.prefix}:{id}", cache = self.cache)]
    async fn rename(&self, id: u64) -> Result<(), String> {
        Ok(())
    }
}

trait Lookup {
    async fn lookup(&self, id: u64) -> Option<String>;
}

impl Lookup for Repo {
    #[cached(key = "lookup:{id}", ttl = 60, cache = self.cache)]
    async fn lookup(&self, id: u64) -> Option<String> {
        self.loads.fetch_add(1, SeqCst);
        if id.is_multiple_of(2) {
            Some(format!("even-{id}"))
        } else {
            None
        }
    }
}

/// A service holding its cache behind an `Arc`.
struct SharedRepo {
    cache: Arc<Cache>,
    loads: AtomicUsize,
}

impl SharedRepo {
    #[cached(key = "shared:{id}", ttl = 60, cache = self.cache)]
    async fn get(&self, id: u64) -> u64 {
        self.loads.fetch_add(1, SeqCst);
        id * 2
    }
}

async fn inherent_method_with_self_cache(env: TestEnv) {
    let repo = Repo {
        cache: env.cache.clone(),
        prefix: "p:x".into(),
        loads: AtomicUsize::new(0),
    };
    assert_eq!(repo.name_of(1).await, "p:x-1");
    assert_eq!(repo.name_of(1).await, "p:x-1");
    assert_eq!(repo.name_of(2).await, "p:x-2");
    assert_eq!(repo.loads.load(SeqCst), 2);
    // `{self.prefix}` is encoded like any part.
    if let Some(raw) = env.raw().await {
        assert!(
            raw.exists("itest:repo:p%3Ax:1").await,
            "key rendered from self.prefix and id"
        );
    }
    repo.rename(1).await.unwrap();
    assert_eq!(repo.name_of(1).await, "p:x-1");
    assert_eq!(
        repo.loads.load(SeqCst),
        3,
        "#[invalidates] on a method with self.cache"
    );
}

async fn trait_impl_method_with_self_cache(env: TestEnv) {
    let repo = Repo {
        cache: env.cache.clone(),
        prefix: String::new(),
        loads: AtomicUsize::new(0),
    };
    assert_eq!(repo.lookup(2).await.as_deref(), Some("even-2"));
    assert_eq!(repo.lookup(2).await.as_deref(), Some("even-2"));
    assert_eq!(repo.lookup(3).await, None);
    assert_eq!(repo.lookup(3).await, None);
    assert_eq!(repo.loads.load(SeqCst), 2);
}

async fn method_with_arc_cache(env: TestEnv) {
    let repo = SharedRepo {
        cache: Arc::new(env.cache.clone()),
        loads: AtomicUsize::new(0),
    };
    assert_eq!(repo.get(21).await, 42);
    assert_eq!(repo.get(21).await, 42);
    assert_eq!(repo.loads.load(SeqCst), 1);
}

// ---- generic functions ----

#[cached(key = "gen:{k}", ttl = 60, cache = cache)]
async fn generic_key<K: KeyPart + std::fmt::Display + Sync>(
    cache: &Cache,
    k: K,
    loads: &AtomicUsize,
) -> String {
    loads.fetch_add(1, SeqCst);
    format!("gen-{k}")
}

#[cached(key = "genval:{id}", ttl = 60, cache = cache)]
async fn generic_value<T>(cache: &Cache, id: u64, make: fn(u64) -> T, loads: &AtomicUsize) -> T
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    loads.fetch_add(1, SeqCst);
    make(id)
}

async fn generic_fn(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(generic_key(&env.cache, 5u64, &loads).await, "gen-5");
    assert_eq!(generic_key(&env.cache, 5u64, &loads).await, "gen-5");
    assert_eq!(generic_key(&env.cache, "five", &loads).await, "gen-five");
    assert_eq!(
        generic_key(&env.cache, String::from("five"), &loads).await,
        "gen-five"
    );
    assert_eq!(
        loads.load(SeqCst),
        2,
        "u64 5 and \"five\" are two keys; &str and String render alike"
    );

    let loads = AtomicUsize::new(0);
    let v: Vec<String> = generic_value(&env.cache, 1, |id| vec![id.to_string()], &loads).await;
    assert_eq!(v, vec!["1".to_owned()]);
    let v: Vec<String> = generic_value(&env.cache, 1, |_| unreachable!("cached"), &loads).await;
    assert_eq!(v, vec!["1".to_owned()]);
    let n: Option<u32> = generic_value(&env.cache, 2, |_| None, &loads).await;
    assert_eq!(n, None);
    assert_eq!(loads.load(SeqCst), 2);
}

// ---- field paths ----

#[derive(Debug)]
struct Page {
    number: u32,
}

#[derive(Debug)]
struct Query {
    id: u64,
    region: String,
    page: Page,
}

#[cached(key = "q:{q.id}:{q.region}:{q.page.number}", ttl = 60, cache = cache)]
async fn search(cache: &Cache, q: &Query, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("{}/{}/{}", q.id, q.region, q.page.number)
}

async fn field_path_placeholders(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    let q = Query {
        id: 9,
        region: "eu west".into(),
        page: Page { number: 2 },
    };
    assert_eq!(search(&env.cache, &q, &loads).await, "9/eu west/2");
    assert_eq!(search(&env.cache, &q, &loads).await, "9/eu west/2");
    let q2 = Query {
        page: Page { number: 3 },
        ..q
    };
    assert_eq!(search(&env.cache, &q2, &loads).await, "9/eu west/3");
    assert_eq!(loads.load(SeqCst), 2);
    if let Some(raw) = env.raw().await {
        assert!(
            raw.exists("itest:q:9:eu%20west:2").await,
            "key rendered from {{q.id}}:{{q.region}}:{{q.page.number}}"
        );
    }
}

// ---- parameters named like the macro's locals ----

#[cached(key = "names:{key}:{ttl}:{value}", ttl = 60, cache = cache)]
async fn odd_names(cache: &Cache, key: u64, ttl: u32, value: &str, loads: &AtomicUsize) -> String {
    loads.fetch_add(1, SeqCst);
    format!("{key}/{ttl}/{value}")
}

async fn params_named_key_ttl_value_cache(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(odd_names(&env.cache, 1, 2, "v", &loads).await, "1/2/v");
    assert_eq!(odd_names(&env.cache, 1, 2, "v", &loads).await, "1/2/v");
    assert_eq!(odd_names(&env.cache, 1, 2, "w", &loads).await, "1/2/w");
    assert_eq!(loads.load(SeqCst), 2);
}

// ---- return shapes ----

#[cached(key = "io:{id}", ttl = 60, cache = cache)]
async fn io_result(cache: &Cache, id: u64, loads: &AtomicUsize) -> std::io::Result<Option<String>> {
    loads.fetch_add(1, SeqCst);
    match id {
        0 => Err(std::io::Error::other("io failure")),
        1 => Ok(None),
        _ => Ok(Some(format!("io-{id}"))),
    }
}

type DbResult<T> = Result<T, String>;

#[cached(key = "alias:{id}", ttl = 60, returns = "result_option", cache = cache)]
async fn alias_result(cache: &Cache, id: u64, loads: &AtomicUsize) -> DbResult<Option<u64>> {
    loads.fetch_add(1, SeqCst);
    match id {
        0 => Err("db".into()),
        1 => Ok(None),
        _ => Ok(Some(id)),
    }
}

async fn io_result_and_alias_shapes(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert!(io_result(&env.cache, 0, &loads).await.is_err());
    assert!(io_result(&env.cache, 0, &loads).await.is_err());
    assert_eq!(loads.load(SeqCst), 2, "io::Result Err is not cached");
    assert_eq!(io_result(&env.cache, 1, &loads).await.unwrap(), None);
    assert_eq!(io_result(&env.cache, 1, &loads).await.unwrap(), None);
    assert_eq!(
        io_result(&env.cache, 2, &loads).await.unwrap().as_deref(),
        Some("io-2")
    );
    assert_eq!(
        io_result(&env.cache, 2, &loads).await.unwrap().as_deref(),
        Some("io-2")
    );
    assert_eq!(
        loads.load(SeqCst),
        4,
        "io::Result Ok(None) and Ok(Some) are cached"
    );

    let loads = AtomicUsize::new(0);
    assert_eq!(
        alias_result(&env.cache, 0, &loads).await,
        Err("db".to_owned())
    );
    assert_eq!(
        alias_result(&env.cache, 0, &loads).await,
        Err("db".to_owned())
    );
    assert_eq!(alias_result(&env.cache, 1, &loads).await, Ok(None));
    assert_eq!(alias_result(&env.cache, 1, &loads).await, Ok(None));
    assert_eq!(alias_result(&env.cache, 5, &loads).await, Ok(Some(5)));
    assert_eq!(alias_result(&env.cache, 5, &loads).await, Ok(Some(5)));
    assert_eq!(
        loads.load(SeqCst),
        4,
        "returns = \"result_option\": Err not cached, Ok cached"
    );
}

/// A serde-able error: a `Result` cached with the plain shape would store `Err` as a value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ApiError {
    code: u16,
}

/// An alias whose last segment is not `Result` but ends with it.
type ApiResult<T> = Result<T, ApiError>;

#[cached(key = "api:{id}", ttl = 60, cache = cache)]
async fn api_result(cache: &Cache, id: u64, loads: &AtomicUsize) -> ApiResult<String> {
    let n = loads.fetch_add(1, SeqCst);
    match id {
        0 => Err(ApiError {
            code: 500 + n as u16,
        }),
        _ => Ok(format!("api-{id}")),
    }
}

#[cached(key = "api_opt:{id}", ttl = 60, cache = cache)]
async fn api_result_option(
    cache: &Cache,
    id: u64,
    loads: &AtomicUsize,
) -> ApiResult<Option<String>> {
    loads.fetch_add(1, SeqCst);
    match id {
        0 => Err(ApiError { code: 503 }),
        1 => Ok(None),
        _ => Ok(Some(format!("api-{id}"))),
    }
}

async fn result_alias_by_name_never_caches_err(env: TestEnv) {
    let loads = AtomicUsize::new(0);
    assert_eq!(
        api_result(&env.cache, 0, &loads).await,
        Err(ApiError { code: 500 })
    );
    assert_eq!(
        api_result(&env.cache, 0, &loads).await,
        Err(ApiError { code: 501 }),
        "the loader ran again: Err was not cached"
    );
    assert_eq!(loads.load(SeqCst), 2);
    if let Some(raw) = env.raw().await {
        assert!(!raw.exists("itest:api:0").await, "no entry for an Err");
    }
    assert_eq!(api_result(&env.cache, 7, &loads).await.unwrap(), "api-7");
    assert_eq!(api_result(&env.cache, 7, &loads).await.unwrap(), "api-7");
    assert_eq!(loads.load(SeqCst), 3, "Ok is cached");

    let loads = AtomicUsize::new(0);
    for _ in 0..2 {
        assert!(api_result_option(&env.cache, 0, &loads).await.is_err());
    }
    assert_eq!(
        loads.load(SeqCst),
        2,
        "ApiResult<Option<_>>: Err not cached"
    );
    for _ in 0..2 {
        assert_eq!(api_result_option(&env.cache, 1, &loads).await, Ok(None));
    }
    for _ in 0..2 {
        assert_eq!(
            api_result_option(&env.cache, 2, &loads)
                .await
                .unwrap()
                .as_deref(),
            Some("api-2")
        );
    }
    assert_eq!(
        loads.load(SeqCst),
        4,
        "ApiResult<Option<_>>: Ok(None) is a negative entry, Ok(Some) a value"
    );
}

// ---- #[async_trait] impls ----

#[derive(Debug, PartialEq)]
struct DbError;

#[async_trait::async_trait]
trait UserRepo {
    async fn get(&self, id: u64) -> Result<Option<String>, DbError>;
    async fn rename(&self, id: u64) -> Result<(), DbError>;
}

struct AsyncTraitRepo {
    cache: Cache,
    tenant: String,
    loads: AtomicUsize,
}

#[async_trait::async_trait]
impl UserRepo for AsyncTraitRepo {
    #[cached(key = "at:{self.tenant}:{id}", ttl = 60, cache = self.cache)]
    async fn get(&self, id: u64) -> Result<Option<String>, DbError> {
        self.loads.fetch_add(1, SeqCst);
        match id {
            0 => Err(DbError),
            1 => Ok(None),
            _ => Ok(Some(format!("{}-{id}", self.tenant))),
        }
    }

    #[invalidates("at:{self.tenant}:{id}", cache = self.cache)]
    async fn rename(&self, id: u64) -> Result<(), DbError> {
        Ok(())
    }
}

async fn async_trait_methods(env: TestEnv) {
    let repo = AsyncTraitRepo {
        cache: env.cache.clone(),
        tenant: "t:1".into(),
        loads: AtomicUsize::new(0),
    };
    let dyn_repo: &dyn UserRepo = &repo;
    assert_eq!(dyn_repo.get(2).await, Ok(Some("t:1-2".to_owned())));
    assert_eq!(dyn_repo.get(2).await, Ok(Some("t:1-2".to_owned())));
    assert_eq!(repo.loads.load(SeqCst), 1, "the second call is a hit");
    if let Some(raw) = env.raw().await {
        assert!(
            raw.exists("itest:at:t%3A1:2").await,
            "key rendered from self.tenant and id inside the async-trait future"
        );
    }
    assert_eq!(repo.get(1).await, Ok(None));
    assert_eq!(repo.get(1).await, Ok(None));
    assert_eq!(repo.loads.load(SeqCst), 2, "Ok(None) is cached");
    assert_eq!(repo.get(0).await, Err(DbError));
    assert_eq!(repo.get(0).await, Err(DbError));
    assert_eq!(repo.loads.load(SeqCst), 4, "Err is not cached");
    dyn_repo.rename(2).await.unwrap();
    assert_eq!(dyn_repo.get(2).await, Ok(Some("t:1-2".to_owned())));
    assert_eq!(
        repo.loads.load(SeqCst),
        5,
        "#[invalidates] on an async-trait method deleted the key"
    );
}

backend_tests!(
    async_trait_methods,
    result_alias_by_name_never_caches_err,
    inherent_method_with_self_cache,
    trait_impl_method_with_self_cache,
    method_with_arc_cache,
    generic_fn,
    field_path_placeholders,
    params_named_key_ttl_value_cache,
    io_result_and_alias_shapes,
);

// ---- the global cache (no `cache = ..`) ----

#[cached(key = "global:{id}", ttl = 60)]
async fn on_global(id: u64, loads: &AtomicUsize) -> u64 {
    loads.fetch_add(1, SeqCst);
    id + 100
}

#[tokio::test]
async fn default_cache_is_global_in_memory() {
    // This test binary never installs a cache: the lazily-built in-memory default is used.
    let loads = AtomicUsize::new(0);
    assert_eq!(on_global(1, &loads).await, 101);
    assert_eq!(on_global(1, &loads).await, 101);
    assert_eq!(loads.load(SeqCst), 1);
    assert_eq!(cache_runtime::global().namespace(), "cache");
}

// ---- #[async_trait] methods with destructured parameters ----

mod async_trait_patterns {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    use async_trait::async_trait;
    use cache_runtime::{Cache, cached, invalidates};

    /// Under `#[async_trait]`, a parameter written as a pattern (`(a, b): (u32, u32)`) is renamed
    /// `__arg1` in the signature and destructured inside the block: a key template may still name
    /// the pattern's bindings (`{a}`), as it may on a plain `async fn`.
    #[async_trait]
    trait Pairs {
        async fn sum(&self, pair: (u32, u32), tag: &(String, u8)) -> u64;
        async fn forget(&self, pair: (u32, u32), tag: &(String, u8));
    }

    struct PairRepo {
        cache: Cache,
        loads: Arc<AtomicU64>,
    }

    #[async_trait]
    impl Pairs for PairRepo {
        #[cached(key = "sum:{a}:{b}:{s}:{n}", ttl = 60, cache = self.cache)]
        async fn sum(&self, (mut a, b): (u32, u32), &(ref s, n): &(String, u8)) -> u64 {
            self.loads.fetch_add(1, SeqCst);
            a += 1;
            u64::from(a + b) + s.len() as u64 + u64::from(n)
        }

        #[invalidates("sum:{a}:{b}:{s}:{n}", cache = self.cache)]
        async fn forget(&self, (a, b): (u32, u32), &(ref s, n): &(String, u8)) {}
    }

    #[tokio::test]
    async fn async_trait_method_keys_by_its_destructured_parameters() {
        let cache = Cache::builder().memory().build().await.unwrap();
        let repo = PairRepo {
            cache: cache.clone(),
            loads: Arc::default(),
        };
        let tag = ("x".to_owned(), 4);
        assert_eq!(repo.sum((1, 2), &tag).await, 9);
        assert_eq!(repo.sum((1, 2), &tag).await, 9);
        assert_eq!(repo.loads.load(SeqCst), 1, "the second call is a hit");
        assert_eq!(repo.sum((2, 1), &tag).await, 9);
        assert_eq!(repo.loads.load(SeqCst), 2, "(2, 1) renders another key");
        assert!(
            cache.stats().iter().any(|(_, s)| s.hits == 1),
            "one hit counted"
        );
        repo.forget((1, 2), &tag).await;
        assert_eq!(repo.sum((1, 2), &tag).await, 9);
        assert_eq!(
            repo.loads.load(SeqCst),
            3,
            "the invalidation deleted sum:1:2:x:4"
        );
    }
}
