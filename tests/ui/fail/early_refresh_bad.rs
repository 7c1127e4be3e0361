use cache_runtime::cached;

#[cached(key = "a:{id}", ttl = 60, early_refresh = 0.0)]
async fn zero(id: u64) -> u64 {
    id
}

#[cached(key = "b:{id}", ttl = 60, early_refresh = -1.0)]
async fn negative(id: u64) -> u64 {
    id
}

#[cached(key = "c:{id}", ttl = 60, early_refresh = 1)]
async fn integer(id: u64) -> u64 {
    id
}

#[cached(key = "d:{id}", ttl = 60, early_refresh = "1.0")]
async fn string(id: u64) -> u64 {
    id
}

fn main() {}
