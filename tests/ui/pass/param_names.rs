#![deny(warnings)]

use cache_runtime::{cached, invalidates};

// Parameters named like the macro's own concepts must not collide with its locals.
#[cached(key = "k:{key}:{cache}:{ttl}:{value}:{spec}:{handle}:{out}", ttl = 60)]
async fn collide(
    key: &str,
    cache: u32,
    ttl: u64,
    value: String,
    spec: bool,
    handle: char,
    out: i8,
) -> String {
    format!("{key}{cache}{ttl}{value}{spec}{handle}{out}")
}

#[invalidates("k:{key}:{cache}:{keys}")]
async fn collide_inv(key: &str, cache: u32, keys: String) -> Result<usize, String> {
    Ok(key.len() + cache as usize + keys.len())
}

fn main() {
    let _ = collide("a", 1, 2, "v".into(), true, 'c', -1);
    let _ = collide_inv("a", 1, String::new());
}
