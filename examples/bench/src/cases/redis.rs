//! Redis hit-path cases: `#[cached]` with JSON and with MessagePack, the programmatic API
//! (`Cache::get_or_load`), the freshness layer (`stale` + `tags`, a grace-window hit), the
//! hand-written redis-rs cache-aside and the `cached` crate.

use std::time::Duration;

use cache_runtime::cached;
use cached::macros::concurrent_cached;
use redis::aio::ConnectionManager;

use super::{Variant, ctx, decode_item, encode_item, load, load_gated};
use crate::TTL_SECS;
use crate::value::{BenchError, Item};

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().redis_json, name = "redis_json")]
pub(crate) async fn ours_redis_json(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisOursJson, id).await
}

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().redis_msgpack, name = "redis_msgpack")]
pub(crate) async fn ours_redis_msgpack(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisOursMsgpack, id).await
}

/// The programmatic API over the same engine: the key rendered by the caller, the options
/// built once (in [`Ctx`](super::Ctx)), the loader a `'static` closure.
pub(crate) async fn api_redis_msgpack(id: u64) -> Result<Item, BenchError> {
    let c = ctx();
    c.redis_api
        .get_or_load(&format!("item:{id}"), &c.api_opts, move || async move {
            load(Variant::RedisApiMsgpack, id).await
        })
        .await
}

/// [`ours_redis_msgpack`] with a grace window and tags (never used on the hit path).
#[cached(
    key = "item-fresh:{id}",
    ttl = 3600,
    stale = 60,
    tags = ["items", "item:{id}"],
    cache = ctx().redis_msgpack,
    name = "redis_fresh"
)]
pub(crate) async fn ours_redis_fresh(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisOursFresh, id).await
}

/// Past its 1 s `ttl` during the hit path: a grace-window hit whose refresh (started by the
/// warm-up, holding the refresh lease for `lock_ms * 10`) never finishes.
#[cached(
    key = "item-stale:{id}",
    ttl = 1,
    stale = 3600,
    lock_ms = 60000,
    cache = ctx().redis_msgpack,
    name = "redis_stale"
)]
pub(crate) async fn ours_redis_stale(id: u64) -> Result<Item, BenchError> {
    load_gated(Variant::RedisOursStale, id).await
}

/// A hand-written cache-aside over one shared `ConnectionManager`.
pub(crate) struct Hand {
    pub(crate) conn: ConnectionManager,
    pub(crate) prefix: String,
    pub(crate) msgpack: bool,
    pub(crate) variant: Variant,
}

impl Hand {
    pub(crate) async fn get(&self, id: u64) -> Result<Item, BenchError> {
        let key = format!("{}:item:{id}", self.prefix);
        let mut conn = self.conn.clone();
        // A cache failure falls through to the loader, like any careful cache-aside.
        if let Ok(Some(bytes)) = redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<Vec<u8>>>(&mut conn)
            .await
            && let Some(item) = decode_item(self.msgpack, &bytes)
        {
            return Ok(item);
        }
        let item = load(self.variant, id).await?;
        let bytes = encode_item(self.msgpack, &item)?;
        let _: Result<(), _> = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .arg("EX")
            .arg(TTL_SECS)
            .query_async(&mut conn)
            .await;
        Ok(item)
    }
}

#[concurrent_cached(
    map_error = r##"|e| BenchError(format!("{e:?}"))"##,
    ty = "cached::AsyncRedisCache<u64, Item>",
    create = r##"{
        cached::AsyncRedisCache::builder("item")
            .namespace(format!("{}.cached", ctx().prefix))
            .ttl(Duration::from_secs(TTL_SECS))
            .connection_string(&ctx().redis_url)
            .connection_manager(true)
            .build()
            .await
            .expect("cached crate: building AsyncRedisCache")
    }"##
)]
pub(crate) async fn cached_crate_item(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisCachedCrate, id).await
}
