//! The miss path on bytes: in-process single flight, the one-key lease protocol, the
//! compare-and-set fill, and what a load's result may be handed to other waiting calls.
//!
//! Nothing here is generic: every `#[cached]` function shares one copy of this code. The
//! generic driver in [`load`](crate::load) asks [`Miss`] what to do next ([`Step`]), decodes
//! bytes or runs the loader itself, and reports back.
//!
//! # Why a waiting call may take a result (the freshness argument)
//!
//! A call that starts after an invalidation returned must not get data older than the write
//! before it. Results reach a call in three ways:
//! * from the store: an invalidation deletes the key, and a load that took its lease before
//!   the delete can no longer fill it (the fill is a compare-and-set on the lease token);
//! * from this process's flight leader: a leader detaches its flight (no new followers) before
//!   the backend operation that confirms its lease (the fill, or the compare-and-delete
//!   release of a result that is not stored), and hands the result over only when that
//!   operation found its lease still in place. A lease that survived from before the load
//!   until after the detach means no invalidation of the key ran in between, so every
//!   follower, having joined before the detach, started before any invalidation that could
//!   make the result old;
//! * a leader waiting on another process's lease detaches its flight before each poll `GET`:
//!   the value it finds goes only to followers that joined before that `GET`;
//! * a result loaded without a lease (the backend failed) is [`Landed::Unconfirmed`]: only
//!   followers that could not reach the backend themselves take it;
//! * an invalidation in this process also detaches the key's flight
//!   ([`Flights::void`](crate::flight::Flights::void)) before it returns, so a later call
//!   never joins a flight that began before it. This is what keeps a result of a load that
//!   had no lease at all (the backend was failing) correct for this process.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::backend::Raw;
use crate::engine::Engine;
use crate::entry::{self, Header, Kind};
use crate::flight::{self, Landed, Leader, Role};
use crate::spec::FnSpec;
use crate::stats::Counters;
use crate::store::{Fault, Store, fault};

use super::lease::LeaseGuard;

/// Longest pause between two polls of a key another process is loading.
const MAX_POLL: Duration = Duration::from_millis(100);
/// First pause between polls.
const FIRST_POLL: Duration = Duration::from_millis(5);
/// Freshness of an envelope handed to in-process followers without being stored.
pub(crate) const SHARED_FRESH_MS: u64 = 60_000;
/// A loader keeps its lease alive (extends it every `lock_ms / 3`) for at most this many
/// lease lengths; waiting calls wait about that long before they load by themselves.
pub(crate) const MAX_HOLD_LEASES: u64 = 10;

/// What the driver does next.
pub(crate) enum Step {
    /// Decode this envelope (already checked: a fresh value or negative entry of the
    /// function's type) and return it, or report [`Miss::undecodable`].
    Decode(Arc<[u8]>),
    /// Run the loader, then report its result with [`Miss::finish`].
    Load,
}

/// A loader's result, encoded by the driver.
pub(crate) enum Loaded {
    /// A value: a buffer from [`entry::reserve`] with the payload after the header room.
    Value(Vec<u8>),
    /// `None` / `Ok(None)`.
    Negative,
    /// `Err`: never stored, never shared.
    Error,
    /// The value could not be serialized.
    Unencodable(String),
    /// A value `cache_if` rejected: returned (and shared with this flight) but not stored.
    Unstorable(Vec<u8>),
}

/// How the coming load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Under our lease: store with a compare-and-set.
    Leased,
    /// The backend failed: load, store nothing, hand the result to this process's followers.
    Degraded,
    /// Without a lease, for this call alone (waits timed out, or the flight's leaders failed).
    Alone,
}

/// The state of one call on the miss path.
pub(crate) struct Miss<'a> {
    engine: &'a Engine,
    spec: &'a FnSpec,
    c: Arc<Counters>,
    full: String,
    type_tag: u64,
    lock_ms: u64,
    mode: Mode,
    /// Set when the backend failed: no lease protocol, only the in-process flight.
    degraded: bool,
    /// Full keys of the entry's tag sets (registered when the lease is won).
    tags: Vec<String>,
    leader: Option<Leader<'a>>,
    lease: Option<LeaseGuard>,
    /// The envelope last handed to the driver, and whether it came from the flight leader.
    candidate: Option<(Arc<[u8]>, bool)>,
    leader_failed: bool,
    counted_wait: bool,
    /// When this call stops waiting for another process's lease.
    wait_deadline: Option<Instant>,
}

/// Why stored bytes are not a usable entry for this function.
pub(crate) enum Usable<'b> {
    /// A value written with `codec`.
    Value { codec: u8, payload: &'b [u8] },
    /// A negative entry.
    Negative,
    /// Somebody's lease.
    Lease,
    /// Undecodable, foreign, stale or of another type: overwrite it.
    Unusable(&'static str),
}

/// Classifies stored bytes for a function whose stored type has `type_tag`.
#[inline]
pub(crate) fn usable(bytes: &[u8], type_tag: u64) -> Usable<'_> {
    let (h, payload) = match entry::decode(bytes) {
        Ok(e) => e,
        Err(entry::DecodeError::NotAnEnvelope) => return Usable::Unusable("not an envelope"),
        Err(entry::DecodeError::Version(_)) => {
            return Usable::Unusable("another envelope version");
        }
    };
    if h.kind == Kind::Lease {
        return Usable::Lease;
    }
    if h.fresh_until_ms < entry::now_ms() {
        return Usable::Unusable(STALE);
    }
    if h.type_tag != type_tag {
        return Usable::Unusable("written for another type (two functions share a key?)");
    }
    match h.kind {
        Kind::Value => Usable::Value {
            codec: h.codec,
            payload,
        },
        _ => Usable::Negative,
    }
}

/// Why an entry past its freshness is not used (a miss like any other, not a decode error).
pub(crate) const STALE: &str = "stale";

/// Counts an unusable entry (warned once per function); an entry that is only past its
/// freshness ([`STALE`]) is not counted: its bytes are fine.
pub(crate) fn count_unusable(c: &Counters, name: &str, why: &'static str) {
    if why == STALE {
        debug!(cache.fn = name, "cached entry past its freshness; reloading");
        return;
    }
    Counters::bump(&c.decode_errors);
    if Counters::first(&c.warned_decode) {
        warn!(
            cache.fn = name,
            reason = why,
            "cached entry unusable; reloading and overwriting it (warned once per function)"
        );
    } else {
        debug!(cache.fn = name, reason = why, "cached entry unusable; reloading");
    }
}

/// The envelope of a loader's result, fresh for `fresh_ms` from now; `None` for an error.
pub(crate) fn envelope(
    engine: &Engine,
    type_tag: u64,
    loaded: &Loaded,
    fresh_ms: u64,
    load_ms: u32,
) -> Option<Vec<u8>> {
    let now = entry::now_ms();
    let header = |kind| Header {
        kind,
        codec: engine.codec().id(),
        stored_at_ms: now,
        fresh_until_ms: now.saturating_add(fresh_ms),
        load_ms,
        type_tag,
        refresh_until_ms: 0,
    };
    match loaded {
        Loaded::Value(buf) | Loaded::Unstorable(buf) => {
            let mut buf = buf.clone();
            header(Kind::Value).write_over(&mut buf);
            Some(buf)
        }
        Loaded::Negative => Some(header(Kind::Negative).begin(0)),
        Loaded::Error | Loaded::Unencodable(_) => None,
    }
}

/// Whether an envelope made by [`envelope`] is too large to store. `max_value_bytes` bounds
/// the serialized value (the payload), not the envelope header around it: a value of exactly
/// `max_value_bytes` is stored.
pub(crate) fn oversized(envelope: &[u8], max_value_bytes: usize) -> bool {
    envelope.len().saturating_sub(entry::HEADER) > max_value_bytes
}

/// How long a key lives in the store: its freshness plus the grace window.
pub(crate) fn stored_ms(spec: &FnSpec, fresh_ms: u64) -> u64 {
    fresh_ms.saturating_add(spec.stale_ms)
}

/// How long a tag membership registered now must last (ms): as long as the entry can live,
/// counted from a fill as late as the loader may hold its lease.
pub(crate) fn member_life_ms(spec: &FnSpec, lock_ms: u64) -> u64 {
    spec.ttl_ms
        .max(spec.negative_ttl_ms.unwrap_or(0))
        .saturating_add(spec.jitter_ms)
        .saturating_add(spec.stale_ms)
        .saturating_add(lock_ms.saturating_mul(MAX_HOLD_LEASES + 1))
}

/// The stored freshness: uniform in `[ttl_ms, ttl_ms + jitter_ms]`.
pub(crate) fn ttl_ms(ttl_ms: u64, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        ttl_ms
    } else {
        ttl_ms.saturating_add(rand::random_range(0..=jitter_ms))
    }
}

/// What a follower does with its flight leader's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Decode and return it.
    Take,
    /// Join the key's flight again (`leader_failed`: whether a leader's loader has failed).
    Rejoin { leader_failed: bool },
    /// Run the loader alone, without the lease.
    Alone,
}

/// What a follower may do with `landed` (see "Why a waiting call may take a result" above):
/// a confirmed result is taken; an unconfirmed one (loaded without a lease) only by a call
/// that could not reach the backend either (`degraded`); after a failed loader the waiters
/// elect a new leader once, and after a second failure each loads alone.
pub(crate) fn after_landing(landed: &Landed, degraded: bool, leader_failed: bool) -> Follow {
    match landed {
        Landed::Value(_) => Follow::Take,
        Landed::Unconfirmed(_) if degraded => Follow::Take,
        Landed::Unconfirmed(_) | Landed::Retry => Follow::Rejoin { leader_failed },
        Landed::Failed if leader_failed => Follow::Alone,
        Landed::Failed => Follow::Rejoin {
            leader_failed: true,
        },
    }
}

/// What a leader waiting on another process's lease does after a poll `GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poll {
    /// A value or negative entry of this function: decode it.
    Decode,
    /// Still somebody's lease: keep waiting.
    Wait,
    /// Unusable bytes: release exactly them, then take the lease.
    Release(&'static str),
    /// The key is free: take the lease.
    Free,
    /// The backend failed: load without the lease protocol.
    Degrade,
}

/// The decision after a poll `GET` that returned `got`.
pub(crate) fn after_poll(got: &Result<Option<Raw>, Fault>, type_tag: u64) -> Poll {
    match got {
        Ok(Some(raw)) => match usable(raw, type_tag) {
            Usable::Value { .. } | Usable::Negative => Poll::Decode,
            Usable::Lease => Poll::Wait,
            Usable::Unusable(why) => Poll::Release(why),
        },
        Ok(None) => Poll::Free,
        Err(_) => Poll::Degrade,
    }
}

/// What the miss path's core asks of the typed (per-function) side, and the answers: one
/// slot, written by one side and taken by the other between two polls (see [`erased`]).
pub(crate) enum Msg {
    /// Nothing pending.
    Empty,
    /// Core → typed: decode this checked envelope and keep the result.
    Decode(Arc<[u8]>),
    /// Typed → core: whether it decoded.
    Decoded(bool),
    /// Core → typed: run the loader (`degraded`: the backend failed during this call).
    Load { degraded: bool },
    /// Typed → core: the loader's result, encoded; whether it was an error, and whether a
    /// fail-safe copy is returned instead of it.
    Loaded {
        loaded: Loaded,
        error: bool,
        stale_served: bool,
    },
}

/// The slot between the miss path's core and the typed side.
pub(crate) struct Mailbox(std::sync::Mutex<Msg>);

impl Mailbox {
    pub(crate) fn new() -> Arc<Mailbox> {
        Arc::new(Mailbox(std::sync::Mutex::new(Msg::Empty)))
    }

    /// Takes what the slot holds.
    pub(crate) fn take(&self) -> Msg {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, Msg::Empty)
    }

    /// Puts `msg` in the slot.
    pub(crate) fn put(&self, msg: Msg) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = msg;
    }

    /// Puts `msg` and waits for the typed side's answer. Pending without a waker: the typed
    /// side looks at the slot after every poll of the core that returns pending, and polls
    /// the core again as soon as it answered.
    async fn ask(&self, msg: Msg) -> Msg {
        self.put(msg);
        std::future::poll_fn(|_| match self.take() {
            Msg::Empty => std::task::Poll::Pending,
            answer @ (Msg::Decoded(_) | Msg::Loaded { .. }) => std::task::Poll::Ready(answer),
            question => {
                self.put(question);
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// The miss path's future, compiled once for all functions (boxed here, so that no crate
/// calling it compiles it again): the steps of [`Miss`] in order, asking the typed side
/// through `mailbox` to decode an envelope ([`Msg::Decode`]) or to run the loader
/// ([`Msg::Load`]; the lease is kept alive meanwhile, the load counted and timed here).
/// Ends when the typed side holds the call's result. `tags`: the entry's rendered tags
/// (without the namespace).
#[inline(never)]
pub(crate) fn erased<'a>(
    mut m: Miss<'a>,
    tags: Vec<String>,
    got: Result<Option<Raw>, Fault>,
    unusable: Option<&'static str>,
) -> (
    std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    Arc<Mailbox>,
) {
    m.set_tags(&tags);
    let mailbox = Mailbox::new();
    let core = Box::pin(drive(m, got, unusable, mailbox.clone()));
    (core, mailbox)
}

async fn drive(
    mut m: Miss<'_>,
    got: Result<Option<Raw>, Fault>,
    unusable: Option<&'static str>,
    mailbox: Arc<Mailbox>,
) {
    let mut step = m.start(got, unusable).await;
    while let Step::Decode(bytes) = step {
        if let Msg::Decoded(true) = mailbox.ask(Msg::Decode(bytes)).await {
            m.accepted();
            return;
        }
        step = m.undecodable().await;
    }
    let c = m.c.clone();
    Counters::bump(&c.loads);
    let started = Instant::now();
    let answer = {
        // Counts a loader that panics as a load error (this future is dropped while
        // unwinding, waiting here).
        let panic_counter = PanicCounter(&c);
        let mut keep_alive = std::pin::pin!(m.keep_alive());
        let mut kept = true;
        let mut ask = std::pin::pin!(mailbox.ask(Msg::Load {
            degraded: m.degraded
        }));
        let answer = std::future::poll_fn(|cx| {
            if kept && keep_alive.as_mut().poll(cx).is_ready() {
                kept = false;
            }
            ask.as_mut().poll(cx)
        })
        .await;
        drop(panic_counter);
        answer
    };
    let took = started.elapsed();
    c.load_took(took);
    let load_ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
    let Msg::Loaded {
        loaded,
        error,
        stale_served,
    } = answer
    else {
        unreachable!("the typed side answers a load with its result")
    };
    if error {
        Counters::bump(&c.load_errors);
    }
    if stale_served {
        Counters::bump(&c.stale_served);
    }
    m.finish(loaded, load_ms).await;
}

/// Counts a loader that panics as a load error (it is dropped while unwinding).
pub(crate) struct PanicCounter<'a>(pub(crate) &'a Counters);

impl Drop for PanicCounter<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            Counters::bump(&self.0.load_errors);
        }
    }
}

impl<'a> Miss<'a> {
    pub(crate) fn new(engine: &'a Engine, spec: &'a FnSpec, full: String, type_tag: u64) -> Self {
        Miss {
            c: engine.counters(spec.name),
            lock_ms: engine.lease_ms(spec),
            engine,
            spec,
            full,
            type_tag,
            mode: Mode::Alone,
            degraded: false,
            tags: Vec::new(),
            leader: None,
            lease: None,
            candidate: None,
            leader_failed: false,
            counted_wait: false,
            wait_deadline: None,
        }
    }

    /// The entry's rendered tags (without the namespace).
    pub(crate) fn set_tags(&mut self, tags: &[String]) {
        self.tags = tags.iter().map(|t| self.engine.tag_key(t)).collect();
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// How long a loader keeps its lease at most.
    fn hold_cap(&self) -> Duration {
        Duration::from_millis(self.lock_ms.saturating_mul(MAX_HOLD_LEASES))
    }

    fn fault(&mut self, f: &Fault) {
        fault(&self.c, self.spec.name, f);
    }

    /// The backend failed: count it, and load without the lease protocol from now on.
    fn degrade(&mut self, f: &Fault) -> Step {
        self.fault(f);
        self.degraded = true;
        self.load(Mode::Degraded)
    }

    fn load(&mut self, mode: Mode) -> Step {
        self.mode = mode;
        Step::Load
    }

    /// After the hit path's `GET` gave no usable entry (`unusable`: why the bytes it found
    /// cannot be used).
    pub(crate) async fn start(
        &mut self,
        got: Result<Option<Raw>, Fault>,
        unusable: Option<&'static str>,
    ) -> Step {
        match got {
            Ok(Some(raw)) => {
                if let Some(why) = unusable {
                    count_unusable(&self.c, self.spec.name, why);
                    // Remove exactly these bytes so the lease can be taken; a newer write stays.
                    if let Err(f) = self.store().release(&self.full, &raw).await {
                        self.fault(&f);
                        self.degraded = true;
                    }
                }
            }
            Ok(None) => {}
            Err(f) => {
                self.fault(&f);
                self.degraded = true;
            }
        }
        Counters::bump(&self.c.misses);
        debug!(cache.fn = self.spec.name, "cache miss");
        self.join().await
    }

    /// Joins the key's flight: leads it, or waits for its leader.
    async fn join(&mut self) -> Step {
        // A leader goes on for at most about twice the hold cap (waiting for another
        // process's lease, then loading under its own); a follower waits that long.
        let patience = self.hold_cap() * 2 + Duration::from_millis(self.lock_ms * 2);
        loop {
            match self.engine.flights().join(&self.full) {
                Role::Leader(leader) => {
                    self.leader = Some(leader);
                    if self.degraded {
                        return self.load(Mode::Degraded);
                    }
                    return self.lease_path().await;
                }
                Role::Follower(rx) => {
                    match tokio::time::timeout(patience, flight::follow(rx)).await {
                        Ok(landed) => {
                            match after_landing(&landed, self.degraded, self.leader_failed) {
                                Follow::Take => {
                                    if let Landed::Value(bytes) | Landed::Unconfirmed(bytes) =
                                        landed
                                    {
                                        self.candidate = Some((bytes.clone(), true));
                                        return Step::Decode(bytes);
                                    }
                                }
                                Follow::Rejoin { leader_failed } => {
                                    self.leader_failed = leader_failed
                                }
                                Follow::Alone => return self.load(Mode::Alone),
                            }
                        }
                        Err(_) => {
                            Counters::bump(&self.c.lock_timeouts);
                            warn!(
                                cache.fn = self.spec.name,
                                waited_ms = patience.as_millis() as u64,
                                "the in-process loader of this key is stalled; loading without it"
                            );
                            return self.load(Mode::Alone);
                        }
                    }
                }
            }
        }
    }

    /// Takes the lease (then [`Step::Load`]), or waits for the process holding it until a
    /// value appears ([`Step::Decode`]) or the lease is gone (then takes it).
    async fn lease_path(&mut self) -> Step {
        let wait_for = self.hold_cap() + Duration::from_millis(self.lock_ms * 2);
        let deadline = *self
            .wait_deadline
            .get_or_insert_with(|| Instant::now() + wait_for);
        let mut pause = FIRST_POLL;
        loop {
            // Armed before the request: if this call is dropped while `SET NX` is in flight,
            // or the request times out after the server applied it, the guard releases the
            // lease by its token (a no-op when we never got it).
            let guard = LeaseGuard::new(
                self.store().clone(),
                &self.full,
                entry::new_lease(self.lock_ms),
                self.c.clone(),
                self.spec.name,
            );
            match self
                .store()
                .try_lease(&self.full, &guard.lease, self.lock_ms)
                .await
            {
                Ok(true) => {
                    // Tag membership before the loader runs: a tag invalidation from now on
                    // finds this key and deletes the lease (see `invalidation`).
                    if !self.tags.is_empty() {
                        let life = member_life_ms(self.spec, self.lock_ms);
                        if let Err(f) = self.store().tag_add_all(&self.tags, &self.full, life).await
                        {
                            drop(guard); // released in the background: nothing is stored
                            return self.degrade(&f);
                        }
                    }
                    self.lease = Some(guard);
                    return self.load(Mode::Leased);
                }
                Ok(false) => guard.disarm(),
                Err(f) => {
                    drop(guard); // outcome unknown: released in the background
                    return self.degrade(&f);
                }
            }
            if !self.counted_wait {
                self.counted_wait = true;
                Counters::bump(&self.c.lock_waits);
                debug!(cache.fn = self.spec.name, "another loader holds the lease; waiting");
            }
            // Poll until a value appears, the key is free (the lease was released, expired
            // or invalidated), or the deadline passes.
            loop {
                let now = Instant::now();
                if now >= deadline {
                    Counters::bump(&self.c.lock_timeouts);
                    warn!(
                        cache.fn = self.spec.name,
                        lock_ms = self.lock_ms,
                        "lease wait timed out; loading without the lease"
                    );
                    return self.load(Mode::Alone);
                }
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(MAX_POLL);
                // A value this GET finds is handed to our followers (`accepted`): only those
                // that joined before the GET may have it. One that joins later may have started
                // after an invalidation that deleted it (in another process) while we decode.
                if let Some(l) = &self.leader {
                    l.detach();
                }
                let got = self.store().get(&self.full).await;
                match after_poll(&got, self.type_tag) {
                    Poll::Decode => {
                        if let Ok(Some(raw)) = got {
                            let bytes = raw.into_shared();
                            self.candidate = Some((bytes.clone(), false));
                            return Step::Decode(bytes);
                        }
                    }
                    Poll::Wait => continue,
                    Poll::Release(why) => {
                        count_unusable(&self.c, self.spec.name, why);
                        if let Ok(Some(raw)) = &got
                            && let Err(f) = self.store().release(&self.full, raw).await
                        {
                            return self.degrade(&f);
                        }
                        break;
                    }
                    Poll::Free => break,
                    Poll::Degrade => {
                        if let Err(f) = got {
                            return self.degrade(&f);
                        }
                    }
                }
            }
        }
    }

    /// The driver decoded the last [`Step::Decode`] envelope and returns it.
    pub(crate) fn accepted(mut self) {
        if let (Some(leader), Some((bytes, false))) = (self.leader.take(), self.candidate.take()) {
            // We led the flight and found the value another process stored: share it.
            leader.land(Landed::Value(bytes));
        }
    }

    /// The last [`Step::Decode`] envelope's payload does not decode into the function's type.
    pub(crate) async fn undecodable(&mut self) -> Step {
        let Some((bytes, from_flight)) = self.candidate.take() else {
            return self.load(Mode::Alone);
        };
        count_unusable(
            &self.c,
            self.spec.name,
            "payload does not decode into the function's type",
        );
        if !from_flight && let Err(f) = self.store().release(&self.full, &bytes).await {
            return self.degrade(&f);
        }
        self.lease_path().await
    }

    /// While the loader runs under our lease: extends the lease every `lock_ms / 3` (a
    /// compare-and-extend on our token), for at most [`MAX_HOLD_LEASES`] lease lengths. Ends
    /// when the lease is lost (an invalidation deleted it) or the cap is reached; pending
    /// forever is never needed, the driver stops polling it when the loader finishes.
    pub(crate) fn keep_alive(&self) -> impl Future<Output = ()> + Send + '_ {
        let lease = match (&self.mode, &self.lease) {
            (Mode::Leased, Some(g)) => Some(g),
            _ => None,
        };
        let every = Duration::from_millis((self.lock_ms / 3).max(1));
        let until = Instant::now() + self.hold_cap();
        async move {
            let Some(g) = lease else { return };
            loop {
                tokio::time::sleep(every).await;
                if Instant::now() + every > until {
                    return;
                }
                match self.store().extend(&g.key, &g.lease, self.lock_ms).await {
                    Ok(true) => {}
                    Ok(false) => return, // invalidated (or expired): the fill will fail
                    Err(f) => fault(&self.c, self.spec.name, &f),
                }
            }
        }
    }

    fn shared(&self, loaded: &Loaded, load_ms: u32) -> Option<Arc<[u8]>> {
        self.envelope(loaded, SHARED_FRESH_MS, load_ms)
            .map(Arc::from)
    }

    fn envelope(&self, loaded: &Loaded, fresh_ms: u64, load_ms: u32) -> Option<Vec<u8>> {
        envelope(self.engine, self.type_tag, loaded, fresh_ms, load_ms)
    }

    /// After the loader returned: store (under the lease), release, and tell the followers.
    pub(crate) async fn finish(mut self, loaded: Loaded, load_ms: u32) {
        let landed = match self.mode {
            Mode::Alone => return,
            Mode::Degraded => {
                // No lease: this result may only be handed to this process's followers; an
                // invalidation here has detached the flight already (see the module docs).
                match self.shared(&loaded, load_ms) {
                    Some(bytes) => Landed::Unconfirmed(bytes),
                    None => Landed::Failed,
                }
            }
            Mode::Leased => self.store_leased(loaded, load_ms).await,
        };
        if let Some(leader) = self.leader.take() {
            leader.land(landed);
        }
    }

    async fn store_leased(&mut self, loaded: Loaded, load_ms: u32) -> Landed {
        let name = self.spec.name;
        let Some(guard) = self.lease.take() else {
            return Landed::Retry;
        };
        let secs = match &loaded {
            Loaded::Error => {
                debug!(cache.fn = name, "loader returned an error; nothing cached");
                let _ = guard.release().await;
                return Landed::Failed;
            }
            Loaded::Unencodable(e) => {
                warn!(cache.fn = name, error = %e, "value cannot be serialized; not cached");
                let _ = guard.release().await;
                return Landed::Failed;
            }
            // Jitter spreads the expiry of values; a negative entry keeps its own TTL.
            Loaded::Negative => self.spec.negative_ms(),
            Loaded::Value(_) => ttl_ms(self.spec.ttl_ms, self.spec.jitter_ms),
            Loaded::Unstorable(_) => 0,
        };
        let bytes = self.envelope(&loaded, secs, load_ms);
        // The key outlives its freshness by the grace window (`stale = N`).
        let px = stored_ms(self.spec, secs);
        let oversized = bytes
            .as_ref()
            .is_some_and(|b| oversized(b, self.engine.max_value_bytes()));
        if oversized {
            Counters::bump(&self.c.oversized);
            if Counters::first(&self.c.warned_oversize) {
                warn!(
                    cache.fn = name,
                    max = self.engine.max_value_bytes(),
                    "value larger than max_value_bytes; not cached (warned once per function)"
                );
            }
        }
        // From here on, callers arriving after a racing invalidation must not get this
        // result: detach before the operation that confirms the lease.
        if let Some(l) = &self.leader {
            l.detach();
        }
        let bytes = match bytes {
            Some(b) if secs > 0 && !oversized => b,
            _ => {
                // Not stored (`negative_ttl = 0`, too large): shared only when the lease was
                // still ours when released, i.e. no invalidation ran during the load.
                return match guard.release().await {
                    Ok(true) => match self.shared(&loaded, load_ms) {
                        Some(b) => Landed::Value(b),
                        None => Landed::Failed,
                    },
                    _ => Landed::Retry,
                };
            }
        };
        match self
            .store()
            .fill(&self.full, &guard.lease, &bytes, px)
            .await
        {
            Ok(true) => {
                guard.disarm();
                Landed::Value(Arc::from(bytes))
            }
            Ok(false) => {
                // Our lease is gone: the key was invalidated (or the lease expired) while
                // we loaded. Our result may be older than that write: do not store or share.
                guard.disarm();
                if u64::from(load_ms) >= self.lock_ms * MAX_HOLD_LEASES {
                    warn!(
                        cache.fn = name,
                        load_ms,
                        lock_ms = self.lock_ms,
                        "loader ran longer than the lease can be kept; its result is not cached"
                    );
                } else {
                    debug!(cache.fn = name, "lease lost during load (invalidated); result not cached");
                }
                Landed::Retry
            }
            Err(f) => {
                // Unknown whether it was written: the guard releases the lease if it is
                // still there; followers start over.
                self.fault(&f);
                Landed::Retry
            }
        }
    }
}

#[cfg(test)]
mod decisions {
    use std::sync::Arc;

    use super::*;
    use crate::backend::Raw;
    use crate::error::{BackendError, BackendErrorKind};

    #[test]
    fn what_a_follower_does_with_each_landing() {
        let bytes: Arc<[u8]> = Arc::from(&b"x"[..]);
        let value = Landed::Value(bytes.clone());
        let unconfirmed = Landed::Unconfirmed(bytes);
        let rejoin = |leader_failed| Follow::Rejoin { leader_failed };
        // (landed, degraded, leader_failed) -> decision
        let table = [
            (&value, false, false, Follow::Take),
            (&value, true, true, Follow::Take),
            (&unconfirmed, true, false, Follow::Take),
            (&unconfirmed, false, false, rejoin(false)),
            (&unconfirmed, false, true, rejoin(true)),
            (&Landed::Retry, false, false, rejoin(false)),
            (&Landed::Retry, true, true, rejoin(true)),
            (&Landed::Failed, false, false, rejoin(true)),
            (&Landed::Failed, true, false, rejoin(true)),
            (&Landed::Failed, false, true, Follow::Alone),
        ];
        for (landed, degraded, failed, want) in table {
            assert_eq!(
                after_landing(landed, degraded, failed),
                want,
                "{:?} degraded={degraded} leader_failed={failed}",
                std::mem::discriminant(landed)
            );
        }
    }

    #[test]
    fn what_a_waiting_leader_does_after_each_poll() {
        let tag = entry::type_tag::<u64>();
        let now = entry::now_ms();
        let header = |kind, fresh_until_ms, type_tag| Header {
            kind,
            codec: 0,
            stored_at_ms: now,
            fresh_until_ms,
            load_ms: 0,
            type_tag,
            refresh_until_ms: 0,
        };
        let raw = |b: Vec<u8>| Ok(Some(Raw::Shared(Arc::from(b))));
        let mut value = header(Kind::Value, now + 60_000, tag).begin(1);
        value.push(b'1');
        let table: Vec<(Result<Option<Raw>, Fault>, Poll)> = vec![
            (raw(value), Poll::Decode),
            (
                raw(header(Kind::Negative, now + 60_000, tag).begin(0)),
                Poll::Decode,
            ),
            (raw(entry::new_lease(1000)), Poll::Wait),
            (
                raw(header(Kind::Value, now - 1, tag).begin(0)),
                Poll::Release("stale"),
            ),
            (
                raw(header(Kind::Value, now + 60_000, tag ^ 1).begin(0)),
                Poll::Release("written for another type (two functions share a key?)"),
            ),
            (raw(b"garbage".to_vec()), Poll::Release("not an envelope")),
            (Ok(None), Poll::Free),
            (Err(Fault::Skipped), Poll::Degrade),
            (
                Err(Fault::Failed(BackendError::new(
                    BackendErrorKind::Timeout,
                    "t",
                ))),
                Poll::Degrade,
            ),
        ];
        for (i, (got, want)) in table.into_iter().enumerate() {
            assert_eq!(after_poll(&got, tag), want, "row {i}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use crate::Cache;
    use crate::backend::{AnyBackend, Backend, MemoryBackend};
    use crate::entry::{Header, Kind};

    /// `max_value_bytes` bounds the payload (the serialized value), not the whole envelope.
    #[test]
    fn oversized_compares_the_payload_with_the_limit() {
        let limit = 1000;
        let with_payload = |n: usize| {
            let h = Header {
                kind: Kind::Value,
                codec: 1,
                stored_at_ms: 1,
                fresh_until_ms: 2,
                load_ms: 0,
                type_tag: 3,
                refresh_until_ms: 0,
            };
            let mut v = h.begin(n);
            v.resize(crate::entry::HEADER + n, b'x');
            v
        };
        assert!(!super::oversized(&with_payload(limit - 1), limit));
        assert!(!super::oversized(&with_payload(limit), limit));
        assert!(super::oversized(&with_payload(limit + 1), limit));
        assert!(
            !super::oversized(&with_payload(0), 0),
            "a negative entry is never oversized"
        );
    }

    #[crate::cached(key = "lost", ttl = 60, cache = cache, crate = crate)]
    async fn lost_reply(cache: &Cache) -> u64 {
        1
    }

    /// Item 8: the caller is dropped after `SET NX` was applied but before its reply arrived.
    /// The lease must be released by its token, not left for everyone to wait on for `lock_ms`.
    #[tokio::test]
    async fn lease_whose_reply_was_lost_is_released() {
        let gate = Arc::new(Semaphore::new(0));
        let mut backend = MemoryBackend::new(1 << 20);
        backend.after_lease = Some(gate.clone());
        let cache = Cache::from_backend(
            AnyBackend::Memory(backend.clone()),
            &Cache::builder().lock_ms(600_000),
        );
        let full = cache.full_key("lost");
        // The call gets stuck waiting for the lease's reply; its caller gives up.
        let call = tokio::time::timeout(Duration::from_millis(50), lost_reply(&cache)).await;
        assert!(call.is_err(), "the call was stuck in SET NX");
        assert!(
            backend.get(&full).await.unwrap().is_some(),
            "SET NX was applied: the key holds a lease"
        );
        // The release runs in the background; wait for it (bounded).
        for _ in 0..1000 {
            if backend.get(&full).await.unwrap().is_none() {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            backend.get(&full).await.unwrap().is_none(),
            "the orphaned lease is still there: every caller would wait lock_ms for it"
        );
        gate.add_permits(1);
    }
}
