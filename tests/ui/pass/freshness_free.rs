//! `stale`, `early_refresh`, `timeout_ms`, `tags` and `cache_if` on free fns: the body may run
//! in the background after the call returned, so it gets owned copies of the arguments it uses
//! (`&str` → `String` borrowed back as `&str`, `u64` → a copy).
#![deny(warnings)]

use cache_runtime::cached;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub org_id: u64,
    pub name: String,
    pub active: bool,
}

fn is_active(user: &User) -> bool {
    user.active
}

fn non_empty(s: &String) -> bool {
    !s.is_empty()
}

mod policy {
    pub fn positive(n: &u64) -> bool {
        *n > 0
    }
}

#[cached(
    key = "user:{region}:{id}",
    ttl = 60,
    stale = 300,
    tags = ["region:{region}", "users"],
    cache_if = is_active
)]
pub async fn get_user(region: &str, id: u64) -> Result<Option<User>, String> {
    Ok(Some(User {
        id,
        org_id: 7,
        name: region.to_uppercase(),
        active: true,
    }))
}

/// Tags without any freshness argument: the plain entry point; the tag uses a field.
#[cached(key = "member:{user.id}", ttl = 60, tags = ["org:{user.org_id}"])]
pub async fn member(user: User) -> Option<String> {
    Some(user.name)
}

/// `early_refresh` alone, `cache_if` on a `String`.
#[cached(key = "name:{id}", ttl = 60, early_refresh = 1.0, cache_if = non_empty)]
pub async fn name(id: u64) -> String {
    id.to_string()
}

/// `timeout_ms` with `stale`, a `mut` parameter, a parameter used only by the key
/// (`id`: not copied) and one only by the body (`bytes`: `&[u8]` → `Vec<u8>`).
#[cached(key = "sum:{id}", ttl = 60, stale = 30, timeout_ms = 250, cache_if = policy::positive)]
pub async fn sum(id: u64, mut extra: u64, bytes: &[u8]) -> u64 {
    extra += bytes.iter().map(|b| u64::from(*b)).sum::<u64>();
    extra
}

/// Named lifetimes, `Option<T>` and every freshness argument at once; parameters named like
/// the macro's own things.
#[cached(
    key = "label:{key}:{tags}",
    ttl = 60,
    stale = 10,
    early_refresh = 0.5,
    timeout_ms = 100,
    tags = ["label:{key}"]
)]
pub async fn label<'a>(key: &'a str, tags: u32, value: &'a String) -> Option<String> {
    Some(format!("{key}/{tags}/{}", value.len()))
}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    let _ = assert_send(get_user("eu", 1));
    let _ = assert_send(member(User {
        id: 1,
        org_id: 2,
        name: String::new(),
        active: false,
    }));
    let _ = assert_send(name(1));
    let _ = assert_send(sum(1, 2, b"abc"));
    let v = String::from("v");
    let _ = assert_send(label("k", 1, &v));
}
