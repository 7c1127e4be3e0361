//! The `catalog` binary stops cleanly on SIGTERM: a price changed while Redis was unreachable
//! (its invalidation queued) leaves no stale entry behind once the process has exited.

use std::process::Stdio;
use std::time::Duration;

use cache_tests::{Proxy, RedisServer, eventually, guard, reserve_free_port};
use catalog::WRITE_PRICE_FN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_queued_invalidations_before_exit() {
    let server = RedisServer::start();
    let raw = server.raw().await;
    let proxy = Proxy::start(server.port()).await;
    let port = reserve_free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = cache_tests::scratch_dir().join("catalog.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalog"))
        .env("PORT", port.to_string())
        .env("REDIS_URL", proxy.url())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the catalog binary");
    let http = reqwest::Client::new();

    eventually("the service answers", Duration::from_secs(60), || async {
        matches!(http.get(format!("{base}/products/1")).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    let key = "catalog:product:1";
    assert!(raw.exists(key).await, "product 1 is cached");

    proxy.cut();
    let put = http
        .put(format!("{base}/products/1/price"))
        .json(&serde_json::json!({ "price_cents": 2999 }))
        .send()
        .await
        .expect("PUT");
    assert!(put.status().is_success(), "{}", put.status());
    let stats: serde_json::Value = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        stats["functions"][WRITE_PRICE_FN]["invalidations_pending"], 2,
        "the product and category keys wait in the queue: {stats}"
    );
    assert!(raw.exists(key).await, "the stale entry is still in Redis");

    proxy.heal();
    let pid = child.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = guard("the service exits after SIGTERM", child.wait())
        .await
        .expect("wait");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}\n{output}");
    assert!(
        output.contains("cache shut down") && !output.contains("may stay stale"),
        "{output}"
    );
    assert!(!raw.exists(key).await, "no stale entry is left behind");
    let _ = std::fs::remove_dir_all(log.parent().expect("dir"));
}
