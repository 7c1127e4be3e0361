//! Invalidations that could not reach the backend are not dropped: they wait in a bounded
//! queue and are retried with backoff until the backend answers or the retry window ends.
//!
//! * What waits: distinct targets (full keys, and tag invalidations), each once. A target that
//!   is invalidated again while it waits takes no new slot: its retry window starts again, and
//!   if an attempt is under way it is delivered once more after it (the attempt may have reached
//!   the server before the new write). The bound ([`RetryConfig::capacity`]) is on distinct
//!   targets, so a hot key invalidated in a loop during an outage cannot crowd out other keys.
//! * What is retried: failures that may pass ([`BackendErrorKind::is_transient`]: connection,
//!   timeout, and replies such as `-LOADING` or `-BUSY` that mean "try again later") and calls
//!   skipped by the open circuit. A refusal (`-NOPERM`, ...) is given up at once.
//! * When: after a backoff pause (doubling from `first_pause` up to `max_pause`), or at once when
//!   the backend recovers (the breaker's [`recovered`](crate::breaker::Breaker::recovered)
//!   signal: the first successful call after failures, e.g. the circuit closing). Targets are
//!   delivered oldest first, in batches of at most [`BATCH`].
//! * Where: on one worker thread per cache with its own current-thread Tokio runtime, started
//!   on the first queued invalidation. It does not depend on the runtime of the caller that
//!   queued (a `#[tokio::test]` runtime, a `block_on` in a sync context): that runtime may end
//!   and the queued deletions are still delivered. When the cache's last handle is dropped, the
//!   worker delivers what is queued (within the retry window) and the thread ends. After a
//!   shutdown the thread stops retrying but keeps its runtime until the cache is dropped,
//!   because the shared Redis connection may have been re-established on it.
//! * Shutdown ([`Retrier::shutdown`]): the queue is closed (a later failed invalidation is
//!   counted in `invalidations_failed` at once, not queued), the worker retries what is queued
//!   at once and then without long pauses, and stops when the queue is empty or the deadline
//!   passes; what it could not deliver is counted as failed and reported.
//! * Counters: `invalidations_pending` of a function is the number of distinct targets it
//!   queued that still wait; when a target is delivered (or given up) it counts once in
//!   `invalidations` (or `invalidations_failed`) of every function that queued it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::error::Error;
use crate::stats::Counters;
use crate::store::{Fault, Store};

/// Pause between attempts while a shutdown drains the queue.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

/// Targets delivered per attempt at most (one `UNLINK` of the keys, then the tags).
pub(crate) const BATCH: usize = 500;

/// What a queued invalidation deletes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// A full key (`<namespace>:<rendered key>`).
    Key(String),
    /// The entries carrying a tag: the full key of the tag's member set
    /// (`<namespace>:!tag:<rendered tag>`).
    Tag(String),
}

impl Target {
    /// Whether this is a tag invalidation.
    pub(crate) fn is_tag(&self) -> bool {
        matches!(self, Target::Tag(_))
    }
}

/// How the worker delivers a batch of targets: given to [`Retrier::new`] by the layer above
/// (the invalidation module), so that this queue does not depend on it.
pub(crate) type Deliver =
    for<'a> fn(&'a Store, &'a [Target]) -> Pin<Box<dyn Future<Output = Result<(), Fault>> + 'a>>;

/// Queue and retry settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryConfig {
    /// Distinct targets (keys and tags) that may wait at most.
    pub(crate) capacity: usize,
    /// How long a target is retried, from its last invalidation, before it is counted as failed.
    pub(crate) retry_for: Duration,
    /// Pause after the first failed attempt; it doubles after each failure.
    pub(crate) first_pause: Duration,
    /// Longest pause between two attempts.
    pub(crate) max_pause: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            capacity: 10_000,
            retry_for: Duration::from_secs(300),
            first_pause: Duration::from_millis(50),
            max_pause: Duration::from_secs(2),
        }
    }
}

/// One waiting target.
struct Waiting {
    /// Its place in [`Queue::order`] (oldest first).
    seq: u64,
    /// When it was last invalidated: its retry window starts here.
    since: Instant,
    /// Bumped by every repeat, so that an attempt that started before a repeat does not
    /// settle it.
    generation: u64,
    /// The counters of the functions that queued it, each once (bounded by the program's
    /// `#[invalidates]` functions).
    counters: Vec<Arc<Counters>>,
}

impl Waiting {
    /// Settles the target for every function that queued it.
    fn settle(self, delivered: bool, given_up: &AtomicU64) {
        for c in &self.counters {
            c.invalidations_pending.fetch_sub(1, Relaxed);
            if delivered {
                c.invalidations.fetch_add(1, Relaxed);
            } else {
                c.invalidations_failed.fetch_add(1, Relaxed);
            }
        }
        if !delivered {
            given_up.fetch_add(1, Relaxed);
        }
    }
}

#[derive(Default)]
struct Queue {
    waiting: HashMap<Target, Waiting>,
    /// `seq` → target, for delivery oldest first.
    order: BTreeMap<u64, Target>,
    next_seq: u64,
    /// Set by shutdown and when the cache is dropped: nothing more is queued, and the worker
    /// ends once the queue is empty.
    closed: bool,
}

/// The targets whose invalidation waits: the retry queue itself. A call of this process that
/// reads such a key deletes it first (see `load::get_pending`), so this process never reads an
/// entry it has already invalidated, even before the queue delivers. At most `capacity`
/// distinct targets (a target leaves when it is delivered or given up).
pub(crate) struct PendingKeys {
    /// `queue.waiting.len()`, readable without the lock.
    count: AtomicUsize,
    capacity: usize,
    queue: Mutex<Queue>,
    /// Wakes the worker: a target was queued, or the queue was closed.
    wake: Notify,
    /// Targets given up by this queue, ever (for [`Retrier::shutdown`]'s report).
    given_up: AtomicU64,
}

/// What [`PendingKeys::add`] did with one call's targets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Added {
    /// Newly queued.
    new: usize,
    /// Already waiting (no new slot).
    repeated: usize,
    /// Not queued: the queue was full or closed (counted as failed).
    dropped: usize,
}

impl PendingKeys {
    fn new(capacity: usize) -> Self {
        PendingKeys {
            count: AtomicUsize::new(0),
            capacity: capacity.max(1),
            queue: Mutex::default(),
            wake: Notify::new(),
            given_up: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any deletion is pending (one relaxed load: the hit path asks this).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.count.load(Relaxed) != 0
    }

    /// Whether the deletion of the full key `key` is pending.
    pub(crate) fn contains(&self, key: &str) -> bool {
        // Rare (only while something is pending): the lookup's allocation does not matter.
        self.lock()
            .waiting
            .contains_key(&Target::Key(key.to_owned()))
    }

    /// The queued tag invalidations.
    pub(crate) fn tags(&self) -> Vec<Target> {
        HashMap::keys(&self.lock().waiting)
            .filter(|t| t.is_tag())
            .cloned()
            .collect()
    }

    /// Queues `targets` for `counters`' function: a target already waiting takes no new slot.
    fn add(&self, targets: Vec<Target>, counters: &Arc<Counters>) -> Added {
        let mut added = Added::default();
        let now = Instant::now();
        let mut q = self.lock();
        let q = &mut *q;
        for t in targets {
            if q.closed {
                added.dropped += 1;
                continue;
            }
            if let Some(w) = q.waiting.get_mut(&t) {
                w.generation += 1;
                w.since = now;
                if !w.counters.iter().any(|c| Arc::ptr_eq(c, counters)) {
                    counters.invalidations_pending.fetch_add(1, Relaxed);
                    w.counters.push(counters.clone());
                }
                added.repeated += 1;
            } else if q.waiting.len() >= self.capacity {
                added.dropped += 1;
            } else {
                let seq = q.next_seq;
                q.next_seq += 1;
                counters.invalidations_pending.fetch_add(1, Relaxed);
                q.order.insert(seq, t.clone());
                q.waiting.insert(
                    t,
                    Waiting {
                        seq,
                        since: now,
                        generation: 0,
                        counters: vec![counters.clone()],
                    },
                );
                added.new += 1;
            }
        }
        self.count.store(q.waiting.len(), Relaxed);
        if added.dropped > 0 {
            counters
                .invalidations_failed
                .fetch_add(added.dropped as u64, Relaxed);
            self.given_up.fetch_add(added.dropped as u64, Relaxed);
        }
        added
    }

    /// The oldest `max` waiting targets with their generations, and the counters they belong
    /// to (each once).
    fn batch(&self, max: usize) -> (Vec<(Target, u64)>, Vec<Arc<Counters>>) {
        let q = self.lock();
        let mut counters: Vec<Arc<Counters>> = Vec::new();
        let batch = q
            .order
            .values()
            .take(max)
            .filter_map(|t| {
                let w = q.waiting.get(t)?;
                for c in &w.counters {
                    if !counters.iter().any(|d| Arc::ptr_eq(c, d)) {
                        counters.push(c.clone());
                    }
                }
                Some((t.clone(), w.generation))
            })
            .collect();
        (batch, counters)
    }

    /// Settles the batch's targets that were not invalidated again since the batch was taken;
    /// the others stay (delivered again, after the writes that repeated them).
    fn delivered(&self, batch: &[(Target, u64)]) {
        self.settle(batch, true, |w, generation| w.generation == generation);
    }

    /// Gives up the batch's targets whose retry window (counted from their last
    /// invalidation) ended; returns how long the earliest of the rest may still be retried
    /// (`None`: none is left).
    fn expire(&self, batch: &[(Target, u64)], retry_for: Duration) -> Option<Duration> {
        self.settle(batch, false, |w, _| w.since.elapsed() >= retry_for);
        let q = self.lock();
        batch
            .iter()
            .filter_map(|(t, _)| q.waiting.get(t))
            .map(|w| retry_for.saturating_sub(w.since.elapsed()))
            .min()
    }

    /// Removes the batch's targets that pass `which` and settles them.
    fn settle(
        &self,
        batch: &[(Target, u64)],
        delivered: bool,
        which: impl Fn(&Waiting, u64) -> bool,
    ) {
        let mut settled = Vec::new();
        {
            let mut q = self.lock();
            for (t, generation) in batch {
                if q.waiting.get(t).is_some_and(|w| which(w, *generation))
                    && let Some(w) = q.waiting.remove(t)
                {
                    q.order.remove(&w.seq);
                    settled.push(w);
                }
            }
            self.count.store(q.waiting.len(), Relaxed);
        }
        for w in settled {
            w.settle(delivered, &self.given_up);
        }
    }

    /// Gives up every waiting target.
    fn give_up_all(&self) -> usize {
        let waiting = {
            let mut q = self.lock();
            q.order.clear();
            self.count.store(0, Relaxed);
            std::mem::take(&mut q.waiting)
        };
        let n = waiting.len();
        for w in waiting.into_values() {
            w.settle(false, &self.given_up);
        }
        n
    }

    /// Closes the queue and wakes the worker.
    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Gives up what is still queued when the worker ends, also by a panic (a lost invalidation
/// is counted, never silently dropped).
struct GiveUpOnDrop(Arc<PendingKeys>);

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        let n = self.0.give_up_all();
        if n > 0 {
            error!(keys = n, "queued invalidation lost: the retry worker ended");
        }
    }
}

/// What the worker is asked to do, set by [`Retrier::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Retry with backoff.
    Normal,
    /// Shutting down: retry now, then without long pauses.
    Flush,
    /// The shutdown deadline passed: give up what is left.
    Stop,
}

/// The retry queue of one cache.
pub(crate) struct Retrier {
    cfg: RetryConfig,
    store: Store,
    deliver: Deliver,
    /// Turns true when the worker has ended; `None` before the first queued target.
    ended: Mutex<Option<watch::Receiver<bool>>>,
    mode: watch::Sender<Mode>,
    /// Targets whose invalidation is queued.
    pub(crate) pending: Arc<PendingKeys>,
}

impl Retrier {
    pub(crate) fn new(cfg: RetryConfig, store: Store, deliver: Deliver) -> Self {
        Retrier {
            cfg,
            store,
            deliver,
            ended: Mutex::new(None),
            mode: watch::Sender::new(Mode::Normal),
            pending: Arc::new(PendingKeys::new(cfg.capacity)),
        }
    }

    /// Queues the invalidation of `targets` for retry.
    pub(crate) fn enqueue(&self, targets: Vec<Target>, counters: Arc<Counters>) {
        let added = self.pending.add(targets, &counters);
        if added.dropped > 0 {
            if self.pending.is_closed() {
                error!(
                    keys = added.dropped,
                    "invalidation failed after the cache was shut down; it is not retried"
                );
            } else {
                error!(
                    keys = added.dropped,
                    capacity = self.pending.capacity,
                    "invalidation retry queue is full (distinct keys); invalidation lost"
                );
            }
        }
        if added.new + added.repeated == 0 {
            return;
        }
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        // Start the worker on the first target (or again, should it have died).
        if ended.as_ref().is_none_or(|e| *e.borrow()) {
            match self.spawn_worker() {
                Some(e) => *ended = Some(e),
                None => {
                    self.pending.give_up_all();
                    return;
                }
            }
        }
        self.pending.wake.notify_one();
    }

    /// Starts the worker thread; returns a flag that turns true when it ends.
    fn spawn_worker(&self) -> Option<watch::Receiver<bool>> {
        let (ended_tx, ended_rx) = watch::channel(false);
        let (pending, store, cfg) = (self.pending.clone(), self.store.clone(), self.cfg);
        let deliver = self.deliver;
        let mode = self.mode.subscribe();
        let mut cache_alive = self.mode.subscribe();
        let spawned = std::thread::Builder::new()
            .name("cache-invalidation-retry".into())
            .spawn(move || {
                // Dropped last (also on a panic): the queued targets are settled first.
                let ended = SetOnDrop(ended_tx);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "could not start the invalidation retry runtime");
                        drop(GiveUpOnDrop(pending));
                        return;
                    }
                };
                rt.block_on(async {
                    worker(pending, store, deliver, cfg, mode).await;
                    ended.0.send_replace(true);
                    // The backend may have started work on this runtime (redis-rs runs a
                    // reconnect, and then the new connection's I/O, on the runtime of the call
                    // that found the connection broken): keep running it for the cache's other
                    // users until the cache's last handle is dropped.
                    while cache_alive.changed().await.is_ok() {}
                });
                // Nobody is left to use what still runs here: do not wait for it.
                rt.shutdown_background();
            });
        match spawned {
            Ok(_) => Some(ended_rx),
            Err(e) => {
                error!(error = %e, "could not start the invalidation retry thread; invalidation lost");
                None
            }
        }
    }

    /// Closes the queue and waits until what it holds is delivered, at most `timeout`; then
    /// gives up the rest. `Err` tells how many keys that were queued (or failed meanwhile)
    /// were not delivered.
    pub(crate) async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let given_up_before = self.pending.given_up.load(Relaxed);
        self.pending.close();
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(mut ended) = ended {
            self.mode.send_if_modified(|m| {
                let was = *m;
                if was == Mode::Normal {
                    *m = Mode::Flush;
                }
                was == Mode::Normal
            });
            let drained = tokio::time::timeout(timeout, ended.wait_for(|e| *e))
                .await
                .is_ok();
            if !drained {
                self.mode.send_replace(Mode::Stop);
                // Quick: the worker drops its attempt or pause and settles what is left.
                let _ = ended.wait_for(|e| *e).await;
            }
        }
        match self.pending.given_up.load(Relaxed) - given_up_before {
            0 => {
                debug!("cache shut down; no invalidation left undelivered");
                Ok(())
            }
            keys => {
                warn!(keys, "cache shut down with undelivered invalidations");
                Err(Error::Undelivered { keys })
            }
        }
    }
}

impl Drop for Retrier {
    /// The cache's last handle is gone: the worker delivers what is queued and ends.
    fn drop(&mut self) {
        self.pending.close();
    }
}

/// Sets the flag when dropped.
struct SetOnDrop(watch::Sender<bool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Resolves when the mode changes; never when it can no longer change (the cache is gone).
async fn mode_changed(mode: &mut watch::Receiver<Mode>) -> Mode {
    match mode.changed().await {
        Ok(()) => *mode.borrow_and_update(),
        Err(_) => std::future::pending().await,
    }
}

/// Resolves when the mode is (or turns) `Stop`.
async fn stopped(mode: &mut watch::Receiver<Mode>) {
    while *mode.borrow_and_update() != Mode::Stop {
        mode_changed(mode).await;
    }
}

/// Delivers the queue, oldest first, until it is closed and empty or the shutdown deadline
/// passes; what is left then is given up (by the guard, also on a panic).
async fn worker(
    pending: Arc<PendingKeys>,
    store: Store,
    deliver: Deliver,
    cfg: RetryConfig,
    mut mode: watch::Receiver<Mode>,
) {
    let _settle = GiveUpOnDrop(pending.clone());
    let mut pause = cfg.first_pause;
    loop {
        if *mode.borrow() == Mode::Stop {
            warn!("shutdown deadline passed; queued invalidations given up");
            return;
        }
        let (batch, counters) = pending.batch(BATCH);
        if batch.is_empty() {
            if pending.is_closed() {
                return;
            }
            // A target queued since `batch` left a permit: no wake-up is lost.
            tokio::select! {
                () = pending.wake.notified() => {}
                _ = mode_changed(&mut mode) => {}
            }
            pause = cfg.first_pause;
            continue;
        }
        // Armed before the attempt, so that a recovery during it is not missed.
        let recovered = store.breaker.recovered();
        tokio::pin!(recovered);
        recovered.as_mut().enable();

        let keys: Vec<Target> = batch.iter().map(|(t, _)| t.clone()).collect();
        let result = tokio::select! {
            biased;
            r = deliver(&store, &keys) => r,
            () = stopped(&mut mode) => {
                warn!(keys = keys.len(), "shutdown deadline passed; queued invalidation given up");
                return;
            }
        };
        match result {
            Ok(()) => {
                info!(keys = keys.len(), "queued invalidation delivered");
                pending.delivered(&batch);
                pause = cfg.first_pause;
                continue;
            }
            // A refusal (e.g. NOPERM) will not change by retrying.
            Err(Fault::Failed(e)) if !e.kind().is_transient() => {
                error!(keys = keys.len(), error = %e, "invalidation refused by the server; giving up");
                pending.settle(&batch, false, |_, _| true);
                continue;
            }
            Err(_) => {}
        }
        let Some(left) = pending.expire(&batch, cfg.retry_for) else {
            error!(
                keys = keys.len(),
                "invalidation could not be delivered within the retry window; giving up"
            );
            continue;
        };
        for c in &counters {
            c.invalidation_retries.fetch_add(1, Relaxed);
        }
        let flushing = *mode.borrow() != Mode::Normal;
        let wait = if flushing {
            pause.min(FLUSH_PAUSE)
        } else {
            pause
        };
        tokio::select! {
            () = tokio::time::sleep(wait.min(left)) => {}
            () = &mut recovered => {}
            // Shutdown: retry now (`Flush`), or give up at the next turn (`Stop`).
            _ = mode_changed(&mut mode) => {}
        }
        pause = (pause * 2).min(cfg.max_pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[&str]) -> Vec<Target> {
        ks.iter().map(|k| Target::Key((*k).to_owned())).collect()
    }

    fn gauge(c: &Counters) -> (u64, u64, u64) {
        (
            c.invalidations_pending.load(Relaxed),
            c.invalidations.load(Relaxed),
            c.invalidations_failed.load(Relaxed),
        )
    }

    #[test]
    fn repeats_of_a_waiting_key_take_no_slot_and_the_bound_is_on_distinct_keys() {
        let q = PendingKeys::new(2);
        let c = Arc::new(Counters::new("f"));
        for _ in 0..5 {
            q.add(keys(&["ns:hot"]), &c);
        }
        let other = q.add(keys(&["ns:other", "ns:hot"]), &c);
        assert_eq!(
            other,
            Added {
                new: 1,
                repeated: 1,
                dropped: 0
            }
        );
        assert_eq!(gauge(&c), (2, 0, 0), "two distinct keys wait");
        let full = q.add(keys(&["ns:third"]), &c);
        assert_eq!(full.dropped, 1, "a third distinct key does not fit");
        assert_eq!(gauge(&c), (2, 0, 1));
        assert!(q.contains("ns:hot") && q.contains("ns:other") && !q.contains("ns:third"));

        let (batch, _) = q.batch(BATCH);
        q.delivered(&batch);
        assert_eq!(gauge(&c), (0, 2, 1), "each distinct key counts once");
        assert!(!q.any());
    }

    #[test]
    fn a_repeat_during_an_attempt_is_delivered_again() {
        let q = PendingKeys::new(10);
        let c = Arc::new(Counters::new("f"));
        q.add(keys(&["ns:a", "ns:b"]), &c);
        let (batch, _) = q.batch(BATCH);
        // The attempt may have reached the server before this write: `a` must go again.
        q.add(keys(&["ns:a"]), &c);
        q.delivered(&batch);
        assert!(q.contains("ns:a") && !q.contains("ns:b"));
        assert_eq!(gauge(&c), (1, 1, 0));
        let (again, _) = q.batch(BATCH);
        assert_eq!(again.len(), 1);
        q.delivered(&again);
        assert_eq!(gauge(&c), (0, 2, 0));
    }

    #[test]
    fn a_key_queued_by_two_functions_counts_for_each() {
        let q = PendingKeys::new(10);
        let (f, g) = (Arc::new(Counters::new("f")), Arc::new(Counters::new("g")));
        q.add(keys(&["ns:a"]), &f);
        q.add(keys(&["ns:a"]), &g);
        q.add(keys(&["ns:a"]), &g);
        assert_eq!((gauge(&f), gauge(&g)), ((1, 0, 0), (1, 0, 0)));
        let (batch, counters) = q.batch(BATCH);
        assert_eq!((batch.len(), counters.len()), (1, 2));
        assert_eq!(q.expire(&batch, Duration::ZERO), None, "window over");
        assert_eq!((gauge(&f), gauge(&g)), ((0, 0, 1), (0, 0, 1)));
        assert_eq!(q.given_up.load(Relaxed), 1, "one key given up");
    }

    #[test]
    fn batches_are_oldest_first_and_bounded() {
        let q = PendingKeys::new(BATCH * 2);
        let c = Arc::new(Counters::new("f"));
        let all: Vec<Target> = (0..BATCH + 3)
            .map(|i| Target::Key(format!("ns:{i}")))
            .collect();
        q.add(all.clone(), &c);
        q.add(keys(&["ns:0"]), &c); // a repeat keeps its place
        let (batch, _) = q.batch(BATCH);
        assert_eq!(batch.len(), BATCH);
        assert_eq!(batch[0].0, Target::Key("ns:0".into()));
        assert_eq!(batch[BATCH - 1].0, all[BATCH - 1]);
    }

    #[test]
    fn a_key_and_a_tag_of_the_same_name_are_two_targets() {
        let q = PendingKeys::new(10);
        let c = Arc::new(Counters::new("f"));
        let name = "ns:!tag:org:7".to_owned();
        q.add(
            vec![Target::Key(name.clone()), Target::Tag(name.clone())],
            &c,
        );
        assert_eq!(gauge(&c), (2, 0, 0));
        assert_eq!(q.tags(), vec![Target::Tag(name.clone())]);
        assert!(q.contains(&name));
    }

    #[test]
    fn nothing_is_queued_after_close() {
        let q = PendingKeys::new(10);
        let c = Arc::new(Counters::new("f"));
        q.close();
        assert_eq!(q.add(keys(&["ns:a"]), &c).dropped, 1);
        assert_eq!(gauge(&c), (0, 0, 1));
        assert!(!q.any());
    }
}
