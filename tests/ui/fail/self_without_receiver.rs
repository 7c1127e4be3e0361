use cache_runtime::cached;

pub struct Repo;

impl Repo {
    #[cached(key = "user:{self.tenant}:{id}", ttl = 60)]
    async fn get_user(id: u64) -> u64 {
        id
    }
}

fn main() {}
