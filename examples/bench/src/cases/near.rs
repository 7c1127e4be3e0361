//! Near-cache cases (`local_ttl`): a near hit of the value, the same function returning an
//! `Arc<Item>`, and the baseline, a bare `moka` get + clone.

use std::sync::Arc;

use cache_runtime::cached;
use serde::{Deserialize, Serialize};

use super::{Variant, ctx, load};
use crate::value::{BenchError, Item};

/// [`ours_redis_msgpack`](super::redis::ours_redis_msgpack) with a near cache: after two Redis
/// hits (the first one's copy is evicted by the push of the cache's own fill, see the README),
/// every call is a near hit.
#[cached(
    key = "item-near:{id}",
    ttl = 3600,
    local_ttl = 3600,
    cache = ctx().redis_msgpack,
    name = "near_item"
)]
pub(crate) async fn ours_near(id: u64) -> Result<Item, BenchError> {
    load(Variant::NearOurs, id).await
}

/// An `Arc<Item>` that is stored as the `Item` itself: a near hit of a function returning it
/// clones the `Arc` (what a caller does to make near hits of a large value cheap).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shared(pub(crate) Arc<Item>);

impl Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Item::deserialize(d).map(|i| Shared(Arc::new(i)))
    }
}

/// [`ours_near`] returning the value behind an `Arc`.
#[cached(
    key = "item-near-arc:{id}",
    ttl = 3600,
    local_ttl = 3600,
    cache = ctx().redis_msgpack,
    name = "near_item_arc"
)]
pub(crate) async fn ours_near_arc(id: u64) -> Result<Shared, BenchError> {
    load(Variant::NearOursArc, id)
        .await
        .map(|i| Shared(Arc::new(i)))
}

/// The near-cache baseline: `get` on a bare moka map of decoded values, and a clone.
pub(crate) async fn moka_get(id: u64) -> Result<Item, BenchError> {
    let map = &ctx().moka;
    if let Some(item) = map.get(&id) {
        return Ok((*item).clone());
    }
    let item = load(Variant::NearMoka, id).await?;
    map.insert(id, Arc::new(item.clone()));
    Ok(item)
}
