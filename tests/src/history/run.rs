//! Running a workload: histories of reader and writer tasks on several caches, the fresh-row
//! writers, injected faults, and the seed and duration taken from the environment.

use super::*;

/// A reproducible per-task seed.
pub(super) fn mix(seed: u64, cache: u32, history: u32, task: u32) -> u64 {
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
pub(super) async fn run_history(
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

pub(super) struct Task {
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
pub(super) fn cancel_after(rng: &mut StdRng, cancels: bool) -> Option<Duration> {
    (cancels && rng.random_ratio(1, 10)).then(|| Duration::from_millis(rng.random_range(0..=6)))
}

/// A loader or write delay: 0 one time in three, else up to `max` ms.
pub(super) fn delay(rng: &mut StdRng, max: u64) -> u64 {
    if rng.random_ratio(1, 3) {
        0
    } else {
        rng.random_range(0..=max)
    }
}

impl Task {
    pub(super) async fn reader(mut self, work: Workload) {
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

    pub(super) async fn writer(mut self, history_ms: u64, quiet_tail_ms: u64) {
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
    pub(super) async fn write(
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
pub(super) fn random_inval(rng: &mut StdRng) -> Inval {
    match rng.random_range(0..10) {
        0..=2 => Inval::Keys,
        3..=4 => Inval::KeysAndTag,
        5..=7 => Inval::Tag,
        _ => Inval::TagByHand,
    }
}

/// One cache's writer of the fresh rows, for the whole run.
pub(super) struct FreshWriter {
    writes: FreshWrites,
    task: u32,
    rng: StdRng,
    work: Workload,
    t0: Instant,
}

impl FreshWriter {
    pub(super) async fn run(mut self) {
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
