use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
}

#[cached(key = "user:{id}", ttl = 60, local_ttl = 60)]
async fn get_user(id: u64) -> Result<Option<User>, String> {
    Ok(Some(User { id }))
}

fn main() {}
