//! `hit-cost N [REDIS-URL [near|api|hand]]`: N hits of one `#[cached]` function on the memory
//! backend (a 1 KB value), or with a URL on that Redis server (the Redis hit path: one `GET` per
//! call), or with `near` of a `local_ttl` function there (near-cache hits), with `api` of
//! `Cache::get_or_load` with the same key, value and TTL (options built once), with `hand` of a
//! hand-written redis-rs cache-aside (`GET` and `serde_json` on a `ConnectionManager`, the
//! bench's hand-written variant, JSON like the cache's default codec); on a current-thread
//! runtime, with a `tracing` fmt subscriber at `info` (as a service would run)
//! and, when built with `--features metrics`, the runtime's `metrics` feature and a Prometheus
//! recorder installed. Run under `valgrind --tool=callgrind` for N and 2N: the difference of
//! the instruction counts divided by N is the instructions of one hit, without start-up.
//! `scripts/hit-cost.sh` does that for both builds and prints the table; `scripts/hit-cost.sh
//! --redis` counts the Redis hit path (client side only) against a private `redis-server`.

use std::time::Duration;

use cache_runtime::{Cache, EntryOptions, cached};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    tags: Vec<String>,
    body: String,
}

fn make_item(id: u64) -> Item {
    Item {
        id,
        name: format!("item {id}"),
        tags: vec!["a".into(), "b".into()],
        body: "x".repeat(900),
    }
}

#[cached(key = "item:{id}", ttl = 3600, cache = cache, name = "hit_cost.item")]
async fn item(cache: &Cache, id: u64) -> Item {
    make_item(id)
}

/// [`item`] through the programmatic API.
async fn item_api(cache: &Cache, opts: &EntryOptions, id: u64) -> Item {
    let r: Result<Item, std::convert::Infallible> = cache
        .get_or_load(&format!("item:{id}"), opts, move || async move {
            Ok(make_item(id))
        })
        .await;
    match r {
        Ok(i) => i,
    }
}

/// [`item`] by hand: `GET`, decode; on a miss build, encode, `SET .. EX`.
async fn item_hand(conn: &ConnectionManager, prefix: &str, id: u64) -> Item {
    let key = format!("{prefix}:item:{id}");
    let mut conn = conn.clone();
    if let Ok(Some(bytes)) = redis::cmd("GET")
        .arg(&key)
        .query_async::<Option<Vec<u8>>>(&mut conn)
        .await
        && let Ok(item) = serde_json::from_slice::<Item>(&bytes)
    {
        HAND_HITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return item;
    }
    let item = make_item(id);
    let bytes = serde_json::to_vec(&item).expect("encode");
    let _: Result<(), _> = redis::cmd("SET")
        .arg(&key)
        .arg(bytes)
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await;
    item
}

static HAND_HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cached(
    key = "item-near:{id}",
    ttl = 3600,
    local_ttl = 3600,
    cache = cache,
    name = "hit_cost.near"
)]
async fn item_near(cache: &Cache, id: u64) -> Item {
    item(cache, id).await
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("N must be a count: {e}"))?,
        None => 10_000,
    };
    tracing_subscriber::fmt().with_env_filter("info").init();
    #[cfg(feature = "metrics")]
    metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cache = match std::env::args().nth(2) {
            Some(url) => {
                Cache::builder()
                    .redis(url)
                    .namespace(format!("hit-cost.{}", std::process::id()))
                    .require_connection()
                    .build()
                    .await?
            }
            None => Cache::builder().memory().build().await?,
        };
        let mode = std::env::args().nth(3).unwrap_or_default();
        let near = mode == "near";
        let mut sum = 0;
        if mode == "api" {
            let opts = EntryOptions::new(Duration::from_secs(3600)).name("hit_cost.api");
            sum += item_api(&cache, &opts, 1).await.id;
            for _ in 0..n {
                sum += item_api(&cache, &opts, 1).await.id;
            }
        } else if mode == "hand" {
            let url = std::env::args().nth(2).ok_or("hand needs a Redis URL")?;
            // The bench's hand-written variant's connection settings.
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(Duration::from_millis(500)))
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let conn =
                ConnectionManager::new_with_config(redis::Client::open(url.as_str())?, config)
                    .await?;
            let prefix = format!("hit-cost.{}", std::process::id());
            sum += item_hand(&conn, &prefix, 1).await.id;
            for _ in 0..n {
                sum += item_hand(&conn, &prefix, 1).await.id;
            }
        } else if near {
            // Until the copy is kept (the first Redis hit's copy may be evicted by the push of
            // the fill).
            while cache.stats().function("hit_cost.near").local_hits < 3 {
                sum += item_near(&cache, 1).await.id;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            for _ in 0..n {
                sum += item_near(&cache, 1).await.id;
            }
        } else {
            sum += item(&cache, 1).await.id;
            for _ in 0..n {
                sum += item(&cache, 1).await.id;
            }
        }
        let s = cache.stats();
        let hits = s.function("hit_cost.item").hits
            + s.function("hit_cost.near").local_hits
            + s.function("hit_cost.api").hits
            + HAND_HITS.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "metrics feature: {}; backend {}; hits: {hits}; sum {sum}",
            cfg!(feature = "metrics"),
            cache.backend_kind()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
