//! Tags (`tags = ["org:{org}"]`, `Cache::invalidate_tag`, `#[invalidates(tags = [..])]`) and
//! conditional caching (`cache_if`).
//!
//! * invalidating a tag of 10 000 entries voids exactly those (all reload, another tag's
//!   entries stay cached), in bounded batches (checked in Redis's SLOWLOG);
//! * a tag invalidation during a load voids that load (its result is not stored);
//! * tag bookkeeping expires with its entries;
//! * `cache_if` returning false: returned (also to waiting callers), not stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, FnStats, cached, invalidates};
use cache_tests::source::{Source, alive_tasks};
use cache_tests::{Backend, TestEnv, backend_tests, eventually, guard, guard_for};
use tokio::task::JoinSet;

fn v(version: u64, run: u64) -> String {
    Source::value(version, run)
}

/// Sleep this long after a load to be past its `ttl = 1` (in the grace window).
const PAST_TTL: Duration = Duration::from_millis(1_100);

/// Waits until the tasks spawned since `baseline = alive_tasks()` (background refreshes)
/// have ended.
async fn settle(baseline: usize) {
    eventually(
        "the background refreshes ended",
        Duration::from_secs(10),
        || async move { alive_tasks() <= baseline },
    )
    .await;
}

fn stats(cache: &Cache, name: &str) -> FnStats {
    cache.stats().function(name)
}

/// The Redis key of a rendered tag's member set.
fn tag_key(env: &TestEnv, tag: &str) -> String {
    env.cache.full_key(&format!("!tag:{tag}"))
}

#[cached(key = "user:{id}", ttl = 300, tags = ["org:{org}"], cache = cache)]
async fn user(cache: &Cache, org: u64, id: u64, src: &Source) -> String {
    format!("{id}:{}", src.load_ok().await)
}
const USER: &str = "invalidation::tags::user";

/// Calls `user(org, id)` for every id, 64 at a time.
async fn load_users(cache: &Cache, src: &Arc<Source>, org: u64, ids: std::ops::Range<u64>) {
    let mut set = JoinSet::new();
    for id in ids {
        while set.len() >= 64 {
            set.join_next()
                .await
                .expect("a task")
                .expect("call panicked");
        }
        let (cache, src) = (cache.clone(), src.clone());
        set.spawn(async move { user(&cache, org, id, &src).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("call panicked");
    }
}

/// One `SLOWLOG GET` entry: id, unix time, duration (µs), arguments, client, client name.
/// (Redis 7 also logs the commands a script calls, here the `ZSCORE`/`ZREM` of each member.)
type SlowlogEntry = (i64, i64, i64, Vec<Vec<u8>>, Vec<u8>, Vec<u8>);

/// The real argument count of a slowlog entry (Redis keeps 32: the last one then reads
/// `... (N more arguments)`).
fn argc(args: &[Vec<u8>]) -> usize {
    if let Some(last) = args.last() {
        let last = String::from_utf8_lossy(last);
        if let Some(rest) = last.strip_prefix("... (") {
            let n: usize = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected slowlog argument {last}"));
            return args.len() - 1 + n;
        }
    }
    args.len()
}

const ORG1_USERS: u64 = 10_000;
const ORG2_USERS: u64 = 100;
const BATCH: usize = 500;

/// 10 000 entries in org 1 and 100 in org 2; `invalidate_tag("org:1")` voids exactly the
/// 10 000: each reloads once (10 000 loader runs), org 2's stay cached. On Redis, every
/// command the invalidation sent is bounded: at most 500 keys per `UNLINK`, at most 500
/// members per conditional-`ZREM` script (SLOWLOG with a 0 µs threshold).
async fn invalidate_tag_voids_10000_members_in_bounded_batches(env: TestEnv) {
    let src = Source::new();
    let t0 = Instant::now();
    guard_for("loading 10 100 entries", Duration::from_secs(60), async {
        load_users(&env.cache, &src, 1, 0..ORG1_USERS).await;
        load_users(&env.cache, &src, 2, 100_000..100_000 + ORG2_USERS).await;
    })
    .await;
    println!(
        "loaded {} entries in {} ms ({:?})",
        ORG1_USERS + ORG2_USERS,
        t0.elapsed().as_millis(),
        env.backend
    );
    assert_eq!(src.runs(), ORG1_USERS + ORG2_USERS);
    let raw = env.raw().await;
    if let Some(raw) = &raw {
        let card: u64 = raw
            .cmd(redis::cmd("ZCARD").arg(tag_key(&env, "org:1")))
            .await;
        assert_eq!(card, ORG1_USERS);
        raw.cmd::<()>(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("slowlog-log-slower-than")
                .arg(0),
        )
        .await;
        raw.cmd::<()>(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("slowlog-max-len")
                .arg(100_000),
        )
        .await;
        raw.cmd::<()>(redis::cmd("SLOWLOG").arg("RESET")).await;
    }

    let t0 = Instant::now();
    guard("invalidate_tag(org:1)", env.cache.invalidate_tag("org:1"))
        .await
        .expect("tag invalidation");
    let took = t0.elapsed();

    if let Some(raw) = &raw {
        // A blocking connection without a response timeout: the reply is large.
        let client = env.server.as_ref().expect("redis").client();
        let log: Vec<SlowlogEntry> = tokio::task::spawn_blocking(move || {
            let mut conn = client.get_connection().expect("connect");
            redis::cmd("SLOWLOG")
                .arg("GET")
                .arg(-1)
                .query(&mut conn)
                .expect("SLOWLOG GET")
        })
        .await
        .expect("slowlog reader");
        raw.cmd::<()>(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("slowlog-log-slower-than")
                .arg(10_000),
        )
        .await;
        let cmds: Vec<(String, usize, i64)> = log
            .iter()
            .map(|(_, _, micros, args, _, _)| {
                let name = String::from_utf8_lossy(&args[0]).to_uppercase();
                (name, argc(args), *micros)
            })
            .filter(|(name, _, _)| name != "SLOWLOG" && name != "CONFIG")
            .collect();
        let longest = cmds
            .iter()
            .max_by_key(|(_, _, micros)| *micros)
            .expect("the invalidation's commands are logged");
        let count = |n: &str| cmds.iter().filter(|(name, _, _)| name == n).count();
        let unlinked: usize = cmds
            .iter()
            .filter(|(name, _, _)| name == "UNLINK")
            .map(|(_, argc, _)| argc - 1)
            .sum();
        let max_argc = |n: &str| {
            cmds.iter()
                .filter(|(name, _, _)| name == n)
                .map(|(_, argc, _)| *argc)
                .max()
                .unwrap_or(0)
        };
        let mut names = std::collections::BTreeMap::<&str, usize>::new();
        cmds.iter()
            .for_each(|(n, _, _)| *names.entry(n.as_str()).or_default() += 1);
        println!("slowlog: {} entries: {names:?}", log.len());
        let total_micros: i64 = cmds.iter().map(|(_, _, micros)| micros).sum();
        println!(
            "invalidate_tag of {ORG1_USERS} members: {} ms wall, {} commands ({} ZSCAN, {} UNLINK, \
             {} EVALSHA), {total_micros} µs in Redis; longest command: {} with {} args, {} µs; \
             largest UNLINK {} args, largest EVALSHA {} args; {unlinked} keys unlinked",
            took.as_millis(),
            cmds.len(),
            count("ZSCAN"),
            count("UNLINK"),
            count("EVALSHA"),
            longest.0,
            longest.1,
            longest.2,
            max_argc("UNLINK"),
            max_argc("EVALSHA"),
        );
        for (name, argc, micros) in &cmds {
            let keys = match name.as_str() {
                "UNLINK" | "DEL" => argc - 1,
                // EVALSHA sha numkeys tag member score member score ...
                "EVALSHA" | "EVAL" => argc.saturating_sub(4) / 2,
                _ => argc - 1,
            };
            assert!(
                keys <= BATCH,
                "{name} with {argc} args ({keys} keys/members, {micros} µs): batches are bounded"
            );
        }
        assert!(
            unlinked >= ORG1_USERS as usize && count("UNLINK") >= ORG1_USERS as usize / BATCH,
            "every member unlinked in batches of at most {BATCH}: {unlinked} keys in {} UNLINKs",
            count("UNLINK")
        );
        assert!(
            !raw.exists(&tag_key(&env, "org:1")).await,
            "the tag set is gone"
        );
        let dbsize: u64 = raw.cmd(&redis::cmd("DBSIZE")).await;
        assert_eq!(
            dbsize,
            ORG2_USERS + 1,
            "only org 2's entries and its tag set are left"
        );
    } else {
        println!(
            "invalidate_tag of {ORG1_USERS} members: {} ms ({:?})",
            took.as_millis(),
            env.backend
        );
    }
    assert_eq!(
        stats(&env.cache, "cache_runtime::invalidate_tag").tag_invalidations,
        1
    );

    let runs = src.runs();
    guard_for("reloading", Duration::from_secs(60), async {
        load_users(&env.cache, &src, 1, 0..ORG1_USERS).await;
        load_users(&env.cache, &src, 2, 100_000..100_000 + ORG2_USERS).await;
    })
    .await;
    assert_eq!(
        src.runs() - runs,
        ORG1_USERS,
        "every org-1 entry reloads once, no org-2 entry does"
    );
    let s = stats(&env.cache, USER);
    assert_eq!(
        (s.misses, s.hits),
        (2 * ORG1_USERS + ORG2_USERS, ORG2_USERS),
        "{s:?}"
    );
}

#[invalidates(tags = ["org:{org}"], cache = cache)]
async fn reorganise(cache: &Cache, org: u64) {}

/// `#[invalidates(tags = ["org:{org}"])]` voids the org's members, and only them.
async fn invalidates_with_tags_voids_members(env: TestEnv) {
    let src = Source::new();
    for id in 1..=3 {
        assert_eq!(
            user(&env.cache, 5, id, &src).await,
            format!("{id}:{}", v(1, id))
        );
    }
    assert_eq!(user(&env.cache, 6, 4, &src).await, format!("4:{}", v(1, 4)));
    reorganise(&env.cache, 5).await;
    let s = stats(&env.cache, "invalidation::tags::reorganise");
    assert_eq!((s.tag_invalidations, s.invalidations), (1, 0), "{s:?}");
    if let Some(raw) = env.raw().await {
        for id in 1..=3 {
            assert!(!raw.exists(&env.cache.full_key(&format!("user:{id}"))).await);
        }
        assert!(raw.exists(&env.cache.full_key("user:4")).await);
    }
    for id in 1..=3 {
        assert_eq!(
            user(&env.cache, 5, id, &src).await,
            format!("{id}:{}", v(1, 4 + id)),
            "org 5 reloads"
        );
    }
    assert_eq!(
        user(&env.cache, 6, 4, &src).await,
        format!("4:{}", v(1, 4)),
        "org 6 stays cached"
    );
    assert_eq!(src.runs(), 7);
}

/// A tag invalidation while a load of a member runs (its lease won, its membership
/// registered, its loader held at the gate after reading version 1): the load's result goes
/// to its caller but is not stored; the next call reloads version 2.
async fn tag_invalidation_voids_a_running_load(env: TestEnv) {
    let src = Source::new();
    src.gate_next();
    let call = tokio::spawn({
        let (cache, src) = (env.cache.clone(), src.clone());
        async move { user(&cache, 9, 1, &src).await }
    });
    guard("the loader starts", src.entered()).await;
    let raw = env.raw().await;
    if let Some(raw) = &raw {
        let score: Option<f64> = raw
            .cmd(
                redis::cmd("ZSCORE")
                    .arg(tag_key(&env, "org:9"))
                    .arg(env.cache.full_key("user:1")),
            )
            .await;
        assert!(
            score.is_some(),
            "registered in the tag before the loader ran"
        );
    }
    src.write();
    guard("invalidate_tag(org:9)", env.cache.invalidate_tag("org:9"))
        .await
        .expect("tag invalidation");
    src.ungate();
    src.open(1);
    assert_eq!(
        guard("the voided load", call).await.expect("call panicked"),
        format!("1:{}", v(1, 1)),
        "the caller still gets its result"
    );
    if let Some(raw) = &raw {
        assert!(
            !raw.exists(&env.cache.full_key("user:1")).await,
            "the voided load stored its result"
        );
    }
    assert_eq!(
        user(&env.cache, 9, 1, &src).await,
        format!("1:{}", v(2, 2)),
        "the next call reloads"
    );
    assert_eq!(user(&env.cache, 9, 1, &src).await, format!("1:{}", v(2, 2)));
    assert_eq!(src.runs(), 2);
    let s = stats(&env.cache, USER);
    assert_eq!((s.misses, s.hits, s.loads), (2, 1, 2), "{s:?}");
}

#[cached(key = "short:{id}", ttl = 1, tags = ["org:{org}"], cache = cache)]
async fn short(cache: &Cache, org: u64, id: u64, src: &Source) -> String {
    src.load_ok().await
}

/// `lock_ms` of the caches in the expiry tests: a membership lasts ttl + 11 lease lengths.
const LOCK_MS: u64 = 100;

/// Redis: the tag's sorted set expires with its members: its PTTL is at most the members'
/// TTL (1 s) plus the lease hold (11 x lock_ms), at least the longest member's, and the set
/// is gone (without any further call) within about 3 s.
/// (Memory: see `expired_memberships_do_not_void_a_reloaded_key`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_set_expires_with_its_members() {
    let env = TestEnv::with(Backend::Redis, |b| b.lock_ms(LOCK_MS)).await;
    let raw = env.raw().await.expect("redis");
    let src = Source::new();
    for id in 1..=5 {
        short(&env.cache, 1, id, &src).await;
    }
    let loaded = Instant::now();
    let tag = tag_key(&env, "org:1");
    let set_pttl = raw.pttl(&tag).await;
    let mut member_pttl = 0;
    for id in 1..=5 {
        member_pttl = member_pttl.max(raw.pttl(&env.cache.full_key(&format!("short:{id}"))).await);
    }
    let bound = 1_000 + 11 * LOCK_MS as i64;
    println!("tag set PTTL {set_pttl} ms, longest member PTTL {member_pttl} ms, bound {bound} ms");
    assert!(member_pttl > 0 && member_pttl <= 1_000, "{member_pttl}");
    assert!(
        set_pttl >= member_pttl && set_pttl <= bound,
        "tag set PTTL {set_pttl} ms, members' {member_pttl} ms, bound {bound} ms"
    );
    let r = raw.clone();
    let t = tag.clone();
    eventually("the tag set expires", Duration::from_secs(3), || {
        let (r, t) = (r.clone(), t.clone());
        async move { !r.exists(&t).await }
    })
    .await;
    println!(
        "tag set gone {} ms after the loads",
        loaded.elapsed().as_millis()
    );
    for id in 1..=5 {
        assert!(
            !raw.exists(&env.cache.full_key(&format!("short:{id}")))
                .await
        );
    }
}

#[cached(key = "exp:{id}", ttl = 1, tags = ["org:{org}"], cache = cache)]
async fn exp_tagged(cache: &Cache, org: u64, id: u64, src: &Source) -> String {
    src.load_ok().await
}

#[cached(key = "exp:{id}", ttl = 300, cache = cache)]
async fn exp_untagged(cache: &Cache, id: u64, src: &Source) -> String {
    src.load_ok().await
}

/// Memberships run out with their entries (pruned by the next registration on the memory
/// backend, expired with the set on Redis): `exp:1`, tagged `org:3` with `ttl = 1`, expires;
/// `exp:2` registers in `org:3`; `exp:1` is reloaded by an untagged function. Invalidating
/// `org:3` then voids `exp:2` only: the untagged `exp:1` stays cached (a stale membership
/// would delete it and cost a reload).
async fn expired_memberships_do_not_void_a_reloaded_key(env: TestEnv) {
    let src = Source::new();
    assert_eq!(exp_tagged(&env.cache, 3, 1, &src).await, v(1, 1));
    // The membership lasts ttl + 11 x lock_ms = 2.1 s from the registration.
    tokio::time::sleep(Duration::from_millis(1_000 + 11 * LOCK_MS + 200)).await;
    assert_eq!(exp_tagged(&env.cache, 3, 2, &src).await, v(1, 2));
    assert_eq!(
        exp_untagged(&env.cache, 1, &src).await,
        v(1, 3),
        "exp:1 expired: reloaded, untagged"
    );
    env.cache
        .invalidate_tag("org:3")
        .await
        .expect("tag invalidation");
    assert_eq!(
        exp_untagged(&env.cache, 1, &src).await,
        v(1, 3),
        "the untagged exp:1 is still cached"
    );
    assert_eq!(src.runs(), 3);
    assert_eq!(
        exp_tagged(&env.cache, 3, 2, &src).await,
        v(1, 4),
        "exp:2 was voided"
    );
    assert_eq!(src.runs(), 4);
}

#[cached(key = "swrt:{id}", ttl = 1, stale = 2, tags = ["grp:{group}"], cache = cache)]
async fn swr_tagged(cache: &Cache, group: u64, id: u64, src: &Arc<Source>) -> String {
    src.load_ok().await
}

/// A tag invalidation while a background refresh of a member runs (grace window; the refresh
/// read version 1 and is held at the gate): reads after `invalidate_tag` returned get version
/// 2, and the refresh, released afterwards, does not store version 1.
async fn tag_invalidation_voids_a_running_refresh(env: TestEnv) {
    let src = Source::new();
    assert_eq!(swr_tagged(&env.cache, 7, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    let baseline = alive_tasks();
    src.gate_next();
    assert_eq!(swr_tagged(&env.cache, 7, 1, &src).await, v(1, 1), "stale");
    guard("the refresh's loader read version 1", src.entered()).await;
    src.ungate();
    src.write();
    env.cache
        .invalidate_tag("grp:7")
        .await
        .expect("tag invalidation");
    assert_eq!(swr_tagged(&env.cache, 7, 1, &src).await, v(2, 3));
    src.open(1);
    settle(baseline).await;
    assert_eq!(src.finished(), 3);
    if let Some(raw) = env.raw().await {
        let bytes = raw
            .get(&env.cache.full_key("swrt:1"))
            .await
            .expect("stored");
        assert!(
            String::from_utf8_lossy(&bytes).contains(&v(2, 3)),
            "the voided refresh overwrote version 2"
        );
    }
    assert_eq!(swr_tagged(&env.cache, 7, 1, &src).await, v(2, 3));
    let s = stats(&env.cache, "invalidation::tags::swr_tagged");
    assert_eq!(
        (src.runs(), s.misses, s.hits, s.refreshes, s.stale_served),
        (3, 2, 1, 1, 1),
        "{s:?}"
    );
}

/// A background refresh of a tagged entry whose loader runs longer than the refresh lease
/// (`lock_ms` x 10 = 100 ms here; the refresh registered the membership for
/// `ttl + stale + lock_ms x 11` = 3.11 s from its start): when it stores its result, the new
/// entry lives `ttl + stale` = 3 s from the store, longer than its membership. Once the
/// membership ran out (the set expired on Redis; pruned by the next registration on memory),
/// a write + `invalidate_tag` must still void the entry: the next read must get version 2.
///
/// Timeline (s): 0 prime; 1.1 refresh starts (membership until 4.21); 2.1 the refresh stores
/// (entry until 5.1, fresh until 3.1); 4.3 write + invalidate_tag; read.
async fn refresh_past_its_lease_cannot_outlive_its_tag_membership(env: TestEnv) {
    let src = Source::new();
    assert_eq!(swr_tagged(&env.cache, 1, 1, &src).await, v(1, 1));
    tokio::time::sleep(PAST_TTL).await;
    let baseline = alive_tasks();
    src.gate_next();
    let refresh_started = Instant::now();
    assert_eq!(swr_tagged(&env.cache, 1, 1, &src).await, v(1, 1), "stale");
    guard("the refresh's loader starts", src.entered()).await;
    // The loader runs 1 s, well past the refresh lease (100 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    src.ungate();
    src.open(1);
    settle(baseline).await;
    assert_eq!(
        src.runs(),
        2,
        "one refresh; the value it stored is the one at stake"
    );
    // Past the membership the refresh registered (3.11 s from its start).
    tokio::time::sleep(Duration::from_millis(3_300).saturating_sub(refresh_started.elapsed()))
        .await;
    let raw = env.raw().await;
    if let Some(raw) = &raw {
        assert!(
            !raw.exists(&tag_key(&env, "grp:1")).await,
            "the tag set expired with the membership"
        );
    }
    // Another member registers (prunes run-out memberships on the memory backend).
    assert_eq!(swr_tagged(&env.cache, 1, 2, &src).await, v(1, 3));
    src.write();
    env.cache
        .invalidate_tag("grp:1")
        .await
        .expect("tag invalidation");
    let still_stored = match &raw {
        Some(raw) => Some(raw.exists(&env.cache.full_key("swrt:1")).await),
        None => None,
    };
    let value = swr_tagged(&env.cache, 1, 1, &src).await;
    println!(
        "{:?}: {} ms after the refresh started, after write + invalidate_tag: stored = {still_stored:?}, read = {value}",
        env.backend,
        refresh_started.elapsed().as_millis()
    );
    assert_eq!(
        value,
        v(2, 4),
        "a read after write + invalidate_tag got the refreshed version-1 entry, which outlived \
         its tag membership"
    );
}

// ---------------------------------------------------------------------------------------------
// cache_if

/// `cache_if` takes a `fn(&T) -> bool`, here `T = String`.
#[allow(clippy::ptr_arg)]
fn keep(value: &String) -> bool {
    !value.starts_with("tmp:")
}

#[cached(key = "cond:{id}", ttl = 300, cache_if = keep, cache = cache)]
async fn cond(cache: &Cache, id: u64, src: &Source) -> String {
    let value = src.load_ok().await;
    if id.is_multiple_of(2) {
        format!("tmp:{value}")
    } else {
        value
    }
}
const COND: &str = "invalidation::tags::cond";

/// `cache_if = keep`: a value it accepts is stored (the next call is a hit), a value it
/// rejects is returned but not stored (the next call loads again).
async fn cache_if_decides_what_is_stored(env: TestEnv) {
    let src = Source::new();
    let raw = env.raw().await;
    assert_eq!(cond(&env.cache, 1, &src).await, v(1, 1));
    assert_eq!(cond(&env.cache, 1, &src).await, v(1, 1), "kept: a hit");
    assert_eq!(src.runs(), 1);
    assert_eq!(cond(&env.cache, 2, &src).await, format!("tmp:{}", v(1, 2)));
    if let Some(raw) = &raw {
        assert!(raw.exists(&env.cache.full_key("cond:1")).await);
        assert!(
            !raw.exists(&env.cache.full_key("cond:2")).await,
            "rejected by cache_if: not stored"
        );
    }
    assert_eq!(
        cond(&env.cache, 2, &src).await,
        format!("tmp:{}", v(1, 3)),
        "not stored: loads again"
    );
    assert_eq!(src.runs(), 3);
    let s = stats(&env.cache, COND);
    assert_eq!((s.hits, s.misses, s.loads), (1, 3, 3), "{s:?}");
}

/// 16 concurrent callers on a key whose value `cache_if` rejects: one loader run, every
/// caller gets its value (handed over in process), nothing is stored, the next call loads.
async fn cache_if_rejected_value_still_reaches_waiting_callers(env: TestEnv) {
    const N: u64 = 16;
    let src = Source::new();
    src.gate_next();
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (cache, src) = (env.cache.clone(), src.clone());
            tokio::spawn(async move { cond(&cache, 4, &src).await })
        })
        .collect();
    let c = env.cache.clone();
    eventually("all 16 callers missed", Duration::from_secs(20), || {
        let c = c.clone();
        async move { stats(&c, COND).misses == N }
    })
    .await;
    src.ungate();
    src.open(1);
    for t in tasks {
        assert_eq!(
            guard("a caller", t).await.expect("call panicked"),
            format!("tmp:{}", v(1, 1))
        );
    }
    assert_eq!(src.runs(), 1, "one loader run for all 16");
    if let Some(raw) = env.raw().await {
        assert!(
            !raw.exists(&env.cache.full_key("cond:4")).await,
            "not stored"
        );
    }
    assert_eq!(cond(&env.cache, 4, &src).await, format!("tmp:{}", v(1, 2)));
    assert_eq!(src.runs(), 2);
}

backend_tests!(
    tag_invalidation_voids_a_running_refresh,
    invalidate_tag_voids_10000_members_in_bounded_batches,
    invalidates_with_tags_voids_members,
    tag_invalidation_voids_a_running_load,
    cache_if_decides_what_is_stored,
    cache_if_rejected_value_still_reaches_waiting_callers,
);

mod short_leases {
    use super::*;

    cache_tests::backend_tests!(
        with |b| b.lock_ms(super::LOCK_MS);
        expired_memberships_do_not_void_a_reloaded_key,
    );
}

mod very_short_leases {
    use super::*;

    cache_tests::backend_tests!(
        with |b| b.lock_ms(10);
        refresh_past_its_lease_cannot_outlive_its_tag_membership,
    );
}
