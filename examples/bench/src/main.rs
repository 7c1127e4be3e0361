//! Benchmark harness: `#[cached]` against a hand-written redis-rs cache-aside (same codec,
//! same server, same kind of connection) and against the `cached` crate, in one run with the
//! variants interleaved round by round.
//!
//! ```text
//! cargo run --release -p bench                                    # ~2 minutes; prints the table
//! cargo run --release -p bench -- --quick                         # a few seconds
//! cargo run --release -p bench -- --json target/bench.json --svg target/bench.svg
//! cargo run --release -p bench -- --svg docs/bench.svg            # redraw the README's chart
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p bench   # an existing server
//! cargo run --release -p bench --example cluster-hit              # hit path: cluster vs single
//! ```
//!
//! It writes files only when asked (`--json PATH`, `--svg PATH`): a run never touches the
//! repository's tracked files unless a path names one.
//!
//! Without `REDIS_URL` it starts its own `redis-server` (from `PATH`) on a free loopback port,
//! with no persistence, and kills it at the end. With `REDIS_URL` every key it writes is under
//! a `bench.<pid>` prefix and deleted at the end.
//!
//! Cases (the value is a ~1 KB struct: strings, a list of tags, nested structs):
//! * Redis hit path, 1 task and 64 tasks on one multi-thread runtime: `#[cached]` with JSON and
//!   with MessagePack; the hand-written cache-aside (`GET`, decode, on a miss load and
//!   `SET .. EX`) with the same two codecs over the same kind of connection (one
//!   `ConnectionManager`); the `cached` crate's `#[concurrent_cached]` on an `AsyncRedisCache`
//!   (MessagePack) over a `ConnectionManager`; and the programmatic API,
//!   `Cache::get_or_load` (MessagePack, the same value and TTL, options built once).
//! * Cold-key stampede: 64 concurrent callers, a 50 ms loader: loader runs and wall time.
//! * Memory backend hit path (ns/op).
//! * The freshness layer, on both backends: the hit path of a function with `stale = N` and
//!   `tags = [..]` against the same function without them (the plain `#[cached]` msgpack
//!   case); a grace-window hit (the entry past its `ttl`, its refresh running elsewhere and
//!   never finishing: every measured call is served stale, checked on `stale_served`) against
//!   a plain hit; and a steady hot key (16 tasks on one key, `ttl = 1`, a 20 ms loader) with
//!   and without XFetch (`early_refresh = 1.0`): the share of calls that waited for a loader.
//! * The near cache (`local_ttl`): a near hit of the value against a bare `moka` get + clone,
//!   and (64 tasks) against the Redis hit path; the same function returning `Arc<Item>`.
//! * Near-cache coherence across two OS processes (this binary started again with
//!   `--near-helper`): the delay from an `#[invalidates]` write returning here to the other
//!   process reading the new value, for 1 000 writes (see "Near-cache coherence" below).
//!
//! Each timed slice runs one case for a fixed time; a round runs every case once, in an order
//! that rotates from round to round, so a slow moment of the machine is spread over all cases.
//!
//! The code, in the order a run goes through it:
//! * [`cli`]: the flags; [`server`]: the Redis server (private or `REDIS_URL`) and cleanup.
//! * [`value`]: the cached value; [`cases`]: the variants ([`cases::redis`],
//!   [`cases::memory`], [`cases::near`], the hot key in [`cases::hot`]) and [`cases::call`].
//! * [`checks`]: the fill and the correctness checks around the hit path.
//! * [`measure`]: the hit path (timed slices, rounds) and the stampede; [`stats`]: the
//!   histogram and the median.
//! * [`coherence`]: near-cache coherence across two processes (`--near-helper`).
//! * [`report`]: the rows, the ratios and their targets, the printed tables, the JSON;
//!   [`chart`]: the SVG.

mod cases;
mod chart;
mod checks;
mod cli;
mod coherence;
mod measure;
mod report;
mod server;
mod stats;
mod value;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::cli::Args;
use crate::measure::HitPath;
use crate::report::{Meta, Report};

/// Concurrent callers in the 64-task cases and the stampede.
const TASKS: usize = 64;
/// Distinct hot keys per variant in the hit-path cases.
const KEYS: u64 = 64;
/// Loader time in the stampede.
const STAMPEDE_LOADER_MS: u64 = 50;
/// Entry TTL (seconds): long enough that nothing expires during a run.
const TTL_SECS: u64 = 3600;
/// Tasks on the one hot key of the early-refresh cases.
const HOT_TASKS: usize = 16;
/// Loader time of the hot-key cases.
const HOT_LOADER_MS: u64 = 20;
/// A call this slow most likely waited for a loader (three quarters of [`HOT_LOADER_MS`]; a
/// hit takes well under 1 ms, but a busy machine's scheduling delays can reach this too: the
/// exact figure is the function's `misses`, each of which waited for a load).
const HOT_WAIT_MS: u64 = 15;

fn main() {
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: this is a debug build; its figures would be meaningless. Run it in release mode:\n\
             \n    cargo run --release -p bench\n"
        );
        std::process::exit(1);
    }
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "--near-helper") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        if let Err(e) = rt.block_on(coherence::near_helper(&argv[1..])) {
            eprintln!("bench --near-helper: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = match cli::parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    // One multi-thread runtime with the default worker count (one per CPU).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let load_before = server::load_average();
    if let Some(l) = load_before
        && l > 0.5
    {
        eprintln!(
            "bench: warning: load average {l:.2} before the run: other work on this machine \
             makes the 1-task figures noisy (their tails are scheduling delays)"
        );
    }
    let (rounds, slice_ms, stampede_rounds) = if args.quick {
        (3, 60, 3)
    } else {
        (24, 150, 10)
    };
    let rounds = args.rounds.unwrap_or(rounds).max(1);
    let slice = Duration::from_millis(args.slice_ms.unwrap_or(slice_ms).max(10));

    // The server, and the variants' caches and baselines on it.
    let server = server::from_env_or_start()?;
    let redis_url = server.url.as_str();
    let prefix = format!("bench.{}", std::process::id());
    let mut admin = server::connection_manager(redis_url).await?;
    let version = server::redis_version(&mut admin).await;
    cases::init(redis_url, &prefix).await?;
    let value_sizes = report::value_sizes()?;
    let future_bytes = cases::future_bytes();

    // Fill every hot key of every variant (checking the values), then let the grace-window
    // variants' entries expire.
    let all = cases::all_variants();
    checks::fill_and_verify(&all).await?;
    cases::close_stale_gate().await;

    // The hit path, with the counters checked around it.
    let mut hit_path = HitPath::new(&all, &args.only);
    eprintln!(
        "bench: {} cases x {rounds} rounds x {} ms, then {stampede_rounds} stampede rounds \
         (redis {version} at {redis_url})",
        hit_path.accs.len(),
        slice.as_millis()
    );
    hit_path.warm_up().await;
    let before = checks::Before::take(&all);
    hit_path.run(rounds, slice).await;
    before.warn_loads();
    let serve_stale = before.serve_stale(&hit_path.accs);
    let near_hits = before.near_hits(&hit_path.accs);

    // Near-cache coherence across two processes.
    let coherence = if args.no_coherence {
        None
    } else {
        let writes = args
            .coherence_writes
            .unwrap_or(if args.quick { 100 } else { 1000 });
        eprintln!("bench: near-cache coherence across two processes, {writes} writes");
        Some(coherence::coherence(redis_url, &prefix, writes).await?)
    };

    // Early refresh: one hot key, with and without XFetch, one after the other.
    let hot_secs = if args.quick { 2 } else { 6 };
    let mut early_refresh = Vec::new();
    if !args.no_early_refresh {
        eprintln!(
            "bench: hot key, {HOT_TASKS} tasks, ttl 1 s, {HOT_LOADER_MS} ms loader: {hot_secs} s \
             without and {hot_secs} s with early_refresh = 1.0"
        );
        for xfetch in [false, true] {
            early_refresh
                .push(cases::hot::hot(xfetch, 2_000_000, Duration::from_secs(hot_secs)).await?);
        }
    }

    // Cold-key stampede.
    let stampede_rounds = if args.no_stampede { 0 } else { stampede_rounds };
    let stampedes = measure::stampedes(stampede_rounds).await;

    if !server.own {
        let n = server::cleanup(&mut admin, &prefix).await?;
        eprintln!("bench: deleted the {n} keys of this run under {prefix}*");
    }

    // The report.
    let hit_rows = report::hit_rows(&hit_path.accs);
    let stampede_rows = report::stampede_rows(&stampedes);
    let ratios = report::ratios(&hit_path.accs);
    let mut command = String::from("cargo run --release -p bench");
    let passed: Vec<String> = std::env::args().skip(1).collect();
    if !passed.is_empty() {
        let _ = write!(command, " -- {}", passed.join(" "));
    }
    let report = Report {
        meta: Meta {
            command,
            mode: if args.quick { "quick" } else { "full" },
            rounds,
            slice_ms: slice.as_millis() as u64,
            tasks: TASKS,
            hot_keys: KEYS,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_before: load_before,
            load_average_after: server::load_average(),
            redis: if server.own {
                "private redis-server started by the bench".into()
            } else {
                "REDIS_URL".into()
            },
            redis_version: version,
            value_bytes_json: value_sizes.0,
            value_bytes_msgpack_named: value_sizes.1,
            value_bytes_msgpack_compact: value_sizes.2,
            future_bytes,
            seconds: started.elapsed().as_secs_f64(),
        },
        hit_path: hit_rows,
        stampede: stampede_rows,
        ratios,
        serve_stale,
        near_hits,
        coherence,
        early_refresh,
    };
    report::print_report(&report);
    report::print_stampede_summary(&report, stampede_rounds);

    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        chart::svg_chart(&report, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
