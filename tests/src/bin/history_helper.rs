//! One process of the cross-process history run (`tests/tests/history/main.rs`).
//!
//! Usage: `history-helper <cache-url> <db-url> <namespace> <seed> <process-index>
//! <start-unix-ms> <duration-ms> <history-ms> <never|always|odd> <processes> [near:<quiet-ms>]`
//!
//! With `near:<quiet-ms>` it runs the near-cache workload (`local_ttl` readers, marker writes,
//! marker pushes logged; writers quiet for the last `quiet-ms` of each history).
//!
//! Builds one Redis-backed `Cache` on `<cache-url>` (the cache server) and runs the
//! [`cache_tests::history`] workload against the "database" on `<db-url>` (row versions and the
//! logical clock are `INCR`s there), starting when the wall clock reaches `start-unix-ms` so that
//! all processes run their histories side by side. Prints its history as JSON lines
//! ([`cache_tests::history::Record`]) on stdout, ending with its cache counters.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::Cache;
use cache_tests::history::{self, Cancel, Counts, Db, Record, Workload};
use cache_tests::unix_ms;

fn usage() -> ! {
    eprintln!(
        "usage: history-helper <cache-url> <db-url> <namespace> <seed> <process-index> \
         <start-unix-ms> <duration-ms> <history-ms> <never|always|odd> <processes> \
         [near:<quiet-ms>]"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 10 && args.len() != 11 {
        usage();
    }
    let cancel = match args[8].as_str() {
        "never" => Cancel::Never,
        "always" => Cancel::Always,
        "odd" => Cancel::OddHistories,
        _ => usage(),
    };
    let seed: u64 = arg(&args[3]);
    let cache_base: u32 = arg(&args[4]);
    let processes: u32 = arg(&args[9]);
    let duration = Duration::from_millis(arg(&args[6]));
    let mut work = Workload::new(seed, duration, cancel, 6, 2, processes);
    work.cache_base = cache_base;
    work.history_ms = arg(&args[7]);
    if let Some(near) = args.get(10) {
        let quiet = near.strip_prefix("near:").unwrap_or_else(|| usage());
        work.quiet_tail_ms = arg(quiet);
        work.fresh_share = 0.0;
        work.near_markers = Some(args[0].clone());
    }
    let start_at: u64 = arg(&args[5]);
    let cache = Cache::builder()
        .redis(args[0].clone())
        .namespace(args[2].clone())
        .xfetch_seed(history::xfetch_seed(seed, cache_base))
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap_or_else(|e| panic!("building the cache failed: {e:?}"));
    let db = Db::redis(&args[1]).await;
    let log = Arc::new(Mutex::new(Vec::new()));

    let now = unix_ms();
    if start_at > now {
        tokio::time::sleep(Duration::from_millis(start_at - now)).await;
    }
    history::run(&work, std::slice::from_ref(&cache), &db, &log).await;

    let mut records = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
    records.push(Record::Counts(Counts::of(&cache)));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in &records {
        serde_json::to_writer(&mut out, r).expect("serializable record");
        out.write_all(b"\n").expect("write stdout");
    }
    out.flush().expect("flush stdout");
}
