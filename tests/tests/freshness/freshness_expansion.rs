//! What the `#[cached]` expansion does with the freshness arguments, on the in-process backend:
//! with `stale` / `early_refresh` / `timeout_ms` the body runs on owned copies of the arguments
//! (`self` included) and sees the same values; tags are rendered only on a miss (the load
//! closure), never on a hit. The freshness semantics themselves are the runtime's (see its
//! tests).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cache_runtime::{Cache, KeyPart, cached, invalidates};

async fn memory() -> Cache {
    Cache::builder()
        .memory()
        .namespace("fresh")
        .build()
        .await
        .expect("memory cache")
}

/// A tag part that counts how often it is rendered.
#[derive(Clone)]
struct Org {
    id: u64,
    renders: Arc<AtomicUsize>,
}

impl KeyPart for Org {
    fn write_key_part(&self, out: &mut String) {
        self.renders.fetch_add(1, SeqCst);
        self.id.write_key_part(out);
    }
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    tenant: String,
    loads: Arc<AtomicUsize>,
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repo[{}]", self.tenant)
    }
}

impl Repo {
    fn suffix(&self) -> &'static str {
        "!"
    }

    #[cached(
        key = "user:{self.tenant}:{id}",
        ttl = 60,
        stale = 30,
        tags = ["tenant:{self.tenant}", "org:{org}"],
        cache = self.cache
    )]
    async fn user(&self, id: u64, org: Org, name: &str) -> String {
        self.loads.fetch_add(1, SeqCst);
        format!("{self}/{}/{name}/{id}{}", self.tenant, self.suffix())
    }

    #[cached(key = "arc:{id}", ttl = 60, early_refresh = 1.0, cache = self.cache)]
    async fn by_arc(self: Arc<Self>, id: u64) -> u64 {
        self.loads.fetch_add(1, SeqCst);
        id + self.tenant.len() as u64
    }

    #[invalidates("user:{self.tenant}:{id}", tags = ["org:{org}"], cache = self.cache)]
    async fn forget(&self, id: u64, org: Org) {}
}

static PLAIN_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "sum:{id}", ttl = 60, stale = 10, timeout_ms = 500, cache = cache)]
async fn sum(
    cache: &Cache,
    id: u64,
    mut extra: u64,
    bytes: &[u8],
    loads: &'static AtomicUsize,
) -> u64 {
    loads.fetch_add(1, SeqCst);
    extra += bytes.iter().map(|b| u64::from(*b)).sum::<u64>();
    id + extra
}

#[tokio::test]
async fn refreshing_method_sees_its_arguments_and_renders_tags_only_on_a_miss() {
    let repo = Repo {
        cache: memory().await,
        tenant: "t1".into(),
        loads: Arc::new(AtomicUsize::new(0)),
    };
    let renders = Arc::new(AtomicUsize::new(0));
    let org = Org {
        id: 7,
        renders: Arc::clone(&renders),
    };
    let name = String::from("ann");
    assert_eq!(repo.user(1, org.clone(), &name).await, "repo[t1]/t1/ann/1!");
    assert_eq!(repo.loads.load(SeqCst), 1);
    assert_eq!(
        renders.load(SeqCst),
        1,
        "the tag is rendered once, on the miss"
    );
    // A hit: the body does not run and the tags are not rendered.
    assert_eq!(
        repo.user(1, org.clone(), "other").await,
        "repo[t1]/t1/ann/1!"
    );
    assert_eq!(repo.loads.load(SeqCst), 1);
    assert_eq!(renders.load(SeqCst), 1, "no tag rendering on a hit");

    repo.forget(1, org.clone()).await;
    assert_eq!(renders.load(SeqCst), 2, "#[invalidates] renders its tag");
    assert_eq!(repo.user(1, org, "bob").await, "repo[t1]/t1/bob/1!");
    assert_eq!(repo.loads.load(SeqCst), 2);

    let repo = Arc::new(repo);
    assert_eq!(Arc::clone(&repo).by_arc(5).await, 7);
    assert_eq!(Arc::clone(&repo).by_arc(5).await, 7);
    assert_eq!(repo.loads.load(SeqCst), 3);
}

#[tokio::test]
async fn refreshing_free_fn_with_borrowed_and_mut_parameters() {
    let cache = memory().await;
    assert_eq!(sum(&cache, 1, 10, &[1, 2], &PLAIN_LOADS).await, 14);
    assert_eq!(sum(&cache, 1, 0, &[], &PLAIN_LOADS).await, 14);
    assert_eq!(PLAIN_LOADS.load(SeqCst), 1);
}

#[async_trait::async_trait]
trait Users {
    async fn name(&self, id: u64, suffix: &str) -> String;
}

#[derive(Clone)]
struct TraitRepo {
    cache: Cache,
    loads: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Users for TraitRepo {
    #[cached(key = "tu:{id}", ttl = 1, stale = 30, cache = self.cache, name = "fresh.trait_name")]
    async fn name(&self, id: u64, suffix: &str) -> String {
        let n = self.loads.fetch_add(1, SeqCst) + 1;
        format!("{id}{suffix}#{n}")
    }
}

/// An `#[async_trait]` method with `stale`: past the TTL the stale value is served at once
/// and one background refresh, running on owned copies of `self` and the arguments after the
/// call returned, replaces it.
#[tokio::test]
async fn async_trait_method_with_stale_serves_stale_and_refreshes_in_the_background() {
    let repo = TraitRepo {
        cache: memory().await,
        loads: Arc::default(),
    };
    assert_eq!(repo.name(7, "!").await, "7!#1");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(repo.name(7, "!").await, "7!#1", "the stale value, at once");
    let mut refreshed = String::new();
    for _ in 0..200 {
        refreshed = repo.name(7, "!").await;
        if refreshed != "7!#1" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(refreshed, "7!#2", "refreshed by the background load");
    let s = repo.cache.stats().function("fresh.trait_name");
    assert_eq!((s.loads, s.refreshes), (2, 1), "{s:?}");
    assert!(s.stale_served >= 1, "{s:?}");
}
