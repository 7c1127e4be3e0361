//! `stale`, `early_refresh`, `timeout_ms` and `local_ttl` on `#[async_trait]` methods: the
//! refresh gets owned copies of the receiver (`Self: Clone`) and of the parameters the body
//! uses, taken out of the block `#[async_trait]` generates.
#![deny(warnings)]

use async_trait::async_trait;
use cache_runtime::{Cache, cached};

#[async_trait]
pub trait Repo {
    async fn get(&self, id: u64) -> Option<String>;
    async fn by_name(&self, name: &str, org: u64) -> Result<String, std::io::Error>;
    async fn near(&self, id: u64) -> u64;
}

#[derive(Clone)]
pub struct Db {
    pub cache: Cache,
    pub tenant: String,
}

#[async_trait]
impl Repo for Db {
    #[cached(key = "user:{id}", ttl = 60, stale = 30, cache = self.cache)]
    async fn get(&self, id: u64) -> Option<String> {
        Some(format!("{}/{id}", self.tenant))
    }

    /// `org` is only used by the key and the tag.
    #[cached(key = "name:{name}:{org}", ttl = 60, stale = 30, timeout_ms = 20, early_refresh = 1.0, tags = ["org:{org}"])]
    async fn by_name(&self, name: &str, org: u64) -> Result<String, std::io::Error> {
        Ok(name.to_uppercase())
    }

    #[cached(key = "near:{id}", ttl = 60, stale = 30, local_ttl = 5)]
    async fn near(&self, id: u64) -> u64 {
        id + self.tenant.len() as u64
    }
}

fn main() {}
