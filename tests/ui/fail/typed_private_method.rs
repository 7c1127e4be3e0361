use cache_runtime::{cached, invalidates};

pub struct Repo {
    pub tenant: String,
}

impl Repo {
    /// A method without a visibility gets no key function (in a trait impl, where such
    /// methods live, there is no room for one): write `pub(self)` or `key_fn = true` to have one.
    #[cached(key = "user:{self.tenant}:{id}", ttl = 60)]
    async fn user(&self, id: u64) -> String {
        format!("{}/{id}", self.tenant)
    }

    #[invalidates(Self::user(id))]
    pub async fn touch(&self, id: u64) {
        let _ = self.user(id).await;
    }
}

fn main() {}
