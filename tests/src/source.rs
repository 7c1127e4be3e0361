//! A stand-in data source for the freshness and tag tests (`tests/tests/freshness/freshness.rs`,
//! `tests/tests/invalidation/tags.rs`): it counts loader runs, holds a "database" row version, and can hold
//! chosen runs at a gate, make them fail or make them panic, so that a test decides exactly
//! when a (background) load finishes and what it returns.
//!
//! Runs are numbered from 1 in the order they start. A run returns `db<version>/run<n>`,
//! where `version` is the database version read when the run started (before any gate), so a
//! run that started before a write returns the old version even if it finishes after it.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

/// Loader runs counter, gate, failure injection and the row version. Share it as
/// `Arc<Source>` (functions with `stale`/`early_refresh`/`timeout_ms` take `&Arc<Source>`,
/// which the macro copies for the background refresh).
#[derive(Debug)]
pub struct Source {
    runs: AtomicU64,
    finished: AtomicU64,
    db: AtomicU64,
    gate_from: AtomicU64,
    fail_from: AtomicU64,
    panic_from: AtomicU64,
    delay: Mutex<Duration>,
    gate: Semaphore,
    entered: Semaphore,
    failures: AtomicU64,
    panics: AtomicU64,
}

/// What a run does, decided when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Ok,
    Fail,
    Panic,
}

impl Source {
    /// Row version 1, no gate, no failures, no delay.
    pub fn new() -> Arc<Source> {
        Arc::new(Source {
            runs: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            db: AtomicU64::new(1),
            gate_from: AtomicU64::new(u64::MAX),
            fail_from: AtomicU64::new(u64::MAX),
            panic_from: AtomicU64::new(u64::MAX),
            delay: Mutex::new(Duration::ZERO),
            gate: Semaphore::new(0),
            entered: Semaphore::new(0),
            failures: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        })
    }

    /// Like [`Source::new`], each run taking `delay` (a real loader duration, for XFetch).
    pub fn with_delay(delay: Duration) -> Arc<Source> {
        let s = Self::new();
        *s.delay.lock().unwrap() = delay;
        s
    }

    /// The value a run numbered `run` returns while the row is at `version`.
    pub fn value(version: u64, run: u64) -> String {
        format!("db{version}/run{run}")
    }

    /// One loader run: `Ok(db<version>/run<n>)`, or `Err` for a failing run (panics for a
    /// panicking one). A gated run reads the row version, then waits at the gate.
    pub async fn load(&self) -> Result<String, String> {
        let n = self.runs.fetch_add(1, SeqCst) + 1;
        let version = self.db.load(SeqCst);
        let fate = if n >= self.panic_from.load(SeqCst) {
            Fate::Panic
        } else if n >= self.fail_from.load(SeqCst) {
            Fate::Fail
        } else {
            Fate::Ok
        };
        if n >= self.gate_from.load(SeqCst) {
            self.entered.add_permits(1);
            self.gate
                .acquire()
                .await
                .expect("the gate is never closed")
                .forget();
        }
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.finished.fetch_add(1, SeqCst);
        match fate {
            Fate::Ok => Ok(Self::value(version, n)),
            Fate::Fail => {
                self.failures.fetch_add(1, SeqCst);
                Err(format!("db down (run {n})"))
            }
            Fate::Panic => {
                self.panics.fetch_add(1, SeqCst);
                panic!("loader run {n} panics (injected)")
            }
        }
    }

    /// [`Source::load`] for loaders that cannot fail (panics if the run was set to fail).
    pub async fn load_ok(&self) -> String {
        self.load().await.expect("this run was not set to fail")
    }

    /// Runs started so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(SeqCst)
    }

    /// Runs that returned (or failed, or are about to panic) so far.
    pub fn finished(&self) -> u64 {
        self.finished.load(SeqCst)
    }

    /// Runs that returned `Err`.
    pub fn failures(&self) -> u64 {
        self.failures.load(SeqCst)
    }

    /// Runs that panicked.
    pub fn panics(&self) -> u64 {
        self.panics.load(SeqCst)
    }

    /// The row's version.
    pub fn version(&self) -> u64 {
        self.db.load(SeqCst)
    }

    /// Writes the row: bumps its version, returns the new one.
    pub fn write(&self) -> u64 {
        self.db.fetch_add(1, SeqCst) + 1
    }

    /// Runs numbered `from` and later wait at the gate (until [`Source::open`]).
    pub fn gate_from(&self, from: u64) {
        self.gate_from.store(from, SeqCst);
    }

    /// The next run (and every later one) waits at the gate.
    pub fn gate_next(&self) {
        self.gate_from(self.runs() + 1);
    }

    /// No run waits at the gate any more (the ones waiting still need [`Source::open`]).
    pub fn ungate(&self) {
        self.gate_from.store(u64::MAX, SeqCst);
    }

    /// Lets `n` waiting (or future gated) runs through.
    pub fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Waits until one more gated run has reached the gate (consumes that signal).
    pub async fn entered(&self) {
        self.entered.acquire().await.expect("never closed").forget();
    }

    /// Runs numbered `from` and later return `Err`.
    pub fn fail_from(&self, from: u64) {
        self.fail_from.store(from, SeqCst);
    }

    /// The next run and every later one returns `Err`.
    pub fn fail_next(&self) {
        self.fail_from(self.runs() + 1);
    }

    /// The next run and every later one panics.
    pub fn panic_next(&self) {
        self.panic_from.store(self.runs() + 1, SeqCst);
    }
}

/// Tasks alive on the current Tokio runtime (spawned and not finished). A background refresh
/// is a spawned task: once the count is back to what it was before the refresh started, the
/// refresh has finished, store attempt included.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// What the `fresh-helper` binary prints (one JSON line per phase).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FreshReport {
    /// The helper's process id.
    pub pid: u32,
    /// `"prime"`, `"burst"` (right after the burst's calls returned) or `"done"` (after the
    /// refreshed value was seen).
    pub phase: String,
    /// The values returned, in call order (`None` for a failed call).
    pub values: Vec<Option<String>>,
    /// This process's `stale_served` counter at that point.
    pub stale_served: u64,
    /// This process's `refreshes` counter at that point.
    pub refreshes: u64,
    /// This process's `loads` counter at that point.
    pub loads: u64,
}
