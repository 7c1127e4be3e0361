//! A Jepsen-style randomized history checker for `#[cached]` / `#[invalidates]`.
//!
//! **Model.** A "database" of a few rows, each with a version that starts at 0 (no row) and only
//! grows. A writer bumps a row's version inside the body of an `#[invalidates]` function (the
//! write); readers call two `#[cached]` functions over the same rows: [`read_row`] (every result
//! cached, `None` as a negative entry) and [`read_row0`] (`negative_ttl = 0`: `None` is never
//! cached). Their loaders read the row's version between two random delays and log themselves.
//! Several [`Cache`] handles on one Redis and namespace stand for processes. Calls are sometimes
//! cancelled (a timeout around the call); a cancelled write is *in doubt* (its version may be
//! seen, but it is not a completed invalidation). Every operation is stamped with a global
//! logical clock (an `AtomicU64` in process, `INCR` on a separate "database" `redis-server`
//! across processes): `start` before the call, `end` after it returned.
//!
//! A run is a sequence of short *histories*; each history uses fresh row ids, so every history
//! starts with absent rows (and negative entries).
//!
//! **Checks** ([`check`]):
//! * (a) freshness: a completed read of row `r` that started at `s` returns a version `>= w`,
//!   where `w` is the highest version of a write of `r` that *completed* before `s`.
//! * (b) one load per generation: a generation of version `v` of row `r` lasts from the end of
//!   the last write that made a version `<= v` to the start of the first write that made a
//!   version `> v`. Loader runs that read `v`, ended inside the generation and belong to a read
//!   call that *started* inside it are counted per (function, row, generation); in histories
//!   without cancellations and without faults the count must be at most 1, across all caches.
//!   (A read call that started before the generation may hold a lease taken before the write's
//!   deletion: its result is then discarded by design and a second load is legitimate, so such
//!   loads are shown in the broader "loader entry" distribution only.) For `read_row0` only
//!   generations `v >= 1` are counted, since a `None` is never cached there.
//!
//! The same code drives the in-process runs (`tests/tests/history.rs`) and each process of the
//! cross-process run (`src/bin/history_helper.rs`), so both produce the same [`Record`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, FnStats, cached, invalidates};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{Raw, RedisServer};

/// Stats name of [`read_row`].
pub const READ_NAME: &str = concat!(module_path!(), "::read_row");
/// Stats name of [`read_row0`].
pub const READ0_NAME: &str = concat!(module_path!(), "::read_row0");
/// Stats name of [`write_row`].
pub const WRITE_NAME: &str = concat!(module_path!(), "::write_row");
/// The second writer function's stats name: each writer task of a cache uses its own
/// function, so that its counters tell exactly whether its own invalidation was delivered.
pub const WRITE_B_NAME: &str = concat!(module_path!(), "::write_row_b");

/// Row ids per history are `history * ROWS_STRIDE + 1 ..`.
const ROWS_STRIDE: u64 = 8;

/// Which cached function a read or load belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Func {
    /// [`read_row`]: key `row:{id}`, `ttl = 300` (negative entries cached too).
    Row,
    /// [`read_row0`]: key `row0:{id}`, `ttl = 300, negative_ttl = 0`.
    Row0,
}

impl Func {
    fn prefix(self) -> &'static str {
        match self {
            Func::Row => "row",
            Func::Row0 => "row0",
        }
    }
}

/// What an [`Event`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A call of a cached function.
    Read,
    /// A call of the invalidating writer.
    Write,
    /// A loader run (logged by the loader itself).
    Load,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Read, write or load.
    pub kind: Kind,
    /// The cached function (reads and loads; `Row` for writes).
    pub func: Func,
    /// Which history of the run.
    pub history: u32,
    /// The row id.
    pub row: u64,
    /// Read: the version returned (0 = `None`); load: the version read (0 = absent); write:
    /// the version written (0 = not known: the call was cancelled before the body wrote).
    pub version: u64,
    /// Which cache (process) ran it.
    pub cache: u32,
    /// Which task ran it.
    pub task: u32,
    /// For a load: the start stamp of the read call that ran it; otherwise `start`.
    pub call_start: u64,
    /// Clock before the call (for a load: when the loader began).
    pub start: u64,
    /// Clock after the call returned; `None` when it was cancelled.
    pub end: Option<u64>,
    /// Completed write: the invalidation may have failed or been queued (the writer's function
    /// counted backend errors, or fewer than 2 invalidations, on this cache during the call).
    /// Read: the reader's cache could not use Redis (its circuit was not closed at the read's
    /// start or end), so invalidations by other caches could not reach it.
    pub suspect: bool,
}

impl Event {
    fn key(&self) -> String {
        match self.kind {
            Kind::Write => format!("row:{0}+row0:{0}", self.row),
            _ => format!("{}:{}", self.func.prefix(), self.row),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match self.end {
            Some(e) => e.to_string(),
            None => "CANCELLED".to_owned(),
        };
        let what = match self.kind {
            Kind::Read => "read ",
            Kind::Write => "WRITE",
            Kind::Load => "  load",
        };
        write!(
            f,
            "[{:>7} .. {:>9}] cache#{} task#{:<3} {what} {:<16} version {}",
            self.start,
            end,
            self.cache,
            self.task,
            self.key(),
            self.version
        )?;
        if self.kind == Kind::Load {
            write!(f, " (read call started at {})", self.call_start)?;
        }
        if self.kind == Kind::Write && self.suspect {
            f.write_str(" (invalidation suspect: backend error or queued)")?;
        }
        if self.kind == Kind::Read && self.suspect {
            f.write_str(" (this cache's circuit was open)")?;
        }
        Ok(())
    }
}

/// A fault injected into the cache's Redis server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// `"pause"` (SIGSTOP .. SIGCONT) or `"kill"` (SIGKILL .. restarted on the same port).
    pub kind: String,
    /// Clock when it began.
    pub start: u64,
    /// Clock when the server was back.
    pub end: u64,
}

/// Counters of the cached and invalidating functions, summed over caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `hits + negative_hits` of both readers.
    pub hits: u64,
    /// `misses` of both readers.
    pub misses: u64,
    /// `loads` of both readers.
    pub loads: u64,
    /// `lock_waits` of both readers.
    pub lock_waits: u64,
    /// `lock_timeouts` of both readers.
    pub lock_timeouts: u64,
    /// `backend_errors` of all three functions.
    pub backend_errors: u64,
    /// `invalidations` of the writer (keys deleted).
    pub invalidations: u64,
}

impl Counts {
    /// Counters of one cache.
    pub fn of(cache: &Cache) -> Counts {
        let s = cache.stats();
        let (r, r0, w, wb) = (
            s.function(READ_NAME),
            s.function(READ0_NAME),
            s.function(WRITE_NAME),
            s.function(WRITE_B_NAME),
        );
        let both = |f: fn(&FnStats) -> u64| f(&r) + f(&r0);
        Counts {
            hits: both(|s| s.hits + s.negative_hits),
            misses: both(|s| s.misses),
            loads: both(|s| s.loads),
            lock_waits: both(|s| s.lock_waits),
            lock_timeouts: both(|s| s.lock_timeouts),
            backend_errors: both(|s| s.backend_errors) + w.backend_errors + wb.backend_errors,
            invalidations: w.invalidations + wb.invalidations,
        }
    }

    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Counts) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.loads += o.loads;
        self.lock_waits += o.lock_waits;
        self.lock_timeouts += o.lock_timeouts;
        self.backend_errors += o.backend_errors;
        self.invalidations += o.invalidations;
    }
}

/// One line of a history file (the helper binary prints one per line on stdout).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Record {
    /// An operation.
    Event(Event),
    /// A fault.
    Fault(FaultWindow),
    /// The cache counters at the end of a process's run.
    Counts(Counts),
}

/// The "database": row versions and the logical clock.
#[derive(Clone)]
pub enum Db {
    /// In process: one `AtomicU64` clock (SeqCst) and a map of versions.
    Local(Arc<LocalDb>),
    /// A `redis-server` (not the cache's): `INCR history:clock`, `INCR history:row:<id>`.
    Redis(Raw),
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Db::Local(_) => f.write_str("Db::Local"),
            Db::Redis(_) => f.write_str("Db::Redis"),
        }
    }
}

/// State of [`Db::Local`].
#[derive(Debug, Default)]
pub struct LocalDb {
    clock: AtomicU64,
    rows: Mutex<HashMap<u64, u64>>,
}

impl Db {
    /// An in-process database.
    pub fn local() -> Db {
        Db::Local(Arc::default())
    }

    /// A database on a redis-server at `url`.
    pub async fn redis(url: &str) -> Db {
        Db::Redis(Raw::connect(url).await)
    }

    /// Ticks the logical clock and returns the new time.
    pub async fn clock(&self) -> u64 {
        match self {
            Db::Local(db) => db.clock.fetch_add(1, SeqCst) + 1,
            Db::Redis(raw) => raw.incr("history:clock").await as u64,
        }
    }

    /// Bumps row `id`'s version and returns the new version (the write).
    pub async fn bump(&self, id: u64) -> u64 {
        match self {
            Db::Local(db) => {
                let mut rows = db.rows.lock().unwrap_or_else(|p| p.into_inner());
                let v = rows.entry(id).or_insert(0);
                *v += 1;
                *v
            }
            Db::Redis(raw) => raw.incr(&format!("history:row:{id}")).await as u64,
        }
    }

    /// Row `id`'s version (0 = no row).
    pub async fn read(&self, id: u64) -> u64 {
        match self {
            Db::Local(db) => {
                let rows = db.rows.lock().unwrap_or_else(|p| p.into_inner());
                rows.get(&id).copied().unwrap_or(0)
            }
            Db::Redis(raw) => raw.get_i64(&format!("history:row:{id}")).await.unwrap_or(0) as u64,
        }
    }
}

/// Where events are logged.
pub type Log = Arc<Mutex<Vec<Record>>>;

fn push(log: &Log, r: Record) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(r);
}

/// What a loader needs to do its job and log itself.
pub struct LoadCtx {
    db: Db,
    log: Log,
    func: Func,
    history: u32,
    cache: u32,
    task: u32,
    call_start: u64,
    delay_before_ms: u64,
    delay_after_ms: u64,
}

impl LoadCtx {
    async fn load(&self, id: u64) -> Option<u64> {
        let start = self.db.clock().await;
        pause(self.delay_before_ms).await;
        let version = self.db.read(id).await;
        pause(self.delay_after_ms).await;
        let end = self.db.clock().await;
        push(
            &self.log,
            Record::Event(Event {
                kind: Kind::Load,
                func: self.func,
                history: self.history,
                row: id,
                version,
                cache: self.cache,
                task: self.task,
                call_start: self.call_start,
                start,
                end: Some(end),
                suspect: false,
            }),
        );
        (version > 0).then_some(version)
    }
}

/// Sleeps `ms` milliseconds (workload shape only, never synchronisation); 0 = yield once.
async fn pause(ms: u64) {
    if ms == 0 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// The cached reader: every result cached for 300 s, `None` as a negative entry.
#[cached(key = "row:{id}", ttl = 300, cache = cache)]
pub async fn read_row(cache: &Cache, id: u64, ctx: &LoadCtx) -> Option<u64> {
    ctx.load(id).await
}

/// The cached reader that never caches `None` (`negative_ttl = 0`).
#[cached(key = "row0:{id}", ttl = 300, negative_ttl = 0, cache = cache)]
pub async fn read_row0(cache: &Cache, id: u64, ctx: &LoadCtx) -> Option<u64> {
    ctx.load(id).await
}

/// The write: bumps row `id`'s version in the body; the macro then deletes both keys.
#[invalidates("row:{id}", "row0:{id}", cache = cache)]
pub async fn write_row(cache: &Cache, id: u64, db: &Db, delay_ms: u64, written: &AtomicU64) {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
}

/// The same write as [`write_row`], under another name (see [`WRITE_B_NAME`]).
#[invalidates("row:{id}", "row0:{id}", cache = cache)]
pub async fn write_row_b(cache: &Cache, id: u64, db: &Db, delay_ms: u64, written: &AtomicU64) {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
}

/// When calls are cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// Never.
    Never,
    /// About one call in ten, in every history.
    Always,
    /// About one call in ten, in odd histories (even histories stay clean for check (b)).
    OddHistories,
}

/// Shape of a workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Seed of every task's `StdRng`.
    pub seed: u64,
    /// Index of the first cache (a helper process passes its process index).
    pub cache_base: u32,
    /// Total workload time.
    pub duration: Duration,
    /// Length of one history.
    pub history_ms: u64,
    /// Reader tasks per cache.
    pub readers_per_cache: u32,
    /// Writer tasks per cache.
    pub writers_per_cache: u32,
    /// Longest loader delay (before and after the read, each), ms.
    pub max_loader_delay_ms: u64,
    /// When calls are cancelled.
    pub cancel: Cancel,
}

impl Workload {
    /// Rows of history `h` (3 or 4, the same in every process for a given seed).
    pub fn rows(&self, h: u32) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, 0xFFFF, h, 0));
        let k = rng.random_range(3..=4u64);
        (1..=k).map(|i| u64::from(h) * ROWS_STRIDE + i).collect()
    }

    fn cancels(&self, h: u32) -> bool {
        match self.cancel {
            Cancel::Never => false,
            Cancel::Always => true,
            Cancel::OddHistories => h % 2 == 1,
        }
    }
}

/// A reproducible per-task seed.
fn mix(seed: u64, cache: u32, history: u32, task: u32) -> u64 {
    let mut x = seed
        ^ (u64::from(cache) << 48)
        ^ (u64::from(history) << 20)
        ^ u64::from(task).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Runs `work` on `caches` (each stands for a process) against `db`, history after history,
/// starting now, logging to `log`; returns how many histories ran.
pub async fn run(work: &Workload, caches: &[Cache], db: &Db, log: &Log) -> u32 {
    let t0 = Instant::now();
    let (mut h, mut ran) = (0u32, 0u32);
    while (u64::from(h) * work.history_ms) < work.duration.as_millis() as u64 {
        let deadline = t0 + Duration::from_millis(u64::from(h + 1) * work.history_ms);
        // A history whose time is already over (the previous one overran, e.g. a lease wait
        // of `lock_ms`) is skipped, so that every process keeps to the same schedule.
        if deadline > Instant::now() {
            run_history(work, h, caches, db, log, deadline).await;
            ran += 1;
        }
        h += 1;
    }
    ran
}

async fn run_history(
    work: &Workload,
    h: u32,
    caches: &[Cache],
    db: &Db,
    log: &Log,
    deadline: Instant,
) {
    let rows: Arc<[u64]> = work.rows(h).into();
    let cancels = work.cancels(h);
    let mut tasks = Vec::new();
    for (i, cache) in caches.iter().enumerate() {
        let cache_ix = work.cache_base + i as u32;
        for t in 0..work.readers_per_cache + work.writers_per_cache {
            let rng = StdRng::seed_from_u64(mix(work.seed, cache_ix, h, t));
            let (cache, db, log, rows) = (cache.clone(), db.clone(), log.clone(), rows.clone());
            let max_delay = work.max_loader_delay_ms;
            let history_ms = work.history_ms;
            let task = Task {
                cache,
                cache_ix,
                task: t,
                history: h,
                db,
                log,
                rows,
                rng,
                cancels,
                deadline,
            };
            tasks.push(if t < work.readers_per_cache {
                tokio::spawn(task.reader(max_delay))
            } else {
                tokio::spawn(task.writer(history_ms))
            });
        }
    }
    for t in tasks {
        t.await.expect("a workload task panicked");
    }
}

struct Task {
    cache: Cache,
    cache_ix: u32,
    task: u32,
    history: u32,
    db: Db,
    log: Log,
    rows: Arc<[u64]>,
    rng: StdRng,
    cancels: bool,
    deadline: Instant,
}

impl Task {
    /// A cancellation timeout for this call, if it is to be cancelled.
    fn cancel_after(&mut self) -> Option<Duration> {
        (self.cancels && self.rng.random_ratio(1, 10))
            .then(|| Duration::from_millis(self.rng.random_range(0..=6)))
    }

    fn delay(&mut self, max: u64) -> u64 {
        if self.rng.random_ratio(1, 3) {
            0
        } else {
            self.rng.random_range(0..=max)
        }
    }

    async fn reader(mut self, max_delay: u64) {
        while Instant::now() < self.deadline {
            let row = self.rows[self.rng.random_range(0..self.rows.len())];
            let func = if self.rng.random_bool(0.5) {
                Func::Row
            } else {
                Func::Row0
            };
            let cancel = self.cancel_after();
            let (delay_before_ms, delay_after_ms) = (self.delay(max_delay), self.delay(max_delay));
            let closed = |c: &Cache| c.breaker_state() == cache_runtime::BreakerState::Closed;
            let reachable_before = closed(&self.cache);
            let start = self.db.clock().await;
            let ctx = LoadCtx {
                db: self.db.clone(),
                log: self.log.clone(),
                func,
                history: self.history,
                cache: self.cache_ix,
                task: self.task,
                call_start: start,
                delay_before_ms,
                delay_after_ms,
            };
            let call = async {
                match func {
                    Func::Row => read_row(&self.cache, row, &ctx).await,
                    Func::Row0 => read_row0(&self.cache, row, &ctx).await,
                }
            };
            let got = match cancel {
                None => Some(call.await),
                Some(after) => tokio::time::timeout(after, call).await.ok(),
            };
            let end = match got {
                Some(_) => Some(self.db.clock().await),
                None => None,
            };
            let degraded = !(reachable_before && closed(&self.cache));
            push(
                &self.log,
                Record::Event(Event {
                    kind: Kind::Read,
                    func,
                    history: self.history,
                    row,
                    version: got.flatten().unwrap_or(0),
                    cache: self.cache_ix,
                    task: self.task,
                    call_start: start,
                    start,
                    end,
                    suspect: degraded,
                }),
            );
            let think = if self.rng.random_ratio(1, 3) {
                0
            } else {
                self.rng.random_range(0..=2)
            };
            pause(think).await;
        }
    }

    async fn writer(mut self, history_ms: u64) {
        // The first write of each writer comes anywhere in the first half of the history, so
        // that rows stay absent (negative entries) for a while.
        pause(self.rng.random_range(0..=history_ms / 2)).await;
        while Instant::now() < self.deadline {
            let row = self.rows[self.rng.random_range(0..self.rows.len())];
            let cancel = self.cancel_after();
            let delay = self.delay(3);
            let written = AtomicU64::new(0);
            // Writer tasks alternate between two functions: with two writers per cache, each
            // function's counters are this task's alone.
            let (name, b) = if self.task % 2 == 0 {
                (WRITE_NAME, false)
            } else {
                (WRITE_B_NAME, true)
            };
            let before = self.cache.stats().function(name);
            let start = self.db.clock().await;
            let call = async {
                if b {
                    write_row_b(&self.cache, row, &self.db, delay, &written).await
                } else {
                    write_row(&self.cache, row, &self.db, delay, &written).await
                }
            };
            let done = match cancel {
                None => {
                    call.await;
                    true
                }
                Some(after) => tokio::time::timeout(after, call).await.is_ok(),
            };
            let end = if done {
                Some(self.db.clock().await)
            } else {
                None
            };
            let after = self.cache.stats().function(name);
            let suspect = done
                && (after.backend_errors != before.backend_errors
                    || after.invalidations < before.invalidations + 2);
            push(
                &self.log,
                Record::Event(Event {
                    kind: Kind::Write,
                    func: Func::Row,
                    history: self.history,
                    row,
                    version: written.load(SeqCst),
                    cache: self.cache_ix,
                    task: self.task,
                    call_start: start,
                    start,
                    end,
                    suspect,
                }),
            );
            let think = self.rng.random_range(2..=(history_ms / 8).max(3));
            pause(think).await;
        }
    }
}

/// Injects faults into the cache's server until `until`: pauses (SIGSTOP) of 0.5x..2x
/// `around`, and kills followed by a restart on the same port. Returns the server (running).
pub async fn inject_faults(
    mut server: RedisServer,
    db: Db,
    log: Log,
    seed: u64,
    around: Duration,
    until: Instant,
) -> RedisServer {
    let mut rng = StdRng::seed_from_u64(mix(seed, 0xFFFE, 0, 0));
    let around = around.as_millis() as u64;
    loop {
        pause(rng.random_range(100..=350)).await;
        if Instant::now() >= until {
            return server;
        }
        let start = db.clock().await;
        let kind = if rng.random_ratio(2, 3) {
            server.stop();
            pause(rng.random_range(around / 2..=around * 2)).await;
            server.cont();
            "pause"
        } else {
            server.kill();
            pause(rng.random_range(0..=around)).await;
            tokio::task::block_in_place(|| server.restart());
            "kill"
        };
        let end = db.clock().await;
        push(
            &log,
            Record::Fault(FaultWindow {
                kind: kind.to_owned(),
                start,
                end,
            }),
        );
    }
}

/// A freshness violation.
#[derive(Clone, Debug)]
pub struct Stale {
    /// The read.
    pub read: Event,
    /// The completed write with the highest version that ended before the read started.
    pub write: Event,
    /// Whether a completed write in another cache with a newer version than the read returned
    /// (one that ended before the read started) is suspect (its invalidation may have failed or
    /// been queued), overlaps a fault window, or the reader's circuit was open.
    pub after_failed_invalidation: bool,
    /// Context: the row's other writes and the loads that read the returned version.
    pub context: Vec<Event>,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Histories checked.
    pub histories: usize,
    /// Completed reads.
    pub reads: usize,
    /// Writes (completed and in doubt).
    pub writes: usize,
    /// Loader runs logged.
    pub loads: usize,
    /// Cancelled calls (reads and writes).
    pub cancellations: usize,
    /// Faults injected.
    pub faults: usize,
    /// Histories without cancellations or faults (where (b) is strict).
    pub clean_histories: usize,
    /// Freshness violations, per function.
    pub stale: Vec<Stale>,
    /// (b) in clean histories: generations by number of loads (read call started inside).
    pub loads_clean: BTreeMap<usize, usize>,
    /// (b) in all histories, same counting.
    pub loads_all: BTreeMap<usize, usize>,
    /// Broader count in all histories: loader entry (not the read call) inside the generation.
    pub loads_entry_all: BTreeMap<usize, usize>,
    /// Clean generations with more than one load, with their loads.
    pub double_loads: Vec<(String, Vec<Event>)>,
    /// Counters summed over caches.
    pub counts: Counts,
}

impl Report {
    /// Most loads of one clean generation.
    pub fn max_loads_clean(&self) -> usize {
        self.loads_clean.keys().max().copied().unwrap_or(0)
    }

    /// Most loads of one generation, in any history.
    pub fn max_loads_all(&self) -> usize {
        self.loads_all.keys().max().copied().unwrap_or(0)
    }

    /// Stale reads per function.
    pub fn stale_by_func(&self, func: Func) -> usize {
        self.stale.iter().filter(|s| s.read.func == func).count()
    }

    /// The figures, one paragraph.
    pub fn figures(&self, test: &str, backend: &str, seed: u64) -> String {
        let after_failed = self
            .stale
            .iter()
            .filter(|s| s.after_failed_invalidation)
            .count();
        format!(
            "[{test}] backend={backend} seed={seed}: histories={} (clean {}), reads={}, writes={}, loads={}, \
             cancellations={}, faults={}, stale reads={} (row: {}, row0/negative_ttl=0: {}; after a \
             suspect/failed invalidation or a fault: {}), max loads per generation: clean={} all={} \
             (loader-entry count: {}), distribution clean={:?} all={:?} entry={:?}; counters: {:?}",
            self.histories,
            self.clean_histories,
            self.reads,
            self.writes,
            self.loads,
            self.cancellations,
            self.faults,
            self.stale.len(),
            self.stale_by_func(Func::Row),
            self.stale_by_func(Func::Row0),
            after_failed,
            self.max_loads_clean(),
            self.max_loads_all(),
            self.loads_entry_all.keys().max().copied().unwrap_or(0),
            self.loads_clean,
            self.loads_all,
            self.loads_entry_all,
            self.counts,
        )
    }

    /// Excerpts of up to `n` stale reads of each function.
    pub fn stale_excerpt(&self, n: usize) -> String {
        let mut s = String::new();
        // Reads after delivered invalidations first: they are the failures.
        let mut ordered: Vec<&Stale> = self.stale.iter().collect();
        ordered.sort_by_key(|v| v.after_failed_invalidation);
        let shown = [Func::Row, Func::Row0].into_iter().flat_map(|f| {
            ordered
                .clone()
                .into_iter()
                .filter(move |v| v.read.func == f)
                .take(n)
        });
        for v in shown {
            let _ = writeln!(
                s,
                "STALE READ (history {}): read started at {} after the write of version {} completed at {}, \
                 but returned version {}{}:",
                v.read.history,
                v.read.start,
                v.write.version,
                v.write.end.unwrap_or(0),
                v.read.version,
                if v.after_failed_invalidation {
                    " (a newer write's invalidation was suspect or overlapped a fault)"
                } else {
                    ""
                }
            );
            let _ = writeln!(s, "  {}   <- the stale read", v.read);
            let _ = writeln!(s, "  {}   <- the completed write", v.write);
            for e in &v.context {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    /// Excerpts of up to `n` generations loaded more than once.
    pub fn double_load_excerpt(&self, n: usize) -> String {
        let mut s = String::new();
        for (what, loads) in self.double_loads.iter().take(n) {
            let _ = writeln!(s, "{what}:");
            for e in loads {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    /// Panics with the figures and excerpts when (a) or, in clean histories, (b) failed.
    pub fn assert_ok(&self, test: &str, backend: &str, seed: u64) {
        self.assert_ok_with(test, backend, seed, false)
    }

    /// Like [`Report::assert_ok`]; with `excuse_undelivered`, a stale read whose newer write's
    /// invalidation could not be delivered (a backend error or a queued retry during the
    /// write, or a write overlapping a fault window) is reported but not a failure: the
    /// README's promise covers invalidations that reached Redis; a queued one holds for other
    /// processes from its delivery on.
    pub fn assert_ok_with(&self, test: &str, backend: &str, seed: u64, excuse_undelivered: bool) {
        let mut problems = Vec::new();
        let failing = self
            .stale
            .iter()
            .filter(|s| !(excuse_undelivered && s.after_failed_invalidation))
            .count();
        eprintln!("{}", self.figures(test, backend, seed));
        if failing > 0 {
            problems.push(format!(
                "(a) freshness: {} stale reads ({failing} after delivered invalidations)\n{}",
                self.stale.len(),
                self.stale_excerpt(2)
            ));
        }
        if self.max_loads_clean() > 1 {
            problems.push(format!(
                "(b) one load per generation: {} generations loaded more than once in histories \
                 without cancellations or faults\n{}",
                self.double_loads.len(),
                self.double_load_excerpt(2)
            ));
        }
        assert!(
            problems.is_empty(),
            "history checker failed; replay with CHECKER_SEED={seed}\n{}\n{}",
            self.figures(test, backend, seed),
            problems.join("\n")
        );
    }
}

/// Checks (a) and (b) on the merged records of a run.
pub fn check(records: &[Record]) -> Report {
    let mut report = Report::default();
    let mut events = Vec::new();
    let mut faults = Vec::new();
    for r in records {
        match r {
            Record::Event(e) => events.push(e.clone()),
            Record::Fault(f) => faults.push(f.clone()),
            Record::Counts(c) => report.counts.add(c),
        }
    }
    report.faults = faults.len();
    report.reads = events
        .iter()
        .filter(|e| e.kind == Kind::Read && e.end.is_some())
        .count();
    report.writes = events.iter().filter(|e| e.kind == Kind::Write).count();
    report.loads = events.iter().filter(|e| e.kind == Kind::Load).count();
    report.cancellations = events.iter().filter(|e| e.end.is_none()).count();

    let overlaps_fault =
        |start: u64, end: u64| faults.iter().any(|f| f.start <= end && start <= f.end);

    // Histories: their clock span, and whether they are clean.
    let mut spans: BTreeMap<u32, (u64, u64, bool)> = BTreeMap::new();
    for e in &events {
        let span = spans.entry(e.history).or_insert((u64::MAX, 0, false));
        span.0 = span.0.min(e.start);
        span.1 = span.1.max(e.end.unwrap_or(e.start));
        span.2 |= e.end.is_none();
    }
    let clean: BTreeSet<u32> = spans
        .iter()
        // A fault's effects outlast its window (open breakers, reconnections, queued
        // invalidations), so a run with faults has no clean history.
        .filter(|(_, (_, _, cancelled))| !cancelled && faults.is_empty())
        .map(|(h, _)| *h)
        .collect();
    report.histories = spans.len();
    report.clean_histories = clean.len();

    // Writes by row.
    let mut writes: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == Kind::Write) {
        writes.entry(e.row).or_default().push(e);
    }
    let no_writes = Vec::new();

    // (a) Freshness.
    for read in events
        .iter()
        .filter(|e| e.kind == Kind::Read && e.end.is_some())
    {
        let row_writes = writes.get(&read.row).unwrap_or(&no_writes);
        let latest = row_writes
            .iter()
            .filter(|w| w.end.is_some_and(|end| end < read.start))
            .max_by_key(|w| w.version);
        let Some(latest) = latest else { continue };
        if read.version >= latest.version {
            continue;
        }
        let newer: Vec<&&Event> = row_writes
            .iter()
            .filter(|w| w.version > read.version && w.end.is_some_and(|end| end < read.start))
            .collect();
        // Excused (in fault runs) only through a write in ANOTHER cache (process) whose
        // invalidation may not have been delivered, or that this cache could not see because
        // its own circuit was open: the writing process itself must always see its writes.
        let after_failed_invalidation = newer.iter().any(|w| {
            w.cache != read.cache
                && (w.suspect || overlaps_fault(w.start, w.end.unwrap_or(u64::MAX)) || read.suspect)
        });
        // Context: the write that made the returned version and the newer writes up to the
        // read's end (other than `latest`, shown separately; at most 5), and the last 4 loads
        // that read the returned version before the read ended.
        let read_end = read.end.unwrap_or(u64::MAX);
        let mut context: Vec<Event> = row_writes
            .iter()
            .filter(|w| {
                w.version == read.version || (w.version > read.version && w.start <= read_end)
            })
            .filter(|w| !std::ptr::eq(**w, *latest))
            .take(5)
            .map(|w| (*w).clone())
            .collect();
        let mut loads: Vec<&Event> = events
            .iter()
            .filter(|e| {
                e.kind == Kind::Load
                    && e.row == read.row
                    && e.func == read.func
                    && e.version == read.version
                    && e.start <= read_end
            })
            .collect();
        loads.sort_by_key(|e| e.start);
        context.extend(loads.iter().rev().take(4).map(|e| (*e).clone()));
        context.sort_by_key(|e| e.start);
        report.stale.push(Stale {
            read: read.clone(),
            write: (*latest).clone(),
            after_failed_invalidation,
            context,
        });
    }

    // (b) Loads per generation.
    let mut rows: BTreeSet<(u32, u64)> = BTreeSet::new();
    for e in &events {
        rows.insert((e.history, e.row));
    }
    for &(history, row) in &rows {
        let row_writes = writes.get(&row).unwrap_or(&no_writes);
        // Versions whose generation can be bounded: every write of a version <= v has a known
        // version and end. (In-doubt writes with an unknown version end the analysis.)
        let max_version = row_writes.iter().map(|w| w.version).max().unwrap_or(0);
        // A write whose version is unknown (cancelled, possibly mid-`INCR`) leaves the row's
        // generations unknown.
        if row_writes.iter().any(|w| w.version == 0) {
            continue;
        }
        for func in [Func::Row, Func::Row0] {
            for v in 0..=max_version {
                if func == Func::Row0 && v == 0 {
                    continue;
                }
                let mut from = 0u64;
                let mut to = u64::MAX;
                let mut bounded = true;
                for w in row_writes {
                    if w.version <= v {
                        match w.end {
                            Some(end) => from = from.max(end),
                            None => bounded = false,
                        }
                    } else {
                        to = to.min(w.start);
                    }
                }
                if v > 0 && !row_writes.iter().any(|w| w.version == v) {
                    continue;
                }
                if !bounded || from >= to {
                    continue;
                }
                let loads = events.iter().filter(|e| {
                    e.kind == Kind::Load
                        && e.func == func
                        && e.row == row
                        && e.version == v
                        && e.end.is_some_and(|end| end < to)
                });
                let by_call: Vec<&Event> = loads.clone().filter(|e| e.call_start > from).collect();
                let by_entry = loads.filter(|e| e.start > from).count();
                if by_entry > 0 {
                    *report.loads_entry_all.entry(by_entry).or_default() += 1;
                }
                if by_call.is_empty() {
                    continue;
                }
                *report.loads_all.entry(by_call.len()).or_default() += 1;
                if clean.contains(&history) {
                    *report.loads_clean.entry(by_call.len()).or_default() += 1;
                    if by_call.len() > 1 {
                        let what = format!(
                            "history {history}: {}:{row} version {v}, generation ({from}, {to}): {} loads",
                            func.prefix(),
                            by_call.len()
                        );
                        let mut shown: Vec<Event> = row_writes
                            .iter()
                            .filter(|w| w.version == v || w.version == v + 1)
                            .map(|w| (*w).clone())
                            .collect();
                        shown.extend(by_call.into_iter().cloned());
                        shown.sort_by_key(|e| e.start);
                        report.double_loads.push((what, shown));
                    }
                }
            }
        }
    }
    report
}

/// The seed: `CHECKER_SEED` when set, else a fresh one.
pub fn seed_from_env() -> u64 {
    match std::env::var("CHECKER_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHECKER_SEED={s:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

/// Workload time: `CHECKER_SECONDS` when set (a float), else `default_secs`.
pub fn duration_from_env(default_secs: f64) -> Duration {
    let secs = match std::env::var("CHECKER_SECONDS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHECKER_SECONDS={s:?} is not a number")),
        Err(_) => default_secs,
    };
    Duration::from_secs_f64(secs)
}
