#![deny(warnings)]

use cache_runtime::cached;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

#[derive(Debug)]
pub struct DbError;

#[cached(key = "plain:{id}", ttl = 60)]
async fn plain(id: u64) -> User {
    User {
        id,
        name: "a".into(),
    }
}

#[cached(key = "unit:{id}", ttl = 60)]
async fn unit(id: u64) {
    let _ = id;
}

#[cached(key = "opt:{id}", ttl = 60, negative_ttl = 10)]
async fn option(id: u64) -> Option<User> {
    if id == 0 {
        return None;
    }
    Some(User {
        id,
        name: "a".into(),
    })
}

#[cached(key = "res:{id}", ttl = 60)]
async fn result(id: u64) -> Result<User, DbError> {
    if id == 0 {
        return Err(DbError);
    }
    Ok(User {
        id,
        name: "a".into(),
    })
}

fn lookup(id: u64) -> Result<Option<User>, DbError> {
    Ok(Some(User {
        id,
        name: "a".into(),
    }))
}

#[cached(key = "res_opt:{id}", ttl = 60, negative_ttl = 0)]
async fn result_option(id: u64) -> Result<Option<User>, DbError> {
    let user = lookup(id)?;
    Ok(user)
}

mod errors {
    #[derive(Debug)]
    pub struct MyErr;
    pub type Result<T> = std::result::Result<T, MyErr>;
}

#[cached(key = "alias:{id}", ttl = 60)]
async fn alias(id: u64) -> errors::Result<u64> {
    if id == 0 {
        return Err(errors::MyErr);
    }
    Ok(id)
}

#[cached(key = "alias_opt:{id}", ttl = 60)]
async fn alias_option(id: u64) -> errors::Result<Option<u64>> {
    Ok(Some(id))
}

#[cached(key = "io:{path}", ttl = 60)]
async fn io_result(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

type Maybe<T> = Option<T>;

#[cached(key = "maybe:{id}", ttl = 60, returns = "option")]
async fn maybe(id: u64) -> Maybe<u64> {
    Some(id)
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    let _ = assert_send(plain(1));
    let _ = assert_send(unit(1));
    let _ = assert_send(option(1));
    let _ = assert_send(result(1));
    let _ = assert_send(result_option(1));
    let _ = assert_send(alias(1));
    let _ = assert_send(alias_option(1));
    let _ = assert_send(io_result("/x"));
    let _ = assert_send(maybe(1));
}
