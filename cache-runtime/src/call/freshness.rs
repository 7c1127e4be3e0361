//! Freshness beyond TTL: stale-while-revalidate (`stale = N`), fail-safe, XFetch early
//! refresh (`early_refresh = B`) and soft loader timeouts (`timeout_ms = N`).
//!
//! A refreshable entry lives in the store `ttl + stale` seconds; the envelope's fresh-until
//! marks the end of `ttl`. A hit past fresh-until (in the grace window) returns the stale
//! value and starts ONE background refresh: in this process through the `refreshing` flight
//! table, across processes through a refresh lease carried inside the entry itself (see
//! [`entry`](crate::entry)): a one-key compare-and-set that only succeeds on the very version
//! the caller read and only when no other refresh lease is running. The lease lasts about
//! `lock_ms` and is renewed while the loader runs (for at most `MAX_HOLD_LEASES` lease
//! lengths), so a refresher that dies mid-load frees the key after about `lock_ms`. The
//! refresh stores its result with a compare-and-set on its token, so an invalidation (which
//! deletes the key and the lease with it) voids the refresh exactly as it voids a load. A
//! refresh whose loader fails removes its lease and leaves the stale value in place until the
//! grace window ends (fail-safe).
//!
//! The refresh runs in a spawned task: the body's future owns its arguments
//! (`cached_refresh` in the macro's expansion).

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::cache::Cache;
use crate::call::hit::{self as load, Hook};
use crate::call::miss::{self as protocol, Loaded, MAX_HOLD_LEASES, Usable};
use crate::call::opaque;
use crate::entry::{self, Kind};
use crate::flight::{self, Landed, Leader, Role, Slot};
use crate::near::Meta;
use crate::spec::{FnSpec, Shape, View};
use crate::stats::Counters;
use crate::store::{Store, fault};

/// A handle to the [`FnSpec`] a background refresh can keep: `&'static FnSpec` (a
/// `#[cached]` function's static) or `Arc<FnSpec>` (the programmatic API's options).
pub(crate) trait SpecRef:
    std::ops::Deref<Target = FnSpec> + Clone + Send + Sync + 'static
{
}
impl<T: std::ops::Deref<Target = FnSpec> + Clone + Send + Sync + 'static> SpecRef for T {}

/// What to do with a usable entry (from Redis or a near copy) of a refreshing function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Fresh: return it; `early`: XFetch chose to refresh it in the background now.
    Fresh { early: bool },
    /// In the grace window: return it stale, starting a refresh unless one runs (`refresh`),
    /// after waiting up to `timeout_ms` for the refresh (`wait`).
    Stale { refresh: bool, wait: bool },
    /// Past its grace window: a miss.
    Expired,
}

/// The hit path's decision for an entry read at `now` (unix ms): `draw` is a uniform draw
/// in `(0, 1]` for XFetch, called only when early refresh is considered.
pub(crate) fn decide(spec: &FnSpec, m: &Meta, now: u64, draw: impl FnOnce() -> f64) -> Decision {
    let refreshing = m.refresh_until_ms > now;
    if m.fresh_until_ms >= now {
        let early = spec.early_refresh > 0.0
            && !refreshing
            && xfetch(m.load_ms, spec.early_refresh, m.fresh_until_ms, now, draw());
        return Decision::Fresh { early };
    }
    if now < m.fresh_until_ms.saturating_add(spec.stale_ms) {
        return Decision::Stale {
            refresh: !refreshing,
            wait: spec.timeout_ms > 0,
        };
    }
    Decision::Expired
}

/// XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh now when
/// `now - load_ms * B * ln(U) >= fresh_until`, `U ~ Uniform(0, 1]`.
fn xfetch(load_ms: u32, beta: f64, fresh_until: u64, now: u64, u: f64) -> bool {
    let gap = f64::from(load_ms) * beta * -u.ln();
    now as f64 + gap >= fresh_until as f64
}

/// The header fields of stored bytes, when they are a value or negative entry of `type_tag`.
fn meta_of(raw: &[u8], type_tag: u64) -> Option<(Meta, Usable<'_>)> {
    let (h, payload) = entry::decode(raw).ok()?;
    if h.kind == Kind::Lease || h.type_tag != type_tag {
        return None;
    }
    let u = match h.kind {
        Kind::Negative => Usable::Negative,
        _ => Usable::Value {
            codec: h.codec,
            payload,
        },
    };
    let m = Meta {
        stored_at_ms: h.stored_at_ms,
        fresh_until_ms: h.fresh_until_ms,
        load_ms: h.load_ms,
        refresh_until_ms: h.refresh_until_ms,
    };
    Some((m, u))
}

/// The engine behind calls that may refresh in the background (`stale`, `early_refresh`,
/// `timeout_ms`): the loader owns its arguments. The same hit path as
/// [`get_or_load_with`](crate::call::hit::get_or_load_with) (a near copy, else one `GET`), then
/// [`decide`] on what was found, else the miss path.
pub(crate) async fn get_or_load<S, R, F, Fut, P, H>(
    cache: &Cache,
    spec: P,
    key: String,
    cache_if: Option<fn(&S::Value) -> bool>,
    mut hook: H,
    load: F,
) -> R
where
    S: Shape<R> + 'static,
    R: Send + 'static,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R> + Send + 'static,
    P: SpecRef,
    H: Hook<S::Value>,
{
    let full = load::full_key(cache, key);
    if H::ACTIVE
        && let Some((v, m)) = hook.lookup(&full)
        && let Some(r) = load::from_copy::<S, R>(v)
    {
        let now = entry::now_ms();
        let d = decide(&spec, &m, now, || cache.engine.uniform());
        if d != Decision::Expired {
            if matches!(d, Decision::Fresh { .. }) {
                let c = cache.engine.stats().for_slot(&spec.slot, spec.name);
                Counters::bump(&c.local_hits);
            }
            return serve::<S, R, F, Fut, P>(cache, spec, &full, m, d, r, cache_if, load).await;
        }
    }
    let got = opaque!(load::get_full(cache, &full));
    let type_tag = entry::type_tag::<S::Value>();
    let mut unusable_why = None;
    if let Ok(Some(raw)) = &got {
        match meta_of(raw, type_tag) {
            Some((m, u)) => {
                let now = entry::now_ms();
                match decide(&spec, &m, now, || cache.engine.uniform()) {
                    Decision::Expired => unusable_why = Some(protocol::STALE),
                    d => {
                        let negative = matches!(u, Usable::Negative);
                        match load::decode_hit::<S, R, H>(u, &hook, &full, raw) {
                            Ok(r) => {
                                if matches!(d, Decision::Fresh { .. }) {
                                    let c = cache.engine.stats().for_slot(&spec.slot, spec.name);
                                    Counters::bump(if negative {
                                        &c.negative_hits
                                    } else {
                                        &c.hits
                                    });
                                }
                                return serve::<S, R, F, Fut, P>(
                                    cache, spec, &full, m, d, r, cache_if, load,
                                )
                                .await;
                            }
                            Err(why) => unusable_why = Some(why),
                        }
                    }
                }
            }
            None => {
                unusable_why = match protocol::usable(raw, type_tag) {
                    Usable::Unusable(why) => Some(why),
                    _ => None,
                }
            }
        }
    }
    load::miss::<S, R, F, Fut, H>(cache, &spec, full, got, unusable_why, cache_if, &hook, load)
        .await
}

/// Returns `r` (found fresh or in its grace window, as `d` says), starting the background
/// refresh `d` calls for and, with a soft timeout, waiting for it.
#[allow(clippy::too_many_arguments)]
async fn serve<S, R, F, Fut, P>(
    cache: &Cache,
    spec: P,
    full: &str,
    m: Meta,
    d: Decision,
    r: R,
    cache_if: Option<fn(&S::Value) -> bool>,
    load: F,
) -> R
where
    S: Shape<R> + 'static,
    R: Send + 'static,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R> + Send + 'static,
    P: SpecRef,
{
    let stored_at = m.stored_at_ms.to_le_bytes();
    match d {
        Decision::Fresh { early: true } => {
            start::<S, R, F, Fut, P>(cache, spec, full, stored_at, cache_if, load, true);
            r
        }
        Decision::Fresh { early: false } | Decision::Expired => r,
        Decision::Stale {
            refresh,
            wait: false,
        } => {
            let c = cache.engine.counters(spec.name);
            Counters::bump(&c.stale_served);
            if refresh {
                start::<S, R, F, Fut, P>(cache, spec, full, stored_at, cache_if, load, false);
            }
            r
        }
        // Soft timeout: wait for this process's refresh (started now, or running already);
        // another process's refresh is not waited for.
        Decision::Stale {
            refresh,
            wait: true,
        } => {
            let rx = if refresh {
                start::<S, R, F, Fut, P>(
                    cache,
                    spec.clone(),
                    full,
                    stored_at,
                    cache_if,
                    load,
                    false,
                )
            } else {
                cache.engine.refreshing().running(full)
            };
            Box::pin(soft_wait::<S, R>(cache, &spec, r, rx)).await
        }
    }
}

/// Starts the background refresh of `full` (the version stored at `stored_at`) unless this
/// process runs one already; returns a receiver of its outcome (`None` without a tokio
/// runtime).
fn start<S, R, F, Fut, P>(
    cache: &Cache,
    spec: P,
    full: &str,
    stored_at: [u8; 8],
    cache_if: Option<fn(&S::Value) -> bool>,
    load: F,
    early: bool,
) -> Option<Slot>
where
    S: Shape<R> + 'static,
    R: Send + 'static,
    F: FnOnce() -> (Vec<String>, Fut),
    Fut: Future<Output = R> + Send + 'static,
    P: SpecRef,
{
    let rt = tokio::runtime::Handle::try_current().ok()?;
    match cache.engine.refreshing().join_owned(full) {
        Role::Follower(rx) => Some(rx),
        Role::Leader(leader) => {
            let rx = leader.subscribe();
            let (tags, fut) = load();
            let job = Refresh {
                cache: cache.clone(),
                spec,
                full: full.to_owned(),
                stored_at,
                tags,
                early,
            };
            rt.spawn(job.run::<S, R, Fut>(cache_if, fut, leader));
            Some(rx)
        }
    }
}

/// Waits up to `timeout_ms` for the refresh, else returns the stale value `stale`.
async fn soft_wait<S: Shape<R>, R>(cache: &Cache, spec: &FnSpec, stale: R, rx: Option<Slot>) -> R {
    let c = cache.engine.counters(spec.name);
    if let Some(rx) = rx {
        let wait = Duration::from_millis(spec.timeout_ms);
        match tokio::time::timeout(wait, flight::follow(rx)).await {
            Ok(Landed::Value(bytes)) => {
                let type_tag = entry::type_tag::<S::Value>();
                if let Ok(fresh) = load::decode::<S, R>(protocol::usable(&bytes, type_tag)) {
                    Counters::bump(&c.misses);
                    return fresh;
                }
            }
            // The refresh failed, lost its lease or was voided: the stale value (fail-safe).
            Ok(_) => {}
            Err(_) => {
                Counters::bump(&c.soft_timeouts);
                debug!(
                    cache.fn = spec.name,
                    timeout_ms = spec.timeout_ms,
                    "refresh slower than timeout_ms; serving the stale value"
                );
            }
        }
    }
    Counters::bump(&c.stale_served);
    stale
}

/// One background refresh.
struct Refresh<P> {
    cache: Cache,
    spec: P,
    full: String,
    stored_at: [u8; 8],
    tags: Vec<String>,
    early: bool,
}

impl<P: SpecRef> Refresh<P> {
    async fn run<S, R, Fut>(
        self,
        cache_if: Option<fn(&S::Value) -> bool>,
        fut: Fut,
        leader: Leader<'static>,
    ) where
        S: Shape<R>,
        Fut: Future<Output = R>,
    {
        let landed = self.refresh::<S, R, Fut>(cache_if, fut, &leader).await;
        leader.land(landed);
    }

    async fn refresh<S, R, Fut>(
        &self,
        cache_if: Option<fn(&S::Value) -> bool>,
        fut: Fut,
        leader: &Leader<'static>,
    ) -> Landed
    where
        S: Shape<R>,
        Fut: Future<Output = R>,
    {
        let engine = &*self.cache.engine;
        let spec = &*self.spec;
        let c = engine.counters(spec.name);
        let lock_ms = engine.lease_ms(spec);
        let token = entry::new_token();
        // Armed before the request: if its reply is lost (a timeout after Redis applied it),
        // the lease is released by its token (a no-op when it was never taken).
        let mut guard = RefreshGuard {
            store: engine.store().clone(),
            key: self.full.clone(),
            token,
            armed: true,
            counters: c.clone(),
            name: spec.name,
        };
        // About one lease length, renewed while the loader runs (`keep_alive`): a refresher
        // that dies (its process killed) frees the key after about `lock_ms`.
        match engine
            .store()
            .try_refresh(&self.full, &token, &self.stored_at, lock_ms)
            .await
        {
            Ok(true) => {}
            // Another process refreshes it, or the entry changed (refreshed, invalidated).
            Ok(false) => {
                guard.armed = false;
                return Landed::Retry;
            }
            Err(f) => {
                fault(&c, spec.name, &f);
                return Landed::Failed; // the guard releases in the background
            }
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|t| engine.tag_key(t)).collect();
            let life = protocol::member_life_ms(spec, lock_ms);
            if let Err(f) = engine.store().tag_add_all(&tags, &self.full, life).await {
                fault(&c, spec.name, &f);
                guard.release().await;
                return Landed::Failed;
            }
        }
        Counters::bump(&c.refreshes);
        if self.early {
            Counters::bump(&c.early_refreshes);
        }
        debug!(cache.fn = spec.name, early = self.early, "refreshing in the background");
        Counters::bump(&c.loads);
        let started = Instant::now();
        let r = {
            let mut keep_alive = pin!(self.keep_alive(&token, lock_ms, &c));
            let mut fut = pin!(fut);
            let mut kept = true;
            std::future::poll_fn(|cx| {
                if kept && keep_alive.as_mut().poll(cx).is_ready() {
                    kept = false;
                }
                fut.as_mut().poll(cx)
            })
            .await
        };
        c.load_took(started.elapsed());
        let load_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let (loaded, fresh_ms) = match S::view(&r) {
            View::Error => {
                Counters::bump(&c.load_errors);
                Counters::bump(&c.refresh_errors);
                debug!(cache.fn = spec.name, "refresh failed; the stale value stays (fail-safe)");
                guard.release().await;
                return Landed::Failed;
            }
            View::Negative => (Loaded::Negative, spec.negative_ms()),
            View::Value(v) => {
                let mut buf = entry::reserve(128);
                match engine.codec().encode(&mut buf, v) {
                    Ok(()) if cache_if.is_some_and(|keep| !keep(v)) => (Loaded::Unstorable(buf), 0),
                    Ok(()) => (
                        Loaded::Value(buf),
                        protocol::ttl_ms(spec.ttl_ms, spec.jitter_ms),
                    ),
                    Err(e) => {
                        Counters::bump(&c.refresh_errors);
                        tracing::warn!(cache.fn = spec.name, error = %e, "refreshed value cannot be serialized; not cached");
                        (Loaded::Unencodable(e.to_string()), 0)
                    }
                }
            }
        };
        let type_tag = entry::type_tag::<S::Value>();
        let bytes = protocol::envelope(engine, type_tag, &loaded, fresh_ms, load_ms);
        let oversized = bytes
            .as_ref()
            .is_some_and(|b| protocol::oversized(b, engine.max_value_bytes()));
        if oversized {
            Counters::bump(&c.oversized);
        }
        // Callers joining from now on wait for another refresh (see `protocol`'s docs).
        leader.detach();
        match bytes {
            Some(b) if fresh_ms > 0 && !oversized => {
                let px = protocol::stored_ms(spec, fresh_ms);
                match engine
                    .store()
                    .fill_refresh(&self.full, &token, &b, px)
                    .await
                {
                    Ok(true) => {
                        guard.armed = false;
                        Landed::Value(b.into())
                    }
                    Ok(false) => {
                        guard.armed = false;
                        debug!(cache.fn = spec.name, "refresh lease lost (invalidated); not stored");
                        Landed::Retry
                    }
                    Err(f) => {
                        fault(&c, spec.name, &f);
                        Landed::Retry
                    }
                }
            }
            // Not stored (`cache_if`, `negative_ttl = 0`, too large): the stale value stays;
            // the result goes to this refresh's waiters when the lease was still ours.
            _ => match guard.release().await {
                true => protocol::envelope(
                    engine,
                    type_tag,
                    &loaded,
                    protocol::SHARED_FRESH_MS,
                    load_ms,
                )
                .map_or(Landed::Failed, |b| Landed::Value(b.into())),
                false => Landed::Retry,
            },
        }
    }

    /// While the refresh's loader runs: renews its refresh lease every `lock_ms / 3` (a
    /// compare-and-extend on `token`) for at most [`MAX_HOLD_LEASES`] lease lengths, as the
    /// miss path's loader keeps its lease ([`Miss::keep_alive`](protocol::Miss::keep_alive)).
    /// Ends when the lease is lost (invalidated, or it ran out) or the cap is reached; the
    /// caller stops polling it when the loader finishes.
    async fn keep_alive(&self, token: &[u8; 16], lock_ms: u64, c: &Counters) {
        let store = &self.cache.engine.store();
        let every = Duration::from_millis((lock_ms / 3).max(1));
        let until = Instant::now() + Duration::from_millis(lock_ms.saturating_mul(MAX_HOLD_LEASES));
        loop {
            tokio::time::sleep(every).await;
            if Instant::now() + every > until {
                return;
            }
            match store.extend_refresh(&self.full, token, lock_ms).await {
                Ok(true) => {}
                Ok(false) => return, // invalidated (or ran out): the fill will fail
                Err(f) => fault(c, self.spec.name, &f),
            }
        }
    }
}

/// Removes the refresh lease if the refresh ends without storing (loader error or panic,
/// unknown outcome); counts a panic as a refresh error.
struct RefreshGuard {
    store: Store,
    key: String,
    token: [u8; 16],
    armed: bool,
    counters: std::sync::Arc<Counters>,
    name: &'static str,
}

impl RefreshGuard {
    /// Removes the lease now; true when it was still ours.
    async fn release(&mut self) -> bool {
        let r = self.store.release_refresh(&self.key, &self.token).await;
        self.armed = false;
        match r {
            Ok(ours) => ours,
            Err(f) => {
                fault(&self.counters, self.name, &f);
                false
            }
        }
    }
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if std::thread::panicking() {
            Counters::bump(&self.counters.load_errors);
            Counters::bump(&self.counters.refresh_errors);
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // The lease runs out by itself.
        };
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let token = self.token;
        let counters = self.counters.clone();
        let name = self.name;
        rt.spawn(async move {
            if let Err(f) = store.release_refresh(&key, &token).await {
                fault(&counters, name, &f);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::time::Duration;

    use crate::Cache;
    use crate::spec::{FnSpec, Plain};
    use crate::stats::CounterSlot;

    static SPEC: FnSpec = FnSpec {
        name: "refresh_test",
        ttl_ms: 1000,
        jitter_ms: 0,
        negative_ttl_ms: None,
        lock_ms: None,
        stale_ms: 30_000,
        early_refresh: 0.0,
        timeout_ms: 0,
        local_ttl_ms: 0,
        slot: CounterSlot::new(),
    };

    async fn call(cache: &Cache, n: &Arc<AtomicU64>) -> u64 {
        let n = n.clone();
        super::get_or_load::<Plain, u64, _, _, _, ()>(
            cache,
            &SPEC,
            "k".into(),
            None,
            (),
            move || (Vec::new(), async move { n.fetch_add(1, SeqCst) + 1 }),
        )
        .await
    }

    /// The hit path's decision for an entry, by freshness, grace window, running refresh,
    /// soft timeout and the XFetch draw.
    #[test]
    fn what_a_hit_does_by_freshness_grace_and_refresh_state() {
        use super::{Decision, decide};
        use crate::near::Meta;
        let spec = |stale_ms, early_refresh, timeout_ms| FnSpec {
            stale_ms,
            early_refresh,
            timeout_ms,
            ..SPEC.clone()
        };
        let now = 1_000_000;
        let meta = |fresh_until_ms, refresh_until_ms, load_ms| Meta {
            stored_at_ms: 0,
            fresh_until_ms,
            load_ms,
            refresh_until_ms,
        };
        let stale = |refresh, wait| Decision::Stale { refresh, wait };
        let fresh = |early| Decision::Fresh { early };
        // (spec, meta, draw) -> decision
        let table = [
            // Fresh, no early refresh configured.
            (spec(0, 0.0, 0), meta(now + 10, 0, 100), 0.5, fresh(false)),
            // Fresh at the last ms.
            (spec(0, 0.0, 0), meta(now, 0, 100), 0.5, fresh(false)),
            // Past freshness without a grace window: expired.
            (
                spec(0, 0.0, 0),
                meta(now - 1, 0, 100),
                0.5,
                Decision::Expired,
            ),
            // In the grace window: stale, refresh it.
            (
                spec(30_000, 0.0, 0),
                meta(now - 1, 0, 100),
                0.5,
                stale(true, false),
            ),
            // ... unless a refresh lease runs.
            (
                spec(30_000, 0.0, 0),
                meta(now - 1, now + 5, 100),
                0.5,
                stale(false, false),
            ),
            // A refresh lease that ran out does not count.
            (
                spec(30_000, 0.0, 0),
                meta(now - 1, now - 1, 100),
                0.5,
                stale(true, false),
            ),
            // With a soft timeout: wait for it.
            (
                spec(30_000, 0.0, 50),
                meta(now - 1, 0, 100),
                0.5,
                stale(true, true),
            ),
            // Past the grace window: expired.
            (
                spec(30_000, 0.0, 0),
                meta(now - 30_000, 0, 100),
                0.5,
                Decision::Expired,
            ),
            // XFetch: load 100 ms, B = 1, 50 ms left: fires when -ln(u) * 100 >= 50.
            (spec(0, 1.0, 0), meta(now + 50, 0, 100), 0.5, fresh(true)),
            (spec(0, 1.0, 0), meta(now + 50, 0, 100), 0.9, fresh(false)),
            // ... never while a refresh runs.
            (
                spec(0, 1.0, 0),
                meta(now + 50, now + 5, 100),
                0.001,
                fresh(false),
            ),
            // ... and a loader under 1 ms (stored as 0) never fires before expiry.
            (spec(0, 1.0, 0), meta(now + 1, 0, 0), 1e-12, fresh(false)),
        ];
        for (i, (spec, m, u, want)) in table.into_iter().enumerate() {
            assert_eq!(decide(&spec, &m, now, || u), want, "row {i}");
        }
    }

    /// Smoke test of the grace window on the memory backend (the integration suites cover
    /// both backends): after the TTL the stale value is served and one refresh replaces it.
    #[tokio::test]
    async fn grace_window_serves_stale_and_refreshes_once() {
        let cache = Cache::builder().memory().build().await.unwrap();
        let n = Arc::new(AtomicU64::new(0));
        assert_eq!(call(&cache, &n).await, 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for _ in 0..10 {
            assert_eq!(call(&cache, &n).await, 1, "stale value served at once");
        }
        for _ in 0..200 {
            if call(&cache, &n).await == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(call(&cache, &n).await, 2, "refreshed value");
        assert_eq!(n.load(SeqCst), 2, "one refresh");
        let s = cache.stats().function("refresh_test");
        assert_eq!((s.refreshes, s.loads), (1, 2));
        assert!(s.stale_served >= 10);
    }
}
