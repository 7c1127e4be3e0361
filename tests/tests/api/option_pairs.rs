//! "Every option combines with every other" (DESIGN.md, "The composable core"): a matrix over
//! every PAIR of `jitter`, `negative_ttl`, `stale`, `early_refresh`, `soft_timeout` (always
//! with `stale`), `local_ttl` and `tags` through the programmatic API, and of `cache_if` with
//! each of them through `#[cached]` functions, on the memory backend, on Redis and on a Redis
//! Cluster (one cluster for the three scenarios, each in its own namespace).
//!
//! For a pair (A, B) each option's checker runs its scenario on its own key with options that
//! carry BOTH A and B, and asserts the behaviour of its option (taking the partner's known
//! effect into account, e.g. the grace window added to the key's `PTTL`). Checkers return
//! `Err(why)` instead of panicking, so that one run reports every failing cell of the matrix.
//! Programmatic pairs run concurrently (distinct keys and stats names); the two checkers of an
//! attribute pair share the function's stats name and run one after the other (counters are
//! compared as deltas). Ordering uses the `Source` gate (a semaphore); sleeps only wait for a
//! TTL to pass.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, EntryOptions, FnStats, Peek, cached};
use cache_tests::source::Source;
use cache_tests::{
    Raw, RawCluster, RedisCluster, TEST_NAMESPACE, TestEnv, backend_tests, guard_for,
};

/// Bound of one checker: a checker taking longer is hung.
const CHECK_BOUND: Duration = Duration::from_secs(30);
/// Bound of "eventually" polls inside checkers.
const POLL_BOUND: Duration = Duration::from_secs(3);
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Margin after a deadline before asserting that it passed.
const MARGIN: Duration = Duration::from_millis(60);
/// Keys written by the jitter checker (its spread is checked over them).
const JITTER_KEYS: u64 = 16;
/// The early-refresh checker's loader duration (XFetch window = load time x beta).
const EARLY_LOAD: Duration = Duration::from_millis(30);
const BETA: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Jitter,
    Negative,
    Stale,
    Early,
    Soft,
    Local,
    Tags,
    CacheIf,
}

/// The options of the programmatic matrix (`cache_if` is attribute-only).
const OPTS: [Opt; 7] = [
    Opt::Jitter,
    Opt::Negative,
    Opt::Stale,
    Opt::Early,
    Opt::Soft,
    Opt::Local,
    Opt::Tags,
];

impl Opt {
    fn label(self) -> &'static str {
        match self {
            Opt::Jitter => "jitter",
            Opt::Negative => "negative_ttl",
            Opt::Stale => "stale",
            Opt::Early => "early_refresh",
            Opt::Soft => "stale+soft_timeout",
            Opt::Local => "local_ttl",
            Opt::Tags => "tags",
            Opt::CacheIf => "cache_if",
        }
    }
}

/// The durations in effect for a target (zero: the option is not set).
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    ttl: Duration,
    jitter: Duration,
    negative: Duration,
    stale: Duration,
    soft: Duration,
    local: Duration,
    early: bool,
    tags: bool,
    cache_if: bool,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The programmatic matrix's durations.
const P_TTL: Duration = ms(500);
const P_JITTER: Duration = ms(250);
const P_NEGATIVE: Duration = ms(200);
const P_STALE: Duration = ms(2_000);
const P_SOFT: Duration = ms(80);
const P_LOCAL: Duration = ms(500);

fn programmatic_timing(pair: &[Opt]) -> Timing {
    let mut t = Timing {
        ttl: P_TTL,
        ..Timing::default()
    };
    for o in pair {
        match o {
            Opt::Jitter => t.jitter = P_JITTER,
            Opt::Negative => t.negative = P_NEGATIVE,
            Opt::Stale => t.stale = P_STALE,
            Opt::Early => t.early = true,
            Opt::Soft => {
                t.stale = P_STALE;
                t.soft = P_SOFT;
            }
            Opt::Local => t.local = P_LOCAL,
            Opt::Tags => t.tags = true,
            Opt::CacheIf => t.cache_if = true,
        }
    }
    t
}

/// The option "applier" of the programmatic matrix.
fn apply(o: Opt, e: EntryOptions, tag: &str) -> EntryOptions {
    match o {
        Opt::Jitter => e.jitter(P_JITTER),
        Opt::Negative => e.negative_ttl(P_NEGATIVE),
        Opt::Stale => e.stale(P_STALE),
        Opt::Early => e.early_refresh(BETA),
        Opt::Soft => e.stale(P_STALE).soft_timeout(P_SOFT),
        Opt::Local => e.local_ttl(P_LOCAL),
        Opt::Tags => e.tags([tag.to_owned()]),
        Opt::CacheIf => unreachable!("cache_if is attribute-only"),
    }
}

/// The "database" behind a target: a [`Source`] (runs, gate), plus switches for a "not found"
/// answer and for a value `cache_if` rejects (prefixed `x-`).
struct Row {
    src: Arc<Source>,
    none: AtomicBool,
    reject: AtomicBool,
}

impl Row {
    fn new(delay: Duration) -> Arc<Row> {
        Arc::new(Row {
            src: Source::with_delay(delay),
            none: AtomicBool::new(false),
            reject: AtomicBool::new(false),
        })
    }

    async fn load(&self) -> String {
        let reject = self.reject.load(SeqCst);
        let v = self.src.load_ok().await;
        if reject { format!("x-{v}") } else { v }
    }

    async fn find(&self) -> Option<String> {
        let none = self.none.load(SeqCst);
        let v = self.load().await;
        (!none).then_some(v)
    }
}

#[allow(clippy::ptr_arg)]
fn keep(v: &String) -> bool {
    !v.starts_with("x-")
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type GetFn = Arc<dyn Fn(Cache, u64) -> BoxFut<String> + Send + Sync>;
type FindFn = Arc<dyn Fn(Cache, u64) -> BoxFut<Option<String>> + Send + Sync>;

/// One checker's subject: a way to call the cached entry `i` (a value or an optional
/// value), its rendered key and tag, its stats name and durations.
#[derive(Clone)]
struct Target {
    name: String,
    t: Timing,
    row: Arc<Row>,
    get: GetFn,
    find: FindFn,
    key_of: Arc<dyn Fn(u64) -> String + Send + Sync>,
    tag_of: Arc<dyn Fn(u64) -> String + Send + Sync>,
}

impl Target {
    async fn get(&self, c: &Cache, i: u64) -> String {
        (self.get)(c.clone(), i).await
    }
    async fn find(&self, c: &Cache, i: u64) -> Option<String> {
        (self.find)(c.clone(), i).await
    }
    fn stats(&self, c: &Cache) -> FnStats {
        c.stats().function(&self.name)
    }
    fn runs(&self) -> u64 {
        self.row.src.runs()
    }
}

/// A programmatic target for checker `chk` of `pair`.
fn programmatic(pair: &[Opt], chk: Opt) -> Target {
    let label = format!(
        "p/{}/{}",
        pair.iter().map(|o| o.label()).collect::<Vec<_>>().join("+"),
        chk.label()
    );
    let tag = format!("tag:{label}");
    let mut opts = EntryOptions::new(P_TTL).name(label.clone());
    for o in pair {
        opts = apply(*o, opts, &tag);
    }
    assert!(opts.validate().is_ok(), "{label}: {:?}", opts.validate());
    let delay = if chk == Opt::Early {
        EARLY_LOAD
    } else {
        Duration::ZERO
    };
    let row = Row::new(delay);
    let key_base = label.clone();
    let key_of: Arc<dyn Fn(u64) -> String + Send + Sync> =
        Arc::new(move |i| format!("{key_base}:{i}"));
    let get: GetFn = {
        let (opts, row, key_of) = (opts.clone(), row.clone(), key_of.clone());
        Arc::new(move |cache: Cache, i| {
            let (opts, row, key) = (opts.clone(), row.clone(), key_of(i));
            Box::pin(async move {
                let r: Result<String, Infallible> = cache
                    .get_or_load(&key, &opts, move || async move { Ok(row.load().await) })
                    .await;
                r.unwrap()
            })
        })
    };
    let find: FindFn = {
        let (opts, row, key_of) = (opts.clone(), row.clone(), key_of.clone());
        Arc::new(move |cache: Cache, i| {
            let (opts, row, key) = (opts.clone(), row.clone(), key_of(i));
            Box::pin(async move {
                let r: Result<Option<String>, Infallible> = cache
                    .get_or_load_optional(&key, &opts, move || async move { Ok(row.find().await) })
                    .await;
                r.unwrap()
            })
        })
    };
    Target {
        name: label,
        t: programmatic_timing(pair),
        row,
        get,
        find,
        key_of,
        tag_of: Arc::new(move |_| tag.clone()),
    }
}

/// What the checkers share: the cache under test, on Redis (a server or a cluster) a second
/// handle (another "process") and a raw connection.
#[derive(Clone)]
struct Ctx {
    cache: Cache,
    other: Option<Cache>,
    raw: Option<RawConn>,
}

/// A raw connection behind the cache's back, to a server or to a cluster.
#[derive(Clone)]
enum RawConn {
    Server(Raw),
    Cluster(RawCluster),
}

impl RawConn {
    /// `PTTL key` (routed to the key's node on a cluster).
    async fn pttl(&self, key: &str) -> i64 {
        match self {
            RawConn::Server(raw) => raw.pttl(key).await,
            RawConn::Cluster(raw) => raw.cmd(redis::cmd("PTTL").arg(key)).await,
        }
    }
}

impl Ctx {
    fn redis(&self) -> bool {
        self.raw.is_some()
    }
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}

/// Calls `f` every [`POLL_EVERY`] until it returns `Some`, for at most `bound`.
async fn poll<T, F, Fut>(bound: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn check(o: Opt, ctx: &Ctx, tg: &Target) -> Check {
    match o {
        Opt::Jitter => check_jitter(ctx, tg).await,
        Opt::Negative => check_negative(ctx, tg).await,
        Opt::Stale => check_stale(ctx, tg, !tg.t.soft.is_zero()).await,
        Opt::Soft => check_stale(ctx, tg, true).await,
        Opt::Early => check_early(ctx, tg).await,
        Opt::Local => check_local(ctx, tg).await,
        Opt::Tags => check_tags(ctx, tg).await,
        Opt::CacheIf => check_cache_if(ctx, tg).await,
    }
}

/// jitter: the stored freshness lies in `[ttl, ttl + jitter]` and is spread over it. On Redis
/// the key's `PTTL` is the freshness plus the grace window; on both backends `peek` is Fresh
/// everywhere just before `ttl`, mixed in the middle of the jitter window, and nowhere Fresh
/// after `ttl + jitter`.
async fn check_jitter(ctx: &Ctx, tg: &Target) -> Check {
    let t = tg.t;
    let c = &ctx.cache;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..JITTER_KEYS)
        .map(|i| {
            let (tg, c) = (tg.clone(), c.clone());
            tokio::spawn(async move { tg.get(&c, i).await })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("a load panicked: {e}"))?;
    }
    let t1 = Instant::now();
    ensure!(
        tg.runs() == JITTER_KEYS,
        "{} loads, want {JITTER_KEYS}",
        tg.runs()
    );
    if let Some(raw) = &ctx.raw {
        let mut pttls = Vec::new();
        for i in 0..JITTER_KEYS {
            let pttl = raw.pttl(&c.full_key(&(tg.key_of)(i))).await;
            let since = t0.elapsed().as_millis() as i64;
            let lo = (t.ttl + t.stale).as_millis() as i64 - since - 2;
            let hi = (t.ttl + t.jitter + t.stale).as_millis() as i64 + 1;
            ensure!(
                (lo..=hi).contains(&pttl),
                "PTTL of key {i} = {pttl} ms, outside [{lo}, {hi}] (ttl {:?} + jitter {:?} + stale {:?}, {since} ms after the loads began)",
                t.ttl,
                t.jitter,
                t.stale
            );
            pttls.push(pttl);
        }
        let spread = pttls.iter().max().unwrap() - pttls.iter().min().unwrap();
        ensure!(
            spread >= (t.jitter.as_millis() / 4) as i64,
            "PTTLs of {JITTER_KEYS} keys spread over {spread} ms only (jitter {:?}): {pttls:?}",
            t.jitter
        );
    }
    let fresh = |tg: Target, c: Cache| async move {
        let mut n = 0;
        for i in 0..JITTER_KEYS {
            match c.peek::<String>(&(tg.key_of)(i)).await {
                Ok(Peek::Fresh(_)) => n += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("peek failed: {e}")),
            }
        }
        Ok(n)
    };
    let before = t0 + t.ttl - MARGIN;
    if Instant::now() < before {
        sleep_until(before).await;
        let n = fresh(tg.clone(), c.clone()).await?;
        ensure!(
            n == JITTER_KEYS,
            "just before ttl only {n}/{JITTER_KEYS} entries are fresh"
        );
    }
    sleep_until(t0 + t.ttl + t.jitter / 2).await;
    let n = fresh(tg.clone(), c.clone()).await?;
    ensure!(
        (1..JITTER_KEYS).contains(&n),
        "in the middle of the jitter window {n}/{JITTER_KEYS} entries are fresh (want some, not all)"
    );
    sleep_until(t1 + t.ttl + t.jitter + MARGIN).await;
    let n = fresh(tg.clone(), c.clone()).await?;
    ensure!(
        n == 0,
        "after ttl + jitter {n}/{JITTER_KEYS} entries are still fresh"
    );
    Ok(())
}

/// negative_ttl: `Ok(None)` is cached (the second call does not load, `peek` is NotFound)
/// and is gone after `negative_ttl` (no jitter: a negative entry keeps its own TTL); with a
/// grace window the next value may take one stale call, never a second reload.
async fn check_negative(ctx: &Ctx, tg: &Target) -> Check {
    let c = &ctx.cache;
    let base = tg.stats(c);
    tg.row.none.store(true, SeqCst);
    ensure!(tg.find(c, 0).await.is_none(), "the first call is not None");
    let loaded = Instant::now();
    ensure!(tg.find(c, 0).await.is_none(), "the second call is not None");
    let s = tg.stats(c);
    ensure!(
        tg.runs() == 1,
        "None not cached: {} loads after two calls",
        tg.runs()
    );
    ensure!(
        s.negative_hits + s.local_hits > base.negative_hits + base.local_hits,
        "the second call was no negative (or near) hit: {s:?}"
    );
    let peek = c.peek::<String>(&(tg.key_of)(0)).await;
    ensure!(
        matches!(peek, Ok(Peek::NotFound)),
        "peek after a cached None: {peek:?}"
    );
    tg.row.none.store(false, SeqCst);
    sleep_until(loaded + tg.t.negative_or_ttl() + MARGIN).await;
    if tg.t.stale.is_zero() {
        let v = tg.find(c, 0).await;
        ensure!(
            v.is_some(),
            "after negative_ttl ({:?}) the call still got the cached None ({} loads)",
            tg.t.negative_or_ttl(),
            tg.runs()
        );
    } else {
        let got = poll(POLL_BOUND, || async { tg.find(c, 0).await }).await;
        ensure!(
            got.is_some(),
            "after negative_ttl + {POLL_BOUND:?} the call still gets None"
        );
    }
    ensure!(
        tg.runs() == 2,
        "{} loads, want 2 (one reload after negative_ttl)",
        tg.runs()
    );
    Ok(())
}

impl Timing {
    fn negative_or_ttl(&self) -> Duration {
        if self.negative.is_zero() {
            self.ttl
        } else {
            self.negative
        }
    }
}

/// stale (and stale + soft_timeout): past the TTL the old value is served while the refresh's
/// loader is held (at once; with a soft timeout after waiting at least the timeout, counted
/// as a soft timeout), ONE refresh runs and its value replaces the old one.
async fn check_stale(ctx: &Ctx, tg: &Target, soft: bool) -> Check {
    let c = &ctx.cache;
    let t = tg.t;
    let v1 = tg.get(c, 0).await;
    sleep_until(Instant::now() + t.ttl + t.jitter + MARGIN).await;
    let base = tg.stats(c);
    let peek = c.peek::<String>(&(tg.key_of)(0)).await;
    ensure!(
        matches!(&peek, Ok(Peek::Stale(v)) if *v == v1),
        "peek past the ttl: {peek:?}"
    );
    tg.row.src.gate_next();
    let t0 = Instant::now();
    let v = tg.get(c, 0).await;
    let waited = t0.elapsed();
    let s = tg.stats(c);
    let held = tg.row.src.finished() == 1;
    tg.row.src.ungate();
    tg.row.src.open(1);
    ensure!(
        v == v1,
        "past the ttl the call got {v:?}, not the stale {v1:?}"
    );
    ensure!(
        held,
        "the call returned only after the refresh's loader finished"
    );
    ensure!(
        s.stale_served == base.stale_served + 1,
        "stale_served {} -> {} (want +1)",
        base.stale_served,
        s.stale_served
    );
    if soft {
        ensure!(
            waited + ms(2) >= t.soft && waited < t.soft + ms(1_000),
            "returned the stale value after {waited:?} (soft timeout {:?})",
            t.soft
        );
        ensure!(
            s.soft_timeouts == base.soft_timeouts + 1,
            "soft_timeouts {} -> {} (want +1)",
            base.soft_timeouts,
            s.soft_timeouts
        );
    } else {
        ensure!(
            waited < ms(1_000),
            "the stale value took {waited:?} (served at once)"
        );
        ensure!(
            s.soft_timeouts == base.soft_timeouts,
            "a soft timeout without soft_timeout"
        );
    }
    let got = poll(POLL_BOUND, || async {
        let v = tg.get(c, 0).await;
        (v != v1).then_some(v)
    })
    .await;
    ensure!(
        got.is_some(),
        "the refresh's value did not replace the stale one within {POLL_BOUND:?}"
    );
    let s = tg.stats(c);
    let plain = |s: &FnStats| s.refreshes - s.early_refreshes;
    ensure!(
        plain(&s) == plain(&base) + 1,
        "{} grace-window refreshes, want 1 ({s:?})",
        plain(&s) - plain(&base)
    );
    ensure!(
        tg.runs() == 2 + (s.early_refreshes - base.early_refreshes),
        "{} loader runs (want 2 + early refreshes)",
        tg.runs()
    );
    Ok(())
}

/// early_refresh: hits near expiry (loader ~30 ms, beta 10) start an early refresh before
/// the entry expires; no call waits on a loader (misses stays 1) and the refreshed value
/// replaces the old one as a hit.
async fn check_early(ctx: &Ctx, tg: &Target) -> Check {
    let c = &ctx.cache;
    let base = tg.stats(c);
    let v1 = tg.get(c, 0).await;
    let loaded = Instant::now();
    let mut hits = 0;
    loop {
        let s = tg.stats(c);
        if s.early_refreshes > base.early_refreshes {
            break;
        }
        ensure!(
            loaded.elapsed() + ms(20) < tg.t.ttl,
            "no early refresh in {hits} hits before the ttl ({:?}); {s:?}",
            tg.t.ttl
        );
        let v = tg.get(c, 0).await;
        ensure!(v == v1, "hit {hits} got {v:?}, not {v1:?}");
        hits += 1;
        tokio::time::sleep(POLL_EVERY).await;
    }
    let got = poll(POLL_BOUND, || async {
        let v = tg.get(c, 0).await;
        (v != v1).then_some(v)
    })
    .await;
    ensure!(
        got.is_some(),
        "the early refresh's value never replaced {v1:?}"
    );
    let s = tg.stats(c);
    ensure!(
        s.misses == base.misses + 1 && s.stale_served == base.stale_served,
        "a call waited on a loader or got a stale value: misses +{}, stale_served +{} ({s:?})",
        s.misses - base.misses,
        s.stale_served - base.stale_served
    );
    Ok(())
}

/// local_ttl: on Redis a repeat call becomes a near hit, and an invalidation from another
/// handle evicts the copy (the new value is read within a bounded poll, `local_evictions`
/// counted); on memory it is a pass-through: hits, never near hits, and invalidation works.
async fn check_local(ctx: &Ctx, tg: &Target) -> Check {
    let c = &ctx.cache;
    let base = tg.stats(c);
    let v1 = tg.get(c, 0).await;
    if let Some(other) = &ctx.other {
        let hit = poll(POLL_BOUND, || async {
            let v = tg.get(c, 0).await;
            (tg.stats(c).local_hits > base.local_hits).then_some(v)
        })
        .await;
        let Some(last) = hit else {
            return Err(format!(
                "no near hit within {POLL_BOUND:?}: {:?}",
                tg.stats(c)
            ));
        };
        let evictions = tg.stats(c).local_evictions;
        let runs = tg.runs();
        other
            .invalidate(&(tg.key_of)(0))
            .await
            .map_err(|e| format!("invalidate: {e}"))?;
        let got = poll(POLL_BOUND, || async {
            let v = tg.get(c, 0).await;
            (v != last).then_some(v)
        })
        .await;
        ensure!(
            got.is_some(),
            "another handle's invalidate did not evict the near copy within {POLL_BOUND:?}"
        );
        ensure!(tg.runs() > runs, "no reload after the invalidation");
        let s = tg.stats(c);
        ensure!(
            s.local_evictions > evictions,
            "the new value came without a near eviction (expired?): {s:?}"
        );
    } else {
        ensure!(
            tg.get(c, 0).await == v1,
            "the repeat call got another value"
        );
        let s = tg.stats(c);
        ensure!(
            s.local_hits == base.local_hits && s.hits > base.hits,
            "memory: want a hit, no near hit: {s:?}"
        );
        c.invalidate(&(tg.key_of)(0))
            .await
            .map_err(|e| format!("invalidate: {e}"))?;
        let v = tg.get(c, 0).await;
        ensure!(
            v != v1 && tg.runs() == 2,
            "invalidate did not void the entry"
        );
    }
    Ok(())
}

/// tags: `invalidate_tag` voids the entry at once for this handle (no stale value, no near
/// copy), and, on Redis, an invalidation of the tag by another handle is seen too.
async fn check_tags(ctx: &Ctx, tg: &Target) -> Check {
    let c = &ctx.cache;
    let tag = (tg.tag_of)(0);
    let v1 = tg.get(c, 0).await;
    ensure!(
        tg.get(c, 0).await == v1,
        "the repeat call got another value"
    );
    ensure!(tg.runs() == 1, "the repeat call loaded");
    c.invalidate_tag(&tag)
        .await
        .map_err(|e| format!("invalidate_tag: {e}"))?;
    let v2 = tg.get(c, 0).await;
    ensure!(
        v2 != v1 && tg.runs() == 2,
        "after invalidate_tag({tag:?}) the call got {v2:?} (old {v1:?}, {} loads)",
        tg.runs()
    );
    if let Some(other) = &ctx.other {
        other
            .invalidate_tag(&tag)
            .await
            .map_err(|e| format!("invalidate_tag: {e}"))?;
        // Without a near copy Redis alone answers: at once. A near copy is evicted by the
        // tracking push: soon, well before the entry expires.
        let bound = if tg.t.local.is_zero() {
            Duration::ZERO
        } else {
            tg.t.ttl / 2
        };
        let got = poll(bound, || async {
            let v = tg.get(c, 0).await;
            (v != v2).then_some(v)
        })
        .await;
        ensure!(
            got.is_some(),
            "another handle's invalidate_tag({tag:?}) not seen within {bound:?}"
        );
    }
    Ok(())
}

/// cache_if: a rejected value is returned and not stored (the next call loads again, `peek`
/// finds nothing); an accepted one is stored (the next call is a hit).
async fn check_cache_if(ctx: &Ctx, tg: &Target) -> Check {
    let c = &ctx.cache;
    tg.row.reject.store(true, SeqCst);
    let a = tg.get(c, 0).await;
    ensure!(a.starts_with("x-"), "got {a:?}");
    let peek = c.peek::<String>(&(tg.key_of)(0)).await;
    ensure!(
        matches!(peek, Ok(Peek::Missing)),
        "a rejected value was stored: {peek:?}"
    );
    let b = tg.get(c, 0).await;
    ensure!(
        b != a && tg.runs() == 2,
        "not stored: the next call must load ({} loads)",
        tg.runs()
    );
    tg.row.reject.store(false, SeqCst);
    let v = tg.get(c, 0).await;
    ensure!(keep(&v) && tg.runs() == 3, "an accepted value: {v:?}");
    ensure!(
        tg.get(c, 0).await == v && tg.runs() == 3,
        "an accepted value was not stored"
    );
    Ok(())
}

async fn ctx_of(env: &TestEnv) -> Ctx {
    let other = match &env.server {
        Some(server) => Some(
            Cache::builder()
                .redis(server.url())
                .namespace(TEST_NAMESPACE)
                .build()
                .await
                .expect("second handle"),
        ),
        None => None,
    };
    let ctx = Ctx {
        cache: env.cache.clone(),
        other,
        raw: env.raw().await.map(RawConn::Server),
    };
    warm_up(&ctx).await;
    ctx
}

/// On Redis, waits until the near cache's tracking (set up in the background) is active.
async fn warm_up(ctx: &Ctx) {
    if ctx.redis() {
        // Near-cache tracking is set up in the background: wait for a first near hit.
        let opts = EntryOptions::new(Duration::from_secs(60))
            .local_ttl(Duration::from_secs(60))
            .name("pairs.warmup");
        let hit = poll(Duration::from_secs(10), || async {
            let _: Result<u64, Infallible> = ctx
                .cache
                .get_or_load("pairs:warmup", &opts, || async { Ok(1) })
                .await;
            (ctx.cache.stats().function("pairs.warmup").local_hits > 0).then_some(())
        })
        .await;
        assert!(hit.is_some(), "near cache never became active");
    }
}

fn report(backend: &str, what: &str, rows: &[(String, Check)], started: Instant) {
    println!(
        "{what} on {backend}: {} checks in {:?}",
        rows.len(),
        started.elapsed()
    );
    for (label, r) in rows {
        match r {
            Ok(()) => println!("  PASS {label}"),
            Err(e) => println!("  FAIL {label}: {e}"),
        }
    }
    let failed: Vec<_> = rows
        .iter()
        .filter_map(|(l, r)| r.as_ref().err().map(|e| format!("{l}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} checks failed on {backend}:\n{}",
        failed.len(),
        rows.len(),
        failed.join("\n")
    );
}

async fn bounded(label: String, fut: impl Future<Output = Check>) -> (String, Check) {
    let r = match tokio::time::timeout(CHECK_BOUND, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("hung: not done within {CHECK_BOUND:?}")),
    };
    (label, r)
}

/// Every pair of the programmatic options, each option's checker on its own key, all at once.
async fn programmatic_pairs(env: TestEnv) {
    programmatic_pairs_on(ctx_of(&env).await, &format!("{:?}", env.backend)).await;
}

async fn programmatic_pairs_on(ctx: Ctx, backend: &str) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, a) in OPTS.iter().enumerate() {
        for b in &OPTS[i + 1..] {
            let pair = [*a, *b];
            for chk in pair {
                let tg = programmatic(&pair, chk);
                let ctx = ctx.clone();
                let label = format!("{} x {} -> {}", a.label(), b.label(), chk.label());
                tasks.push(tokio::spawn(bounded(label, async move {
                    check(chk, &ctx, &tg).await
                })));
            }
        }
    }
    let mut rows = Vec::new();
    for t in tasks {
        rows.push(t.await.expect("checker panicked"));
    }
    report(backend, "programmatic pairs", &rows, started);
}

/// The checkers are not vacuous: each one fails on options that lack its option (`local_ttl`
/// only on Redis, where it is not a pass-through; `negative_ttl` defaults to the TTL, which
/// its checker accepts).
async fn checkers_fail_without_their_option(env: TestEnv) {
    checkers_fail_without_their_option_on(ctx_of(&env).await).await;
}

async fn checkers_fail_without_their_option_on(ctx: Ctx) {
    let mut controls = vec![
        (vec![], Opt::Jitter),
        (vec![], Opt::Stale),
        (vec![Opt::Stale], Opt::Soft),
        (vec![], Opt::Early),
        (vec![], Opt::Tags),
    ];
    if ctx.redis() {
        controls.push((vec![], Opt::Local));
    }
    let tasks: Vec<_> = controls
        .into_iter()
        .map(|(pair, chk)| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                // The checker expects the durations of its option; the cache does not get it.
                let mut tg = programmatic(&pair, chk);
                tg.t = programmatic_timing(&[&pair[..], &[chk]].concat());
                let label = format!("{pair:?} -> {}", chk.label());
                bounded(label, check(chk, &ctx, &tg)).await
            })
        })
        .collect();
    for t in tasks {
        let (label, r) = t.await.expect("checker panicked");
        println!("control {label}: {r:?}");
        assert!(r.is_err(), "{label}: the checker passed without its option");
    }
}

// ---------------------------------------------------------------------------------------------
// cache_if with every other option, through `#[cached]` (seconds: the attributes' unit).

#[cached(key = "ci_jitter:{i}", ttl = 1, jitter = 1, cache_if = keep, name = "pairs.ci.jitter", cache = cache)]
async fn ci_jitter(cache: &Cache, i: u64, row: &Arc<Row>) -> String {
    row.load().await
}

#[cached(key = "ci_negative:{i}", ttl = 2, negative_ttl = 1, cache_if = keep, name = "pairs.ci.negative", cache = cache)]
async fn ci_negative(cache: &Cache, i: u64, row: &Arc<Row>) -> Option<String> {
    row.find().await
}

#[cached(key = "ci_stale:{i}", ttl = 1, stale = 3, cache_if = keep, name = "pairs.ci.stale", cache = cache)]
async fn ci_stale(cache: &Cache, i: u64, row: &Arc<Row>) -> String {
    row.load().await
}

#[cached(key = "ci_early:{i}", ttl = 1, early_refresh = 10.0, cache_if = keep, name = "pairs.ci.early", cache = cache)]
async fn ci_early(cache: &Cache, i: u64, row: &Arc<Row>) -> String {
    row.load().await
}

#[cached(key = "ci_soft:{i}", ttl = 1, stale = 3, timeout_ms = 100, cache_if = keep, name = "pairs.ci.soft", cache = cache)]
async fn ci_soft(cache: &Cache, i: u64, row: &Arc<Row>) -> String {
    row.load().await
}

#[cached(key = "ci_local:{i}", ttl = 1, local_ttl = 1, cache_if = keep, name = "pairs.ci.local", cache = cache)]
async fn ci_local(cache: &Cache, i: u64, row: &Arc<Row>) -> String {
    row.load().await
}

#[cached(key = "ci_tags:{i}", ttl = 1, tags = ["citag:{i}"], cache_if = keep, name = "pairs.ci.tags", cache = cache)]
async fn ci_tags(cache: &Cache, i: u64, row: &Arc<Row>) -> String {
    row.load().await
}

const S: Duration = Duration::from_secs(1);

/// The attribute target of (cache_if, `partner`) for checker `chk`; checker `n` of the pair
/// uses keys from `n * 100` on.
fn attribute(partner: Opt, chk: Opt, n: u64) -> Target {
    let row = Row::new(if chk == Opt::Early {
        EARLY_LOAD
    } else {
        Duration::ZERO
    });
    let mut t = Timing {
        ttl: S,
        cache_if: true,
        ..Timing::default()
    };
    macro_rules! value_fn {
        ($f:ident, $prefix:literal, $name:literal) => {{
            let get: GetFn = {
                let row = row.clone();
                Arc::new(move |cache: Cache, i| {
                    let row = row.clone();
                    Box::pin(async move { $f(&cache, n * 100 + i, &row).await })
                })
            };
            let find: FindFn = Arc::new(|_, _| unreachable!("a value function"));
            (get, find, $prefix, $name)
        }};
    }
    let (get, find, prefix, name) = match partner {
        Opt::Jitter => {
            t.jitter = S;
            value_fn!(ci_jitter, "ci_jitter", "pairs.ci.jitter")
        }
        Opt::Negative => {
            t.ttl = 2 * S;
            t.negative = S;
            let find: FindFn = {
                let row = row.clone();
                Arc::new(move |cache: Cache, i| {
                    let row = row.clone();
                    Box::pin(async move { ci_negative(&cache, n * 100 + i, &row).await })
                })
            };
            let get: GetFn = {
                let find = find.clone();
                Arc::new(move |cache: Cache, i| {
                    let find = find.clone();
                    Box::pin(async move { find(cache, i).await.expect("a value") })
                })
            };
            (get, find, "ci_negative", "pairs.ci.negative")
        }
        Opt::Stale => {
            t.stale = 3 * S;
            value_fn!(ci_stale, "ci_stale", "pairs.ci.stale")
        }
        Opt::Early => {
            t.early = true;
            value_fn!(ci_early, "ci_early", "pairs.ci.early")
        }
        Opt::Soft => {
            t.stale = 3 * S;
            t.soft = ms(100);
            value_fn!(ci_soft, "ci_soft", "pairs.ci.soft")
        }
        Opt::Local => {
            t.local = S;
            value_fn!(ci_local, "ci_local", "pairs.ci.local")
        }
        Opt::Tags => {
            t.tags = true;
            value_fn!(ci_tags, "ci_tags", "pairs.ci.tags")
        }
        Opt::CacheIf => unreachable!(),
    };
    Target {
        name: name.to_owned(),
        t,
        row,
        get,
        find,
        key_of: Arc::new(move |i| format!("{prefix}:{}", n * 100 + i)),
        tag_of: Arc::new(move |i| format!("citag:{}", n * 100 + i)),
    }
}

/// `cache_if` with each other option: per pair, both checkers one after the other (they share
/// the function's stats name); the pairs at once.
async fn cache_if_pairs(env: TestEnv) {
    cache_if_pairs_on(ctx_of(&env).await, &format!("{:?}", env.backend)).await;
}

async fn cache_if_pairs_on(ctx: Ctx, backend: &str) {
    let started = Instant::now();
    let tasks: Vec<_> = OPTS
        .iter()
        .map(|&partner| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut rows = Vec::new();
                for (n, chk) in [Opt::CacheIf, partner].into_iter().enumerate() {
                    let tg = attribute(partner, chk, n as u64);
                    let label = format!("cache_if x {} -> {}", partner.label(), chk.label());
                    rows.push(bounded(label, check(chk, &ctx, &tg)).await);
                }
                rows
            })
        })
        .collect();
    let mut rows = Vec::new();
    for t in tasks {
        rows.extend(t.await.expect("checker panicked"));
    }
    report(backend, "cache_if pairs (attributes)", &rows, started);
}

backend_tests!(
    with |b| b.xfetch_seed(7);
    programmatic_pairs,
    cache_if_pairs,
    checkers_fail_without_their_option,
);

/// The three scenarios on one Redis Cluster (3 masters + 3 replicas), one after the other,
/// each with its own namespace (so its own keys, tags and near copies); the cache under test
/// and the second handle ("another process") both on the cluster, the raw connection routed
/// by key. Each option's behaviour in the pair is asserted as on a single server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn option_pairs_on_a_cluster() {
    let cluster = RedisCluster::start();
    let raw = RawConn::Cluster(cluster.raw().await);
    let handle = |ns: String, seeded: bool| {
        let urls = cluster.urls();
        async move {
            let b = Cache::builder()
                .redis_cluster(urls)
                .namespace(ns)
                .require_connection();
            let b = if seeded { b.xfetch_seed(7) } else { b };
            b.build().await.expect("cache on the cluster")
        }
    };
    let mut failed = Vec::new();
    for name in ["programmatic_pairs", "cache_if_pairs", "checkers_fail"] {
        let ns = format!("pairs_{name}");
        let ctx = Ctx {
            cache: handle(ns.clone(), true).await,
            other: Some(handle(ns, false).await),
            raw: Some(raw.clone()),
        };
        warm_up(&ctx).await;
        // A task per scenario: one that fails does not hide the others.
        let run = tokio::spawn(async move {
            match name {
                "programmatic_pairs" => programmatic_pairs_on(ctx, "Cluster").await,
                "cache_if_pairs" => cache_if_pairs_on(ctx, "Cluster").await,
                _ => checkers_fail_without_their_option_on(ctx).await,
            }
        });
        if let Err(e) = guard_for(name, CHECK_BOUND * 2, run).await {
            failed.push(format!("{name}: {e}"));
        }
    }
    assert!(failed.is_empty(), "on the cluster: {failed:#?}");
}
