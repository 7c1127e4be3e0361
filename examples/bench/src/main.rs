//! Benchmark harness: `#[cached]` against a hand-written redis-rs cache-aside (same codec,
//! same server, same kind of connection) and against the `cached` crate, in one run with the
//! variants interleaved round by round.
//!
//! ```text
//! cargo run --release -p bench                                    # ~2 minutes; prints the table
//! cargo run --release -p bench -- --quick                         # a few seconds
//! cargo run --release -p bench -- --json target/bench.json --svg target/bench.svg
//! cargo run --release -p bench -- --svg docs/bench.svg            # redraw the README's chart
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p bench   # an existing server
//! ```
//!
//! It writes files only when asked (`--json PATH`, `--svg PATH`): a run never touches the
//! repository's tracked files unless a path names one.
//!
//! Without `REDIS_URL` it starts its own `redis-server` (from `PATH`) on a free loopback port,
//! with no persistence, and kills it at the end. With `REDIS_URL` every key it writes is under
//! a `bench.<pid>` prefix and deleted at the end.
//!
//! Cases (the value is a ~1 KB struct: strings, a list of tags, nested structs):
//! * Redis hit path, 1 task and 64 tasks on one multi-thread runtime: `#[cached]` with JSON and
//!   with MessagePack; the hand-written cache-aside (`GET`, decode, on a miss load and
//!   `SET .. EX`) with the same two codecs over the same kind of connection (one
//!   `ConnectionManager`); the `cached` crate's `#[concurrent_cached]` on an `AsyncRedisCache`
//!   (MessagePack) over a `ConnectionManager`; and the programmatic API,
//!   `Cache::get_or_load` (MessagePack, the same value and TTL, options built once).
//! * Cold-key stampede: 64 concurrent callers, a 50 ms loader: loader runs and wall time.
//! * Memory backend hit path (ns/op).
//! * The freshness layer, on both backends: the hit path of a function with `stale = N` and
//!   `tags = [..]` against the same function without them (the plain `#[cached]` msgpack
//!   case); a grace-window hit (the entry past its `ttl`, its refresh running elsewhere and
//!   never finishing: every measured call is served stale, checked on `stale_served`) against
//!   a plain hit; and a steady hot key (16 tasks on one key, `ttl = 1`, a 20 ms loader) with
//!   and without XFetch (`early_refresh = 1.0`): the share of calls that waited for a loader.
//! * The near cache (`local_ttl`): a near hit of the value against a bare `moka` get + clone,
//!   and (64 tasks) against the Redis hit path; the same function returning `Arc<Item>`.
//! * Near-cache coherence across two OS processes (this binary started again with
//!   `--near-helper`): the delay from an `#[invalidates]` write returning here to the other
//!   process reading the new value, for 1 000 writes (see "Near-cache coherence" below).
//!
//! Each timed slice runs one case for a fixed time; a round runs every case once, in an order
//! that rotates from round to round, so a slow moment of the machine is spread over all cases.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, Codec, EntryOptions, cached, invalidates};
use cached::macros::concurrent_cached;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

/// Concurrent callers in the 64-task cases and the stampede.
const TASKS: usize = 64;
/// Distinct hot keys per variant in the hit-path cases.
const KEYS: u64 = 64;
/// Loader time in the stampede.
const STAMPEDE_LOADER_MS: u64 = 50;
/// Entry TTL (seconds): long enough that nothing expires during a run.
const TTL_SECS: u64 = 3600;
/// Tasks on the one hot key of the early-refresh cases.
const HOT_TASKS: usize = 16;
/// Loader time of the hot-key cases.
const HOT_LOADER_MS: u64 = 20;
/// A call this slow most likely waited for a loader (three quarters of [`HOT_LOADER_MS`]; a
/// hit takes well under 1 ms, but a busy machine's scheduling delays can reach this too: the
/// exact figure is the function's `misses`, each of which waited for a load).
const HOT_WAIT_MS: u64 = 15;

// ---------------------------------------------------------------------------------------------
// The value

/// A realistic ~1 KB cached value: strings, a list of tags, nested structs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u64,
    sku: String,
    title: String,
    description: String,
    price_cents: i64,
    currency: String,
    tags: Vec<String>,
    seller: Seller,
    dimensions: Dimensions,
    in_stock: bool,
    rating: f32,
    review_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seller {
    id: u64,
    name: String,
    country: String,
    email: String,
    verified: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Dimensions {
    width_mm: u32,
    height_mm: u32,
    depth_mm: u32,
    weight_g: u32,
}

fn sample_item(id: u64) -> Item {
    Item {
        id,
        sku: format!("SKU-{id:08}-EU"),
        title: format!("Ergonomic stainless steel widget, model {id}"),
        description: "A sturdy, well balanced widget for everyday use in the kitchen, the \
            workshop or the office. The brushed stainless steel body resists corrosion and \
            fingerprints, the silicone grip stays comfortable in wet hands, and the hinge is \
            rated for fifty thousand cycles. Dishwasher safe. Ships in recyclable cardboard \
            packaging without plastic film. Includes a printed quick-start guide in English, \
            German, French, Spanish and Italian, and a two-year limited warranty covering \
            manufacturing defects. Replacement parts are available for ten years after \
            purchase."
            .to_owned(),
        price_cents: 1999 + (id as i64 % 100),
        currency: "EUR".to_owned(),
        tags: [
            "kitchen",
            "workshop",
            "stainless-steel",
            "dishwasher-safe",
            "ergonomic",
            "eco-packaging",
            "bestseller",
            "gift-idea",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        seller: Seller {
            id: 4200 + id % 7,
            name: "Acme Household Goods GmbH".to_owned(),
            country: "DE".to_owned(),
            email: "orders@acme-household.example".to_owned(),
            verified: true,
        },
        dimensions: Dimensions {
            width_mm: 120,
            height_mm: 45,
            depth_mm: 30,
            weight_g: 310,
        },
        in_stock: !id.is_multiple_of(5),
        rating: 4.6,
        review_count: 1287,
    }
}

/// The loaders' error type (the `cached` crate needs a `Result`; every variant uses one).
#[derive(Debug, Clone)]
struct BenchError(String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

// ---------------------------------------------------------------------------------------------
// The variants

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
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
    const REDIS: [Variant; 8] = [
        Variant::RedisOursJson,
        Variant::RedisHandJson,
        Variant::RedisOursMsgpack,
        Variant::RedisHandMsgpack,
        Variant::RedisApiMsgpack,
        Variant::RedisCachedCrate,
        Variant::RedisOursFresh,
        Variant::RedisOursStale,
    ];
    const MEMORY: [Variant; 6] = [
        Variant::MemOursJson,
        Variant::MemHandJson,
        Variant::MemOursMsgpack,
        Variant::MemHandMsgpack,
        Variant::MemOursFresh,
        Variant::MemOursStale,
    ];
    const NEAR: [Variant; 3] = [Variant::NearOurs, Variant::NearMoka, Variant::NearOursArc];
    const STAMPEDE: [Variant; 3] = [
        Variant::RedisOursMsgpack,
        Variant::RedisHandMsgpack,
        Variant::RedisCachedCrate,
    ];

    fn label(self) -> &'static str {
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

    fn backend(self) -> &'static str {
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

    fn implementation(self) -> &'static str {
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

    fn codec(self) -> &'static str {
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
/// Loader sleep (0 for the hit path, [`STAMPEDE_LOADER_MS`] in the stampede).
static LOADER_MS: AtomicU64 = AtomicU64::new(0);

fn loads(v: Variant) -> u64 {
    LOADS[v as usize].load(Ordering::SeqCst)
}

/// The "database": counts the run and sleeps for [`LOADER_MS`].
async fn load(v: Variant, id: u64) -> Result<Item, BenchError> {
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
async fn load_gated(v: Variant, id: u64) -> Result<Item, BenchError> {
    if STALE_GATE_CLOSED.load(Ordering::SeqCst) {
        HELD_REFRESHES.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    load(v, id).await
}

/// A hand-written cache-aside over one shared `ConnectionManager`.
struct Hand {
    conn: ConnectionManager,
    prefix: String,
    msgpack: bool,
    variant: Variant,
}

impl Hand {
    async fn get(&self, id: u64) -> Result<Item, BenchError> {
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

/// Decodes a hand-written entry with the variant's codec (`None` for bad bytes: a miss).
fn decode_item(msgpack: bool, bytes: &[u8]) -> Option<Item> {
    if msgpack {
        rmp_serde::from_slice(bytes).ok()
    } else {
        serde_json::from_slice(bytes).ok()
    }
}

/// Encodes a hand-written entry with the variant's codec (MessagePack with field names, as
/// `Codec::MessagePack` writes).
fn encode_item(msgpack: bool, item: &Item) -> Result<Vec<u8>, BenchError> {
    if msgpack {
        rmp_serde::to_vec_named(item).map_err(|e| BenchError(e.to_string()))
    } else {
        serde_json::to_vec(item).map_err(|e| BenchError(e.to_string()))
    }
}

/// A hand-written in-process cache-aside with the same codec: a `moka` map of encoded bytes
/// (what the memory backend stores), decoded on every hit. The baseline that shows what the
/// runtime itself costs per hit.
struct HandMemory {
    map: moka::sync::Cache<String, Arc<[u8]>>,
    msgpack: bool,
    variant: Variant,
}

impl HandMemory {
    fn new(msgpack: bool, variant: Variant) -> HandMemory {
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

    async fn get(&self, id: u64) -> Result<Item, BenchError> {
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

/// Everything the variants share, set once in `main`.
struct Ctx {
    redis_json: Cache,
    redis_msgpack: Cache,
    /// The programmatic API's cache: MessagePack, its own namespace (as long as
    /// `ours-msgpack`, so that the keys have the same length) and connection.
    redis_api: Cache,
    /// Built once: what every `get_or_load` call of [`api_redis_msgpack`] passes.
    api_opts: EntryOptions,
    mem_json: Cache,
    mem_msgpack: Cache,
    hand_json: Hand,
    hand_msgpack: Hand,
    hand_mem_json: HandMemory,
    hand_mem_msgpack: HandMemory,
    /// The near-cache baseline: decoded values in a bare moka map.
    moka: moka::sync::Cache<u64, Arc<Item>>,
    redis_url: String,
    /// Key prefix of this run (`bench.<pid>`).
    prefix: String,
}

static CTX: OnceLock<Ctx> = OnceLock::new();

fn ctx() -> &'static Ctx {
    CTX.get().expect("bench context is set in main")
}

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().redis_json, name = "redis_json")]
async fn ours_redis_json(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisOursJson, id).await
}

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().redis_msgpack, name = "redis_msgpack")]
async fn ours_redis_msgpack(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisOursMsgpack, id).await
}

/// The programmatic API over the same engine: the key rendered by the caller, the options
/// built once (in [`Ctx`]), the loader a `'static` closure.
async fn api_redis_msgpack(id: u64) -> Result<Item, BenchError> {
    let c = ctx();
    c.redis_api
        .get_or_load(&format!("item:{id}"), &c.api_opts, move || async move {
            load(Variant::RedisApiMsgpack, id).await
        })
        .await
}

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().mem_json, name = "mem_json")]
async fn ours_mem_json(id: u64) -> Result<Item, BenchError> {
    load(Variant::MemOursJson, id).await
}

#[cached(key = "item:{id}", ttl = 3600, cache = ctx().mem_msgpack, name = "mem_msgpack")]
async fn ours_mem_msgpack(id: u64) -> Result<Item, BenchError> {
    load(Variant::MemOursMsgpack, id).await
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
async fn ours_redis_fresh(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisOursFresh, id).await
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
async fn ours_mem_fresh(id: u64) -> Result<Item, BenchError> {
    load(Variant::MemOursFresh, id).await
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
async fn ours_redis_stale(id: u64) -> Result<Item, BenchError> {
    load_gated(Variant::RedisOursStale, id).await
}

/// [`ours_redis_stale`] on the memory backend.
#[cached(
    key = "item-stale:{id}",
    ttl = 1,
    stale = 3600,
    lock_ms = 60000,
    cache = ctx().mem_msgpack,
    name = "mem_stale"
)]
async fn ours_mem_stale(id: u64) -> Result<Item, BenchError> {
    load_gated(Variant::MemOursStale, id).await
}

/// [`ours_redis_msgpack`] with a near cache: after two Redis hits (the first one's copy is
/// evicted by the push of the cache's own fill, see the README), every call is a near hit.
#[cached(
    key = "item-near:{id}",
    ttl = 3600,
    local_ttl = 3600,
    cache = ctx().redis_msgpack,
    name = "near_item"
)]
async fn ours_near(id: u64) -> Result<Item, BenchError> {
    load(Variant::NearOurs, id).await
}

/// An `Arc<Item>` that is stored as the `Item` itself: a near hit of a function returning it
/// clones the `Arc` (what a caller does to make near hits of a large value cheap).
#[derive(Debug, Clone, PartialEq)]
struct Shared(Arc<Item>);

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
async fn ours_near_arc(id: u64) -> Result<Shared, BenchError> {
    load(Variant::NearOursArc, id)
        .await
        .map(|i| Shared(Arc::new(i)))
}

/// What a variant returns: the value, or (the `Arc` variant) a shared one. Not boxed: that
/// would add an allocation to every measured call of the other variants.
#[allow(clippy::large_enum_variant)]
enum Got {
    Item(Item),
    Shared(Shared),
}

impl Got {
    fn item(&self) -> &Item {
        match self {
            Got::Item(i) => i,
            Got::Shared(s) => &s.0,
        }
    }
}

/// The near-cache baseline: `get` on a bare moka map of decoded values, and a clone.
async fn moka_get(id: u64) -> Result<Item, BenchError> {
    let map = &ctx().moka;
    if let Some(item) = map.get(&id) {
        return Ok((*item).clone());
    }
    let item = load(Variant::NearMoka, id).await?;
    map.insert(id, Arc::new(item.clone()));
    Ok(item)
}

/// Loader of the hot-key cases: [`HOT_LOADER_MS`] per run.
async fn hot_load(id: u64) -> Result<Item, BenchError> {
    tokio::time::sleep(Duration::from_millis(HOT_LOADER_MS)).await;
    Ok(sample_item(id))
}

/// A hot key with `ttl = 1` and no early refresh: every second, the callers wait for a load.
#[cached(key = "hot:{id}", ttl = 1, cache = ctx().redis_msgpack, name = "hot_plain")]
async fn hot_plain(id: u64) -> Result<Item, BenchError> {
    hot_load(id).await
}

/// The same with XFetch (`early_refresh = 1.0`): a hit near expiry refreshes in the background.
#[cached(
    key = "hot-xfetch:{id}",
    ttl = 1,
    early_refresh = 1.0,
    cache = ctx().redis_msgpack,
    name = "hot_xfetch"
)]
async fn hot_xfetch(id: u64) -> Result<Item, BenchError> {
    hot_load(id).await
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
async fn cached_crate_item(id: u64) -> Result<Item, BenchError> {
    load(Variant::RedisCachedCrate, id).await
}

async fn call(v: Variant, id: u64) -> Result<Got, BenchError> {
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

// ---------------------------------------------------------------------------------------------
// Near-cache coherence across two OS processes
//
// This process (A) writes with `#[invalidates]`; a second process (B: this binary started
// with `--near-helper`) keeps the key in its near cache and reads it in a loop. For each
// write: A tells B (stdin) which version to near-cache; B reads until a call is a near hit of
// that version and says so (stdout), then keeps calling; A writes (the body sets the
// version in the "database", the macro deletes the key) and takes the time when the call
// returned; B reports the first call that returned the new version: how long before its
// report that call started (B's own clock) and when it started (wall clock). Delay, on
// A's clock: (report received - write returned) - (report sent - read started), an upper
// bound that includes one pipe hop; and, as a cross-check, B's wall-clock read start minus A's
// wall-clock write return (both processes read the same system clock).

/// The near-cached key of the coherence measurement.
const COH_ID: u64 = 7;

/// The coherence measurement's cache and "database" (a key outside the cache's namespace on
/// the same server), in both processes.
struct Coh {
    cache: Cache,
    db: ConnectionManager,
    db_prefix: String,
}

static COH: OnceLock<Coh> = OnceLock::new();

fn coh() -> &'static Coh {
    COH.get().expect("coherence context is set")
}

async fn coh_init(url: &str, namespace: &str, db_prefix: &str) -> Result<(), BenchError> {
    let err = |e: &dyn std::fmt::Display| BenchError(e.to_string());
    let cache = Cache::builder()
        .redis(url)
        .namespace(namespace)
        .codec(Codec::MessagePack)
        .require_connection()
        .build()
        .await
        .map_err(|e| err(&e))?;
    let client = redis::Client::open(url).map_err(|e| err(&e))?;
    let db = ConnectionManager::new(client).await.map_err(|e| err(&e))?;
    COH.set(Coh {
        cache,
        db,
        db_prefix: db_prefix.to_owned(),
    })
    .map_err(|_| BenchError("coherence context set twice".into()))
}

/// The near-cached read: the loader reads the version from the "database".
#[cached(
    key = "coh:{id}",
    ttl = 3600,
    local_ttl = 3600,
    cache = coh().cache,
    name = "coh_item"
)]
async fn coh_item(id: u64) -> Result<Item, BenchError> {
    let mut db = coh().db.clone();
    let v: Option<u64> = redis::cmd("GET")
        .arg(format!("{}:{id}", coh().db_prefix))
        .query_async(&mut db)
        .await
        .map_err(|e| BenchError(e.to_string()))?;
    Ok(sample_item(v.unwrap_or(0)))
}

/// The write: sets the version in the "database"; the macro then deletes `coh:{id}`.
#[invalidates("coh:{id}", cache = coh().cache, name = "coh_write")]
async fn coh_write(id: u64, version: u64) -> Result<(), BenchError> {
    let mut db = coh().db.clone();
    redis::cmd("SET")
        .arg(format!("{}:{id}", coh().db_prefix))
        .arg(version)
        .query_async::<()>(&mut db)
        .await
        .map_err(|e| BenchError(e.to_string()))
}

fn unix_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn coh_local_hits() -> u64 {
    coh().cache.stats().function("coh_item").local_hits
}

/// Process B: `bench --near-helper <redis-url> <namespace> <db-prefix>`; commands on stdin,
/// one per line: `ping` (answers `pong`), `want V` (see the section comment), `quit`.
async fn near_helper(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write as _;
    let [url, namespace, db_prefix] = args else {
        return Err("usage: bench --near-helper <redis-url> <namespace> <db-prefix>".into());
    };
    coh_init(url, namespace, db_prefix).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let say = |line: String| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    };
    say("ready".into())?;
    while let Some(cmd) = rx.recv().await {
        let mut words = cmd.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("ping"), _) => say("pong".into())?,
            (Some("want"), Some(v)) => {
                // Until a call is a near hit of version `v`.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let before = coh_local_hits();
                    let item = coh_item(COH_ID).await?;
                    if item.id == v && coh_local_hits() > before {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("version {v} never became a near hit").into());
                    }
                    tokio::task::yield_now().await;
                }
                say(format!("cached {v}"))?;
                // Near hits until the copy is evicted; the first call that returns another
                // version is reported.
                loop {
                    let (t, wall) = (Instant::now(), unix_ns());
                    let item = coh_item(COH_ID).await?;
                    if item.id != v {
                        say(format!(
                            "seen {} {} {wall}",
                            item.id,
                            t.elapsed().as_nanos()
                        ))?;
                        break;
                    }
                    if t > deadline + Duration::from_secs(10) {
                        return Err(format!("version {v} was never replaced").into());
                    }
                    tokio::task::yield_now().await;
                }
            }
            (Some("quit"), _) => return Ok(()),
            _ => return Err(format!("near-helper: unknown command {cmd:?}").into()),
        }
    }
    Ok(())
}

/// Quantiles of signed delays, in µs.
#[derive(Debug, Serialize)]
struct Quantiles {
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    min_us: f64,
}

fn quantiles(ns: &[i128]) -> Quantiles {
    let mut v = ns.to_vec();
    v.sort();
    let at = |q: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1e3
    };
    Quantiles {
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: at(1.0),
        min_us: v.first().map_or(f64::NAN, |&x| x as f64 / 1e3),
    }
}

/// What the coherence measurement found.
#[derive(Debug, Serialize)]
struct Coherence {
    writes: usize,
    /// Delay from `#[invalidates]` returning in A to the start of B's first read of the new
    /// value, on A's clock (includes one pipe hop).
    round_trip: Quantiles,
    /// The same from the two processes' wall clocks (`SystemTime`).
    wall_clock: Quantiles,
    /// Writes whose new value B read (a read that started) before A's call returned, by the
    /// round-trip figure.
    before_return: usize,
    /// Pipe round trip A -> B -> A (`ping`), p50, µs: one hop is about half of it.
    pipe_rtt_p50_us: f64,
    /// Duration of the `#[invalidates]` call in A, p50, µs.
    write_p50_us: f64,
}

/// Process A's side of the coherence measurement: `writes` writes.
async fn coherence(
    redis_url: &str,
    prefix: &str,
    writes: usize,
) -> Result<Coherence, Box<dyn std::error::Error>> {
    use std::io::{BufRead as _, Write as _};
    let namespace = format!("{prefix}.coh");
    let db_prefix = format!("{prefix}.cohdb");
    coh_init(redis_url, &namespace, &db_prefix).await?;
    let child = Command::new(std::env::current_exe()?)
        .args(["--near-helper", redis_url, &namespace, &db_prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // Killed (if still running) on every way out.
    struct Helper(Child);
    impl Drop for Helper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Helper(child);
    let mut stdin = child.0.stdin.take().ok_or("helper stdin")?;
    // B's reports, line by line, read by a thread (a few bytes into a pipe: writing to B's
    // stdin from here does not block).
    let stdout = std::io::BufReader::new(child.0.stdout.take().ok_or("helper stdout")?);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next = async || -> Result<String, Box<dyn std::error::Error>> {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err("the near helper exited".into()),
            Err(_) => Err("the near helper did not answer within 30 s".into()),
        }
    };
    let mut send = |line: &str| -> std::io::Result<()> {
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()
    };
    if next().await? != "ready" {
        return Err("near helper: expected `ready`".into());
    }
    let mut rtt = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        send("ping")?;
        if next().await? != "pong" {
            return Err("near helper: expected `pong`".into());
        }
        rtt.push(t.elapsed().as_nanos() as i128);
    }
    let mut version = 1_000_000u64;
    coh_write(COH_ID, version).await?;
    let (mut rt, mut wall, mut took) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..writes {
        send(&format!("want {version}"))?;
        if next().await? != format!("cached {version}") {
            return Err("near helper: expected `cached`".into());
        }
        let t0 = Instant::now();
        coh_write(COH_ID, version + 1).await?;
        let (returned, wall_returned) = (Instant::now(), unix_ns());
        let seen = next().await?;
        let received = Instant::now();
        let f: Vec<&str> = seen.split_whitespace().collect();
        let (Some(&"seen"), Some(Ok(v)), Some(Ok(since)), Some(Ok(wall_read))) = (
            f.first(),
            f.get(1).map(|s| s.parse::<u64>()),
            f.get(2).map(|s| s.parse::<i128>()),
            f.get(3).map(|s| s.parse::<i128>()),
        ) else {
            return Err(format!("near helper: bad report {seen:?}").into());
        };
        if v != version + 1 {
            return Err(format!("near helper read version {v}, expected {}", version + 1).into());
        }
        rt.push((received - returned).as_nanos() as i128 - since);
        wall.push(wall_read - wall_returned);
        took.push((returned - t0).as_nanos() as i128);
        version += 1;
    }
    send("quit")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            return Err("the near helper did not exit".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if !status.success() {
        return Err(format!("near helper failed: {status}").into());
    }
    Ok(Coherence {
        writes,
        before_return: rt.iter().filter(|&&d| d < 0).count(),
        round_trip: quantiles(&rt),
        wall_clock: quantiles(&wall),
        pipe_rtt_p50_us: quantiles(&rtt).p50_us,
        write_p50_us: quantiles(&took).p50_us,
    })
}

fn print_coherence(c: &Coherence) {
    println!();
    println!(
        "near-cache coherence across processes: {} #[invalidates] writes here, the key \
         near-cached in a second process on the same redis-server; delay from the write \
         returning to the start of the other process's first read of the new value (µs):",
        c.writes
    );
    let row = |name: &str, q: &Quantiles| {
        println!(
            "  {name:<52} p50 {:>8.1}  p99 {:>8.1}  max {:>8.1}  min {:>8.1}",
            q.p50_us, q.p99_us, q.max_us, q.min_us
        )
    };
    row(
        "round trip (A's clock; includes one pipe hop)",
        &c.round_trip,
    );
    row("wall clock (SystemTime of both processes)", &c.wall_clock);
    println!(
        "  pipe round trip p50 {:.1} µs; #[invalidates] call p50 {:.1} µs; new value read \
         before the write returned: {}",
        c.pipe_rtt_p50_us, c.write_p50_us, c.before_return
    );
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear buckets, 128 per power of two (< 0.8 % error), no allocation
// per sample.

const SUB_BITS: u32 = 7;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) << SUB_BITS;

#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    total: u64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < (1 << SUB_BITS) {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros();
        let shift = exp - SUB_BITS;
        let mant = ((ns >> shift) as usize) & ((1 << SUB_BITS) - 1);
        (((shift + 1) as usize) << SUB_BITS) | mant
    }

    /// The middle of bucket `b`, in ns.
    fn value(b: usize) -> u64 {
        if b < (1 << SUB_BITS) {
            return b as u64;
        }
        let shift = (b >> SUB_BITS) - 1;
        let mant = (b & ((1 << SUB_BITS) - 1)) as u64;
        (((1 << SUB_BITS) | mant) << shift) + ((1u64 << shift) >> 1)
    }

    fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::value(b);
            }
        }
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// One hit-path case: a variant at a concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Case {
    variant: Variant,
    tasks: usize,
}

/// Everything measured for one case over all rounds.
struct Acc {
    case: Case,
    hist: Hist,
    ops: u64,
    elapsed: Duration,
    errors: u64,
    /// ops/s of each round's slice.
    per_round: Vec<f64>,
}

/// What one variant did in an interleaved sequential slice.
struct SeqPart {
    hist: Hist,
    ops: u64,
    errors: u64,
    /// Sum of this variant's call durations: its share of the slice.
    busy: Duration,
}

/// The sequential (1-task) cases of one group, interleaved call by call: ONE task calls
/// the variants in turn (`order`), each call timed and attributed to its variant.
///
/// Why not one variant per slice: with a single task, a round trip costs ~10 µs or ~70 µs
/// depending on whether the worker thread (and its vCPU) went idle while Redis answered, and
/// which mode a slice lands in is chance that sticks for the whole slice. Calling the
/// variants alternately puts them all under the same conditions.
async fn run_sequential(order: Vec<Variant>, slice: Duration, round: usize) -> Vec<SeqPart> {
    tokio::spawn(async move {
        let mut parts: Vec<SeqPart> = order
            .iter()
            .map(|_| SeqPart {
                hist: Hist::new(),
                ops: 0,
                errors: 0,
                busy: Duration::ZERO,
            })
            .collect();
        let deadline = Instant::now() + slice;
        let mut id = round as u64 % KEYS;
        let mut t0 = Instant::now();
        while t0 < deadline {
            for (i, &v) in order.iter().enumerate() {
                let r = call(v, id).await;
                let t1 = Instant::now();
                let p = &mut parts[i];
                match r {
                    Ok(item) => {
                        std::hint::black_box(item);
                    }
                    Err(_) => p.errors += 1,
                }
                p.hist.record((t1 - t0).as_nanos() as u64);
                p.ops += 1;
                p.busy += t1 - t0;
                t0 = t1;
            }
            id = (id + 1) % KEYS;
        }
        parts
    })
    .await
    .expect("bench task panicked")
}

/// Runs `case` for `slice`: `tasks` tasks, each calling in a loop over the hot keys.
async fn run_slice(case: Case, slice: Duration, round: usize) -> (Hist, u64, u64, Duration) {
    let start = Instant::now();
    let deadline = start + slice;
    let handles: Vec<_> = (0..case.tasks)
        .map(|t| {
            tokio::spawn(async move {
                let mut hist = Hist::new();
                let (mut ops, mut errors) = (0u64, 0u64);
                let mut id = (t as u64 * 13 + round as u64) % KEYS;
                let mut t0 = Instant::now();
                while t0 < deadline {
                    let r = call(case.variant, id).await;
                    let t1 = Instant::now();
                    match r {
                        Ok(item) => {
                            std::hint::black_box(item);
                        }
                        Err(_) => errors += 1,
                    }
                    hist.record((t1 - t0).as_nanos() as u64);
                    ops += 1;
                    id = (id + 1) % KEYS;
                    t0 = t1;
                }
                (hist, ops, errors)
            })
        })
        .collect();
    let mut hist = Hist::new();
    let (mut ops, mut errors) = (0, 0);
    for h in handles {
        let (h, o, e) = h.await.expect("bench task panicked");
        hist.merge(&h);
        ops += o;
        errors += e;
    }
    (hist, ops, errors, start.elapsed())
}

/// The outcome of one stampede.
#[derive(Clone, Copy, Debug)]
struct Stampede {
    loads: u64,
    wall: Duration,
    errors: u64,
}

/// `TASKS` callers released together on one cold key.
async fn stampede(v: Variant, id: u64) -> Stampede {
    let before = loads(v);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let r = call(v, id).await;
                (Instant::now(), r.is_err())
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut last = start;
    let mut errors = 0;
    for h in handles {
        let (done, err) = h.await.expect("stampede task panicked");
        last = last.max(done);
        errors += u64::from(err);
    }
    Stampede {
        loads: loads(v) - before,
        wall: last - start,
        errors,
    }
}

/// One hot-key case: [`HOT_TASKS`] tasks calling one key in a loop.
#[derive(Debug, Serialize)]
struct HotRow {
    case: String,
    early_refresh: Option<f64>,
    tasks: usize,
    ttl_secs: u64,
    loader_ms: u64,
    seconds: f64,
    calls: u64,
    /// Calls of at least [`HOT_WAIT_MS`]: most likely they waited for a loader.
    waited: u64,
    waited_fraction: f64,
    /// The function's `misses` over `calls`.
    misses: u64,
    miss_fraction: f64,
    loads: u64,
    refreshes: u64,
    early_refreshes: u64,
    p999_us: f64,
    max_ms: f64,
}

/// Runs the hot-key case `xfetch` on key `id` for `dur` (after one call that loads it).
async fn hot(xfetch: bool, id: u64, dur: Duration) -> Result<HotRow, BenchError> {
    let name = if xfetch { "hot_xfetch" } else { "hot_plain" };
    let hot_call = move || async move {
        if xfetch {
            hot_xfetch(id).await
        } else {
            hot_plain(id).await
        }
    };
    hot_call().await?;
    let cache = &ctx().redis_msgpack;
    let before = cache.stats().function(name);
    let start = Instant::now();
    let deadline = start + dur;
    let handles: Vec<_> = (0..HOT_TASKS)
        .map(|_| {
            tokio::spawn(async move {
                let mut hist = Hist::new();
                let (mut calls, mut waited, mut errors) = (0u64, 0u64, 0u64);
                let mut t0 = Instant::now();
                while t0 < deadline {
                    let r = hot_call().await;
                    let t1 = Instant::now();
                    match r {
                        Ok(item) => {
                            std::hint::black_box(item);
                        }
                        Err(_) => errors += 1,
                    }
                    let took = t1 - t0;
                    hist.record(took.as_nanos() as u64);
                    calls += 1;
                    waited += u64::from(took >= Duration::from_millis(HOT_WAIT_MS));
                    t0 = t1;
                }
                (hist, calls, waited, errors)
            })
        })
        .collect();
    let mut hist = Hist::new();
    let (mut calls, mut waited, mut errors) = (0, 0, 0);
    for h in handles {
        let (h, c, w, e) = h.await.map_err(|e| BenchError(e.to_string()))?;
        hist.merge(&h);
        calls += c;
        waited += w;
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    if errors > 0 {
        return Err(BenchError(format!("{name}: {errors} calls failed")));
    }
    let after = cache.stats().function(name);
    let misses = after.misses - before.misses;
    Ok(HotRow {
        case: if xfetch {
            "redis, early_refresh = 1.0".to_owned()
        } else {
            "redis, no early refresh".to_owned()
        },
        early_refresh: xfetch.then_some(1.0),
        tasks: HOT_TASKS,
        ttl_secs: 1,
        loader_ms: HOT_LOADER_MS,
        seconds,
        calls,
        waited,
        waited_fraction: waited as f64 / calls.max(1) as f64,
        misses,
        miss_fraction: misses as f64 / calls.max(1) as f64,
        loads: after.loads - before.loads,
        refreshes: after.refreshes - before.refreshes,
        early_refreshes: after.early_refreshes - before.early_refreshes,
        p999_us: hist.quantile(0.999) as f64 / 1e3,
        max_ms: hist.quantile(1.0) as f64 / 1e6,
    })
}

/// The grace-window variants' counters over the measured hit path.
#[derive(Debug, Serialize)]
struct StaleCheck {
    case: String,
    /// Measured calls (all rounds, both concurrencies).
    calls: u64,
    stale_served: u64,
    hits: u64,
    misses: u64,
    /// Refreshes started (and held at the gate) over the whole run.
    refreshes: u64,
}

// ---------------------------------------------------------------------------------------------
// The report

#[derive(Debug, Serialize)]
struct Report {
    meta: Meta,
    hit_path: Vec<HitRow>,
    stampede: Vec<StampedeRow>,
    ratios: Vec<Ratio>,
    serve_stale: Vec<StaleCheck>,
    near_hits: NearCheck,
    coherence: Option<Coherence>,
    early_refresh: Vec<HotRow>,
}

/// The near-cache variant's counters over the measured hit path.
#[derive(Debug, Serialize)]
struct NearCheck {
    /// Measured calls (all rounds, both concurrencies).
    calls: u64,
    local_hits: u64,
    redis_hits: u64,
    misses: u64,
}

#[derive(Debug, Serialize)]
struct Meta {
    command: String,
    mode: &'static str,
    rounds: usize,
    slice_ms: u64,
    tasks: usize,
    hot_keys: u64,
    cpus: usize,
    /// `/proc/loadavg` (1 min) before and after the run: other work on the machine.
    load_average_before: Option<f64>,
    load_average_after: Option<f64>,
    redis: String,
    redis_version: String,
    value_bytes_json: usize,
    value_bytes_msgpack_named: usize,
    value_bytes_msgpack_compact: usize,
    /// Size of one call's future (what each call initialises and moves), per implementation.
    future_bytes: Vec<(String, usize)>,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct HitRow {
    case: String,
    backend: &'static str,
    implementation: &'static str,
    codec: &'static str,
    tasks: usize,
    ops: u64,
    errors: u64,
    ops_per_sec: f64,
    /// Wall time per operation: 1 / throughput.
    ns_per_op: f64,
    p50_us: f64,
    p99_us: f64,
}

#[derive(Debug, Serialize)]
struct StampedeRow {
    case: String,
    implementation: &'static str,
    callers: usize,
    loader_ms: u64,
    runs: usize,
    loader_runs_min: u64,
    loader_runs_max: u64,
    loader_runs_mean: f64,
    wall_ms_p50: f64,
    wall_ms_max: f64,
    errors: u64,
}

#[derive(Debug, Serialize)]
struct Ratio {
    what: String,
    /// Time per op of the first over the second, from each one's total over all rounds.
    time_ratio: f64,
    /// The median over rounds of the per-round ratio: the two cases run next to each other
    /// in every round, so this is robust to the machine being busier in some rounds. The
    /// targets are checked on this figure.
    time_ratio_median_round: f64,
    /// Time per op of the first minus the second, in ns (from the totals).
    ns_per_op_difference: f64,
    /// p50 latency of the first over the second: the centre of the distributions, which a
    /// busy machine's scheduling delays (the long tail of the 1-task cases) barely move.
    p50_ratio: f64,
    target: Option<String>,
    met: Option<bool>,
}

fn hit_row(a: &Acc) -> HitRow {
    let secs = a.elapsed.as_secs_f64();
    let ops_per_sec = a.ops as f64 / secs;
    HitRow {
        case: format!("{} {}", a.case.variant.backend(), a.case.variant.label()),
        backend: a.case.variant.backend(),
        implementation: a.case.variant.implementation(),
        codec: a.case.variant.codec(),
        tasks: a.case.tasks,
        ops: a.ops,
        errors: a.errors,
        ops_per_sec,
        ns_per_op: 1e9 / ops_per_sec,
        p50_us: a.hist.quantile(0.50) as f64 / 1e3,
        p99_us: a.hist.quantile(0.99) as f64 / 1e3,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Time-per-op ratio `a / b` (= throughput of `b` over throughput of `a`).
fn ratio(accs: &[Acc], a: Case, b: Case, target: Option<(f64, &str)>) -> Option<Ratio> {
    let find = |c: Case| accs.iter().find(|x| x.case == c && x.ops > 0);
    let (x, y) = (find(a)?, find(b)?);
    let tput = |z: &Acc| z.ops as f64 / z.elapsed.as_secs_f64();
    let time_ratio = tput(y) / tput(x);
    let rounds = x
        .per_round
        .iter()
        .zip(&y.per_round)
        .map(|(p, q)| q / p)
        .collect();
    let time_ratio_median_round = median(rounds);
    let ns_per_op_difference = 1e9 / tput(x) - 1e9 / tput(y);
    let p50_ratio = x.hist.quantile(0.5) as f64 / y.hist.quantile(0.5).max(1) as f64;
    let what = format!(
        "{} {} vs {} {}, {} task{}",
        a.variant.backend(),
        a.variant.label(),
        b.variant.backend(),
        b.variant.label(),
        a.tasks,
        if a.tasks == 1 { "" } else { "s" }
    );
    let (target, met) = match target {
        // ">= N": the first is at least N times slower (a speed-up of the second).
        Some((limit, text)) if text.starts_with(">=") => (
            Some(text.to_owned()),
            Some(time_ratio_median_round >= limit),
        ),
        Some((limit, text)) => (
            Some(text.to_owned()),
            Some(time_ratio_median_round <= limit),
        ),
        None => (None, None),
    };
    Some(Ratio {
        what,
        time_ratio,
        time_ratio_median_round,
        ns_per_op_difference,
        p50_ratio,
        target,
        met,
    })
}

fn print_report(r: &Report) {
    let m = &r.meta;
    println!();
    println!(
        "value: {} B json, {} B msgpack (named fields, ours and hand-written), {} B msgpack \
         (compact, cached crate)",
        m.value_bytes_json, m.value_bytes_msgpack_named, m.value_bytes_msgpack_compact
    );
    println!(
        "future size per call: {}",
        m.future_bytes
            .iter()
            .map(|(k, v)| format!("{k} {v} B"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} mode: {} rounds x {} ms per case, {} hot keys, {} cpus, redis {} at {}",
        m.mode, m.rounds, m.slice_ms, m.hot_keys, m.cpus, m.redis_version, m.redis
    );
    let fmt_load = |l: Option<f64>| l.map_or("?".to_owned(), |l| format!("{l:.2}"));
    println!(
        "load average before/after: {} / {}",
        fmt_load(m.load_average_before),
        fmt_load(m.load_average_after)
    );
    println!();
    println!(
        "{:<36} {:>5} {:>12} {:>10} {:>9} {:>9}",
        "hit path", "tasks", "ops/s", "ns/op", "p50 µs", "p99 µs"
    );
    for h in &r.hit_path {
        println!(
            "{:<36} {:>5} {:>12.0} {:>10.0} {:>9.1} {:>9.1}{}",
            h.case,
            h.tasks,
            h.ops_per_sec,
            h.ns_per_op,
            h.p50_us,
            h.p99_us,
            if h.errors > 0 {
                format!("  ({} errors)", h.errors)
            } else {
                String::new()
            }
        );
    }
    println!();
    println!(
        "{:<32} {:>7} {:>22} {:>12} {:>12}",
        "cold-key stampede", "callers", "loader runs min/mean/max", "wall p50 ms", "wall max ms"
    );
    for s in &r.stampede {
        println!(
            "{:<32} {:>7} {:>8}/{:>6.1}/{:<7} {:>12.1} {:>12.1}{}",
            s.case,
            s.callers,
            s.loader_runs_min,
            s.loader_runs_mean,
            s.loader_runs_max,
            s.wall_ms_p50,
            s.wall_ms_max,
            if s.errors > 0 {
                format!("  ({} errors)", s.errors)
            } else {
                String::new()
            }
        );
    }
    println!();
    println!(
        "time per op, first / second: median over rounds (each round runs the two side by \
         side), the ratio of the totals, and the difference; targets are checked on the median:"
    );
    for q in &r.ratios {
        let verdict = match (&q.target, q.met) {
            (Some(t), Some(true)) => format!("  target {t}: met"),
            (Some(t), Some(false)) => format!("  target {t}: MISSED"),
            _ => String::new(),
        };
        println!(
            "  {:<76} {:>6.3}x  (totals {:>6.3}x, {:>+7.0} ns/op, p50 {:>5.3}x){}",
            q.what,
            q.time_ratio_median_round,
            q.time_ratio,
            q.ns_per_op_difference,
            q.p50_ratio,
            verdict
        );
    }
    println!();
    println!("grace-window hits (every measured call must be served stale):");
    for c in &r.serve_stale {
        println!(
            "  {:<32} {} calls: stale_served {}, hits {}, misses {}; refreshes held {}{}",
            c.case,
            c.calls,
            c.stale_served,
            c.hits,
            c.misses,
            c.refreshes,
            if c.stale_served == c.calls && c.hits == 0 && c.misses == 0 {
                ""
            } else {
                "  NOT ALL GRACE-WINDOW HITS"
            }
        );
    }
    if let Some(h) = r
        .hit_path
        .iter()
        .find(|h| h.case == "near #[cached] local_ttl hit" && h.tasks == 1)
    {
        println!(
            "near hit of the 1 KB value, 1 task: {:.0} ns/op  target <= 1000 ns: {}",
            h.ns_per_op,
            if h.ns_per_op <= 1000.0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    let n = &r.near_hits;
    println!(
        "near hits (every measured call must be a near hit): {} calls: local_hits {}, redis \
         hits {}, misses {}{}",
        n.calls,
        n.local_hits,
        n.redis_hits,
        n.misses,
        if n.local_hits == n.calls {
            ""
        } else {
            "  NOT ALL NEAR HITS"
        }
    );
    if let Some(c) = &r.coherence {
        print_coherence(c);
    }
    println!();
    println!(
        "early refresh: {HOT_TASKS} tasks on one hot key, ttl 1 s, {HOT_LOADER_MS} ms loader; \
         calls that waited for a loader: misses (exact), and calls >= {HOT_WAIT_MS} ms"
    );
    println!(
        "{:<36} {:>10} {:>20} {:>20} {:>9} {:>9} {:>8}",
        "",
        "calls",
        "misses / calls",
        format!("calls >= {HOT_WAIT_MS} ms"),
        "refreshes",
        "p99.9 µs",
        "max ms"
    );
    for h in &r.early_refresh {
        println!(
            "{:<36} {:>10} {:>7} ({:>9.5} %) {:>7} ({:>9.5} %) {:>9} {:>9.0} {:>8.1}",
            h.case,
            h.calls,
            h.misses,
            h.miss_fraction * 100.0,
            h.waited,
            h.waited_fraction * 100.0,
            h.refreshes,
            h.p999_us,
            h.max_ms
        );
    }
    println!();
    println!("total {:.1} s", m.seconds);
}

// ---------------------------------------------------------------------------------------------
// The chart

fn svg_chart(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    const OURS: RGBColor = RGBColor(31, 119, 180);
    const HAND: RGBColor = RGBColor(140, 140, 140);
    const CACHED: RGBColor = RGBColor(255, 127, 14);
    let color = |implementation: &str| match implementation {
        "cache-runtime" => OURS,
        "hand-written" => HAND,
        _ => CACHED,
    };

    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1200, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw(&Text::new(
        format!(
            "cache-runtime benchmark: ~{} B value, redis {}, {} cpus ({} mode)",
            r.meta.value_bytes_json, r.meta.redis_version, r.meta.cpus, r.meta.mode
        ),
        (20, 12),
        ("sans-serif", 20).into_font(),
    ))?;
    let panels = body.split_evenly((2, 2));

    type Bar = (String, f64, RGBColor, String);
    let bars_for = |backend: &str, tasks: usize, ns: bool| -> Vec<Bar> {
        r.hit_path
            .iter()
            .filter(|h| h.backend == backend && h.tasks == tasks)
            .map(|h| {
                let v = if ns { h.ns_per_op } else { h.ops_per_sec };
                let label = if ns {
                    format!("{v:.0} ns")
                } else {
                    format!("{:.1}k/s", v / 1e3)
                };
                (h.case.clone(), v, color(h.implementation), label)
            })
            .collect()
    };
    let mut memory = bars_for("memory", 1, true);
    for b in &mut memory {
        b.0 = format!("{}, 1 task", b.0.trim_start_matches("memory "));
    }
    for mut b in bars_for("memory", TASKS, true) {
        b.0 = format!("{}, {TASKS} tasks", b.0.trim_start_matches("memory "));
        memory.push(b);
    }
    let strip = |bars: Vec<Bar>| -> Vec<Bar> {
        bars.into_iter()
            .map(|mut b| {
                b.0 = b.0.trim_start_matches("redis ").to_owned();
                b
            })
            .collect()
    };
    let stampede: Vec<Bar> = r
        .stampede
        .iter()
        .map(|s| {
            (
                s.case.clone(),
                s.loader_runs_mean,
                color(s.implementation),
                format!("{:.1} runs, {:.0} ms", s.loader_runs_mean, s.wall_ms_p50),
            )
        })
        .collect();
    let specs: [(String, &str, Vec<Bar>); 4] = [
        (
            "Redis hit path, 1 task (ops/s, higher is better)".into(),
            "ops/s",
            strip(bars_for("redis", 1, false)),
        ),
        (
            format!("Redis hit path, {TASKS} tasks (ops/s, higher is better)"),
            "ops/s",
            strip(bars_for("redis", TASKS, false)),
        ),
        (
            "Memory backend hit path (ns/op, lower is better)".into(),
            "ns/op",
            memory,
        ),
        (
            format!(
                "Cold-key stampede: {TASKS} callers, {STAMPEDE_LOADER_MS} ms loader (loader runs)"
            ),
            "loader runs (mean)",
            stampede,
        ),
    ];

    for (area, (caption, unit, bars)) in panels.iter().zip(specs) {
        let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.3;
        let n = bars.len();
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16).into_font())
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(190)
            .build_cartesian_2d(0f64..max, (0usize..n).into_segmented())?;
        // The first bar at the top.
        let row = |i: usize| n - 1 - i;
        let names: Vec<String> = bars.iter().rev().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .x_desc(unit)
            .x_labels(6)
            .y_labels(n)
            .x_label_formatter(&|v| {
                if *v >= 1e3 && (v / 1e3).fract().abs() < 1e-9 {
                    format!("{:.0}k", v / 1e3)
                } else if *v >= 1e3 {
                    format!("{:.1}k", v / 1e3)
                } else {
                    format!("{v:.0}")
                }
            })
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                SegmentValue::Exact(_) | SegmentValue::Last => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let i = row(i);
            let mut rect = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (b.1, SegmentValue::Exact(i + 1)),
                ],
                b.2.filled(),
            );
            rect.set_margin(5, 5, 0, 0);
            rect
        }))?;
        chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let i = row(i);
            Text::new(
                format!(" {}", b.3),
                (b.1, SegmentValue::CenterOf(i)),
                ("sans-serif", 12).into_font(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A private redis-server

/// A `redis-server` on a free loopback port with no persistence; killed on drop.
struct RedisProcess {
    child: Child,
    dir: PathBuf,
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_redis() -> Result<(RedisProcess, String), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cache-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "could not start `redis-server` ({e}): install it (apt-get install \
                     redis-server / brew install redis) or set REDIS_URL"
                )
            })?;
        let mut proc = RedisProcess {
            child,
            dir: dir.clone(),
        };
        let url = format!("redis://127.0.0.1:{port}/");
        let client = redis::Client::open(url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok((proc, url));
            }
            if let Ok(Some(_)) = proc.child.try_wait() {
                break; // port taken meanwhile: try another
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(proc);
    }
    Err("redis-server did not come up".into())
}

async fn redis_version(conn: &mut ConnectionManager) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

/// Deletes every key of this run (only needed on a server we did not start).
async fn cleanup(conn: &mut ConnectionManager, prefix: &str) -> redis::RedisResult<usize> {
    let mut deleted = 0;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            deleted += keys.len();
            let _: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// The 1-minute load average (Linux), if readable.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// main

struct Args {
    quick: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    rounds: Option<usize>,
    slice_ms: Option<u64>,
    /// Run only the hit-path cases whose name contains one of these (for profiling).
    only: Vec<String>,
    /// Skip the stampede.
    no_stampede: bool,
    /// Skip the hot-key (early refresh) cases.
    no_early_refresh: bool,
    /// Skip the cross-process coherence measurement.
    no_coherence: bool,
    /// Writes of the coherence measurement.
    coherence_writes: Option<usize>,
}

const USAGE: &str = "usage: cargo run --release -p bench -- \
    [--quick] [--json PATH] [--svg PATH] [--rounds N] [--slice-ms MS] \
    [--only NAME-PART]... [--no-stampede] [--no-early-refresh] [--no-coherence] \
    [--coherence-writes N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        json: None,
        svg: None,
        rounds: None,
        slice_ms: None,
        only: Vec::new(),
        no_stampede: false,
        no_early_refresh: false,
        no_coherence: false,
        coherence_writes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--svg" => args.svg = Some(value("--svg")?.into()),
            // The default now; still accepted so that the commands recorded with older
            // figures (docs/bench.md) run unchanged.
            "--no-svg" => args.svg = None,
            "--only" => args.only.push(value("--only")?),
            "--no-stampede" => args.no_stampede = true,
            "--no-early-refresh" => args.no_early_refresh = true,
            "--no-coherence" => args.no_coherence = true,
            "--coherence-writes" => {
                args.coherence_writes = Some(
                    value("--coherence-writes")?
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                )
            }
            "--rounds" => {
                args.rounds = Some(value("--rounds")?.parse().map_err(|e| format!("{e}"))?)
            }
            "--slice-ms" => {
                args.slice_ms = Some(value("--slice-ms")?.parse().map_err(|e| format!("{e}"))?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: this is a debug build; its figures would be meaningless. Run it in release mode:\n\
             \n    cargo run --release -p bench\n"
        );
        std::process::exit(1);
    }
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "--near-helper") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        if let Err(e) = rt.block_on(near_helper(&argv[1..])) {
            eprintln!("bench --near-helper: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    // One multi-thread runtime with the default worker count (one per CPU).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let load_before = load_average();
    if let Some(l) = load_before
        && l > 0.5
    {
        eprintln!(
            "bench: warning: load average {l:.2} before the run: other work on this machine \
             makes the 1-task figures noisy (their tails are scheduling delays)"
        );
    }
    let (rounds, slice_ms, stampede_rounds) = if args.quick {
        (3, 60, 3)
    } else {
        (24, 150, 10)
    };
    let rounds = args.rounds.unwrap_or(rounds).max(1);
    let slice = Duration::from_millis(args.slice_ms.unwrap_or(slice_ms).max(10));

    let (_server, redis_url, own_server) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url, false),
        Err(_) => {
            let (p, url) = start_redis()?;
            (Some(p), url, true)
        }
    };
    let prefix = format!("bench.{}", std::process::id());

    // The hand-written variants use the same connection type and settings as the runtime.
    let manager = || async {
        let client = redis::Client::open(redis_url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_with_config(client, config).await
    };
    let mut admin = manager().await?;
    let version = redis_version(&mut admin).await;
    let redis_cache = |ns: String, codec: Codec| {
        Cache::builder()
            .redis(redis_url.clone())
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
            conn: manager().await?,
            prefix: format!("{prefix}.hand-json"),
            msgpack: false,
            variant: Variant::RedisHandJson,
        },
        hand_msgpack: Hand {
            conn: manager().await?,
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
        redis_url: redis_url.clone(),
        prefix: prefix.clone(),
    };
    if CTX.set(context).is_err() {
        return Err("bench context set twice".into());
    }

    let item = sample_item(1);
    #[derive(Serialize)]
    struct CompactEnvelope<'a>(&'a Item, u32);
    let meta_sizes = (
        serde_json::to_vec(&item)?.len(),
        rmp_serde::to_vec_named(&item)?.len(),
        rmp_serde::to_vec(&CompactEnvelope(&item, 1))?.len(),
    );

    let future_bytes = vec![
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
    ];

    // Fill every hot key of every variant and check each returns the right value.
    let all: Vec<Variant> = Variant::REDIS
        .iter()
        .chain(&Variant::MEMORY)
        .chain(&Variant::NEAR)
        .copied()
        .collect();
    for &v in &all {
        // The near variant: the first call loads, the second is a Redis hit (the copy of the
        // first was evicted by the push of the fill), from the third on near hits.
        let passes = if v.backend() == "near" { 3 } else { 1 };
        for _ in 0..passes {
            for id in 0..KEYS {
                let got = call(v, id).await?;
                if *got.item() != sample_item(id) {
                    return Err(format!("{v:?} returned a wrong value for {id}").into());
                }
            }
        }
        let again = call(v, 0).await?;
        if *again.item() != sample_item(0) || loads(v) != KEYS {
            return Err(format!("{v:?}: second call was not a hit").into());
        }
    }

    // The grace-window variants: past their 1 s `ttl` from now on, their refreshes held.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    STALE_GATE_CLOSED.store(true, Ordering::SeqCst);

    let cases: Vec<Case> = [1, TASKS]
        .into_iter()
        .flat_map(|tasks| all.iter().map(move |&variant| Case { variant, tasks }))
        .filter(|c| {
            let name = format!("{} {} x{}", c.variant.backend(), c.variant.label(), c.tasks);
            args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    let mut accs: Vec<Acc> = cases
        .iter()
        .map(|&case| Acc {
            case,
            hist: Hist::new(),
            ops: 0,
            elapsed: Duration::ZERO,
            errors: 0,
            per_round: Vec::new(),
        })
        .collect();

    eprintln!(
        "bench: {} cases x {rounds} rounds x {} ms, then {stampede_rounds} stampede rounds \
         (redis {version} at {redis_url})",
        cases.len(),
        slice.as_millis()
    );
    // Warm-up: one short unrecorded slice per case.
    for &case in &cases {
        run_slice(case, Duration::from_millis(30), 0).await;
    }
    let loads_before: Vec<u64> = all.iter().map(|&v| loads(v)).collect();
    let stale_fns = [
        (Variant::RedisOursStale, &ctx().redis_msgpack, "redis_stale"),
        (Variant::MemOursStale, &ctx().mem_msgpack, "mem_stale"),
    ];
    let near_counts = || {
        let s = ctx().redis_msgpack.stats();
        let (a, b) = (s.function("near_item"), s.function("near_item_arc"));
        (
            a.local_hits + b.local_hits,
            a.hits + b.hits,
            a.misses + b.misses,
        )
    };
    let near_before = near_counts();
    let stale_before: Vec<_> = stale_fns
        .iter()
        .map(|(_, cache, name)| cache.stats().function(name))
        .collect();
    // Cases that are compared with each other (same backend, same concurrency) run next to
    // each other; the order of the groups and inside each group changes every round.
    let groups: Vec<Vec<usize>> = [
        ("redis", 1),
        ("redis", TASKS),
        ("memory", 1),
        ("memory", TASKS),
        ("near", 1),
        ("near", TASKS),
    ]
    .iter()
    .map(|&(backend, tasks)| {
        (0..accs.len())
            .filter(|&i| accs[i].case.variant.backend() == backend && accs[i].case.tasks == tasks)
            .collect()
    })
    .collect();
    for round in 0..rounds {
        for g in 0..groups.len() {
            let group = &groups[(g + round) % groups.len()];
            let n = group.len();
            if n > 0 && accs[group[0]].case.tasks == 1 {
                // Sequential cases: one task, the variants interleaved call by call, in an
                // order that changes every round.
                let mut idx: Vec<usize> = (0..n).map(|k| group[(k + round / 2) % n]).collect();
                if round % 2 == 1 {
                    idx.reverse();
                }
                let order = idx.iter().map(|&i| accs[i].case.variant).collect();
                let parts = run_sequential(order, slice * n as u32, round).await;
                for (&i, p) in idx.iter().zip(parts) {
                    let acc = &mut accs[i];
                    acc.hist.merge(&p.hist);
                    acc.ops += p.ops;
                    acc.errors += p.errors;
                    acc.elapsed += p.busy;
                    acc.per_round.push(p.ops as f64 / p.busy.as_secs_f64());
                }
                continue;
            }
            for k in 0..n {
                let k = if round % 2 == 0 { k } else { n - 1 - k };
                let acc = &mut accs[group[(k + round / 2) % n]];
                let (hist, ops, errors, elapsed) = run_slice(acc.case, slice, round).await;
                acc.hist.merge(&hist);
                acc.ops += ops;
                acc.errors += errors;
                acc.elapsed += elapsed;
                acc.per_round.push(ops as f64 / elapsed.as_secs_f64());
            }
        }
        eprint!(".");
    }
    eprintln!();
    for (&v, before) in all.iter().zip(loads_before) {
        let extra = loads(v) - before;
        if extra > 0 {
            eprintln!("bench: warning: {v:?} ran its loader {extra} times during the hit path");
        }
    }

    let serve_stale: Vec<StaleCheck> = stale_fns
        .iter()
        .zip(&stale_before)
        .map(|((v, cache, name), before)| {
            let after = cache.stats().function(name);
            StaleCheck {
                case: format!("{} {}", v.backend(), v.label()),
                calls: accs
                    .iter()
                    .filter(|a| a.case.variant == *v)
                    .map(|a| a.ops)
                    .sum(),
                stale_served: after.stale_served - before.stale_served,
                hits: after.hits - before.hits,
                misses: after.misses - before.misses,
                refreshes: after.refreshes,
            }
        })
        .collect();

    let near_after = near_counts();
    let near_check = NearCheck {
        calls: accs
            .iter()
            .filter(|a| matches!(a.case.variant, Variant::NearOurs | Variant::NearOursArc))
            .map(|a| a.ops)
            .sum(),
        local_hits: near_after.0 - near_before.0,
        redis_hits: near_after.1 - near_before.1,
        misses: near_after.2 - near_before.2,
    };

    // Near-cache coherence across two processes.
    let coherence = if args.no_coherence {
        None
    } else {
        let writes = args
            .coherence_writes
            .unwrap_or(if args.quick { 100 } else { 1000 });
        eprintln!("bench: near-cache coherence across two processes, {writes} writes");
        Some(coherence(&redis_url, &prefix, writes).await?)
    };

    // Early refresh: one hot key, with and without XFetch, one after the other.
    let hot_secs = if args.quick { 2 } else { 6 };
    let mut early_refresh = Vec::new();
    if !args.no_early_refresh {
        eprintln!(
            "bench: hot key, {HOT_TASKS} tasks, ttl 1 s, {HOT_LOADER_MS} ms loader: {hot_secs} s \
             without and {hot_secs} s with early_refresh = 1.0"
        );
        for xfetch in [false, true] {
            early_refresh.push(hot(xfetch, 2_000_000, Duration::from_secs(hot_secs)).await?);
        }
    }

    // Cold-key stampede.
    LOADER_MS.store(STAMPEDE_LOADER_MS, Ordering::SeqCst);
    let mut stampedes: Vec<(Variant, Vec<Stampede>)> =
        Variant::STAMPEDE.iter().map(|&v| (v, Vec::new())).collect();
    let stampede_rounds = if args.no_stampede { 0 } else { stampede_rounds };
    for round in 0..stampede_rounds {
        let n = stampedes.len();
        for k in 0..n {
            let (v, results) = &mut stampedes[(k + round) % n];
            results.push(stampede(*v, 1_000_000 + round as u64).await);
        }
    }
    LOADER_MS.store(0, Ordering::SeqCst);

    if !own_server {
        let n = cleanup(&mut admin, &prefix).await?;
        eprintln!("bench: deleted the {n} keys of this run under {prefix}*");
    }

    // Report.
    let mut hit_path: Vec<HitRow> = Vec::new();
    for backend in ["redis", "memory", "near"] {
        for tasks in [1, TASKS] {
            hit_path.extend(
                accs.iter()
                    .filter(|a| a.case.variant.backend() == backend && a.case.tasks == tasks)
                    .map(hit_row),
            );
        }
    }
    let stampede_rows = stampedes
        .iter()
        .filter(|(_, rs)| !rs.is_empty())
        .map(|(v, rs)| {
            let l: Vec<u64> = rs.iter().map(|s| s.loads).collect();
            let walls: Vec<f64> = rs.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect();
            StampedeRow {
                case: v.label().to_owned(),
                implementation: v.implementation(),
                callers: TASKS,
                loader_ms: STAMPEDE_LOADER_MS,
                runs: rs.len(),
                loader_runs_min: l.iter().copied().min().unwrap_or(0),
                loader_runs_max: l.iter().copied().max().unwrap_or(0),
                loader_runs_mean: l.iter().sum::<u64>() as f64 / l.len().max(1) as f64,
                wall_ms_p50: median(walls.clone()),
                wall_ms_max: walls.iter().copied().fold(0.0, f64::max),
                errors: rs.iter().map(|s| s.errors).sum(),
            }
        })
        .collect();
    let c = |variant, tasks| Case { variant, tasks };
    use Variant::*;
    let mut ratios: Vec<Option<Ratio>> = Vec::new();
    for tasks in [1, TASKS] {
        let t = Some((1.05, "<= 1.05x"));
        ratios.push(ratio(
            &accs,
            c(RedisOursJson, tasks),
            c(RedisHandJson, tasks),
            t,
        ));
        ratios.push(ratio(
            &accs,
            c(RedisOursMsgpack, tasks),
            c(RedisHandMsgpack, tasks),
            t,
        ));
        let t = (tasks == TASKS).then_some((1.0, "<= 1.00x"));
        ratios.push(ratio(
            &accs,
            c(RedisOursMsgpack, tasks),
            c(RedisCachedCrate, tasks),
            t,
        ));
        ratios.push(ratio(
            &accs,
            c(RedisOursMsgpack, tasks),
            c(RedisOursJson, tasks),
            None,
        ));
        // The programmatic API against the attribute over the same engine, and against the
        // hand-written code.
        ratios.push(ratio(
            &accs,
            c(RedisApiMsgpack, tasks),
            c(RedisOursMsgpack, tasks),
            Some((1.05, "<= 1.05x")),
        ));
        ratios.push(ratio(
            &accs,
            c(RedisApiMsgpack, tasks),
            c(RedisHandMsgpack, tasks),
            None,
        ));
    }
    for tasks in [1, TASKS] {
        ratios.push(ratio(
            &accs,
            c(MemOursJson, tasks),
            c(MemHandJson, tasks),
            None,
        ));
        ratios.push(ratio(
            &accs,
            c(MemOursMsgpack, tasks),
            c(MemHandMsgpack, tasks),
            None,
        ));
    }

    // The freshness layer: `stale` + `tags` on a fresh hit, and a grace-window hit, against
    // the plain function.
    for tasks in [1, TASKS] {
        let t = Some((1.05, "<= 1.05x"));
        ratios.push(ratio(
            &accs,
            c(RedisOursFresh, tasks),
            c(RedisOursMsgpack, tasks),
            t,
        ));
        ratios.push(ratio(
            &accs,
            c(MemOursFresh, tasks),
            c(MemOursMsgpack, tasks),
            t,
        ));
        ratios.push(ratio(
            &accs,
            c(RedisOursStale, tasks),
            c(RedisOursMsgpack, tasks),
            None,
        ));
        ratios.push(ratio(
            &accs,
            c(MemOursStale, tasks),
            c(MemOursMsgpack, tasks),
            None,
        ));
    }

    // The near cache: a near hit against a bare moka map of decoded values, and against the
    // Redis hit path of the same value (the speed-up: second over first).
    for tasks in [1, TASKS] {
        let t = (tasks == 1).then_some((1.5, "<= 1.5x"));
        ratios.push(ratio(&accs, c(NearOurs, tasks), c(NearMoka, tasks), t));
        let t = (tasks == TASKS).then_some((20.0, ">= 20x"));
        ratios.push(ratio(
            &accs,
            c(RedisOursMsgpack, tasks),
            c(NearOurs, tasks),
            t,
        ));
        ratios.push(ratio(
            &accs,
            c(RedisOursMsgpack, tasks),
            c(NearOursArc, tasks),
            None,
        ));
        ratios.push(ratio(
            &accs,
            c(NearOurs, tasks),
            c(NearOursArc, tasks),
            None,
        ));
    }

    let ratios: Vec<Ratio> = ratios.into_iter().flatten().collect();
    let mut command = String::from("cargo run --release -p bench");
    let passed: Vec<String> = std::env::args().skip(1).collect();
    if !passed.is_empty() {
        let _ = write!(command, " -- {}", passed.join(" "));
    }
    let report = Report {
        meta: Meta {
            command,
            mode: if args.quick { "quick" } else { "full" },
            rounds,
            slice_ms: slice.as_millis() as u64,
            tasks: TASKS,
            hot_keys: KEYS,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_before: load_before,
            load_average_after: load_average(),
            redis: if own_server {
                "private redis-server started by the bench".into()
            } else {
                "REDIS_URL".into()
            },
            redis_version: version,
            value_bytes_json: meta_sizes.0,
            value_bytes_msgpack_named: meta_sizes.1,
            value_bytes_msgpack_compact: meta_sizes.2,
            future_bytes,
            seconds: started.elapsed().as_secs_f64(),
        },
        hit_path,
        stampede: stampede_rows,
        ratios,
        serve_stale,
        near_hits: near_check,
        coherence,
        early_refresh,
    };
    print_report(&report);
    let s = &report.stampede;
    println!(
        "stampede loader runs (mean of {} cold keys): {}",
        stampede_rounds,
        s.iter()
            .map(|r| format!("{} {:.1}", r.case, r.loader_runs_mean))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        svg_chart(&report, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_within_one_percent() {
        for ns in (0..200_000u64).step_by(7).chain([u64::MAX / 3, 1 << 40]) {
            let v = Hist::value(Hist::bucket(ns));
            let err = v.abs_diff(ns) as f64 / ns.max(1) as f64;
            assert!(err <= 0.01, "{ns} -> {v}");
        }
        assert!(Hist::bucket(u64::MAX) < BUCKETS);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        for ns in 1..=1000 {
            h.record(ns * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.01, "{p99}");
        assert_eq!(Hist::new().quantile(0.5), 0);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn sample_value_is_about_one_kilobyte() {
        let n = serde_json::to_vec(&sample_item(42)).unwrap().len();
        assert!((900..=1200).contains(&n), "{n}");
    }
}
