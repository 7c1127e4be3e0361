use cache_runtime::cached;

pub struct UserId(u64);

#[cached(key = "user:{id}", ttl = 60)]
async fn get_user(id: UserId) -> u64 {
    id.0
}

fn main() {}
