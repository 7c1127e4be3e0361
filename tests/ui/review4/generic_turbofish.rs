//! A typed invalidation of a generic cached function, written with the turbofish the
//! function itself is called with: the hidden key function keeps only the generic
//! parameters its key parameters mention, so `get::<Product>(id)` names a generic argument
//! the key function does not have.
use cache_runtime::{cached, invalidates};

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Product;

#[cached(key = "item:{id}", ttl = 60)]
pub async fn get<T: Default + serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
    id: u64,
) -> T {
    let _ = id;
    T::default()
}

#[invalidates(get::<Product>(id))]
pub async fn put(id: u64) {}

fn main() {
    let _ = get::<Product>(1);
}
