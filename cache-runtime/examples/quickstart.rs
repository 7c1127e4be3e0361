//! The main example: hits, a stampede coalesced into one load, negative caching and
//! invalidation, printed step by step.
//!
//! Depends only on the library, tokio and serde (the dev-dependencies of `cache-runtime`), so a
//! first run compiles nothing else.
//!
//! ```text
//! cargo run -p cache-runtime --example quickstart                               # embedded in-memory cache
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p cache-runtime --example quickstart   # Redis
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize};

/// Counts how often the "database" is really queried.
static DB_QUERIES: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct DbError(&'static str);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DbError {}

/// A slow "database" lookup: users 1..=100 exist.
#[cached(
    key = "user:{id}",
    ttl = 300,
    jitter = 30,
    negative_ttl = 60,
    name = "get_user"
)]
async fn get_user(id: u64) -> Result<Option<User>, DbError> {
    DB_QUERIES.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok((1..=100).contains(&id).then(|| User {
        id,
        name: format!("user-{id}"),
    }))
}

/// A write that must make the next read fresh.
#[invalidates("user:{id}")]
async fn rename_user(id: u64, name: &str) -> Result<(), DbError> {
    DB_QUERIES.fetch_add(1, Ordering::SeqCst);
    if name.is_empty() {
        return Err(DbError("empty name"));
    }
    Ok(())
}

fn queries() -> usize {
    DB_QUERIES.load(Ordering::SeqCst)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let ns = format!("quickstart:{}", std::process::id());
            Cache::builder().redis(url).namespace(ns).build().await?
        }
        Err(_) => {
            Cache::builder()
                .memory()
                .namespace("quickstart")
                .build()
                .await?
        }
    };
    println!(
        "backend: {} (namespace {})",
        cache.backend_kind(),
        cache.namespace()
    );
    cache_runtime::install(cache.clone())?;

    let t = Instant::now();
    let u = get_user(7).await?;
    println!(
        "1. first call  get_user(7) -> {u:?} in {:?} (miss: loaded, db queries = {})",
        t.elapsed(),
        queries()
    );
    let t = Instant::now();
    let u = get_user(7).await?;
    println!(
        "2. second call get_user(7) -> {u:?} in {:?} (hit: db queries still {})",
        t.elapsed(),
        queries()
    );

    let before = queries();
    let t = Instant::now();
    let calls: Vec<_> = (0..100).map(|_| tokio::spawn(get_user(42))).collect();
    let mut ok = 0;
    for c in calls {
        if matches!(c.await?, Ok(Some(_))) {
            ok += 1;
        }
    }
    println!(
        "3. stampede: 100 concurrent get_user(42) on a cold key -> {ok} got the user, {} db query, {:?}",
        queries() - before,
        t.elapsed()
    );

    let before = queries();
    let first = get_user(999).await?;
    let second = get_user(999).await?;
    println!(
        "4. negative caching: get_user(999) -> {first:?}, again -> {second:?}; db queries for both: {}",
        queries() - before
    );

    let failed = rename_user(7, "").await;
    let before = queries();
    get_user(7).await?;
    println!(
        "5. failed write rename_user(7, \"\") -> {failed:?}: key kept, next read hit (db queries +{})",
        queries() - before
    );
    rename_user(7, "grace").await?;
    let before = queries();
    get_user(7).await?;
    println!(
        "6. rename_user(7, \"grace\") -> Ok: key deleted, next read reloads (db queries +{})",
        queries() - before
    );

    let s = cache.stats();
    let g = s.function("get_user");
    println!(
        "stats get_user: hits={} negative_hits={} misses={} loads={} lock_waits={}",
        g.hits, g.negative_hits, g.misses, g.loads, g.lock_waits
    );
    let r = s.function(concat!(module_path!(), "::rename_user"));
    println!("stats rename_user: invalidations={}", r.invalidations);
    // The library reports cache failures as `tracing` warnings; this example installs no
    // subscriber (it depends only on the library, tokio and serde), so it prints the counters.
    let t = s.total();
    if t.backend_errors + t.backend_skipped > 0 {
        println!(
            "cache backend failures: {} errors, {} calls skipped (circuit open); those calls went to the loader",
            t.backend_errors, t.backend_skipped
        );
    }
    Ok(())
}
