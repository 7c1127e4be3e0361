//! `Self::name(..)` is "a method of this type; the receiver is implied" (README). From a
//! method with a receiver, a typed invalidation of the type's receiver-less cached function
//! through `Self::` passes `&self` to a key function that takes none: an arity error.
use cache_runtime::{cached, invalidates};

pub struct Repo;

impl Repo {
    #[cached(key = "repo:{id}", ttl = 60)]
    pub async fn by_id(id: u64) -> u64 {
        id
    }

    #[invalidates(Self::by_id(id))]
    pub async fn touch(&self, id: u64) {}
}

fn main() {}
