use cache_runtime::cached;

#[cached(key = "user:{id}", ttl = 60, stale = 0)]
async fn get_user(id: u64) -> Option<String> {
    Some(id.to_string())
}

fn main() {}
