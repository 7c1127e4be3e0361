use cache_runtime::cached;

#[cached(key = "a:{id}", ttl = 60, tags = "org:{id}")]
async fn one_string(id: u64) -> u64 {
    id
}

#[cached(key = "b:{id}", ttl = 60, tags = ["users", 5, users])]
async fn not_strings(id: u64) -> u64 {
    id
}

#[cached(key = "c:{id}", ttl = 60, tags = users)]
async fn a_path(id: u64) -> u64 {
    id
}

#[cached(key = "d:{id}", ttl = 60, tags = [])]
async fn empty(id: u64) -> u64 {
    id
}

#[cached(key = "e:{id}", ttl = 60, tags = ["users", "users"])]
async fn twice(id: u64) -> u64 {
    id
}

fn main() {}
