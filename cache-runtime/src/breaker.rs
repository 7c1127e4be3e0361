//! A circuit breaker in front of the backend: after `threshold` consecutive failures, calls
//! skip the backend (and go straight to the loader) for a cool-down; then one call probes.
//! A successful probe closes the circuit; a failed one opens it for another cool-down.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// The breaker's state, as seen by [`Cache::breaker_state`](crate::Cache::breaker_state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// The backend is used.
    Closed,
    /// The backend is skipped until the cool-down ends.
    Open,
    /// The cool-down ended: the next call probes the backend.
    HalfOpen,
}

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub threshold: u32,
    /// How long an open circuit skips the backend before probing.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 3,
            cool_down: Duration::from_millis(1000),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    cfg: BreakerConfig,
    epoch: Instant,
    failures: AtomicU32,
    /// Ms since `epoch` until which the circuit is open; 0 = closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    /// Signalled by the first successful call after failures (see [`Breaker::recovered`]).
    recovered: tokio::sync::Notify,
}

/// Whether a call may use the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Go ahead.
    Go,
    /// Go ahead as the probe of a half-open circuit.
    Probe,
    /// Skip the backend.
    Skip,
}

impl Breaker {
    pub(crate) fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            recovered: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        // +1 so that "0" always means closed.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Asks to use the backend. The hot path is one relaxed load when closed.
    #[inline]
    pub(crate) fn permit(&self) -> Permit {
        let until = self.open_until.load(Acquire);
        if until == 0 {
            return Permit::Go;
        }
        if self.now() < until {
            return Permit::Skip;
        }
        if self
            .probing
            .compare_exchange(false, true, AcqRel, Acquire)
            .is_ok()
        {
            Permit::Probe
        } else {
            Permit::Skip
        }
    }

    /// Records a successful backend call.
    #[inline]
    pub(crate) fn success(&self) {
        let mut recovered = false;
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
            recovered = true;
        }
        if self.open_until.load(Relaxed) != 0 {
            self.open_until.store(0, Release);
            self.probing.store(false, Release);
            tracing::info!("cache backend recovered; circuit closed");
            recovered = true;
        }
        if recovered {
            self.recovered.notify_waiters();
        }
    }

    /// Resolves at the next successful call that follows failures (the circuit closing, or
    /// consecutive failures ending before it opened). Only futures that exist (and are polled
    /// or [enabled](tokio::sync::futures::Notified::enable)) at that moment are woken.
    pub(crate) fn recovered(&self) -> tokio::sync::futures::Notified<'_> {
        self.recovered.notified()
    }

    /// Records a failed backend call (`probe`: it was the half-open probe).
    pub(crate) fn failure(&self, probe: bool) {
        let n = self.failures.fetch_add(1, AcqRel).saturating_add(1);
        if probe || n >= self.cfg.threshold {
            let was = self
                .open_until
                .swap(self.now() + self.cfg.cool_down.as_millis() as u64, AcqRel);
            if was == 0 {
                tracing::warn!(
                    failures = n,
                    cool_down_ms = self.cfg.cool_down.as_millis() as u64,
                    "cache backend failing; circuit open: calls go straight to their loaders"
                );
            }
            if probe {
                self.probing.store(false, Release);
            }
        }
    }

    /// The probe call was dropped before it answered: allow another probe.
    pub(crate) fn probe_abandoned(&self) {
        self.probing.store(false, Release);
    }

    /// Opens the circuit now (used when the backend is unreachable at start-up).
    pub(crate) fn trip(&self) {
        self.failures.store(self.cfg.threshold, Relaxed);
        self.open_until
            .store(self.now() + self.cfg.cool_down.as_millis() as u64, Release);
    }

    pub(crate) fn state(&self) -> BreakerState {
        let until = self.open_until.load(Acquire);
        if until == 0 {
            BreakerState::Closed
        } else if self.now() < until {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes_once() {
        let b = Breaker::new(BreakerConfig {
            threshold: 2,
            cool_down: Duration::from_millis(30),
        });
        assert_eq!(b.permit(), Permit::Go);
        b.failure(false);
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permit(), Permit::Skip);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Skip, "only one probe at a time");
        b.failure(true);
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.permit(), Permit::Probe);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.permit(), Permit::Go);
    }

    #[test]
    fn abandoned_probe_lets_another_call_probe() {
        let b = Breaker::new(BreakerConfig {
            threshold: 1,
            cool_down: Duration::from_millis(10),
        });
        b.failure(false);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.permit(), Permit::Probe);
        b.probe_abandoned();
        assert_eq!(
            b.permit(),
            Permit::Probe,
            "not stuck after a cancelled probe"
        );
    }
}
