use cache_runtime::cached;

#[derive(Clone)]
pub struct Repo {
    pub hits: u64,
}

impl Repo {
    #[cached(key = "a:{id}", ttl = 60, stale = 10)]
    async fn mut_self(&mut self, id: u64) -> u64 {
        self.hits += 1;
        id
    }
}

#[cached(key = "b:{id}", ttl = 60, stale = 10, timeout_ms = 50)]
async fn mut_param(id: u64, buf: &mut Vec<u8>) -> u64 {
    buf.push(1);
    id
}

fn main() {}
