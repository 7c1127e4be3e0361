use cache_runtime::{cached, invalidates};

pub struct Repo {
    pub tenant: String,
}

impl Repo {
    #[cached(key = "user:{self.tenant}:{id}", ttl = 60)]
    pub async fn user(&self, id: u64) -> String {
        format!("{}/{id}", self.tenant)
    }

    #[invalidates(self.user(id))]
    pub async fn touch(&self, id: u64) {}
}

fn main() {}
