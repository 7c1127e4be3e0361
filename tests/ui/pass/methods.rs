#![deny(warnings)]

use std::sync::Arc;

use cache_runtime::{Cache, cached, invalidates};

pub struct Repo {
    pub cache: Cache,
    pub tenant: String,
}

impl Repo {
    #[cached(key = "user:{self.tenant}:{id}", ttl = 60, cache = self.cache)]
    pub async fn get_user(&self, id: u64) -> Option<String> {
        Some(format!("{}/{id}", self.tenant))
    }

    #[cached(key = "count:{self.tenant}", ttl = 60, cache = &self.cache)]
    pub async fn count(&self) -> Result<u64, String> {
        Ok(self.tenant.len() as u64)
    }

    #[invalidates("user:{self.tenant}:{id}", cache = self.cache)]
    pub async fn rename_user(&self, id: u64, name: &str) -> Result<(), String> {
        let _ = (id, name);
        Ok(())
    }

    #[cached(key = "mut:{id}", ttl = 60, cache = self.cache)]
    pub async fn with_mut(&mut self, id: u64) -> u64 {
        self.tenant.push('x');
        id
    }

    #[cached(key = "arc:{id}", ttl = 60, cache = self.cache)]
    pub async fn by_arc(self: Arc<Self>, id: u64) -> u64 {
        id + self.tenant.len() as u64
    }
}

pub trait UserStore {
    fn get(&self, id: u64) -> impl std::future::Future<Output = Option<String>> + Send;
    fn name(&self, id: u64) -> impl std::future::Future<Output = String> + Send;
}

pub struct Store {
    pub cache: Arc<Cache>,
}

impl UserStore for Store {
    #[cached(key = "store:{id}", ttl = 60, cache = self.cache)]
    async fn get(&self, id: u64) -> Option<String> {
        Some(id.to_string())
    }

    #[cached(key = "store_name:{id}", ttl = 60)]
    async fn name(&self, id: u64) -> String {
        id.to_string()
    }
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    if false {
        let repo: Repo = todo!();
        let _ = assert_send(repo.get_user(1));
        let _ = assert_send(repo.count());
        let _ = assert_send(repo.rename_user(1, "a"));
        let store: Store = todo!();
        let _ = assert_send(store.get(1));
    }
}
