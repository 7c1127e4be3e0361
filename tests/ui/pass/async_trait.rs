//! `#[cached]` / `#[invalidates]` on methods of an `#[async_trait]` impl: `#[async_trait]`
//! expands first and turns each `async fn` into a `fn` returning
//! `Pin<Box<dyn Future<Output = T> + Send + '_>>` whose body is `Box::pin(async move { .. })`;
//! the macros cache / invalidate inside that block.
#![deny(warnings)]

use std::sync::Arc;

use async_trait::async_trait;
use cache_runtime::{Cache, cached, invalidates};

#[derive(Debug)]
pub struct DbError;

#[async_trait]
pub trait UserRepo {
    async fn get(&self, id: u64) -> Result<Option<String>, DbError>;
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError>;
    async fn count(&self) -> u64;
    async fn touch(&self, id: u64);
}

pub struct Repo {
    pub cache: Cache,
    pub tenant: String,
}

#[async_trait]
impl UserRepo for Repo {
    #[cached(key = "user:{self.tenant}:{id}", ttl = 60, cache = self.cache)]
    async fn get(&self, id: u64) -> Result<Option<String>, DbError> {
        Ok(Some(format!("{}/{id}", self.tenant)))
    }

    /// `id` is only used by the key: no unused-variable warning.
    #[invalidates("user:{self.tenant}:{id}", cache = self.cache)]
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        let _ = name;
        Ok(())
    }

    #[cached(key = "count:{self.tenant}", ttl = 60)]
    async fn count(&self) -> u64 {
        self.tenant.len() as u64
    }

    #[invalidates("count:{self.tenant}", "user:{self.tenant}:{id}")]
    async fn touch(&self, id: u64) {}
}

/// `?Send` traits, `Arc<Self>` receivers and destructuring-free generic methods.
#[async_trait(?Send)]
pub trait Local {
    async fn local(self: Arc<Self>, id: u64) -> Option<u64>;
}

#[async_trait(?Send)]
impl Local for Repo {
    #[cached(key = "local:{id}", ttl = 60, negative_ttl = 5, cache = self.cache)]
    async fn local(self: Arc<Self>, id: u64) -> Option<u64> {
        Some(id + self.tenant.len() as u64)
    }
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    if false {
        let repo: Repo = todo!();
        let _ = assert_send(repo.get(1));
        let _ = assert_send(repo.rename(1, "a"));
        let _ = assert_send(repo.count());
        let _ = assert_send(repo.touch(1));
        let dyn_repo: &dyn UserRepo = &repo;
        let _ = dyn_repo.get(1);
        let _ = Arc::new(repo).local(1);
    }
}
