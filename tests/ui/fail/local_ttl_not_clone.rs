use cache_runtime::cached;

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
}

#[cached(key = "user:{id}", ttl = 60, local_ttl = 5)]
async fn get_user(id: u64) -> Option<User> {
    Some(User { id })
}

fn main() {}
