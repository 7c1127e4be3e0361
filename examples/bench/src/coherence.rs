//! Near-cache coherence across two OS processes: the delay from an `#[invalidates]` write
//! returning in this process to another process (this binary started again with
//! `--near-helper`) reading the new value from its near cache.
//!
//! This process (A) writes with `#[invalidates]`; a second process (B: this binary started
//! with `--near-helper`) keeps the key in its near cache and reads it in a loop. For each
//! write: A tells B (stdin) which version to near-cache; B reads until a call is a near hit of
//! that version and says so (stdout), then keeps calling; A writes (the body sets the
//! version in the "database", the macro deletes the key) and takes the time when the call
//! returned; B reports the first call that returned the new version: how long before its
//! report that call started (B's own clock) and when it started (wall clock). Delay, on
//! A's clock: (report received - write returned) - (report sent - read started), an upper
//! bound that includes one pipe hop; and, as a cross-check, B's wall-clock read start minus A's
//! wall-clock write return (both processes read the same system clock).

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, Codec, cached, invalidates};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::value::{BenchError, Item, sample_item};

/// The near-cached key of the coherence measurement.
const COH_ID: u64 = 7;

/// The coherence measurement's cache and "database" (a key outside the cache's namespace on
/// the same server), in both processes.
struct Coh {
    cache: Cache,
    db: ConnectionManager,
    db_prefix: String,
}

static COH: OnceLock<Coh> = OnceLock::new();

fn coh() -> &'static Coh {
    COH.get().expect("coherence context is set")
}

async fn coh_init(url: &str, namespace: &str, db_prefix: &str) -> Result<(), BenchError> {
    let err = |e: &dyn std::fmt::Display| BenchError(e.to_string());
    let cache = Cache::builder()
        .redis(url)
        .namespace(namespace)
        .codec(Codec::MessagePack)
        .require_connection()
        .build()
        .await
        .map_err(|e| err(&e))?;
    let client = redis::Client::open(url).map_err(|e| err(&e))?;
    let db = ConnectionManager::new(client).await.map_err(|e| err(&e))?;
    COH.set(Coh {
        cache,
        db,
        db_prefix: db_prefix.to_owned(),
    })
    .map_err(|_| BenchError("coherence context set twice".into()))
}

/// The near-cached read: the loader reads the version from the "database".
#[cached(
    key = "coh:{id}",
    ttl = 3600,
    local_ttl = 3600,
    cache = coh().cache,
    name = "coh_item"
)]
async fn coh_item(id: u64) -> Result<Item, BenchError> {
    let mut db = coh().db.clone();
    let v: Option<u64> = redis::cmd("GET")
        .arg(format!("{}:{id}", coh().db_prefix))
        .query_async(&mut db)
        .await
        .map_err(|e| BenchError(e.to_string()))?;
    Ok(sample_item(v.unwrap_or(0)))
}

/// The write: sets the version in the "database"; the macro then deletes `coh:{id}`.
#[invalidates("coh:{id}", cache = coh().cache, name = "coh_write")]
async fn coh_write(id: u64, version: u64) -> Result<(), BenchError> {
    let mut db = coh().db.clone();
    redis::cmd("SET")
        .arg(format!("{}:{id}", coh().db_prefix))
        .arg(version)
        .query_async::<()>(&mut db)
        .await
        .map_err(|e| BenchError(e.to_string()))
}

fn unix_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn coh_local_hits() -> u64 {
    coh().cache.stats().function("coh_item").local_hits
}

/// Process B: `bench --near-helper <redis-url> <namespace> <db-prefix>`; commands on stdin,
/// one per line: `ping` (answers `pong`), `want V` (see the module comment), `quit`.
pub(crate) async fn near_helper(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write as _;
    let [url, namespace, db_prefix] = args else {
        return Err("usage: bench --near-helper <redis-url> <namespace> <db-prefix>".into());
    };
    coh_init(url, namespace, db_prefix).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let say = |line: String| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    };
    say("ready".into())?;
    while let Some(cmd) = rx.recv().await {
        let mut words = cmd.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("ping"), _) => say("pong".into())?,
            (Some("want"), Some(v)) => {
                // Until a call is a near hit of version `v`.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let before = coh_local_hits();
                    let item = coh_item(COH_ID).await?;
                    if item.id == v && coh_local_hits() > before {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("version {v} never became a near hit").into());
                    }
                    tokio::task::yield_now().await;
                }
                say(format!("cached {v}"))?;
                // Near hits until the copy is evicted; the first call that returns another
                // version is reported.
                loop {
                    let (t, wall) = (Instant::now(), unix_ns());
                    let item = coh_item(COH_ID).await?;
                    if item.id != v {
                        say(format!(
                            "seen {} {} {wall}",
                            item.id,
                            t.elapsed().as_nanos()
                        ))?;
                        break;
                    }
                    if t > deadline + Duration::from_secs(10) {
                        return Err(format!("version {v} was never replaced").into());
                    }
                    tokio::task::yield_now().await;
                }
            }
            (Some("quit"), _) => return Ok(()),
            _ => return Err(format!("near-helper: unknown command {cmd:?}").into()),
        }
    }
    Ok(())
}

/// Quantiles of signed delays, in µs.
#[derive(Debug, Serialize)]
pub(crate) struct Quantiles {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    pub(crate) min_us: f64,
}

fn quantiles(ns: &[i128]) -> Quantiles {
    let mut v = ns.to_vec();
    v.sort();
    let at = |q: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1e3
    };
    Quantiles {
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: at(1.0),
        min_us: v.first().map_or(f64::NAN, |&x| x as f64 / 1e3),
    }
}

/// What the coherence measurement found.
#[derive(Debug, Serialize)]
pub(crate) struct Coherence {
    pub(crate) writes: usize,
    /// Delay from `#[invalidates]` returning in A to the start of B's first read of the new
    /// value, on A's clock (includes one pipe hop).
    pub(crate) round_trip: Quantiles,
    /// The same from the two processes' wall clocks (`SystemTime`).
    pub(crate) wall_clock: Quantiles,
    /// Writes whose new value B read (a read that started) before A's call returned, by the
    /// round-trip figure.
    pub(crate) before_return: usize,
    /// Pipe round trip A -> B -> A (`ping`), p50, µs: one hop is about half of it.
    pub(crate) pipe_rtt_p50_us: f64,
    /// Duration of the `#[invalidates]` call in A, p50, µs.
    pub(crate) write_p50_us: f64,
}

/// Process A's side of the coherence measurement: `writes` writes.
pub(crate) async fn coherence(
    redis_url: &str,
    prefix: &str,
    writes: usize,
) -> Result<Coherence, Box<dyn std::error::Error>> {
    use std::io::{BufRead as _, Write as _};
    let namespace = format!("{prefix}.coh");
    let db_prefix = format!("{prefix}.cohdb");
    coh_init(redis_url, &namespace, &db_prefix).await?;
    let child = Command::new(std::env::current_exe()?)
        .args(["--near-helper", redis_url, &namespace, &db_prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // Killed (if still running) on every way out.
    struct Helper(Child);
    impl Drop for Helper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Helper(child);
    let mut stdin = child.0.stdin.take().ok_or("helper stdin")?;
    // B's reports, line by line, read by a thread (a few bytes into a pipe: writing to B's
    // stdin from here does not block).
    let stdout = std::io::BufReader::new(child.0.stdout.take().ok_or("helper stdout")?);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next = async || -> Result<String, Box<dyn std::error::Error>> {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err("the near helper exited".into()),
            Err(_) => Err("the near helper did not answer within 30 s".into()),
        }
    };
    let mut send = |line: &str| -> std::io::Result<()> {
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()
    };
    if next().await? != "ready" {
        return Err("near helper: expected `ready`".into());
    }
    let mut rtt = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        send("ping")?;
        if next().await? != "pong" {
            return Err("near helper: expected `pong`".into());
        }
        rtt.push(t.elapsed().as_nanos() as i128);
    }
    let mut version = 1_000_000u64;
    coh_write(COH_ID, version).await?;
    let (mut rt, mut wall, mut took) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..writes {
        send(&format!("want {version}"))?;
        if next().await? != format!("cached {version}") {
            return Err("near helper: expected `cached`".into());
        }
        let t0 = Instant::now();
        coh_write(COH_ID, version + 1).await?;
        let (returned, wall_returned) = (Instant::now(), unix_ns());
        let seen = next().await?;
        let received = Instant::now();
        let f: Vec<&str> = seen.split_whitespace().collect();
        let (Some(&"seen"), Some(Ok(v)), Some(Ok(since)), Some(Ok(wall_read))) = (
            f.first(),
            f.get(1).map(|s| s.parse::<u64>()),
            f.get(2).map(|s| s.parse::<i128>()),
            f.get(3).map(|s| s.parse::<i128>()),
        ) else {
            return Err(format!("near helper: bad report {seen:?}").into());
        };
        if v != version + 1 {
            return Err(format!("near helper read version {v}, expected {}", version + 1).into());
        }
        rt.push((received - returned).as_nanos() as i128 - since);
        wall.push(wall_read - wall_returned);
        took.push((returned - t0).as_nanos() as i128);
        version += 1;
    }
    send("quit")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            return Err("the near helper did not exit".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if !status.success() {
        return Err(format!("near helper failed: {status}").into());
    }
    Ok(Coherence {
        writes,
        before_return: rt.iter().filter(|&&d| d < 0).count(),
        round_trip: quantiles(&rt),
        wall_clock: quantiles(&wall),
        pipe_rtt_p50_us: quantiles(&rtt).p50_us,
        write_p50_us: quantiles(&took).p50_us,
    })
}
