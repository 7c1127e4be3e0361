use cache_runtime::cached;

fn is_small(n: &u64) -> bool {
    *n < 10
}

#[cached(key = "a:{id}", ttl = 60, cache_if = "is_small")]
async fn quoted(id: u64) -> u64 {
    id
}

#[cached(key = "b:{id}", ttl = 60, cache_if = |n: &u64| *n < 10)]
async fn closure(id: u64) -> u64 {
    id
}

fn main() {
    let _ = is_small(&1);
}
