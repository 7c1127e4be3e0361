use cache_runtime::cached;

#[cached(key = "user:{id}", ttl = 18446744073709551615)]
async fn forever(id: u64) -> u64 {
    id
}

#[cached(key = "user:{id}", ttl = 3000000000, stale = 200000000)]
async fn with_grace(id: u64) -> u64 {
    id
}

fn main() {}
