use cache_runtime::cached;

fn keep(_: &u64) -> bool {
    true
}

#[cached(
    key = "user:{id}",
    ttl = 60,
    stale = 10,
    stale = 20,
    tags = ["a"],
    tags = ["b"],
    cache_if = keep,
    cache_if = keep
)]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
