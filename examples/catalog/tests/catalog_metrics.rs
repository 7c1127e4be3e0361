//! `GET /metrics` (the runtime's `metrics` feature through `metrics-exporter-prometheus`) and
//! `GET /policy`, scraped over HTTP after a known sequence of calls. One test in this binary:
//! the Prometheus recorder is process-wide.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use cache_runtime::Cache;
use catalog::{PRODUCT_FN, WRITE_PRICE_FN};
use reqwest::StatusCode;

async fn start(cache: Cache) -> (String, tokio::task::JoinHandle<()>) {
    let router = catalog::router(cache).await.expect("database set-up");
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    (format!("http://{addr}"), task)
}

/// `name{labels} value` lines of a Prometheus text page, by `name{labels}`.
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_policy_pages_after_known_calls() {
    let cache = Cache::builder()
        .memory()
        .namespace("catalog-metrics")
        .build()
        .await
        .expect("memory cache");
    let (base, task) = start(cache).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    // product 1: a miss (load), then a hit; product 999: a miss (load of "not found"), then a
    // negative hit; the price write deletes two keys; product 1 again: a miss (load).
    assert_eq!(get("/products/1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/products/1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get("/products/999").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/products/999").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let put = http
        .put(format!("{base}/products/1/price"))
        .json(&serde_json::json!({ "price_cents": 4321 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(get("/products/1").await.unwrap().status(), StatusCode::OK);

    let resp = get("/metrics").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let page = resp.text().await.unwrap();
    println!("{page}");
    let s = samples(&page);
    let at = |metric: &str, function: &str| {
        let series = format!("{metric}{{fn=\"{function}\"}}");
        *s.get(&series)
            .unwrap_or_else(|| panic!("no {series} in GET /metrics:\n{page}"))
    };
    assert_eq!(at("cache_hits_total", PRODUCT_FN), 1.0);
    assert_eq!(at("cache_negative_hits_total", PRODUCT_FN), 1.0);
    assert_eq!(at("cache_misses_total", PRODUCT_FN), 3.0);
    assert_eq!(at("cache_loads_total", PRODUCT_FN), 3.0);
    assert_eq!(at("cache_load_errors_total", PRODUCT_FN), 0.0);
    assert_eq!(at("cache_backend_errors_total", PRODUCT_FN), 0.0);
    assert_eq!(at("cache_invalidations_total", WRITE_PRICE_FN), 2.0);
    // The load-duration histogram (rendered as a summary): one observation per load.
    assert_eq!(at("cache_load_seconds_count", PRODUCT_FN), 3.0);
    assert!(at("cache_load_seconds_sum", PRODUCT_FN) > 0.0);

    let resp = get("/policy").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let report = resp.text().await.unwrap();
    println!("{report}");
    assert_eq!(report, catalog::policy_report());
    assert!(
        report.contains("| `catalog.product` | `product:{id}` | 300 s | 30 s | 60 s |"),
        "{report}"
    );
    task.abort();
}
