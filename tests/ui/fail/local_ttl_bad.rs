use cache_runtime::cached;

#[cached(key = "a:{id}", ttl = 60, local_ttl = 90)]
async fn exceeds_ttl(id: u64) -> u64 {
    id
}

#[cached(key = "b:{id}", ttl = 60, local_ttl = 0)]
async fn zero(id: u64) -> u64 {
    id
}

fn main() {}
