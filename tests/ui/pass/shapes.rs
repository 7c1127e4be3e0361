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

/// A serde-able error: the name of the alias, not the error type, decides the shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
}

type ApiResult<T> = Result<T, ApiError>;

#[cached(key = "api:{id}", ttl = 60)]
async fn api_result(id: u64) -> ApiResult<u64> {
    if id == 0 {
        return Err(ApiError { code: 500 });
    }
    Ok(id)
}

#[cached(key = "api_opt:{id}", ttl = 60)]
async fn api_result_option(id: u64) -> ApiResult<Option<u64>> {
    Ok(Some(id))
}

type Answer = Result<u64, ApiError>;

/// An alias that hides `Result`, with the shape given explicitly.
#[cached(key = "answer:{id}", ttl = 60, returns = "result")]
async fn answer(id: u64) -> Answer {
    Ok(id)
}

/// `returns = "plain"` is an explicit choice: `Err` is cached as a value, no check.
#[cached(key = "answer_plain:{id}", ttl = 60, returns = "plain")]
async fn answer_as_value(id: u64) -> Answer {
    Ok(id)
}

/// A plain struct whose name ends with `Result` (no generic arguments): plain.
#[derive(Debug, Serialize, Deserialize)]
pub struct SearchResult {
    pub hits: Vec<u64>,
}

#[cached(key = "search:{q}", ttl = 60)]
async fn search(q: &str) -> SearchResult {
    SearchResult {
        hits: vec![q.len() as u64],
    }
}

impl User {
    /// A plain `Self` return in a method: the shape check sees `User`.
    #[cached(key = "user_by_id:{id}", ttl = 60)]
    async fn by_id(id: u64) -> Self {
        User {
            id,
            name: "a".into(),
        }
    }
}

/// A blanket trait whose method could shadow the shape check's probe if the names met.
pub trait Kind {
    fn kind(self) -> u8
    where
        Self: Sized,
    {
        0
    }
}
impl<T> Kind for T {}

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
    let _ = assert_send(api_result(1));
    let _ = assert_send(api_result_option(1));
    let _ = assert_send(answer(1));
    let _ = assert_send(answer_as_value(1));
    let _ = assert_send(search("q"));
    let _ = assert_send(User::by_id(1));
    let _ = 1u8.kind();
}
