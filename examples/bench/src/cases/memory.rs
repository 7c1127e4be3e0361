//! Memory-backend hit-path cases: `#[cached]` with JSON and with MessagePack, the freshness
//! layer, and the hand-written in-process cache-aside (a `moka` map of encoded bytes).

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::cached;

use super::{Variant, ctx, decode_item, encode_item, load, load_gated};
use crate::TTL_SECS;
use crate::value::{BenchError, Item};

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().mem_json, name = "mem_json")]
pub(crate) async fn ours_mem_json(id: u64) -> Result<Item, BenchError> {
    load(Variant::MemOursJson, id).await
}

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().mem_msgpack, name = "mem_msgpack")]
pub(crate) async fn ours_mem_msgpack(id: u64) -> Result<Item, BenchError> {
    load(Variant::MemOursMsgpack, id).await
}

/// [`ours_mem_msgpack`] with a grace window and tags.
#[cached(
    key = "item-fresh:{id}",
    ttl = 3600,
    stale = 60,
    tags = ["items", "item:{id}"],
    cache = ctx().mem_msgpack,
    name = "mem_fresh"
)]
pub(crate) async fn ours_mem_fresh(id: u64) -> Result<Item, BenchError> {
    load(Variant::MemOursFresh, id).await
}

/// [`ours_redis_stale`](super::redis::ours_redis_stale) on the memory backend.
#[cached(
    key = "item-stale:{id}",
    ttl = 1,
    stale = 3600,
    lock_ms = 60000,
    cache = ctx().mem_msgpack,
    name = "mem_stale"
)]
pub(crate) async fn ours_mem_stale(id: u64) -> Result<Item, BenchError> {
    load_gated(Variant::MemOursStale, id).await
}

/// (what the memory backend stores), decoded on every hit. The baseline that shows what the
/// runtime itself costs per hit.
pub(crate) struct HandMemory {
    map: moka::sync::Cache<String, Arc<[u8]>>,
    msgpack: bool,
    variant: Variant,
}

impl HandMemory {
    pub(crate) fn new(msgpack: bool, variant: Variant) -> HandMemory {
        HandMemory {
            map: moka::sync::Cache::builder()
                .max_capacity(64 * 1024 * 1024)
                .weigher(|k: &String, v: &Arc<[u8]>| (k.len() + v.len()) as u32)
                .time_to_live(Duration::from_secs(TTL_SECS))
                .build(),
            msgpack,
            variant,
        }
    }

    pub(crate) async fn get(&self, id: u64) -> Result<Item, BenchError> {
        let key = format!("item:{id}");
        if let Some(bytes) = self.map.get(&key)
            && let Some(item) = decode_item(self.msgpack, &bytes)
        {
            return Ok(item);
        }
        let item = load(self.variant, id).await?;
        let bytes = encode_item(self.msgpack, &item)?;
        self.map.insert(key, Arc::from(bytes));
        Ok(item)
    }
}
