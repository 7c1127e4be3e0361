//! Invalidations that could not reach the backend are not dropped: they wait in a bounded
//! queue and are retried with backoff (by one background task per cache) until the backend
//! answers or the retry window ends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{error, info};

use crate::error::BackendErrorKind;
use crate::stats::Counters;
use crate::store::{Fault, Store};

/// Queue and retry settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryConfig {
    /// Queued invalidation jobs at most (a job is one call's keys).
    pub(crate) capacity: usize,
    /// How long a job is retried before it is counted as failed.
    pub(crate) retry_for: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            capacity: 10_000,
            retry_for: Duration::from_secs(300),
        }
    }
}

struct Job {
    keys: Vec<String>,
    counters: Arc<Counters>,
    since: Instant,
}

impl Job {
    fn n(&self) -> u64 {
        self.keys.len() as u64
    }

    fn done(self, delivered: bool) {
        let n = self.n();
        self.counters.invalidations_pending.fetch_sub(n, Relaxed);
        if delivered {
            self.counters.invalidations.fetch_add(n, Relaxed);
        } else {
            self.counters.invalidations_failed.fetch_add(n, Relaxed);
        }
    }
}

/// The retry queue of one cache.
pub(crate) struct Retrier {
    cfg: RetryConfig,
    store: Store,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Retrier {
    pub(crate) fn new(cfg: RetryConfig, store: Store) -> Self {
        Retrier {
            cfg,
            store,
            tx: Mutex::new(None),
        }
    }

    /// Queues the deletion of `keys` (full keys) for retry.
    pub(crate) fn enqueue(&self, keys: Vec<String>, counters: Arc<Counters>) {
        let job = Job {
            keys,
            counters,
            since: Instant::now(),
        };
        job.counters
            .invalidations_pending
            .fetch_add(job.n(), Relaxed);
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        // (Re)start the worker when there is none, or when its runtime has shut down.
        if tx.as_ref().is_none_or(|t| t.is_closed()) {
            *tx = self.spawn_worker();
        }
        let Some(sender) = tx.as_ref() else {
            error!(
                keys = job.n(),
                "no async runtime to retry the invalidation on; it is lost"
            );
            job.done(false);
            return;
        };
        if let Err(e) = sender.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            error!(
                keys = job.n(),
                "invalidation retry queue is full; invalidation lost"
            );
            job.done(false);
        }
    }

    fn spawn_worker(&self) -> Option<mpsc::Sender<Job>> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel(self.cfg.capacity.max(1));
        rt.spawn(worker(rx, self.store.clone(), self.cfg.retry_for));
        Some(tx)
    }
}

async fn worker(mut rx: mpsc::Receiver<Job>, store: Store, retry_for: Duration) {
    while let Some(job) = rx.recv().await {
        let mut pause = Duration::from_millis(50);
        loop {
            let refused = match store.delete(&job.keys).await {
                Ok(_) => {
                    info!(keys = job.n(), "queued invalidation delivered");
                    job.done(true);
                    break;
                }
                // An error reply (e.g. NOPERM) will not change by retrying.
                Err(Fault::Failed(e)) => e.kind() == BackendErrorKind::Other,
                Err(Fault::Skipped) => false,
            };
            if refused {
                error!(
                    keys = job.n(),
                    "invalidation refused by the server; giving up"
                );
                job.done(false);
                break;
            }
            if job.since.elapsed() >= retry_for {
                error!(
                    keys = job.n(),
                    "invalidation could not be delivered within the retry window; giving up"
                );
                job.done(false);
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}
