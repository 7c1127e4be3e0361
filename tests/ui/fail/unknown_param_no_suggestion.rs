use cache_runtime::cached;

#[cached(key = "order:{shop}:{number}", ttl = 60)]
async fn get_order(shop_id: u64, order_no: u32) -> Option<String> {
    Some(format!("{shop_id}/{order_no}"))
}

fn main() {}
