use cache_runtime::{cached, invalidates};

#[cached(key = "!tag:org:{id}", ttl = 60)]
async fn looks_like_a_tag_set(id: u64) -> u64 {
    id
}

#[invalidates("!tag:org:{id}")]
async fn deletes_a_tag_set(id: u64) {
    let _ = id;
}

fn main() {}
