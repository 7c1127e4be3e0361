//! Findings of the second review, each pinned by a test that failed before its fix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use async_trait::async_trait;
use cache_runtime::{Cache, cached, invalidates};

/// Finding 1: under `#[async_trait]`, a parameter written as a pattern (`(a, b): (u32, u32)`)
/// is renamed `__arg1` in the signature and destructured inside the block. A key template
/// naming `{a}` was rejected ("unknown parameter `a` ... its parameters are `__arg1`"), although
/// the same method compiles as a plain `async fn`.
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
async fn async_trait_destructured_params_in_key() {
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
