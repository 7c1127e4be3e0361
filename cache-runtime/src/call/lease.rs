//! The miss lease's guard: a lease taken by `SET NX PX` is released by its token whatever
//! happens to the call that took it.

use std::sync::Arc;

use crate::stats::Counters;
use crate::store::{Fault, Store, fault};

/// Releases a lease when dropped while armed (loader error, panic, the caller dropping the
/// future, or an unknown outcome): compare-and-delete by token, in the background. A failed
/// release is counted as a backend fault; the lease then expires after `lock_ms`.
pub(crate) struct LeaseGuard {
    store: Store,
    pub(crate) key: String,
    pub(crate) lease: Vec<u8>,
    armed: bool,
    counters: Arc<Counters>,
    name: &'static str,
}

impl LeaseGuard {
    pub(crate) fn new(
        store: Store,
        key: &str,
        lease: Vec<u8>,
        counters: Arc<Counters>,
        name: &'static str,
    ) -> Self {
        LeaseGuard {
            store,
            key: key.to_owned(),
            lease,
            armed: true,
            counters,
            name,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }

    /// Compare-and-delete now; `Ok(true)` when the key still held our lease.
    pub(crate) async fn release(mut self) -> Result<bool, Fault> {
        let result = self.store.release(&self.key, &self.lease).await;
        // Disarmed only now: if this future is dropped mid-release, Drop releases again.
        self.armed = false;
        if let Err(f) = &result {
            fault(&self.counters, self.name, f);
        }
        result
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // No runtime: the lease expires after lock_ms.
        };
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let lease = std::mem::take(&mut self.lease);
        let counters = self.counters.clone();
        let name = self.name;
        rt.spawn(async move {
            if let Err(f) = store.release(&key, &lease).await {
                fault(&counters, name, &f);
            }
        });
    }
}
