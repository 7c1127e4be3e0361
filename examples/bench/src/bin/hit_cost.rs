//! `hit-cost N [REDIS-URL [near]]`: N hits of one `#[cached]` function on the memory backend (a
//! 1 KB value), or with a URL on that Redis server (the Redis hit path: one `GET` per call), or
//! with `near` of a `local_ttl` function there (near-cache hits), on a current-thread runtime, with a `tracing` fmt subscriber at `info` (as a service would run)
//! and, when built with `--features metrics`, the runtime's `metrics` feature and a Prometheus
//! recorder installed. Run under `valgrind --tool=callgrind` for N and 2N: the difference of
//! the instruction counts divided by N is the instructions of one hit, without start-up.
//! `scripts/hit-cost.sh` does that for both builds and prints the table; `scripts/hit-cost.sh
//! --redis` counts the Redis hit path (client side only) against a private `redis-server`.

use cache_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    tags: Vec<String>,
    body: String,
}

#[cached(key = "item:{id}", ttl = 3600, cache = cache, name = "hit_cost.item")]
async fn item(cache: &Cache, id: u64) -> Item {
    Item {
        id,
        name: format!("item {id}"),
        tags: vec!["a".into(), "b".into()],
        body: "x".repeat(900),
    }
}

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
        let near = std::env::args().nth(3).is_some_and(|a| a == "near");
        let mut sum = 0;
        if near {
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
        let hits = s.function("hit_cost.item").hits + s.function("hit_cost.near").local_hits;
        println!(
            "metrics feature: {}; backend {}; hits: {hits}; sum {sum}",
            cfg!(feature = "metrics"),
            cache.backend_kind()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
