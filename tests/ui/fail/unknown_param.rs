use cache_runtime::cached;

#[cached(key = "user:{user_idd}", ttl = 60)]
async fn get_user(user_id: u64) -> Option<String> {
    Some(user_id.to_string())
}

fn main() {}
