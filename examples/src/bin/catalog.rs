//! The product-catalog service (see `examples::catalog`).
//!
//! ```text
//! cargo run -p examples --bin catalog                                          # in-memory cache, port 3000
//! PORT=8080 REDIS_URL=redis://127.0.0.1:6379 cargo run -p examples --bin catalog   # Redis
//!
//! curl -s localhost:3000/products/1
//! curl -s localhost:3000/categories/books/products
//! curl -s -X PUT localhost:3000/products/1/price -H 'content-type: application/json' -d '{"price_cents": 2999}'
//! curl -s localhost:3000/stats
//! ```
//!
//! Listens on `127.0.0.1:$PORT` (default 3000). Logs with `tracing`; set `RUST_LOG` (default
//! `info`; `RUST_LOG=debug` also shows cache misses, loads and database queries).

use std::net::{Ipv4Addr, SocketAddr};

use cache_runtime::Cache;
use tracing::info;

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

    let router = examples::catalog::router(cache).await?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "catalog service listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            info!("shutting down");
        })
        .await?;
    Ok(())
}
