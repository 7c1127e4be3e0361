use async_trait::async_trait;
use cache_runtime::cached;

#[cached(key = "a:{id}", ttl = 60, key_fn = "no")]
async fn a(id: u64) -> u64 {
    id
}

#[async_trait]
pub trait Users {
    async fn get(&self, id: u64) -> u64;
}

pub struct Repo;

#[async_trait]
impl Users for Repo {
    #[cached(key = "u:{id}", ttl = 60, key_fn = true)]
    async fn get(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
