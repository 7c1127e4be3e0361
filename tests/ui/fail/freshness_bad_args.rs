use cache_runtime::cached;

#[cached(
    key = "user:{id}",
    ttl = 60,
    stale = 0,
    early_refresh = 1,
    timeout_ms = 0,
    tags = ["org:{org}", 7],
    cache_if = "keep",
    stael = 5
)]
async fn get_user(id: u64, org_id: u64) -> u64 {
    id + org_id
}

fn main() {}
