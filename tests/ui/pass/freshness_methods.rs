//! Freshness arguments on methods: the receiver is cloned (only when the body uses it) and
//! every `self` of the body, also inside macros, reads the clone.
#![deny(warnings)]

use std::sync::Arc;

use cache_runtime::{Cache, cached};

pub fn helper(n: u64) -> u64 {
    n + 1
}

#[derive(Clone)]
pub struct Repo {
    pub cache: Cache,
    pub tenant: String,
}

impl Repo {
    const BASE: u64 = 10;

    fn double(&self, x: u64) -> u64 {
        x * 2
    }

    #[cached(
        key = "user:{self.tenant}:{id}",
        ttl = 60,
        stale = 30,
        tags = ["tenant:{self.tenant}"],
        cache = self.cache
    )]
    pub async fn get(&self, id: u64) -> Option<String> {
        let n = self.tenant.len() as u64 + id;
        let tenant = &self.tenant;
        Some(format!("{}/{n}/{}/{tenant}", self.tenant, self.double(id)))
    }

    /// `self::` paths and `Self` are left alone.
    #[cached(key = "paths:{id}", ttl = 60, early_refresh = 1.0, cache = self.cache)]
    pub async fn paths(&self, id: u64) -> u64 {
        self::helper(id) + Self::BASE + self.double(id)
    }

    /// The body does not use `self`: no clone (and no `Self: Clone` needed).
    #[cached(key = "plain:{self.tenant}:{id}", ttl = 60, stale = 5, cache = self.cache)]
    pub async fn no_self(&self, id: u64) -> u64 {
        id
    }

    #[cached(key = "soft:{id}", ttl = 60, stale = 60, timeout_ms = 200)]
    pub async fn soft(self: Arc<Self>, id: u64) -> Result<u64, String> {
        let this = Arc::clone(&self);
        Ok(id + this.tenant.len() as u64)
    }

    #[cached(key = "by_value:{id}", ttl = 5, stale = 5)]
    pub async fn by_value(mut self, id: u64) -> String {
        self.tenant.push_str(&id.to_string());
        self.tenant
    }

    /// A closure and a nested fn in the body.
    #[cached(key = "closure:{id}", ttl = 5, stale = 5)]
    pub async fn closure(&self, id: u64) -> u64 {
        fn inner(x: u64) -> u64 {
            x
        }
        let f = |x: u64| self.double(x);
        inner(f(id))
    }
}

/// A native `async fn` in a trait impl (the trait's future must be `Send`).
pub trait Store {
    fn get(&self, id: u64) -> impl std::future::Future<Output = Option<String>> + Send;
}

impl Store for Repo {
    #[cached(key = "store:{id}", ttl = 60, stale = 60, cache = self.cache)]
    async fn get(&self, id: u64) -> Option<String> {
        Some(format!("{}:{id}", self.tenant))
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
        let _ = assert_send(repo.paths(1));
        let _ = assert_send(repo.no_self(1));
        let _ = assert_send(Store::get(&repo, 1));
        let _ = assert_send(repo.closure(1));
        let _ = assert_send(Arc::new(repo.clone()).soft(1));
        let _ = assert_send(repo.by_value(1));
    }
}
