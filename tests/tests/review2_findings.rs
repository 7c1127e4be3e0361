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
