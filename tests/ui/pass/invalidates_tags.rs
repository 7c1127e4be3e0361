//! `#[invalidates]` with tags: rendered like keys, from the arguments, before the body.
#![deny(warnings)]

use cache_runtime::{Cache, invalidates};

#[invalidates("user:{region}:{id}", tags = ["region:{region}", "users"])]
pub async fn rename(region: &str, id: u64) -> Result<(), String> {
    Ok(())
}

/// Tags only.
#[invalidates(tags = ["org:{org_id}"])]
pub async fn reorganise(org_id: u64) {}

#[invalidates(tags = ["users"])]
pub async fn wipe() {}

pub struct Repo {
    pub cache: Cache,
    pub tenant: String,
}

impl Repo {
    #[invalidates("user:{self.tenant}:{id}", tags = ["tenant:{self.tenant}"], cache = self.cache)]
    pub async fn touch(&self, id: u64) -> Result<(), String> {
        Ok(())
    }
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    let _ = assert_send(rename("eu", 1));
    let _ = assert_send(reorganise(1));
    let _ = assert_send(wipe());
    #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    if false {
        let repo: Repo = todo!();
        let _ = assert_send(repo.touch(1));
    }
}
