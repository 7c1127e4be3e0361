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
//! The same code drives the in-process runs (`tests/tests/history/main.rs`) and each process of the
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

mod check;
mod model;
mod run;
mod workload;

pub use check::*;
pub use model::*;
pub use run::*;
pub use workload::*;
