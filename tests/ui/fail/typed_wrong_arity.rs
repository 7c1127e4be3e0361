use cache_runtime::{cached, invalidates};

/// The key function takes the parameters the key template uses: `id` only.
#[cached(key = "user:{id}", ttl = 60)]
async fn get_user(id: u64, verbose: bool) -> Option<String> {
    Some(format!("{id}{verbose}"))
}

#[invalidates(get_user(id, true))]
async fn rename_user(id: u64) {}

fn main() {}
