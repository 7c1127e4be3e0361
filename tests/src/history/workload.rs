//! The workload: the "database" the loaders read, the `#[cached]` / `#[invalidates]` functions
//! (attribute and programmatic readers, writers) and what a run is made of ([`Workload`]).
//! The stats names are taken from this module's path, next to the functions they name.

use super::*;

/// Stats name of [`read_row`].
pub const READ_NAME: &str = concat!(module_path!(), "::read_row");
/// Stats name of [`read_row0`].
pub const READ0_NAME: &str = concat!(module_path!(), "::read_row0");
/// Stats name of [`read_rowg`].
pub const READG_NAME: &str = concat!(module_path!(), "::read_rowg");
/// Stats name of [`read_rowe`].
pub const READE_NAME: &str = concat!(module_path!(), "::read_rowe");
/// Stats name of [`read_rowt`].
pub const READT_NAME: &str = concat!(module_path!(), "::read_rowt");
/// Stats name of [`read_rowgn`].
pub const READGN_NAME: &str = concat!(module_path!(), "::read_rowgn");
/// Stats names of the programmatic readers ([`EntryOptions::name`]), in the order of
/// [`Func::ALL`] from [`Func::ApiRow`] on.
pub const API_NAMES: [&str; 7] = [
    "history.api.row",
    "history.api.row0",
    "history.api.rown",
    "history.api.rown0",
    "history.api.rowg",
    "history.api.rowt",
    "history.api.rowgn",
];
/// Stats name of [`write_row`].
pub const WRITE_NAME: &str = concat!(module_path!(), "::write_row");
/// The second writer function's stats name: each writer task of a cache uses its own
/// function, so that its counters tell exactly whether its own invalidation was delivered.
pub const WRITE_B_NAME: &str = concat!(module_path!(), "::write_row_b");
/// Stats name of [`write_fresh_keys`].
pub const WRITE_FK_NAME: &str = concat!(module_path!(), "::write_fresh_keys");
/// Stats name of [`write_fresh_keys_tag`].
pub const WRITE_FKT_NAME: &str = concat!(module_path!(), "::write_fresh_keys_tag");
/// Stats name of [`write_fresh_tag`].
pub const WRITE_FT_NAME: &str = concat!(module_path!(), "::write_fresh_tag");
/// Stats name under which [`Cache::invalidate_tag`] counts.
pub const INVALIDATE_TAG_NAME: &str = "cache_runtime::invalidate_tag";

/// Name of [`read_rown`] in the stats.
pub const READN_NAME: &str = concat!(module_path!(), "::read_rown");
/// Name of [`read_rown0`] in the stats.
pub const READN0_NAME: &str = concat!(module_path!(), "::read_rown0");
/// Name of [`write_rown`] in the stats.
pub const WRITEN_NAME: &str = concat!(module_path!(), "::write_rown");
/// Name of [`write_rown_b`] in the stats.
pub const WRITEN_B_NAME: &str = concat!(module_path!(), "::write_rown_b");
/// Default of the near-cache coherence bound (`NEAR_BOUND_MS`), see [`near_bound_from_env`].
pub const DEFAULT_NEAR_BOUND_MS: u64 = 50;

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

    /// Ticks the in-process logical clock without waiting (`None` for [`Db::Redis`]).
    pub fn clock_now(&self) -> Option<u64> {
        match self {
            Db::Local(db) => Some(db.clock.fetch_add(1, SeqCst) + 1),
            Db::Redis(_) => None,
        }
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

/// Wall clock, unix µs.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The near-cache coherence bound of check (a'): `NEAR_BOUND_MS` when set, else
/// [`DEFAULT_NEAR_BOUND_MS`].
pub fn near_bound_from_env() -> u64 {
    match std::env::var("NEAR_BOUND_MS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("NEAR_BOUND_MS={s:?} is not a whole number of ms")),
        Err(_) => DEFAULT_NEAR_BOUND_MS,
    }
}

/// Near-cache run: logs every marker push `cache` (index `cache_ix`) processes, stamped with
/// the logical clock after the eviction (across processes, where the clock is an `INCR`, a
/// task stamps it a little later, which only makes the rule weaker). Panics when `cache` has
/// no near cache.
pub fn log_marker_pushes(cache: &Cache, cache_ix: u32, db: &Db, log: &Log) {
    let (db, log) = (db.clone(), log.clone());
    let set = cache.__on_near_push(move |keys| {
        let marks: Vec<String> = keys
            .iter()
            .filter(|k| k.contains(":mark:"))
            .cloned()
            .collect();
        if marks.is_empty() {
            return;
        }
        let record = move |clock: u64, key: String| Record::Push {
            cache: cache_ix,
            key,
            clock,
            wall_us: unix_us(),
        };
        match db.clock_now() {
            Some(clock) => marks.into_iter().for_each(|k| push(&log, record(clock, k))),
            None => {
                let (db, log) = (db.clone(), log.clone());
                tokio::spawn(async move {
                    let clock = db.clock().await;
                    marks.into_iter().for_each(|k| push(&log, record(clock, k)));
                });
            }
        }
    });
    assert!(set, "the near-cache run needs caches with a near cache");
}

pub(super) fn push(log: &Log, r: Record) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(r);
}

tokio::task_local! {
    /// Set around every read call: a loader that runs outside of it is a background refresh
    /// (the runtime spawns refreshes; a miss runs the loader in the caller's task).
    pub(super) static IN_READ_CALL: ();
}

/// What a loader needs to do its job and log itself. (`Clone`: a background refresh owns a
/// copy.)
#[derive(Clone)]
pub struct LoadCtx {
    pub(super) db: Db,
    pub(super) log: Log,
    pub(super) func: Func,
    pub(super) history: u32,
    pub(super) cache: u32,
    pub(super) task: u32,
    pub(super) call_start: u64,
    pub(super) delay_before_ms: u64,
    pub(super) delay_after_ms: u64,
    /// The loader returns `Err` (fresh functions only).
    pub(super) fail: bool,
    /// Fresh functions: writes of the row from inside the loader (see [`LoadCtx::run`]), and
    /// whether the read call may be cancelled (then a miss load makes none: a write dropped
    /// mid-flight would not be logged).
    pub(super) race: Option<Race>,
}

/// A write of the loaded row from inside a fresh function's loader, right after it read the
/// row's version: the load's result is then older than a completed invalidation and must not
/// be stored (one refresh in four, one miss load in twenty).
#[derive(Clone)]
pub(super) struct Race {
    pub(super) writes: FreshWrites,
    pub(super) draw: u32,
    pub(super) inval: Inval,
    pub(super) cancellable: bool,
}

impl LoadCtx {
    /// Reads row `id` between the two delays and logs the run; returns the version read.
    pub(super) async fn run(&self, id: u64, absent_fails: bool) -> u64 {
        let refresh = IN_READ_CALL.try_with(|_| ()).is_err();
        let start = self.db.clock().await;
        pause(self.delay_before_ms).await;
        let version = self.db.read(id).await;
        if let Some(race) = &self.race {
            let odds = if refresh { 25 } else { 5 };
            if race.draw < odds && (refresh || !race.cancellable) {
                let task = RACE_TASK + self.task;
                race.writes
                    .write(task, self.history, id, race.inval, 0, None)
                    .await;
            }
        }
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
                refresh,
                failed: self.fail || (absent_fails && version == 0),
                inval: None,
                wall_ms: unix_ms(),
                start_us: 0,
                end_us: 0,
                marker: None,
            }),
        );
        version
    }

    pub(super) async fn load(&self, id: u64) -> Option<u64> {
        let version = self.run(id, false).await;
        (version > 0).then_some(version)
    }

    /// The loader of `get_or_load` (no `None`): an absent row is `Err(`[`ABSENT`]`)`.
    pub(super) async fn load_required(&self, id: u64) -> Result<u64, String> {
        let version = self.run(id, true).await;
        if version == 0 {
            return Err(ABSENT.to_owned());
        }
        Ok(version)
    }

    pub(super) async fn load_fresh(&self, id: u64) -> Result<Option<u64>, String> {
        let version = self.run(id, false).await;
        if self.fail {
            return Err(format!(
                "injected loader failure (row {id} at version {version})"
            ));
        }
        Ok((version > 0).then_some(version))
    }
}

/// Task number of a write made from inside a loader: this plus the reader's task number.
pub const RACE_TASK: u32 = 10_000;

/// Sleeps `ms` milliseconds (workload shape only, never synchronisation); 0 = yield once.
pub(super) async fn pause(ms: u64) {
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

/// Stale-while-revalidate on a fresh row: fresh for 1 s, then served from a 30 s grace window
/// while ONE background refresh reloads it; in group `g`'s tag.
#[cached(key = "rowg:{id}", ttl = 1, stale = 30, tags = ["grp:{g}"], cache = cache)]
pub async fn read_rowg(
    cache: &Cache,
    g: u64,
    id: u64,
    ctx: &LoadCtx,
) -> Result<Option<u64>, String> {
    ctx.load_fresh(id).await
}

/// XFetch on a fresh row: hits near the end of the 1 s `ttl` refresh early; no grace window.
#[cached(key = "rowe:{id}", ttl = 1, early_refresh = 1.0, tags = ["grp:{g}"], cache = cache)]
pub async fn read_rowe(
    cache: &Cache,
    g: u64,
    id: u64,
    ctx: &LoadCtx,
) -> Result<Option<u64>, String> {
    ctx.load_fresh(id).await
}

/// Grace window with a soft timeout: a call in the grace window waits up to 5 ms for the
/// refresh, then returns the stale value.
#[cached(
    key = "rowt:{id}",
    ttl = 1,
    stale = 30,
    timeout_ms = 5,
    tags = ["grp:{g}"],
    cache = cache
)]
pub async fn read_rowt(
    cache: &Cache,
    g: u64,
    id: u64,
    ctx: &LoadCtx,
) -> Result<Option<u64>, String> {
    ctx.load_fresh(id).await
}

/// [`read_row`] with a near cache: a Redis hit is kept in this cache's process for up to 60 s,
/// evicted by the invalidation pushes of Redis.
#[cached(key = "rown:{id}", ttl = 300, local_ttl = 60, cache = cache)]
pub async fn read_rown(cache: &Cache, id: u64, ctx: &LoadCtx) -> Option<u64> {
    ctx.load(id).await
}

/// [`read_row0`] with a near cache.
#[cached(key = "rown0:{id}", ttl = 300, negative_ttl = 0, local_ttl = 60, cache = cache)]
pub async fn read_rown0(cache: &Cache, id: u64, ctx: &LoadCtx) -> Option<u64> {
    ctx.load(id).await
}

/// Stale-while-revalidate with a near copy (`local_ttl` + `stale`): fresh for 1 s, a near
/// copy kept for up to 1 s, then served (near copy or Redis) from a 30 s grace window while
/// ONE background refresh reloads it; in group `g`'s tag.
#[cached(
    key = "rowgn:{id}",
    ttl = 1,
    stale = 30,
    local_ttl = 1,
    tags = ["grp:{g}"],
    cache = cache
)]
pub async fn read_rowgn(
    cache: &Cache,
    g: u64,
    id: u64,
    ctx: &LoadCtx,
) -> Result<Option<u64>, String> {
    ctx.load_fresh(id).await
}

/// The error a `get_or_load` loader returns for an absent row (never cached); the reader
/// reports it as version 0, so that such reads are checked too.
pub const ABSENT: &str = "absent";

/// The options of programmatic reader `func` (an `Api*` [`Func`]) on a row of group `g`:
/// the policy of its attribute counterpart ([`Func::base`]).
pub fn api_options(func: Func, g: u64) -> EntryOptions {
    let s = Duration::from_secs;
    let grp = || [format!("grp:{g}")];
    let opts = match func {
        Func::ApiRow => EntryOptions::new(s(300)),
        Func::ApiRow0 => EntryOptions::new(s(300)).negative_ttl(Duration::ZERO),
        Func::ApiRowN => EntryOptions::new(s(300)).local_ttl(s(60)),
        Func::ApiRowN0 => EntryOptions::new(s(300))
            .negative_ttl(Duration::ZERO)
            .local_ttl(s(60)),
        Func::ApiRowG => EntryOptions::new(s(1)).stale(s(30)).tags(grp()),
        Func::ApiRowT => EntryOptions::new(s(1))
            .stale(s(30))
            .soft_timeout(Duration::from_millis(5))
            .tags(grp()),
        Func::ApiRowGN => EntryOptions::new(s(1))
            .stale(s(30))
            .local_ttl(s(1))
            .tags(grp()),
        f => panic!("{f:?} is not a programmatic reader"),
    };
    let ix = Func::ALL.iter().position(|f| *f == func).unwrap() - 8;
    opts.name(API_NAMES[ix])
}

/// A programmatic reader's call: `get_or_load_optional` on the key of [`Func::base`], or
/// `get_or_load` for [`Func::ApiRow0`] / [`Func::ApiRowN0`] (whose keys never hold a
/// negative entry), its `Err(ABSENT)` mapped to `Ok(None)`.
pub async fn api_read(
    cache: &Cache,
    func: Func,
    g: u64,
    id: u64,
    ctx: &LoadCtx,
) -> Result<Option<u64>, String> {
    let opts = api_options(func, g);
    let key = format!("{}:{id}", func.prefix());
    let ctx = ctx.clone();
    match func {
        Func::ApiRow0 | Func::ApiRowN0 => {
            let got: Result<u64, String> = cache
                .get_or_load(
                    &key,
                    &opts,
                    move || async move { ctx.load_required(id).await },
                )
                .await;
            match got {
                Err(e) if e == ABSENT => Ok(None),
                r => r.map(Some),
            }
        }
        f if f.is_fresh() => {
            cache
                .get_or_load_optional(&key, &opts, move || async move { ctx.load_fresh(id).await })
                .await
        }
        _ => {
            cache
                .get_or_load_optional(&key, &opts, move || async move { Ok(ctx.load(id).await) })
                .await
        }
    }
}

/// The write of the near-cache run: deletes the near functions' keys.
#[invalidates("rown:{id}", "rown0:{id}", cache = cache)]
pub async fn write_rown(cache: &Cache, id: u64, db: &Db, delay_ms: u64, written: &AtomicU64) {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
}

/// The same as [`write_rown`], under another name.
#[invalidates("rown:{id}", "rown0:{id}", cache = cache)]
pub async fn write_rown_b(cache: &Cache, id: u64, db: &Db, delay_ms: u64, written: &AtomicU64) {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
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

/// A write of a fresh row that deletes the row's four keys (no tag).
#[invalidates("rowg:{id}", "rowe:{id}", "rowt:{id}", "rowgn:{id}", cache = cache)]
pub async fn write_fresh_keys(cache: &Cache, id: u64, db: &Db, delay_ms: u64, written: &AtomicU64) {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
}

/// A write of a fresh row that deletes the row's keys and voids its group's tag.
#[invalidates(
    "rowg:{id}",
    "rowe:{id}",
    "rowt:{id}",
    "rowgn:{id}",
    tags = ["grp:{g}"],
    cache = cache
)]
pub async fn write_fresh_keys_tag(
    cache: &Cache,
    g: u64,
    id: u64,
    db: &Db,
    delay_ms: u64,
    written: &AtomicU64,
) {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
}

/// A write of a fresh row invalidated ONLY through its group's tag.
#[invalidates(tags = ["grp:{g}"], cache = cache)]
pub async fn write_fresh_tag(
    cache: &Cache,
    g: u64,
    id: u64,
    db: &Db,
    delay_ms: u64,
    written: &AtomicU64,
) {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
}

/// A write of a fresh row followed by `Cache::invalidate_tag("grp:{g}")` by hand.
pub async fn write_fresh_by_hand(
    cache: &Cache,
    g: u64,
    id: u64,
    db: &Db,
    delay_ms: u64,
    written: &AtomicU64,
) -> Result<(), cache_runtime::Error> {
    pause(delay_ms).await;
    let v = db.bump(id).await;
    written.store(v, SeqCst);
    cache.invalidate_tag(&format!("grp:{g}")).await
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
    /// Share of reads that go to the freshness-layer functions (fresh rows); 0 = none.
    pub fresh_share: f64,
    /// Mean pause between two writes of each cache's fresh-row writer, ms (0 = no writer).
    /// Pick about `300 * caches` (all processes together), so that a cold group's entries
    /// outlive their 1 s `ttl`.
    pub fresh_write_ms: u64,
    /// Longest loader delay of the fresh functions (before and after the read, each), ms.
    pub max_fresh_delay_ms: u64,
    /// Near-cache run: the history rows are read through [`read_rown`] / [`read_rown0`]
    /// (`local_ttl`) and written with [`write_rown`] / [`write_rown_b`], each completed write
    /// followed by a marker `SET` on this server (the caches' server URL), and every cache's
    /// marker pushes are logged (set up by [`run`]). `None`: the plain functions.
    pub near_markers: Option<String>,
    /// Writers stop this long before the end of each history (the reads of this quiet tail
    /// come long enough after the last write for the near-cache bound rule to apply).
    pub quiet_tail_ms: u64,
    /// Also read through the programmatic API (the `Api*` [`Func`]s: half of the history
    /// rows' reads, on the same keys as the attribute readers) and, on the fresh rows,
    /// through [`read_rowgn`] and the programmatic `stale` readers (4 of the 7 fresh
    /// readers). `false`: the attribute readers only (and the same draws as before).
    pub api_readers: bool,
}

impl Workload {
    /// A workload with the defaults of the checker's tests: `readers` and `writers` per cache,
    /// `caches` caches in all (across processes; it sets the fresh writers' pace).
    pub fn new(
        seed: u64,
        duration: Duration,
        cancel: Cancel,
        readers: u32,
        writers: u32,
        caches: u32,
    ) -> Workload {
        Workload {
            seed,
            cache_base: 0,
            duration,
            history_ms: 120,
            readers_per_cache: readers,
            writers_per_cache: writers,
            max_loader_delay_ms: 6,
            cancel,
            fresh_share: 0.4,
            fresh_write_ms: 300 * u64::from(caches.max(1)),
            max_fresh_delay_ms: 8,
            near_markers: None,
            quiet_tail_ms: 0,
            api_readers: false,
        }
    }

    /// Rows of history `h` (3 or 4, the same in every process for a given seed).
    pub fn rows(&self, h: u32) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, 0xFFFF, h, 0));
        let k = rng.random_range(3..=4u64);
        (1..=k).map(|i| u64::from(h) * ROWS_STRIDE + i).collect()
    }

    pub(super) fn cancels(&self, h: u32) -> bool {
        match self.cancel {
            Cancel::Never => false,
            Cancel::Always => true,
            Cancel::OddHistories => h % 2 == 1,
        }
    }
}
