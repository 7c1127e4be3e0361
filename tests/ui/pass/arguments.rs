#![deny(warnings)]

use cache_runtime::{Cache, cached, invalidates};

static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();

fn cache() -> &'static Cache {
    CACHE.get().expect("set")
}

mod rt {
    pub use cache_runtime::*;
}

#[cached(
    key = "all:{id}",
    ttl = 300,
    jitter = 300,
    negative_ttl = 30,
    lock_ms = 2500,
    cache = cache(),
    name = "users.get",
    returns = "result_option",
    crate = ::cache_runtime,
)]
async fn all_arguments(id: u64) -> Result<Option<u64>, String> {
    Ok(Some(id))
}

#[cached(key = "via_reexport:{id}", ttl = 5, crate = crate::rt)]
async fn via_reexport(id: u64) -> u64 {
    id
}

#[invalidates("all:{id}", "users:list", cache = cache(), name = "users.rename", crate = ::cache_runtime)]
async fn invalidate_result(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

#[invalidates("all:{id}")]
async fn invalidate_plain(id: u64) -> u64 {
    id
}

#[invalidates("users:list", returns = "plain")]
async fn invalidate_forced_plain() -> Result<(), String> {
    Err("always invalidates".into())
}

fn main() {
    let _ = all_arguments(1);
    let _ = via_reexport(1);
    let _ = invalidate_result(1);
    let _ = invalidate_plain(1);
    let _ = invalidate_forced_plain();
}
