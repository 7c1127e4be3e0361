use cache_runtime::cached;

pub trait Loader {
    fn load(id: u64) -> impl std::future::Future<Output = u64> + Send;
}

pub struct Db;

impl Loader for Db {
    /// Without `key_fn = false`, the hidden key function of a receiver-less
    /// function lands in the trait impl, which cannot hold it.
    #[cached(key = "load:{id}", ttl = 60)]
    async fn load(id: u64) -> u64 {
        id
    }
}

fn main() {}
