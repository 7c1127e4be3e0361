//! The product-catalog service (the library of this crate, `src/lib.rs`).
//!
//! ```text
//! cargo run -p catalog                                          # in-memory cache, port 3000
//! PORT=8080 REDIS_URL=redis://127.0.0.1:6379 cargo run -p catalog   # Redis
//!
//! curl -s localhost:3000/products/1
//! curl -s localhost:3000/categories/books/products
//! curl -s -X PUT localhost:3000/products/1/price -H 'content-type: application/json' -d '{"price_cents": 2999}'
//! curl -s localhost:3000/stats
//! curl -s localhost:3000/metrics     # Prometheus text format
//! curl -s localhost:3000/policy      # the cache-policy table, Markdown
//! ```
//!
//! At start-up it prints its cache-policy table (`catalog::policy_report()`) and logs every
//! problem `cache_runtime::policies().check()` finds in it.
//!
//! Listens on `127.0.0.1:$PORT` (default 3000). Logs with `tracing`; set `RUST_LOG` (default
//! `info`; `RUST_LOG=debug` also shows cache misses, loads and database queries).
//!
//! On Ctrl-C or SIGTERM it stops taking requests, lets the ones in flight finish, then delivers
//! the cache invalidations still queued after a Redis outage ([`Cache::shutdown`], up to 5 s)
//! before it exits, so that a price changed during the outage leaves no stale entry behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cache_runtime::Cache;
use tracing::{info, warn};

/// How long the cache may take to deliver its queued invalidations at shutdown.
const CACHE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();

    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT must be a port number, got {p:?}"))?,
        Err(_) => 3000,
    };
    let cache = match std::env::var("REDIS_URL") {
        Ok(url) => {
            Cache::builder()
                .redis(url)
                .namespace("catalog")
                .build()
                .await?
        }
        Err(_) => {
            Cache::builder()
                .memory()
                .namespace("catalog")
                .build()
                .await?
        }
    };
    info!(
        backend = cache.backend_kind(),
        namespace = cache.namespace(),
        "cache ready"
    );

    println!("{}", catalog::policy_report());
    for problem in cache_runtime::policies().in_module("catalog").check() {
        warn!(%problem, "cache policy");
    }
    let router = catalog::router(cache.clone()).await?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "catalog service listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(stop_signal())
        .await?;
    // No request runs any more: deliver what the cache still has to invalidate.
    match cache.shutdown(CACHE_SHUTDOWN_TIMEOUT).await {
        Ok(()) => info!("cache shut down"),
        Err(e) => warn!(error = %e, "cache shut down; some entries may stay stale until their TTL"),
    }
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what `docker stop` and Kubernetes send).
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("Ctrl-C: shutting down"),
        () = term => info!("SIGTERM: shutting down"),
    }
}
