use cache_runtime::cached;

pub struct User {
    pub id: u64,
}

#[cached(key = "user:{id}", ttl = 60)]
async fn get_user(id: u64) -> Option<User> {
    Some(User { id })
}

fn main() {}
