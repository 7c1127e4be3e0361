//! Freshness arguments on generic fns: owned copies of `T` and `&T` parameters.
#![deny(warnings)]

use cache_runtime::{KeyPart, cached};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cached(key = "gen:{id}", ttl = 60, stale = 30, tags = ["gen"])]
pub async fn repeat<T>(id: u64, seed: T, by_ref: &T) -> Vec<T>
where
    T: Clone + Send + Sync + 'static + Serialize + DeserializeOwned,
{
    let mut v = vec![seed; id as usize];
    v.push(by_ref.clone());
    v
}

#[cached(key = "gen2:{id}", ttl = 60, early_refresh = 2.0)]
pub async fn keyed<K: KeyPart + Clone + Send + Sync + 'static + ToString>(id: K) -> String {
    id.to_string()
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    let _ = assert_send(repeat(2, 1u8, &2u8));
    let _ = assert_send(repeat(2, String::new(), &String::new()));
    let _ = assert_send(keyed(5u64));
}
