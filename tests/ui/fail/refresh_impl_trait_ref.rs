use std::fmt::Display;

use cache_runtime::cached;

#[cached(key = "a:{id}", ttl = 60, stale = 10)]
async fn shown(id: u64, label: &impl Display) -> String {
    format!("{id}:{label}")
}

fn main() {}
