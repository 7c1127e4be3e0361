//! `local_ttl` combines with every freshness argument and with tags and `cache_if`.
use cache_runtime::cached;

fn keep(v: &u64) -> bool {
    *v > 0
}

#[cached(key = "a:{id}", ttl = 60, local_ttl = 5, stale = 30)]
async fn with_stale(id: u64) -> u64 {
    id
}

#[cached(key = "b:{id}", ttl = 60, local_ttl = 5, stale = 30, timeout_ms = 50, early_refresh = 1.0)]
async fn with_all(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(key = "c:{id}", ttl = 60, local_ttl = 5, tags = ["org:{org}"], cache_if = keep)]
async fn with_tags(id: u64, org: u64) -> u64 {
    id + org
}

#[derive(Clone)]
struct Repo;

impl Repo {
    #[cached(key = "d:{id}", ttl = 60, local_ttl = 5, stale = 30)]
    async fn method(&self, id: u64) -> Result<String, std::io::Error> {
        Ok(id.to_string())
    }
}

fn main() {
    let _ = (with_stale(1), with_all(1), with_tags(1, 2), Repo.method(1));
}
