use cache_runtime::cached;

#[cached(key = "a:{id}", ttl = 60, stale = 10)]
async fn borrowed(id: u64, name: Option<&str>) -> String {
    format!("{id}:{name:?}")
}

fn main() {}
