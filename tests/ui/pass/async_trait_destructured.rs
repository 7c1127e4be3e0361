//! `#[async_trait]` renames a parameter written as a pattern to `__argN` and destructures it in
//! its block; key templates name the pattern's bindings, as in a plain `async fn`, with no
//! unused-variable warning when only the key uses them.
#![deny(warnings)]

use async_trait::async_trait;
use cache_runtime::{cached, invalidates};

#[async_trait]
pub trait Pairs {
    async fn sum(&self, pair: (u32, u32)) -> u64;
    async fn forget(&self, pair: (u32, u32), tag: &(String, u8));
}

pub struct Repo;

#[async_trait]
impl Pairs for Repo {
    #[cached(key = "sum:{a}:{b}", ttl = 60)]
    async fn sum(&self, (mut a, b): (u32, u32)) -> u64 {
        a += 1;
        u64::from(a + b)
    }

    #[invalidates("sum:{a}:{b}", "tag:{s}:{n}")]
    async fn forget(&self, (a, b): (u32, u32), &(ref s, n): &(String, u8)) {}
}

fn main() {
    let _ = Repo.sum((1, 2));
    let _ = Repo.forget((1, 2), &(String::new(), 1));
}
