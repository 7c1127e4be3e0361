use cache_runtime::cached;

#[cached(
    key = "user:{idd}",
    ttl = 0,
    jitter = "5",
    lock_ms = 2000,
    lock_ms = 1000,
    colour = "red"
)]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
