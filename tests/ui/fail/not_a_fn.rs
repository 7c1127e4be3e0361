use cache_runtime::cached;

#[cached(key = "config", ttl = 60)]
struct Config;

fn main() {}
