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
//! **The freshness layer** (`stale`, `early_refresh`, `timeout_ms`, tags). Short histories
//! cannot show `ttl = 1` running out, so a second set of *fresh rows* lives for the whole run:
//! [`FRESH_GROUPS`] groups of [`FRESH_ROWS_PER_GROUP`] rows. Readers also call [`read_rowg`]
//! (`ttl = 1, stale = 30`), [`read_rowe`] (`ttl = 1, early_refresh = 1.0`) and [`read_rowt`]
//! (`ttl = 1, stale = 30, timeout_ms = 5`) on them, all tagged `grp:{g}`; their loaders have
//! random delays, and about one in eight returns `Err` (fail-safe: a refresh that fails keeps
//! the stale value). One long-lived writer per cache bumps a fresh row now and then (rarely
//! enough that entries outlive their `ttl` and are served from the grace window or refreshed
//! early) and invalidates it in one of four ways ([`Inval`]): the row's keys only
//! ([`write_fresh_keys`]), its keys and its group's tag ([`write_fresh_keys_tag`]), ONLY its
//! group's tag ([`write_fresh_tag`]: a load missing from the tag set would show as a stale
//! read), or by hand with [`Cache::invalidate_tag`] after the write. Groups are written with
//! different rates, so some entries are invalidated while refreshing and others live long;
//! one write in three is aimed at the moment the last group-wide invalidation's reloads leave
//! their `ttl`. And to race every kind of store against a completed invalidation on purpose,
//! one refresh in four and one miss load in twenty write their own row from inside the loader,
//! right after reading its version (a write like the fresh writer's, logged as task
//! [`RACE_TASK`]` + reader`): that load's result is then older than a completed invalidation,
//! and storing it would show as stale reads.
//!
//! **Programmatic readers** ([`Workload::api_readers`]). Half of the history rows' reads go
//! through [`Cache::get_or_load_optional`] (`api.row`, `api.rown`) or [`Cache::get_or_load`]
//! (`api.row0`, `api.rown0`: their keys never hold a negative entry; the loader's `Err` for
//! an absent row is reported as version 0) on the SAME keys as the attribute readers, with
//! the same value type (`u64`) and policy ([`api_options`]), so both kinds share entries,
//! leases and flights. On the fresh rows, [`read_rowgn`] (`#[cached]` with `local_ttl = 1`
//! and `stale = 30`) and the programmatic `stale` readers (`api.rowg`, `api.rowt`,
//! `api.rowgn` with `.stale(..)`, `.soft_timeout(..)`, `.local_ttl(..)`) join the three
//! attribute readers. The per-key checks ((b), (c), (d)) count a programmatic reader's loads
//! with its attribute counterpart's ([`Func::base`]): one key, one lease. The near `stale`
//! readers are checked like the near readers (a'): strict in the writer's cache, and in
//! other caches by the bound rule (their copies are evicted by an asynchronous push; fresh
//! writes set no marker, so the exact rule does not apply to them).
//!
//! **Checks** ([`check`]):
//! * (a) freshness: a completed read of row `r` that started at `s` returns a version `>= w`,
//!   where `w` is the highest version of a write of `r` that *completed* before `s`. For the
//!   freshness layer this is the whole rule: a value served from the grace window (older than
//!   its `ttl`) or by fail-safe is fine as long as no invalidation of its row completed before
//!   the read started, i.e. as long as its version is that of the latest completed write. (Every
//!   fresh write invalidates its own row's three keys, directly or through the tag.) Calls that
//!   returned `Err` carry no version and are not checked. In runs with faults, a stale read is
//!   excused (reported, not a failure) when a newer write's invalidation may not have been
//!   delivered and the write ran in another process (the writing process delivers its queued
//!   invalidations before it reads), or when the write's `Cache::invalidate_tag` returned `Err`
//!   (it queues nothing: the caller is told).
//! * (b) one load per generation (`row` and `row0`): a generation of version `v` of row `r`
//!   lasts from the end of the last write that made a version `<= v` to the start of the first
//!   write that made a version `> v`. Loader runs that read `v`, ended inside the generation and
//!   belong to a read call that *started* inside it are counted per (function, row, generation);
//!   in histories without cancellations and without faults the count must be at most 1, across
//!   all caches. (A read call that started before the generation may hold a lease taken before
//!   the write's deletion: its result is then discarded by design and a second load is
//!   legitimate, so such loads are shown in the broader "loader entry" distribution only.) For
//!   `read_row0` only generations `v >= 1` are counted, since a `None` is never cached there.
//!   (b) does not apply to the fresh functions: a `ttl = 1` entry is reloaded (refreshed) at
//!   the same version, and a group's tag invalidation reloads rows whose version did not change.
//! * (c) one loader at a time per key (fresh functions): two loader runs of the same key must
//!   not overlap in time unless an invalidation of that key (a write of the row, or a group-wide
//!   invalidation of its group) ran between them (started before the second one began and ended
//!   after the first one's read call started): the refresh lease, the miss lease and the
//!   in-process flight tables together allow one loader per key and generation across caches.
//!   For [`read_rowe`] (`early_refresh` without `stale`) an early refresh may still run when
//!   the entry's TTL ends (the refresh lease lives inside the entry), so an overlap of an early
//!   refresh with a miss load is counted separately, not as a failure. So is a load that ran
//!   *alone*: its read call saw two loads of the key fail in its process while it waited, and
//!   the runtime's waiters then each run their own loader rather than queue up behind one
//!   failing load after another (by design, see `protocol.rs`).
//! * (d) no miss without a cause (`stale` functions, [`read_rowg`] and [`read_rowt`]): after a
//!   successful miss load of a key, the next miss load of that key (not a refresh) needs an
//!   invalidation of the key in between, or the grace window's end (`ttl + stale` seconds, by
//!   wall clock): within the grace window every call is served (stale or fresh) and refreshed
//!   in the background, never a second miss. (Loads that ran alone, as in (c), excepted: they
//!   neither count as a cause-less second miss nor, since their results are not stored, as a
//!   first one.)
//!
//! (c) and (d) are strict in histories without cancellations and faults (both loads' read
//! calls), like (b).
//!
//! Loads tell whether they are a background refresh: a read call runs inside the task-local
//! scope of its task; a refresh runs in a spawned task, outside of it.
//!
//! The same code drives the in-process runs (`tests/tests/history.rs`) and each process of the
//! cross-process run (`src/bin/history_helper.rs`), so both produce the same [`Record`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{Cache, EntryOptions, FnStats, cached, invalidates};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{Raw, RedisServer, unix_ms};

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

/// Row ids per history are `history * ROWS_STRIDE + 1 ..`.
const ROWS_STRIDE: u64 = 8;

/// First id of the fresh rows (far above the histories' rows).
pub const FRESH_BASE: u64 = 1 << 40;
/// Groups of fresh rows (tag `grp:{g}`).
pub const FRESH_GROUPS: u64 = 3;
/// Fresh rows per group.
pub const FRESH_ROWS_PER_GROUP: u64 = 3;
/// Relative write rates of the groups: a hot group (entries rarely reach their `ttl`, often
/// invalidated during a refresh), a warm one and a cold one (entries live for seconds and are
/// served from the grace window and refreshed).
const FRESH_GROUP_WEIGHTS: [u32; FRESH_GROUPS as usize] = [5, 3, 1];
/// Id stride between groups.
const FRESH_GROUP_STRIDE: u64 = 16;
/// `ttl + stale` of the `stale` functions, ms (see check (d)).
const GRACE_END_MS: u64 = 31_000;

/// Whether `row` is a fresh row (read by the freshness-layer functions).
pub fn is_fresh_row(row: u64) -> bool {
    row >= FRESH_BASE
}

/// The group of a fresh row.
pub fn group_of(row: u64) -> u64 {
    (row - FRESH_BASE) / FRESH_GROUP_STRIDE
}

/// Fresh row `i` of group `g`.
pub fn fresh_row(g: u64, i: u64) -> u64 {
    FRESH_BASE + g * FRESH_GROUP_STRIDE + i + 1
}

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

/// Which cached function a read or load belongs to.
///
/// The `Api*` readers call the programmatic API ([`Cache::get_or_load`] /
/// [`Cache::get_or_load_optional`]) on the keys of their attribute counterpart
/// ([`Func::base`]) with the same value type (`u64`) and the same policy as
/// [`EntryOptions`]: they share entries, leases and flights with it, and the checks that
/// are per key ((b), (c), (d)) count both together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Func {
    /// [`read_row`]: key `row:{id}`, `ttl = 300` (negative entries cached too).
    Row,
    /// [`read_row0`]: key `row0:{id}`, `ttl = 300, negative_ttl = 0`.
    Row0,
    /// [`read_rowg`]: key `rowg:{id}`, `ttl = 1, stale = 30`, tag `grp:{g}`.
    RowG,
    /// [`read_rowe`]: key `rowe:{id}`, `ttl = 1, early_refresh = 1.0`, tag `grp:{g}`.
    RowE,
    /// [`read_rowt`]: key `rowt:{id}`, `ttl = 1, stale = 30, timeout_ms = 5`, tag `grp:{g}`.
    RowT,
    /// [`read_rown`]: key `rown:{id}`, `ttl = 300, local_ttl = 60` (near cache).
    RowN,
    /// [`read_rown0`]: key `rown0:{id}`, `ttl = 300, negative_ttl = 0, local_ttl = 60`.
    RowN0,
    /// [`read_rowgn`]: key `rowgn:{id}`, `ttl = 1, stale = 30, local_ttl = 1`, tag `grp:{g}`
    /// (a near copy with a grace window).
    RowGN,
    /// `get_or_load_optional("row:{id}")`, the policy of [`read_row`].
    ApiRow,
    /// `get_or_load("row0:{id}")` (`Result<u64, _>`; an absent row is an `Err` the reader
    /// maps back to version 0), the policy of [`read_row0`].
    ApiRow0,
    /// `get_or_load_optional("rown:{id}")` with `.local_ttl(60 s)`, as [`read_rown`].
    ApiRowN,
    /// `get_or_load("rown0:{id}")` with `.local_ttl(60 s)`, as [`read_rown0`].
    ApiRowN0,
    /// `get_or_load_optional("rowg:{id}")` with `.stale(30 s)`, as [`read_rowg`].
    ApiRowG,
    /// `get_or_load_optional("rowt:{id}")` with `.stale(30 s).soft_timeout(5 ms)`, as
    /// [`read_rowt`].
    ApiRowT,
    /// `get_or_load_optional("rowgn:{id}")` with `.stale(30 s).local_ttl(1 s)`, as
    /// [`read_rowgn`].
    ApiRowGN,
}

impl Func {
    /// Every function.
    pub const ALL: [Func; 15] = [
        Func::Row,
        Func::Row0,
        Func::RowG,
        Func::RowE,
        Func::RowT,
        Func::RowN,
        Func::RowN0,
        Func::RowGN,
        Func::ApiRow,
        Func::ApiRow0,
        Func::ApiRowN,
        Func::ApiRowN0,
        Func::ApiRowG,
        Func::ApiRowT,
        Func::ApiRowGN,
    ];
    /// The freshness-layer functions (on the fresh rows).
    pub const FRESH: [Func; 3] = [Func::RowG, Func::RowE, Func::RowT];
    /// The freshness-layer readers of a [`Workload::api_readers`] run.
    pub const FRESH_API: [Func; 7] = [
        Func::RowG,
        Func::RowE,
        Func::RowT,
        Func::RowGN,
        Func::ApiRowG,
        Func::ApiRowT,
        Func::ApiRowGN,
    ];

    /// The attribute function whose keys (and policy) this reader uses.
    pub fn base(self) -> Func {
        match self {
            Func::ApiRow => Func::Row,
            Func::ApiRow0 => Func::Row0,
            Func::ApiRowN => Func::RowN,
            Func::ApiRowN0 => Func::RowN0,
            Func::ApiRowG => Func::RowG,
            Func::ApiRowT => Func::RowT,
            Func::ApiRowGN => Func::RowGN,
            f => f,
        }
    }

    /// Whether it calls the programmatic API.
    pub fn is_api(self) -> bool {
        self.base() != self
    }

    /// The key prefix (shared with [`Func::base`]).
    fn prefix(self) -> &'static str {
        match self.base() {
            Func::Row => "row",
            Func::Row0 => "row0",
            Func::RowG => "rowg",
            Func::RowE => "rowe",
            Func::RowT => "rowt",
            Func::RowN => "rown",
            Func::RowN0 => "rown0",
            _ => "rowgn",
        }
    }

    /// The reader kind's name in figures: the key prefix, `api.` before it for the
    /// programmatic readers.
    pub fn label(self) -> String {
        if self.is_api() {
            format!("api.{}", self.prefix())
        } else {
            self.prefix().to_owned()
        }
    }

    /// Whether it keeps a near-cache copy (`local_ttl`).
    pub fn is_near(self) -> bool {
        matches!(self.base(), Func::RowN | Func::RowN0 | Func::RowGN)
    }

    /// Whether it is a freshness-layer function.
    pub fn is_fresh(self) -> bool {
        matches!(
            self.base(),
            Func::RowG | Func::RowE | Func::RowT | Func::RowGN
        )
    }

    /// Whether its entries have a grace window (`stale`).
    fn has_grace(self) -> bool {
        matches!(self.base(), Func::RowG | Func::RowT | Func::RowGN)
    }
}

/// How a write of a fresh row invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Inval {
    /// `#[invalidates("rowg:{id}", "rowe:{id}", "rowt:{id}", "rowgn:{id}")]`: the row's keys.
    Keys,
    /// The row's keys and `tags = ["grp:{g}"]`.
    KeysAndTag,
    /// Only `tags = ["grp:{g}"]`: the row's entries are found through the tag set alone.
    Tag,
    /// `Cache::invalidate_tag("grp:{g}")` called by hand after the write.
    TagByHand,
}

impl Inval {
    /// Whether it voids the whole group (every fresh row of the row's group).
    pub fn group_wide(self) -> bool {
        !matches!(self, Inval::Keys)
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
    /// For a load: the start stamp of the read call that ran it (for a background refresh:
    /// of the call that started it); otherwise `start`.
    pub call_start: u64,
    /// Clock before the call (for a load: when the loader began).
    pub start: u64,
    /// Clock after the call returned; `None` when it was cancelled.
    pub end: Option<u64>,
    /// Completed write: the invalidation may have failed or been queued (the writer's function
    /// counted backend errors, or fewer invalidations than it makes, on this cache during the
    /// call; `invalidate_tag` returned `Err`).
    /// Read: the reader's cache could not use Redis (its circuit was not closed at the read's
    /// start or end), so invalidations by other caches could not reach it.
    pub suspect: bool,
    /// Load: a background refresh (ran outside the read call's task).
    #[serde(default)]
    pub refresh: bool,
    /// Load: the loader returned `Err`; read: the call returned `Err` (no version).
    #[serde(default)]
    pub failed: bool,
    /// Write of a fresh row: how it invalidated (`None`: a history row's [`write_row`]).
    #[serde(default)]
    pub inval: Option<Inval>,
    /// Load: wall clock (unix ms) when the loader ended (check (d)'s grace window end).
    #[serde(default)]
    pub wall_ms: u64,
    /// Read and write of the near-cache run: wall clock (unix µs) right before the call.
    #[serde(default)]
    pub start_us: u64,
    /// Completed read and write of the near-cache run: wall clock (unix µs) right after the
    /// call returned.
    #[serde(default)]
    pub end_us: u64,
    /// Completed write of the near-cache run: the key of the marker written right after it
    /// returned (see [`Record::Push`]).
    #[serde(default)]
    pub marker: Option<String>,
}

impl Event {
    fn key(&self) -> String {
        match (self.kind, self.inval) {
            (Kind::Write, None) if self.marker.is_some() || self.func == Func::RowN => {
                format!("rown:{0}+rown0:{0}", self.row)
            }
            (Kind::Write, None) => format!("row:{0}+row0:{0}", self.row),
            (Kind::Write, Some(Inval::Keys)) => format!("rowg+rowe+rowt+rowgn:{}", self.row),
            (Kind::Write, Some(Inval::KeysAndTag)) => {
                format!(
                    "rowg+rowe+rowt+rowgn:{} +tag grp:{}",
                    self.row,
                    group_of(self.row)
                )
            }
            (Kind::Write, Some(Inval::Tag)) => {
                format!("tag grp:{} only (row {})", group_of(self.row), self.row)
            }
            (Kind::Write, Some(Inval::TagByHand)) => format!(
                "invalidate_tag(grp:{}) (row {})",
                group_of(self.row),
                self.row
            ),
            _ => format!("{}:{}", self.func.label(), self.row),
        }
    }

    /// Whether this write invalidates the key of `row` of a fresh function.
    fn invalidates_fresh(&self, row: u64) -> bool {
        match self.inval {
            None => false,
            Some(i) => self.row == row || (i.group_wide() && group_of(self.row) == group_of(row)),
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
            Kind::Load if self.refresh => "  refresh",
            Kind::Load => "  load",
        };
        write!(
            f,
            "[{:>7} .. {:>9}] cache#{} task#{:<4} {what} {:<16} version {}",
            self.start,
            end,
            self.cache,
            self.task,
            self.key(),
            self.version
        )?;
        if self.failed {
            f.write_str(" (Err)")?;
        }
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
    /// `hits + negative_hits` of the readers.
    pub hits: u64,
    /// `misses` of the readers.
    pub misses: u64,
    /// `loads` of the readers.
    pub loads: u64,
    /// `load_errors` of the readers.
    #[serde(default)]
    pub load_errors: u64,
    /// `lock_waits` of the readers.
    pub lock_waits: u64,
    /// `lock_timeouts` of the readers.
    pub lock_timeouts: u64,
    /// `backend_errors` of all functions.
    pub backend_errors: u64,
    /// `invalidations` of the writers (keys deleted).
    pub invalidations: u64,
    /// `tag_invalidations` of the writers and of `Cache::invalidate_tag`.
    #[serde(default)]
    pub tag_invalidations: u64,
    /// `stale_served` of the readers (grace window, soft timeout, fail-safe).
    #[serde(default)]
    pub stale_served: u64,
    /// `refreshes` of the readers (background refreshes that won the refresh lease).
    #[serde(default)]
    pub refreshes: u64,
    /// `early_refreshes` of the readers (XFetch).
    #[serde(default)]
    pub early_refreshes: u64,
    /// `refresh_errors` of the readers (a refresh's loader failed: fail-safe).
    #[serde(default)]
    pub refresh_errors: u64,
    /// `soft_timeouts` of the readers (`timeout_ms`).
    #[serde(default)]
    pub soft_timeouts: u64,
    /// `local_hits` of the readers (near cache).
    #[serde(default)]
    pub local_hits: u64,
    /// `local_evictions` of the readers (near cache).
    #[serde(default)]
    pub local_evictions: u64,
    /// `tracking_resets` of the cache (near cache).
    #[serde(default)]
    pub tracking_resets: u64,
}

impl Counts {
    /// Counters of one cache.
    pub fn of(cache: &Cache) -> Counts {
        let s = cache.stats();
        let readers: Vec<FnStats> = [
            READ_NAME,
            READ0_NAME,
            READG_NAME,
            READE_NAME,
            READT_NAME,
            READN_NAME,
            READN0_NAME,
            READGN_NAME,
        ]
        .iter()
        .chain(API_NAMES.iter())
        .map(|n| s.function(n))
        .collect();
        let writers: Vec<FnStats> = [
            WRITE_NAME,
            WRITE_B_NAME,
            WRITE_FK_NAME,
            WRITE_FKT_NAME,
            WRITE_FT_NAME,
            INVALIDATE_TAG_NAME,
            WRITEN_NAME,
            WRITEN_B_NAME,
        ]
        .iter()
        .map(|n| s.function(n))
        .collect();
        let r = |f: fn(&FnStats) -> u64| readers.iter().map(f).sum::<u64>();
        let w = |f: fn(&FnStats) -> u64| writers.iter().map(f).sum::<u64>();
        Counts {
            hits: r(|s| s.hits + s.negative_hits),
            misses: r(|s| s.misses),
            loads: r(|s| s.loads),
            load_errors: r(|s| s.load_errors),
            lock_waits: r(|s| s.lock_waits),
            lock_timeouts: r(|s| s.lock_timeouts),
            backend_errors: r(|s| s.backend_errors) + w(|s| s.backend_errors),
            invalidations: w(|s| s.invalidations),
            tag_invalidations: w(|s| s.tag_invalidations),
            stale_served: r(|s| s.stale_served),
            refreshes: r(|s| s.refreshes),
            early_refreshes: r(|s| s.early_refreshes),
            refresh_errors: r(|s| s.refresh_errors),
            soft_timeouts: r(|s| s.soft_timeouts),
            local_hits: r(|s| s.local_hits),
            local_evictions: r(|s| s.local_evictions),
            tracking_resets: s.function("cache_runtime::near").tracking_resets,
        }
    }

    /// Adds `o` to `self`.
    pub fn add(&mut self, o: &Counts) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.loads += o.loads;
        self.load_errors += o.load_errors;
        self.lock_waits += o.lock_waits;
        self.lock_timeouts += o.lock_timeouts;
        self.backend_errors += o.backend_errors;
        self.invalidations += o.invalidations;
        self.tag_invalidations += o.tag_invalidations;
        self.stale_served += o.stale_served;
        self.refreshes += o.refreshes;
        self.early_refreshes += o.early_refreshes;
        self.refresh_errors += o.refresh_errors;
        self.soft_timeouts += o.soft_timeouts;
        self.local_hits += o.local_hits;
        self.local_evictions += o.local_evictions;
        self.tracking_resets += o.tracking_resets;
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
    /// Near-cache run: cache `cache` processed the invalidation push of a write's marker
    /// (`key`); `clock` was read after it had evicted every key of that push. A marker is
    /// written right after its write returned, so its push reaches every tracking connection
    /// after the push of the write's own invalidation: from `clock` on, this cache holds no
    /// copy older than that write.
    Push {
        /// The cache (process) whose near cache processed it.
        cache: u32,
        /// The marker key (with the namespace).
        key: String,
        /// Logical clock, read after the eviction.
        clock: u64,
        /// Wall clock (unix µs), after the eviction.
        wall_us: u64,
    },
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

fn push(log: &Log, r: Record) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(r);
}

tokio::task_local! {
    /// Set around every read call: a loader that runs outside of it is a background refresh
    /// (the runtime spawns refreshes; a miss runs the loader in the caller's task).
    static IN_READ_CALL: ();
}

/// What a loader needs to do its job and log itself. (`Clone`: a background refresh owns a
/// copy.)
#[derive(Clone)]
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
    /// The loader returns `Err` (fresh functions only).
    fail: bool,
    /// Fresh functions: writes of the row from inside the loader (see [`LoadCtx::run`]), and
    /// whether the read call may be cancelled (then a miss load makes none: a write dropped
    /// mid-flight would not be logged).
    race: Option<Race>,
}

/// A write of the loaded row from inside a fresh function's loader, right after it read the
/// row's version: the load's result is then older than a completed invalidation and must not
/// be stored (one refresh in four, one miss load in twenty).
#[derive(Clone)]
struct Race {
    writes: FreshWrites,
    draw: u32,
    inval: Inval,
    cancellable: bool,
}

impl LoadCtx {
    /// Reads row `id` between the two delays and logs the run; returns the version read.
    async fn run(&self, id: u64, absent_fails: bool) -> u64 {
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

    async fn load(&self, id: u64) -> Option<u64> {
        let version = self.run(id, false).await;
        (version > 0).then_some(version)
    }

    /// The loader of `get_or_load` (no `None`): an absent row is `Err(`[`ABSENT`]`)`.
    async fn load_required(&self, id: u64) -> Result<u64, String> {
        let version = self.run(id, true).await;
        if version == 0 {
            return Err(ABSENT.to_owned());
        }
        Ok(version)
    }

    async fn load_fresh(&self, id: u64) -> Result<Option<u64>, String> {
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

/// A seed for `CacheBuilder::xfetch_seed` of cache `cache_ix` (reproducible draws).
pub fn xfetch_seed(seed: u64, cache_ix: u32) -> u64 {
    mix(seed, cache_ix, 0xFFFC, 0)
}

/// Runs `work` on `caches` (each stands for a process) against `db`, history after history,
/// starting now, logging to `log`; returns how many histories ran. Each cache's fresh-row
/// writer runs alongside, across histories.
pub async fn run(work: &Workload, caches: &[Cache], db: &Db, log: &Log) -> u32 {
    let t0 = Instant::now();
    let markers = match &work.near_markers {
        Some(url) => {
            for (i, cache) in caches.iter().enumerate() {
                log_marker_pushes(cache, work.cache_base + i as u32, db, log);
            }
            Some(Raw::connect(url).await)
        }
        None => None,
    };
    let fresh: Vec<FreshWrites> = caches
        .iter()
        .enumerate()
        .map(|(i, cache)| FreshWrites {
            cache: cache.clone(),
            cache_ix: work.cache_base + i as u32,
            db: db.clone(),
            log: log.clone(),
            lock: Arc::default(),
        })
        .collect();
    let fresh_writers: Vec<_> = if work.fresh_share > 0.0 && work.fresh_write_ms > 0 {
        fresh
            .iter()
            .map(|writes| {
                let task = FreshWriter {
                    writes: writes.clone(),
                    task: work.readers_per_cache + work.writers_per_cache,
                    rng: StdRng::seed_from_u64(mix(work.seed, writes.cache_ix, 0xFFFD, 0)),
                    work: work.clone(),
                    t0,
                };
                tokio::spawn(task.run())
            })
            .collect()
    } else {
        Vec::new()
    };
    let (mut h, mut ran) = (0u32, 0u32);
    while (u64::from(h) * work.history_ms) < work.duration.as_millis() as u64 {
        let deadline = t0 + Duration::from_millis(u64::from(h + 1) * work.history_ms);
        // A history whose time is already over (the previous one overran, e.g. a lease wait
        // of `lock_ms`) is skipped, so that every process keeps to the same schedule.
        if deadline > Instant::now() {
            run_history(work, h, caches, &fresh, db, log, deadline, &markers).await;
            ran += 1;
        }
        h += 1;
    }
    for w in fresh_writers {
        w.await.expect("a fresh writer panicked");
    }
    ran
}

#[allow(clippy::too_many_arguments)]
async fn run_history(
    work: &Workload,
    h: u32,
    caches: &[Cache],
    fresh: &[FreshWrites],
    db: &Db,
    log: &Log,
    deadline: Instant,
    markers: &Option<Raw>,
) {
    let rows: Arc<[u64]> = work.rows(h).into();
    let cancels = work.cancels(h);
    let mut tasks = Vec::new();
    for (i, cache) in caches.iter().enumerate() {
        let cache_ix = work.cache_base + i as u32;
        for t in 0..work.readers_per_cache + work.writers_per_cache {
            let rng = StdRng::seed_from_u64(mix(work.seed, cache_ix, h, t));
            let (cache, db, log, rows) = (cache.clone(), db.clone(), log.clone(), rows.clone());
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
                fresh: fresh[i].clone(),
                markers: markers.clone(),
            };
            tasks.push(if t < work.readers_per_cache {
                tokio::spawn(task.reader(work.clone()))
            } else {
                tokio::spawn(task.writer(history_ms, work.quiet_tail_ms))
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
    fresh: FreshWrites,
    /// Near-cache run: where the writer sets its markers.
    markers: Option<Raw>,
}

/// A cancellation timeout for a call, if it is to be cancelled.
fn cancel_after(rng: &mut StdRng, cancels: bool) -> Option<Duration> {
    (cancels && rng.random_ratio(1, 10)).then(|| Duration::from_millis(rng.random_range(0..=6)))
}

/// A loader or write delay: 0 one time in three, else up to `max` ms.
fn delay(rng: &mut StdRng, max: u64) -> u64 {
    if rng.random_ratio(1, 3) {
        0
    } else {
        rng.random_range(0..=max)
    }
}

impl Task {
    async fn reader(mut self, work: Workload) {
        while Instant::now() < self.deadline {
            let fresh = work.fresh_share > 0.0 && self.rng.random_bool(work.fresh_share);
            let (func, row, group) = if fresh {
                let funcs: &[Func] = if work.api_readers {
                    &Func::FRESH_API
                } else {
                    &Func::FRESH
                };
                let func = funcs[self.rng.random_range(0..funcs.len())];
                let g = self.rng.random_range(0..FRESH_GROUPS);
                let i = self.rng.random_range(0..FRESH_ROWS_PER_GROUP);
                (func, fresh_row(g, i), g)
            } else {
                let row = self.rows[self.rng.random_range(0..self.rows.len())];
                let near = self.markers.is_some();
                let mut func = match (near, self.rng.random_bool(0.5)) {
                    (false, true) => Func::Row,
                    (false, false) => Func::Row0,
                    (true, true) => Func::RowN,
                    (true, false) => Func::RowN0,
                };
                // Half of the reads of an `api_readers` run go through the programmatic API.
                if work.api_readers && self.rng.random_bool(0.5) {
                    func = match func {
                        Func::Row => Func::ApiRow,
                        Func::Row0 => Func::ApiRow0,
                        Func::RowN => Func::ApiRowN,
                        _ => Func::ApiRowN0,
                    };
                }
                (func, row, 0)
            };
            let cancel = cancel_after(&mut self.rng, self.cancels);
            let max_delay = if fresh {
                work.max_fresh_delay_ms
            } else {
                work.max_loader_delay_ms
            };
            let (delay_before_ms, delay_after_ms) = (
                delay(&mut self.rng, max_delay),
                delay(&mut self.rng, max_delay),
            );
            let fail = fresh && self.rng.random_ratio(1, 8);
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
                fail,
                race: fresh.then(|| Race {
                    writes: self.fresh.clone(),
                    draw: self.rng.random_range(0..100),
                    inval: random_inval(&mut self.rng),
                    cancellable: cancel.is_some(),
                }),
            };
            let start_us = unix_us();
            let call = IN_READ_CALL.scope((), async {
                match func {
                    Func::Row => Ok(read_row(&self.cache, row, &ctx).await),
                    Func::Row0 => Ok(read_row0(&self.cache, row, &ctx).await),
                    Func::RowN => Ok(read_rown(&self.cache, row, &ctx).await),
                    Func::RowN0 => Ok(read_rown0(&self.cache, row, &ctx).await),
                    Func::RowG => read_rowg(&self.cache, group, row, &ctx).await,
                    Func::RowE => read_rowe(&self.cache, group, row, &ctx).await,
                    Func::RowT => read_rowt(&self.cache, group, row, &ctx).await,
                    Func::RowGN => read_rowgn(&self.cache, group, row, &ctx).await,
                    api => api_read(&self.cache, api, group, row, &ctx).await,
                }
            });
            let got = match cancel {
                None => Some(call.await),
                Some(after) => tokio::time::timeout(after, call).await.ok(),
            };
            let end_us = unix_us();
            let end = match got {
                Some(_) => Some(self.db.clock().await),
                None => None,
            };
            let degraded = !(reachable_before && closed(&self.cache));
            let failed = matches!(got, Some(Err(_)));
            push(
                &self.log,
                Record::Event(Event {
                    kind: Kind::Read,
                    func,
                    history: self.history,
                    row,
                    version: got.and_then(Result::ok).flatten().unwrap_or(0),
                    cache: self.cache_ix,
                    task: self.task,
                    call_start: start,
                    start,
                    end,
                    suspect: degraded,
                    refresh: false,
                    failed,
                    inval: None,
                    wall_ms: 0,
                    start_us,
                    end_us,
                    marker: None,
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

    async fn writer(mut self, history_ms: u64, quiet_tail_ms: u64) {
        // The first write of each writer comes anywhere in the first half of the history, so
        // that rows stay absent (negative entries) for a while.
        let active = history_ms.saturating_sub(quiet_tail_ms);
        pause(self.rng.random_range(0..=active / 2)).await;
        let stop = self.deadline - Duration::from_millis(quiet_tail_ms);
        while Instant::now() < stop {
            let row = self.rows[self.rng.random_range(0..self.rows.len())];
            let cancel = cancel_after(&mut self.rng, self.cancels);
            let delay = delay(&mut self.rng, 3);
            let written = AtomicU64::new(0);
            // Writer tasks alternate between two functions: with two writers per cache, each
            // function's counters are this task's alone.
            let near = self.markers.is_some();
            let (name, b) = match (near, self.task.is_multiple_of(2)) {
                (false, true) => (WRITE_NAME, false),
                (false, false) => (WRITE_B_NAME, true),
                (true, true) => (WRITEN_NAME, false),
                (true, false) => (WRITEN_B_NAME, true),
            };
            let before = self.cache.stats().function(name);
            let start = self.db.clock().await;
            let start_us = unix_us();
            let call = async {
                match (near, b) {
                    (false, true) => write_row_b(&self.cache, row, &self.db, delay, &written).await,
                    (false, false) => write_row(&self.cache, row, &self.db, delay, &written).await,
                    (true, true) => write_rown_b(&self.cache, row, &self.db, delay, &written).await,
                    (true, false) => write_rown(&self.cache, row, &self.db, delay, &written).await,
                }
            };
            let done = match cancel {
                None => {
                    call.await;
                    true
                }
                Some(after) => tokio::time::timeout(after, call).await.is_ok(),
            };
            let end_us = unix_us();
            let end = if done {
                Some(self.db.clock().await)
            } else {
                None
            };
            // The marker: set after the write returned (and after its end stamp), so its push
            // follows the push of the write's invalidation on every tracking connection.
            let marker = match (&self.markers, end) {
                (Some(raw), Some(end)) => {
                    let key = format!(
                        "{}:mark:{}:{}:{}",
                        self.cache.namespace(),
                        self.cache_ix,
                        self.task,
                        end
                    );
                    raw.cmd::<()>(redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(60_000))
                        .await;
                    Some(key)
                }
                _ => None,
            };
            let after = self.cache.stats().function(name);
            let suspect = done
                && (after.backend_errors != before.backend_errors
                    || after.invalidations < before.invalidations + 2);
            push(
                &self.log,
                Record::Event(Event {
                    kind: Kind::Write,
                    func: if near { Func::RowN } else { Func::Row },
                    history: self.history,
                    row,
                    version: written.load(SeqCst),
                    cache: self.cache_ix,
                    task: self.task,
                    call_start: start,
                    start,
                    end,
                    suspect,
                    refresh: false,
                    failed: false,
                    inval: None,
                    wall_ms: 0,
                    start_us,
                    end_us,
                    marker,
                }),
            );
            let think = self.rng.random_range(2..=(history_ms / 8).max(3));
            pause(think).await;
        }
    }
}

/// What a write of a fresh row needs: the cache it invalidates through, and a lock that
/// serialises this cache's fresh writes (the fresh writer's and those made from inside
/// loaders), so that the counter deltas of each write's invalidating function are its own.
#[derive(Clone)]
pub struct FreshWrites {
    cache: Cache,
    cache_ix: u32,
    db: Db,
    log: Log,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl FreshWrites {
    /// Writes `row` (of group `g`) and invalidates it the `inval` way; logs the write.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        task: u32,
        history: u32,
        row: u64,
        inval: Inval,
        delay: u64,
        cancel: Option<Duration>,
    ) {
        let g = group_of(row);
        let _serial = self.lock.lock().await;
        let written = AtomicU64::new(0);
        let name = match inval {
            Inval::Keys => WRITE_FK_NAME,
            Inval::KeysAndTag => WRITE_FKT_NAME,
            Inval::Tag => WRITE_FT_NAME,
            Inval::TagByHand => INVALIDATE_TAG_NAME,
        };
        let before = self.cache.stats().function(name);
        let start = self.db.clock().await;
        let start_us = unix_us();
        let (cache, db) = (&self.cache, &self.db);
        let call = async {
            match inval {
                Inval::Keys => {
                    write_fresh_keys(cache, row, db, delay, &written).await;
                    true
                }
                Inval::KeysAndTag => {
                    write_fresh_keys_tag(cache, g, row, db, delay, &written).await;
                    true
                }
                Inval::Tag => {
                    write_fresh_tag(cache, g, row, db, delay, &written).await;
                    true
                }
                Inval::TagByHand => write_fresh_by_hand(cache, g, row, db, delay, &written)
                    .await
                    .is_ok(),
            }
        };
        let done = match cancel {
            None => Some(call.await),
            Some(after) => tokio::time::timeout(after, call).await.ok(),
        };
        let end_us = unix_us();
        let end = match done {
            Some(_) => Some(self.db.clock().await),
            None => None,
        };
        let after = self.cache.stats().function(name);
        let (keys, tags) = match inval {
            Inval::Keys => (4, 0),
            Inval::KeysAndTag => (4, 1),
            Inval::Tag | Inval::TagByHand => (0, 1),
        };
        let suspect = match done {
            None => false,
            Some(ok) => {
                !ok || after.backend_errors != before.backend_errors
                    || after.invalidations < before.invalidations + keys
                    || after.tag_invalidations < before.tag_invalidations + tags
            }
        };
        push(
            &self.log,
            Record::Event(Event {
                kind: Kind::Write,
                func: Func::RowG,
                history,
                row,
                version: written.load(SeqCst),
                cache: self.cache_ix,
                task,
                call_start: start,
                start,
                end,
                suspect,
                refresh: false,
                failed: false,
                inval: Some(inval),
                wall_ms: 0,
                // The bound rule of the near fresh readers (`read_rowgn`) compares these.
                start_us,
                end_us,
                marker: None,
            }),
        );
    }
}

/// A random way to invalidate a fresh write.
fn random_inval(rng: &mut StdRng) -> Inval {
    match rng.random_range(0..10) {
        0..=2 => Inval::Keys,
        3..=4 => Inval::KeysAndTag,
        5..=7 => Inval::Tag,
        _ => Inval::TagByHand,
    }
}

/// One cache's writer of the fresh rows, for the whole run.
struct FreshWriter {
    writes: FreshWrites,
    task: u32,
    rng: StdRng,
    work: Workload,
    t0: Instant,
}

impl FreshWriter {
    async fn run(mut self) {
        let end_at = self.t0 + self.work.duration;
        let histories = (self.work.duration.as_millis() as u64).div_ceil(self.work.history_ms);
        let total: u32 = FRESH_GROUP_WEIGHTS.iter().sum();
        // The last group-wide invalidation: its group's entries were reloaded right after it,
        // so they leave their `ttl` (and are refreshed) about 1 s later.
        let mut last_group_wide: Option<(u64, Instant)> = None;
        loop {
            // One write in three aims at the refreshes after the last group-wide
            // invalidation (to void refreshes while they run); the others come at random.
            let aimed = match last_group_wide {
                Some((g, at)) if self.rng.random_ratio(1, 3) => {
                    let target = at + Duration::from_millis(self.rng.random_range(990..=1030));
                    (target > Instant::now()).then_some((g, target))
                }
                _ => None,
            };
            match aimed {
                Some((_, target)) => tokio::time::sleep_until(target).await,
                None => pause(self.rng.random_range(0..=2 * self.work.fresh_write_ms)).await,
            }
            if Instant::now() >= end_at {
                return;
            }
            // The history this write falls in (for the cancellation rule and for "clean").
            let elapsed = self.t0.elapsed().as_millis() as u64;
            let history = (elapsed / self.work.history_ms).min(histories.saturating_sub(1)) as u32;
            let g = match aimed {
                Some((g, _)) => g,
                None => {
                    let mut pick = self.rng.random_range(0..total);
                    let mut g = 0u64;
                    for (i, w) in FRESH_GROUP_WEIGHTS.iter().enumerate() {
                        if pick < *w {
                            g = i as u64;
                            break;
                        }
                        pick -= w;
                    }
                    g
                }
            };
            let row = fresh_row(g, self.rng.random_range(0..FRESH_ROWS_PER_GROUP));
            let inval = random_inval(&mut self.rng);
            if inval.group_wide() {
                last_group_wide = Some((g, Instant::now()));
            }
            let cancel = cancel_after(&mut self.rng, self.work.cancels(history));
            let delay = delay(&mut self.rng, 3);
            self.writes
                .write(self.task, history, row, inval, delay, cancel)
                .await;
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
    /// Near-cache reads: which rule the read broke (see [`check`]); empty otherwise.
    pub rule: &'static str,
}

/// A violation of (c) (two loader runs of one key at once) or (d) (a second miss load without
/// a cause).
#[derive(Clone, Debug)]
pub struct Finding {
    /// What happened.
    pub what: String,
    /// Both loads' read calls ran in clean histories (no cancellations, no faults).
    pub clean: bool,
    /// The loads and the key's invalidating writes around them.
    pub events: Vec<Event>,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Histories checked.
    pub histories: usize,
    /// Completed reads.
    pub reads: usize,
    /// Of `reads`, per reader kind.
    pub reads_by_func: BTreeMap<Func, usize>,
    /// Of `reads`, of the freshness-layer functions.
    pub fresh_reads: usize,
    /// Of `reads`, those that returned `Err` (a loader failure reached the caller).
    pub read_errors: usize,
    /// Writes (completed and in doubt).
    pub writes: usize,
    /// Of `writes`, of the fresh rows, by how they invalidated: keys, keys + tag, tag only,
    /// `invalidate_tag` by hand.
    pub fresh_writes: [usize; 4],
    /// Loader runs logged.
    pub loads: usize,
    /// Of `loads`, background refreshes.
    pub refresh_loads: usize,
    /// Of `loads`, those that returned `Err`.
    pub failed_loads: usize,
    /// Cancelled calls (reads and writes).
    pub cancellations: usize,
    /// Faults injected.
    pub faults: usize,
    /// Histories without cancellations or faults (where (b), (c) and (d) are strict).
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
    /// (c): most loader runs of one fresh key at once (not separated by an invalidation), in
    /// clean histories and in all.
    pub max_concurrent_clean: usize,
    /// See `max_concurrent_clean`.
    pub max_concurrent_all: usize,
    /// (c): overlapping loader runs of one key that an invalidation between them explains.
    pub overlaps_invalidated: usize,
    /// Loader runs of fresh keys that an invalidation of their key overlapped (the race the
    /// refresh and miss leases must win), and of those, background refreshes.
    pub loads_raced: (usize, usize),
    /// (c): `read_rowe` early refreshes overlapping a miss load (the entry's TTL ran out while
    /// the early refresh ran; not a failure).
    pub overlaps_at_expiry: usize,
    /// (c): overlapping loader runs where one of them ran alone after two failed loads of
    /// the key in its process (see `check`).
    pub overlaps_after_failures: usize,
    /// (c) violations.
    pub overlaps: Vec<Finding>,
    /// (d): successful miss loads of `stale` keys, and those that followed an earlier one.
    pub miss_loads: usize,
    /// (d): second miss loads explained by an invalidation of the key between them.
    pub reloads_invalidated: usize,
    /// (d): second miss loads that ran alone after two failed loads.
    pub reloads_after_failures: usize,
    /// (d) violations.
    pub reloads: Vec<Finding>,
    /// Counters summed over caches.
    pub counts: Counts,
    /// Near-cache run (a'): completed reads of the near functions.
    pub near_reads: usize,
    /// (a'): the bound, ms (`NEAR_BOUND_MS`).
    pub near_bound_ms: u64,
    /// (a'): reads that returned an older version than a write completed before they
    /// started, in another cache, within the bound and before that cache processed the
    /// write's push: the coherence delay (allowed).
    pub near_within_bound: usize,
    /// (a'): the largest such lag, from the write's return to the read's start, µs.
    pub near_max_lag_us: u64,
    /// (a'): reads the exact rule applied to (the newest write of another cache that completed
    /// before the read started had its marker push processed by the reader's cache before).
    pub near_after_push: usize,
    /// (a'): reads the bound rule applied to (the newest write of another cache completed at
    /// least the bound before the read started).
    pub near_past_bound: usize,
    /// Marker pushes logged (over all caches).
    pub pushes: usize,
    /// (a') stale near reads by rule they break (a read may break several): a newer write in
    /// the reader's own cache, the exact rule, the bound rule.
    pub near_broken: [usize; 3],
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

    /// Stale reads that a suspect invalidation or a fault excuses in fault runs.
    pub fn stale_after_failed(&self) -> usize {
        self.stale
            .iter()
            .filter(|s| s.after_failed_invalidation)
            .count()
    }

    /// (c) violations in clean histories.
    pub fn overlaps_clean(&self) -> usize {
        self.overlaps.iter().filter(|f| f.clean).count()
    }

    /// (d) violations in clean histories.
    pub fn reloads_clean(&self) -> usize {
        self.reloads.iter().filter(|f| f.clean).count()
    }

    /// The figures, one paragraph.
    pub fn figures(&self, test: &str, backend: &str, seed: u64) -> String {
        let by_func: Vec<String> = Func::ALL
            .iter()
            .map(|f| format!("{}: {}", f.label(), self.stale_by_func(*f)))
            .collect();
        let c = &self.counts;
        format!(
            "[{test}] backend={backend} seed={seed}: histories={} (clean {}), reads={} (fresh \
             functions {}, Err {}), writes={} (fresh rows: keys {}, keys+tag {}, tag only {}, \
             invalidate_tag {}), loads={} (refreshes {}, Err {}), cancellations={}, faults={}, \
             stale reads={} ({}; after a suspect/failed invalidation or a fault: {}), \
             (b) max loads per generation: clean={} all={} (loader-entry count: {}), \
             distribution clean={:?} all={:?} entry={:?}; (c) max loads of one fresh key at \
             once: clean={} all={} (loads overlapped by an invalidation of their key {}, of which \
             refreshes {}; overlaps explained by an invalidation {}, early refresh \
             at expiry {}, after two failed loads {}, unexplained {} of which clean {}); (d) miss \
             loads of stale keys {} (after an invalidation {}, after two failed loads {}, \
             unexplained {} of which clean {}); refreshes: \
             refreshes={} early={} errors={} stale_served={} soft_timeouts={} \
             tag_invalidations={}; counters: {:?}",
            self.histories,
            self.clean_histories,
            self.reads,
            self.fresh_reads,
            self.read_errors,
            self.writes,
            self.fresh_writes[0],
            self.fresh_writes[1],
            self.fresh_writes[2],
            self.fresh_writes[3],
            self.loads,
            self.refresh_loads,
            self.failed_loads,
            self.cancellations,
            self.faults,
            self.stale.len(),
            by_func.join(", "),
            self.stale_after_failed(),
            self.max_loads_clean(),
            self.max_loads_all(),
            self.loads_entry_all.keys().max().copied().unwrap_or(0),
            self.loads_clean,
            self.loads_all,
            self.loads_entry_all,
            self.max_concurrent_clean,
            self.max_concurrent_all,
            self.loads_raced.0,
            self.loads_raced.1,
            self.overlaps_invalidated,
            self.overlaps_at_expiry,
            self.overlaps_after_failures,
            self.overlaps.len(),
            self.overlaps_clean(),
            self.miss_loads,
            self.reloads_invalidated,
            self.reloads_after_failures,
            self.reloads.len(),
            self.reloads_clean(),
            c.refreshes,
            c.early_refreshes,
            c.refresh_errors,
            c.stale_served,
            c.soft_timeouts,
            c.tag_invalidations,
            self.counts,
        )
    }

    /// Per reader kind that ran: completed reads, of them `Err`, and stale reads (one line).
    pub fn reader_figures(&self) -> String {
        let per: Vec<String> = self
            .reads_by_func
            .iter()
            .map(|(f, n)| {
                let excused = self
                    .stale
                    .iter()
                    .filter(|s| s.read.func == *f && s.after_failed_invalidation)
                    .count();
                format!(
                    "{}: reads {n}, stale {} (after a suspect invalidation {excused})",
                    f.label(),
                    self.stale_by_func(*f)
                )
            })
            .collect();
        format!("per reader kind: {}", per.join("; "))
    }

    /// The near-cache figures (a'), one line.
    pub fn near_figures(&self) -> String {
        let c = &self.counts;
        let near: Vec<Func> = Func::ALL.into_iter().filter(|f| f.is_near()).collect();
        format!(
            "near cache (a'): reads={} (near hits {}), stale reads={} (by function: {}; \
             breaking the own-cache rule {}, the exact rule {}, the bound rule {}), within the coherence delay={} (largest lag {:.1} ms, bound {} \
             ms), reads the exact rule applied to={}, reads the bound rule applied to={}, \
             marker pushes logged={}, local evictions={}, tracking resets={}",
            self.near_reads,
            c.local_hits,
            near.iter().map(|f| self.stale_by_func(*f)).sum::<usize>(),
            near.iter()
                .map(|f| format!("{} {}", f.label(), self.stale_by_func(*f)))
                .collect::<Vec<_>>()
                .join(", "),
            self.near_broken[0],
            self.near_broken[1],
            self.near_broken[2],
            self.near_within_bound,
            self.near_max_lag_us as f64 / 1e3,
            self.near_bound_ms,
            self.near_after_push,
            self.near_past_bound,
            self.pushes,
            c.local_evictions,
            c.tracking_resets,
        )
    }

    /// The header of [`Report::table_row`].
    pub fn table_header() -> &'static str {
        "| test | histories | reads | writes | cancellations | faults | stale reads (excused) | \
         max loads/generation (clean) | max loads of a key at once (clean) | refreshes (early, \
         Err) | stale served | soft timeouts |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    /// One Markdown table row of the figures.
    pub fn table_row(&self, test: &str) -> String {
        let c = &self.counts;
        format!(
            "| {test} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} ({}, {}) | {} | {} |",
            self.histories,
            self.reads,
            self.writes,
            self.cancellations,
            self.faults,
            self.stale.len(),
            self.stale_after_failed(),
            self.max_loads_clean(),
            self.max_concurrent_clean,
            c.refreshes,
            c.early_refreshes,
            c.refresh_errors,
            c.stale_served,
            c.soft_timeouts,
        )
    }

    /// Excerpts of up to `n` stale reads of each function.
    pub fn stale_excerpt(&self, n: usize) -> String {
        let mut s = String::new();
        // Reads after delivered invalidations first: they are the failures.
        let mut ordered: Vec<&Stale> = self.stale.iter().collect();
        ordered.sort_by_key(|v| v.after_failed_invalidation);
        let shown = Func::ALL.into_iter().flat_map(|f| {
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
            if !v.rule.is_empty() {
                let _ = writeln!(s, "  broken: {}", v.rule);
            }
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

    fn findings_excerpt(findings: &[Finding], n: usize) -> String {
        let mut s = String::new();
        for f in findings.iter().filter(|f| f.clean).take(n) {
            let _ = writeln!(s, "{}:", f.what);
            for e in &f.events {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    /// Panics with the figures and excerpts when (a) or, in clean histories, (b), (c) or (d)
    /// failed.
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
        if self.overlaps_clean() > 0 {
            problems.push(format!(
                "(c) one loader at a time per key: {} overlapping loader runs without an \
                 invalidation between them in histories without cancellations or faults\n{}",
                self.overlaps_clean(),
                Self::findings_excerpt(&self.overlaps, 2)
            ));
        }
        if self.reloads_clean() > 0 {
            problems.push(format!(
                "(d) no miss without a cause: {} miss loads of a `stale` key without an \
                 invalidation since its previous miss load, in histories without cancellations \
                 or faults\n{}",
                self.reloads_clean(),
                Self::findings_excerpt(&self.reloads, 2)
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

/// Checks (a), (b), (c) and (d) on the merged records of a run.
pub fn check(records: &[Record]) -> Report {
    let mut report = Report::default();
    let mut events = Vec::new();
    let mut faults = Vec::new();
    for r in records {
        match r {
            Record::Event(e) => events.push(e.clone()),
            Record::Fault(f) => faults.push(f.clone()),
            Record::Counts(c) => report.counts.add(c),
            Record::Push { .. } => {}
        }
    }
    // Near-cache run: when each cache first processed each marker's push.
    let mut pushes: HashMap<(u32, &str), u64> = HashMap::new();
    for r in records {
        if let Record::Push {
            cache, key, clock, ..
        } = r
        {
            report.pushes += 1;
            let p = pushes.entry((*cache, key.as_str())).or_insert(u64::MAX);
            *p = (*p).min(*clock);
        }
    }
    let near_bound_ms = near_bound_from_env();
    report.near_bound_ms = near_bound_ms;
    // Whether `reader` had processed the push of `w`'s marker before clock `at`.
    let pushed_before = |reader: u32, w: &Event, at: u64| {
        w.marker
            .as_deref()
            .and_then(|m| pushes.get(&(reader, m)))
            .is_some_and(|&p| p < at)
    };
    report.faults = faults.len();
    for e in &events {
        match e.kind {
            Kind::Read if e.end.is_some() => {
                report.reads += 1;
                *report.reads_by_func.entry(e.func).or_default() += 1;
                report.fresh_reads += usize::from(e.func.is_fresh());
                report.read_errors += usize::from(e.failed);
            }
            Kind::Read => {}
            Kind::Write => {
                report.writes += 1;
                if let Some(i) = e.inval {
                    report.fresh_writes[i as usize] += 1;
                }
            }
            Kind::Load => {
                report.loads += 1;
                report.refresh_loads += usize::from(e.refresh);
                report.failed_loads += usize::from(e.failed);
            }
        }
    }
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

    // Writes by row; loads by (function, row).
    let mut writes: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == Kind::Write) {
        writes.entry(e.row).or_default().push(e);
    }
    let mut loads_by: HashMap<(Func, u64), Vec<&Event>> = HashMap::new();
    // By key: a programmatic reader's loads count with its attribute counterpart's.
    for e in events.iter().filter(|e| e.kind == Kind::Load) {
        loads_by.entry((e.func.base(), e.row)).or_default().push(e);
    }
    for loads in loads_by.values_mut() {
        loads.sort_by_key(|e| e.start);
    }
    let no_writes = Vec::new();
    let no_loads = Vec::new();

    // (a) Freshness.
    for read in events
        .iter()
        .filter(|e| e.kind == Kind::Read && e.end.is_some() && !e.failed)
    {
        let row_writes = writes.get(&read.row).unwrap_or(&no_writes);
        // (a') Near-cache reads. A write in the reader's own cache is strict, as in (a): it
        // evicts this process's copy before it returns. A write in another cache must be seen
        // (exact rule) by every read that starts after the reader's cache processed the push
        // of the write's marker (set right after the write returned, so pushed after the
        // write's own invalidation), and (bound rule) by every read that starts at least
        // the bound after the write returned (wall clock). A read that breaks neither rule is
        // within the coherence delay.
        let mut rule = "";
        if read.func.is_near() {
            report.near_reads += 1;
            let done_before =
                |w: &&&Event| w.end.is_some_and(|end| end < read.start) && w.cache != read.cache;
            if let Some(newest) = row_writes
                .iter()
                .filter(done_before)
                .max_by_key(|w| w.version)
            {
                report.near_after_push +=
                    usize::from(pushed_before(read.cache, newest, read.start));
                report.near_past_bound +=
                    usize::from(read.start_us >= newest.end_us + near_bound_ms * 1000);
            }
            let newer: Vec<&&Event> = row_writes
                .iter()
                .filter(|w| w.version > read.version && w.end.is_some_and(|end| end < read.start))
                .collect();
            if newer.is_empty() {
                continue;
            }
            let broken = |w: &Event| {
                if w.cache == read.cache {
                    Some("(a') own: a write in the reader's own cache")
                } else if pushed_before(read.cache, w, read.start) {
                    Some("(a') exact: the reader's cache had processed the write's push")
                } else if read.start_us >= w.end_us + near_bound_ms * 1000 {
                    Some("(a') bound: the read started the bound or more after the write returned")
                } else {
                    None
                }
            };
            // Each rule on its own (`broken` names the first one a write breaks).
            let rules: [&dyn Fn(&Event) -> bool; 3] = [
                &|w| w.cache == read.cache,
                &|w| w.cache != read.cache && pushed_before(read.cache, w, read.start),
                &|w| w.cache != read.cache && read.start_us >= w.end_us + near_bound_ms * 1000,
            ];
            for (i, rule) in rules.iter().enumerate() {
                report.near_broken[i] += usize::from(newer.iter().any(|w| rule(w)));
            }
            match newer.iter().find_map(|w| broken(w)) {
                Some(r) => rule = r,
                None => {
                    report.near_within_bound += 1;
                    let lag = newer
                        .iter()
                        .map(|w| read.start_us.saturating_sub(w.end_us))
                        .max()
                        .unwrap_or(0);
                    report.near_max_lag_us = report.near_max_lag_us.max(lag);
                    continue;
                }
            }
        }
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
        // its own circuit was open: the writing process itself must always see its writes
        // (a failed `#[invalidates]` is queued, and delivered before this process reads the
        // key). Except `Cache::invalidate_tag` by hand: it returns its failure to the caller
        // and queues nothing, so after an `Err` no process is promised the invalidation.
        let after_failed_invalidation = newer.iter().any(|w| {
            (w.inval == Some(Inval::TagByHand) && w.suspect)
                || (w.cache != read.cache
                    && (w.suspect
                        || overlaps_fault(w.start, w.end.unwrap_or(u64::MAX))
                        || read.suspect))
        });
        // Context (for the first stale reads only: a broken build may have thousands):
        // the write that made the returned version and the newer writes up to the read's end
        // (other than `latest`, shown separately; at most 5), and the last 4 loads that read
        // the returned version before the read ended.
        let mut context = Vec::new();
        if report.stale.len() < 200 {
            let read_end = read.end.unwrap_or(u64::MAX);
            context = row_writes
                .iter()
                .filter(|w| {
                    w.version == read.version || (w.version > read.version && w.start <= read_end)
                })
                .filter(|w| !std::ptr::eq(**w, *latest))
                .take(5)
                .map(|w| (*w).clone())
                .collect();
            let loads: Vec<&Event> = loads_by
                .get(&(read.func.base(), read.row))
                .unwrap_or(&no_loads)
                .iter()
                .filter(|e| e.version == read.version && e.start <= read_end)
                .copied()
                .collect();
            context.extend(loads.iter().rev().take(4).map(|e| (*e).clone()));
            context.sort_by_key(|e| e.start);
        }
        report.stale.push(Stale {
            read: read.clone(),
            write: (*latest).clone(),
            after_failed_invalidation,
            context,
            rule,
        });
    }

    // (b) Loads per generation (`row`, `row0`).
    let mut rows: BTreeSet<(u32, u64)> = BTreeSet::new();
    for e in events.iter().filter(|e| !is_fresh_row(e.row)) {
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
        for func in [Func::Row, Func::Row0, Func::RowN, Func::RowN0] {
            let func_loads = loads_by.get(&(func, row)).unwrap_or(&no_loads);
            for v in 0..=max_version {
                if matches!(func, Func::Row0 | Func::RowN0) && v == 0 {
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
                let loads = func_loads
                    .iter()
                    .filter(|e| e.version == v && e.end.is_some_and(|end| end < to));
                let by_call: Vec<&Event> = loads
                    .clone()
                    .filter(|e| e.call_start > from)
                    .copied()
                    .collect();
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

    // (c) and (d) on the fresh functions' keys.
    let fresh_writes: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == Kind::Write && e.inval.is_some())
        .collect();
    let mut keys: Vec<&(Func, u64)> = loads_by.keys().filter(|(f, _)| f.is_fresh()).collect();
    keys.sort();
    for &(func, row) in keys {
        let loads = &loads_by[&(func, row)];
        let invalidators: Vec<&Event> = fresh_writes
            .iter()
            .filter(|w| w.invalidates_fresh(row))
            .copied()
            .collect();
        // An invalidation of the key that may have deleted it (and the lease or refresh lease
        // in it) after `first`'s read call started and before `second`'s loader began.
        let invalidated_between = |first: &Event, second: &Event| {
            invalidators
                .iter()
                .any(|w| w.start < second.start && w.end.unwrap_or(u64::MAX) > first.call_start)
        };
        let context = |first: &Event, second: &Event| {
            let mut shown: Vec<Event> = invalidators
                .iter()
                .filter(|w| {
                    w.end.unwrap_or(u64::MAX) >= first.call_start.saturating_sub(50)
                        && w.start <= second.end.unwrap_or(u64::MAX)
                })
                .take(6)
                .map(|w| (*w).clone())
                .collect();
            shown.extend(
                loads
                    .iter()
                    .filter(|e| {
                        e.failed
                            && e.end.unwrap_or(0) > first.call_start.min(second.call_start)
                            && e.start < second.start
                    })
                    .take(4)
                    .map(|e| (*e).clone()),
            );
            shown.push(first.clone());
            shown.push(second.clone());
            shown.sort_by_key(|e| e.start);
            shown.dedup();
            shown
        };
        let both_clean =
            |a: &Event, b: &Event| clean.contains(&a.history) && clean.contains(&b.history);
        // A load run "alone": its read call saw two loads of the key in its process fail
        // (`Err`) while it waited, before its loader began. The runtime's waiters then stop
        // electing leaders and each runs its own loader (`Mode::Alone` in the protocol: a
        // failing loader is not queued behind), so loads at once are expected.
        let failed: Vec<&Event> = loads.iter().filter(|e| e.failed).copied().collect();
        let alone = |load: &Event| {
            failed
                .iter()
                .filter(|f| {
                    f.cache == load.cache
                        && f.end
                            .is_some_and(|end| load.call_start < end && end < load.start)
                })
                .count()
                >= 2
        };

        for &load in loads {
            let end = load.end.unwrap_or(u64::MAX);
            if invalidators
                .iter()
                .any(|w| w.start < end && w.end.unwrap_or(u64::MAX) > load.start)
            {
                report.loads_raced.0 += 1;
                report.loads_raced.1 += usize::from(load.refresh);
            }
        }
        // (c) Sweep in start order, keeping the loads still running.
        let mut active: Vec<&Event> = Vec::new();
        for &second in loads {
            active.retain(|first| first.end.unwrap_or(u64::MAX) > second.start);
            let (mut at_once, mut at_once_clean) = (1usize, 1usize);
            for &first in &active {
                if invalidated_between(first, second) {
                    report.overlaps_invalidated += 1;
                    continue;
                }
                if func == Func::RowE && first.refresh != second.refresh {
                    report.overlaps_at_expiry += 1;
                    continue;
                }
                if alone(first) || alone(second) {
                    report.overlaps_after_failures += 1;
                    continue;
                }
                let is_clean = both_clean(first, second);
                at_once += 1;
                at_once_clean += usize::from(is_clean);
                if report.overlaps.len() < 1000 {
                    report.overlaps.push(Finding {
                        what: format!(
                            "{}:{row} (group {}): two loader runs at once without an \
                             invalidation between them",
                            func.prefix(),
                            group_of(row)
                        ),
                        clean: is_clean,
                        events: context(first, second),
                    });
                }
            }
            report.max_concurrent_all = report.max_concurrent_all.max(at_once);
            if clean.contains(&second.history) {
                report.max_concurrent_clean = report.max_concurrent_clean.max(at_once_clean);
            }
            active.push(second);
        }

        // (d) Miss loads of `stale` keys.
        if !func.has_grace() {
            continue;
        }
        let mut previous: Option<&Event> = None;
        for &load in loads.iter().filter(|e| !e.refresh) {
            if !load.failed {
                report.miss_loads += 1;
            }
            if let Some(prev) = previous
                && prev.end.unwrap_or(u64::MAX) < load.start
            {
                if invalidated_between(prev, load) {
                    report.reloads_invalidated += 1;
                } else if alone(load) {
                    report.reloads_after_failures += 1;
                } else if load.wall_ms < prev.wall_ms + GRACE_END_MS && report.reloads.len() < 1000
                {
                    report.reloads.push(Finding {
                        what: format!(
                            "{}:{row} (group {}): a miss load after a successful one, without \
                             an invalidation between them (within the grace window)",
                            func.prefix(),
                            group_of(row)
                        ),
                        clean: both_clean(prev, load),
                        events: context(prev, load),
                    });
                }
            }
            // A load that ran alone does not store its result: the next call misses again.
            previous = (!load.failed && !alone(load)).then_some(load);
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
