use async_trait::async_trait;
use cache_runtime::cached;

#[async_trait]
pub trait Repo {
    async fn get(&self, id: u64) -> Option<String>;
}

#[derive(Clone)]
pub struct Db;

#[async_trait]
impl Repo for Db {
    #[cached(key = "user:{id}", ttl = 60, stale = 30)]
    async fn get(&self, id: u64) -> Option<String> {
        Some(id.to_string())
    }
}

fn main() {}
