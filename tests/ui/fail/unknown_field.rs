use cache_runtime::cached;

pub struct User {
    pub id: u64,
}

#[cached(key = "user:{user.idd}", ttl = 60)]
async fn get_name(user: &User) -> String {
    user.id.to_string()
}

fn main() {}
