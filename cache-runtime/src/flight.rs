//! In-process single flight: one task per key per process runs the load; the others wait
//! for it. The table holds only keys being loaded right now: an entry is removed when its
//! leader finishes, fails, panics or is dropped (or earlier, see [`Leader::detach`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a leader's load means for the tasks waiting on it.
#[derive(Debug, Clone)]
pub(crate) enum Landed {
    /// An envelope (value or negative) for the followers to decode: the one the leader
    /// stored, or its result that could not be stored (no second round trip either way).
    Value(Arc<[u8]>),
    /// A result loaded without a lease (the backend failed): nothing confirms that no
    /// invalidation ran during the load, so only followers that could not reach the backend
    /// themselves take it.
    Unconfirmed(Arc<[u8]>),
    /// The loader returned an error or panicked: each follower runs its own loader.
    Failed,
    /// The leader gave up without a usable result (cancelled, or its lease was taken by an
    /// invalidation): followers join a new flight, where one of them leads.
    Retry,
}

pub(crate) type Slot = watch::Receiver<Option<Landed>>;

type Table = Arc<Mutex<HashMap<String, Slot>>>;

/// The in-flight table of one cache.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Table,
}

/// This task's role for a key.
pub(crate) enum Role<'a> {
    /// Run the load, then [`Leader::land`].
    Leader(Leader<'a>),
    /// Wait for the leader with [`follow`].
    Follower(Slot),
}

/// Held by the task loading a key; dropping it wakes the followers (with
/// [`Landed::Failed`] while panicking, else [`Landed::Retry`]).
pub(crate) struct Leader<'a> {
    /// The table (owned, so that a background refresh can hold a `Leader<'static>`).
    map: Table,
    key: String,
    tx: watch::Sender<Option<Landed>>,
    _flights: std::marker::PhantomData<&'a Flights>,
}

impl Flights {
    /// Joins the flight for `key`, becoming its leader if there is none.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        self.join_owned(key)
    }

    /// [`join`](Self::join), with a leader that does not borrow the table.
    pub(crate) fn join_owned(&self, key: &str) -> Role<'static> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Role::Leader(Leader {
            map: self.map.clone(),
            key: key.to_owned(),
            tx,
            _flights: std::marker::PhantomData,
        })
    }

    /// Detaches the flight for `key`, if any: callers arriving from now on start a new one.
    /// An invalidation calls it, so that no call starting after the invalidation returned
    /// is handed the result of a load that started before it.
    pub(crate) fn void(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    /// The flight for `key` if one is running (joining it as a follower), else `None`.
    pub(crate) fn running(&self, key: &str) -> Option<Slot> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    }

    /// Detaches every flight (an invalidation whose keys are not known yet: a tag's members
    /// while the backend cannot be reached).
    pub(crate) fn void_all(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
    }

    /// Keys being loaded now (for tests of boundedness).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Leader<'_> {
    /// Stops new callers from joining this flight (followers already here keep waiting).
    /// Called before the result is written, so that a caller arriving after an invalidation
    /// that races with the write never receives the older result from this flight.
    pub(crate) fn detach(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }

    /// A receiver of this flight's outcome (for a caller that started it in the background).
    pub(crate) fn subscribe(&self) -> Slot {
        self.tx.subscribe()
    }

    /// Publishes the outcome to the followers.
    pub(crate) fn land(self, landed: Landed) {
        // Leave the table first: a follower woken by this outcome that joins again (after a
        // failed or retried load) must find a new flight, not read this landed one twice.
        self.detach();
        self.tx.send_replace(Some(landed));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.detach();
        if self.tx.borrow().is_none() {
            let why = if std::thread::panicking() {
                Landed::Failed
            } else {
                Landed::Retry
            };
            self.tx.send_replace(Some(why));
        }
    }
}

/// Waits for the leader's outcome.
pub(crate) async fn follow(mut rx: Slot) -> Landed {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Landed::Retry),
        Err(_) => Landed::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn table_shrinks_and_followers_wake() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join("k") else {
            panic!("first joiner leads")
        };
        let Role::Follower(rx) = f.join("k") else {
            panic!("second joiner follows")
        };
        assert_eq!(f.len(), 1);
        leader.land(Landed::Value(Arc::from(&b"x"[..])));
        assert_eq!(f.len(), 0);
        assert!(matches!(follow(rx).await, Landed::Value(_)));
    }

    #[test]
    fn voided_flight_takes_no_new_followers() {
        let f = Flights::default();
        let Role::Leader(_leader) = f.join("k") else {
            panic!()
        };
        f.void("k");
        assert!(
            matches!(f.join("k"), Role::Leader(_)),
            "a caller after void leads a new flight"
        );
    }

    #[tokio::test]
    async fn dropped_leader_asks_followers_to_retry() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join("k") else {
            panic!()
        };
        let Role::Follower(rx) = f.join("k") else {
            panic!()
        };
        drop(leader);
        assert_eq!(f.len(), 0);
        assert!(matches!(follow(rx).await, Landed::Retry));
    }

    #[tokio::test]
    async fn detached_flight_takes_no_new_followers() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join("k") else {
            panic!()
        };
        let Role::Follower(rx) = f.join("k") else {
            panic!()
        };
        leader.detach();
        let Role::Leader(second) = f.join("k") else {
            panic!("a caller after detach starts a new flight")
        };
        drop(second);
        leader.land(Landed::Failed);
        assert!(matches!(follow(rx).await, Landed::Failed));
    }
}
