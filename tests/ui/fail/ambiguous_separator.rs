use cache_runtime::cached;

#[cached(key = "price:{shop}x{item}", ttl = 60)]
async fn price(shop: u32, item: u32) -> u64 {
    u64::from(shop) * u64::from(item)
}

fn main() {}
