use cache_runtime::{cached, invalidates};

#[cached(key = "user:{id}", ttl = 60)]
async fn get_user(id: u64) -> Option<String> {
    Some(id.to_string())
}

#[invalidates(get_usr(id))]
async fn rename_user(id: u64) {}

fn main() {}
