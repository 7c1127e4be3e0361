//! The backend behind a circuit breaker: every backend call of the cache goes through here.

use std::future::Future;
use std::sync::Arc;

use crate::backend::{AnyBackend, BackendResult, Raw};
use crate::breaker::{Breaker, Permit};
use crate::error::BackendError;
use crate::stats::Counters;

/// Why a backend call did not give an answer.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The circuit is open: the backend was not called.
    Skipped,
    /// The backend failed (connection, timeout, server error).
    Failed(BackendError),
}

impl From<Fault> for crate::error::Error {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Failed(e) => crate::error::Error::Backend(e),
            Fault::Skipped => crate::error::Error::Backend(BackendError::new(
                crate::error::BackendErrorKind::Connection,
                "circuit open: the backend is skipped after repeated failures",
            )),
        }
    }
}

/// Counts a backend fault (the caller then goes to the loader).
pub(crate) fn fault(c: &Counters, name: &str, f: &Fault) {
    match f {
        Fault::Skipped => Counters::bump(&c.backend_skipped),
        Fault::Failed(e) => {
            Counters::bump(&c.backend_errors);
            tracing::warn!(cache.fn = name, error = %e, "cache backend error; calling the loader directly");
        }
    }
}

struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.probe_abandoned();
        }
    }
}

/// A backend guarded by the cache's breaker. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) backend: AnyBackend,
    pub(crate) breaker: Arc<Breaker>,
}

impl Store {
    async fn guarded<T>(&self, op: impl Future<Output = BackendResult<T>>) -> Result<T, Fault> {
        let permit = self.breaker.permit();
        if permit == Permit::Skip {
            return Err(Fault::Skipped);
        }
        // If this call is the probe and is dropped before it answers (the caller was
        // cancelled), let the next call probe instead.
        let probe = ProbeGuard {
            breaker: &self.breaker,
            armed: permit == Permit::Probe,
        };
        let result = op.await;
        std::mem::forget(probe);
        match result {
            Ok(v) => {
                self.breaker.success();
                Ok(v)
            }
            Err(e) => {
                // Unreachable, too slow, or answering "try again later" (LOADING, BUSY, ...):
                // skipping it for a while saves the calls a round trip that cannot succeed.
                if e.kind().is_transient() {
                    self.breaker.failure(permit == Permit::Probe);
                } else {
                    // The server answered (with an error reply such as WRONGTYPE or NOPERM):
                    // it is reachable, so this is not a reason to skip it.
                    self.breaker.success();
                }
                Err(Fault::Failed(e))
            }
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Raw>, Fault> {
        self.guarded(self.backend.get(key)).await
    }

    pub(crate) async fn try_lease(
        &self,
        key: &str,
        lease: &[u8],
        px_ms: u64,
    ) -> Result<bool, Fault> {
        self.guarded(self.backend.try_lease(key, lease, px_ms))
            .await
    }

    pub(crate) async fn fill(
        &self,
        key: &str,
        lease: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> Result<bool, Fault> {
        self.guarded(self.backend.fill(key, lease, value, px_ms))
            .await
    }

    pub(crate) async fn extend(&self, key: &str, lease: &[u8], px_ms: u64) -> Result<bool, Fault> {
        self.guarded(self.backend.extend(key, lease, px_ms)).await
    }

    pub(crate) async fn release(&self, key: &str, lease: &[u8]) -> Result<bool, Fault> {
        self.guarded(self.backend.release(key, lease)).await
    }

    pub(crate) async fn put(&self, key: &str, value: &[u8], px_ms: u64) -> Result<(), Fault> {
        self.guarded(self.backend.put(key, value, px_ms)).await
    }

    pub(crate) async fn expire(&self, key: &str, now_ms: u64) -> Result<(), Fault> {
        self.guarded(self.backend.expire(key, now_ms)).await
    }

    pub(crate) async fn delete(&self, keys: &[String]) -> Result<u64, Fault> {
        self.guarded(self.backend.delete(keys)).await
    }

    pub(crate) async fn try_refresh(
        &self,
        key: &str,
        token: &[u8],
        stored_at: &[u8],
        hold_ms: u64,
    ) -> Result<bool, Fault> {
        self.guarded(self.backend.try_refresh(key, token, stored_at, hold_ms))
            .await
    }

    pub(crate) async fn fill_refresh(
        &self,
        key: &str,
        token: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> Result<bool, Fault> {
        self.guarded(self.backend.fill_refresh(key, token, value, px_ms))
            .await
    }

    pub(crate) async fn extend_refresh(
        &self,
        key: &str,
        token: &[u8],
        hold_ms: u64,
    ) -> Result<bool, Fault> {
        self.guarded(self.backend.extend_refresh(key, token, hold_ms))
            .await
    }

    pub(crate) async fn release_refresh(&self, key: &str, token: &[u8]) -> Result<bool, Fault> {
        self.guarded(self.backend.release_refresh(key, token)).await
    }

    /// Registers `member` in every tag set of `tags` (full tag keys) for `life_ms`.
    pub(crate) async fn tag_add_all(
        &self,
        tags: &[String],
        member: &str,
        life_ms: u64,
    ) -> Result<(), Fault> {
        for t in tags {
            self.guarded(self.backend.tag_add(t, member, life_ms))
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn tag_scan(
        &self,
        tag: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, u64)>), Fault> {
        self.guarded(self.backend.tag_scan(tag, cursor, count))
            .await
    }

    pub(crate) async fn tag_remove(
        &self,
        tag: &str,
        members: &[(String, u64)],
    ) -> Result<(), Fault> {
        self.guarded(self.backend.tag_remove(tag, members)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::MemoryBackend;
    use crate::breaker::{BreakerConfig, BreakerState};

    /// A half-open probe whose caller is dropped mid-flight (e.g. a request timeout) must not
    /// leave the breaker skipping the backend forever.
    #[tokio::test]
    async fn a_cancelled_half_open_probe_does_not_wedge_the_breaker() {
        let store = Store {
            backend: AnyBackend::Memory(MemoryBackend::new(1 << 20)),
            breaker: Arc::new(Breaker::new(BreakerConfig {
                threshold: 1,
                cool_down: Duration::from_millis(20),
            })),
        };
        store.breaker.trip();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(store.breaker.state(), BreakerState::HalfOpen);
        // The probe: a backend call that is still in flight when its caller gives up.
        let probe = store.guarded(std::future::pending::<BackendResult<()>>());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), probe)
                .await
                .is_err()
        );
        // Long after any cool-down, the backend (healthy) must be tried again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = store.get("k").await;
        assert!(
            r.is_ok(),
            "backend still skipped after a cancelled probe: {r:?}, state {:?}",
            store.breaker.state()
        );
    }
}
