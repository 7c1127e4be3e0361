//! Invalidations that could not reach the backend are not dropped: they wait in a bounded
//! queue and are retried with backoff until the backend answers or the retry window ends.
//!
//! * What is retried: failures that may pass ([`BackendErrorKind::is_transient`]: connection,
//!   timeout, and replies such as `-LOADING` or `-BUSY` that mean "try again later") and calls
//!   skipped by the open circuit. A refusal (`-NOPERM`, ...) is given up at once.
//! * When: after a backoff pause (doubling from `first_pause` up to `max_pause`), or at once when
//!   the backend recovers (the breaker's [`recovered`](crate::breaker::Breaker::recovered)
//!   signal: the first successful call after failures, e.g. the circuit closing).
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::error::Error;
use crate::stats::Counters;
use crate::store::{Fault, Store};

/// Pause between attempts while a shutdown drains the queue.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

/// Queue and retry settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryConfig {
    /// Queued invalidation jobs at most (a job is one call's keys).
    pub(crate) capacity: usize,
    /// How long a job is retried before it is counted as failed.
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

/// Full keys whose deletion waits in the queue, with how many queued jobs hold each. A call of
/// this process that reads such a key deletes it first (see [`crate::load`]), so this process
/// never reads an entry it has already invalidated, even before the queue delivers. Bounded by
/// the queue (a key leaves when its last job is delivered or given up).
#[derive(Debug, Default)]
pub(crate) struct PendingKeys {
    count: AtomicUsize,
    keys: Mutex<HashMap<String, u32>>,
}

impl PendingKeys {
    /// Whether any deletion is pending (one relaxed load: the hit path asks this).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.count.load(Relaxed) != 0
    }

    /// Whether the deletion of `key` is pending.
    pub(crate) fn contains(&self, key: &str) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.contains_key(key)
    }

    /// The queued tag invalidations (marked keys, see [`crate::invalidation::deliver`]).
    pub(crate) fn tags(&self) -> Vec<String> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        HashMap::keys(&keys)
            .filter(|k| crate::invalidation::is_tag_mark(k))
            .cloned()
            .collect()
    }

    fn add(&self, keys: &[String]) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            *map.entry(k.clone()).or_insert(0) += 1;
        }
        self.count.store(map.len(), Relaxed);
    }

    fn remove(&self, keys: &[String]) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(n) = map.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(k);
                }
            }
        }
        self.count.store(map.len(), Relaxed);
    }
}

/// One failed call's keys. Dropped without [`Job::finish`] (a lost job), it counts as failed.
struct Job {
    /// The queue's pending keys, which this job's keys leave when it is settled.
    pending: Arc<PendingKeys>,
    keys: Vec<String>,
    counters: Arc<Counters>,
    since: Instant,
    /// Keys given up by this cache's queue, ever (for [`Retrier::shutdown`]'s report).
    given_up: Arc<AtomicU64>,
    finished: bool,
}

impl Job {
    fn n(&self) -> u64 {
        self.keys.len() as u64
    }

    fn finish(mut self, delivered: bool) {
        self.settle(delivered);
    }

    fn settle(&mut self, delivered: bool) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let n = self.n();
        self.pending.remove(&self.keys);
        self.counters.invalidations_pending.fetch_sub(n, Relaxed);
        if delivered {
            self.counters.invalidations.fetch_add(n, Relaxed);
        } else {
            self.counters.invalidations_failed.fetch_add(n, Relaxed);
            self.given_up.fetch_add(n, Relaxed);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.finished {
            error!(keys = self.n(), "queued invalidation lost");
            self.settle(false);
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

struct State {
    /// To the worker; `None` before the first queued job, and after shutdown.
    tx: Option<mpsc::Sender<Job>>,
    /// Turns true when the worker thread has ended.
    ended: Option<watch::Receiver<bool>>,
    /// Set by shutdown: failed invalidations are no longer queued.
    closed: bool,
}

/// The retry queue of one cache.
pub(crate) struct Retrier {
    cfg: RetryConfig,
    store: Store,
    state: Mutex<State>,
    mode: watch::Sender<Mode>,
    given_up: Arc<AtomicU64>,
    /// Keys whose deletion is queued.
    pub(crate) pending: Arc<PendingKeys>,
}

impl Retrier {
    pub(crate) fn new(cfg: RetryConfig, store: Store) -> Self {
        Retrier {
            cfg,
            store,
            state: Mutex::new(State {
                tx: None,
                ended: None,
                closed: false,
            }),
            mode: watch::Sender::new(Mode::Normal),
            given_up: Arc::new(AtomicU64::new(0)),
            pending: Arc::default(),
        }
    }

    /// Queues the deletion of `keys` (full keys) for retry.
    pub(crate) fn enqueue(&self, keys: Vec<String>, counters: Arc<Counters>) {
        self.pending.add(&keys);
        let job = Job {
            pending: self.pending.clone(),
            keys,
            counters,
            since: Instant::now(),
            given_up: self.given_up.clone(),
            finished: false,
        };
        job.counters
            .invalidations_pending
            .fetch_add(job.n(), Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            error!(
                keys = job.n(),
                "invalidation failed after the cache was shut down; it is not retried"
            );
            job.finish(false);
            return;
        }
        // Start the worker on the first job (or again, should it have died).
        if st.tx.as_ref().is_none_or(|t| t.is_closed()) {
            match self.spawn_worker() {
                Some((tx, ended)) => {
                    st.tx = Some(tx);
                    st.ended = Some(ended);
                }
                None => {
                    job.finish(false);
                    return;
                }
            }
        }
        let Some(sender) = st.tx.as_ref() else {
            return;
        };
        match sender.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                error!(
                    keys = job.n(),
                    "invalidation retry queue is full; invalidation lost"
                );
                job.finish(false);
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                error!(
                    keys = job.n(),
                    "invalidation retry worker is not running; invalidation lost"
                );
                job.finish(false);
            }
        }
    }

    /// Starts the worker thread; returns its queue and a flag that turns true when it ends.
    fn spawn_worker(&self) -> Option<(mpsc::Sender<Job>, watch::Receiver<bool>)> {
        let (tx, rx) = mpsc::channel(self.cfg.capacity.max(1));
        let (ended_tx, ended_rx) = watch::channel(false);
        let (store, cfg, mode) = (self.store.clone(), self.cfg, self.mode.subscribe());
        let mut cache_alive = self.mode.subscribe();
        let spawned = std::thread::Builder::new()
            .name("cache-invalidation-retry".into())
            .spawn(move || {
                // Dropped last (also on a panic): the jobs still queued are settled first.
                let ended = SetOnDrop(ended_tx);
                let mut rx = rx;
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "could not start the invalidation retry runtime");
                        rx.close();
                        return; // dropping `rx` settles the queued jobs as failed
                    }
                };
                rt.block_on(async {
                    worker(rx, store, cfg, mode).await;
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
            Ok(_) => Some((tx, ended_rx)),
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
        let given_up_before = self.given_up.load(Relaxed);
        let ended = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.closed = true;
            // The worker ends once it has taken every queued job.
            st.tx = None;
            st.ended.clone()
        };
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
        match self.given_up.load(Relaxed) - given_up_before {
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

async fn worker(
    mut rx: mpsc::Receiver<Job>,
    store: Store,
    cfg: RetryConfig,
    mut mode: watch::Receiver<Mode>,
) {
    while let Some(job) = rx.recv().await {
        let delivered = deliver(&job, &store, &cfg, &mut mode).await;
        job.finish(delivered);
    }
}

/// Tries until the keys are deleted (true), refused, out of the retry window, or given up on
/// shutdown (false).
async fn deliver(
    job: &Job,
    store: &Store,
    cfg: &RetryConfig,
    mode: &mut watch::Receiver<Mode>,
) -> bool {
    let mut pause = cfg.first_pause;
    loop {
        if *mode.borrow() == Mode::Stop {
            warn!(
                keys = job.n(),
                "shutdown deadline passed; queued invalidation given up"
            );
            return false;
        }
        // Armed before the attempt, so that a recovery during it is not missed.
        let recovered = store.breaker.recovered();
        tokio::pin!(recovered);
        recovered.as_mut().enable();

        let result = tokio::select! {
            biased;
            r = crate::invalidation::deliver(store, &[], &job.keys) => r,
            () = stopped(mode) => {
                warn!(keys = job.n(), "shutdown deadline passed; queued invalidation given up");
                return false;
            }
        };
        match result {
            Ok(_) => {
                info!(keys = job.n(), "queued invalidation delivered");
                return true;
            }
            // A refusal (e.g. NOPERM) will not change by retrying.
            Err(Fault::Failed(e)) if !e.kind().is_transient() => {
                error!(keys = job.n(), error = %e, "invalidation refused by the server; giving up");
                return false;
            }
            Err(_) => {}
        }
        let left = cfg.retry_for.saturating_sub(job.since.elapsed());
        if left.is_zero() {
            error!(
                keys = job.n(),
                "invalidation could not be delivered within the retry window; giving up"
            );
            return false;
        }
        job.counters.invalidation_retries.fetch_add(1, Relaxed);
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
            _ = mode_changed(mode) => {}
        }
        pause = (pause * 2).min(cfg.max_pause);
    }
}
