use cache_runtime::cached;

#[cached(key = "user:{id}", ttl = 60, timeout_ms = 200)]
async fn get_user(id: u64) -> Option<String> {
    Some(id.to_string())
}

fn main() {}
