//! Drives the catalog service (the `catalog` library, `src/lib.rs`) over HTTP, on the in-memory
//! cache and on a private `redis-server` started by the test: read, update the price, read again
//! and see the new price; the cache counters move exactly as expected.

use std::net::{Ipv4Addr, SocketAddr};

use cache_runtime::Cache;
use cache_tests::RedisServer;
use catalog::{CATEGORY_FN, PRODUCT_FN, PriceUpdate, Product, WRITE_PRICE_FN};
use reqwest::StatusCode;
use serde_json::Value;

/// The service running on a free loopback port; aborted on drop.
struct Service {
    base: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Service {
    async fn start(cache: Cache) -> Service {
        let router = catalog::router(cache).await.expect("database set-up");
        // Port 0: the kernel picks a free port and we keep the bound socket (no race).
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("bind a free port");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Service {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            task,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status();
        (status, resp.json().await.expect("JSON body"))
    }

    async fn product(&self, id: i64) -> Product {
        let (status, body) = self.get(&format!("/products/{id}")).await;
        assert_eq!(status, StatusCode::OK, "GET /products/{id}: {body}");
        serde_json::from_value(body).expect("a product")
    }

    async fn category(&self, name: &str) -> Vec<Product> {
        let (status, body) = self.get(&format!("/categories/{name}/products")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "GET /categories/{name}/products: {body}"
        );
        serde_json::from_value(body).expect("a product list")
    }

    async fn put_price(&self, id: i64, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .put(format!("{}/products/{id}/price", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT /products/{id}/price: {e}"));
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The counters of one function from `GET /stats`.
    async fn counters(&self, function: &str) -> Counters {
        let (status, body) = self.get("/stats").await;
        assert_eq!(status, StatusCode::OK);
        let f = &body["functions"][function];
        let n = |field: &str| f[field].as_u64().unwrap_or(0);
        Counters {
            hits: n("hits"),
            negative_hits: n("negative_hits"),
            misses: n("misses"),
            loads: n("loads"),
            invalidations: n("invalidations"),
            backend_errors: n("backend_errors"),
        }
    }
}

/// The counters this test checks (the runtime may report more).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    hits: u64,
    negative_hits: u64,
    misses: u64,
    loads: u64,
    invalidations: u64,
    backend_errors: u64,
}

fn c(hits: u64, negative_hits: u64, misses: u64, loads: u64) -> Counters {
    Counters {
        hits,
        negative_hits,
        misses,
        loads,
        ..Counters::default()
    }
}

async fn scenario(cache: Cache, backend: &str) {
    let svc = Service::start(cache).await;

    let (status, stats) = svc.get("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["backend"], backend);

    // Read twice: a miss that loads, then a hit.
    let first = svc.product(1).await;
    assert_eq!(first.category, "books");
    assert_eq!(svc.counters(PRODUCT_FN).await, c(0, 0, 1, 1));
    assert_eq!(svc.product(1).await, first);
    assert_eq!(svc.counters(PRODUCT_FN).await, c(1, 0, 1, 1));

    // The category list, twice.
    let books = svc.category("books").await;
    assert_eq!(books.len(), 3);
    assert_eq!(books[0], first);
    assert_eq!(svc.category("books").await, books);
    assert_eq!(svc.counters(CATEGORY_FN).await, c(1, 0, 1, 1));

    // Update the price: both keys are deleted after the write succeeded.
    let new_price = first.price_cents + 1000;
    let (status, body) = svc
        .put_price(
            1,
            &serde_json::json!(PriceUpdate {
                price_cents: new_price
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["price_cents"], new_price);
    let w = svc.counters(WRITE_PRICE_FN).await;
    assert_eq!((w.invalidations, w.backend_errors), (2, 0));

    // The next reads are fresh: one miss and one load each, and they show the new price.
    let after = svc.product(1).await;
    assert_eq!(after.price_cents, new_price);
    assert_eq!(svc.counters(PRODUCT_FN).await, c(1, 0, 2, 2));
    let books_after = svc.category("books").await;
    assert_eq!(books_after[0].price_cents, new_price);
    assert_eq!(books_after[1..], books[1..]);
    assert_eq!(svc.counters(CATEGORY_FN).await, c(1, 0, 2, 2));
    // ... and are cached again.
    assert_eq!(svc.product(1).await, after);
    assert_eq!(svc.category("books").await, books_after);
    assert_eq!(svc.counters(PRODUCT_FN).await, c(2, 0, 2, 2));
    assert_eq!(svc.counters(CATEGORY_FN).await, c(2, 0, 2, 2));

    // Another product in the same category was not touched: its first read is a plain miss.
    assert_eq!(svc.product(2).await, books[1]);
    assert_eq!(svc.counters(PRODUCT_FN).await, c(2, 0, 3, 3));

    // Negative caching: an unknown category is a 404, the second one a negative hit.
    for _ in 0..2 {
        let (status, body) = svc.get("/categories/no-such-thing/products").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    assert_eq!(svc.counters(CATEGORY_FN).await, c(2, 1, 3, 3));
    // An existing empty category is an empty list, not a 404.
    assert_eq!(svc.category("garden").await, Vec::<Product>::new());
    assert_eq!(svc.counters(CATEGORY_FN).await, c(2, 1, 4, 4));

    // The same for an unknown product id.
    for _ in 0..2 {
        let (status, _) = svc.get("/products/9999").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(svc.counters(PRODUCT_FN).await, c(2, 1, 4, 4));

    // Rejected writes change nothing and invalidate nothing.
    let (status, _) = svc
        .put_price(9999, &serde_json::json!({ "price_cents": 1 }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = svc
        .put_price(1, &serde_json::json!({ "price_cents": -5 }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = svc
        .put_price(1, &serde_json::json!({ "price": "free" }))
        .await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(svc.counters(WRITE_PRICE_FN).await.invalidations, 2);
    assert_eq!(svc.product(1).await.price_cents, new_price);
    assert_eq!(svc.counters(PRODUCT_FN).await, c(3, 1, 4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_update_read_on_memory_cache() {
    let cache = Cache::builder()
        .memory()
        .namespace("catalog-test")
        .build()
        .await
        .expect("memory cache");
    scenario(cache, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_update_read_on_redis() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis(server.url())
        .namespace("catalog-test")
        .build()
        .await
        .expect("redis cache");
    scenario(cache, "redis").await;
    // The entries really are in this server.
    let raw = server.raw().await;
    assert!(raw.exists("catalog-test:product:1").await);
    assert!(raw.exists("catalog-test:category:books:products").await);
}
