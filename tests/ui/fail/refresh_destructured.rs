use cache_runtime::cached;

#[cached(key = "p:{a}:{b}", ttl = 60, early_refresh = 1.0)]
async fn pair((a, b): (u32, u32)) -> u32 {
    a + b
}

fn main() {}
