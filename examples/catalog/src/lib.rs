//! A small product-catalog HTTP service: axum in front, SQLite (through `sqlx`) behind, and
//! `#[cached]` / `#[invalidates]` on the service methods in between.
//!
//! | route | what |
//! |---|---|
//! | `GET /products/{id}` | one product (`404` when there is none; the "not found" is cached too) |
//! | `GET /categories/{name}/products` | the products of a category (`404` for an unknown category, cached as a negative entry) |
//! | `PUT /products/{id}/price` | body `{"price_cents": 1299}`: writes the price, then deletes the product's key and its category's list key, so the next read is fresh |
//! | `GET /stats` | the cache counters per function, as JSON |
//! | `GET /metrics` | the same counters and the load-duration histogram in the Prometheus text format (`cache_hits_total{fn="catalog.product"}`, ...), from the runtime's `metrics` feature |
//! | `GET /policy` | the cache-policy table (`cache_runtime::policies().report()`, Markdown) of this service |
//!
//! The database is an in-memory SQLite database created and seeded by [`Catalog::open`]:
//! nothing to set up. `src/main.rs` runs the service; `tests/catalog_service.rs`
//! drives it over HTTP on both cache backends.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cache_runtime::Cache;
//!
//! let cache = Cache::builder().memory().namespace("catalog").build().await?;
//! let router = catalog::router(cache).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, router).await?;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use cache_runtime::{Cache, Stats, cached, invalidates};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tracing::{debug, error, info};

/// Stats name of [`Catalog::product`].
pub const PRODUCT_FN: &str = "catalog.product";
/// Stats name of [`Catalog::category_products`].
pub const CATEGORY_FN: &str = "catalog.category_products";
/// Stats name of the invalidating write behind [`Catalog::update_price`].
pub const WRITE_PRICE_FN: &str = "catalog.write_price";

/// A product row (also the cached value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// The category's name (a row of the `categories` table).
    pub category: String,
    /// Price in cents (integers: no rounding surprises).
    pub price_cents: i64,
}

/// Body of `PUT /products/{id}/price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceUpdate {
    /// The new price in cents; must not be negative.
    pub price_cents: i64,
}

/// What `GET /stats` returns.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    /// `"memory"` or `"redis"`.
    pub backend: &'static str,
    /// The cache's key prefix.
    pub namespace: String,
    /// Counters by function name ([`PRODUCT_FN`], [`CATEGORY_FN`], [`WRITE_PRICE_FN`]).
    pub functions: Stats,
}

const SCHEMA: &str = "
CREATE TABLE categories (
    name TEXT PRIMARY KEY NOT NULL
);
CREATE TABLE products (
    id          INTEGER PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL,
    category    TEXT    NOT NULL REFERENCES categories(name),
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0)
);
CREATE INDEX products_by_category ON products(category);
";

/// Seed data: `(category, [(name, price_cents)])`. `garden` exists but is empty (an empty
/// list, not a 404).
const SEED: &[(&str, &[(&str, i64)])] = &[
    (
        "books",
        &[
            ("The Rust Programming Language", 3999),
            ("Designing Data-Intensive Applications", 4599),
            ("Site Reliability Engineering", 3450),
        ],
    ),
    (
        "games",
        &[
            ("Chess set", 2500),
            ("Go board", 5900),
            ("Playing cards", 499),
        ],
    ),
    (
        "tools",
        &[
            ("Screwdriver", 899),
            ("Hammer", 1599),
            ("Tape measure", 1250),
        ],
    ),
    ("garden", &[]),
];

/// The service: a database and the cache in front of it.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: SqlitePool,
    cache: Cache,
}

impl Catalog {
    /// Creates a private in-memory SQLite database, creates the schema and seeds it.
    ///
    /// The pool holds exactly one connection that never expires: an in-memory SQLite
    /// database lives as long as its connection.
    pub async fn open(cache: Cache) -> Result<Catalog, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        let db = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&db).await?;
        let mut tx = db.begin().await?;
        for (category, products) in SEED {
            sqlx::query("INSERT INTO categories (name) VALUES (?)")
                .bind(category)
                .execute(&mut *tx)
                .await?;
            for (name, price) in products.iter() {
                sqlx::query("INSERT INTO products (name, category, price_cents) VALUES (?, ?, ?)")
                    .bind(name)
                    .bind(category)
                    .bind(price)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        info!(
            products = SEED.iter().map(|(_, p)| p.len()).sum::<usize>(),
            categories = SEED.len(),
            "catalog database created and seeded"
        );
        Ok(Catalog { db, cache })
    }

    /// The cache in front of the database.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// One product by id; `Ok(None)` (cached for a minute) when there is none.
    #[cached(
        key = "product:{id}",
        ttl = 300,
        jitter = 30,
        negative_ttl = 60,
        cache = self.cache,
        name = "catalog.product"
    )]
    pub async fn product(&self, id: i64) -> Result<Option<Product>, sqlx::Error> {
        debug!(id, "db: select product");
        sqlx::query_as::<_, Product>(
            "SELECT id, name, category, price_cents FROM products WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.db)
        .await
    }

    /// The products of a category, by id; `Ok(None)` for an unknown category (a negative
    /// entry, so a flood of requests for a category that does not exist stays off the
    /// database). An existing empty category is `Ok(Some(vec![]))`.
    #[cached(
        key = "category:{name}:products",
        ttl = 120,
        jitter = 10,
        negative_ttl = 30,
        cache = self.cache,
        name = "catalog.category_products"
    )]
    pub async fn category_products(&self, name: &str) -> Result<Option<Vec<Product>>, sqlx::Error> {
        debug!(category = name, "db: select category products");
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM categories WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.db)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let products = sqlx::query_as::<_, Product>(
            "SELECT id, name, category, price_cents FROM products WHERE category = ? ORDER BY id",
        )
        .bind(name)
        .fetch_all(&self.db)
        .await?;
        Ok(Some(products))
    }

    /// Sets a product's price; `Ok(None)` when the product does not exist.
    ///
    /// Two cached entries show the price: the product and its category's list. The category
    /// is read from the database first (never from the cache), then the write runs under
    /// `#[invalidates]` with both keys, so both are deleted once it succeeded.
    pub async fn update_price(
        &self,
        id: i64,
        price_cents: i64,
    ) -> Result<Option<Product>, sqlx::Error> {
        let category: Option<String> =
            sqlx::query_scalar("SELECT category FROM products WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.db)
                .await?;
        match category {
            Some(category) => self.write_price(id, &category, price_cents).await,
            None => Ok(None),
        }
    }

    /// The write itself; on `Ok` the product key and the category list key are deleted.
    #[invalidates(
        "product:{id}",
        "category:{category}:products",
        cache = self.cache,
        name = "catalog.write_price"
    )]
    async fn write_price(
        &self,
        id: i64,
        category: &str,
        price_cents: i64,
    ) -> Result<Option<Product>, sqlx::Error> {
        debug!(id, category, price_cents, "db: update price");
        sqlx::query_as::<_, Product>(
            "UPDATE products SET price_cents = ? WHERE id = ? AND category = ? \
             RETURNING id, name, category, price_cents",
        )
        .bind(price_cents)
        .bind(id)
        .bind(category)
        .fetch_optional(&self.db)
        .await
    }

    /// The cache counters, for `GET /stats`.
    pub fn stats(&self) -> StatsReport {
        StatsReport {
            backend: self.cache.backend_kind(),
            namespace: self.cache.namespace().to_owned(),
            functions: self.cache.stats(),
        }
    }
}

/// An error response: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn not_found(message: String) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        error!(error = %e, "database error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "database error".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

type AppState = Arc<Catalog>;

async fn get_product(
    State(catalog): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Product>, ApiError> {
    match catalog.product(id).await? {
        Some(p) => Ok(Json(p)),
        None => Err(ApiError::not_found(format!("no product {id}"))),
    }
}

async fn get_category_products(
    State(catalog): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Product>>, ApiError> {
    match catalog.category_products(&name).await? {
        Some(list) => Ok(Json(list)),
        None => Err(ApiError::not_found(format!("no category {name:?}"))),
    }
}

async fn put_price(
    State(catalog): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<PriceUpdate>,
) -> Result<Json<Product>, ApiError> {
    if body.price_cents < 0 {
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "price_cents must not be negative".into(),
        });
    }
    match catalog.update_price(id, body.price_cents).await? {
        Some(p) => {
            info!(id, price_cents = p.price_cents, "price updated");
            Ok(Json(p))
        }
        None => Err(ApiError::not_found(format!("no product {id}"))),
    }
}

async fn get_stats(State(catalog): State<AppState>) -> Json<StatsReport> {
    Json(catalog.stats())
}

/// The process's Prometheus recorder, installed as the `metrics` facade's global recorder on
/// first use. [`routes`] calls it, so it is in place before the first cached call registers
/// its counters (handles registered before a recorder exists stay no-ops).
///
/// `None` when another recorder was installed first (the embedding program then owns the
/// metrics, and `GET /metrics` answers `404`).
pub fn metrics_handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "GET /metrics disabled: a metrics recorder is already installed");
                None
            }
        })
        .as_ref()
}

async fn get_metrics() -> Response {
    match metrics_handle() {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => {
            ApiError::not_found("no metrics recorder of this service".to_string()).into_response()
        }
    }
}

/// This service's cache-policy table: every `#[cached]` / `#[invalidates]` of this crate
/// (`cache_runtime::policies().in_module("catalog")`), as Markdown.
pub fn policy_report() -> String {
    cache_runtime::policies().in_module("catalog").report()
}

async fn get_policy() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        policy_report(),
    )
        .into_response()
}

/// Logs one line per request: method, path, status and duration.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    info!(
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// The routes over an existing [`Catalog`].
pub fn routes(catalog: Arc<Catalog>) -> Router {
    let _ = metrics_handle();
    Router::new()
        .route("/products/{id}", get(get_product))
        .route("/products/{id}/price", put(put_price))
        .route("/categories/{name}/products", get(get_category_products))
        .route("/stats", get(get_stats))
        .route("/metrics", get(get_metrics))
        .route("/policy", get(get_policy))
        .layer(middleware::from_fn(log_request))
        .with_state(catalog)
}

/// Opens (creates and seeds) the database and returns the service's router, ready for
/// `axum::serve`.
pub async fn router(cache: Cache) -> Result<Router, sqlx::Error> {
    Ok(routes(Arc::new(Catalog::open(cache).await?)))
}
