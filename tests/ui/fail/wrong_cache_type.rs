use cache_runtime::cached;

pub struct Repo {
    pub pool: String,
}

impl Repo {
    #[cached(key = "user:{id}", ttl = 60, cache = self.pool)]
    async fn get_user(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
