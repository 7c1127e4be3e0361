//! A `Result` (or `Option`) behind an alias whose name does not say so: `#[cached]` infers the
//! plain shape, which would cache `Err` / `None` as a value. A compile error, not a silent bug.

use cache_runtime::cached;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
}

/// Serde-able, so `Result<User, ApiError>` itself is `Serialize + DeserializeOwned`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
}

type Answer = Result<User, ApiError>;

#[cached(key = "answer:{id}", ttl = 60)]
async fn answer(id: u64) -> Answer {
    Ok(User { id })
}

type Found = Option<User>;

#[cached(key = "found:{id}", ttl = 60)]
async fn found(id: u64) -> Found {
    Some(User { id })
}

pub struct Repo;

impl Repo {
    #[cached(key = "repo:{id}", ttl = 60)]
    async fn answer(&self, id: u64) -> Answer {
        Ok(User { id })
    }
}

fn main() {
    let _ = (answer(1), found(1), Repo.answer(1));
}
