#![deny(warnings)]

use std::fmt::Display;

use cache_runtime::{KeyPart, cached, invalidates};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cached(key = "gen:{id}", ttl = 60)]
async fn get<K: KeyPart + Display + Send>(id: K) -> String {
    id.to_string()
}

#[cached(key = "gen2:{id}:{v}", ttl = 60)]
async fn get2<T>(id: impl KeyPart + Send, v: u32) -> Option<T>
where
    T: Serialize + DeserializeOwned + Send + Default + 'static,
{
    let _ = (id, v);
    Some(T::default())
}

#[invalidates("gen:{id}")]
async fn drop_it<K: KeyPart + Send>(id: K) {
    let _ = id;
}

fn main() {
    let _ = get(5u64);
    let _ = get("abc");
    let _ = get2::<Vec<u8>>(String::from("x"), 3);
    let _ = drop_it(7i32);
}
