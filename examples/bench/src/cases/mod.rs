//! The benchmark cases: the variants compared on the hit path (by backend: [`redis`],
//! [`memory`], [`near`]), the hot-key cases ([`hot`]), what they share (the context set once
//! by [`init`], the counting loader) and [`call`], the one entry point the measurements use.

pub(crate) mod hot;
pub(crate) mod memory;
pub(crate) mod near;
pub(crate) mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cache_runtime::{Cache, Codec, EntryOptions};

use self::memory::{HandMemory, ours_mem_fresh, ours_mem_json, ours_mem_msgpack, ours_mem_stale};
use self::near::{Shared, moka_get, ours_near, ours_near_arc};
use self::redis::{
    Hand, api_redis_msgpack, cached_crate_item, ours_redis_fresh, ours_redis_json,
    ours_redis_msgpack, ours_redis_stale,
};
use crate::TTL_SECS;
use crate::server::connection_manager;
use crate::value::{BenchError, Item, sample_item};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    RedisOursJson,
    RedisHandJson,
    RedisOursMsgpack,
    RedisHandMsgpack,
    RedisCachedCrate,
    MemOursJson,
    MemHandJson,
    MemOursMsgpack,
    MemHandMsgpack,
    /// `#[cached]` msgpack with `stale` and `tags`: a fresh hit.
    RedisOursFresh,
    /// `#[cached]` msgpack with `ttl = 1, stale = N`, in its grace window, its refresh held.
    RedisOursStale,
    MemOursFresh,
    MemOursStale,
    /// `#[cached(.., local_ttl = N)]` msgpack on the Redis cache: a near-cache hit.
    NearOurs,
    /// A bare `moka::sync::Cache<u64, Arc<Item>>`: `get` and a clone of the value.
    NearMoka,
    /// [`NearOurs`](Variant::NearOurs) returning a [`Shared`] (`Arc<Item>`): the near hit
    /// clones an `Arc`, not the value.
    NearOursArc,
    /// `Cache::get_or_load` (the programmatic API) on the MessagePack Redis cache, the same
    /// value and TTL as [`RedisOursMsgpack`](Variant::RedisOursMsgpack).
    RedisApiMsgpack,
}

const VARIANTS: usize = 17;

impl Variant {
    pub(crate) const REDIS: [Variant; 8] = [
        Variant::RedisOursJson,
        Variant::RedisHandJson,
        Variant::RedisOursMsgpack,
        Variant::RedisHandMsgpack,
        Variant::RedisApiMsgpack,
        Variant::RedisCachedCrate,
        Variant::RedisOursFresh,
        Variant::RedisOursStale,
    ];
    pub(crate) const MEMORY: [Variant; 6] = [
        Variant::MemOursJson,
        Variant::MemHandJson,
        Variant::MemOursMsgpack,
        Variant::MemHandMsgpack,
        Variant::MemOursFresh,
        Variant::MemOursStale,
    ];
    pub(crate) const NEAR: [Variant; 3] =
        [Variant::NearOurs, Variant::NearMoka, Variant::NearOursArc];
    pub(crate) const STAMPEDE: [Variant; 3] = [
        Variant::RedisOursMsgpack,
        Variant::RedisHandMsgpack,
        Variant::RedisCachedCrate,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Variant::RedisOursJson => "#[cached] json",
            Variant::RedisHandJson => "hand-written json",
            Variant::RedisOursMsgpack => "#[cached] msgpack",
            Variant::RedisHandMsgpack => "hand-written msgpack",
            Variant::RedisCachedCrate => "cached 4.x msgpack",
            Variant::MemOursJson => "#[cached] json",
            Variant::MemHandJson => "hand-written json",
            Variant::MemOursMsgpack => "#[cached] msgpack",
            Variant::MemHandMsgpack => "hand-written msgpack",
            Variant::RedisOursFresh | Variant::MemOursFresh => "#[cached] stale+tags msgpack",
            Variant::RedisOursStale | Variant::MemOursStale => "#[cached] grace-window hit",
            Variant::NearOurs => "#[cached] local_ttl hit",
            Variant::NearMoka => "moka get + clone",
            Variant::NearOursArc => "#[cached] local_ttl hit, Arc<Item>",
            Variant::RedisApiMsgpack => "get_or_load msgpack",
        }
    }

    pub(crate) fn backend(self) -> &'static str {
        match self {
            Variant::MemOursJson
            | Variant::MemHandJson
            | Variant::MemOursMsgpack
            | Variant::MemHandMsgpack
            | Variant::MemOursFresh
            | Variant::MemOursStale => "memory",
            Variant::NearOurs | Variant::NearMoka | Variant::NearOursArc => "near",
            _ => "redis",
        }
    }

    pub(crate) fn implementation(self) -> &'static str {
        match self {
            Variant::RedisHandJson
            | Variant::RedisHandMsgpack
            | Variant::MemHandJson
            | Variant::MemHandMsgpack
            | Variant::NearMoka => "hand-written",
            Variant::RedisCachedCrate => "cached-crate",
            _ => "cache-runtime",
        }
    }

    pub(crate) fn codec(self) -> &'static str {
        match self {
            Variant::RedisOursJson
            | Variant::RedisHandJson
            | Variant::MemOursJson
            | Variant::MemHandJson => "json",
            Variant::RedisCachedCrate => "msgpack-compact",
            Variant::NearMoka => "none",
            _ => "msgpack",
        }
    }
}

/// Loader runs per variant.
static LOADS: [AtomicU64; VARIANTS] = [const { AtomicU64::new(0) }; VARIANTS];
/// Loader sleep (0 for the hit path, [`STAMPEDE_LOADER_MS`](crate::STAMPEDE_LOADER_MS) in the
/// stampede).
pub(crate) static LOADER_MS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn loads(v: Variant) -> u64 {
    LOADS[v as usize].load(Ordering::SeqCst)
}

/// The "database": counts the run and sleeps for [`LOADER_MS`].
pub(crate) async fn load(v: Variant, id: u64) -> Result<Item, BenchError> {
    LOADS[v as usize].fetch_add(1, Ordering::SeqCst);
    let ms = LOADER_MS.load(Ordering::Relaxed);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(sample_item(id))
}

/// Closed once the grace-window variants' entries are past their `ttl`: their refreshes then
/// never finish (the first grace-window call of each key starts one, which holds the entry's
/// refresh lease), so every later call is a grace-window hit.
static STALE_GATE_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Refreshes held at the gate.
static HELD_REFRESHES: AtomicU64 = AtomicU64::new(0);

/// The grace-window variants' loader: [`load`], or wait forever once the gate is closed.
pub(crate) async fn load_gated(v: Variant, id: u64) -> Result<Item, BenchError> {
    if STALE_GATE_CLOSED.load(Ordering::SeqCst) {
        HELD_REFRESHES.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    load(v, id).await
}

/// Decodes a hand-written entry with the variant's codec (`None` for bad bytes: a miss).
pub(crate) fn decode_item(msgpack: bool, bytes: &[u8]) -> Option<Item> {
    if msgpack {
        rmp_serde::from_slice(bytes).ok()
    } else {
        serde_json::from_slice(bytes).ok()
    }
}

/// Encodes a hand-written entry with the variant's codec (MessagePack with field names, as
/// `Codec::MessagePack` writes).
pub(crate) fn encode_item(msgpack: bool, item: &Item) -> Result<Vec<u8>, BenchError> {
    if msgpack {
        rmp_serde::to_vec_named(item).map_err(|e| BenchError(e.to_string()))
    } else {
        serde_json::to_vec(item).map_err(|e| BenchError(e.to_string()))
    }
}

/// Everything the variants share, set once by [`init`].
pub(crate) struct Ctx {
    pub(crate) redis_json: Cache,
    pub(crate) redis_msgpack: Cache,
    /// The programmatic API's cache: MessagePack, its own namespace (as long as
    /// `ours-msgpack`, so that the keys have the same length) and connection.
    pub(crate) redis_api: Cache,
    /// Built once: what every `get_or_load` call of [`api_redis_msgpack`] passes.
    pub(crate) api_opts: EntryOptions,
    pub(crate) mem_json: Cache,
    pub(crate) mem_msgpack: Cache,
    pub(crate) hand_json: Hand,
    pub(crate) hand_msgpack: Hand,
    pub(crate) hand_mem_json: HandMemory,
    pub(crate) hand_mem_msgpack: HandMemory,
    /// The near-cache baseline: decoded values in a bare moka map.
    pub(crate) moka: moka::sync::Cache<u64, Arc<Item>>,
    pub(crate) redis_url: String,
    /// Key prefix of this run (`bench.<pid>`).
    pub(crate) prefix: String,
}

static CTX: OnceLock<Ctx> = OnceLock::new();

pub(crate) fn ctx() -> &'static Ctx {
    CTX.get().expect("bench context is set in main")
}

/// What a variant returns: the value, or (the `Arc` variant) a shared one. Not boxed: that
/// would add an allocation to every measured call of the other variants.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Got {
    Item(Item),
    Shared(Shared),
}

impl Got {
    pub(crate) fn item(&self) -> &Item {
        match self {
            Got::Item(i) => i,
            Got::Shared(s) => &s.0,
        }
    }
}

pub(crate) async fn call(v: Variant, id: u64) -> Result<Got, BenchError> {
    if v == Variant::NearOursArc {
        return ours_near_arc(id).await.map(Got::Shared);
    }
    call_item(v, id).await.map(Got::Item)
}

async fn call_item(v: Variant, id: u64) -> Result<Item, BenchError> {
    match v {
        Variant::RedisOursJson => ours_redis_json(id).await,
        Variant::RedisHandJson => ctx().hand_json.get(id).await,
        Variant::RedisOursMsgpack => ours_redis_msgpack(id).await,
        Variant::RedisHandMsgpack => ctx().hand_msgpack.get(id).await,
        Variant::RedisCachedCrate => cached_crate_item(id).await,
        Variant::MemOursJson => ours_mem_json(id).await,
        Variant::MemOursMsgpack => ours_mem_msgpack(id).await,
        Variant::MemHandJson => ctx().hand_mem_json.get(id).await,
        Variant::MemHandMsgpack => ctx().hand_mem_msgpack.get(id).await,
        Variant::RedisOursFresh => ours_redis_fresh(id).await,
        Variant::RedisOursStale => ours_redis_stale(id).await,
        Variant::MemOursFresh => ours_mem_fresh(id).await,
        Variant::MemOursStale => ours_mem_stale(id).await,
        Variant::NearOurs => ours_near(id).await,
        Variant::NearMoka => moka_get(id).await,
        Variant::NearOursArc => ours_near_arc(id).await.map(|s| (*s.0).clone()),
        Variant::RedisApiMsgpack => api_redis_msgpack(id).await,
    }
}

/// Builds the variants' caches, connections and baselines (the context every case reads).
pub(crate) async fn init(redis_url: &str, prefix: &str) -> Result<(), Box<dyn std::error::Error>> {
    let redis_cache = |ns: String, codec: Codec| {
        Cache::builder()
            .redis(redis_url.to_owned())
            .namespace(ns)
            .codec(codec)
            .build()
    };
    let mem_cache = |codec: Codec| Cache::builder().memory().codec(codec).build();
    let context = Ctx {
        redis_json: redis_cache(format!("{prefix}.ours-json"), Codec::Json).await?,
        redis_msgpack: redis_cache(format!("{prefix}.ours-msgpack"), Codec::MessagePack).await?,
        redis_api: redis_cache(format!("{prefix}.ours-progapi"), Codec::MessagePack).await?,
        api_opts: EntryOptions::new(Duration::from_secs(TTL_SECS)).name("redis_api"),
        mem_json: mem_cache(Codec::Json).await?,
        mem_msgpack: mem_cache(Codec::MessagePack).await?,
        hand_json: Hand {
            conn: connection_manager(redis_url).await?,
            prefix: format!("{prefix}.hand-json"),
            msgpack: false,
            variant: Variant::RedisHandJson,
        },
        hand_msgpack: Hand {
            conn: connection_manager(redis_url).await?,
            prefix: format!("{prefix}.hand-msgpack"),
            msgpack: true,
            variant: Variant::RedisHandMsgpack,
        },
        hand_mem_json: HandMemory::new(false, Variant::MemHandJson),
        hand_mem_msgpack: HandMemory::new(true, Variant::MemHandMsgpack),
        moka: moka::sync::Cache::builder()
            .max_capacity(1 << 16)
            .time_to_live(Duration::from_secs(TTL_SECS))
            .build(),
        redis_url: redis_url.to_owned(),
        prefix: prefix.to_owned(),
    };
    if CTX.set(context).is_err() {
        return Err("bench context set twice".into());
    }
    Ok(())
}

/// Size of one call's future (what each call initialises and moves), per implementation.
pub(crate) fn future_bytes() -> Vec<(String, usize)> {
    vec![
        (
            "#[cached] fn".to_owned(),
            std::mem::size_of_val(&ours_redis_msgpack(0)),
        ),
        (
            "get_or_load call".to_owned(),
            std::mem::size_of_val(&api_redis_msgpack(0)),
        ),
        (
            "hand-written".to_owned(),
            std::mem::size_of_val(&ctx().hand_msgpack.get(0)),
        ),
        (
            "cached 4.x fn".to_owned(),
            std::mem::size_of_val(&cached_crate_item(0)),
        ),
        (
            "#[cached] stale+tags fn".to_owned(),
            std::mem::size_of_val(&ours_redis_fresh(0)),
        ),
        (
            "#[cached] local_ttl fn".to_owned(),
            std::mem::size_of_val(&ours_near(0)),
        ),
    ]
}

/// Every hit-path variant: Redis, memory, near, in that order.
pub(crate) fn all_variants() -> Vec<Variant> {
    Variant::REDIS
        .iter()
        .chain(&Variant::MEMORY)
        .chain(&Variant::NEAR)
        .copied()
        .collect()
}

/// Waits until the grace-window variants' entries are past their 1 s `ttl`, then closes the
/// gate: from now on their refreshes are held.
pub(crate) async fn close_stale_gate() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    STALE_GATE_CLOSED.store(true, Ordering::SeqCst);
}
