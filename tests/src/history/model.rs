//! The checker's model: the rows (history rows and fresh rows), the functions and the ways a
//! fresh row is invalidated, and the events and records a run logs.

use super::*;

/// Row ids per history are `history * ROWS_STRIDE + 1 ..`.
pub(super) const ROWS_STRIDE: u64 = 8;

/// First id of the fresh rows (far above the histories' rows).
pub const FRESH_BASE: u64 = 1 << 40;
/// Groups of fresh rows (tag `grp:{g}`).
pub const FRESH_GROUPS: u64 = 3;
/// Fresh rows per group.
pub const FRESH_ROWS_PER_GROUP: u64 = 3;
/// Relative write rates of the groups: a hot group (entries rarely reach their `ttl`, often
/// invalidated during a refresh), a warm one and a cold one (entries live for seconds and are
/// served from the grace window and refreshed).
pub(super) const FRESH_GROUP_WEIGHTS: [u32; FRESH_GROUPS as usize] = [5, 3, 1];
/// Id stride between groups.
pub(super) const FRESH_GROUP_STRIDE: u64 = 16;
/// `ttl + stale` of the `stale` functions, ms (see check (d)).
pub(super) const GRACE_END_MS: u64 = 31_000;

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
    pub(super) fn prefix(self) -> &'static str {
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
    pub(super) fn has_grace(self) -> bool {
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
    pub(super) fn key(&self) -> String {
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
    pub(super) fn invalidates_fresh(&self, row: u64) -> bool {
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
