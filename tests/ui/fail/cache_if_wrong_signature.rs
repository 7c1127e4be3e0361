use cache_runtime::cached;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct User {
    pub active: bool,
}

fn is_nonempty(s: &String) -> bool {
    !s.is_empty()
}

fn by_value(u: User) -> bool {
    u.active
}

fn not_bool(_: &User) -> u8 {
    1
}

/// The cached value is `User` (inside `Result<Option<_>, _>`), not `String`.
#[cached(key = "a:{id}", ttl = 60, cache_if = is_nonempty)]
async fn wrong_type(id: u64) -> Result<Option<User>, String> {
    Ok(Some(User { active: id > 0 }))
}

#[cached(key = "b:{id}", ttl = 60, cache_if = by_value)]
async fn not_a_reference(id: u64) -> Option<User> {
    Some(User { active: id > 0 })
}

#[cached(key = "c:{id}", ttl = 60, stale = 10, cache_if = not_bool)]
async fn wrong_return(id: u64) -> User {
    User { active: id > 0 }
}

#[cached(key = "d:{id}", ttl = 60, cache_if = no_such_fn)]
async fn missing(id: u64) -> User {
    User { active: id > 0 }
}

fn main() {}
