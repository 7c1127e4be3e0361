//! Typed invalidation: `#[invalidates(get_user(id))]` renders the key with `get_user`'s
//! own template, through the hidden key function `#[cached]` emits next to it.
#![deny(warnings)]

use std::sync::Arc;

use async_trait::async_trait;
use cache_runtime::{Cache, KeyPart, cached, invalidates};

pub struct User {
    pub id: u64,
    pub name: String,
}

#[cached(key = "user:{id}", ttl = 60)]
pub async fn get_user(id: u64) -> Option<String> {
    Some(id.to_string())
}

/// Parameters the key does not use are not arguments of the typed invalidation.
#[cached(key = "by_name:{name}:{region}", ttl = 60, tags = ["region:{region}"])]
pub async fn by_name(name: &str, verbose: bool, region: Option<u32>) -> Option<u64> {
    Some(name.len() as u64 + u64::from(verbose) + u64::from(region.unwrap_or(0)))
}

/// A generic cached function: the key function keeps the type parameter.
#[cached(key = "thing:{id}", ttl = 60)]
pub async fn thing<K: KeyPart + Send + Sync, T: Default + serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(id: K) -> T {
    let _ = id;
    T::default()
}

/// Destructured parameters.
#[cached(key = "pair:{a}:{b}", ttl = 60)]
pub async fn pair((a, b): (u32, u32)) -> u32 {
    a + b
}

pub mod orders {
    use cache_runtime::cached;

    #[cached(key = "order:{id}", ttl = 60)]
    pub async fn get_order(id: u64) -> u64 {
        id
    }
}

/// Typed invalidations mixed with string templates and tags; the arguments are
/// expressions over the parameters (`&String` coerces to `&str`, `u64` literals infer).
#[invalidates(
    get_user(user.id),
    "users:list",
    by_name(&user.name, Some(7)),
    thing::<u64>(7),
    pair((1, 2)),
    orders::get_order(user.id + 1),
    tags = ["region:{region}"]
)]
pub async fn save_user(user: &User, region: u32) -> Result<(), String> {
    let _ = (user, region);
    Ok(())
}

pub struct Repo {
    pub cache: Cache,
    pub tenant: String,
}

impl Repo {
    #[cached(key = "profile:{self.tenant}:{id}", ttl = 60, cache = self.cache)]
    pub async fn profile(&self, id: u64) -> String {
        format!("{}/{id}", self.tenant)
    }

    /// A private method opts in with `pub(self)`.
    #[cached(key = "secret:{self.tenant}", ttl = 60, cache = self.cache)]
    pub(self) async fn secret(&self) -> String {
        self.tenant.clone()
    }

    /// A private method opts in with `key_fn = true`.
    #[cached(key = "quota:{self.tenant}", ttl = 60, cache = self.cache, key_fn = true)]
    async fn quota(&self) -> u64 {
        self.tenant.len() as u64
    }

    /// An associated function without a receiver.
    #[cached(key = "repo:{id}", ttl = 60)]
    async fn by_id(id: u64) -> u64 {
        id
    }

    /// `Self::name(..)`: the receiver is implied.
    #[invalidates(Self::profile(id), Self::secret(), Self::quota(), get_user(id), cache = self.cache)]
    pub async fn touch(&self, id: u64) -> Result<(), String> {
        let _ = (self.secret().await, self.quota().await);
        Ok(())
    }

    /// Without a receiver, `Self::name(..)` passes none.
    #[invalidates(Self::by_id(id))]
    pub async fn reset(id: u64) {
        let _ = Self::by_id(id).await;
    }

    /// A receiver-less target through the type's path.
    #[invalidates(Repo::by_id(id))]
    pub async fn reset_from_method(self: Arc<Self>, id: u64) {}
}

#[async_trait]
pub trait Users {
    async fn rename(&self, id: u64) -> Result<(), String>;
}

#[async_trait]
impl Users for Repo {
    /// Under `#[async_trait]`: `id` is used by the typed invalidation only.
    #[invalidates(get_user(id), Self::profile(id))]
    async fn rename(&self, id: u64) -> Result<(), String> {
        Ok(())
    }
}

/// A native `async fn` trait with a receiver-less function.
pub trait Loader {
    fn load(id: u64) -> impl std::future::Future<Output = u64> + Send;
    fn load_by(&self, id: u64) -> impl std::future::Future<Output = u64> + Send;
}

impl Loader for Repo {
    /// A trait impl cannot hold the hidden key function: `key_fn = false`
    /// (a method with a receiver and no visibility has none by default).
    #[cached(key = "load:{id}", ttl = 60, key_fn = false)]
    async fn load(id: u64) -> u64 {
        id
    }

    #[cached(key = "load_by:{self.tenant}:{id}", ttl = 60, cache = self.cache)]
    async fn load_by(&self, id: u64) -> u64 {
        id
    }
}

/// The trait impl's entries are invalidated by template.
#[invalidates("load:{id}")]
pub async fn reload(id: u64) {}

fn assert_send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn main() {
    #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    if false {
        let user = User { id: 1, name: "a".into() };
        let _ = assert_send(save_user(&user, 1));
        let repo: Repo = todo!();
        let _ = assert_send(repo.touch(1));
        let _ = assert_send(Repo::reset(1));
        let _ = assert_send(repo.rename(1));
        let _ = assert_send(Arc::new(repo).reset_from_method(1));
        let _ = by_name("a", true, None);
        let _ = thing::<u64, u64>(1);
        let _ = pair((1, 2));
        let _ = assert_send(<Repo as Loader>::load(1));
        let _ = assert_send(reload(1));
    }
}
