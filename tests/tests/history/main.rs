//! Jepsen-style randomized history checker (see [`cache_tests::history`] for the model and the
//! checks): readers and writers on a few rows through several caches, some calls cancelled,
//! optionally Redis faults (pause / kill + restart); every operation is stamped with a global
//! logical clock, and the merged history is checked for
//! (a) freshness: a read that starts after a write completed returns that write's version or a
//!     newer one, and
//! (b) one load per (row, generation) across all caches, in histories without cancellations or
//!     faults.
//!
//! Each test runs about 3 s of workload; `CHECKER_SECONDS=<secs>` runs longer and
//! `CHECKER_SEED=<u64>` replays a seed (printed with the figures and on failure).
//! The figures are printed on stderr (`-- --nocapture` to see them for passing tests).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::Cache;
use cache_tests::history::{self, Cancel, Counts, Db, Func, Log, Record, Report, Workload};
use cache_tests::{RedisServer, guard_for, unix_ms};
use tokio::time::Instant;

const DEFAULT_SECONDS: f64 = 3.0;
const HISTORY_MS: u64 = 120;
const CACHES: usize = 3;

fn workload(seed: u64, cancel: Cancel, readers: u32, writers: u32, caches: usize) -> Workload {
    let duration = history::duration_from_env(DEFAULT_SECONDS);
    let mut work = Workload::new(seed, duration, cancel, readers, writers, caches as u32);
    work.history_ms = HISTORY_MS;
    work
}

/// Runs `work` in this process on `caches`, with faults injected into `faults` (the caches'
/// server) when given, then checks the history and prints the figures.
async fn run_in_process(
    test: &str,
    work: &Workload,
    caches: &[Cache],
    faults: Option<(RedisServer, Duration)>,
) -> Report {
    let db = Db::local();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let injector = faults.map(|(server, around)| {
        tokio::spawn(history::inject_faults(
            server,
            db.clone(),
            log.clone(),
            work.seed,
            around,
            Instant::now() + work.duration,
        ))
    });
    let histories = guard_for(
        "the history workload",
        work.duration,
        history::run(work, caches, &db, &log),
    )
    .await;
    // Keep the server alive (and running) until the end of the check.
    let _server = match injector {
        Some(task) => Some(
            guard_for("the fault injector", work.duration, task)
                .await
                .expect("fault task"),
        ),
        None => None,
    };
    let mut records = std::mem::take(&mut *log.lock().unwrap());
    records.extend(caches.iter().map(|c| Record::Counts(Counts::of(c))));
    let report = history::check(&records);
    eprintln!(
        "{} (histories run: {histories})\n{}",
        report.figures(test, caches[0].backend_kind(), work.seed),
        report.table_row(test)
    );
    report
}

async fn redis_caches(server: &RedisServer, n: usize, faulty: bool, seed: u64) -> Vec<Cache> {
    let mut caches = Vec::new();
    for i in 0..n {
        let mut b = Cache::builder()
            .redis(server.url())
            .namespace("hist")
            .xfetch_seed(history::xfetch_seed(seed, i as u32));
        b = if faulty {
            b.command_timeout(Duration::from_millis(200))
                .connect_timeout(Duration::from_millis(200))
                .circuit_breaker(2, Duration::from_millis(100))
        } else {
            // No faults: a generous timeout, so that a slow CI machine causes no backend errors.
            b.command_timeout(Duration::from_secs(2))
        };
        caches.push(b.build().await.expect("redis cache"));
    }
    caches
}

async fn memory_cache(seed: u64) -> Cache {
    Cache::builder()
        .memory()
        .xfetch_seed(history::xfetch_seed(seed, 0))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_history_no_faults() {
    let seed = history::seed_from_env();
    let cache = memory_cache(seed).await;
    let work = workload(seed, Cancel::Never, 16, 4, 1);
    let report = run_in_process("memory_history_no_faults", &work, &[cache], None).await;
    report.assert_ok("memory_history_no_faults", "memory", seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_history_with_cancellations() {
    let seed = history::seed_from_env();
    let cache = memory_cache(seed).await;
    let work = workload(seed, Cancel::Always, 16, 4, 1);
    let test = "memory_history_with_cancellations";
    let report = run_in_process(test, &work, &[cache], None).await;
    report.assert_ok(test, "memory", seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_history_three_caches() {
    let seed = history::seed_from_env();
    let server = RedisServer::start();
    let caches = redis_caches(&server, CACHES, false, seed).await;
    let work = workload(seed, Cancel::OddHistories, 6, 2, CACHES);
    let test = "redis_history_three_caches";
    let report = run_in_process(test, &work, &caches, None).await;
    report.assert_ok(test, "redis", seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_history_with_faults() {
    let seed = history::seed_from_env();
    let server = RedisServer::start();
    let caches = redis_caches(&server, CACHES, true, seed).await;
    let work = workload(seed, Cancel::OddHistories, 6, 2, CACHES);
    let test = "redis_history_with_faults";
    let report = run_in_process(
        test,
        &work,
        &caches,
        Some((server, Duration::from_millis(200))),
    )
    .await;
    assert!(report.faults > 0, "no fault was injected");
    report.assert_ok_with(test, "redis", seed, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_history_across_processes() {
    let test = "redis_history_across_processes";
    let (report, seed) = across_processes(test, false).await;
    report.assert_ok(test, "redis (3 processes)", seed);
}

/// The near-cache run (see [`redis_history_near_caches`]) across three OS processes: each
/// stamps the marker pushes it processed with the shared clock (an `INCR`, taken after the
/// push: the exact rule only gets weaker); the bound rule compares wall clocks, which all
/// processes read from the same system clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_history_near_across_processes() {
    let test = "redis_history_near_across_processes";
    let (report, seed) = across_processes(test, true).await;
    eprintln!("[{test}] {}", report.near_figures());
    report.assert_ok(test, "redis (3 processes, near caches)", seed);
    assert!(
        report.counts.local_hits > 0 && report.near_after_push > 0,
        "no near hit, or no read after a processed marker push: the run checked nothing"
    );
}

/// Runs the workload in three `history-helper` processes (with near caches when `near`) and
/// checks the merged history; returns the report and the seed.
async fn across_processes(test: &str, near: bool) -> (Report, u64) {
    let seed = history::seed_from_env();
    let cache_server = RedisServer::start();
    let db_server = RedisServer::start();
    let duration = history::duration_from_env(DEFAULT_SECONDS);
    // Start together: every helper waits until this wall-clock time (after its own start-up).
    let start_at = unix_ms() + 1_000;
    // The near run: histories twice as long, writes only in their first half.
    let (history_ms, near_arg) = if near {
        (2 * HISTORY_MS, vec![format!("near:{HISTORY_MS}")])
    } else {
        (HISTORY_MS, Vec::new())
    };
    let children: Vec<_> = (0..CACHES)
        .map(|p| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_history-helper"))
                .args([
                    cache_server.url(),
                    db_server.url(),
                    "hist".to_owned(),
                    seed.to_string(),
                    p.to_string(),
                    start_at.to_string(),
                    duration.as_millis().to_string(),
                    history_ms.to_string(),
                    "odd".to_owned(),
                    CACHES.to_string(),
                ])
                .args(&near_arg)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn history-helper")
        })
        .collect();
    let mut records = Vec::new();
    for child in children {
        let out = guard_for(
            "a history-helper process",
            duration,
            child.wait_with_output(),
        )
        .await
        .expect("wait for helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "helper failed ({}):\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            let record: Record = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad history line {line:?}: {e}"));
            records.push(record);
        }
    }
    let report = history::check(&records);
    eprintln!(
        "{}\n{}",
        report.figures(test, "redis (3 processes)", seed),
        report.table_row(test)
    );
    (report, seed)
}

/// Three caches (each with its own near cache and tracking connection, like three processes)
/// read the history rows through `local_ttl` functions. Checks (a') of `history::check`:
/// reads in the writer's own cache are strict; in another cache, a read that starts after
/// that cache processed the push of the write's marker (exact rule), or the bound
/// (`NEAR_BOUND_MS`, default `history::DEFAULT_NEAR_BOUND_MS`) after the write returned,
/// never sees older data; and (b) one load per generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_history_near_caches() {
    let seed = history::seed_from_env();
    let server = RedisServer::start();
    let caches = redis_caches(&server, CACHES, false, seed).await;
    let mut work = workload(seed, Cancel::OddHistories, 6, 2, CACHES);
    work.fresh_share = 0.0;
    work.near_markers = Some(server.url());
    // Longer histories whose last half has no writes: their reads are checked by the bound.
    work.history_ms = 2 * HISTORY_MS;
    work.quiet_tail_ms = HISTORY_MS;
    let test = "redis_history_near_caches";
    let report = run_in_process(test, &work, &caches, None).await;
    eprintln!("[{test}] {}", report.near_figures());
    report.assert_ok(test, "redis (near caches)", seed);
    assert!(
        report.counts.local_hits > 0 && report.near_reads > 0,
        "no near hit: the run checked nothing about the near cache"
    );
    assert!(
        report.pushes > 0 && report.near_after_push > 0,
        "no read came after a processed marker push: the exact rule checked nothing"
    );
}

/// The programmatic readers (`Cache::get_or_load` / `get_or_load_optional`) next to the
/// attribute readers on the same keys, and the `local_ttl` + `stale` readers (`#[cached]` and
/// programmatic), in process on the memory backend (where `local_ttl` is a pass-through).
/// Same checks as the other runs: a programmatic reader's loads count with its attribute
/// counterpart's (one key, one lease), and a `stale` reader may return an old value only
/// while no invalidation of its row has completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_history_api_readers() {
    let seed = history::seed_from_env();
    let cache = memory_cache(seed).await;
    let mut work = workload(seed, Cancel::OddHistories, 16, 4, 1);
    work.api_readers = true;
    let test = "memory_history_api_readers";
    let report = run_in_process(test, &work, &[cache], None).await;
    eprintln!("[{test}] {}", report.reader_figures());
    report.assert_ok(test, "memory", seed);
    assert_api_readers_ran(&report);
}

/// [`memory_history_api_readers`] on three Redis caches: the near `stale` readers of the
/// fresh rows (`read_rowgn`, `api.rowgn`) keep near copies, and a write in another cache
/// evicts them through an asynchronous `CLIENT TRACKING` push. Their reads are checked by the
/// near rules (a'): strict in the writer's own cache (the write evicts its process's copy
/// before it returns); in another cache by the bound rule (`NEAR_BOUND_MS` after the write
/// returned), since fresh writes set no marker for the exact rule. A stale value served from
/// the grace window is allowed only when no invalidation of its row completed before the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_history_api_readers() {
    let seed = history::seed_from_env();
    let server = RedisServer::start();
    let caches = redis_caches(&server, CACHES, false, seed).await;
    let mut work = workload(seed, Cancel::OddHistories, 6, 2, CACHES);
    work.api_readers = true;
    let test = "redis_history_api_readers";
    let report = run_in_process(test, &work, &caches, None).await;
    eprintln!("[{test}] {}", report.reader_figures());
    eprintln!("[{test}] {}", report.near_figures());
    report.assert_ok(test, "redis", seed);
    assert_api_readers_ran(&report);
}

/// [`redis_history_near_caches`] with programmatic `.local_ttl(..)` readers next to the
/// attribute ones on the same near keys: the exact (marker push) and bound rules apply to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_history_api_near_caches() {
    let seed = history::seed_from_env();
    let server = RedisServer::start();
    let caches = redis_caches(&server, CACHES, false, seed).await;
    let mut work = workload(seed, Cancel::OddHistories, 6, 2, CACHES);
    work.fresh_share = 0.0;
    work.near_markers = Some(server.url());
    work.history_ms = 2 * HISTORY_MS;
    work.quiet_tail_ms = HISTORY_MS;
    work.api_readers = true;
    let test = "redis_history_api_near_caches";
    let report = run_in_process(test, &work, &caches, None).await;
    eprintln!("[{test}] {}", report.reader_figures());
    eprintln!("[{test}] {}", report.near_figures());
    report.assert_ok(test, "redis (near caches)", seed);
    for f in [Func::ApiRowN, Func::ApiRowN0] {
        assert!(
            report.reads_by_func.get(&f).copied().unwrap_or(0) > 0,
            "no {} read",
            f.label()
        );
    }
    assert!(
        report.counts.local_hits > 0 && report.near_after_push > 0,
        "no near hit, or no read after a processed marker push: the run checked nothing"
    );
}

/// Every reader kind of an `api_readers` run with fresh rows completed reads.
fn assert_api_readers_ran(report: &Report) {
    for f in [
        Func::ApiRow,
        Func::ApiRow0,
        Func::ApiRowG,
        Func::ApiRowT,
        Func::ApiRowGN,
        Func::RowGN,
    ] {
        assert!(
            report.reads_by_func.get(&f).copied().unwrap_or(0) > 0,
            "no {} read: the run checked nothing about it",
            f.label()
        );
    }
}
